//! [`Swap`]: its settings, counters and state, making one and adding
//! areas, its figures and its whole-state check. The operations live in
//! the child modules: slot allocation and use counts (`slots`), the swap
//! cache (`cache`), writing and reading pages (`io`), and `swapoff`.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use mm_types::sync::atomic::{AtomicUsize, Ordering};
use mm_types::sync::Mutex;
use mm_types::{BackingStore, PhysAddr, SwapSlot};

use crate::area::{allocated, has_cache, is_bad, Area, CLUSTER, MAX_SLOTS};
use crate::{slot_at, SwapError, MAX_AREAS, SLOT_BATCH};

#[allow(unsafe_code)]
mod cache;
#[allow(unsafe_code)]
mod io;
mod slots;
mod swapoff;

/// Settings of a [`Swap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwapConfig {
    /// CPUs (one current cluster per CPU and area).
    pub cpus: usize,
    /// Slots read ahead after a swap-in read: the following allocated,
    /// uncached slots of the same area, up to this many (0: none; Linux's
    /// default `page-cluster` 3 reads 8 pages in all).
    pub readahead: u32,
}

impl Default for SwapConfig {
    fn default() -> Self {
        SwapConfig { cpus: 1, readahead: 7 }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SwapStats {
    /// Pages written out.
    pub writes: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Pages read for faults.
    pub reads: u64,
    /// Pages read ahead.
    pub readahead: u64,
    /// Swap-ins served by the swap cache.
    pub cache_hits: u64,
    /// Reads that failed or did not match their checksum.
    pub read_errors: u64,
}

/// The areas by number, and their numbers best first.
struct Areas {
    by_number: [Option<Arc<Area>>; MAX_AREAS],
    /// Area numbers by priority (highest first), then number.
    order: Vec<u8>,
    /// How many at the front of `order` share the highest priority.
    top: usize,
}

impl Areas {
    fn reorder(&mut self) {
        let mut order: Vec<u8> = (0..MAX_AREAS as u8).filter(|&i| self.by_number[i as usize].is_some()).collect();
        let prio = |i: &u8| self.by_number[*i as usize].as_ref().map_or(0, |a| a.priority);
        order.sort_by_key(|i| (core::cmp::Reverse(prio(i)), *i));
        self.top = order.iter().take_while(|i| order.first().is_some_and(|f| prio(i) == prio(f))).count();
        self.order = order;
    }
}

/// A CPU's slots reserved in one area and not handed out yet:
/// `offsets[head..len]`, ascending within each cluster. They are marked
/// reserved in the area's slot map (neither free nor allocated) until
/// [`take`](Self::take) hands one out.
struct SlotCache {
    area: u8,
    /// The area, while the cache holds (or last held) slots of it.
    from: Option<Arc<Area>>,
    head: u8,
    len: u8,
    offsets: [u64; SLOT_BATCH],
}

impl SlotCache {
    const EMPTY: SlotCache = SlotCache { area: 0, from: None, head: 0, len: 0, offsets: [0; SLOT_BATCH] };

    /// Hands out the next cached slot: marked allocated with one use in its
    /// area's map (under this cache's lock, so a drain never misses it).
    #[inline]
    fn take(&mut self) -> Option<SwapSlot> {
        while self.head < self.len {
            let offset = self.offsets[self.head as usize];
            self.head += 1;
            let from = self.from.as_ref()?;
            if from.hand_out(offset) {
                return Some(slot_at(self.area, offset));
            }
            // Cannot happen: only this cache's lock holder changes a slot it
            // reserved. Skip it rather than hand out a slot twice.
            debug_assert!(false, "a slot-cache slot was not reserved");
        }
        None
    }
}

#[derive(Clone, Copy, Debug)]
enum Cached {
    /// A read is under way; faults on the slot wait for it.
    Loading,
    Ready(PhysAddr),
}

/// The swap cache: slot -> page, and frame -> slot for the pages that are
/// there (reclaim finds a cached frame's slot through it, as Linux keeps
/// the swap entry with a swap-cache folio).
struct SwapCache {
    by_slot: BTreeMap<SwapSlot, Cached>,
    by_frame: BTreeMap<u64, SwapSlot>,
}

impl SwapCache {
    fn get(&self, slot: &SwapSlot) -> Option<&Cached> {
        self.by_slot.get(slot)
    }

    fn insert(&mut self, slot: SwapSlot, c: Cached) {
        if let Some(Cached::Ready(old)) = self.by_slot.insert(slot, c) {
            self.by_frame.remove(&old.as_u64());
        }
        if let Cached::Ready(f) = c {
            self.by_frame.insert(f.as_u64(), slot);
        }
    }

    fn remove(&mut self, slot: &SwapSlot) {
        if let Some(Cached::Ready(f)) = self.by_slot.remove(slot) {
            self.by_frame.remove(&f.as_u64());
        }
    }

    fn contains_key(&self, slot: &SwapSlot) -> bool {
        self.by_slot.contains_key(slot)
    }

    fn len(&self) -> usize {
        self.by_slot.len()
    }
}

/// The swap areas, their slots and the swap cache; see the
/// [crate documentation](crate).
///
/// # Example
///
/// ```
/// use mm_swap::{Swap, SwapConfig, SwappedIn};
/// use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
/// use mm_types::{AllocFlags, FrameProvider, PhysAddr, PhysMemory};
///
/// let mem = SimPhysMemory::new(PhysAddr::new(0x10_0000).unwrap(), 1 << 20);
/// let frames = RefFrameProvider::new(&mem);
/// let swap = Swap::new(SwapConfig::default());
/// let area = swap.add_area(Box::new(MemStore::new(1024)), 0).unwrap();
///
/// // A page with known contents, swapped out by its single mapper.
/// let frame = frames.allocate_frame(AllocFlags::empty()).unwrap();
/// // SAFETY: the frame was just allocated: nobody else uses it.
/// unsafe { mem.write_bytes(frame, &[0xab; 4096]) }.unwrap();
/// // SAFETY: the frame holds the page and nothing writes it meanwhile.
/// let slot = unsafe { swap.swap_out(0, frame, 1, &mem) }.unwrap();
/// assert_eq!(slot.area(), area);
/// frames.free_frame(frame).unwrap();
///
/// // The fault: read back into a new frame, checked.
/// let SwappedIn { frame: back, read: io } = swap.swap_in(slot, &frames, &mem).unwrap();
/// assert!(io);
/// let mut buf = [0u8; 4096];
/// // SAFETY: the frame is in the swap cache and nobody writes it.
/// unsafe { mem.read_bytes(back, &mut buf) }.unwrap();
/// assert_eq!(buf, [0xab; 4096]);
/// // The page table now maps the frame: the slot's last use goes and the
/// // cache hands the frame over.
/// assert_eq!(swap.free(slot).unwrap(), Some(back));
/// assert_eq!(swap.used_slots(), 0);
/// ```
pub struct Swap {
    config: SwapConfig,
    areas: Mutex<Areas>,
    rotor: AtomicUsize,
    /// Per-CPU caches of allocated slots not handed out yet (Linux's
    /// swap_slots cache): most allocations take one here.
    slot_cache: Box<[Mutex<SlotCache>]>,
    cache: Mutex<SwapCache>,
    stats: Counters,
}

/// What [`Swap::swap_in`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwappedIn {
    /// The frame holding the page, in the swap cache.
    pub frame: PhysAddr,
    /// Whether the page was read from the store now (`false`: the swap
    /// cache had it, read earlier, read ahead or still mapped elsewhere).
    pub read: bool,
}

/// The live counters behind [`SwapStats`]: plain atomics (statistics, not
/// synchronisation, so never modelled under loom).
#[derive(Default)]
struct Counters {
    writes: Counter,
    write_errors: Counter,
    reads: Counter,
    readahead: Counter,
    cache_hits: Counter,
    read_errors: Counter,
}

/// One statistics counter.
#[derive(Default)]
struct Counter(core::sync::atomic::AtomicU64);

impl Counter {
    fn bump(&self) {
        self.0.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(core::sync::atomic::Ordering::Relaxed)
    }
}

impl Swap {
    /// No areas yet.
    pub fn new(config: SwapConfig) -> Swap {
        Swap {
            config,
            areas: Mutex::new(Areas { by_number: [const { None }; MAX_AREAS], order: Vec::new(), top: 0 }),
            rotor: AtomicUsize::new(0),
            slot_cache: (0..config.cpus.max(1)).map(|_| Mutex::new(SlotCache::EMPTY)).collect(),
            cache: Mutex::new(SwapCache { by_slot: BTreeMap::new(), by_frame: BTreeMap::new() }),
            stats: Counters::default(),
        }
    }

    /// Adds an area over `store` with `priority` (higher is used first;
    /// areas of equal priority take turns). Returns its number.
    ///
    /// [`SwapError::TooLarge`] if the store claims more than [`MAX_SLOTS`]
    /// slots (nothing allocated); the slot map takes 11 bytes a slot.
    pub fn add_area(&self, store: Box<dyn BackingStore + Send + Sync>, priority: i16) -> Result<u8, SwapError> {
        let slots = store.slot_count();
        if slots > MAX_SLOTS {
            return Err(SwapError::TooLarge { slots, max: MAX_SLOTS });
        }
        if self.areas.lock().by_number.iter().all(Option::is_some) {
            return Err(SwapError::TooManyAreas);
        }
        let area = Arc::new(Area::new(store, slots, priority, self.config.cpus));
        let mut areas = self.areas.lock();
        let i = areas.by_number.iter().position(Option::is_none).ok_or(SwapError::TooManyAreas)?;
        areas.by_number[i] = Some(area);
        areas.reorder();
        Ok(i as u8)
    }

    fn area(&self, n: u8) -> Result<Arc<Area>, SwapError> {
        self.areas.lock().by_number.get(n as usize).and_then(Clone::clone).ok_or(SwapError::NoArea(n))
    }

    fn area_of(&self, slot: SwapSlot) -> Result<Arc<Area>, SwapError> {
        let a = self.area(slot.area())?;
        if slot.offset() >= a.slots {
            return Err(SwapError::OutOfRange(slot));
        }
        Ok(a)
    }

    /// Areas to try, best first: by priority, equal ones rotated.
    fn candidates(&self) -> Vec<(u8, Arc<Area>)> {
        let areas = self.areas.lock();
        let mut v: Vec<(u8, Arc<Area>)> =
            areas.order.iter().filter_map(|&i| areas.by_number[i as usize].clone().map(|a| (i, a))).collect();
        drop(areas);
        let turn = self.rotor.fetch_add(1, Ordering::Relaxed);
        v.sort_by_key(|(i, a)| (core::cmp::Reverse(a.priority), *i));
        // Rotate each run of equal priority by `turn`.
        let mut start = 0;
        while start < v.len() {
            let p = v[start].1.priority;
            let end = start + v[start..].iter().take_while(|(_, a)| a.priority == p).count();
            let len = end - start;
            v[start..end].rotate_left(turn % len);
            start = end;
        }
        v
    }

    /// Slots of all areas (bad ones included).
    pub fn capacity(&self) -> u64 {
        self.areas.lock().by_number.iter().flatten().map(|a| a.slots).sum()
    }

    /// Slots in use, over all areas (not counting slots the per-CPU slot
    /// caches hold for allocation).
    pub fn used_slots(&self) -> u64 {
        self.areas.lock().by_number.iter().flatten().map(|a| a.used.load(Ordering::Relaxed)).sum()
    }

    /// Slots in use in area `n` (not counting ones slot caches hold).
    pub fn area_used(&self, n: u8) -> Result<u64, SwapError> {
        Ok(self.area(n)?.used.load(Ordering::Relaxed))
    }

    /// Gives every slot the per-CPU slot caches hold back to its area (so
    /// that a higher-priority area added since is used at once, or before
    /// taking stock).
    pub fn drain_caches(&self) {
        self.drain_slot_caches(|_| true);
    }

    /// Slots of area `n` marked bad (failed writes).
    pub fn bad_slots(&self, n: u8) -> Result<u64, SwapError> {
        let a = self.area(n)?;
        let mut bad = 0;
        for (c, cl) in a.clusters.iter().enumerate() {
            let cl = cl.lock();
            let valid = (a.slots - (c * CLUSTER) as u64).min(CLUSTER as u64) as usize;
            bad += cl.map[..valid].iter().filter(|&&m| is_bad(m)).count() as u64;
        }
        Ok(bad)
    }

    /// The counters.
    pub fn stats(&self) -> SwapStats {
        let c = &self.stats;
        SwapStats {
            writes: c.writes.get(),
            write_errors: c.write_errors.get(),
            reads: c.reads.get(),
            readahead: c.readahead.get(),
            cache_hits: c.cache_hits.get(),
            read_errors: c.read_errors.get(),
        }
    }

    /// Checks every area's bookkeeping and that the cache agrees with the
    /// slot maps' cache marks.
    pub fn check(&self) -> Result<(), &'static str> {
        let cache = self.cache.lock();
        let areas: Vec<(u8, Arc<Area>)> = self
            .areas
            .lock()
            .by_number
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.clone().map(|a| (i as u8, a)))
            .collect();
        let mut marked = 0;
        for (i, a) in &areas {
            a.check()?;
            for c in 0..a.clusters.len() {
                let cl = a.clusters[c].lock();
                for off in 0..CLUSTER {
                    if allocated(cl.map[off]) && has_cache(cl.map[off]) {
                        marked += 1;
                        let slot = slot_at(*i, (c * CLUSTER + off) as u64);
                        if !cache.contains_key(&slot) {
                            return Err("slot marked cached but not in the cache");
                        }
                    }
                }
            }
        }
        if marked != cache.len() {
            return Err("cache entries without a cache mark");
        }
        let mut frames: Vec<u64> = cache
            .by_slot
            .values()
            .filter_map(|c| match c {
                Cached::Ready(f) => Some(f.as_u64()),
                Cached::Loading => None,
            })
            .collect();
        let ready = frames.len();
        frames.sort_unstable();
        if frames.windows(2).any(|w| w[0] == w[1]) {
            return Err("one frame is cached for two slots");
        }
        if ready != cache.by_frame.len()
            || cache
                .by_frame
                .iter()
                .any(|(f, s)| !matches!(cache.by_slot.get(s), Some(Cached::Ready(r)) if r.as_u64() == *f))
        {
            return Err("the frame index disagrees with the cache");
        }
        Ok(())
    }
}

impl fmt::Debug for Swap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Swap").field("config", &self.config).field("used", &self.used_slots()).finish()
    }
}
