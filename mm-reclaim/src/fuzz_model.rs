//! Model-based fuzz body (feature `fuzzing`, and compiled for tests).
//!
//! Random insert / access / hardware-reference / remove / evict / lock /
//! unlock sequences against each policy (CLOCK, S3-FIFO, the default, the
//! two lists, the generations), with a set model of the tracked
//! pages: after every step the count matches and the policy's lists check
//! themselves (MODEL 1); victims were tracked and evictable, and `None`
//! comes only when nothing tracked is evictable (3); a refault with the
//! victim's shadow is accepted.

extern crate std;

use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

use arbitrary::Arbitrary;

use crate::{Clock, PageId, Policy, S3Fifo, Scan, Shadow, TwoList};

const IDS: u32 = 48;

/// One step; `page` is taken modulo 48.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Make a page resident (with its shadow if it was evicted).
    Insert(u8),
    /// A software reference.
    Access(u8),
    /// A hardware reference (sets the page's accessed bit).
    Touch(u8),
    /// The page goes away unchosen.
    Remove(u8),
    /// Evict one page.
    Evict,
    /// Lock a page (unevictable) or unlock it.
    Lock(u8),
}

struct Hw {
    bits: BTreeSet<PageId>,
    locked: BTreeSet<PageId>,
}

impl Scan for Hw {
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool {
        self.bits.remove(&page)
    }
    fn is_evictable(&mut self, page: PageId) -> bool {
        !self.locked.contains(&page)
    }
}

fn drive(p: &mut dyn Policy, ops: &[Op]) {
    let mut tracked = BTreeSet::new();
    let mut shadows: BTreeMap<PageId, Shadow> = BTreeMap::new();
    let mut hw = Hw { bits: BTreeSet::new(), locked: BTreeSet::new() };
    for op in ops {
        match *op {
            Op::Insert(x) => {
                let page = u32::from(x) % IDS;
                if tracked.insert(page) {
                    p.insert(page, shadows.remove(&page));
                }
            }
            Op::Access(x) if tracked.contains(&(u32::from(x) % IDS)) => p.access(u32::from(x) % IDS),
            Op::Touch(x) => {
                hw.bits.insert(u32::from(x) % IDS);
            }
            Op::Remove(x) => {
                let page = u32::from(x) % IDS;
                if tracked.remove(&page) {
                    p.remove(page);
                }
            }
            Op::Evict => match p.evict(&mut hw) {
                Some((v, shadow)) => {
                    assert!(tracked.remove(&v), "{}: victim {v} was not tracked", p.name());
                    assert!(!hw.locked.contains(&v), "{}: victim {v} is locked", p.name());
                    shadows.insert(v, shadow);
                }
                None => assert!(tracked.iter().all(|t| hw.locked.contains(t)), "{}: gave up", p.name()),
            },
            Op::Lock(x) => {
                let page = u32::from(x) % IDS;
                if !hw.locked.remove(&page) {
                    hw.locked.insert(page);
                }
            }
            Op::Access(_) => {}
        }
        assert_eq!(p.len(), tracked.len(), "{}", p.name());
        p.check().unwrap();
    }
}

/// Runs one fuzz input against every policy.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = mm_types::testkit::fuzzing::decode_ops(data, 1000);
    let capacity = data.first().map_or(8, |&b| 1 + usize::from(b) % 40);
    drive(&mut Clock::new(IDS as usize), &ops);
    drive(&mut S3Fifo::new(IDS as usize, capacity), &ops);
    drive(&mut crate::default_policy(IDS as usize, capacity, crate::Mode::AccessedBits), &ops);
    drive(&mut TwoList::new(IDS as usize), &ops);
    drive(&mut crate::MgLru::new(IDS as usize), &ops);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_types::testkit::fuzzing::{random_inputs, replay_corpus};

    #[test]
    fn generated_inputs() {
        random_inputs(0x4ec1, if cfg!(miri) { 160 } else { 2048 }, if cfg!(miri) { 2 } else { 200 }, run);
    }

    /// Replays the checked-in cargo-fuzz corpus.
    #[test]
    #[cfg_attr(miri, ignore = "reads files; the corpus is replayed natively")]
    fn corpus() {
        let n = replay_corpus(env!("CARGO_MANIFEST_DIR"), "reclaim_model", run);
        assert!(n > 50, "the corpus holds {n} inputs");
    }
}
