//! Slot allocation (per-CPU slot caches over per-CPU clusters), runs of
//! slots, and the use counts forked page tables share.

use alloc::sync::Arc;

use mm_types::sync::atomic::Ordering;
use mm_types::{PhysAddr, SwapSlot};

use super::{Cached, SlotCache, Swap};
use crate::area::{has_cache, in_use, is_bad, use_count, Area, PutUse, CLUSTER, MAX_USERS};
use crate::{slot_at, SwapError};

impl Swap {
    /// Allocates one slot with one use, from the best area that has room,
    /// in `cpu`'s current cluster of that area.
    ///
    /// Single slots come from `cpu`'s slot cache, refilled with up to
    /// [`SLOT_BATCH`](crate::SLOT_BATCH) slots of one area at a time (so consecutive
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
    pub(super) fn drain_slot_caches(&self, drop: impl Fn(u8) -> bool) {
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
        self.dup_by(slot, 1)
    }

    /// Adds `n` uses to an allocated `slot` at once, or none if that would
    /// pass the most a slot counts ([`SwapError::CountOverflow`]).
    pub(crate) fn dup_by(&self, slot: SwapSlot, n: u16) -> Result<(), SwapError> {
        let a = self.area_of(slot)?;
        a.with_slot(slot.offset(), |m, _, _| {
            let count = use_count(*m);
            if is_bad(*m) {
                Err(SwapError::Bad(slot))
            } else if !in_use(*m) {
                Err(SwapError::NotAllocated(slot))
            } else if u32::from(count) + u32::from(n) > u32::from(MAX_USERS) {
                Err(SwapError::CountOverflow(slot))
            } else {
                *m += n;
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
                Ok(use_count(*m))
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
        if use_count(after) == 0 && has_cache(after) {
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
}
