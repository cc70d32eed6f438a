//! Writing pages to their slots and reading them back: checksums, the
//! swap cache on the way in, and readahead.

use mm_types::sync::spin_loop;
use mm_types::{AllocFlags, FrameError, FrameProvider, Order, OwnedFrames, PhysAddr, PhysMemory, SwapSlot, SLOT_SIZE};

use super::{Cached, Swap, SwappedIn};
use crate::area::{allocated, has_cache, in_use, is_bad, mark_cached, use_count, Area, MAX_USERS};
use crate::{checksum, slot_at, SwapError};

impl Swap {
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
                self.stats.writes.bump();
                Ok(())
            }
            Err(e) => {
                a.with_slot(slot.offset(), |_, s, fails| {
                    *fails = fails.saturating_add(1);
                    *s = 0;
                });
                self.stats.write_errors.bump();
                Err(SwapError::Store(e))
            }
        }
    }

    /// Swap-out of a page with `users` mappers that still map it: a slot
    /// with `users` uses, written from `frame`. On a failed write the slot
    /// is freed (and marked bad after [`BAD_AFTER`](crate::BAD_AFTER) failures) and the error
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
        let users = users.clamp(1, MAX_USERS);
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

    /// Reads `slot`'s page as last written into `buf`, checked against its
    /// checksum, without touching the swap cache: the page a swap-in would
    /// read if the slot were not cached (for checks and debugging tools;
    /// faults use [`Swap::swap_in`]).
    pub fn read_slot(&self, slot: SwapSlot, buf: &mut [u8; SLOT_SIZE]) -> Result<(), SwapError> {
        let a = self.area_of(slot)?;
        let want = a.with_slot(slot.offset(), |m, s, _| (use_count(*m) != 0).then_some(*s));
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

    /// The frame holding `slot`'s page, and whether it was read from the
    /// store or served by the cache ([`SwappedIn`]). The page stays in the cache; the caller maps
    /// it and drops its use of the slot with [`Swap::free`], which returns
    /// the frame from the cache once no other user is left.
    ///
    /// A read allocates a frame from `frames`, reads the slot, checks it
    /// against the checksum written with it ([`SwapError::Corrupt`]
    /// otherwise; the slot keeps its data and users, and the frame is
    /// freed), then reads ahead up to [`SwapConfig::readahead`](crate::SwapConfig::readahead) following
    /// slots that are in use and not cached. Faults on one slot at once
    /// share one read.
    pub fn swap_in<F, M>(&self, slot: SwapSlot, frames: &F, mem: &M) -> Result<SwappedIn, SwapError>
    where
        F: FrameProvider + ?Sized,
        M: PhysMemory + ?Sized,
    {
        let a = self.area_of(slot)?;
        loop {
            let mut cache = self.cache.lock();
            match cache.get(&slot).copied() {
                Some(Cached::Ready(f)) => {
                    self.stats.cache_hits.bump();
                    return Ok(SwappedIn { frame: f, read: false });
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
                        mark_cached(m);
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
            Ok(owned) => {
                // Every user may have gone while it was read.
                let users = a.with_slot(slot.offset(), |m, _, _| use_count(*m));
                if users == 0 {
                    cache.remove(&slot);
                    a.put(slot.offset(), true);
                    drop(cache);
                    drop(owned);
                    return Err(SwapError::NotAllocated(slot));
                }
                // The swap cache owns the frame from here.
                let frame = owned.into_raw().start_address();
                cache.insert(slot, Cached::Ready(frame));
                drop(cache);
                self.stats.reads.bump();
                self.readahead(&a, slot, frames, mem);
                Ok(SwappedIn { frame, read: true })
            }
            Err(e) => {
                cache.remove(&slot);
                a.put(slot.offset(), true);
                self.stats.read_errors.bump();
                Err(e)
            }
        }
    }

    /// Reads `slot` into a new frame and checks it; the frame is the
    /// caller's to keep (`into_raw`) or to drop, which frees it.
    fn read_into<'f, F, M>(
        &self,
        a: &Area,
        slot: SwapSlot,
        frames: &'f F,
        mem: &M,
    ) -> Result<OwnedFrames<'f, F>, SwapError>
    where
        F: FrameProvider + ?Sized,
        M: PhysMemory + ?Sized,
    {
        let want = a.with_slot(slot.offset(), |_, s, _| *s);
        if want == 0 {
            return Err(SwapError::NotWritten(slot));
        }
        // An error return below drops `owned`, which frees the frame.
        let owned = frames.allocate_owned(Order::ZERO, AllocFlags::MOVABLE).map_err(|e| match e {
            FrameError::OutOfMemory { .. } | FrameError::ZoneExhausted { .. } => SwapError::OutOfMemory,
            other => SwapError::Frames(other),
        })?;
        let frame = owned.block().start_address();
        let p = mem.translate(frame, SLOT_SIZE).map_err(|_| SwapError::Unreachable(frame))?;
        // SAFETY: a frame just allocated for this read; `translate` checked the range.
        let page: &mut [u8; SLOT_SIZE] = unsafe { &mut *p.as_ptr().cast::<[u8; SLOT_SIZE]>() };
        a.store.read_slot(slot.offset(), page).map_err(SwapError::Store)?;
        if checksum::page(page) != want {
            return Err(SwapError::Corrupt(slot));
        }
        Ok(owned)
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
                    let ok = in_use(*m) && !has_cache(*m) && *s != 0;
                    if ok {
                        mark_cached(m);
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
            let users = a.with_slot(next.offset(), |m, _, _| use_count(*m));
            match r {
                Ok(owned) if users > 0 => {
                    cache.insert(next, Cached::Ready(owned.into_raw().start_address()));
                    self.stats.readahead.bump();
                }
                other => {
                    cache.remove(&next);
                    a.put(next.offset(), true);
                    drop(cache);
                    // A page read for nobody: dropping it frees the frame.
                    drop(other);
                    break;
                }
            }
        }
    }
}
