//! Writing pages to their slots and reading them back: checksums, the
//! swap cache on the way in, and readahead.

use core::mem::MaybeUninit;
use mm_types::sync::spin_loop;

use mm_types::{AllocFlags, FrameError, FrameProvider, Order, OwnedFrames, PhysAddr, PhysMemory, SwapSlot, SLOT_SIZE};

use super::{Cached, Swap, SwappedIn};
use crate::area::{allocated, has_cache, in_use, is_bad, mark_cached, use_count, Area, MAX_USERS};
use crate::{checksum, slot_at, SwapError, MAX_RUN};

/// Filler for the unused entries of a run's page array.
static NO_PAGE: [u8; SLOT_SIZE] = [0; SLOT_SIZE];

/// Up to [`MAX_RUN`] page buffers of one read, on the stack.
struct Bufs<'p> {
    bufs: [MaybeUninit<&'p mut [u8; SLOT_SIZE]>; MAX_RUN],
    len: usize,
}

impl<'p> Bufs<'p> {
    fn new() -> Self {
        Bufs { bufs: [const { MaybeUninit::uninit() }; MAX_RUN], len: 0 }
    }

    fn push(&mut self, buf: &'p mut [u8; SLOT_SIZE]) {
        self.bufs[self.len].write(buf);
        self.len += 1;
    }

    fn as_mut(&mut self) -> &mut [&'p mut [u8; SLOT_SIZE]] {
        // SAFETY: the first `len` entries were written by `push`, and
        // `MaybeUninit<T>` has the layout of `T`.
        unsafe { core::slice::from_raw_parts_mut(self.bufs.as_mut_ptr().cast(), self.len) }
    }
}

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
        let mut done = [Ok(())];
        // SAFETY: the caller's promise, passed on.
        unsafe { self.write_batch(&[(slot, frame)], mem, &mut done) };
        let [r] = done;
        r
    }

    /// [`write`](Swap::write) for several pages: `pages[i].1` to slot
    /// `pages[i].0`, its result in `done[i]`. Entries whose slots follow
    /// each other in one area (slot `s`, then `s + 1`, ...) go to the
    /// store as one request, up to its
    /// [`max_run`](mm_types::BackingStore::max_run) and [`MAX_RUN`]
    /// pages: sort by slot to get the most from it. A failed request of
    /// several slots is tried again slot by slot, so that only the pages
    /// whose own write fails fail (with the store's error, their slots'
    /// failure counts raised).
    ///
    /// # Panics
    /// If `done` and `pages` differ in length.
    ///
    /// # Safety
    /// Each frame holds its page, and nothing writes it during the call.
    pub unsafe fn write_batch<M: PhysMemory + ?Sized>(
        &self,
        pages: &[(SwapSlot, PhysAddr)],
        mem: &M,
        done: &mut [Result<(), SwapError>],
    ) {
        assert_eq!(pages.len(), done.len(), "one result per page");
        let usable = |m: u16, slot: SwapSlot| {
            if is_bad(m) {
                Err(SwapError::Bad(slot))
            } else if !allocated(m) {
                Err(SwapError::NotAllocated(slot))
            } else {
                Ok(())
            }
        };
        let mut i = 0;
        while i < pages.len() {
            let first = pages[i].0;
            let a = match self.area_of(first) {
                Ok(a) => a,
                Err(e) => {
                    done[i] = Err(e);
                    i += 1;
                    continue;
                }
            };
            let max = a.store.max_run().clamp(1, MAX_RUN);
            let mut run: [&[u8; SLOT_SIZE]; MAX_RUN] = [&NO_PAGE; MAX_RUN];
            let mut sums = [0u64; MAX_RUN];
            let mut n = 0;
            while i + n < pages.len() && n < max {
                let (slot, frame) = pages[i + n];
                if slot.area() != first.area() || slot.offset() != first.offset() + n as u64 {
                    break;
                }
                let page = a.with_slot(slot.offset(), |m, _, _| usable(*m, slot)).and_then(|()| {
                    let p = mem.translate(frame, SLOT_SIZE).map_err(|_| SwapError::Unreachable(frame))?;
                    // The frame's SLOT_SIZE bytes, which nobody writes
                    // during the call (the caller's promise).
                    // SAFETY: `translate` checked the range; nobody writes it meanwhile.
                    Ok(unsafe { &*p.as_ptr().cast::<[u8; SLOT_SIZE]>() })
                });
                match page {
                    Ok(page) => {
                        sums[n] = checksum::page(page);
                        run[n] = page;
                        n += 1;
                    }
                    // The run ends before it; alone, it fails below.
                    Err(_) if n > 0 => break,
                    Err(e) => {
                        done[i] = Err(e);
                        break;
                    }
                }
            }
            if n == 0 {
                i += 1;
                continue;
            }
            // A failed run is tried again slot by slot: a bad slot must not
            // fail, and wear out towards `BAD_AFTER`, its good neighbours.
            let mut each = [Ok(()); MAX_RUN];
            match a.store.write_slots(first.offset(), &run[..n]) {
                Ok(()) => {}
                Err(e) if n == 1 => each[0] = Err(e),
                Err(_) => {
                    for (k, (e, page)) in each.iter_mut().zip(&run).take(n).enumerate() {
                        *e = a.store.write_slot(first.offset() + k as u64, page);
                    }
                }
            }
            for k in 0..n {
                let slot = pages[i + k].0;
                done[i + k] = match each[k] {
                    // A slot freed during the write (a caller's bug) must
                    // not keep a checksum: its next owner would read this page.
                    Ok(()) => a.with_slot(slot.offset(), |m, s, fails| {
                        usable(*m, slot)?;
                        *s = sums[k];
                        *fails = 0;
                        Ok(())
                    }),
                    Err(e) => {
                        a.with_slot(slot.offset(), |_, s, fails| {
                            *fails = fails.saturating_add(1);
                            *s = 0;
                        });
                        Err(SwapError::Store(e))
                    }
                };
                match done[i + k] {
                    Ok(()) => self.stats.writes.bump(),
                    Err(SwapError::Store(_)) => self.stats.write_errors.bump(),
                    Err(_) => {}
                }
            }
            i += n;
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
        let r = self.read_run(&a, slot, frames, mem);
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

    /// A frame for a read.
    fn frame_for_read<'f, F: FrameProvider + ?Sized>(frames: &'f F) -> Result<OwnedFrames<'f, F>, SwapError> {
        frames.allocate_owned(Order::ZERO, AllocFlags::MOVABLE).map_err(|e| match e {
            FrameError::OutOfMemory { .. } | FrameError::ZoneExhausted { .. } => SwapError::OutOfMemory,
            other => SwapError::Frames(other),
        })
    }

    /// Reads `slot` (marked cached and `Loading` by the caller) into a new
    /// frame and checks it; the frame is the caller's to keep (`into_raw`)
    /// or to drop, which frees it. The following slots that are in use,
    /// written and not cached are read ahead in the same request (up to
    /// [`SwapConfig::readahead`](crate::SwapConfig::readahead) of them, and
    /// the store's run), and go into the cache: readahead stops at the
    /// first slot it cannot use, and a page read ahead for nobody (its
    /// users gone meanwhile) or failing its checksum is dropped. If the
    /// request fails, `slot` is read again alone: a bad slot ahead never
    /// fails the fault.
    fn read_run<'f, F, M>(
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
        let owned = Self::frame_for_read(frames)?;
        let page_of = |f: &OwnedFrames<'f, F>| {
            let frame = f.block().start_address();
            let p = mem.translate(frame, SLOT_SIZE).map_err(|_| SwapError::Unreachable(frame))?;
            // SAFETY: a frame just allocated for this read, owned by it
            // until the read is done; `translate` checked the range.
            Ok::<_, SwapError>(unsafe { &mut *p.as_ptr().cast::<[u8; SLOT_SIZE]>() })
        };
        let mut bufs = Bufs::new();
        bufs.push(page_of(&owned)?);
        // The slots ahead, claimed as the fault's slot was: cached, loading.
        let mut ahead: [Option<(OwnedFrames<'f, F>, u64)>; MAX_RUN] = [const { None }; MAX_RUN];
        let limit = (self.config.readahead as usize).min(MAX_RUN - 1);
        let mut n = 0;
        while n < limit {
            let next = slot_at(slot.area(), slot.offset() + 1 + n as u64);
            if next.offset() >= a.slots {
                break;
            }
            let claimed = {
                let mut cache = self.cache.lock();
                let sum = a.with_slot(next.offset(), |m, s, _| {
                    let ok = in_use(*m) && !has_cache(*m) && *s != 0;
                    if ok {
                        mark_cached(m);
                    }
                    ok.then_some(*s)
                });
                if sum.is_some() {
                    cache.insert(next, Cached::Loading);
                }
                sum
            };
            let Some(sum) = claimed else { break };
            match Self::frame_for_read(frames).and_then(|f| Ok((page_of(&f)?, f))) {
                Ok((page, f)) => {
                    bufs.push(page);
                    ahead[n] = Some((f, sum));
                    n += 1;
                }
                Err(_) => {
                    // Both under the cache lock, as everywhere: a fault on
                    // `next` must not find it uncached while still marked.
                    let mut cache = self.cache.lock();
                    cache.remove(&next);
                    a.put(next.offset(), true);
                    break;
                }
            }
        }
        // The run in requests of the store's length, the fault's slot first.
        let bufs = bufs.as_mut();
        let max = a.store.max_run().clamp(1, MAX_RUN);
        let mut read = [false; MAX_RUN];
        let mut first = Ok(());
        let mut at = 0;
        while at <= n {
            let len = max.min(n + 1 - at);
            let off = slot.offset() + at as u64;
            let r = if len == 1 {
                a.store.read_slot(off, bufs[at])
            } else {
                a.store.read_slots(off, &mut bufs[at..at + len])
            };
            match r {
                Ok(()) => read[at..at + len].fill(true),
                // The pages ahead in it are dropped; the fault's slot is
                // read again alone.
                Err(_) if at == 0 && len > 1 => {
                    first = a.store.read_slot(slot.offset(), bufs[0]);
                    read[0] = first.is_ok();
                }
                Err(e) if at == 0 => first = Err(e),
                Err(_) => {}
            }
            at += len;
        }
        for (k, entry) in ahead.iter_mut().take(n).enumerate() {
            let next = slot_at(slot.area(), slot.offset() + 1 + k as u64);
            let (f, sum) = entry.take().expect("claimed above");
            let good = read[1 + k] && checksum::page(bufs[1 + k]) == sum;
            let mut cache = self.cache.lock();
            let users = a.with_slot(next.offset(), |m, _, _| use_count(*m));
            if good && users > 0 {
                cache.insert(next, Cached::Ready(f.into_raw().start_address()));
                self.stats.readahead.bump();
            } else {
                cache.remove(&next);
                a.put(next.offset(), true);
                drop(cache);
                // A page read for nobody, or not as written: dropping it
                // frees the frame.
                drop(f);
            }
        }
        first.map_err(SwapError::Store)?;
        if checksum::page(bufs[0]) != want {
            return Err(SwapError::Corrupt(slot));
        }
        Ok(owned)
    }
}
