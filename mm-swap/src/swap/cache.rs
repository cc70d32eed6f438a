//! The swap cache: pages whose slots page tables still name, kept in
//! memory so faults and reclaim find them without I/O.

use alloc::vec::Vec;

use mm_types::{PhysAddr, PhysMemory, SwapSlot, SLOT_SIZE};

use super::{Cached, Swap};
use crate::area::{has_cache, in_use, is_bad, mark_cached};
use crate::{checksum, SwapError};

impl Swap {
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
            if has_cache(*m) {
                return Err(SwapError::AlreadyCached(slot));
            }
            mark_cached(m);
            Ok(())
        })?;
        cache.insert(slot, Cached::Ready(frame));
        Ok(())
    }

    /// The first step of an unmap-first swap-out: a new slot (from `cpu`'s
    /// cluster, as [`Swap::alloc`]) with `users` uses (one per page table
    /// that will name it; 0 counts as 1), whose page is `frame`, put in the
    /// swap cache *without being written*. The caller then replaces each
    /// mapping of the page with the slot (faults on it meanwhile map `frame`
    /// again, without I/O), writes the page with [`Swap::write`] once no
    /// mapping can write it any more, and only then drops it from the cache
    /// ([`Swap::uncache`]).
    ///
    /// Until that write succeeds the slot holds no data (a read of it is
    /// [`SwapError::NotWritten`]): the cached frame is the page's only copy,
    /// and the caller must keep it cached (its dirty record says so). [`Swap::free`] of the slot's last use hands the frame
    /// back as for any cached page.
    ///
    /// Nothing is allocated on an error: [`SwapError::Full`],
    /// [`SwapError::CountOverflow`] (more than 16,383 users),
    /// [`SwapError::FrameCached`] (`frame` is cached for another slot).
    pub fn alloc_cached(&self, cpu: usize, frame: PhysAddr, users: u16) -> Result<SwapSlot, SwapError> {
        let slot = self.alloc(cpu)?;
        // The other uses in one step (none added if they would overflow).
        let extra = users.saturating_sub(1);
        let mut r = if extra > 0 { self.dup_by(slot, extra) } else { Ok(()) };
        let taken = if r.is_ok() { 1 + extra } else { 1 };
        if r.is_ok() {
            r = self.cache(slot, frame);
        }
        if let Err(e) = r {
            for _ in 0..taken {
                // Not cached: no frame comes back.
                let back = self.free(slot);
                debug_assert_eq!(back, Ok(None), "the slot's own uses");
            }
            return Err(e);
        }
        Ok(slot)
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
}
