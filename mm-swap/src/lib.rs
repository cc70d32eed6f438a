//! Swap for `no_std` kernels: swap areas over any [`BackingStore`], slot
//! allocation in per-CPU clusters, use counts shared by forked address
//! spaces, a swap cache, checksummed reads and writes that never lose a
//! page, readahead, and `swapoff`.
//!
//! The crate depends on mm-types only. It hands out [`SwapSlot`]s (area
//! and offset, mm-types' one name for a swapped page, which mm-paging stores
//! in page tables) and the integrator calls back here from its fault
//! handler and its reclaim evictor. The reference kernel's wiring library
//! (`examples/wiring`) implements mm-vma's `SwapSlots` and mm-reclaim's
//! `Evictor` over a [`Swap`].
//!
//! A page's life in swap (MODEL 1-6):
//! 1. **Out.** [`Swap::swap_out`] allocates a slot with as many uses as the
//!    page has mappers, writes the frame through the store with its
//!    checksum, and returns the slot. If the write fails the slot is freed
//!    (marked bad after [`BAD_AFTER`] failures) and the error returned: the
//!    caller has not unmapped the page yet and keeps it resident.
//! 2. **Shared.** Each page table naming the slot holds one use:
//!    [`Swap::dup`] on fork, [`Swap::free`] on unmap or exit.
//! 3. **In.** [`Swap::swap_in`] returns the frame holding the slot's page:
//!    from the swap cache if it is there (no I/O), else read into a new
//!    frame, checked against the checksum and added to the cache;
//!    concurrent faults on one slot share one read. Readahead brings
//!    neighbouring slots into the cache too.
//! 4. **Cache.** A cached page stays until the last use of its slot goes
//!    ([`Swap::free`] returns the frame then) or the integrator drops it
//!    ([`Swap::uncache`]).
//!
//! ```
//! use mm_swap::{Swap, SwapConfig};
//! use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
//! use mm_types::{AllocFlags, FrameProvider, PhysAddr, PhysMemory};
//!
//! let mem = SimPhysMemory::new(PhysAddr::new(0x10_0000).unwrap(), 1 << 20);
//! let frames = RefFrameProvider::new(&mem);
//! let swap = Swap::new(SwapConfig::default());
//! let area = swap.add_area(Box::new(MemStore::new(1024)), 0).unwrap();
//!
//! // A page with known contents, swapped out by its single mapper.
//! let frame = frames.allocate_frame(AllocFlags::empty()).unwrap();
//! // SAFETY: the frame was just allocated: nobody else uses it.
//! unsafe { mem.write_bytes(frame, &[0xab; 4096]) }.unwrap();
//! // SAFETY: the frame holds the page and nothing writes it meanwhile.
//! let slot = unsafe { swap.swap_out(0, frame, 1, &mem) }.unwrap();
//! assert_eq!(slot.area(), area);
//! frames.free_frame(frame).unwrap();
//!
//! // The fault: read back into a new frame, checked.
//! let (back, io) = swap.swap_in(slot, &frames, &mem).unwrap();
//! assert!(io);
//! let mut buf = [0u8; 4096];
//! // SAFETY: the frame is in the swap cache and nobody writes it.
//! unsafe { mem.read_bytes(back, &mut buf) }.unwrap();
//! assert_eq!(buf, [0xab; 4096]);
//! // The page table now maps the frame: the slot's last use goes and the
//! // cache hands the frame over.
//! assert_eq!(swap.free(slot).unwrap(), Some(back));
//! assert_eq!(swap.used_slots(), 0);
//! ```

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "std", feature = "fuzzing"))]
extern crate std;

mod area;
pub mod checksum;
#[cfg(all(unix, any(test, feature = "std")))]
pub mod file;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_model;
#[cfg(feature = "zswap")]
pub mod zswap;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use mm_types::sync::atomic::{AtomicUsize, Ordering};
use mm_types::sync::{spin_loop, Mutex};
use mm_types::{
    AllocFlags, BackingStore, FrameError, FrameProvider, PhysAddr, PhysMemory, StoreError, SwapSlot, SLOT_SIZE,
};

use area::{allocated, in_use, is_bad, Area, PutUse, ACTIVE, BAD, COUNT_MASK, DRAINING, HAS_CACHE};
pub use area::{BAD_AFTER, CLUSTER, MAX_SLOTS};
pub use mm_types;

/// Areas a [`Swap`] can hold: as many as a [`SwapSlot`] can name.
pub const MAX_AREAS: usize = SwapSlot::MAX_AREAS as usize;

// Every slot a `Swap` hands out is a valid `SwapSlot`.
const _: () = assert!(MAX_SLOTS < SwapSlot::OFFSET_LIMIT);

/// The slot at `offset` of area `area`; both in range by construction
/// (areas are numbered below [`MAX_AREAS`], offsets below [`MAX_SLOTS`]).
fn slot_at(area: u8, offset: u64) -> SwapSlot {
    SwapSlot::new(area, offset).expect("a Swap's areas and offsets fit a SwapSlot")
}

/// Slots a CPU's slot cache takes from an area at once (Linux's
/// `SWAP_SLOTS_CACHE_SIZE` is 64 too).
pub const SLOT_BATCH: usize = 64;

/// What went wrong, said precisely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapError {
    /// No area has a free slot (or run of slots).
    Full,
    /// All [`MAX_AREAS`] areas are in use.
    TooManyAreas,
    /// No area with this number.
    NoArea(u8),
    /// The slot is past the end of its area.
    OutOfRange(SwapSlot),
    /// The slot is not allocated (a use was dropped twice, or never taken:
    /// a slot waiting in a per-CPU slot cache is not handed out yet).
    NotAllocated(SwapSlot),
    /// The slot is marked bad (its writes failed [`BAD_AFTER`] times): it
    /// has no uses and is never allocated again.
    Bad(SwapSlot),
    /// [`Swap::cache`] of a slot whose page is in the swap cache already.
    AlreadyCached(SwapSlot),
    /// [`Swap::cache`] of a frame the swap cache holds for another slot
    /// (one frame cannot be two pages).
    FrameCached {
        /// The frame.
        frame: PhysAddr,
        /// The slot it is cached for.
        slot: SwapSlot,
    },
    /// A store with more slots than an area can address ([`MAX_SLOTS`]).
    TooLarge {
        /// The slots the store claims.
        slots: u64,
        /// The most an area can have ([`MAX_SLOTS`]).
        max: u64,
    },
    /// The slot has never been written: there is nothing to read.
    NotWritten(SwapSlot),
    /// A use count would pass its limit (16,383).
    CountOverflow(SwapSlot),
    /// The store failed.
    Store(StoreError),
    /// The data read back does not match the checksum of what was
    /// written: reported, never returned as the page.
    Corrupt(SwapSlot),
    /// No frame for a swap-in: the frame provider is out of memory (or
    /// out of the zones a swap-in may use).
    OutOfMemory,
    /// The frame provider refused a swap-in's frame for another reason
    /// than a lack of memory (a bug or set-up error there).
    Frames(FrameError),
    /// A frame the physical memory accessor cannot reach (a set-up error
    /// of the caller's, never a lack of memory).
    Unreachable(PhysAddr),
    /// A run length that is not a power of two up to [`CLUSTER`].
    BadRun(usize),
    /// `swapoff` could not empty the area: slots still in use.
    InUse {
        /// The area.
        area: u8,
        /// Slots still allocated.
        slots: u64,
    },
}

impl fmt::Display for SwapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwapError::Full => write!(f, "swap is full"),
            SwapError::TooManyAreas => write!(f, "all {MAX_AREAS} swap areas are in use"),
            SwapError::NoArea(a) => write!(f, "no swap area {a}"),
            SwapError::OutOfRange(s) => write!(f, "slot {} is past the end of area {}", s.offset(), s.area()),
            SwapError::NotAllocated(s) => write!(f, "slot {} of area {} is not allocated", s.offset(), s.area()),
            SwapError::Bad(s) => write!(f, "slot {} of area {} is marked bad (failed writes)", s.offset(), s.area()),
            SwapError::AlreadyCached(s) => {
                write!(f, "slot {} of area {} already has a page in the swap cache", s.offset(), s.area())
            }
            SwapError::FrameCached { frame, slot } => write!(
                f,
                "frame {:#x} is in the swap cache already, for slot {} of area {}",
                frame.as_u64(),
                slot.offset(),
                slot.area()
            ),
            SwapError::TooLarge { slots, max } => {
                write!(f, "a store of {slots} slots is larger than a swap area can be ({max} slots)")
            }
            SwapError::NotWritten(s) => write!(f, "slot {} of area {} was never written", s.offset(), s.area()),
            SwapError::CountOverflow(s) => write!(f, "slot {} of area {} has too many users", s.offset(), s.area()),
            SwapError::Store(e) => write!(f, "swap device: {e}"),
            SwapError::Corrupt(s) => write!(f, "slot {} of area {} failed its checksum", s.offset(), s.area()),
            SwapError::OutOfMemory => write!(f, "no frame to swap in"),
            SwapError::Frames(e) => write!(f, "the frame provider refused a frame to swap in: {e}"),
            SwapError::Unreachable(a) => {
                write!(f, "frame {:#x} is not reachable through the memory accessor", a.as_u64())
            }
            SwapError::BadRun(n) => write!(f, "a run of {n} slots is not a power of two up to {CLUSTER}"),
            SwapError::InUse { area, slots } => write!(f, "area {area} still has {slots} slots in use"),
        }
    }
}

impl core::error::Error for SwapError {}

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
pub struct Swap {
    config: SwapConfig,
    areas: Mutex<Areas>,
    rotor: AtomicUsize,
    /// Per-CPU caches of allocated slots not handed out yet (Linux's
    /// swap_slots cache): most allocations take one here.
    slot_cache: Box<[Mutex<SlotCache>]>,
    cache: Mutex<SwapCache>,
    /// Plain counters (statistics, not synchronisation: never modelled).
    stats: [core::sync::atomic::AtomicU64; 6],
}

const ST_WRITES: usize = 0;
const ST_WRITE_ERRORS: usize = 1;
const ST_READS: usize = 2;
const ST_READAHEAD: usize = 3;
const ST_HITS: usize = 4;
const ST_READ_ERRORS: usize = 5;

impl Swap {
    /// No areas yet.
    pub fn new(config: SwapConfig) -> Swap {
        Swap {
            config,
            areas: Mutex::new(Areas { by_number: [const { None }; MAX_AREAS], order: Vec::new(), top: 0 }),
            rotor: AtomicUsize::new(0),
            slot_cache: (0..config.cpus.max(1)).map(|_| Mutex::new(SlotCache::EMPTY)).collect(),
            cache: Mutex::new(SwapCache { by_slot: BTreeMap::new(), by_frame: BTreeMap::new() }),
            stats: [const { core::sync::atomic::AtomicU64::new(0) }; 6],
        }
    }

    fn bump(&self, i: usize, n: u64) {
        self.stats[i].fetch_add(n, Ordering::Relaxed);
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

    /// Allocates one slot with one use, from the best area that has room,
    /// in `cpu`'s current cluster of that area.
    ///
    /// Single slots come from `cpu`'s slot cache, refilled with up to
    /// [`SLOT_BATCH`] slots of one area at a time (so consecutive
    /// allocations stay contiguous, and areas of equal priority take turns
    /// by batch). When every area is full, slots cached by other CPUs are
    /// taken before [`SwapError::Full`] is reported.
    pub fn alloc(&self, cpu: usize) -> Result<SwapSlot, SwapError> {
        let n = self.slot_cache.len();
        let cpu = if cpu < n { cpu } else { cpu % n };
        if let Some(s) = self.slot_cache[cpu].lock().take() {
            return Ok(s);
        }
        self.alloc_slow(cpu)
    }

    /// [`alloc`](Self::alloc) with `cpu`'s slot cache empty: refill it, or
    /// take another CPU's cached slot.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, cpu: usize) -> Result<SwapSlot, SwapError> {
        {
            let mut mine = self.slot_cache[cpu].lock();
            // Another thread on this CPU may have refilled it meanwhile.
            if let Some(s) = mine.take() {
                return Ok(s);
            }
            if self.refill(cpu, &mut mine) {
                if let Some(s) = mine.take() {
                    return Ok(s);
                }
            }
        }
        // Other CPUs' caches, one lock at a time (two CPUs doing this at
        // once never hold each other's lock).
        for other in self.slot_cache.iter() {
            if let Some(s) = other.lock().take() {
                return Ok(s);
            }
        }
        Err(SwapError::Full)
    }

    /// Fills `cache` (empty) from the best area with room; whether any slot
    /// came.
    fn refill(&self, cpu: usize, cache: &mut SlotCache) -> bool {
        let mut fill = |i: u8, a: Arc<Area>| {
            let n = a.alloc_batch(cpu, &mut cache.offsets);
            (cache.area, cache.head, cache.len) = (i, 0, n as u8);
            cache.from = (n > 0).then_some(a);
            n > 0
        };
        if let Some((i, a)) = self.first_choice() {
            if fill(i, a) {
                return true;
            }
        }
        self.candidates().into_iter().any(|(i, a)| fill(i, a))
    }

    /// One of the highest-priority areas (in turn), without building the
    /// whole list; `None` if there are no areas.
    fn first_choice(&self) -> Option<(u8, Arc<Area>)> {
        let areas = self.areas.lock();
        let k = match areas.top {
            0 => return None,
            1 => 0,
            top => self.rotor.fetch_add(1, Ordering::Relaxed) % top,
        };
        let i = areas.order[k];
        areas.by_number[i as usize].clone().map(|a| (i, a))
    }

    /// Returns the slots cached for allocation from the areas `drop` names
    /// to those areas' free slots (and lets go of those areas).
    fn drain_slot_caches(&self, drop: impl Fn(u8) -> bool) {
        for c in self.slot_cache.iter() {
            let (from, gone) = {
                let mut c = c.lock();
                if !drop(c.area) {
                    continue;
                }
                let gone = c.offsets[c.head as usize..c.len as usize].to_vec();
                c.head = c.len;
                (c.from.take(), gone)
            };
            if let Some(a) = from {
                for off in gone {
                    let back = a.unreserve(off);
                    debug_assert!(back, "a slot-cache slot was not reserved");
                }
            }
        }
    }

    /// Allocates `n` contiguous slots (a power of two up to [`CLUSTER`],
    /// aligned to `n`) with one use each, for a multi-page folio; returns
    /// the first. [`SwapError::Full`] if no area has such a run free.
    pub fn alloc_run(&self, cpu: usize, n: usize) -> Result<SwapSlot, SwapError> {
        if !n.is_power_of_two() || n > CLUSTER {
            return Err(SwapError::BadRun(n));
        }
        if n == 1 {
            return self.alloc(cpu);
        }
        if let Some((i, a)) = self.first_choice() {
            if let Some(off) = a.alloc(cpu, n) {
                return Ok(slot_at(i, off));
            }
        }
        for (i, a) in self.candidates() {
            if let Some(off) = a.alloc(cpu, n) {
                return Ok(slot_at(i, off));
            }
        }
        Err(SwapError::Full)
    }

    /// One more use of `slot` (a forked page table names it too).
    /// [`SwapError::NotAllocated`] if it has no use (free, or not handed
    /// out yet), [`SwapError::Bad`] if it is bad.
    pub fn dup(&self, slot: SwapSlot) -> Result<(), SwapError> {
        let a = self.area_of(slot)?;
        a.with_slot(slot.offset(), |m, _, _| {
            let count = *m & COUNT_MASK;
            if is_bad(*m) {
                Err(SwapError::Bad(slot))
            } else if !in_use(*m) {
                Err(SwapError::NotAllocated(slot))
            } else if count == COUNT_MASK {
                Err(SwapError::CountOverflow(slot))
            } else {
                *m += 1;
                Ok(())
            }
        })
    }

    /// The uses of `slot` (0 if free, or waiting in a per-CPU slot cache);
    /// [`SwapError::Bad`] if it is bad.
    pub fn count(&self, slot: SwapSlot) -> Result<u16, SwapError> {
        let a = self.area_of(slot)?;
        a.with_slot(slot.offset(), |m, _, _| {
            if is_bad(*m) {
                Err(SwapError::Bad(slot))
            } else if in_use(*m) {
                Ok(*m & COUNT_MASK)
            } else {
                Ok(0)
            }
        })
    }

    /// One use of `slot` less. When the last goes, the slot is freed; if
    /// its page was in the swap cache, the cache lets it go and the frame
    /// is returned for the caller to release (or keep, if a page table now
    /// maps it).
    ///
    /// [`SwapError::NotAllocated`] if the slot has no use (a double free,
    /// or a slot never handed out), [`SwapError::Bad`] if it is bad.
    pub fn free(&self, slot: SwapSlot) -> Result<Option<PhysAddr>, SwapError> {
        let a = self.area_of(slot)?;
        // A slot without a cached page needs only its cluster's lock: a
        // swap-in marks the slot (under that lock too) before it reads.
        match a.put_uncached(slot.offset()) {
            PutUse::Done => return Ok(None),
            PutUse::NotAllocated => return Err(SwapError::NotAllocated(slot)),
            PutUse::Bad => return Err(SwapError::Bad(slot)),
            PutUse::Cached => {}
        }
        // The cache lock first: a swap-in racing the last free sees either
        // the slot with its use or no slot at all.
        let mut cache = self.cache.lock();
        let m = a.with_slot(slot.offset(), |m, _, _| *m);
        if is_bad(m) {
            return Err(SwapError::Bad(slot));
        }
        if !in_use(m) {
            return Err(SwapError::NotAllocated(slot));
        }
        let after = a.put(slot.offset(), false);
        if after & COUNT_MASK == 0 && after & HAS_CACHE != 0 {
            if let Some(Cached::Ready(f)) = cache.get(&slot).copied() {
                cache.remove(&slot);
                a.put(slot.offset(), true);
                return Ok(Some(f));
            }
            // A read is under way with no user left: the reader finds the
            // slot unused when it finishes and drops its page.
        }
        Ok(None)
    }

    /// Writes a frame's page to `slot` (allocated) with its checksum.
    /// On failure the slot's failure count goes up and the error is
    /// returned; the page was not touched.
    ///
    /// [`SwapError::NotAllocated`] if the slot has neither a use nor a
    /// page in the swap cache (free, or not handed out yet),
    /// [`SwapError::Bad`] if it is bad: nothing is written then.
    ///
    /// # Safety
    /// `frame` holds the page and nothing writes it during the call.
    pub unsafe fn write<M: PhysMemory + ?Sized>(
        &self,
        slot: SwapSlot,
        frame: PhysAddr,
        mem: &M,
    ) -> Result<(), SwapError> {
        let a = self.area_of(slot)?;
        let usable = |m: u16| {
            if is_bad(m) {
                Err(SwapError::Bad(slot))
            } else if !allocated(m) {
                Err(SwapError::NotAllocated(slot))
            } else {
                Ok(())
            }
        };
        a.with_slot(slot.offset(), |m, _, _| usable(*m))?;
        let p = mem.translate(frame, SLOT_SIZE).map_err(|_| SwapError::Unreachable(frame))?;
        // The frame's SLOT_SIZE bytes, which nobody writes during the call
        // (the caller's promise).
        // SAFETY: `translate` checked the range; nobody writes it meanwhile.
        let page: &[u8; SLOT_SIZE] = unsafe { &*p.as_ptr().cast::<[u8; SLOT_SIZE]>() };
        let sum = checksum::page(page);
        match a.store.write_slot(slot.offset(), page) {
            Ok(()) => {
                // A slot freed during the write (a caller's bug) must not
                // keep a checksum: its next owner would read this page.
                a.with_slot(slot.offset(), |m, s, fails| {
                    usable(*m)?;
                    *s = sum;
                    *fails = 0;
                    Ok(())
                })?;
                self.bump(ST_WRITES, 1);
                Ok(())
            }
            Err(e) => {
                a.with_slot(slot.offset(), |_, s, fails| {
                    *fails = fails.saturating_add(1);
                    *s = 0;
                });
                self.bump(ST_WRITE_ERRORS, 1);
                Err(SwapError::Store(e))
            }
        }
    }

    /// Swap-out of a page with `users` mappers that still map it: a slot
    /// with `users` uses, written from `frame`. On a failed write the slot
    /// is freed (and marked bad after [`BAD_AFTER`] failures) and the error
    /// returned: the caller keeps the page resident and dirty. On success
    /// the caller replaces each mapping with the slot and frees the frame
    /// (or keeps it in the cache with [`Swap::cache`]).
    ///
    /// # Safety
    /// As [`Swap::write`]: nothing writes `frame` during the call (its
    /// mappings are write-protected or their users stopped).
    pub unsafe fn swap_out<M: PhysMemory + ?Sized>(
        &self,
        cpu: usize,
        frame: PhysAddr,
        users: u16,
        mem: &M,
    ) -> Result<SwapSlot, SwapError> {
        let users = users.clamp(1, COUNT_MASK);
        let slot = self.alloc(cpu)?;
        for _ in 1..users {
            self.dup(slot)?; // cannot fail: the slot is ours and users fit
        }
        // SAFETY: the caller's promise, passed on.
        match unsafe { self.write(slot, frame, mem) } {
            Ok(()) => Ok(slot),
            Err(e) => {
                for _ in 0..users {
                    self.free(slot)?;
                }
                Err(e)
            }
        }
    }

    /// Puts `frame` in the swap cache as `slot`'s page (a page written out
    /// but still resident): faults map it again without I/O. The slot must
    /// have a use ([`SwapError::NotAllocated`], [`SwapError::Bad`]) and no
    /// page in the cache yet ([`SwapError::AlreadyCached`]); the frame must
    /// not be cached for another slot ([`SwapError::FrameCached`]: a frame
    /// is one page, and [`Swap::free`] would hand it back twice).
    pub fn cache(&self, slot: SwapSlot, frame: PhysAddr) -> Result<(), SwapError> {
        let a = self.area_of(slot)?;
        let mut cache = self.cache.lock();
        match cache.by_frame.get(&frame.as_u64()) {
            // The same page again: the slot check below says so.
            Some(&other) if other != slot => return Err(SwapError::FrameCached { frame, slot: other }),
            _ => {}
        }
        a.with_slot(slot.offset(), |m, _, _| {
            if is_bad(*m) {
                return Err(SwapError::Bad(slot));
            }
            if !in_use(*m) {
                return Err(SwapError::NotAllocated(slot));
            }
            if *m & HAS_CACHE != 0 {
                return Err(SwapError::AlreadyCached(slot));
            }
            *m |= HAS_CACHE;
            Ok(())
        })?;
        cache.insert(slot, Cached::Ready(frame));
        Ok(())
    }

    /// The cached frame of `slot`, if any.
    pub fn lookup(&self, slot: SwapSlot) -> Option<PhysAddr> {
        match self.cache.lock().get(&slot) {
            Some(Cached::Ready(f)) => Some(*f),
            _ => None,
        }
    }

    /// Drops `slot`'s page from the cache (reclaim taking the frame back)
    /// and returns its frame; the slot keeps its uses and data.
    pub fn uncache(&self, slot: SwapSlot) -> Result<Option<PhysAddr>, SwapError> {
        let a = self.area_of(slot)?;
        let mut cache = self.cache.lock();
        match cache.get(&slot).copied() {
            Some(Cached::Ready(f)) => {
                cache.remove(&slot);
                a.put(slot.offset(), true);
                Ok(Some(f))
            }
            _ => Ok(None),
        }
    }

    /// The slot whose page `frame` holds in the swap cache, if any (reclaim
    /// taking a cached page: a readahead page nobody mapped, or one whose
    /// mappers have all dropped it).
    pub fn cached_slot(&self, frame: PhysAddr) -> Option<SwapSlot> {
        self.cache.lock().by_frame.get(&frame.as_u64()).copied()
    }

    /// Every cached page: (slot, frame).
    pub fn cached(&self) -> Vec<(SwapSlot, PhysAddr)> {
        self.cache
            .lock()
            .by_slot
            .iter()
            .filter_map(|(s, c)| match c {
                Cached::Ready(f) => Some((*s, *f)),
                Cached::Loading => None,
            })
            .collect()
    }

    /// Reads `slot`'s page as last written into `buf`, checked against its
    /// checksum, without touching the swap cache: the page a swap-in would
    /// read if the slot were not cached (for checks and debugging tools;
    /// faults use [`Swap::swap_in`]).
    pub fn read_slot(&self, slot: SwapSlot, buf: &mut [u8; SLOT_SIZE]) -> Result<(), SwapError> {
        let a = self.area_of(slot)?;
        let want = a.with_slot(slot.offset(), |m, s, _| (*m & COUNT_MASK != 0).then_some(*s));
        match want {
            None => Err(SwapError::NotAllocated(slot)),
            Some(0) => Err(SwapError::NotWritten(slot)),
            Some(want) => {
                a.store.read_slot(slot.offset(), buf).map_err(SwapError::Store)?;
                if checksum::page(buf) == want {
                    Ok(())
                } else {
                    Err(SwapError::Corrupt(slot))
                }
            }
        }
    }

    /// Whether the cached page of `slot` is what was last written to the
    /// slot (by checksum, no I/O): `Ok(None)` if the slot has no page in
    /// the cache. A caller that tracks dirty pages checks with it that every
    /// page it holds clean really is (a debug verification: a clean cached
    /// page that differs from its slot is a write the slot lost).
    ///
    /// # Safety
    /// Nothing writes the cached frame during the call.
    pub unsafe fn cached_matches<M: PhysMemory + ?Sized>(
        &self,
        slot: SwapSlot,
        mem: &M,
    ) -> Result<Option<bool>, SwapError> {
        let a = self.area_of(slot)?;
        let Some(frame) = self.lookup(slot) else { return Ok(None) };
        let want = a.with_slot(slot.offset(), |_, s, _| *s);
        let p = mem.translate(frame, SLOT_SIZE).map_err(|_| SwapError::Unreachable(frame))?;
        // SAFETY: `translate` checked the range; nobody writes it meanwhile (the caller's promise).
        let page: &[u8; SLOT_SIZE] = unsafe { &*p.as_ptr().cast::<[u8; SLOT_SIZE]>() };
        Ok(Some(want != 0 && checksum::page(page) == want))
    }

    /// The frame holding `slot`'s page, and whether it was read (`false`:
    /// served by the cache). The page stays in the cache; the caller maps
    /// it and drops its use of the slot with [`Swap::free`], which returns
    /// the frame from the cache once no other user is left.
    ///
    /// A read allocates a frame from `frames`, reads the slot, checks it
    /// against the checksum written with it ([`SwapError::Corrupt`]
    /// otherwise; the slot keeps its data and users, and the frame is
    /// freed), then reads ahead up to [`SwapConfig::readahead`] following
    /// slots that are in use and not cached. Faults on one slot at once
    /// share one read.
    pub fn swap_in<F, M>(&self, slot: SwapSlot, frames: &F, mem: &M) -> Result<(PhysAddr, bool), SwapError>
    where
        F: FrameProvider + ?Sized,
        M: PhysMemory + ?Sized,
    {
        let a = self.area_of(slot)?;
        loop {
            let mut cache = self.cache.lock();
            match cache.get(&slot).copied() {
                Some(Cached::Ready(f)) => {
                    self.bump(ST_HITS, 1);
                    return Ok((f, false));
                }
                Some(Cached::Loading) => {
                    drop(cache);
                    spin_loop();
                    continue;
                }
                None => {
                    a.with_slot(slot.offset(), |m, _, _| {
                        if is_bad(*m) {
                            return Err(SwapError::Bad(slot));
                        }
                        if !in_use(*m) {
                            return Err(SwapError::NotAllocated(slot));
                        }
                        *m |= HAS_CACHE;
                        Ok(())
                    })?;
                    cache.insert(slot, Cached::Loading);
                    break;
                }
            }
        }
        let r = self.read_into(&a, slot, frames, mem);
        let mut cache = self.cache.lock();
        match r {
            Ok(frame) => {
                // Every user may have gone while it was read.
                let users = a.with_slot(slot.offset(), |m, _, _| *m & COUNT_MASK);
                if users == 0 {
                    cache.remove(&slot);
                    a.put(slot.offset(), true);
                    drop(cache);
                    // A provider refusing its own frame is a bug there; nothing to undo here.
                    let _ = frames.free_frame(frame);
                    return Err(SwapError::NotAllocated(slot));
                }
                cache.insert(slot, Cached::Ready(frame));
                drop(cache);
                self.bump(ST_READS, 1);
                self.readahead(&a, slot, frames, mem);
                Ok((frame, true))
            }
            Err(e) => {
                cache.remove(&slot);
                a.put(slot.offset(), true);
                self.bump(ST_READ_ERRORS, 1);
                Err(e)
            }
        }
    }

    /// Reads `slot` into a new frame and checks it.
    fn read_into<F, M>(&self, a: &Area, slot: SwapSlot, frames: &F, mem: &M) -> Result<PhysAddr, SwapError>
    where
        F: FrameProvider + ?Sized,
        M: PhysMemory + ?Sized,
    {
        let want = a.with_slot(slot.offset(), |_, s, _| *s);
        if want == 0 {
            return Err(SwapError::NotWritten(slot));
        }
        let frame = frames.allocate_frame(AllocFlags::MOVABLE).map_err(|e| match e {
            FrameError::OutOfMemory { .. } | FrameError::ZoneExhausted { .. } => SwapError::OutOfMemory,
            other => SwapError::Frames(other),
        })?;
        let fail = |e| {
            let _ = frames.free_frame(frame);
            Err(e)
        };
        let p = match mem.translate(frame, SLOT_SIZE) {
            Ok(p) => p,
            Err(_) => return fail(SwapError::Unreachable(frame)),
        };
        // SAFETY: a frame just allocated for this read; `translate` checked the range.
        let page: &mut [u8; SLOT_SIZE] = unsafe { &mut *p.as_ptr().cast::<[u8; SLOT_SIZE]>() };
        if let Err(e) = a.store.read_slot(slot.offset(), page) {
            return fail(SwapError::Store(e));
        }
        if checksum::page(page) != want {
            return fail(SwapError::Corrupt(slot));
        }
        Ok(frame)
    }

    /// Reads the following in-use, uncached slots into the cache.
    fn readahead<F, M>(&self, a: &Area, slot: SwapSlot, frames: &F, mem: &M)
    where
        F: FrameProvider + ?Sized,
        M: PhysMemory + ?Sized,
    {
        for k in 1..=u64::from(self.config.readahead) {
            let next = slot_at(slot.area(), slot.offset() + k);
            if next.offset() >= a.slots {
                break;
            }
            {
                let mut cache = self.cache.lock();
                let ok = a.with_slot(next.offset(), |m, s, _| {
                    let ok = *m & BAD == 0 && *m & COUNT_MASK != 0 && *m & HAS_CACHE == 0 && *s != 0;
                    if ok {
                        *m |= HAS_CACHE;
                    }
                    ok
                });
                if !ok {
                    // Readahead stops at the first slot it cannot use.
                    break;
                }
                cache.insert(next, Cached::Loading);
            }
            let r = self.read_into(a, next, frames, mem);
            let mut cache = self.cache.lock();
            let users = a.with_slot(next.offset(), |m, _, _| *m & COUNT_MASK);
            match r {
                Ok(f) if users > 0 => {
                    cache.insert(next, Cached::Ready(f));
                    self.bump(ST_READAHEAD, 1);
                }
                other => {
                    cache.remove(&next);
                    a.put(next.offset(), true);
                    drop(cache);
                    if let Ok(f) = other {
                        let _ = frames.free_frame(f);
                    }
                    break;
                }
            }
        }
    }

    /// Removes area `n`: no new slots are allocated in it, then `unuse` is
    /// called to bring every page of the area back in (walk the page
    /// tables, swap in each entry of the area and free it; drop cached
    /// pages with [`Swap::uncache`] or `free`). If slots are still in use
    /// afterwards the area goes back to service and
    /// [`SwapError::InUse`] is returned; else it is removed and its store
    /// returned.
    pub fn swapoff(
        &self,
        n: u8,
        unuse: &mut dyn FnMut(&Swap, u8) -> Result<(), SwapError>,
    ) -> Result<Box<dyn BackingStore + Send + Sync>, SwapError> {
        let a = self.area(n)?;
        a.state.store(DRAINING, Ordering::Release);
        self.drain_slot_caches(|area| area == n);
        let r = unuse(self, n);
        // A refill that raced the state change may have cached some more.
        self.drain_slot_caches(|area| area == n);
        let left = a.used.load(Ordering::Acquire);
        if let Err(e) = r {
            a.state.store(ACTIVE, Ordering::Release);
            return Err(e);
        }
        if left != 0 {
            a.state.store(ACTIVE, Ordering::Release);
            return Err(SwapError::InUse { area: n, slots: left });
        }
        let mut areas = self.areas.lock();
        areas.by_number[n as usize] = None;
        areas.reorder();
        drop(areas);
        match Arc::try_unwrap(a) {
            Ok(area) => Ok(area.store),
            // Another CPU still holds the area for a moment (a lookup that
            // found no slot): it is removed; its store goes with the last
            // reference.
            Err(_) => Err(SwapError::NoArea(n)),
        }
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
        let g = |i: usize| self.stats[i].load(Ordering::Relaxed);
        SwapStats {
            writes: g(ST_WRITES),
            write_errors: g(ST_WRITE_ERRORS),
            reads: g(ST_READS),
            readahead: g(ST_READAHEAD),
            cache_hits: g(ST_HITS),
            read_errors: g(ST_READ_ERRORS),
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
                    if allocated(cl.map[off]) && cl.map[off] & HAS_CACHE != 0 {
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

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
