//! Files in address spaces: mm-pagecache behind mm-vma's `Pager` hook.
//!
//! A file mapped into an address space is an mm-vma object; a fault in the
//! mapping asks [`CachePager`] for the page, which the cache finds or
//! reads in (through the file's readahead; a shmem page from swap or
//! zeroed). mm-vma maps it read-only in a private mapping and copies on
//! the first write, so a private mapping never changes the file, and maps
//! it as is in a shared one, so every mapper of a shmem file (across fork
//! too) shares its pages through the file, never by handing frames around.
//! A page past the end of the file is a bus error, not a page.
//!
//! Shared mappings of files with a backing are write-tracked: their pages
//! map read-only, and a store faults once, marks the cached page dirty
//! (`mark_dirty`) and only then makes the entry writable, so writeback
//! sees every page written through a mapping. After writeback the mappings
//! must be write-protected again (`AddressSpace::write_protect_page` on
//! each mapping the reverse map names) so that the next store is seen too.
//!
//! Still to come (issue 24): that write-protection as the cache's
//! `FileMappings` hook over the reverse map (today the kernel has no
//! shared file mappings, and a cache built with `NoMappings` does not
//! write-protect), and file pages on reclaim's lists.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;

use mm_pagecache::{CacheError, CachedFile, PageCache};
use mm_types::{FrameError, FrameProvider, PageSwapError, PhysAddr, PhysMemory, PAGE_BYTES};
use mm_vma::{HookError, Pager};

/// The page cache as a pager: mm-vma object numbers name cached files.
pub struct CachePager<F: FrameProvider, M: PhysMemory> {
    cache: Arc<PageCache<F, M>>,
    files: spin::Mutex<BTreeMap<u32, Arc<CachedFile>>>,
}

impl<F: FrameProvider, M: PhysMemory> CachePager<F, M> {
    /// A pager over `cache`, with no file yet.
    pub fn new(cache: Arc<PageCache<F, M>>) -> Self {
        CachePager { cache, files: spin::Mutex::new(BTreeMap::new()) }
    }

    /// Makes `file` mappable as object `object` (a mapping request names
    /// it), replacing whatever file had that number.
    pub fn register(&self, object: u32, file: Arc<CachedFile>) {
        self.files.lock().insert(object, file);
    }

    /// The file of object `object`.
    pub fn file(&self, object: u32) -> Option<Arc<CachedFile>> {
        self.files.lock().get(&object).cloned()
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<PageCache<F, M>> {
        &self.cache
    }
}

/// What a fault hears of a cache failure.
fn hook_error(e: CacheError) -> HookError {
    match e {
        CacheError::BeyondEnd { .. } => HookError::BeyondEnd,
        CacheError::Frames(FrameError::OutOfMemory { .. } | FrameError::ZoneExhausted { .. }) => HookError::OutOfMemory,
        CacheError::Io(_) | CacheError::Swap(PageSwapError::Io(_)) => HookError::Io,
        CacheError::Swap(PageSwapError::Corrupt(_)) => HookError::Corrupt,
        CacheError::Swap(PageSwapError::Invalid(_)) => HookError::BadEntry,
        _ => HookError::Refused,
    }
}

impl<F, M> Pager for CachePager<F, M>
where
    F: FrameProvider + Send + Sync,
    M: PhysMemory + Send + Sync,
{
    fn page(&self, object: u32, offset: u64) -> Result<PhysAddr, HookError> {
        let file = self.file(object).ok_or(HookError::BadEntry)?;
        let frame = self.cache.fault(&file, offset / PAGE_BYTES).map_err(hook_error)?;
        Ok(frame.start_address())
    }

    /// A file with a backing: stores through shared mappings must reach
    /// the cache as dirty pages. A shmem page is its only copy: nothing to
    /// track.
    fn tracks_writes(&self, object: u32) -> bool {
        self.file(object).is_some_and(|f| !f.is_shmem())
    }

    fn dirtied(&self, object: u32, offset: u64) -> Result<(), HookError> {
        let file = self.file(object).ok_or(HookError::BadEntry)?;
        self.cache.mark_dirty(&file, offset / PAGE_BYTES).map_err(hook_error)
    }
}
