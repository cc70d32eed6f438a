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
//! [`FileRmap`] is the cache's [`FileMappings`] hook over mm-vma's
//! reverse map: writeback's `mkclean` write-protects each mapping of the
//! page, truncation's `unmap` removes them (`AddressSpace::zap_page`),
//! and the frames the cache fills are recorded in [`FrameOwners`] (the
//! per-frame record Linux keeps in `struct page`) and put on reclaim's
//! lists: file pages on the file list, shmem pages on the anonymous one
//! (they go to swap), each with the shadow its last eviction left. Spaces
//! are reached with a try ([`Spaces`]): the cache calls the hook with a
//! file's lock held, and a fault holds its space's lock while it calls the
//! cache, so a busy space is reported (`false`), never waited for: the
//! page then stays dirty (writeback) or cached (truncation, reclaim).
//!
//! Reclaim reaches a victim's file through [`FilePages`] (the owner
//! record and the cache), which [`CachePager`] implements.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use mm_pagecache::{CacheError, CachedFile, PageCache, Reclaimed};
use mm_paging::PagingArch;
use mm_reclaim::PageId;
use mm_types::{
    FileId, FileMappings, FrameError, FrameNumber, FrameProvider, PageKind, PageSwapError, PhysAddr, PhysMemory,
    PAGE_BYTES,
};
use mm_vma::{AddressSpace, HookError, MmContext, Pager, RmapEntry};

use crate::evict::Spaces;
use crate::PageIds;

/// Which file page each frame of [`PageIds`] holds: the page cache tells
/// ([`FileRmap`]'s `added`/`removed`), reclaim asks.
pub struct FrameOwners {
    ids: PageIds,
    table: spin::Mutex<Vec<Option<(FileId, u64)>>>,
}

impl FrameOwners {
    /// No frame holds a file page yet.
    pub fn new(ids: PageIds) -> Self {
        FrameOwners { ids, table: spin::Mutex::new(alloc::vec![None; ids.frames as usize]) }
    }

    /// The file and page index `frame` holds, if it holds a cached page.
    pub fn get(&self, frame: PhysAddr) -> Option<(FileId, u64)> {
        let id = self.ids.id(frame)?;
        self.table.lock()[id as usize]
    }

    fn set(&self, frame: FrameNumber, owner: Option<(FileId, u64)>) -> Option<PageId> {
        let id = self.ids.id(frame.start_address())?;
        self.table.lock()[id as usize] = owner;
        Some(id)
    }
}

/// Files a cache holds pages of, by id, and its frames' owners: what
/// reclaim needs to take a file page back.
pub trait FilePages {
    /// The file and page index `frame` holds, if it is a cached page of a
    /// file this side knows.
    fn owner(&self, frame: PhysAddr) -> Option<(Arc<CachedFile>, u64)>;

    /// Frees cached page `page` of `file` for reclaim (a clean page
    /// dropped with `shadow` left, a dirty one written back first, a shmem
    /// page sent to swap); the caller unmapped it everywhere.
    fn reclaim(&self, file: &CachedFile, page: u64, shadow: u64) -> Result<Reclaimed, CacheError>;
}

/// Puts a frame on reclaim's lists: the page id, its kind, the shadow its
/// last eviction left.
pub type ToLists = Box<dyn Fn(PageId, PageKind, Option<u64>) + Send + Sync>;

/// The page cache's [`FileMappings`] hook over mm-vma's reverse map; see
/// the [module documentation](self). A handle: the cache holds one, the
/// wiring another to [`attach`](Self::attach) it.
pub struct FileRmap<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone>(Arc<RmapInner<A, M, F>>);

struct RmapInner<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> {
    // Weak: the context holds the cache (through its pager), which holds
    // this hook.
    mm: spin::Once<Weak<MmContext<A, M, F>>>,
    spaces: spin::Once<Weak<dyn Spaces<A, M, F> + Send + Sync>>,
    owners: Arc<FrameOwners>,
    to_lists: ToLists,
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> Clone for FileRmap<A, M, F> {
    fn clone(&self) -> Self {
        FileRmap(self.0.clone())
    }
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> FileRmap<A, M, F> {
    /// A hook recording owners in `owners` and filing pages with
    /// `to_lists`; [`attach`](Self::attach) it once the `MmContext` and
    /// the spaces exist (the context takes the cache's pager among its
    /// hooks, so it comes after the cache).
    pub fn new(owners: Arc<FrameOwners>, to_lists: ToLists) -> Self {
        FileRmap(Arc::new(RmapInner { mm: spin::Once::new(), spaces: spin::Once::new(), owners, to_lists }))
    }

    /// Reaches mappings through `mm`'s reverse map and `spaces` (held
    /// weakly: they own the cache that owns this hook).
    pub fn attach(&self, mm: &Arc<MmContext<A, M, F>>, spaces: Weak<dyn Spaces<A, M, F> + Send + Sync>) {
        self.0.mm.call_once(|| Arc::downgrade(mm));
        self.0.spaces.call_once(|| spaces);
    }

    /// Runs `f` on every mapping of `frame`; `false` if a space was busy
    /// (the others were still visited).
    fn each_mapping(&self, frame: PhysAddr, mut f: impl FnMut(&mut AddressSpace<A, M, F>, RmapEntry)) -> bool {
        // Before `attach` (and once the spaces are gone) nothing maps a
        // cached page.
        let (Some(mm), Some(spaces)) =
            (self.0.mm.get().and_then(Weak::upgrade), self.0.spaces.get().and_then(Weak::upgrade))
        else {
            return true;
        };
        let mut all = true;
        for m in mm.mappings(frame) {
            all &= spaces.with_space(m.space, &mut |s| f(s, m)).is_some();
        }
        all
    }
}

impl<A, M, F> FileMappings for FileRmap<A, M, F>
where
    A: PagingArch,
    M: PhysMemory + Clone,
    F: FrameProvider + Clone,
{
    fn unmap(&self, _file: FileId, _page: u64, frame: FrameNumber) -> bool {
        let pa = frame.start_address();
        self.each_mapping(pa, |s, m| {
            s.zap_page(m.va, pa);
        })
    }

    fn mkclean(&self, _file: FileId, _page: u64, frame: FrameNumber) -> bool {
        // Stores through these mappings were reported before their entries
        // became writable (write-notify), so the cache's dirty tag already
        // covers them: only the protection matters here.
        self.each_mapping(frame.start_address(), |s, m| {
            s.write_protect_page(m.va);
        })
    }

    fn added(&self, file: FileId, page: u64, frame: FrameNumber, shmem: bool, shadow: Option<u64>) {
        if let Some(id) = self.0.owners.set(frame, Some((file, page))) {
            // Shmem pages go to swap, as anonymous ones do.
            (self.0.to_lists)(id, if shmem { PageKind::Anon } else { PageKind::File }, shadow);
        }
    }

    fn removed(&self, frame: FrameNumber) {
        self.0.owners.set(frame, None);
    }
}

/// The page cache of a [`Machine`](crate::Machine): frames from
/// `frames` (which `mem` reaches), `rmap` as its hook.
///
/// # Panics
///
/// If `config` is not a valid configuration.
pub(crate) fn machine_cache<
    F: FrameProvider,
    M: PhysMemory,
    A: PagingArch,
    F2: FrameProvider + Clone,
    M2: PhysMemory + Clone,
>(
    frames: F,
    mem: M,
    config: mm_pagecache::CacheConfig,
    rmap: FileRmap<A, M2, F2>,
) -> PageCache<F, M>
where
    FileRmap<A, M2, F2>: Send + Sync + 'static,
{
    // SAFETY: a machine's frames are its RAM, which `mem` reaches (as the
    // address spaces do). A cached page is written through mappings only
    // by tasks, which run one at a time and never during a cache call (a
    // fault calls the cache and stores after it returns); writeback
    // write-protects the mappings first (`FileRmap::mkclean`), and a page
    // with a mapping it cannot reach stays dirty.
    unsafe { PageCache::new(frames, mem, config, Box::new(rmap)) }.expect("a valid page-cache configuration")
}

/// The page cache as a pager: mm-vma object numbers name cached files.
pub struct CachePager<F: FrameProvider, M: PhysMemory> {
    cache: Arc<PageCache<F, M>>,
    files: spin::Mutex<BTreeMap<u32, Arc<CachedFile>>>,
    by_id: spin::Mutex<BTreeMap<FileId, Arc<CachedFile>>>,
    owners: Option<Arc<FrameOwners>>,
}

impl<F: FrameProvider, M: PhysMemory> CachePager<F, M> {
    /// A pager over `cache`, with no file yet.
    pub fn new(cache: Arc<PageCache<F, M>>) -> Self {
        CachePager {
            cache,
            files: spin::Mutex::new(BTreeMap::new()),
            by_id: spin::Mutex::new(BTreeMap::new()),
            owners: None,
        }
    }

    /// A pager over `cache`, whose frames' owners `owners` records (the
    /// cache's [`FileRmap`] fills it): reclaim finds their files through
    /// [`FilePages`].
    pub fn with_owners(cache: Arc<PageCache<F, M>>, owners: Arc<FrameOwners>) -> Self {
        CachePager { owners: Some(owners), ..CachePager::new(cache) }
    }

    /// Makes `file` mappable as object `object` (a mapping request names
    /// it), replacing whatever file had that number, and reclaimable. A
    /// file has one object number.
    pub fn register(&self, object: u32, file: Arc<CachedFile>) {
        if let Some(old) = self.files.lock().insert(object, file.clone()) {
            self.by_id.lock().remove(&old.id());
        }
        self.by_id.lock().insert(file.id(), file);
    }

    /// Forgets object `object`: its file, if any, for the caller to
    /// release (after every mapping of it went).
    pub fn unregister(&self, object: u32) -> Option<Arc<CachedFile>> {
        let f = self.files.lock().remove(&object)?;
        self.by_id.lock().remove(&f.id());
        Some(f)
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

    /// The page is dirty in the cache before the entry becomes writable;
    /// the task is throttled later, once its space is let go
    /// ([`PageCache::balance_dirty_pages`]).
    fn dirtied(&self, object: u32, offset: u64) -> Result<(), HookError> {
        let file = self.file(object).ok_or(HookError::BadEntry)?;
        self.cache.mark_dirty(&file, offset / PAGE_BYTES).map_err(hook_error)
    }

    /// The cached pages of the faulting page's 16-page block.
    fn cached_around(&self, object: u32, offset: u64, f: &mut dyn FnMut(u64, PhysAddr)) {
        if let Some(file) = self.file(object) {
            self.cache.cached_around(&file, offset / PAGE_BYTES, |p, frame| f(p * PAGE_BYTES, frame.start_address()));
        }
    }
}

impl<F: FrameProvider, M: PhysMemory> FilePages for CachePager<F, M> {
    fn owner(&self, frame: PhysAddr) -> Option<(Arc<CachedFile>, u64)> {
        let (id, page) = self.owners.as_ref()?.get(frame)?;
        let file = self.by_id.lock().get(&id).cloned()?;
        Some((file, page))
    }

    fn reclaim(&self, file: &CachedFile, page: u64, shadow: u64) -> Result<Reclaimed, CacheError> {
        self.cache.reclaim(file, page, shadow)
    }
}
