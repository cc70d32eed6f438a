//! The page cache over in-memory files: reads through readahead, writes and
//! writeback, errors kept for fsync, dirty limits, truncation, eviction and
//! every frame given back. Comments name MODEL.md invariants.

use std::sync::{Arc, Mutex};

use mm_pagecache::{BlockDevice, CacheConfig, CacheError, Entry, OpenFile, PageCache, Tag};
use mm_types::testkit::{MemFile, MemStore, RefFrameProvider, SimPhysMemory};
use mm_types::{FileErrorKind, FileId, FileMappings, FileOp, FrameError, FrameNumber, NoMappings, PhysAddr, PAGE_SIZE};

const PS: u64 = PAGE_SIZE as u64;

type Cache = PageCache<Arc<RefFrameProvider>, SimPhysMemory>;

/// A cache over `ram_pages` frames of simulated RAM, with the frame
/// provider shared so the test can count what is allocated.
fn cache_with(
    ram_pages: u64,
    config: CacheConfig,
    mappings: Box<dyn FileMappings + Send + Sync>,
) -> (Cache, Arc<RefFrameProvider>) {
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), ram_pages * PS);
    let frames = Arc::new(RefFrameProvider::new(&mem));
    // SAFETY: the tests map no pages: only the cache writes its frames.
    let cache = unsafe { PageCache::new(frames.clone(), mem, config, mappings) }.unwrap();
    (cache, frames)
}

fn cache(ram_pages: u64) -> (Cache, Arc<RefFrameProvider>) {
    cache_with(ram_pages, CacheConfig::default(), Box::new(NoMappings))
}

/// A file of `pages` pages, each 8-byte word `(page * 7 + word) % 251`
/// repeated in its 8 bytes: every page a window of one run of words, so
/// building it is a copy per page (cheap under miri, where a loop over the
/// words of a large buffer is not).
fn patterned(pages: u64) -> Arc<MemFile> {
    let run: Vec<u8> = (0..512 + 251).flat_map(|w| [(w % 251) as u8; 8]).collect();
    let mut bytes = Vec::with_capacity((pages * PS) as usize);
    for p in 0..pages {
        let at = (p * 7 % 251) as usize * 8;
        bytes.extend_from_slice(&run[at..at + PAGE_SIZE]);
    }
    Arc::new(MemFile::with_contents(bytes))
}

/// The byte at `offset` of a [`patterned`] file.
fn pattern_at(offset: u64) -> u8 {
    ((offset / PS * 7 + offset % PS / 8) % 251) as u8
}

fn read_all(cache: &Cache, f: &mut OpenFile, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = cache.read(f, out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn pages(small: u64, big: u64) -> u64 {
    if cfg!(miri) {
        small
    } else {
        big
    }
}

#[test]
fn a_sequential_reader_is_read_ahead_in_growing_windows() {
    let n = pages(36, 512);
    let (cache, frames) = cache(n + 16);
    let disk = patterned(n);
    let file = cache.open(disk.clone());
    let mut f = OpenFile::new(file.clone());
    let got = read_all(&cache, &mut f, PAGE_SIZE);
    assert!(got == disk.contents(), "every byte as on disk");
    let s = cache.stats();
    // MODEL C6: one miss (page 0), then every window started by a marker.
    assert_eq!(s.misses, 1, "{s:?}");
    assert_eq!(s.hits, n - 1);
    assert!(s.async_windows >= 2, "{s:?}");
    assert_eq!(disk.pages_read(), n, "every page read once");
    // Windows of 4, 8, 16, then 32 pages: far fewer requests than pages.
    assert_eq!(disk.read_requests(), 3 + (n - 28).div_ceil(32), "{s:?}");
    assert_eq!(file.cached_pages(), n);
    file.check().unwrap();
    cache.release(&file).unwrap();
    assert_eq!(frames.allocated_blocks(), 0, "every frame back");
}

/// The target: a sequential reader needs at least 8 times fewer
/// backing requests with readahead than without (the bench `read` times
/// both).
#[test]
fn readahead_needs_at_least_8x_fewer_requests() {
    let n = pages(40, 1024);
    let requests = |readahead_max| {
        let config = CacheConfig { readahead_max, ..CacheConfig::default() };
        let (cache, _) = cache_with(n + 8, config, Box::new(NoMappings));
        let disk = patterned(n);
        let mut f = OpenFile::new(cache.open(disk.clone()));
        assert!(read_all(&cache, &mut f, PAGE_SIZE) == disk.contents());
        disk.read_requests()
    };
    let (with, without) = (requests(32), requests(0));
    assert_eq!(without, n);
    assert!(with * 8 <= without, "{with} requests with readahead, {without} without");
}

#[test]
fn random_reads_are_not_read_ahead_and_readahead_can_be_off() {
    let (cache, _) = cache(32);
    let disk = patterned(24);
    let mut f = OpenFile::new(cache.open(disk.clone()));
    let mut b = [0u8; 8];
    for p in [17u64, 3, 22, 11, 6] {
        cache.read(&mut f, p * PS + 100, &mut b).unwrap();
        assert_eq!(b[0], pattern_at(p * PS + 100));
    }
    assert_eq!((disk.read_requests(), disk.pages_read()), (5, 5), "only the pages asked for");
    // Readahead off: a sequential reader pays a request a page.
    let config = CacheConfig { readahead_max: 0, ..CacheConfig::default() };
    let (cache, _) = cache_with(64, config, Box::new(NoMappings));
    let disk = patterned(16);
    let mut f = OpenFile::new(cache.open(disk.clone()));
    assert!(read_all(&cache, &mut f, PAGE_SIZE) == disk.contents());
    assert_eq!(disk.read_requests(), 16);
    // A read spanning pages asks for them in one request, with or
    // without readahead.
    let disk = patterned(16);
    let mut f = OpenFile::new(cache.open(disk.clone()));
    let mut big = vec![0u8; 6 * PAGE_SIZE];
    assert_eq!(cache.read(&mut f, 2 * PS, &mut big).unwrap(), big.len());
    assert_eq!((disk.read_requests(), disk.pages_read()), (1, 6));
}

#[test]
fn reads_stop_at_the_end_of_the_file() {
    let (cache, _) = cache(16);
    let disk = Arc::new(MemFile::with_contents(vec![9; 5000]));
    let mut f = OpenFile::new(cache.open(disk));
    let mut b = [0u8; 4000];
    assert_eq!(cache.read(&mut f, 3000, &mut b).unwrap(), 2000);
    assert!(b[..2000].iter().all(|&x| x == 9));
    assert_eq!(cache.read(&mut f, 5000, &mut b).unwrap(), 0);
    assert_eq!(cache.read(&mut f, u64::MAX - 1, &mut b).unwrap(), 0);
    // The file's second page was read whole: its tail past the end is zero
    // in the frame (MODEL C3), and nothing past page 1 is cached.
    f.file().check().unwrap();
    assert_eq!(f.file().cached_pages(), 2);
}

#[test]
fn writes_are_cached_dirty_and_reach_the_file_at_fsync() {
    let (cache, frames) = cache(64);
    let disk = patterned(4);
    let file = cache.open(disk.clone());
    let mut f = OpenFile::new(file.clone());
    let mut expect = disk.contents();
    // A partial page: the rest is read in first. A whole page: not read.
    assert_eq!(cache.write(&mut f, PS + 10, b"abc").unwrap(), 3);
    assert_eq!(disk.read_requests(), 1);
    cache.write(&mut f, 2 * PS, &[5; PAGE_SIZE]).unwrap();
    assert_eq!(disk.read_requests(), 1, "a page written whole is not read");
    expect[PAGE_SIZE + 10..PAGE_SIZE + 13].copy_from_slice(b"abc");
    expect[2 * PAGE_SIZE..3 * PAGE_SIZE].fill(5);
    // Past the end: the file grows, the gap reads as zeros.
    cache.write(&mut f, 6 * PS + 1, b"z").unwrap();
    expect.resize(6 * PAGE_SIZE + 2, 0);
    expect[6 * PAGE_SIZE + 1] = b'z';
    assert_eq!(file.size(), 6 * PS + 2);
    assert_eq!((file.dirty_pages(), cache.dirty_pages()), (3, 3));
    assert!(file.has_tag(1, Tag::Dirty) && !file.has_tag(0, Tag::Dirty));
    // Reads see the cache, not the disk.
    let mut back = vec![0u8; expect.len()];
    assert_eq!(cache.read(&mut f, 0, &mut back).unwrap(), expect.len());
    assert!(back == expect);
    assert!(disk.contents() != expect);
    file.check().unwrap();
    cache.fsync(&mut f).unwrap();
    assert!(disk.contents() == expect, "written back");
    assert_eq!((file.dirty_pages(), cache.dirty_pages()), (0, 0));
    // Pages 1 and 2 are consecutive: one request; page 6 another.
    assert_eq!((disk.write_requests(), disk.pages_written()), (2, 3));
    assert_eq!(disk.syncs(), 1);
    file.check().unwrap();
    cache.release(&file).unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
}

#[test]
fn a_failed_writeback_keeps_the_data_and_every_opener_hears_once() {
    let (cache, _) = cache(64);
    let disk = patterned(8);
    let file = cache.open(disk.clone());
    let mut a = OpenFile::new(file.clone());
    let mut b = OpenFile::new(file.clone());
    cache.write(&mut a, 0, &[1; 3 * PAGE_SIZE]).unwrap();
    disk.fail_nth_write(1);
    // MODEL C4, C7: the pages stay dirty and cached; the error is this fsync's.
    assert_eq!(cache.fsync(&mut a), Err(CacheError::Writeback(FileErrorKind::Io)));
    assert_eq!(file.dirty_pages(), 3);
    assert_eq!(file.last_error(), Some(FileErrorKind::Io));
    file.check().unwrap();
    // The other opener's fsync writes the pages, and hears of the failure
    // too, once.
    assert_eq!(cache.fsync(&mut b), Err(CacheError::Writeback(FileErrorKind::Io)));
    assert_eq!(file.dirty_pages(), 0);
    assert_eq!(cache.fsync(&mut b), Ok(()));
    assert_eq!(cache.fsync(&mut a), Ok(()), "a heard of it already");
    assert!(disk.contents()[..3 * PAGE_SIZE] == [1; 3 * PAGE_SIZE], "nothing lost");
    // A failure that lasts: every fsync says so, and the next opener's
    // fsync after it is fixed hears of the last failure.
    cache.write(&mut a, PS, b"y").unwrap();
    disk.fail_writes(true);
    assert_eq!(cache.fsync(&mut a), Err(CacheError::Writeback(FileErrorKind::Io)));
    assert_eq!(cache.fsync(&mut a), Err(CacheError::Writeback(FileErrorKind::Io)));
    disk.fail_writes(false);
    assert_eq!(cache.fsync(&mut b), Err(CacheError::Writeback(FileErrorKind::Io)));
    assert_eq!(cache.fsync(&mut a), Ok(()));
    assert_eq!(disk.contents()[PAGE_SIZE], b'y');
    // A background failure reaches both openers' next fsync, and a later
    // opener (nobody had seen it).
    cache.write(&mut a, 0, b"x").unwrap();
    disk.fail_nth_write(1);
    let r = cache.writeback(u64::MAX);
    assert_eq!((r.pages, r.failed), (0, 1));
    assert_eq!(r.error.map(|e| (e.op, e.page)), Some((FileOp::Write, Some(0))));
    let mut c = OpenFile::new(file.clone());
    assert_eq!(cache.fsync(&mut c), Err(CacheError::Writeback(FileErrorKind::Io)));
    assert_eq!(cache.fsync(&mut a), Err(CacheError::Writeback(FileErrorKind::Io)));
    assert_eq!(cache.fsync(&mut b), Err(CacheError::Writeback(FileErrorKind::Io)));
    assert_eq!(disk.contents()[0], b'x', "the retry wrote it");
    let s = cache.stats();
    assert_eq!(s.writeback_errors, 4, "{s:?}");
    // A failing sync is reported like a failing write.
    disk.fail_syncs(true);
    assert_eq!(cache.fsync(&mut a), Err(CacheError::Writeback(FileErrorKind::Io)));
}

#[test]
fn writers_past_the_dirty_limit_write_back_before_they_go_on() {
    let config = CacheConfig { dirty_background: 4, dirty_limit: 8, readahead_max: 32 };
    let (cache, _) = cache_with(64, config, Box::new(NoMappings));
    let disk = Arc::new(MemFile::new(0));
    let other = Arc::new(MemFile::new(0));
    let mut f = OpenFile::new(cache.open(disk.clone()));
    let mut g = OpenFile::new(cache.open(other.clone()));
    // Another file's dirty pages first, under the limit.
    cache.write(&mut g, 0, &[2; 6 * PAGE_SIZE]).unwrap();
    assert_eq!(cache.stats().throttled, 0);
    assert!(cache.needs_writeback());
    for p in 0..5 {
        cache.write(&mut f, p * PS, &[3; PAGE_SIZE]).unwrap();
        // MODEL C8: never above the limit after a write returns.
        assert!(cache.dirty_pages() <= config.dirty_limit, "page {p}: {}", cache.dirty_pages());
    }
    let s = cache.stats();
    assert!(s.throttled > 0, "{s:?}");
    assert!(disk.pages_written() > 0, "the writer wrote its own pages");
    // The flusher brings the rest down.
    let r = cache.writeback(u64::MAX);
    assert_eq!(r.failed, 0);
    assert_eq!(cache.dirty_pages(), 0);
    assert!(!cache.needs_writeback());
    assert!(disk.contents() == vec![3; 5 * PAGE_SIZE] && other.contents() == vec![2; 6 * PAGE_SIZE]);
    f.file().check().unwrap();
    g.file().check().unwrap();
}

/// What the hook heard a frame holds: file, page, shadow.
type Holds = std::collections::BTreeMap<FrameNumber, (FileId, u64, Option<u64>)>;

/// Records the hook's calls; `busy` pages are mapped where the hook
/// cannot reach them now.
#[derive(Default)]
struct Recorder {
    unmapped: Mutex<Vec<(FileId, u64)>>,
    cleaned: Mutex<Vec<(FileId, u64)>>,
    /// Frames the hook was told hold file pages: (file, page, shadow).
    holds: Mutex<Holds>,
    busy: Mutex<Vec<u64>>,
}

/// The hook the cache holds: the test keeps the other end.
struct Shared(Arc<Recorder>);

impl FileMappings for Shared {
    fn unmap(&self, file: FileId, page: u64, frame: FrameNumber) -> bool {
        assert_eq!(self.0.holds.lock().unwrap().get(&frame).map(|h| (h.0, h.1)), Some((file, page)));
        if self.0.busy.lock().unwrap().contains(&page) {
            return false;
        }
        self.0.unmapped.lock().unwrap().push((file, page));
        true
    }
    fn mkclean(&self, file: FileId, page: u64, frame: FrameNumber) -> bool {
        assert_eq!(self.0.holds.lock().unwrap().get(&frame).map(|h| (h.0, h.1)), Some((file, page)));
        self.0.cleaned.lock().unwrap().push((file, page));
        !self.0.busy.lock().unwrap().contains(&page)
    }
    fn added(&self, file: FileId, page: u64, frame: FrameNumber, shmem: bool, shadow: Option<u64>) {
        assert!(!shmem);
        let old = self.0.holds.lock().unwrap().insert(frame, (file, page, shadow));
        assert_eq!(old, None, "frame {frame:?} added twice");
    }
    fn removed(&self, frame: FrameNumber) {
        self.0.holds.lock().unwrap().remove(&frame);
    }
}

#[test]
fn truncation_unmaps_then_drops_and_zeroes_the_partial_page() {
    let rec = Arc::new(Recorder::default());
    let (cache, frames) = cache_with(64, CacheConfig::default(), Box::new(Shared(rec.clone())));
    let disk = patterned(8);
    let file = cache.open(disk.clone());
    let mut f = OpenFile::new(file.clone());
    read_all(&cache, &mut f, PAGE_SIZE);
    assert_eq!(rec.holds.lock().unwrap().len(), 8, "the hook knows every cached page's frame");
    cache.write(&mut f, 6 * PS, b"dirty").unwrap();
    assert_eq!((file.cached_pages(), file.dirty_pages()), (8, 1));
    // A page mapped where the hook cannot reach it now: the truncation is
    // refused and changes nothing.
    rec.busy.lock().unwrap().push(5);
    assert_eq!(cache.truncate(&file, 2 * PS + 100), Err(CacheError::Mapped { page: 5 }));
    assert_eq!((file.size(), file.cached_pages(), file.dirty_pages()), (8 * PS, 8, 1));
    rec.busy.lock().unwrap().clear();
    rec.unmapped.lock().unwrap().clear();
    // Down to 2.5 pages: pages 3.. unmapped first, then dropped, dirty or
    // not; page 2's tail zeroed.
    cache.truncate(&file, 2 * PS + 100).unwrap();
    let id = file.id();
    assert_eq!(rec.unmapped.lock().unwrap().as_slice(), &[(id, 3), (id, 4), (id, 5), (id, 6), (id, 7)]);
    assert_eq!((file.cached_pages(), file.dirty_pages(), cache.dirty_pages()), (3, 0, 0));
    assert_eq!(rec.holds.lock().unwrap().len(), 3, "the dropped frames were reported removed");
    assert_eq!(disk.contents().len(), 2 * PAGE_SIZE + 100);
    // Growing again: the old tail reads as zeros, from the cache.
    cache.truncate(&file, 4 * PS).unwrap();
    let mut b = vec![0u8; PAGE_SIZE];
    cache.read(&mut f, 2 * PS, &mut b).unwrap();
    assert_eq!(b[99], pattern_at(2 * PS + 99));
    assert!(b[100..].iter().all(|&x| x == 0), "the partial page's tail is zero");
    file.check().unwrap();
    // Writeback write-protects each page's mappings first.
    cache.write(&mut f, 0, b"w").unwrap();
    cache.fsync(&mut f).unwrap();
    assert_eq!(rec.cleaned.lock().unwrap().as_slice(), &[(file.id(), 0)]);
    cache.release(&file).unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
    assert!(rec.holds.lock().unwrap().is_empty(), "every frame reported removed");
}

#[test]
fn a_page_whose_mappings_cannot_be_write_protected_stays_dirty_after_writeback() {
    let rec = Arc::new(Recorder::default());
    let (cache, frames) = cache_with(64, CacheConfig::default(), Box::new(Shared(rec.clone())));
    let disk = patterned(4);
    let file = cache.open(disk.clone());
    let mut f = OpenFile::new(file.clone());
    cache.write(&mut f, PS, b"one").unwrap();
    cache.write(&mut f, 2 * PS, b"two").unwrap();
    rec.busy.lock().unwrap().push(2);
    // Both written (fsync makes what was written durable), but page 2 may
    // be stored to through a mapping the hook could not reach: it stays
    // dirty, to be written again.
    cache.fsync(&mut f).unwrap();
    assert_eq!(&disk.contents()[2 * PAGE_SIZE..2 * PAGE_SIZE + 3], b"two");
    assert_eq!((file.dirty_pages(), cache.dirty_pages()), (1, 1));
    assert!(file.has_tag(2, Tag::Dirty) && !file.has_tag(1, Tag::Dirty));
    assert_eq!(cache.stats().writeback_exposed, 1);
    // Once the mapping is reachable, the next writeback cleans it.
    rec.busy.lock().unwrap().clear();
    assert_eq!(cache.writeback(u64::MAX).pages, 1);
    assert_eq!(cache.dirty_pages(), 0);
    file.check().unwrap();
    cache.release(&file).unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
}

#[test]
fn a_page_read_again_after_eviction_reports_its_shadow() {
    let rec = Arc::new(Recorder::default());
    let (cache, _frames) = cache_with(64, CacheConfig::default(), Box::new(Shared(rec.clone())));
    let file = cache.open(patterned(4));
    let mut f = OpenFile::new(file.clone());
    read_all(&cache, &mut f, PAGE_SIZE);
    let old = file.page(1).unwrap();
    cache.evict(&file, 1, 77).unwrap();
    assert!(!rec.holds.lock().unwrap().contains_key(&old), "the evicted frame was reported removed");
    let mut b = [0u8; 8];
    cache.read(&mut f, PS, &mut b).unwrap();
    let new = file.page(1).unwrap();
    assert_eq!(rec.holds.lock().unwrap().get(&new), Some(&(file.id(), 1, Some(77))));
    assert_eq!(cache.stats().refaults, 1);
    cache.release(&file).unwrap();
}

#[test]
fn evicted_pages_leave_shadows_and_dirty_ones_are_refused() {
    let (cache, frames) = cache(64);
    let disk = patterned(8);
    let file = cache.open(disk.clone());
    let mut f = OpenFile::new(file.clone());
    let mut b = [0u8; 1];
    cache.read(&mut f, 0, &mut b).unwrap();
    cache.write(&mut f, PS, b"d").unwrap();
    assert_eq!(cache.evict(&file, 1, 77), Err(CacheError::Busy { page: 1, tag: Tag::Dirty }));
    assert_eq!(cache.evict(&file, 7, 77), Err(CacheError::NotCached { page: 7 }));
    cache.evict(&file, 0, 42).unwrap();
    assert_eq!(file.entry(0), Some(Entry::Shadow(42)));
    assert_eq!(cache.evict(&file, 0, 1), Err(CacheError::NotCached { page: 0 }), "a shadow is not a page");
    // Read again: a refault, the contents from the disk.
    let reads = disk.read_requests();
    cache.read(&mut f, 5, &mut b).unwrap();
    assert_eq!(b[0], pattern_at(5));
    assert_eq!(disk.read_requests(), reads + 1);
    assert_eq!(cache.stats().refaults, 1);
    // drop_clean keeps the dirty page.
    let dropped = cache.drop_clean(&file);
    assert!(dropped >= 1);
    assert_eq!((file.cached_pages(), file.dirty_pages()), (1, 1));
    file.check().unwrap();
    cache.release(&file).unwrap();
    assert_eq!(disk.contents()[PAGE_SIZE], b'd');
    assert_eq!(frames.allocated_blocks(), 0);
    assert_eq!(cache.stats().cached, 0);
}

#[test]
fn read_errors_reach_the_reader_only_for_pages_it_asked_for() {
    let (cache, frames) = cache(64);
    let disk = patterned(64);
    let file = cache.open(disk.clone());
    let mut f = OpenFile::new(file.clone());
    let mut b = [0u8; 1];
    // The first request (the page asked for, and its window) fails.
    disk.fail_nth_read(1);
    let err = cache.read(&mut f, 0, &mut b).unwrap_err();
    assert_eq!(err, CacheError::Io(mm_types::FileError::page(FileOp::Read, 0, FileErrorKind::Io)));
    assert_eq!(file.cached_pages(), 0);
    // Then it works; a failing readahead window (the second request, at
    // the marker) is not the reader's error: those pages are read later.
    cache.read(&mut f, 0, &mut b).unwrap();
    disk.fail_nth_read(1);
    for p in 1..16 {
        cache.read(&mut f, p * PS, &mut b).unwrap();
        assert_eq!(b[0], pattern_at(p * PS));
    }
    assert!(cache.stats().read_errors == 2);
    file.check().unwrap();
    // No frame for the page asked for: the provider's error, not I/O.
    frames.fail_nth_allocation(1);
    let err = cache.read(&mut f, 40 * PS, &mut b).unwrap_err();
    assert!(matches!(err, CacheError::Frames(FrameError::OutOfMemory { .. })), "{err:?}");
    frames.fail_nth_allocation(1);
    let err = cache.write(&mut f, 50 * PS, &[1; PAGE_SIZE]).unwrap_err();
    assert!(matches!(err, CacheError::Frames(_)), "{err:?}");
    assert_eq!(file.size(), 64 * PS, "the failed write did not grow the file");
    file.check().unwrap();
}

#[test]
fn refused_operations_say_why_and_change_nothing() {
    let (cache, _) = cache(16);
    let disk = patterned(2);
    disk.set_read_only(true);
    let file = cache.open(disk.clone());
    let mut f = OpenFile::new(file.clone());
    assert_eq!(cache.write(&mut f, 0, b"x"), Err(CacheError::ReadOnly));
    assert_eq!(cache.truncate(&file, 0), Err(CacheError::ReadOnly));
    let mut b = [0u8; 1];
    cache.read(&mut f, 0, &mut b).unwrap();
    assert_eq!(cache.mark_dirty(&file, 0), Err(CacheError::ReadOnly));
    assert_eq!(file.dirty_pages(), 0);
    // Writable: an offset past 2^64 bytes, a page not cached.
    let disk = patterned(2);
    let file = cache.open(disk);
    let mut f = OpenFile::new(file.clone());
    assert_eq!(cache.write(&mut f, u64::MAX - 1, b"abc"), Err(CacheError::TooLarge { offset: u64::MAX - 1, len: 3 }));
    assert_eq!(cache.mark_dirty(&file, 1), Err(CacheError::NotCached { page: 1 }));
    assert_eq!(cache.write(&mut f, 0, b""), Ok(0));
    assert_eq!(file.size(), 2 * PS);
    // Configurations that cannot work.
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), 16 * PS);
    let frames = RefFrameProvider::new(&mem);
    let bad = CacheConfig { dirty_background: 9, dirty_limit: 8, readahead_max: 0 };
    // SAFETY: no cache is made.
    let r = unsafe { PageCache::new(&frames, mem.clone(), bad, Box::new(NoMappings)) };
    assert!(matches!(r, Err(CacheError::Config(_))));
    let none = CacheConfig { dirty_background: 0, dirty_limit: 0, readahead_max: 0 };
    // SAFETY: no cache is made.
    let r = unsafe { PageCache::new(&frames, mem, none, Box::new(NoMappings)) };
    assert!(matches!(r, Err(CacheError::Config(_))));
}

#[test]
fn a_block_device_is_cached_like_a_file() {
    let (cache, _) = cache(32);
    let store = Arc::new(MemStore::new(16));
    let file = cache.open(BlockDevice::new(store.clone()));
    let mut f = OpenFile::new(file.clone());
    assert_eq!(file.size(), 16 * PS);
    cache.write(&mut f, 3 * PS + 8, &0xdead_beef_u64.to_le_bytes()).unwrap();
    cache.fsync(&mut f).unwrap();
    assert_eq!(store.peek_word(3, 8), 0xdead_beef);
    assert_eq!(store.flushes(), 1);
    // Its size is fixed.
    assert!(matches!(cache.truncate(&file, PS), Err(CacheError::Io(e)) if e.kind == FileErrorKind::BeyondEnd));
    assert!(matches!(cache.write(&mut f, 16 * PS, b"x"), Err(CacheError::Io(_))));
    assert_eq!(file.size(), 16 * PS);
    // A read-only device.
    let ro = cache.open(BlockDevice::read_only(Arc::new(MemStore::new(4))));
    let mut r = OpenFile::new(ro);
    assert_eq!(cache.write(&mut r, 0, b"x"), Err(CacheError::ReadOnly));
}

/// `mark_dirty` stands in for a mapper's store through a shared mapping.
#[test]
fn pages_dirtied_through_mappings_are_written_back() {
    let (cache, _) = cache(16);
    let disk = patterned(4);
    let file = cache.open(disk.clone());
    let mut f = OpenFile::new(file.clone());
    let mut b = [0u8; 1];
    cache.read(&mut f, 0, &mut b).unwrap();
    cache.mark_dirty(&file, 2).unwrap();
    cache.mark_dirty(&file, 2).unwrap();
    assert_eq!(file.dirty_pages(), 1, "counted once");
    cache.fsync(&mut f).unwrap();
    assert_eq!((disk.write_requests(), disk.pages_written()), (1, 1));
    file.check().unwrap();
}

/// Faults through a mapping: pages read through the file's own readahead,
/// a bus error past the end, the cached neighbours for fault-around.
#[test]
fn faults_read_ahead_and_stop_at_the_end() {
    let n = pages(24, 64);
    let (cache, frames) = cache(n + 8);
    let disk = patterned(n);
    let file = cache.open(disk.clone());
    let mut page = [0u8; PAGE_SIZE];
    for p in 0..n {
        let f = cache.fault(&file, p).unwrap();
        // SAFETY: the cache's page; no cache call runs meanwhile.
        unsafe { mm_types::PhysMemory::read_bytes(cache.mem(), f.start_address(), &mut page) }.unwrap();
        assert!(page[..] == disk.contents()[(p * PS) as usize..((p + 1) * PS) as usize], "page {p}");
    }
    assert!(disk.read_requests() * 4 <= n, "{} requests for {n} pages", disk.read_requests());
    assert_eq!(cache.fault(&file, n), Err(CacheError::BeyondEnd { page: n }));
    // Fault-around: the cached neighbours in page 5's 16-page block.
    cache.drop_clean(&file);
    for p in [1, 5, 6, 15, 16] {
        cache.fault(&file, p).unwrap();
    }
    let mut around = Vec::new();
    cache.cached_around(&file, 5, |p, _| around.push(p));
    // Readahead read more than asked: every cached page of 0..16 but 5.
    let want: Vec<u64> = (0..16).filter(|&p| p != 5 && file.page(p).is_some()).collect();
    assert_eq!(around, want);
    assert!(around.contains(&1) && around.contains(&6) && around.contains(&15) && !around.contains(&16));
    file.check().unwrap();
    cache.release(&file).unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
}

/// Reclaim of a file page whatever its state: clean dropped, dirty written
/// back first, a failed write keeping it (MODEL C4, C10).
#[test]
fn reclaim_writes_dirty_pages_back_before_dropping_them() {
    use mm_pagecache::Reclaimed;
    let (cache, frames) = cache(16);
    let disk = patterned(4);
    let file = cache.open(disk.clone());
    let mut f = OpenFile::new(file.clone());
    let mut b = [0u8; 1];
    cache.read(&mut f, 0, &mut b).unwrap();
    cache.write(&mut f, PS, b"dirty").unwrap();
    cache.write(&mut f, 2 * PS, b"fails").unwrap();
    assert_eq!(cache.reclaim(&file, 0, 5), Ok(Reclaimed::Dropped));
    assert_eq!(file.entry(0), Some(Entry::Shadow(5)));
    assert_eq!(cache.reclaim(&file, 1, 6), Ok(Reclaimed::WrittenBack));
    assert_eq!(&disk.contents()[PAGE_SIZE..PAGE_SIZE + 5], b"dirty");
    assert_eq!((disk.write_requests(), disk.pages_written()), (1, 1), "that page alone");
    disk.fail_nth_write(1);
    assert_eq!(cache.reclaim(&file, 2, 7), Err(CacheError::Writeback(FileErrorKind::Io)));
    assert!(file.page(2).is_some() && file.has_tag(2, Tag::Dirty), "kept, dirty");
    assert_eq!(cache.fsync(&mut f), Err(CacheError::Writeback(FileErrorKind::Io)), "and reported");
    assert_eq!(&disk.contents()[2 * PAGE_SIZE..2 * PAGE_SIZE + 5], b"fails");
    assert_eq!(cache.reclaim(&file, 10, 8), Err(CacheError::NotCached { page: 10 }));
    file.check().unwrap();
    cache.release(&file).unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
}

#[test]
fn dropping_and_releasing_unmap_first_and_keep_what_cannot_be_unmapped() {
    let rec = Arc::new(Recorder::default());
    let (cache, frames) = cache_with(64, CacheConfig::default(), Box::new(Shared(rec.clone())));
    let file = cache.open(patterned(4));
    let mut f = OpenFile::new(file.clone());
    read_all(&cache, &mut f, PAGE_SIZE);
    cache.write(&mut f, 3 * PS, b"dirty").unwrap();
    // Page 1 is mapped where the hook cannot reach it now: it stays, as
    // does the dirty page 3; pages 0 and 2 were unmapped, then dropped.
    rec.busy.lock().unwrap().push(1);
    assert_eq!(cache.drop_clean(&file), 2);
    let id = file.id();
    assert_eq!(rec.unmapped.lock().unwrap().as_slice(), &[(id, 0), (id, 2)]);
    assert_eq!((file.page(0), file.page(1).is_some(), file.page(3).is_some()), (None, true, true));
    // Releasing unmaps every page first; it refuses while one is busy,
    // and nothing is written or dropped.
    assert_eq!(cache.release(&file), Err(CacheError::Mapped { page: 1 }));
    assert_eq!((file.cached_pages(), file.dirty_pages()), (2, 1));
    rec.busy.lock().unwrap().clear();
    cache.release(&file).unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
    assert!(rec.holds.lock().unwrap().is_empty());
}
