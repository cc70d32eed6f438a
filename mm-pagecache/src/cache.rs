//! The page cache: files' pages in frames, read through readahead, written
//! back in batches, with dirty limits and errors kept for fsync.
//!
//! Locking: each file has its own lock (its index, size and dirty count);
//! a call holds it for the whole call, I/O included, so two calls on one
//! file are ordered and calls on different files never meet. The only
//! lock shared by all files is the list of files with dirty pages, taken
//! briefly (after a file's lock, never before).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use mm_types::sync::atomic::{AtomicU64, Ordering};
use mm_types::sync::Mutex;
use mm_types::{
    AllocFlags, FileBacking, FileError, FileErrorKind, FileId, FileMappings, FrameBlock, FrameNumber, FrameProvider,
    Order, PageSwap, PhysMemory, SwapSlot, PAGE_SIZE,
};

use crate::errseq::{ErrSeq, ErrSince};
use crate::frames::{page_mut, page_ref};
use crate::readahead::{Readahead, Window};
use crate::{CacheError, Entry, PageIndex, Tag};

pub(crate) const PS: u64 = PAGE_SIZE as u64;

/// Pages that hold `bytes` bytes.
pub(crate) fn pages_of(bytes: u64) -> u64 {
    bytes.div_ceil(PS)
}

/// Limits of a [`PageCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Dirty pages (all files) above which background writeback should run
    /// ([`PageCache::needs_writeback`]).
    pub dirty_background: u64,
    /// Dirty pages above which a writer is throttled: it writes pages back
    /// itself before its write returns, or after its write fault
    /// ([`PageCache::balance_dirty_pages`]; Linux's
    /// `balance_dirty_pages`).
    pub dirty_limit: u64,
    /// The largest readahead window, in pages (0: no readahead).
    pub readahead_max: u64,
}

impl CacheConfig {
    /// Limits for a machine of `frames` frames: background writeback above
    /// a tenth of them dirty, writers throttled above a fifth (Linux's
    /// default ratios), readahead up to 32 pages (128 KiB, Linux's
    /// default).
    pub const fn for_memory(frames: u64) -> Self {
        let background = if frames / 10 > 0 { frames / 10 } else { 1 };
        let limit = if frames / 5 > background { frames / 5 } else { background + 1 };
        CacheConfig { dirty_background: background, dirty_limit: limit, readahead_max: 32 }
    }
}

impl Default for CacheConfig {
    /// [`CacheConfig::for_memory`] of 256 MiB.
    fn default() -> Self {
        Self::for_memory(1 << 16)
    }
}

/// What a writeback pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WritebackReport {
    /// Pages written.
    pub pages: u64,
    /// Pages whose write failed: they stay cached and dirty.
    pub failed: u64,
    /// The first failure.
    pub error: Option<FileError>,
}

impl WritebackReport {
    fn add(&mut self, o: WritebackReport) {
        self.pages += o.pages;
        self.failed += o.failed;
        self.error = self.error.or(o.error);
    }
}

/// How [`PageCache::reclaim`] freed a page's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaimed {
    /// A clean page: dropped, its shadow left.
    Dropped,
    /// A dirty page: written back, then dropped.
    WrittenBack,
    /// A shmem page: sent to this slot.
    Swapped(SwapSlot),
}

/// Counters of a [`PageCache`] since it was made, and its totals now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Pages found cached by reads.
    pub hits: u64,
    /// Pages reads had to wait for.
    pub misses: u64,
    /// Read requests to backings.
    pub read_requests: u64,
    /// Pages those requests read.
    pub pages_read: u64,
    /// Read requests that failed.
    pub read_errors: u64,
    /// Readahead windows started by a miss of a sequential reader.
    pub windows: u64,
    /// Windows started by a reader reaching a marker.
    pub async_windows: u64,
    /// Pages read in where an evicted page had left its shadow.
    pub refaults: u64,
    /// Pages written back.
    pub written_back: u64,
    /// Write requests to backings.
    pub write_requests: u64,
    /// Write requests that failed (their pages stayed dirty).
    pub writeback_errors: u64,
    /// Writes that found the dirty limit passed and wrote back first.
    pub throttled: u64,
    /// Pages written back that stayed dirty: a mapping of theirs could not
    /// be write-protected at the time (its address space was busy).
    pub writeback_exposed: u64,
    /// Clean pages evicted (leaving a shadow).
    pub evicted: u64,
    /// Clean pages dropped (no shadow).
    pub dropped: u64,
    /// Shmem pages written to swap.
    pub swap_outs: u64,
    /// Shmem pages read back from swap.
    pub swap_ins: u64,
    /// Pages cached now, all files.
    pub cached: u64,
    /// Dirty pages now, all files.
    pub dirty: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) read_requests: AtomicU64,
    pub(crate) pages_read: AtomicU64,
    pub(crate) read_errors: AtomicU64,
    pub(crate) windows: AtomicU64,
    pub(crate) async_windows: AtomicU64,
    pub(crate) refaults: AtomicU64,
    pub(crate) written_back: AtomicU64,
    pub(crate) write_requests: AtomicU64,
    pub(crate) writeback_errors: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) writeback_exposed: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) swap_outs: AtomicU64,
    pub(crate) swap_ins: AtomicU64,
    pub(crate) cached: AtomicU64,
    pub(crate) dirty: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// One file's state, under its lock.
pub(crate) struct FileState {
    pub(crate) index: PageIndex,
    /// The size in bytes, as the cache knows it.
    pub(crate) size: u64,
    /// Pages tagged dirty.
    pub(crate) dirty: u64,
    /// On the cache's list of files with dirty pages.
    pub(crate) listed: bool,
    /// Readahead of faults through mappings (a mapping has no open file
    /// of its own: the file keeps one state for all of them, as Linux
    /// uses the mapping's file).
    pub(crate) fault_ra: Readahead,
}

/// A file in the cache: its page index, size and writeback errors, and the
/// backing its pages come from. Made by [`PageCache::open`]; reads and
/// writes go through an [`OpenFile`].
pub struct CachedFile {
    pub(crate) id: FileId,
    pub(crate) backing: Box<dyn FileBacking + Send + Sync>,
    pub(crate) state: Mutex<FileState>,
    pub(crate) errors: ErrSeq,
    /// A shmem file: pages only in memory and in swap, value entries are
    /// swap slots, nothing is ever dirty or written back.
    pub(crate) shmem: bool,
}

impl fmt::Debug for CachedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("CachedFile")
            .field("id", &self.id)
            .field("size", &st.size)
            .field("pages", &st.index.pages())
            .field("dirty", &st.dirty)
            .finish()
    }
}

impl CachedFile {
    /// The number the cache gave this file (its mappers' name for it).
    pub fn id(&self) -> FileId {
        self.id
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.state.lock().size
    }

    /// Pages cached now.
    pub fn cached_pages(&self) -> u64 {
        self.state.lock().index.pages()
    }

    /// Dirty pages now.
    pub fn dirty_pages(&self) -> u64 {
        self.state.lock().dirty
    }

    /// The frame of page `page`, if cached.
    pub fn page(&self, page: u64) -> Option<FrameNumber> {
        self.state.lock().index.page(page)
    }

    /// Whether page `page` carries `tag`.
    pub fn has_tag(&self, page: u64, tag: Tag) -> bool {
        self.state.lock().index.has_tag(page, tag)
    }

    /// What page `page` holds: a page, an evicted page's shadow, or
    /// nothing.
    pub fn entry(&self, page: u64) -> Option<Entry> {
        self.state.lock().index.get(page)
    }

    /// Whether this is a shmem file ([`PageCache::open_shmem`]).
    pub fn is_shmem(&self) -> bool {
        self.shmem
    }

    /// The swap slot holding page `page` of a shmem file, if it is swapped
    /// out.
    pub fn swap_slot(&self, page: u64) -> Option<SwapSlot> {
        match self.state.lock().index.get(page) {
            Some(Entry::Shadow(v)) if self.shmem => SwapSlot::from_bits(v),
            _ => None,
        }
    }

    /// The last writeback error recorded, reported or not.
    pub fn last_error(&self) -> Option<FileErrorKind> {
        self.errors.last()
    }

    /// The backing.
    pub fn backing(&self) -> &(dyn FileBacking + Send + Sync) {
        &*self.backing
    }

    /// Checks the file's invariants: the index's own, the dirty count
    /// against the dirty tags, no page past the end of the file, no tag
    /// left from writeback or readahead locking.
    pub fn check(&self) -> Result<(), &'static str> {
        let st = self.state.lock();
        st.index.check()?;
        if st.index.tagged_from(0, Tag::Dirty).count() as u64 != st.dirty {
            return Err("dirty count differs from the dirty tags");
        }
        if st.index.next_tagged(0, Tag::Writeback).is_some() || st.index.next_tagged(0, Tag::Locked).is_some() {
            return Err("a page left under writeback or locked");
        }
        if st.index.next_entry(pages_of(st.size)).is_some() {
            return Err("an entry past the end of the file");
        }
        if st.index.entries_from(0).any(|(i, e)| matches!(e, Entry::Page(_)) && !st.index.has_tag(i, Tag::Uptodate)) {
            return Err("a cached page not up to date");
        }
        if st.dirty > 0 && !st.listed {
            return Err("a file with dirty pages off the dirty list");
        }
        if self.shmem {
            if st.dirty > 0 {
                return Err("a dirty shmem page");
            }
            if st.index.entries_from(0).any(|(_, e)| matches!(e, Entry::Shadow(v) if SwapSlot::from_bits(v).is_none()))
            {
                return Err("a shmem value entry that is not a swap slot");
            }
        }
        Ok(())
    }
}

/// A file as one opener sees it: its readahead state and the point from
/// which writeback errors are reported to it (Linux's `struct file`).
#[derive(Debug)]
pub struct OpenFile {
    file: Arc<CachedFile>,
    ra: Readahead,
    since: ErrSince,
}

impl OpenFile {
    /// Opens `file`: no readahead history; writeback errors from now on
    /// (and one nobody has been told of yet) reach this opener's fsync.
    pub fn new(file: Arc<CachedFile>) -> Self {
        let since = file.errors.sample();
        OpenFile { file, ra: Readahead::new(), since }
    }

    /// The file.
    pub fn file(&self) -> &Arc<CachedFile> {
        &self.file
    }

    /// The readahead state.
    pub fn readahead(&self) -> &Readahead {
        &self.ra
    }
}

/// The page cache: files' pages in frames from a [`FrameProvider`],
/// reached through a [`PhysMemory`].
///
/// ```
/// use std::sync::Arc;
/// use mm_pagecache::{CacheConfig, OpenFile, PageCache};
/// use mm_types::testkit::{MemFile, RefFrameProvider, SimPhysMemory};
/// use mm_types::{NoMappings, PhysAddr};
///
/// let mem = SimPhysMemory::new(PhysAddr::new(1 << 20)?, 1 << 20);
/// let frames = RefFrameProvider::new(&mem);
/// // SAFETY: nothing else writes the cache's frames (no mappings here).
/// let cache = unsafe { PageCache::new(frames, mem, CacheConfig::default(), Box::new(NoMappings)) }?;
/// let disk = Arc::new(MemFile::with_contents(b"hello, page cache".to_vec()));
/// let mut f = OpenFile::new(cache.open(disk.clone()));
/// let mut buf = [0u8; 5];
/// assert_eq!(cache.read(&mut f, 7, &mut buf)?, 5);
/// assert_eq!(&buf, b"page ");
/// cache.write(&mut f, 0, b"HELLO")?;
/// assert_eq!(&disk.contents()[..5], b"hello", "not written back yet");
/// cache.fsync(&mut f)?;
/// assert_eq!(&disk.contents()[..5], b"HELLO");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PageCache<F: FrameProvider, M: PhysMemory> {
    pub(crate) frames: F,
    pub(crate) mem: M,
    config: CacheConfig,
    mappings: Box<dyn FileMappings + Send + Sync>,
    pub(crate) swap: Option<Box<dyn PageSwap + Send + Sync>>,
    pub(crate) next_id: AtomicU64,
    dirty_files: Mutex<VecDeque<Arc<CachedFile>>>,
    pub(crate) stats: Counters,
}

impl<F: FrameProvider, M: PhysMemory> fmt::Debug for PageCache<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageCache").field("config", &self.config).field("stats", &self.stats()).finish()
    }
}

impl<F: FrameProvider, M: PhysMemory> PageCache<F, M> {
    /// A cache taking frames from `frames`, reaching them through `mem`,
    /// with `config`'s limits and `mappings` to reach the mappings of its
    /// pages.
    ///
    /// [`CacheError::Config`] if the background threshold is above the
    /// limit or the limit is 0.
    ///
    /// # Safety
    ///
    /// Every frame `frames` hands out is reachable through `mem`. While a
    /// frame holds a cached page, nothing but this cache writes it, except
    /// stores through mappings of the page, which the caller keeps from
    /// overlapping the cache's own copies: a call of this cache that copies
    /// a page (a read, a write, a writeback) does not run while a CPU
    /// stores to that page through a mapping (on one CPU, with the calls
    /// made from system calls and the flusher, they cannot overlap), and
    /// writeback write-protects the mappings first
    /// ([`FileMappings::mkclean`]).
    pub unsafe fn new(
        frames: F,
        mem: M,
        config: CacheConfig,
        mappings: Box<dyn FileMappings + Send + Sync>,
    ) -> Result<Self, CacheError> {
        if config.dirty_limit == 0 {
            return Err(CacheError::Config("dirty_limit is 0: no page could ever be written"));
        }
        if config.dirty_background > config.dirty_limit {
            return Err(CacheError::Config("dirty_background is above dirty_limit"));
        }
        Ok(PageCache {
            frames,
            mem,
            config,
            mappings,
            swap: None,
            next_id: AtomicU64::new(1),
            dirty_files: Mutex::new(VecDeque::new()),
            stats: Counters::default(),
        })
    }

    /// The same cache with `swap` for its shmem files' pages
    /// ([`swap_out`](PageCache::swap_out)). Without one, shmem pages stay
    /// in memory.
    pub fn with_swap(mut self, swap: Box<dyn PageSwap + Send + Sync>) -> Self {
        self.swap = Some(swap);
        self
    }

    /// The limits.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// The frame provider.
    pub fn frames(&self) -> &F {
        &self.frames
    }

    /// The physical memory access.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// Counters and totals.
    pub fn stats(&self) -> CacheStats {
        let s = &self.stats;
        CacheStats {
            hits: get(&s.hits),
            misses: get(&s.misses),
            read_requests: get(&s.read_requests),
            pages_read: get(&s.pages_read),
            read_errors: get(&s.read_errors),
            windows: get(&s.windows),
            async_windows: get(&s.async_windows),
            refaults: get(&s.refaults),
            written_back: get(&s.written_back),
            write_requests: get(&s.write_requests),
            writeback_errors: get(&s.writeback_errors),
            throttled: get(&s.throttled),
            writeback_exposed: get(&s.writeback_exposed),
            evicted: get(&s.evicted),
            dropped: get(&s.dropped),
            swap_outs: get(&s.swap_outs),
            swap_ins: get(&s.swap_ins),
            cached: get(&s.cached),
            dirty: get(&s.dirty),
        }
    }

    /// Dirty pages now, all files.
    pub fn dirty_pages(&self) -> u64 {
        get(&self.stats.dirty)
    }

    /// Whether dirty pages are above the background threshold: the
    /// kernel's flusher should call [`writeback`](PageCache::writeback).
    pub fn needs_writeback(&self) -> bool {
        self.dirty_pages() > self.config.dirty_background
    }

    /// A new cached file over `backing`, empty, its size the backing's.
    pub fn open(&self, backing: impl FileBacking + Send + Sync + 'static) -> Arc<CachedFile> {
        let size = backing.size();
        self.new_file(Box::new(backing), size, false)
    }

    /// A new empty file of `size` bytes over `backing`, with the next
    /// number.
    pub(crate) fn new_file(
        &self,
        backing: Box<dyn FileBacking + Send + Sync>,
        size: u64,
        shmem: bool,
    ) -> Arc<CachedFile> {
        Arc::new(CachedFile {
            id: FileId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            backing,
            state: Mutex::new(FileState {
                index: PageIndex::new(),
                size,
                dirty: 0,
                listed: false,
                fault_ra: Readahead::new(),
            }),
            errors: ErrSeq::new(),
            shmem,
        })
    }

    pub(crate) fn alloc(&self, zero: bool) -> Result<FrameNumber, CacheError> {
        // Cached pages are movable (nothing but the index and page tables
        // name their frames), as Linux's page cache allocates them.
        let flags = if zero { AllocFlags::ZERO | AllocFlags::MOVABLE } else { AllocFlags::MOVABLE };
        self.frames.allocate(Order::ZERO, flags).map(|b| b.start()).map_err(CacheError::Frames)
    }

    pub(crate) fn free(&self, frame: FrameNumber) {
        self.mappings.removed(frame);
        // Order 0 at a frame number is always a valid block.
        let r = FrameBlock::new(frame, Order::ZERO).map(|b| self.frames.free(b));
        debug_assert!(matches!(r, Ok(Ok(()))), "the provider refused a frame it gave: {r:?}");
    }

    /// Caches frame `f` as page `at` of `file` (nothing is cached there)
    /// and tells the hook; a shadow found there counts as a refault.
    pub(crate) fn insert(&self, file: &CachedFile, st: &mut FileState, at: u64, f: FrameNumber) {
        let old = st.index.insert(at, f).expect("the caller checked that no page is cached there");
        // A shmem file's value entries are swap slots, not shadows.
        let shadow = if file.shmem { None } else { old };
        if shadow.is_some() {
            add(&self.stats.refaults, 1);
        }
        st.index.set_tag(at, Tag::Uptodate).expect("just inserted");
        add(&self.stats.cached, 1);
        self.mappings.added(file.id, at, f, file.shmem, shadow);
    }

    /// Reads the missing pages of window `w` (up to the end of the file)
    /// in batches, marking the marker page. An error matters only for the
    /// batch holding `demanded`: other pages were read ahead and are
    /// simply not there (a read of them tries again).
    fn read_window(
        &self,
        file: &CachedFile,
        st: &mut FileState,
        w: Window,
        demanded: Option<u64>,
    ) -> Result<(), CacheError> {
        let end = w.start.saturating_add(w.size).min(pages_of(st.size));
        let max_batch = file.backing.max_batch().max(1) as u64;
        let mut p = w.start;
        while p < end {
            if st.index.page(p).is_some() {
                p += 1;
                continue;
            }
            let mut n = 1;
            while p + n < end && n < max_batch && st.index.page(p + n).is_none() {
                n += 1;
            }
            let mut frames = Vec::with_capacity(n as usize);
            let mut short = false;
            while (frames.len() as u64) < n {
                match self.alloc(false) {
                    Ok(f) => frames.push(f),
                    Err(e) => {
                        // Out of frames: read what there is room for if
                        // that holds the page asked for; otherwise the
                        // page asked for fails, or readahead stops.
                        let got = frames.len() as u64;
                        if demanded.is_some_and(|d| d >= p + got && d < p + n) {
                            frames.into_iter().for_each(|f| self.free(f));
                            return Err(e);
                        }
                        if got == 0 {
                            return Ok(());
                        }
                        n = got;
                        short = true;
                        break;
                    }
                }
            }
            let wanted = demanded.is_some_and(|d| (p..p + n).contains(&d));
            let r = {
                let mut bufs = Vec::with_capacity(frames.len());
                for &f in &frames {
                    // SAFETY: fresh from the provider: only this call has it,
                    // and it is freed (below) only after `bufs` is gone.
                    match unsafe { page_mut(&self.mem, f) } {
                        Ok(b) => bufs.push(b),
                        Err(e) => {
                            drop(bufs);
                            frames.into_iter().for_each(|f| self.free(f));
                            return Err(e);
                        }
                    }
                }
                file.backing.read_pages(p, &mut bufs)
            };
            add(&self.stats.read_requests, 1);
            add(&self.stats.pages_read, n);
            if let Err(e) = r {
                add(&self.stats.read_errors, 1);
                frames.into_iter().for_each(|f| self.free(f));
                if wanted {
                    return Err(CacheError::Io(e));
                }
                return Ok(());
            }
            for (k, f) in frames.into_iter().enumerate() {
                // Checked missing under the file's lock.
                let at = p + k as u64;
                self.insert(file, st, at, f);
                if w.marker == Some(at) {
                    st.index.set_tag(at, Tag::Readahead).expect("just inserted");
                }
            }
            if short {
                return Ok(());
            }
            p += n;
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset` into `buf`: the number
    /// read, short at the end of the file (0 at or past it). Misses read
    /// through readahead (see [`Readahead`]).
    ///
    /// Errors: [`CacheError::Io`] if the backing fails the read of a page
    /// asked for, [`CacheError::Frames`] if no frame is left for one
    /// (either only when nothing was read yet; otherwise the read is
    /// short).
    pub fn read(&self, of: &mut OpenFile, offset: u64, buf: &mut [u8]) -> Result<usize, CacheError> {
        let OpenFile { file, ra, .. } = of;
        let mut st = file.state.lock();
        let end = offset.saturating_add(buf.len() as u64).min(st.size);
        if offset >= end {
            return Ok(0);
        }
        let (first, last) = (offset / PS, (end - 1) / PS);
        let mut done = 0usize;
        for p in first..=last {
            // The page's frame; `None` for a shmem hole (zeros, no frame).
            let frame = if !file.shmem {
                self.page_through(file, &mut st, ra, p, last - p + 1).map(Some)
            } else if st.index.get(p).is_none() {
                Ok(None)
            } else {
                self.shmem_page(file, &mut st, p).map(|f| {
                    add(&self.stats.hits, 1);
                    Some(f)
                })
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    if p > first {
                        ra.prev = Some(p - 1);
                    }
                    return if done > 0 { Ok(done) } else { Err(e) };
                }
            };
            let from = if p == first { (offset % PS) as usize } else { 0 };
            let to = if p == last { ((end - 1) % PS) as usize + 1 } else { PAGE_SIZE };
            let dst = &mut buf[done..done + (to - from)];
            match frame {
                None => dst.fill(0),
                Some(f) => {
                    // SAFETY: a cached page, under the file's lock: the
                    // cache's contract keeps other writers off it during
                    // the copy.
                    let page = unsafe { page_ref(&self.mem, f) }?;
                    dst.copy_from_slice(&page[from..to]);
                }
            }
            done += to - from;
        }
        ra.prev = Some(last);
        Ok(done)
    }

    /// The frame of page `page` for a fault through a mapping, read in if
    /// needed (through readahead, as a read of one page would be; a shmem
    /// page from swap, or zeroed if never written). The page stays the
    /// cache's: the mapper maps it (read-only in a private mapping, which
    /// copies on write) and must unmap it before the cache may drop it.
    ///
    /// Errors: [`CacheError::BeyondEnd`] for a page at or past the end of
    /// the file (the faulting access gets a bus error, not a page),
    /// [`CacheError::Io`], [`CacheError::Frames`], [`CacheError::Swap`].
    pub fn fault(&self, file: &CachedFile, page: u64) -> Result<FrameNumber, CacheError> {
        let mut st = file.state.lock();
        if page >= pages_of(st.size) {
            return Err(CacheError::BeyondEnd { page });
        }
        if file.shmem {
            return self.shmem_page(file, &mut st, page);
        }
        let mut ra = st.fault_ra;
        let r = self.page_through(file, &mut st, &mut ra, page, 1);
        ra.prev = Some(page);
        st.fault_ra = ra;
        r
    }

    /// Page `p` of a regular file for a reader whose readahead state is
    /// `ra` and who wants `want` pages from there: the cached page
    /// (reaching a marker reads the next window), or the page read in
    /// through a window. Only the page asked for can fail the call.
    fn page_through(
        &self,
        file: &CachedFile,
        st: &mut FileState,
        ra: &mut Readahead,
        p: u64,
        want: u64,
    ) -> Result<FrameNumber, CacheError> {
        let max = self.config.readahead_max;
        if let Some(f) = st.index.page(p) {
            add(&self.stats.hits, 1);
            if st.index.has_tag(p, Tag::Readahead) {
                st.index.clear_tag(p, Tag::Readahead).expect("cached");
                let eof = pages_of(st.size);
                let index = &st.index;
                let w = ra.on_marker(p, want, max, |from, limit| {
                    (from..from.saturating_add(limit).min(eof)).find(|&i| index.page(i).is_none())
                });
                if w.size > 0 {
                    add(&self.stats.async_windows, 1);
                    // Pages read ahead: a failure here is not the reader's
                    // (the page asked for is cached).
                    let _ = self.read_window(file, st, w, None);
                }
            }
            return Ok(f);
        }
        add(&self.stats.misses, 1);
        let w = ra.on_miss(p, want, max);
        if w.marker.is_some() {
            add(&self.stats.windows, 1);
        }
        self.read_window(file, st, w, Some(p))?;
        Ok(st.index.page(p).expect("the window starts at the page asked for"))
    }

    /// Calls `f` with every cached, up-to-date page of the 16-page aligned
    /// block around `page` other than `page` itself, below the end of the
    /// file: the neighbours a read fault maps at once (Linux's
    /// fault-around), so a reader of a mapped file takes one fault per
    /// block instead of one per page.
    pub fn cached_around(&self, file: &CachedFile, page: u64, mut f: impl FnMut(u64, FrameNumber)) {
        const AROUND: u64 = 16;
        let st = file.state.lock();
        let start = page & !(AROUND - 1);
        let end = start.saturating_add(AROUND).min(pages_of(st.size));
        for p in start..end {
            if p == page || !st.index.has_tag(p, Tag::Uptodate) {
                continue;
            }
            if let Some(frame) = st.index.page(p) {
                f(p, frame);
            }
        }
    }

    /// Marks page `page` dirty (counted once), putting the file on the
    /// dirty list.
    fn dirty(&self, file: &Arc<CachedFile>, st: &mut FileState, page: u64) {
        if !st.index.has_tag(page, Tag::Dirty) {
            st.index.set_tag(page, Tag::Dirty).expect("cached");
            st.dirty += 1;
            add(&self.stats.dirty, 1);
            if !st.listed {
                st.listed = true;
                self.dirty_files.lock().push_back(file.clone());
            }
        }
    }

    /// Writes `data` at `offset`: the number of bytes written (short only
    /// if frames ran out or a partial page could not be read after some
    /// bytes were written). The file grows to cover the write. Pages are
    /// dirtied in the cache and written back later (by
    /// [`fsync`](PageCache::fsync), [`writeback`](PageCache::writeback), or
    /// this writer itself if the dirty limit is passed).
    ///
    /// Errors: [`CacheError::ReadOnly`], [`CacheError::TooLarge`] if the
    /// write ends past 2^64 bytes, [`CacheError::Io`] if the backing
    /// refuses the new size or fails reading a partly written page,
    /// [`CacheError::Frames`] if no frame is left; nothing was written then.
    pub fn write(&self, of: &mut OpenFile, offset: u64, data: &[u8]) -> Result<usize, CacheError> {
        let file = &of.file;
        if file.backing.read_only() {
            return Err(CacheError::ReadOnly);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let len = data.len() as u64;
        let end = offset.checked_add(len).ok_or(CacheError::TooLarge { offset, len })?;
        let mut st = file.state.lock();
        let old_size = st.size;
        if end > old_size {
            file.backing.set_size(end).map_err(CacheError::Io)?;
            st.size = end;
        }
        let (first, last) = (offset / PS, (end - 1) / PS);
        let mut done = 0usize;
        let mut failed = None;
        for p in first..=last {
            let from = if p == first { (offset % PS) as usize } else { 0 };
            let to = if p == last { ((end - 1) % PS) as usize + 1 } else { PAGE_SIZE };
            let frame = match st.index.page(p) {
                Some(f) => f,
                None => match self.page_for_write(file, &mut st, p, from == 0 && to == PAGE_SIZE, old_size) {
                    Ok(f) => f,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                },
            };
            // SAFETY: a cached page, under the file's lock (the cache's
            // contract keeps other writers off it).
            let page = unsafe { page_mut(&self.mem, frame) }?;
            page[from..to].copy_from_slice(&data[done..done + (to - from)]);
            done += to - from;
            if !file.shmem {
                self.dirty(file, &mut st, p);
            }
        }
        if let Some(e) = failed {
            // The file ends where the written bytes do (not where the
            // write would have ended; where it was if none were): a best
            // effort, the error stands.
            let reached = if done == 0 { old_size } else { (offset + done as u64).max(old_size) };
            if reached < st.size && file.backing.set_size(reached).is_ok() {
                st.size = reached;
            }
            if done == 0 {
                // Nothing dirtied, but the writer still waits its turn if
                // earlier failures left the cache over the limit.
                drop(st);
                self.balance_dirty(&of.file);
                return Err(e);
            }
        }
        drop(st);
        self.balance_dirty(&of.file);
        Ok(done)
    }

    /// A new cached page at `p` for a write: read in first if the write
    /// covers only part of it and the backing has bytes there, zeroed if it
    /// has none, left as it comes if the write covers it whole.
    fn page_for_write(
        &self,
        file: &CachedFile,
        st: &mut FileState,
        p: u64,
        whole: bool,
        old_size: u64,
    ) -> Result<FrameNumber, CacheError> {
        if file.shmem {
            return self.shmem_page(file, st, p);
        }
        let has_data = p * PS < old_size;
        let f = self.alloc(!whole && !has_data)?;
        if !whole && has_data {
            // SAFETY: fresh from the provider: only this call has it.
            let r = unsafe { page_mut(&self.mem, f) }
                .and_then(|b| file.backing.read_pages(p, &mut [b]).map_err(CacheError::Io));
            add(&self.stats.read_requests, 1);
            add(&self.stats.pages_read, 1);
            if let Err(e) = r {
                add(&self.stats.read_errors, 1);
                self.free(f);
                return Err(e);
            }
        }
        self.insert(file, st, p, f);
        Ok(f)
    }

    /// A writer past the dirty limit writes pages back before it goes on:
    /// its own file's first, then other files', until the dirty pages are
    /// back at the background threshold (or every dirty page was tried).
    fn balance_dirty(&self, file: &CachedFile) {
        let dirty = self.dirty_pages();
        if dirty <= self.config.dirty_limit {
            return;
        }
        add(&self.stats.throttled, 1);
        let goal = dirty - self.config.dirty_background;
        let r = self.writeback_file(file, 0..u64::MAX, goal);
        let tried = r.pages + r.failed;
        if tried < goal {
            self.writeback(goal - tried);
        }
    }

    /// Writes back dirty pages of `file` in `pages`, at most `budget`
    /// pages tried, in index order, consecutive dirty pages in one request
    /// (up to the backing's batch). A failed request leaves its pages dirty
    /// and records the error for every opener's next fsync.
    fn writeback_file(&self, file: &CachedFile, pages: Range<u64>, budget: u64) -> WritebackReport {
        let mut st = file.state.lock();
        let max_batch = file.backing.max_batch().max(1) as u64;
        let mut rep = WritebackReport::default();
        let mut pos = pages.start;
        while rep.pages + rep.failed < budget {
            let Some((i, _)) = st.index.next_tagged(pos, Tag::Dirty) else { break };
            if i >= pages.end {
                break;
            }
            let room = (budget - rep.pages - rep.failed).min(max_batch);
            let mut n = 1;
            while n < room && i + n < pages.end && st.index.has_tag(i + n, Tag::Dirty) {
                n += 1;
            }
            let mut frames = Vec::with_capacity(n as usize);
            // Pages with a mapping the hook could not write-protect: a
            // store may land during or after the write, so they stay dirty.
            let mut exposed = Vec::new();
            for k in i..i + n {
                let f = st.index.page(k).expect("dirty, so cached");
                // Stores through mappings fault from here on and dirty the
                // page again.
                if self.mappings.mkclean(file.id, k, f) {
                    st.index.clear_tag(k, Tag::Dirty).expect("cached");
                } else {
                    exposed.push(k);
                }
                st.index.set_tag(k, Tag::Writeback).expect("cached");
                frames.push(f);
            }
            let r = {
                let bufs: Vec<&[u8; PAGE_SIZE]> = frames
                    .iter()
                    .map(|&f| {
                        // SAFETY: cached pages under the file's lock; their
                        // mappings were write-protected, or (a mapping the
                        // hook could not reach, whose page stays dirty) the
                        // cache's contract keeps stores through it from
                        // overlapping this call.
                        unsafe { page_ref(&self.mem, f) }.expect("a cached page's frame was reachable when cached")
                    })
                    .collect();
                file.backing.write_pages(i, &bufs)
            };
            add(&self.stats.write_requests, 1);
            for k in i..i + n {
                st.index.clear_tag(k, Tag::Writeback).expect("cached");
            }
            match r {
                Ok(()) => {
                    let cleaned = n - exposed.len() as u64;
                    rep.pages += n;
                    st.dirty -= cleaned;
                    sub(&self.stats.dirty, cleaned);
                    add(&self.stats.written_back, n);
                    add(&self.stats.writeback_exposed, exposed.len() as u64);
                }
                Err(e) => {
                    // No data lost: the pages stay dirty.
                    for k in i..i + n {
                        st.index.set_tag(k, Tag::Dirty).expect("cached");
                    }
                    file.errors.record(e.kind);
                    add(&self.stats.writeback_errors, 1);
                    rep.failed += n;
                    rep.error = rep.error.or(Some(e));
                }
            }
            pos = i + n;
        }
        rep
    }

    /// Background writeback: dirty pages of the files on the dirty list,
    /// oldest-dirtied file first, at most `budget` pages tried. A file
    /// still dirty afterwards goes to the back of the list. Call it when
    /// [`needs_writeback`](PageCache::needs_writeback) says so (a kernel's
    /// flusher), or with `u64::MAX` to write everything (sync).
    pub fn writeback(&self, budget: u64) -> WritebackReport {
        let mut rep = WritebackReport::default();
        let mut rounds = self.dirty_files.lock().len();
        while rounds > 0 && rep.pages + rep.failed < budget {
            rounds -= 1;
            let Some(f) = self.dirty_files.lock().pop_front() else { break };
            rep.add(self.writeback_file(&f, 0..u64::MAX, budget - rep.pages - rep.failed));
            let mut st = f.state.lock();
            if st.dirty > 0 {
                self.dirty_files.lock().push_back(f.clone());
            } else {
                st.listed = false;
            }
        }
        rep
    }

    /// Writes back every dirty page of the file in `pages`, makes the
    /// backing durable, and reports any writeback error of the file since
    /// this opener last synced (Linux's `msync` of a range, `fsync` over
    /// all pages).
    ///
    /// Errors: [`CacheError::Writeback`] with the last error's kind (this
    /// call's own or an earlier one, in the background or through another
    /// opener); each error reaches each opener once.
    pub fn sync_range(&self, of: &mut OpenFile, pages: Range<u64>) -> Result<(), CacheError> {
        let file = &of.file;
        self.writeback_file(file, pages, u64::MAX);
        if let Err(e) = file.backing.sync() {
            file.errors.record(e.kind);
        }
        file.errors.check_and_advance(&mut of.since).map_err(CacheError::Writeback)
    }

    /// [`sync_range`](PageCache::sync_range) over the whole file.
    pub fn fsync(&self, of: &mut OpenFile) -> Result<(), CacheError> {
        self.sync_range(of, 0..u64::MAX)
    }

    /// Marks a cached page dirty: a store through a shared mapping (the
    /// address-space side calls it from the write fault, as Linux's
    /// `page_mkwrite`, or when an unmapped mapping's dirty bit was set).
    /// It does not throttle: the fault holds its address space, which
    /// writeback's `mkclean` needs, so the caller calls
    /// [`balance_dirty_pages`](Self::balance_dirty_pages) once it has let
    /// go.
    ///
    /// Errors: [`CacheError::ReadOnly`], [`CacheError::NotCached`].
    pub fn mark_dirty(&self, file: &Arc<CachedFile>, page: u64) -> Result<(), CacheError> {
        if file.backing.read_only() {
            return Err(CacheError::ReadOnly);
        }
        let mut st = file.state.lock();
        if st.index.page(page).is_none() {
            return Err(CacheError::NotCached { page });
        }
        if file.shmem {
            // Its only copy is this page: nothing to write back.
            return Ok(());
        }
        self.dirty(file, &mut st, page);
        Ok(())
    }

    /// Throttles a task that dirtied pages through mappings
    /// ([`mark_dirty`](Self::mark_dirty)), called once it holds no address
    /// space (Linux's `balance_dirty_pages_ratelimited` after a write
    /// fault): above the dirty limit, pages are written back, the
    /// oldest-dirtied file's first, until the total is back at the
    /// background threshold. Whether it had to.
    pub fn balance_dirty_pages(&self) -> bool {
        let dirty = self.dirty_pages();
        if dirty <= self.config.dirty_limit {
            return false;
        }
        add(&self.stats.throttled, 1);
        self.writeback(dirty - self.config.dirty_background);
        true
    }

    /// Sets the file's size. Shrinking first makes faults past the new
    /// end fail, then unmaps the pages there from every address space
    /// (through the [`FileMappings`]), then drops them (dirty or not:
    /// their bytes are gone from the file) and zeroes the tail of a
    /// partial last page; growing adds zeros. Calls that change one file's
    /// size are serialized by the caller (Linux's inode lock).
    ///
    /// Errors: [`CacheError::ReadOnly`]; [`CacheError::Mapped`] if a page
    /// could not be unmapped now, [`CacheError::Io`] if the backing
    /// refuses the size (the file keeps its size and pages then).
    pub fn truncate(&self, file: &CachedFile, size: u64) -> Result<(), CacheError> {
        if file.backing.read_only() {
            return Err(CacheError::ReadOnly);
        }
        let keep = pages_of(size);
        let mut st = file.state.lock();
        let old = st.size;
        // Faults past the new end fail from here on, so nothing maps the
        // pages there again once they are unmapped.
        st.size = old.min(size);
        let going: Vec<(u64, FrameNumber)> = st.index.tagged_from(keep, Tag::Uptodate).collect();
        drop(st);
        let restore = |st: &mut FileState| {
            // A write may have grown the file meanwhile: its size stands.
            if st.size == old.min(size) {
                st.size = old;
            }
        };
        for (k, f) in going {
            if !self.mappings.unmap(file.id, k, f) {
                restore(&mut file.state.lock());
                return Err(CacheError::Mapped { page: k });
            }
        }
        let mut st = file.state.lock();
        if file.shmem && size % PS != 0 && matches!(st.index.get(size / PS), Some(Entry::Shadow(_))) {
            // The partial last page is in swap: back first, so its tail
            // can be zeroed (a refusal here changes nothing).
            if let Err(e) = self.shmem_page(file, &mut st, size / PS) {
                restore(&mut st);
                return Err(e);
            }
        }
        if let Err(e) = file.backing.set_size(size) {
            restore(&mut st);
            return Err(CacheError::Io(e));
        }
        st.size = size;
        let gone_dirty = st.index.tagged_from(keep, Tag::Dirty).count() as u64;
        let mut gone = 0;
        st.index.truncate(keep, |_, e| gone += self.drop_entry(file, e));
        st.dirty -= gone_dirty;
        sub(&self.stats.dirty, gone_dirty);
        sub(&self.stats.cached, gone);
        if size % PS != 0 {
            if let Some(f) = st.index.page(size / PS) {
                // SAFETY: a cached page, under the file's lock.
                let page = unsafe { page_mut(&self.mem, f) }?;
                page[(size % PS) as usize..].fill(0);
            }
        }
        Ok(())
    }

    /// Lets go of an entry taken out of a file's index: a page's frame
    /// goes back to the provider (1 is returned, a page less cached), a
    /// shmem file's swap slot back to swap.
    fn drop_entry(&self, file: &CachedFile, e: Entry) -> u64 {
        match e {
            Entry::Page(f) => {
                self.free(f);
                1
            }
            Entry::Shadow(v) if file.shmem => {
                if let (Some(swap), Some(slot)) = (&self.swap, SwapSlot::from_bits(v)) {
                    swap.free(slot);
                }
                0
            }
            Entry::Shadow(_) => 0,
        }
    }

    /// Frees page `page`'s frame for reclaim, whatever the page's state:
    /// a clean page is evicted (leaving `shadow`), a dirty one written back
    /// first (alone, in one request) and then evicted, a shmem page sent to
    /// swap. The caller has unmapped the page from every address space
    /// (the reverse map's work, as for anonymous pages).
    ///
    /// Errors: [`CacheError::NotCached`]; [`CacheError::Busy`] for a page
    /// under writeback or locked; [`CacheError::Writeback`] if writing a
    /// dirty page back failed (it stays cached and dirty, and the error
    /// reaches every opener's next fsync); a shmem page's
    /// [`swap_out`](PageCache::swap_out) errors.
    pub fn reclaim(&self, file: &CachedFile, page: u64, shadow: u64) -> Result<Reclaimed, CacheError> {
        if file.shmem {
            return self.swap_out(file, page).map(Reclaimed::Swapped);
        }
        let dirty = file.state.lock().index.has_tag(page, Tag::Dirty);
        if dirty {
            let r = self.writeback_file(file, page..page + 1, 1);
            if let Some(e) = r.error {
                return Err(CacheError::Writeback(e.kind));
            }
        }
        self.evict(file, page, shadow)?;
        Ok(if dirty { Reclaimed::WrittenBack } else { Reclaimed::Dropped })
    }

    /// Evicts a clean cached page for reclaim: its frame goes back to the
    /// provider and `shadow` (the reclaim policy's record of the eviction)
    /// takes its place, to be returned when the page is read in again.
    /// The caller has unmapped the page from every address space.
    ///
    /// Errors: [`CacheError::NotCached`], [`CacheError::Busy`] if the page
    /// is dirty (write it back first), under writeback or locked.
    pub fn evict(&self, file: &CachedFile, page: u64, shadow: u64) -> Result<(), CacheError> {
        if file.shmem {
            return Err(CacheError::NeedsSwap { page });
        }
        let mut st = file.state.lock();
        if st.index.page(page).is_none() {
            return Err(CacheError::NotCached { page });
        }
        for tag in [Tag::Dirty, Tag::Writeback, Tag::Locked] {
            if st.index.has_tag(page, tag) {
                return Err(CacheError::Busy { page, tag });
            }
        }
        let f = st.index.evict(page, shadow).map_err(|_| CacheError::NotCached { page })?;
        drop(st);
        self.free(f);
        sub(&self.stats.cached, 1);
        add(&self.stats.evicted, 1);
        Ok(())
    }

    /// Drops every clean page of the file (dirty ones stay), unmapping
    /// each from every address space first (a page whose mappings cannot
    /// all be removed now stays): the pages dropped. Shadows stay. The
    /// next read goes to the backing.
    pub fn drop_clean(&self, file: &CachedFile) -> u64 {
        if file.shmem {
            // Every shmem page is its only copy.
            return 0;
        }
        let clean =
            |st: &FileState, i: u64| ![Tag::Dirty, Tag::Writeback, Tag::Locked].iter().any(|&t| st.index.has_tag(i, t));
        let candidates: Vec<(u64, FrameNumber)> = {
            let st = file.state.lock();
            st.index.tagged_from(0, Tag::Uptodate).filter(|&(i, _)| clean(&st, i)).collect()
        };
        let unmapped: Vec<(u64, FrameNumber)> =
            candidates.into_iter().filter(|&(i, f)| self.mappings.unmap(file.id, i, f)).collect();
        let mut st = file.state.lock();
        let mut n = 0;
        for (i, f) in unmapped {
            // Still the same page, and still clean (a write meanwhile keeps it).
            if st.index.page(i) == Some(f) && clean(&st, i) {
                st.index.remove(i);
                self.free(f);
                n += 1;
            }
        }
        sub(&self.stats.cached, n);
        add(&self.stats.dropped, n);
        n
    }

    /// Lets go of a file: unmaps its pages from every address space,
    /// writes back its dirty pages, then drops every page and shadow, so
    /// its frames return to the provider (call it once nothing maps the
    /// file anew, before the last reference goes; frames of a file dropped
    /// with pages cached are lost to the provider).
    ///
    /// Errors, with nothing dropped: [`CacheError::Mapped`] if a page
    /// could not be unmapped now; [`CacheError::Writeback`] if a page could
    /// not be written (the file keeps its dirty pages).
    pub fn release(&self, file: &CachedFile) -> Result<(), CacheError> {
        let cached: Vec<(u64, FrameNumber)> = file.state.lock().index.tagged_from(0, Tag::Uptodate).collect();
        for (i, f) in cached {
            if !self.mappings.unmap(file.id, i, f) {
                return Err(CacheError::Mapped { page: i });
            }
        }
        let r = self.writeback_file(file, 0..u64::MAX, u64::MAX);
        if let Some(e) = r.error {
            return Err(CacheError::Writeback(e.kind));
        }
        let mut st = file.state.lock();
        if let Some((i, _)) = st.index.next_tagged(0, Tag::Dirty) {
            // Dirtied again meanwhile (mapped anew): not ours to drop.
            return Err(CacheError::Busy { page: i, tag: Tag::Dirty });
        }
        let mut n = 0;
        st.index.truncate(0, |_, e| n += self.drop_entry(file, e));
        sub(&self.stats.cached, n);
        Ok(())
    }
}
