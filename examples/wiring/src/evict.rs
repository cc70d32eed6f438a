//! mm-reclaim's [`Evictor`] over mm-vma's reverse map and mm-swap.
//!
//! A victim is a frame ([`PageIds`] numbers them). The evictor finds
//! its mappings in the [`MmContext`]'s reverse map and reaches their address
//! spaces through [`Spaces`], which may refuse a space that is busy (in use
//! by its task on another CPU; reclaim never runs inside a fault here):
//! such a page is kept, as Linux skips pages whose locks it cannot take.
//!
//! An anonymous page is evicted in this order:
//! 1. every mapping is checked evictable (not in a locked VMA, space free);
//! 2. the frame is pinned, written to a new slot with one use per mapping
//!    (write before unmap: the tasks are not running while reclaim runs);
//! 3. each mapping is replaced by the slot's swap entry;
//! 4. the pin is dropped, which frees the frame.
//!
//! A page already in the swap cache (faulted in, still named by other page
//! tables) takes the slot it has: its mappings are replaced by the slot's
//! entry, and it leaves the cache. Its slot is trusted only if no mapper
//! wrote the page since it was last written there: a shared mapping maps
//! the cached frame writable, so the dirty bits of the mappings just
//! removed (and of earlier ones, which mm-vma moved to the page when they
//! went) are checked with [`MmContext::take_dirty`], and a dirty page is written
//! to its slot again first (mm-vma MODEL 24). A cached page nobody maps
//! (read ahead, or all mappers gone) is dropped from the cache the same
//! way, written first if it is dirty.
//!
//! A page of the page cache (its owner recorded in [`FilePages`]) is
//! unmapped from every space ([`AddressSpace::zap_page`]) and handed to
//! the cache's `reclaim`: a clean page is dropped with its shadow left, a
//! dirty one written back first, a shmem page sent to swap. A space that
//! is busy keeps the page (the mappings already removed fault it back).

use alloc::sync::Arc;
use alloc::vec::Vec;

use mm_pagecache::{CacheError, CachedFile, Reclaimed};
use mm_paging::PagingArch;
use mm_reclaim::{Evictor, Outcome, PageId, Shadow, Victim};
use mm_swap::SwapError;
use mm_types::{FrameProvider, PageKind, PhysAddr, PhysMemory};
use mm_vma::{AddressSpace, MmContext, RmapEntry, SpaceId};

use crate::files::FilePages;
use crate::swapdev::SwapDevice;
use crate::PageIds;

/// Access to the address spaces mapping a page.
pub trait Spaces<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> {
    /// Runs `f` on space `id` if it exists and is free to use now;
    /// `None` otherwise (busy or gone).
    fn with_space(&self, id: SpaceId, f: &mut dyn FnMut(&mut AddressSpace<A, M, F>)) -> Option<()>;
}

/// Counters of the evictor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictStats {
    /// Anonymous pages written to swap and freed.
    pub swapped_out: u64,
    /// Swap-cache pages dropped (their data was in swap already).
    pub uncached: u64,
    /// Victims kept: mapped in a busy space, locked, or not ours to evict.
    pub kept: u64,
    /// Victims that could not be written (swap full, write error).
    pub failed: u64,
    /// Clean file pages dropped (their shadow left).
    pub file_dropped: u64,
    /// Dirty file pages written back, then dropped.
    pub file_written: u64,
    /// Shmem pages sent to swap.
    pub shmem_swapped: u64,
}

/// The evictor; see the [module documentation](self).
pub struct MmEvictor<'a, A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone, S> {
    mm: &'a Arc<MmContext<A, M, F>>,
    device: &'a SwapDevice<A, M, F>,
    spaces: &'a S,
    ids: PageIds,
    cpu: usize,
    files: Option<&'a dyn FilePages>,
    /// What it did so far.
    pub stats: EvictStats,
}

impl<'a, A, M, F, S> MmEvictor<'a, A, M, F, S>
where
    A: PagingArch,
    M: PhysMemory + Clone,
    F: FrameProvider + Clone,
    S: Spaces<A, M, F>,
{
    /// An evictor for pages of `ids` mapped in `spaces`, swapping
    /// through `device` on `cpu`.
    pub fn new(
        mm: &'a Arc<MmContext<A, M, F>>,
        device: &'a SwapDevice<A, M, F>,
        spaces: &'a S,
        ids: PageIds,
        cpu: usize,
    ) -> Self {
        MmEvictor { mm, device, spaces, ids, cpu, files: None, stats: EvictStats::default() }
    }

    /// Evicts the page cache's pages too, reaching them through `files`.
    pub fn with_files(mut self, files: &'a dyn FilePages) -> Self {
        self.files = Some(files);
        self
    }

    fn evict_file(&mut self, frame: PhysAddr, file: &CachedFile, page: u64, shadow: Shadow) -> Outcome {
        let maps = self.mm.mappings(frame);
        if !self.all_evictable(&maps) {
            self.stats.kept += 1;
            return Outcome::Keep;
        }
        for m in &maps {
            let mut done = false;
            self.spaces.with_space(m.space, &mut |s| done = s.zap_page(m.va, frame).is_some());
            if !done {
                // The mappings removed so far fault the page back.
                self.stats.kept += 1;
                return Outcome::Keep;
            }
        }
        let files = self.files.expect("an owner was found through it");
        match files.reclaim(file, page, shadow.0) {
            Ok(Reclaimed::Dropped) => self.stats.file_dropped += 1,
            Ok(Reclaimed::WrittenBack) => self.stats.file_written += 1,
            Ok(Reclaimed::Swapped(_)) => self.stats.shmem_swapped += 1,
            // Not written (the page stays, dirty or in memory; the
            // error reaches fsync): as a failed swap-out.
            Err(CacheError::Writeback(_) | CacheError::Swap(_) | CacheError::NoSwap) => {
                self.stats.failed += 1;
                return Outcome::Failed;
            }
            // Locked, under writeback, or gone meanwhile.
            Err(_) => {
                self.stats.kept += 1;
                return Outcome::Keep;
            }
        }
        Outcome::Freed
    }

    /// Whether every mapping's space is free and maps the page evictably.
    fn all_evictable(&self, maps: &[RmapEntry]) -> bool {
        maps.iter().all(|m| {
            let mut ok = false;
            self.spaces.with_space(m.space, &mut |s| ok = s.is_evictable(m.va));
            ok
        })
    }

    fn evict_one(&mut self, frame: PhysAddr, shadow: Shadow) -> Outcome {
        if let Some((file, page)) = self.files.and_then(|f| f.owner(frame)) {
            return self.evict_file(frame, &file, page, shadow);
        }
        let maps = self.mm.mappings(frame);
        if maps.is_empty() {
            // Mapped by nobody: a swap-cache page (read ahead, or its
            // mappers went), else a frame between allocation and mapping.
            return if self.device.drop_cached(frame) {
                self.stats.uncached += 1;
                Outcome::Freed
            } else {
                self.stats.kept += 1;
                Outcome::Keep
            };
        }
        if self.mm.kind_of(frame) != Some(mm_types::PageKind::Anon) || !self.all_evictable(&maps) {
            self.stats.kept += 1;
            return Outcome::Keep;
        }
        let swap = self.device.swap();
        let cached = self.device.pinned_slot(frame);
        let slot = match cached {
            Some(slot) => {
                // Its data is in the slot already: one more use per mapper.
                for _ in &maps {
                    if swap.dup(slot).is_err() {
                        self.stats.failed += 1;
                        return Outcome::Failed;
                    }
                }
                slot
            }
            None => {
                self.mm.pin(frame).expect("a mapped anonymous frame is tracked");
                let users = u16::try_from(maps.len()).unwrap_or(u16::MAX);
                // SAFETY: reclaim runs while no task runs; the frame is mapped only in the spaces
                // checked above, unused meanwhile: nothing writes it.
                match unsafe { swap.swap_out(self.cpu, frame, users, self.mm.mem()) } {
                    Ok(slot) => slot,
                    Err(e) => {
                        self.mm.unpin(frame);
                        self.stats.failed += 1;
                        return if e == SwapError::Full { Outcome::Failed } else { Outcome::Keep };
                    }
                }
            }
        };
        let mut left: Vec<RmapEntry> = Vec::new();
        for m in &maps {
            let mut done = false;
            self.spaces.with_space(m.space, &mut |s| done = s.evict(m.va, Some(slot)).is_ok());
            if !done {
                left.push(*m);
            }
        }
        for _ in &left {
            // This mapping kept the page: its use of the slot goes.
            let _ = swap.free(slot);
        }
        if cached.is_none() {
            // The page was written after every write its mappers made (no
            // task ran since): the dirty bits the unmapping moved to the
            // page are in the slot already.
            self.mm.take_dirty(frame);
        }
        if !left.is_empty() {
            // Some page tables name the slot, some the frame. A page that
            // was just written stays in the swap cache (with the pin taken
            // above) so that both see one page; a cached one stays cached
            // (dirty if a mapping just removed was).
            if cached.is_none() && self.device.adopt(slot, frame).is_err() {
                self.mm.unpin(frame);
            }
            self.stats.kept += 1;
            return Outcome::Keep;
        }
        if cached.is_some() {
            // Every mapper names the slot now; its data is the page's only
            // if nobody wrote the page since it was written there.
            if let Err(e) = self.device.clean(slot, frame) {
                // The page stays in the cache, where faults find it: it is
                // the authoritative copy until a write succeeds.
                self.stats.failed += 1;
                return if e == SwapError::Full { Outcome::Failed } else { Outcome::Keep };
            }
            self.device.uncache(slot);
            self.device.keep_shadow(slot, shadow);
            self.stats.uncached += 1;
        } else {
            self.mm.unpin(frame);
            self.stats.swapped_out += 1;
            self.device.swapped_out(slot, shadow);
        }
        Outcome::Freed
    }
}

impl<A, M, F, S> Evictor for MmEvictor<'_, A, M, F, S>
where
    A: PagingArch,
    M: PhysMemory + Clone,
    F: FrameProvider + Clone,
    S: Spaces<A, M, F>,
{
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool {
        let frame = self.ids.frame(page);
        let mut young = false;
        for m in self.mm.mappings(frame) {
            // A busy space's bits stay as they are: counting its pages as
            // referenced would make them look hot forever; `is_evictable`
            // keeps them instead.
            self.spaces.with_space(m.space, &mut |s| young |= s.test_and_clear_young(m.va));
        }
        young
    }

    fn is_evictable(&mut self, page: PageId) -> bool {
        let maps = self.mm.mappings(self.ids.frame(page));
        self.all_evictable(&maps)
    }

    fn can_evict(&self, kind: PageKind) -> bool {
        match kind {
            // Anonymous and shmem pages need a free slot.
            PageKind::Anon => self.device.swap().used_slots() < self.device.swap().capacity(),
            // File pages go back to their files (with a page cache).
            PageKind::File => self.files.is_some(),
        }
    }

    fn evict(&mut self, batch: &[Victim], outcomes: &mut [Outcome]) {
        for (v, o) in batch.iter().zip(outcomes.iter_mut()) {
            *o = self.evict_one(self.ids.frame(v.page), v.shadow);
        }
    }
}
