//! One swap area: a backing store, its slot map (use count, bad mark,
//! swap-cache mark, checksum) in clusters of [`CLUSTER`] slots, and the
//! per-CPU current clusters that allocation works in.
//!
//! Locks, always in this order: a CPU's current-cluster lock, a cluster's
//! lock, the free/partial list lock. A CPU allocating in its own cluster
//! takes only the first two (nobody else uses them unless the task
//! migrated); the list lock is taken when a cluster changes hands.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use mm_types::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use mm_types::sync::{Mutex, MutexGuard};
use mm_types::BackingStore;

/// What [`Area::put_uncached`] did.
pub(crate) enum PutUse {
    /// One use dropped (the slot freed if it was the last).
    Done,
    /// The slot's page is in the swap cache: nothing done.
    Cached,
    /// The slot is not allocated (free, or held by a per-CPU slot cache):
    /// nothing done.
    NotAllocated,
    /// The slot is marked bad: nothing done.
    Bad,
}

/// Slots per cluster (Linux's `SWAPFILE_CLUSTER`): a CPU's consecutive
/// swap-outs land in one cluster, so they are contiguous on the device.
pub const CLUSTER: usize = 512;

/// Use count bits of a slot-map entry.
pub(crate) const COUNT_MASK: u16 = 0x3fff;
/// The slot's page is in the swap cache (the slot stays allocated while it
/// is, even with no page table naming it).
pub(crate) const HAS_CACHE: u16 = 0x4000;
/// The slot failed writes repeatedly and is never allocated again (also
/// the mark of the slots past the end of the device in its last cluster).
/// A bad slot's entry is exactly `BAD`.
pub(crate) const BAD: u16 = 0x8000;
/// A slot a per-CPU slot cache holds: taken from the free slots but not
/// handed out yet. It has no use count and no cache mark; its `BAD` bit
/// makes every path that looks for an allocated slot (`free`, `dup`,
/// `count`, `cache`, `write`, swap-in, readahead) refuse it, and it is
/// neither free (no allocation takes it) nor bad (not counted as such).
pub(crate) const RESERVED: u16 = BAD | HAS_CACHE;

/// Whether a slot-map entry is a bad slot.
pub(crate) const fn is_bad(m: u16) -> bool {
    m == BAD
}

/// Whether a slot-map entry has uses (page tables naming the slot).
pub(crate) const fn in_use(m: u16) -> bool {
    m & BAD == 0 && m & COUNT_MASK != 0
}

/// The uses (page tables naming the slot) a slot-map entry counts.
pub(crate) const fn use_count(m: u16) -> u16 {
    m & COUNT_MASK
}

/// The most uses a slot-map entry can count.
pub(crate) const MAX_USERS: u16 = COUNT_MASK;

/// Whether a slot-map entry carries the swap-cache mark (a reserved slot
/// carries it too: check `allocated` or `in_use` first).
pub(crate) const fn has_cache(m: u16) -> bool {
    m & HAS_CACHE != 0
}

/// Marks a slot-map entry's page as in the swap cache.
pub(crate) fn mark_cached(m: &mut u16) {
    *m |= HAS_CACHE;
}

/// Whether a slot-map entry is allocated (MODEL 1: a use count or a
/// swap-cache mark).
pub(crate) const fn allocated(m: u16) -> bool {
    m & BAD == 0 && m & (COUNT_MASK | HAS_CACHE) != 0
}

/// The most slots an area can have: clusters are numbered with `u32` in
/// the free and partial lists and the per-CPU current clusters, and their
/// count must fit one too. 2^41 - 512 slots of 4 KiB (8 PiB); mm-paging's
/// swap entries address 2^50.
pub const MAX_SLOTS: u64 = u32::MAX as u64 * CLUSTER as u64;

/// Failed writes after which a slot is marked bad.
pub const BAD_AFTER: u8 = 3;

// Which list a cluster was last put on (stale entries are skipped).
const ON_NONE: u8 = 0;
const ON_FREE: u8 = 1;
const ON_PARTIAL: u8 = 2;

pub(crate) struct Cluster {
    /// The slot map: count | HAS_CACHE | BAD.
    pub(crate) map: Box<[u16]>,
    /// Checksums of written slots.
    pub(crate) sums: Box<[u64]>,
    /// Failed writes per slot.
    pub(crate) fails: Box<[u8]>,
    /// Slots not free: allocated ones (count or cache non-zero), ones a
    /// per-CPU slot cache holds, and bad ones.
    pub(crate) used: u16,
    /// The CPU working in it, if any.
    owner: Option<u16>,
    /// The list it was last pushed on.
    list: u8,
    /// Where the owner's next search starts.
    next: u16,
}

struct Lists {
    free: Vec<u32>,
    partial: Vec<u32>,
}

/// Area state.
pub(crate) const ACTIVE: u8 = 0;
/// Being emptied by `swapoff`: no allocation.
pub(crate) const DRAINING: u8 = 1;

pub(crate) struct Area {
    pub(crate) store: Box<dyn BackingStore + Send + Sync>,
    pub(crate) priority: i16,
    pub(crate) slots: u64,
    pub(crate) clusters: Box<[Mutex<Cluster>]>,
    lists: Mutex<Lists>,
    percpu: Box<[Mutex<Option<u32>>]>,
    pub(crate) used: AtomicU64,
    pub(crate) state: AtomicU8,
}

impl Area {
    /// An area of `slots` (at most [`MAX_SLOTS`], as the store reported)
    /// over `store`.
    pub(crate) fn new(store: Box<dyn BackingStore + Send + Sync>, slots: u64, priority: i16, cpus: usize) -> Area {
        debug_assert!(slots <= MAX_SLOTS, "the caller checks the size");
        let n = slots.div_ceil(CLUSTER as u64) as usize;
        let clusters: Vec<Mutex<Cluster>> = (0..n)
            .map(|c| {
                let len = (slots - (c * CLUSTER) as u64).min(CLUSTER as u64) as usize;
                let mut map = vec![0u16; CLUSTER].into_boxed_slice();
                // Slots past the end of the device are permanently "bad".
                for m in &mut map[len..] {
                    *m = BAD;
                }
                Mutex::new(Cluster {
                    map,
                    sums: vec![0; CLUSTER].into_boxed_slice(),
                    fails: vec![0; CLUSTER].into_boxed_slice(),
                    used: (CLUSTER - len) as u16,
                    owner: None,
                    list: ON_FREE,
                    next: 0,
                })
            })
            .collect();
        // Free clusters popped lowest first.
        let mut free: Vec<u32> = (0..n as u32).rev().collect();
        free.reserve(n);
        Area {
            store,
            priority,
            slots,
            clusters: clusters.into_boxed_slice(),
            lists: Mutex::new(Lists { free, partial: Vec::with_capacity(2 * n) }),
            percpu: (0..cpus.max(1)).map(|_| Mutex::new(None)).collect(),
            used: AtomicU64::new(0),
            state: AtomicU8::new(ACTIVE),
        }
    }

    /// Allocates `n` (a power of two up to [`CLUSTER`]) contiguous slots,
    /// aligned to `n`, with use count 1 each; `None` if the area has no
    /// such run (or is draining).
    pub(crate) fn alloc(&self, cpu: usize, n: usize) -> Option<u64> {
        if n == 1 {
            let mut one = [0u64; 1];
            return (self.alloc_batch(cpu, &mut one) == 1 && self.hand_out(one[0])).then_some(one[0]);
        }
        if self.state.load(Ordering::Acquire) != ACTIVE {
            return None;
        }
        let cpu = cpu % self.percpu.len();
        let mut cur = self.percpu[cpu].lock();
        // At most: the current cluster, then clusters from the lists until
        // one has room (each popped cluster is tried once).
        let mut tries = self.clusters.len() * 2 + 1;
        loop {
            if let Some(c) = *cur {
                let mut cl = self.clusters[c as usize].lock();
                if let Some(off) = find_run(&cl.map, cl.next as usize, n) {
                    for m in &mut cl.map[off..off + n] {
                        *m = 1;
                    }
                    cl.used += n as u16;
                    cl.next = ((off + n) % CLUSTER) as u16;
                    self.used.fetch_add(n as u64, Ordering::Relaxed);
                    return Some(c as u64 * CLUSTER as u64 + off as u64);
                }
                // No room here: give the cluster up. It goes back on the
                // partial list when a slot of it is freed.
                cl.owner = None;
                if cl.used < CLUSTER as u16 && cl.list == ON_NONE {
                    // Room for single slots still: keep it findable.
                    cl.list = ON_PARTIAL;
                    drop(cl);
                    self.lists.lock().partial.push(c);
                }
                *cur = None;
            }
            if tries == 0 {
                return None;
            }
            tries -= 1;
            *cur = Some(self.claim(cpu, n)?);
        }
    }

    /// Reserves up to `out.len()` single slots for a per-CPU slot cache
    /// (marked [`RESERVED`]: not free, not allocated, not counted in
    /// `used` until [`hand_out`](Self::hand_out)), in `cpu`'s current
    /// cluster (then in newly claimed ones), in ascending order within a
    /// cluster; returns how many. Under one current-cluster lock and one
    /// cluster lock per cluster: a per-CPU slot cache refills itself with
    /// this.
    pub(crate) fn alloc_batch(&self, cpu: usize, out: &mut [u64]) -> usize {
        if self.state.load(Ordering::Acquire) != ACTIVE || out.is_empty() {
            return 0;
        }
        let cpu = cpu % self.percpu.len();
        let mut cur = self.percpu[cpu].lock();
        let mut got = 0;
        let mut tries = self.clusters.len() * 2 + 1;
        loop {
            if let Some(c) = *cur {
                let mut g = self.clusters[c as usize].lock();
                let cl = &mut *g;
                let base = c as u64 * CLUSTER as u64;
                let start = cl.next as usize;
                let before = got;
                let want = out.len();
                // From `next` to the end, then from the start: ascending
                // runs, each slot looked at once.
                let full = cl.used as usize == CLUSTER;
                let (n, mut last) =
                    if full { (0, None) } else { take_free(&mut cl.map[start..], start, base, &mut out[got..want]) };
                got += n;
                if got < want && !full {
                    let (n, l) = take_free(&mut cl.map[..start], 0, base, &mut out[got..want]);
                    got += n;
                    last = l.or(last);
                }
                if let Some(l) = last {
                    cl.next = ((l + 1) % CLUSTER) as u16;
                }
                cl.used += (got - before) as u16;
                if got == out.len() {
                    return got;
                }
                // The cluster is full: give it up (a freed slot puts it
                // back on the partial list).
                cl.owner = None;
                *cur = None;
            }
            if tries == 0 {
                return got;
            }
            tries -= 1;
            match self.claim(cpu, 1) {
                Some(c) => *cur = Some(c),
                None => {
                    if got == 0 {
                        if let Some(s) = self.scan_any() {
                            out[0] = s;
                            got = 1;
                        }
                    }
                    return got;
                }
            }
        }
    }

    /// The last resort for a single slot when no cluster is free or
    /// partial: free slots in clusters other CPUs own (Linux falls back to
    /// scanning the whole map the same way).
    fn scan_any(&self) -> Option<u64> {
        for (c, cl) in self.clusters.iter().enumerate() {
            let mut cl = cl.lock();
            if cl.used as usize == CLUSTER {
                continue;
            }
            if let Some(off) = find_run(&cl.map, 0, 1) {
                cl.map[off] = RESERVED;
                cl.used += 1;
                return Some((c * CLUSTER + off) as u64);
            }
        }
        None
    }

    /// Takes a cluster for `cpu`: a free one, else a partial one if single
    /// slots are wanted.
    fn claim(&self, cpu: usize, n: usize) -> Option<u32> {
        loop {
            let (c, from) = {
                let mut l = self.lists.lock();
                if let Some(c) = l.free.pop() {
                    (c, ON_FREE)
                } else if n == 1 {
                    (l.partial.pop()?, ON_PARTIAL)
                } else {
                    // A run comes from the current cluster or a free one
                    // (as Linux's large folios do).
                    return None;
                }
            };
            let mut cl = self.clusters[c as usize].lock();
            // Stale entry: the cluster moved lists or is owned already.
            if cl.list != from || cl.owner.is_some() {
                continue;
            }
            cl.list = ON_NONE;
            cl.owner = Some(cpu as u16);
            cl.next = 0;
            return Some(c);
        }
    }

    /// Drops one use (`cache == false`) or the swap-cache mark (`true`)
    /// of `slot`; frees it when neither is left. Returns the entry after.
    pub(crate) fn put(&self, slot: u64, cache: bool) -> u16 {
        let c = split(slot).0;
        let cl = self.clusters[c].lock();
        self.put_locked(cl, c, slot, cache)
    }

    /// Hands out a slot a per-CPU slot cache reserved: one use, counted
    /// in `used`. `false` (nothing done) if the slot is not reserved.
    pub(crate) fn hand_out(&self, slot: u64) -> bool {
        let (c, off) = split(slot);
        let mut cl = self.clusters[c].lock();
        if cl.map[off] != RESERVED {
            return false;
        }
        cl.map[off] = 1;
        self.used.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Gives a slot a per-CPU slot cache reserved back to the free slots
    /// (a drained cache). `false` (nothing done) if it is not reserved.
    pub(crate) fn unreserve(&self, slot: u64) -> bool {
        let (c, off) = split(slot);
        let mut cl = self.clusters[c].lock();
        if cl.map[off] != RESERVED {
            return false;
        }
        cl.map[off] = 0;
        cl.used -= 1;
        self.relist(cl, c);
        true
    }

    /// Drops one use of `slot` if its page is not in the swap cache (the
    /// caller need not take the swap-cache lock then).
    pub(crate) fn put_uncached(&self, slot: u64) -> PutUse {
        let (c, off) = split(slot);
        let cl = self.clusters[c].lock();
        let m = cl.map[off];
        if is_bad(m) {
            PutUse::Bad
        } else if !in_use(m) {
            PutUse::NotAllocated
        } else if m & HAS_CACHE != 0 {
            PutUse::Cached
        } else {
            self.put_locked(cl, c, slot, false);
            PutUse::Done
        }
    }

    fn put_locked(&self, mut cl: MutexGuard<'_, Cluster>, c: usize, slot: u64, cache: bool) -> u16 {
        let off = split(slot).1;
        let m = cl.map[off];
        let m = if cache { m & !HAS_CACHE } else { m - 1 };
        cl.map[off] = m;
        if m & (COUNT_MASK | HAS_CACHE) == 0 {
            // The store may drop the data now, before the slot can be
            // allocated and written again (hence under the cluster lock).
            self.store.discard(slot);
            if cl.fails[off] >= BAD_AFTER {
                cl.map[off] = BAD;
            } else {
                cl.map[off] = 0;
                cl.used -= 1;
            }
            cl.sums[off] = 0;
            self.used.fetch_sub(1, Ordering::Relaxed);
            self.relist(cl, c);
        }
        m
    }

    /// After a slot of cluster `c` became free: an unowned cluster goes on
    /// the free list (empty) or the partial list.
    fn relist(&self, mut cl: MutexGuard<'_, Cluster>, c: usize) {
        if cl.owner.is_none() {
            let to = if cl.used == 0 { ON_FREE } else { ON_PARTIAL };
            if cl.list != to {
                cl.list = to;
                drop(cl);
                let mut l = self.lists.lock();
                if to == ON_FREE {
                    l.free.push(c as u32);
                } else {
                    l.partial.push(c as u32);
                }
            }
        }
    }

    /// Runs `f` on the slot-map entry, checksum and failure count of `slot`.
    pub(crate) fn with_slot<R>(&self, slot: u64, f: impl FnOnce(&mut u16, &mut u64, &mut u8) -> R) -> R {
        let (c, off) = split(slot);
        let mut g = self.clusters[c].lock();
        let cl = &mut *g;
        f(&mut cl.map[off], &mut cl.sums[off], &mut cl.fails[off])
    }

    /// Checks the cluster bookkeeping: `used` matches the map, the area's
    /// count matches the allocated slots (not the reserved ones), and every
    /// entry is a valid one.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let mut taken = 0u64;
        for c in self.clusters.iter() {
            let cl = c.lock();
            let used = cl.map.iter().filter(|&&m| m != 0).count();
            if used != cl.used as usize {
                return Err("cluster used count differs from its map");
            }
            if cl.map.iter().any(|&m| m & BAD != 0 && m != BAD && m != RESERVED) {
                return Err("a slot-map entry is both bad and in use");
            }
            taken += cl.map.iter().filter(|&&m| allocated(m)).count() as u64;
        }
        if taken != self.used.load(Ordering::Relaxed) {
            return Err("area used count differs from the slot map");
        }
        Ok(())
    }
}

/// A run of free slot-map entries to compare with.
static FREE: [u16; 64] = [0; 64];

/// Marks free slots of `map` (which starts at cluster offset `from`)
/// [`RESERVED`], ascending, writing their slot numbers (`base` + offset) to
/// `out` until it is full; returns how many, and the last offset taken.
/// Works a run of free slots at a time (a fresh cluster is one run).
fn take_free(map: &mut [u16], from: usize, base: u64, out: &mut [u64]) -> (usize, Option<usize>) {
    let (mut got, mut i, mut last) = (0, 0, None);
    while got < out.len() {
        let Some(skip) = map[i..].iter().position(|&m| m == 0) else { break };
        i += skip;
        let room = (out.len() - got).min(map.len() - i);
        // All free (a fresh cluster): one slice comparison.
        let run = if room <= FREE.len() && map[i..i + room] == FREE[..room] {
            room
        } else {
            map[i..i + room].iter().position(|&m| m != 0).unwrap_or(room)
        };
        map[i..i + run].fill(RESERVED);
        let first = base + (from + i) as u64;
        for (k, o) in out[got..got + run].iter_mut().enumerate() {
            *o = first + k as u64;
        }
        got += run;
        i += run;
        last = Some(from + i - 1);
    }
    (got, last)
}

fn split(slot: u64) -> (usize, usize) {
    ((slot / CLUSTER as u64) as usize, (slot % CLUSTER as u64) as usize)
}

/// The first aligned run of `n` free slots at or after `from` (wrapping).
fn find_run(map: &[u16], from: usize, n: usize) -> Option<usize> {
    if n == 1 {
        let i = map[from..].iter().position(|&m| m == 0).map(|i| from + i);
        return i.or_else(|| map[..from].iter().position(|&m| m == 0));
    }
    let start = from.next_multiple_of(n) % CLUSTER;
    (0..CLUSTER / n).map(|k| (start + k * n) % CLUSTER).find(|&off| map[off..off + n].iter().all(|&m| m == 0))
}
