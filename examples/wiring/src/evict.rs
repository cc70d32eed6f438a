//! mm-reclaim's [`Evictor`] over mm-vma's reverse map and mm-swap.
//!
//! A victim is a frame ([`PageIds`] numbers them). The evictor finds
//! its mappings in the [`MmContext`]'s reverse map and reaches their address
//! spaces through [`Spaces`], which may refuse a space that is busy (locked
//! for a fault or another change of its task; reclaim never runs inside a
//! fault here): such a page is kept, as Linux skips pages whose locks it
//! cannot take. A task running user code holds no lock: on another CPU it
//! may write its pages at any moment, through its page table or a TLB
//! entry, until the mapping is gone and that TLB entry shot down.
//!
//! An anonymous page is therefore evicted unmap first, with the swap cache
//! holding the page throughout (a write made after the page went to swap
//! and before the unmap would be lost with the frame):
//! 1. every mapping is checked evictable (not in a locked VMA, space free),
//!    and the frame pinned by the evictor, so that it stays allocated until
//!    the eviction is done whatever faults and unmaps do meanwhile;
//! 2. the page enters the swap cache under a new slot with one use per
//!    mapping (and one of the evictor's own), *not written yet* and marked
//!    dirty (`SwapDevice::cache_new`, mm-swap's `alloc_cached`): the
//!    cached frame is the page for every page table naming the slot;
//! 3. each mapping is replaced by the slot's swap entry
//!    ([`AddressSpace::evict_deferred`]: unmapped, and the TLB flushed
//!    through the space's hook, a shootdown on SMP, once per space for the
//!    whole batch of victims with [`AddressSpace::flush_deferred`]), so
//!    that a write after it faults and finds the page in the cache. Until
//!    its space's flush, the reverse map still counts a removed mapping,
//!    and step 4 refuses to write a page that is mapped. A mapping that cannot be replaced (a
//!    busy space) keeps the page: it stays in the swap cache, dirty, so that
//!    page tables naming the frame and those naming the slot see one page.
//!    One that no longer maps the frame (a fault copied or unmapped the
//!    page since the reverse map was read) is left as it is;
//! 4. only then the dirty bits the unmapping moved to the page are taken
//!    ([`MmContext::take_dirty`]) and the page written to its slot, with
//!    faults on the slot waiting meanwhile. The pages of one batch of
//!    victims that got this far are written together, in slot order, so
//!    that the consecutive slots a CPU's cluster hands out go to the disk
//!    as one request each run. On a failed write the page (every page of
//!    the failed request) stays resident in the cache, dirty: the
//!    authoritative copy, never freed with its data only in memory;
//! 5. the page leaves the cache, and the frame is freed, only if every
//!    mapping names the slot, the write succeeded, and nothing mapped or
//!    wrote the page since (`SwapDevice::uncache_if_idle`).
//!
//! A page already in the swap cache (faulted in, still named by other page
//! tables) takes the slot it has (one more use per mapping, and the
//! evictor's), through steps 1 and 3-5. Its slot is trusted
//! only if no mapper wrote the page since it was last written there: a
//! shared mapping maps the cached frame writable, so the dirty bits of the
//! mappings just removed (and of earlier ones, which mm-vma moved to the
//! page when they went) are checked with [`MmContext::take_dirty`], and a
//! dirty page is written to its slot again first (mm-vma MODEL 24). A
//! cached page nobody maps (read ahead, or all mappers gone) is dropped from
//! the cache the same way, written first if it is dirty.
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
use mm_types::{FrameProvider, PageKind, PhysAddr, PhysMemory, SwapSlot};
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

/// What became of one mapping of a page being swapped out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replaced {
    /// The page table names the slot now.
    Slot,
    /// It still maps the page (a busy space, or one that refused).
    Kept,
    /// It maps something else now.
    Gone,
}

/// Where an eviction stands after steps 1-3.
enum Step {
    /// Done: the victim's outcome.
    Done(Outcome),
    /// Every mapping names the slot: steps 4 and 5 are left, with the
    /// frame pinned and the evictor's use of the slot held.
    Write(Unmapped),
}

/// An anonymous page unmapped from every page table, in the swap cache
/// under `slot`, waiting for its write (step 4).
struct Unmapped {
    slot: SwapSlot,
    frame: PhysAddr,
    shadow: Shadow,
    /// The slot was allocated by this eviction and has no data yet.
    fresh: bool,
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
    /// Spaces with evictions whose TLB flush is still to come.
    unflushed: Vec<SpaceId>,
    /// A page's mappings, read into one buffer for every page asked about
    /// (no heap allocation per page).
    maps: Vec<RmapEntry>,
    /// A batch's pages waiting for steps 4-5 (with their places in the
    /// batch), and the write's list and results: buffers kept from batch to
    /// batch.
    pending: Vec<(usize, Unmapped)>,
    list: Vec<(SwapSlot, PhysAddr, bool)>,
    done: Vec<Result<bool, Option<SwapError>>>,
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
        MmEvictor {
            mm,
            device,
            spaces,
            ids,
            cpu,
            files: None,
            unflushed: Vec::new(),
            maps: Vec::new(),
            pending: Vec::new(),
            list: Vec::new(),
            done: Vec::new(),
            stats: EvictStats::default(),
        }
    }

    /// Evicts the page cache's pages too, reaching them through `files`.
    pub fn with_files(mut self, files: &'a dyn FilePages) -> Self {
        self.files = Some(files);
        self
    }

    fn evict_file(
        &mut self,
        frame: PhysAddr,
        file: &CachedFile,
        page: u64,
        shadow: Shadow,
        maps: &[RmapEntry],
    ) -> Outcome {
        if !self.all_evictable(maps) {
            self.stats.kept += 1;
            return Outcome::Keep;
        }
        for m in maps {
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

    /// Steps 1-3 for one victim (all of it for a page that needs no
    /// write).
    fn evict_one(&mut self, frame: PhysAddr, shadow: Shadow) -> Step {
        let mut maps = core::mem::take(&mut self.maps);
        self.mm.mappings_into(frame, &mut maps);
        let step = self.evict_mapped(frame, shadow, &maps);
        self.maps = maps;
        step
    }

    /// [`evict_one`](Self::evict_one) for a page mapped by `maps`.
    fn evict_mapped(&mut self, frame: PhysAddr, shadow: Shadow, maps: &[RmapEntry]) -> Step {
        if let Some((file, page)) = self.files.and_then(|f| f.owner(frame)) {
            return Step::Done(self.evict_file(frame, &file, page, shadow, maps));
        }
        if maps.is_empty() {
            // Mapped by nobody: a swap-cache page (read ahead, or its
            // mappers went), else a frame between allocation and mapping.
            return Step::Done(if self.device.drop_cached(frame) {
                self.stats.uncached += 1;
                Outcome::Freed
            } else {
                self.stats.kept += 1;
                Outcome::Keep
            });
        }
        if self.mm.kind_of(frame) != Some(mm_types::PageKind::Anon) || !self.all_evictable(maps) {
            self.stats.kept += 1;
            return Step::Done(Outcome::Keep);
        }
        // 1. The evictor's own reference: the frame stays allocated until it
        // is done, whatever faults and unmaps do meanwhile. (Refused only if
        // its last mapping went since the reverse map was read.)
        if self.mm.pin(frame).is_err() {
            self.stats.kept += 1;
            return Step::Done(Outcome::Keep);
        }
        let step = self.swap_out_anon(frame, shadow, maps);
        if let Step::Done(_) = step {
            // Frees the frame if the swap cache let it go.
            self.mm.unpin(frame);
        }
        step
    }

    /// Steps 2 and 3 of the [module documentation](self) for an anonymous
    /// `frame` mapped by `maps`, pinned by the caller. `Step::Write` keeps
    /// the pin and the evictor's use of the slot for steps 4 and 5.
    fn swap_out_anon(&mut self, frame: PhysAddr, shadow: Shadow, maps: &[RmapEntry]) -> Step {
        let cached = self.device.pinned_slot(frame);
        // 2. The slot, with one use per mapping and one of the evictor's
        // own, so that the slot and its cached page outlive the window
        // whatever page tables drop it meanwhile.
        let slot = match cached {
            Some(slot) => {
                // In the cache already: its slot has the page unless it is
                // dirty (step 4 sees to that).
                for taken in 0..=maps.len() {
                    if self.device.swap().dup(slot).is_err() {
                        for _ in 0..taken {
                            self.device.drop_use(slot);
                        }
                        self.stats.failed += 1;
                        return Step::Done(Outcome::Failed);
                    }
                }
                slot
            }
            None => {
                // Into the cache under a new slot, not written yet and
                // marked dirty: from here the cached frame is the page for
                // every page table naming the slot.
                let users = u16::try_from(maps.len()).unwrap_or(u16::MAX).saturating_add(1);
                match self.device.cache_new(self.cpu, frame, users) {
                    Ok(slot) => slot,
                    Err(e) => {
                        self.stats.failed += 1;
                        return Step::Done(if e == SwapError::Full { Outcome::Failed } else { Outcome::Keep });
                    }
                }
            }
        };
        // 3. Each mapping replaced by the slot's entry: unmapped, and the
        // TLB flushed through the space's hook (a shootdown on SMP), so a
        // write from here on faults and finds the page in the cache.
        let mut left = 0;
        for m in maps {
            // A busy space (or one gone) keeps its mapping.
            let mut r = Replaced::Kept;
            self.spaces.with_space(m.space, &mut |s| {
                r = match s.page_table().translate(m.va) {
                    // Its TLB flush waits for the end of the batch.
                    Some(t) if t.frame == frame => match s.evict_deferred(m.va, Some(slot)) {
                        Ok(_) => Replaced::Slot,
                        Err(_) => Replaced::Kept,
                    },
                    // A fault of the task changed the mapping since the
                    // reverse map was read (a copy on write, an unmap): it
                    // is not this page's any more, and must not be replaced.
                    _ => Replaced::Gone,
                };
            });
            if r == Replaced::Slot && !self.unflushed.contains(&m.space) {
                self.unflushed.push(m.space);
            }
            if r != Replaced::Slot {
                // No page table holds this use of the slot.
                self.device.drop_use(slot);
            }
            if r == Replaced::Kept {
                // This mapping keeps the page.
                left += 1;
            }
        }
        if left > 0 {
            // Some page tables name the slot, some the frame: the page
            // stays in the cache (dirty, if the slot is stale), one page
            // for both, written when it is dropped.
            self.stats.kept += 1;
            // The evictor's use (the last one if every mapper let go of
            // the slot meanwhile: the cache then lets its page go).
            self.device.drop_use(slot);
            return Step::Done(Outcome::Keep);
        }
        Step::Write(Unmapped { slot, frame, shadow, fresh: cached.is_none() })
    }

    /// Steps 4 and 5 for the pending pages, whose every mapping names
    /// their slot now: the dirty bits the unmapping moved to each page are
    /// taken, and the pages written (a cached one only if dirty) in one
    /// batch, in slot order, consecutive slots in one request, now that
    /// nothing can write them: faults on their slots wait for the write.
    /// Then each leaves the cache if its slot holds it, and the evictor
    /// lets go of its use and its pin; its outcome goes to its place in
    /// `outcomes`.
    fn write_and_drop(&mut self, outcomes: &mut [Outcome]) {
        let mut pending = core::mem::take(&mut self.pending);
        self.list.clear();
        self.list.extend(pending.iter().map(|(_, p)| (p.slot, p.frame, p.fresh)));
        self.done.clear();
        self.done.resize(pending.len(), Ok(false));
        self.device.write_batch(&self.list, &mut self.done);
        for (k, (i, p)) in pending.iter().enumerate() {
            outcomes[*i] = self.after_write(p, self.done[k]);
            // The evictor's use (the last one if every mapper let go of
            // the slot meanwhile: the cache then lets its page go).
            self.device.drop_use(p.slot);
            // Frees the frame if the swap cache let it go (step 5).
            self.mm.unpin(p.frame);
        }
        pending.clear();
        self.pending = pending;
    }

    /// Step 5 for one page, after its write (`Ok(wrote)`) or refusal.
    fn after_write(&mut self, p: &Unmapped, written: Result<bool, Option<SwapError>>) -> Outcome {
        match written {
            Ok(wrote) => {
                if wrote && !p.fresh {
                    self.device.count_rewrites(1);
                }
            }
            // Mapped again by a fault meanwhile: it stays in the cache.
            Err(None) => {
                self.stats.kept += 1;
                return Outcome::Keep;
            }
            // The page stays in the cache, dirty, where faults find it: the
            // authoritative copy until a write succeeds.
            Err(Some(e)) => {
                self.stats.failed += 1;
                return if e == SwapError::Full { Outcome::Failed } else { Outcome::Keep };
            }
        }
        // 5. Out of the cache only if its slot holds it: nothing mapped or
        // wrote it since the write.
        if !self.device.uncache_if_idle(p.slot, p.frame) {
            self.stats.kept += 1;
            return Outcome::Keep;
        }
        if p.fresh {
            self.stats.swapped_out += 1;
            self.device.swapped_out(p.slot, p.shadow);
        } else {
            self.stats.uncached += 1;
            self.device.keep_shadow(p.slot, p.shadow);
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
        let mut maps = core::mem::take(&mut self.maps);
        self.mm.mappings_into(frame, &mut maps);
        for m in &maps {
            // A busy space's bits stay as they are: counting its pages as
            // referenced would make them look hot forever; `is_evictable`
            // keeps them instead.
            self.spaces.with_space(m.space, &mut |s| young |= s.test_and_clear_young(m.va));
        }
        self.maps = maps;
        young
    }

    fn is_evictable(&mut self, page: PageId) -> bool {
        let mut maps = core::mem::take(&mut self.maps);
        self.mm.mappings_into(self.ids.frame(page), &mut maps);
        let ok = self.all_evictable(&maps);
        self.maps = maps;
        ok
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
        // Steps 1-3 victim by victim; the writes of steps 4-5 together.
        for (i, (v, o)) in batch.iter().zip(outcomes.iter_mut()).enumerate() {
            match self.evict_one(self.ids.frame(v.page), v.shadow) {
                Step::Done(outcome) => *o = outcome,
                Step::Write(p) => self.pending.push((i, p)),
            }
        }
        // 3, ended: one TLB flush per space for the whole batch. A space
        // busy now is flushed by the end of the operation holding it; until
        // then the reverse map still counts the mappings it removed, and
        // step 4 refuses to write those pages (they stay in the cache).
        for &id in &self.unflushed {
            self.spaces.with_space(id, &mut |s| s.flush_deferred());
        }
        self.unflushed.clear();
        if !self.pending.is_empty() {
            self.write_and_drop(outcomes);
        }
    }
}
