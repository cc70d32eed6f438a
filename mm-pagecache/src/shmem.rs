//! shmem files: pages that live only in memory and go to swap under
//! pressure, with the swap slot kept in the file's index where the page
//! was (Linux's shmem keeps swap entries in its mapping the same way).
//! Shared anonymous memory and System V style shared memory are such
//! files: whoever maps the file shares its pages, across fork too.
//!
//! A shmem page is its only copy, so it is never dirty, never written back
//! and never dropped: reclaim sends it to swap
//! ([`PageCache::swap_out`]), and the next read, write or fault brings it
//! back and frees the slot. A page never written reads as zeros without
//! taking a frame.

use alloc::boxed::Box;
use alloc::sync::Arc;

use mm_types::sync::atomic::{AtomicU64, Ordering};
use mm_types::{FileBacking, FileError, FileErrorKind, FileOp, FrameNumber, FrameProvider, PhysMemory};
use mm_types::{SwapSlot, PAGE_SIZE};

use crate::cache::{add, sub, FileState};
use crate::{CacheError, CachedFile, Entry, PageCache, Tag};

/// A shmem file's backing: its size and nothing else (the cache never
/// reads or writes it: holes read as zeros, pages go to swap).
struct Shmem {
    size: AtomicU64,
}

impl FileBacking for Shmem {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn read_pages(&self, first: u64, _: &mut [&mut [u8; PAGE_SIZE]]) -> Result<(), FileError> {
        Err(FileError::page(FileOp::Read, first, FileErrorKind::NotReady))
    }

    fn write_pages(&self, first: u64, _: &[&[u8; PAGE_SIZE]]) -> Result<(), FileError> {
        Err(FileError::page(FileOp::Write, first, FileErrorKind::NotReady))
    }

    fn sync(&self) -> Result<(), FileError> {
        Ok(())
    }

    fn set_size(&self, size: u64) -> Result<(), FileError> {
        self.size.store(size, Ordering::Relaxed);
        Ok(())
    }
}

impl<F: FrameProvider, M: PhysMemory> PageCache<F, M> {
    /// A new shmem file of `size` bytes, all zeros (`memfd_create` and
    /// `ftruncate`, a shared anonymous mapping, a System V segment).
    ///
    /// ```
    /// use mm_pagecache::{CacheConfig, OpenFile, PageCache};
    /// use mm_types::testkit::{MemSwap, RefFrameProvider, SimPhysMemory};
    /// use mm_types::{NoMappings, PhysAddr};
    ///
    /// let mem = SimPhysMemory::new(PhysAddr::new(1 << 20)?, 1 << 20);
    /// let frames = RefFrameProvider::new(&mem);
    /// let swap = MemSwap::new(&mem, 64);
    /// // SAFETY: nothing maps the cache's pages in this example.
    /// let cache = unsafe { PageCache::new(frames, mem, CacheConfig::default(), Box::new(NoMappings)) }?
    ///     .with_swap(Box::new(swap));
    /// let shm = cache.open_shmem(1 << 20);
    /// let mut f = OpenFile::new(shm.clone());
    /// cache.write(&mut f, 4096, b"only here")?;
    /// // Under pressure the page goes to swap; the next read brings it back.
    /// let slot = cache.swap_out(&shm, 1)?;
    /// assert_eq!(shm.swap_slot(1), Some(slot));
    /// let mut back = [0u8; 9];
    /// cache.read(&mut f, 4096, &mut back)?;
    /// assert_eq!(&back, b"only here");
    /// assert_eq!(cache.shmem_pages(&shm), (1, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_shmem(&self, size: u64) -> Arc<CachedFile> {
        self.new_file(Box::new(Shmem { size: AtomicU64::new(size) }), size, true)
    }

    /// Page `p` of a shmem file in memory: cached already, brought back
    /// from swap (its slot freed), or a new zeroed page for a hole.
    pub(crate) fn shmem_page(&self, file: &CachedFile, st: &mut FileState, p: u64) -> Result<FrameNumber, CacheError> {
        let slot = match st.index.get(p) {
            Some(Entry::Page(f)) => return Ok(f),
            Some(Entry::Shadow(v)) => Some(SwapSlot::from_bits(v).expect("a shmem value entry is a swap slot")),
            None => None,
        };
        let f = self.alloc(slot.is_none())?;
        if let Some(slot) = slot {
            // A slot in the index was written by this cache's swap.
            let swap = self.swap.as_deref().ok_or(CacheError::NoSwap)?;
            add(&self.stats.swap_ins, 1);
            // SAFETY: fresh from the provider: only this call has it.
            if let Err(e) = unsafe { swap.swap_in(slot, f.start_address()) } {
                self.free(f);
                return Err(CacheError::Swap(e));
            }
        }
        self.insert(file, st, p, f);
        // The page is back in memory: its only copy again.
        if let (Some(slot), Some(swap)) = (slot, self.swap.as_deref()) {
            swap.free(slot);
        }
        Ok(f)
    }

    /// Sends page `page` of a shmem file to swap: the page's bytes go to a
    /// new slot, the slot takes the page's place in the index and the
    /// frame goes back to the provider. The caller has unmapped the page
    /// from every address space. The slot is returned (for the caller's
    /// accounting; the cache frees it when the page comes back, is
    /// truncated or the file is released).
    ///
    /// Errors: [`CacheError::NotShmem`], [`CacheError::NoSwap`],
    /// [`CacheError::NotCached`], [`CacheError::Busy`] if the page is
    /// locked, [`CacheError::Swap`] if swap refuses or fails (the page
    /// stays cached: nothing is lost).
    pub fn swap_out(&self, file: &CachedFile, page: u64) -> Result<SwapSlot, CacheError> {
        if !file.shmem {
            return Err(CacheError::NotShmem);
        }
        let swap = self.swap.as_deref().ok_or(CacheError::NoSwap)?;
        let mut st = file.state.lock();
        let f = st.index.page(page).ok_or(CacheError::NotCached { page })?;
        if st.index.has_tag(page, Tag::Locked) {
            return Err(CacheError::Busy { page, tag: Tag::Locked });
        }
        add(&self.stats.swap_outs, 1);
        // SAFETY: a cached page under the file's lock, unmapped by the
        // caller: nothing writes it during the call.
        let slot = unsafe { swap.swap_out(f.start_address()) }.map_err(CacheError::Swap)?;
        let gone = st.index.evict(page, slot.to_bits()).expect("cached");
        debug_assert_eq!(gone, f);
        drop(st);
        self.free(f);
        sub(&self.stats.cached, 1);
        Ok(slot)
    }

    /// Pages of a shmem file in memory and in swap: `(cached, swapped)`.
    pub fn shmem_pages(&self, file: &CachedFile) -> (u64, u64) {
        let st = file.state.lock();
        (st.index.pages(), if file.shmem { st.index.shadows() } else { 0 })
    }
}
