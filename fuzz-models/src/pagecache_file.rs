//! mm-pagecache's cache model: two files and a shmem file, two openers
//! each, read, written, synced, written back, truncated, evicted, swapped
//! out and released through one cache, with read, write, swap and frame
//! failures injected, against the bytes each file should hold (MODEL.md
//! C1 to C12).
//!
//! Every read returns the model's bytes (C1), short or failing only when
//! an injected failure fired during it, and then with the error that says
//! so (C11). Every fsync reports a writeback error exactly when one fired
//! since that opener's last fsync (C7); one that succeeds leaves the
//! backing equal to the model (C2). Refusals of eviction match the page's
//! state (C10); no write returns with the cache over its dirty limit
//! unless a writeback failed since it was last within it (C8). Every eighth step and at the end each
//! page is checked where its authoritative copy lives: a cached page's
//! frame equals the model (C3, and C4: a dirty page exists nowhere else),
//! an uncached page's backing bytes equal the model (no data lost), a
//! swapped shmem page's slot equals the model, a shmem hole is zeros. At
//! the end every file is released and every frame and slot is back.
//!
//! A mapper stands in for the address spaces: faulted pages become mapped
//! (and `Map` maps more), `Busy` makes the mapper unreachable (a space in
//! use), and the cache's hook must never free a mapped frame (truncation,
//! `drop_clean` and `release` unmap first, keeping or refusing what a busy
//! mapper holds), must keep a page it could not write-protect dirty, and
//! must tell the mapper exactly which frames hold which pages (C13).

use std::sync::Arc;
use std::vec::Vec;

use arbitrary::Arbitrary;
use mm_pagecache::{CacheConfig, CacheError, CachedFile, Entry, OpenFile, PageCache, Reclaimed, Tag};
use mm_types::testkit::{MemFile, MemSwap, RefFrameProvider, SimPhysMemory};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use mm_types::{
    FileErrorKind, FileId, FileMappings, FileOp, FrameNumber, PageSwap, PageSwapError, PhysAddr, PhysMemory,
};
use mm_types::{SwapSlot, PAGE_SIZE};

const PS: u64 = PAGE_SIZE as u64;
/// Pages a file may reach (offsets are drawn below this).
const MAX_PAGES: u64 = 20;
const FILES: usize = 3;
/// Pages a file may hold: a write at the last offset reaches past it.
const SPAN: u64 = MAX_PAGES + 3;
const OPENERS: usize = 2;

/// Where in a file.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Off(u8, u16);

impl Off {
    fn get(self) -> u64 {
        u64::from(self.0) % MAX_PAGES * PS + u64::from(self.1) % PS
    }
}

/// One step.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Read `len % 3 pages` bytes through an opener.
    Read(u8, u8, Off, u16),
    /// Write `len % 2 pages` bytes of a pattern through an opener.
    Write(u8, u8, Off, u16, u8),
    /// fsync through an opener.
    Fsync(u8, u8),
    /// msync of pages `first .. first + n` through an opener.
    SyncRange(u8, u8, u8, u8),
    /// Background writeback of at most `budget % 16` pages.
    Writeback(u8),
    /// Set a file's size.
    Truncate(u8, Off),
    /// Evict a page, leaving a shadow.
    Evict(u8, u8, u16),
    /// Drop a file's clean pages.
    DropClean(u8),
    /// A store through a mapping dirties a page.
    MarkDirty(u8, u8),
    /// The file's next write request fails.
    FailWrite(u8),
    /// The file's next read request fails.
    FailRead(u8),
    /// The next frame allocation fails.
    FailAlloc,
    /// Write the file back and drop all its pages (a shmem file's pages
    /// are gone: it reads as zeros after).
    Release(u8),
    /// Send a shmem page to swap (the nth cached page).
    SwapOut(u8, u8),
    /// The next swap-out fails.
    FailSwapOut,
    /// The next swap-in fails.
    FailSwapIn,
    /// A fault through a mapping at a page.
    Fault(u8, u8),
    /// Reclaim the nth cached page (written back first if dirty, or to
    /// swap).
    Reclaim(u8, u8, u16),
    /// The mapper maps the nth cached page of a file.
    Map(u8, u8),
    /// The mapper lets go of every mapping.
    UnmapAll,
    /// The mapper becomes unreachable (busy) or reachable again.
    Busy(bool),
}

/// The address spaces, as the cache's hook sees them.
#[derive(Default)]
struct Mapper {
    /// What the cache said each frame holds.
    holds: Mutex<BTreeMap<FrameNumber, (FileId, u64)>>,
    /// Frames some mapping maps.
    mapped: Mutex<BTreeSet<FrameNumber>>,
    busy: AtomicBool,
}

impl Mapper {
    fn check_holds(&self, file: FileId, page: u64, frame: FrameNumber) {
        assert_eq!(self.holds.lock().unwrap().get(&frame), Some(&(file, page)), "the hook was told another page");
    }
    fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }
    fn is_mapped(&self, frame: FrameNumber) -> bool {
        self.mapped.lock().unwrap().contains(&frame)
    }
    /// Unmaps `frame` as the kernel's reclaim does before it evicts:
    /// whether it could (not mapped, or the mapper is reachable).
    fn unmap_for_reclaim(&self, frame: Option<FrameNumber>) -> bool {
        match frame {
            Some(f) if self.is_mapped(f) => !self.busy() && self.mapped.lock().unwrap().remove(&f),
            _ => true,
        }
    }
}

/// The cache's end of the mapper.
struct Hook(Arc<Mapper>);

impl FileMappings for Hook {
    fn unmap(&self, file: FileId, page: u64, frame: FrameNumber) -> bool {
        self.0.check_holds(file, page, frame);
        if !self.0.is_mapped(frame) {
            return true;
        }
        !self.0.busy() && self.0.mapped.lock().unwrap().remove(&frame)
    }
    fn mkclean(&self, file: FileId, page: u64, frame: FrameNumber) -> bool {
        self.0.check_holds(file, page, frame);
        !(self.0.busy() && self.0.is_mapped(frame))
    }
    fn added(&self, file: FileId, page: u64, frame: FrameNumber, _shmem: bool, _shadow: Option<u64>) {
        let old = self.0.holds.lock().unwrap().insert(frame, (file, page));
        assert_eq!(old, None, "{frame:?} added while it held a page");
    }
    fn removed(&self, frame: FrameNumber) {
        assert!(!self.0.is_mapped(frame), "{frame:?} freed while a mapping maps it");
        self.0.holds.lock().unwrap().remove(&frame);
    }
}

type Cache = PageCache<Arc<RefFrameProvider>, SimPhysMemory>;

/// The cache's end of the swap the model watches.
struct Shared(Arc<MemSwap>);

// SAFETY: forwards to `MemSwap`, which keeps the contract.
unsafe impl PageSwap for Shared {
    unsafe fn swap_out(&self, frame: PhysAddr) -> Result<SwapSlot, PageSwapError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.0.swap_out(frame) }
    }
    unsafe fn swap_in(&self, slot: SwapSlot, frame: PhysAddr) -> Result<(), PageSwapError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.0.swap_in(slot, frame) }
    }
    fn free(&self, slot: SwapSlot) {
        self.0.free(slot)
    }
}

struct ModelFile {
    /// The backing (a shmem file's is never touched: a stand-in).
    disk: Arc<MemFile>,
    shmem: bool,
    file: Arc<CachedFile>,
    openers: Vec<OpenFile>,
    /// The bytes the file should hold.
    bytes: Vec<u8>,
    /// Per opener: a writeback error fired since its last fsync.
    owed: [bool; OPENERS],
    /// The write and read request numbers that fail, while armed.
    fail_write_at: Option<u64>,
    fail_read_at: Option<u64>,
}

impl ModelFile {
    /// Notes injected failures that fired: a failed write owes every
    /// opener an error. Returns (write failed, read failed).
    fn fired(&mut self) -> (bool, bool) {
        let w = self.fail_write_at.is_some_and(|at| self.disk.write_requests() >= at);
        let r = self.fail_read_at.is_some_and(|at| self.disk.read_requests() >= at);
        if w {
            self.fail_write_at = None;
            self.owed = [true; OPENERS];
        }
        if r {
            self.fail_read_at = None;
        }
        (w, r)
    }
}

struct Model {
    cache: Cache,
    frames: Arc<RefFrameProvider>,
    files: Vec<ModelFile>,
    swap: Arc<MemSwap>,
    fail_alloc_at: Option<u64>,
    fail_out_at: Option<u64>,
    fail_in_at: Option<u64>,
    /// A writeback failed (or left a page dirty that a busy mapping
    /// maps) since the dirty pages were last within the limit: the cache
    /// may stay over it (C8).
    excused: bool,
    mapper: Arc<Mapper>,
    exposed: u64,
}

impl Model {
    /// Whether the injected swap-in failure fired.
    fn swap_in_fired(&mut self) -> bool {
        let f = self.fail_in_at.is_some_and(|at| self.swap.swap_ins() >= at);
        if f {
            self.fail_in_at = None;
        }
        f
    }

    /// Whether the injected allocation failure fired.
    fn alloc_fired(&mut self) -> bool {
        let f = self.fail_alloc_at.is_some_and(|at| self.frames.allocations() >= at);
        if f {
            self.fail_alloc_at = None;
        }
        f
    }

    /// Notes failures that fired in every file (a throttled write or the
    /// flusher may write any file back). Returns whether any write failed.
    fn fired_all(&mut self) -> bool {
        let mut any = false;
        for f in &mut self.files {
            any |= f.fired().0;
        }
        self.excused |= any;
        any
    }
}

fn pattern(seed: u8, i: u64) -> u8 {
    seed.wrapping_add((i % 253) as u8).wrapping_mul(31) ^ (i >> 8) as u8
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = crate::decode_ops(data, 300);
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).expect("aligned"), 64 * PS);
    let frames = Arc::new(RefFrameProvider::new(&mem));
    let config = CacheConfig { dirty_background: 4, dirty_limit: 8, readahead_max: 8 };
    let mapper = Arc::new(Mapper::default());
    let made =
        // SAFETY: the model's mapper only records mappings and never
        // stores through them; the model reads frames only between the
        // cache's calls.
        unsafe { PageCache::new(frames.clone(), mem.clone(), config, Box::new(Hook(mapper.clone()))) };
    let cache = made.expect("valid config");
    let swap = Arc::new(MemSwap::new(&mem, 16));
    let cache = cache.with_swap(Box::new(Shared(swap.clone())));
    let mut files = Vec::new();
    for (i, initial) in [5 * PAGE_SIZE + 123, 0, 2 * PAGE_SIZE + 7].into_iter().enumerate() {
        let shmem = i == 2;
        let mut bytes: Vec<u8> = (0..initial as u64).map(|b| pattern(0x5a, b)).collect();
        if shmem {
            bytes.fill(0);
        }
        let disk = Arc::new(MemFile::with_contents(bytes.clone()));
        // One device takes small requests: batches split.
        disk.set_max_batch(if i == 0 { 3 } else { 64 });
        let file = if shmem { cache.open_shmem(initial as u64) } else { cache.open(disk.clone()) };
        let openers = (0..OPENERS).map(|_| OpenFile::new(file.clone())).collect();
        files.push(ModelFile {
            disk,
            shmem,
            file,
            openers,
            bytes,
            owed: [false; OPENERS],
            fail_write_at: None,
            fail_read_at: None,
        });
    }
    let mut m = Model {
        cache,
        frames,
        files,
        swap,
        fail_alloc_at: None,
        fail_out_at: None,
        fail_in_at: None,
        excused: false,
        mapper,
        exposed: 0,
    };
    for (step, op) in (1..).zip(&ops) {
        apply(&mut m, op, step);
        let exposed = m.cache.stats().writeback_exposed;
        m.excused |= exposed > m.exposed;
        m.exposed = exposed;
        if m.cache.dirty_pages() <= m.cache.config().dirty_limit {
            m.excused = false;
        }
        let dirty: u64 = m.files.iter().map(|f| f.file.dirty_pages()).sum();
        assert_eq!(dirty, m.cache.dirty_pages(), "step {step}: the total is the files' sum");
        let cached: u64 = m.files.iter().map(|f| f.file.cached_pages()).sum();
        assert_eq!(cached, m.cache.stats().cached, "step {step}");
        if step % 8 == 0 {
            whole(&m, step);
        }
    }
    whole(&m, ops.len() as u64);
    // Disarm and let go of everything: every frame comes back.
    m.mapper.busy.store(false, Ordering::Relaxed);
    m.frames.fail_nth_allocation(u64::MAX);
    for f in &m.files {
        f.disk.fail_nth_write(u64::MAX);
        m.cache.release(&f.file).expect("writes work again");
        assert!(f.shmem || f.disk.contents() == f.bytes, "released: the backing holds the file");
        assert_eq!(f.file.cached_pages(), 0);
    }
    assert_eq!(m.frames.allocated_blocks(), 0, "every frame back with the provider");
    assert!(m.mapper.holds.lock().unwrap().is_empty() && m.mapper.mapped.lock().unwrap().is_empty());
    assert_eq!(m.swap.used(), 0, "every swap slot back");
}

fn apply(m: &mut Model, op: &Op, step: u64) {
    match *op {
        Op::Read(f, o, at, len) => {
            let (fi, oi) = (usize::from(f) % FILES, usize::from(o) % OPENERS);
            let (at, len) = (at.get(), usize::from(len) % (3 * PAGE_SIZE));
            let mut buf = vec![0u8; len];
            let mf = &mut m.files[fi];
            let r = m.cache.read(&mut mf.openers[oi], at, &mut buf);
            let (_, read_failed) = mf.fired();
            let alloc_failed = m.alloc_fired();
            let swap_failed = m.swap_in_fired();
            let mf = &m.files[fi];
            let want = mf.bytes.get(at as usize..).map_or(&[][..], |b| &b[..len.min(b.len())]);
            match r {
                Ok(n) => {
                    assert!(buf[..n] == want[..n], "step {step}: read {len} at {at} of file {fi}: wrong bytes");
                    assert!(
                        n == want.len() || read_failed || alloc_failed || swap_failed,
                        "step {step}: short read {n} of {}",
                        want.len()
                    );
                }
                Err(CacheError::Io(e)) => {
                    assert!(read_failed && e.op == FileOp::Read && e.kind == FileErrorKind::Io, "step {step}: {e:?}")
                }
                Err(CacheError::Frames(_)) => assert!(alloc_failed, "step {step}: frames ran out"),
                Err(CacheError::Swap(PageSwapError::Io(_))) => assert!(swap_failed, "step {step}: swap-in failed"),
                Err(e) => panic!("step {step}: read failed: {e:?}"),
            }
        }
        Op::Write(f, o, at, len, seed) => {
            let (fi, oi) = (usize::from(f) % FILES, usize::from(o) % OPENERS);
            let (at, len) = (at.get(), usize::from(len) % (2 * PAGE_SIZE));
            let data: Vec<u8> = (0..len as u64).map(|i| pattern(seed, i)).collect();
            let r = m.cache.write(&mut m.files[fi].openers[oi], at, &data);
            let (own_write_failed, read_failed) = m.files[fi].fired();
            let alloc_failed = m.alloc_fired();
            let swap_failed = m.swap_in_fired();
            m.excused |= own_write_failed;
            m.fired_all();
            let n = match r {
                Ok(n) => {
                    assert!(
                        n == len || read_failed || alloc_failed || swap_failed,
                        "step {step}: short write {n} of {len}"
                    );
                    n
                }
                Err(CacheError::Io(e)) => {
                    assert!(read_failed && e.op == FileOp::Read, "step {step}: {e:?}");
                    0
                }
                Err(CacheError::Frames(_)) => {
                    assert!(alloc_failed, "step {step}: frames ran out");
                    0
                }
                Err(CacheError::Swap(PageSwapError::Io(_))) => {
                    assert!(swap_failed, "step {step}: swap-in failed");
                    0
                }
                Err(e) => panic!("step {step}: write failed: {e:?}"),
            };
            let mf = &mut m.files[fi];
            if n > 0 {
                let end = at as usize + n;
                if mf.bytes.len() < end {
                    mf.bytes.resize(end, 0);
                }
                mf.bytes[at as usize..end].copy_from_slice(&data[..n]);
            }
            assert_eq!(mf.file.size(), mf.bytes.len() as u64, "step {step}: size after the write");
            // C8: back under the limit unless a writeback failed.
            let cfg = m.cache.config();
            assert!(
                m.cache.dirty_pages() <= cfg.dirty_limit || m.excused || len == 0,
                "step {step}: over the dirty limit with no writeback failure since it was within it"
            );
        }
        Op::Fsync(f, o) | Op::SyncRange(f, o, _, _) => {
            let (fi, oi) = (usize::from(f) % FILES, usize::from(o) % OPENERS);
            let range = match *op {
                Op::SyncRange(_, _, first, n) => {
                    let first = u64::from(first) % MAX_PAGES;
                    first..first + u64::from(n) % MAX_PAGES
                }
                _ => 0..u64::MAX,
            };
            let r = m.cache.sync_range(&mut m.files[fi].openers[oi], range.clone());
            m.fired_all();
            let mf = &mut m.files[fi];
            if mf.owed[oi] {
                assert_eq!(r, Err(CacheError::Writeback(FileErrorKind::Io)), "step {step}: an error owed");
                mf.owed[oi] = false;
            } else {
                assert_eq!(r, Ok(()), "step {step}: no error owed");
                if mf.shmem {
                    return;
                }
                // C2: the synced pages are on the backing.
                let disk = mf.disk.contents();
                let from = (range.start * PS).min(mf.bytes.len() as u64) as usize;
                let to = range.end.saturating_mul(PS).min(mf.bytes.len() as u64) as usize;
                assert!(disk[from..to] == mf.bytes[from..to], "step {step}: synced bytes not on the backing");
            }
        }
        Op::Writeback(budget) => {
            let budget = u64::from(budget) % 16;
            let r = m.cache.writeback(budget);
            let failed = m.fired_all();
            assert!(r.pages + r.failed <= budget, "step {step}: {r:?} over budget {budget}");
            assert_eq!(r.failed > 0, failed, "step {step}: {r:?}");
        }
        Op::Truncate(f, at) => {
            let size = at.get();
            let fi = usize::from(f) % FILES;
            let keep = size.div_ceil(PS);
            let busy_beyond = m.mapper.busy()
                && (keep..SPAN).any(|p| m.files[fi].file.page(p).is_some_and(|f| m.mapper.is_mapped(f)));
            let r = m.cache.truncate(&m.files[fi].file, size);
            // A shmem file brings a swapped partial last page back first.
            let (alloc_failed, swap_failed) = (m.alloc_fired(), m.swap_in_fired());
            let mf = &mut m.files[fi];
            match r {
                Ok(()) => {
                    assert!(!busy_beyond, "step {step}: truncated a page a busy mapping maps");
                    mf.bytes.resize(size as usize, 0);
                    assert_eq!(mf.file.size(), size);
                }
                Err(CacheError::Mapped { page }) => {
                    assert!(busy_beyond && page >= keep, "step {step}: refused for page {page}");
                    assert_eq!(mf.file.size(), mf.bytes.len() as u64, "step {step}: a refusal changes nothing");
                }
                Err(CacheError::Frames(_)) => assert!(mf.shmem && alloc_failed, "step {step}: frames ran out"),
                Err(CacheError::Swap(_)) => assert!(mf.shmem && swap_failed, "step {step}: swap-in failed"),
                Err(e) => panic!("step {step}: truncate: {e:?}"),
            }
        }
        Op::Evict(f, page, shadow) => {
            let mf = &m.files[usize::from(f) % FILES];
            let page = u64::from(page) % MAX_PAGES;
            if !m.mapper.unmap_for_reclaim(mf.file.page(page)) {
                return; // Mapped where reclaim cannot reach now: kept.
            }
            let entry = mf.file.entry(page);
            let dirty = mf.file.has_tag(page, Tag::Dirty);
            let r = m.cache.evict(&mf.file, page, u64::from(shadow));
            match entry {
                _ if mf.shmem => assert_eq!(r, Err(CacheError::NeedsSwap { page })),
                Some(Entry::Page(_)) if dirty => assert_eq!(r, Err(CacheError::Busy { page, tag: Tag::Dirty })),
                Some(Entry::Page(_)) => {
                    assert_eq!(r, Ok(()));
                    assert_eq!(mf.file.entry(page), Some(Entry::Shadow(u64::from(shadow))));
                }
                _ => assert_eq!(r, Err(CacheError::NotCached { page })),
            }
        }
        Op::DropClean(f) => {
            let mf = &m.files[usize::from(f) % FILES];
            let before = mf.file.cached_pages();
            let n = m.cache.drop_clean(&mf.file);
            assert_eq!(mf.file.cached_pages(), before - n);
            if mf.shmem {
                assert_eq!(n, 0, "step {step}: a shmem page is its only copy");
            } else {
                for p in 0..SPAN {
                    if let Some(f) = mf.file.page(p) {
                        let busy_mapped = m.mapper.busy() && m.mapper.is_mapped(f);
                        assert!(
                            mf.file.has_tag(p, Tag::Dirty) || busy_mapped,
                            "step {step}: page {p} stayed, clean and unmappable"
                        );
                    }
                }
            }
        }
        Op::MarkDirty(f, page) => {
            let mf = &m.files[usize::from(f) % FILES];
            let page = u64::from(page) % MAX_PAGES;
            let cached = mf.file.page(page).is_some();
            let r = m.cache.mark_dirty(&mf.file, page);
            if cached {
                assert_eq!(r, Ok(()));
                // Dirty (a shmem page never is: nothing to write it to).
                assert!(mf.file.has_tag(page, Tag::Dirty) != mf.shmem, "step {step}: page {page} not dirty");
            } else {
                assert_eq!(r, Err(CacheError::NotCached { page }));
            }
            // The faulting task throttles once it lets go of its space.
            m.cache.balance_dirty_pages();
            m.fired_all();
            // C8: back under the limit unless a writeback failed.
            assert!(
                m.cache.dirty_pages() <= m.cache.config().dirty_limit || m.excused,
                "step {step}: over the dirty limit after throttling, with no writeback failure"
            );
        }
        Op::FailWrite(f) => {
            let mf = &mut m.files[usize::from(f) % FILES];
            mf.disk.fail_nth_write(1);
            mf.fail_write_at = Some(mf.disk.write_requests() + 1);
        }
        Op::FailRead(f) => {
            let mf = &mut m.files[usize::from(f) % FILES];
            mf.disk.fail_nth_read(1);
            mf.fail_read_at = Some(mf.disk.read_requests() + 1);
        }
        Op::FailAlloc => {
            m.frames.fail_nth_allocation(1);
            m.fail_alloc_at = Some(m.frames.allocations() + 1);
        }
        Op::Release(f) => {
            let fi = usize::from(f) % FILES;
            let busy_mapped =
                m.mapper.busy() && (0..SPAN).any(|p| m.files[fi].file.page(p).is_some_and(|f| m.mapper.is_mapped(f)));
            let cached = m.files[fi].file.cached_pages();
            let r = m.cache.release(&m.files[fi].file);
            let failed = m.fired_all();
            let mf = &mut m.files[fi];
            if busy_mapped {
                assert!(matches!(r, Err(CacheError::Mapped { .. })), "step {step}: released what a busy mapping maps");
                assert_eq!(mf.file.cached_pages(), cached, "step {step}: nothing dropped");
            } else if failed && r.is_err() {
                assert_eq!(r, Err(CacheError::Writeback(FileErrorKind::Io)));
                assert!(mf.file.dirty_pages() > 0, "step {step}: nothing dropped");
            } else {
                assert_eq!(r, Ok(()), "step {step}");
                assert_eq!(mf.file.cached_pages(), 0);
                if mf.shmem {
                    // Its pages are gone: it reads as zeros.
                    mf.bytes.fill(0);
                    assert_eq!(m.cache.shmem_pages(&mf.file), (0, 0));
                } else {
                    assert!(mf.disk.contents() == mf.bytes, "step {step}: released: the backing holds the file");
                }
            }
        }
        Op::SwapOut(f, n) => {
            let mf = &m.files[usize::from(f) % FILES];
            // The nth cached page, if there is one (so that swap-outs find
            // pages to take); otherwise a page that may hold nothing.
            let cached: Vec<u64> = (0..MAX_PAGES).filter(|&p| mf.file.page(p).is_some()).collect();
            let page = if cached.is_empty() { u64::from(n) % MAX_PAGES } else { cached[usize::from(n) % cached.len()] };
            if !m.mapper.unmap_for_reclaim(mf.file.page(page)) {
                return;
            }
            let cached = mf.file.page(page).is_some();
            let used = m.swap.used();
            let r = m.cache.swap_out(&mf.file, page);
            let fired = m.fail_out_at.is_some_and(|at| m.swap.swap_outs() >= at);
            if fired {
                m.fail_out_at = None;
            }
            match r {
                Ok(slot) => {
                    assert!(mf.shmem && cached && !fired, "step {step}");
                    assert_eq!(mf.file.swap_slot(page), Some(slot));
                    assert_eq!(m.swap.used(), used + 1);
                }
                Err(CacheError::NotShmem) => assert!(!mf.shmem),
                Err(CacheError::NotCached { page: p }) => assert!(p == page && mf.shmem && !cached),
                Err(CacheError::Swap(PageSwapError::Io(_))) => assert!(fired, "step {step}: swap-out failed"),
                Err(CacheError::Swap(PageSwapError::Full)) => assert_eq!(used, 16, "step {step}: swap full"),
                Err(e) => panic!("step {step}: swap-out: {e:?}"),
            }
            if r.is_err() {
                assert_eq!(mf.file.page(page).is_some(), cached, "step {step}: a refused swap-out changes nothing");
            }
        }
        Op::Fault(f, page) => {
            let fi = usize::from(f) % FILES;
            let page = u64::from(page) % MAX_PAGES;
            let r = m.cache.fault(&m.files[fi].file, page);
            let (_, read_failed) = m.files[fi].fired();
            let (alloc_failed, swap_failed) = (m.alloc_fired(), m.swap_in_fired());
            let mf = &m.files[fi];
            let len = mf.bytes.len() as u64;
            match r {
                Ok(frame) => {
                    assert!(page * PS < len, "step {step}: a page past the end");
                    let mut got = [0u8; PAGE_SIZE];
                    // SAFETY: no cache call runs: nothing writes the frame.
                    unsafe { m.cache.mem().read_bytes(frame.start_address(), &mut got) }.expect("simulated RAM");
                    let (from, to) = ((page * PS) as usize, ((page + 1) * PS).min(len) as usize);
                    assert!(got[..to - from] == mf.bytes[from..to], "step {step}: fault of page {page}: wrong bytes");
                    assert_eq!(mf.file.page(page), Some(frame), "step {step}: the cached page");
                    // The faulting mapper maps it now.
                    m.mapper.mapped.lock().unwrap().insert(frame);
                }
                Err(CacheError::BeyondEnd { page: p }) => assert!(p == page && page * PS >= len, "step {step}"),
                Err(CacheError::Io(_)) => assert!(read_failed, "step {step}: fault read failed"),
                Err(CacheError::Frames(_)) => assert!(alloc_failed, "step {step}: frames ran out"),
                Err(CacheError::Swap(_)) => assert!(swap_failed, "step {step}: swap-in failed"),
                Err(e) => panic!("step {step}: fault: {e:?}"),
            }
        }
        Op::Reclaim(f, n, shadow) => {
            let fi = usize::from(f) % FILES;
            let mf = &m.files[fi];
            let cached: Vec<u64> = (0..MAX_PAGES).filter(|&p| mf.file.page(p).is_some()).collect();
            let page = if cached.is_empty() { u64::from(n) % MAX_PAGES } else { cached[usize::from(n) % cached.len()] };
            if !m.mapper.unmap_for_reclaim(mf.file.page(page)) {
                return;
            }
            let was_cached = mf.file.page(page).is_some();
            let dirty = mf.file.has_tag(page, Tag::Dirty);
            let used = m.swap.used();
            let r = m.cache.reclaim(&mf.file, page, u64::from(shadow));
            let write_failed = m.fired_all();
            let out_failed = m.fail_out_at.is_some_and(|at| m.swap.swap_outs() >= at);
            if out_failed {
                m.fail_out_at = None;
            }
            let mf = &m.files[fi];
            match r {
                Ok(Reclaimed::Dropped) => assert!(was_cached && !dirty && !mf.shmem, "step {step}"),
                Ok(Reclaimed::WrittenBack) => {
                    assert!(was_cached && dirty && !mf.shmem, "step {step}");
                    let (from, to) = ((page * PS) as usize, ((page + 1) * PS).min(mf.bytes.len() as u64) as usize);
                    assert!(mf.disk.contents()[from..to] == mf.bytes[from..to], "step {step}: written back");
                }
                Ok(Reclaimed::Swapped(slot)) => {
                    assert!(was_cached && mf.shmem, "step {step}");
                    assert_eq!(mf.file.swap_slot(page), Some(slot));
                }
                Err(CacheError::NotCached { .. }) => assert!(!was_cached, "step {step}"),
                Err(CacheError::Writeback(_)) => assert!(dirty && write_failed, "step {step}: writeback failed"),
                Err(CacheError::Swap(PageSwapError::Io(_))) => assert!(out_failed, "step {step}"),
                Err(CacheError::Swap(PageSwapError::Full)) => assert_eq!(used, 16, "step {step}"),
                Err(e) => panic!("step {step}: reclaim: {e:?}"),
            }
            if r.is_ok() {
                assert!(mf.file.page(page).is_none(), "step {step}: reclaimed but still cached");
            } else {
                assert_eq!(mf.file.page(page).is_some(), was_cached, "step {step}: a refusal changes nothing");
            }
        }
        Op::FailSwapOut => {
            m.swap.fail_nth_swap_out(1);
            m.fail_out_at = Some(m.swap.swap_outs() + 1);
        }
        Op::FailSwapIn => {
            m.swap.fail_nth_swap_in(1);
            m.fail_in_at = Some(m.swap.swap_ins() + 1);
        }
        Op::Map(f, n) => {
            let mf = &m.files[usize::from(f) % FILES];
            let cached: Vec<FrameNumber> = (0..SPAN).filter_map(|p| mf.file.page(p)).collect();
            if !cached.is_empty() {
                m.mapper.mapped.lock().unwrap().insert(cached[usize::from(n) % cached.len()]);
            }
        }
        Op::UnmapAll => m.mapper.mapped.lock().unwrap().clear(),
        Op::Busy(b) => m.mapper.busy.store(b, Ordering::Relaxed),
    }
}

/// Every page where its authoritative copy lives: a cached page's frame,
/// else the backing.
fn whole(m: &Model, step: u64) {
    // C13: the hook knows exactly the cached pages' frames; every mapped
    // frame holds a cached page.
    let mut told = m.mapper.holds.lock().unwrap().clone();
    for mf in &m.files {
        for p in 0..SPAN {
            if let Some(f) = mf.file.page(p) {
                assert_eq!(told.remove(&f), Some((mf.file.id(), p)), "step {step}: the hook was not told of {f:?}");
            }
        }
    }
    assert!(told.is_empty(), "step {step}: the hook holds frames no file caches: {told:?}");
    for f in m.mapper.mapped.lock().unwrap().iter() {
        assert!(m.mapper.holds.lock().unwrap().contains_key(f), "step {step}: a mapped frame is not cached");
    }
    for (fi, mf) in m.files.iter().enumerate() {
        mf.file.check().unwrap_or_else(|e| panic!("step {step}: file {fi}: {e}"));
        assert_eq!(mf.file.size(), mf.bytes.len() as u64);
        assert_eq!(mf.file.backing().size(), mf.bytes.len() as u64, "step {step}: the backing's size");
        let disk = mf.disk.contents();
        let mut frame = [0u8; PAGE_SIZE];
        for page in 0..mf.bytes.len().div_ceil(PAGE_SIZE) as u64 {
            let (from, to) = ((page * PS) as usize, ((page + 1) * PS).min(mf.bytes.len() as u64) as usize);
            match mf.file.page(page) {
                Some(f) => {
                    // SAFETY: no cache call runs: nothing writes the frame.
                    unsafe { m.cache.mem().read_bytes(f.start_address(), &mut frame) }.expect("simulated RAM");
                    assert!(
                        frame[..to - from] == mf.bytes[from..to],
                        "step {step}: file {fi} page {page}: cached copy"
                    );
                    assert!(frame[to - from..].iter().all(|&b| b == 0), "step {step}: file {fi} page {page}: tail");
                    if !mf.shmem && !mf.file.has_tag(page, Tag::Dirty) {
                        assert!(
                            disk[from..to] == mf.bytes[from..to],
                            "step {step}: file {fi} page {page}: clean but stale"
                        );
                    }
                }
                None if mf.shmem => match mf.file.swap_slot(page) {
                    Some(slot) => {
                        let p = m.swap.page(slot).unwrap_or_else(|| panic!("step {step}: {slot:?} not in use"));
                        assert!(p[..to - from] == mf.bytes[from..to], "step {step}: page {page}: swapped copy");
                        assert!(p[to - from..].iter().all(|&b| b == 0), "step {step}: page {page}: swapped tail");
                    }
                    None => assert!(mf.bytes[from..to].iter().all(|&b| b == 0), "step {step}: page {page}: a hole"),
                },
                None => assert!(disk[from..to] == mf.bytes[from..to], "step {step}: file {fi} page {page}: lost"),
            }
        }
    }
}
