//! Loom models of the cache's per-file lock against its shared state: a
//! reader, truncation and reclaim on one file at once (MODEL C1, C9, C10),
//! writers, the flusher and truncation against the dirty counts and the
//! list of dirty files (C4), and a fault that maps its page (holding its
//! address space, as mm-vma's fault does) against truncation, whose hook
//! takes that space with a try (C9, C10: no frame freed while mapped).
#![cfg(loom)]

use std::sync::Arc;

use mm_pagecache::{CacheConfig, CacheError, OpenFile, PageCache};
use mm_types::sync::atomic::{AtomicU64, Ordering};
use mm_types::sync::Mutex;
use mm_types::testkit::loom_model::{model, spawn};
use mm_types::testkit::{MemFile, RefFrameProvider, SimPhysMemory};
use mm_types::{FileId, FileMappings, FrameNumber, NoMappings, PhysAddr, PAGE_SIZE};

type Cache = PageCache<Arc<RefFrameProvider>, SimPhysMemory>;

fn cache(config: CacheConfig) -> (Arc<Cache>, Arc<RefFrameProvider>) {
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), 16 * PAGE_SIZE as u64);
    let frames = Arc::new(RefFrameProvider::new(&mem));
    // SAFETY: nothing maps the cache's pages.
    let cache = unsafe { PageCache::new(frames.clone(), mem, config, Box::new(NoMappings)) }.unwrap();
    (Arc::new(cache), frames)
}

/// A reader of page 1, truncation to one page and eviction of page 1 at
/// once: the reader sees the page's bytes or the end of the file, never
/// anything else; afterwards the file checks out and every frame comes
/// back.
#[test]
fn read_truncate_and_evict_on_one_file() {
    model(|| {
        let (cache, frames) = cache(CacheConfig { readahead_max: 0, ..CacheConfig::default() });
        let disk = Arc::new(MemFile::with_contents(vec![5; 2 * PAGE_SIZE]));
        let file = cache.open(disk);
        // Page 1 cached to begin with, so eviction has something to take.
        let mut warm = OpenFile::new(file.clone());
        cache.read(&mut warm, PAGE_SIZE as u64, &mut [0u8; 1]).unwrap();
        let reader = {
            let (cache, file) = (cache.clone(), file.clone());
            spawn(move || {
                let mut f = OpenFile::new(file);
                let mut b = [0u8; 4];
                let n = cache.read(&mut f, PAGE_SIZE as u64, &mut b).unwrap();
                assert!(n == 0 || (n == 4 && b == [5; 4]), "read {n} bytes {b:?}");
            })
        };
        let evictor = {
            let (cache, file) = (cache.clone(), file.clone());
            spawn(move || match cache.evict(&file, 1, 9) {
                Ok(()) | Err(CacheError::NotCached { page: 1 }) => {}
                Err(e) => panic!("eviction: {e}"),
            })
        };
        cache.truncate(&file, PAGE_SIZE as u64).unwrap();
        reader.join().unwrap();
        evictor.join().unwrap();
        file.check().unwrap();
        assert_eq!(file.size(), PAGE_SIZE as u64);
        assert!(file.page(1).is_none());
        cache.release(&file).unwrap();
        assert_eq!(frames.allocated_blocks(), 0);
    });
}

/// Two writers of two files (throttled past a limit of one page), the
/// flusher and a truncation at once: afterwards the dirty total is the
/// files' sum, every file with dirty pages is on the dirty list, and a
/// final writeback leaves the backings holding what was written.
#[test]
fn writers_flusher_and_truncation_keep_the_counts() {
    model(|| {
        let config = CacheConfig { dirty_background: 0, dirty_limit: 1, readahead_max: 0 };
        let (cache, frames) = cache(config);
        let (da, db) = (Arc::new(MemFile::new(0)), Arc::new(MemFile::new(0)));
        let (fa, fb) = (cache.open(da.clone()), cache.open(db.clone()));
        let writer = |file: Arc<mm_pagecache::CachedFile>, byte: u8| {
            let cache = cache.clone();
            spawn(move || {
                let mut f = OpenFile::new(file);
                // Twice: the page may be written back between the two.
                cache.write(&mut f, 0, &[byte; 4]).unwrap();
                cache.write(&mut f, 4, &[byte; 4]).unwrap();
            })
        };
        let (wa, wb) = (writer(fa.clone(), 1), writer(fb.clone(), 2));
        let flusher = {
            let cache = cache.clone();
            spawn(move || {
                cache.writeback(u64::MAX);
            })
        };
        cache.truncate(&fb, 4).unwrap();
        for t in [wa, wb, flusher] {
            t.join().unwrap();
        }
        assert_eq!(cache.dirty_pages(), fa.dirty_pages() + fb.dirty_pages());
        fa.check().unwrap();
        fb.check().unwrap();
        cache.writeback(u64::MAX);
        assert_eq!(cache.dirty_pages(), 0);
        assert_eq!(da.contents(), vec![1; 8]);
        // The truncation came before or after the write: 4 or 8 bytes.
        let b = db.contents();
        assert!(b == vec![2; 8] || b == vec![2; 4], "{b:?}");
        for f in [&fa, &fb] {
            cache.release(f).unwrap();
        }
        assert_eq!(frames.allocated_blocks(), 0);
    });
}

/// One address space: its lock (held by a fault while it calls the cache
/// and maps the page) and the frame it maps (0: none; a frame number + 1).
struct Space {
    lock: Mutex<()>,
    mapped: AtomicU64,
}

/// The cache's hook over the one space, taking its lock with a try as the
/// kernel's reverse-map hook does.
struct SpaceHook(Arc<Space>);

impl FileMappings for SpaceHook {
    fn unmap(&self, _: FileId, _: u64, frame: FrameNumber) -> bool {
        let Some(_g) = self.0.lock.try_lock() else { return false };
        let _ = self.0.mapped.compare_exchange(frame.as_u64() + 1, 0, Ordering::SeqCst, Ordering::SeqCst);
        true
    }
    fn mkclean(&self, _: FileId, _: u64, _: FrameNumber) -> bool {
        self.0.lock.try_lock().is_some()
    }
    fn removed(&self, frame: FrameNumber) {
        assert_ne!(self.0.mapped.load(Ordering::SeqCst), frame.as_u64() + 1, "a mapped frame was freed");
    }
}

/// A fault of page 1 that maps it, and truncation to one page, at once:
/// the truncation either unmaps the page before dropping it, or finds the
/// space busy and changes nothing; the fault either maps the page or, once
/// the truncation has begun, gets `BeyondEnd`. No frame is freed while
/// mapped, and the space never maps a page the file no longer caches.
#[test]
fn a_mapping_fault_and_truncation() {
    model(|| {
        let space = Arc::new(Space { lock: Mutex::new(()), mapped: AtomicU64::new(0) });
        let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), 16 * PAGE_SIZE as u64);
        let frames = Arc::new(RefFrameProvider::new(&mem));
        let config = CacheConfig { readahead_max: 0, ..CacheConfig::default() };
        // SAFETY: the model only maps pages, it never stores to them.
        let cache = unsafe { PageCache::new(frames.clone(), mem, config, Box::new(SpaceHook(space.clone()))) };
        let cache = Arc::new(cache.unwrap());
        let file = cache.open(Arc::new(MemFile::with_contents(vec![5; 2 * PAGE_SIZE])));
        let fault = {
            let (cache, file, space) = (cache.clone(), file.clone(), space.clone());
            spawn(move || {
                let _g = space.lock.lock();
                match cache.fault(&file, 1) {
                    Ok(f) => space.mapped.store(f.as_u64() + 1, Ordering::SeqCst),
                    Err(CacheError::BeyondEnd { page: 1 }) => {}
                    Err(e) => panic!("fault: {e}"),
                }
            })
        };
        let r = cache.truncate(&file, PAGE_SIZE as u64);
        fault.join().unwrap();
        let mapped = space.mapped.load(Ordering::SeqCst);
        match r {
            Ok(()) => {
                assert_eq!(file.size(), PAGE_SIZE as u64);
                assert!(file.page(1).is_none());
                assert_eq!(mapped, 0, "the space maps a truncated page");
            }
            Err(CacheError::Mapped { page: 1 }) => {
                assert_eq!(file.size(), 2 * PAGE_SIZE as u64, "a refused truncation changes nothing");
                assert_eq!(file.page(1).map(|f| f.as_u64() + 1), Some(mapped));
            }
            Err(e) => panic!("truncate: {e}"),
        }
        file.check().unwrap();
        space.mapped.store(0, Ordering::SeqCst);
        cache.release(&file).unwrap();
        assert_eq!(frames.allocated_blocks(), 0);
    });
}
