//! Trace replay under demand paging (the evaluation model of the issue:
//! capacity `C` frames, every access to a non-resident page is a miss that
//! makes it resident, cold misses count, no warm-up), and Belady's MIN.
//! `examples/replay.rs` is the command-line tool around it.

use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::vec;
use alloc::vec::Vec;

use crate::{NoBits, PageId, Policy, Scan, Shadow};

pub use crate::policy::Mode;

/// A trace in the shared format (little-endian `u64` page ids, already
/// decompressed) with its ids renamed densely (0, 1, ... in order of first
/// use), as the policies index pages; `None` if the length is not a whole
/// number of ids.
pub fn dense_ids(bytes: &[u8]) -> Option<Vec<PageId>> {
    if bytes.len() % 8 != 0 {
        return None;
    }
    let mut ids = BTreeMap::new();
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| {
                let id = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                let n = ids.len() as PageId;
                *ids.entry(id).or_insert(n)
            })
            .collect(),
    )
}

struct Bits(Vec<bool>);

impl Scan for Bits {
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool {
        core::mem::take(&mut self.0[page as usize])
    }
}

/// Misses of `policy` on `trace` (dense page ids below `ids`) with
/// `capacity` frames. Shadows of evicted pages are kept and handed back on
/// refault, as an integrator would.
pub fn replay(policy: &mut dyn Policy, trace: &[PageId], ids: usize, capacity: usize, mode: Mode) -> u64 {
    let bits = mode == Mode::AccessedBits;
    let mut resident = vec![false; ids];
    let mut shadows: Vec<Option<Shadow>> = vec![None; ids];
    let mut hw = Bits(vec![false; ids]);
    let mut misses = 0;
    for &p in trace {
        let i = p as usize;
        if resident[i] {
            if bits {
                hw.0[i] = true;
            } else {
                policy.access(p);
            }
            continue;
        }
        misses += 1;
        if policy.len() >= capacity.max(1) {
            let got = if bits { policy.evict(&mut hw) } else { policy.evict(&mut NoBits) };
            let (victim, shadow) = got.expect("a full cache has a victim");
            resident[victim as usize] = false;
            hw.0[victim as usize] = false;
            shadows[victim as usize] = Some(shadow);
        }
        resident[i] = true;
        policy.insert(p, shadows[i].take()).expect("a page missing from the cache is not tracked");
        if bits {
            hw.0[i] = true;
        }
    }
    misses
}

/// Misses of Belady's MIN (evict the resident page whose next use is
/// furthest away) on `trace` with `capacity` frames.
pub fn belady(trace: &[PageId], ids: usize, capacity: usize) -> u64 {
    let capacity = capacity.max(1);
    let mut next_use = vec![usize::MAX; trace.len()];
    let mut last = vec![usize::MAX; ids];
    for (i, &p) in trace.iter().enumerate().rev() {
        next_use[i] = last[p as usize];
        last[p as usize] = i;
    }
    let mut resident = vec![false; ids];
    let mut upcoming = vec![usize::MAX; ids];
    let mut heap = BinaryHeap::new();
    let (mut misses, mut count) = (0u64, 0usize);
    for (i, &p) in trace.iter().enumerate() {
        if !resident[p as usize] {
            misses += 1;
            if count == capacity {
                // Entries for a page's earlier next uses are stale: skipped.
                loop {
                    let (at, v): (usize, PageId) = heap.pop().expect("resident pages are in the heap");
                    if resident[v as usize] && upcoming[v as usize] == at {
                        resident[v as usize] = false;
                        break;
                    }
                }
                count -= 1;
            }
            resident[p as usize] = true;
            count += 1;
        }
        upcoming[p as usize] = next_use[i];
        heap.push((next_use[i], p));
    }
    misses
}
