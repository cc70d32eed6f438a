//! The page cache inside the machine: file pages on reclaim's file list
//! (dropped clean with a shadow, written back dirty, read back as
//! refaults), shmem pages on the anonymous list (sent to swap), writeback
//! write-protecting every mapping through the reverse map so later stores
//! are seen, and truncation unmapping what it drops. Every byte is checked
//! against what was written.

use std::sync::Arc;

use mm_pagecache::{CacheError, OpenFile};
use mm_types::testkit::MemFile;
use mm_types::{Protection, VirtAddr, PAGE_SIZE};
use mm_vma::{FaultError, HookError, MapRequest, SpaceId};
use mm_wiring::sim::{Sim, SimConfig};
use mm_wiring::TaskError;

const PS: u64 = PAGE_SIZE as u64;
const RW: Protection = Protection::READ.union(Protection::WRITE);

fn sim(ram_pages: u64, swap_slots: u64) -> Sim {
    Sim::new(SimConfig { ram: ram_pages * PS, swap_slots, second_area: 0, zswap: None })
}

/// Byte `i` of file `seed`'s pattern: a word per 8 bytes, so a page is one
/// copy of a run.
fn byte(seed: u64, i: u64) -> u8 {
    ((i / 8 + seed * 31) % 251) as u8
}

fn pattern(seed: u64, pages: u64) -> Vec<u8> {
    (0..pages * PS).map(|i| byte(seed, i)).collect()
}

fn mmap(s: &Sim, task: SpaceId, req: MapRequest) -> VirtAddr {
    s.machine.tasks.get(task).unwrap().lock().mmap(req).unwrap()
}

fn read(s: &Sim, task: SpaceId, va: VirtAddr, buf: &mut [u8]) -> Result<(), TaskError> {
    s.machine.with_task(task, |sp| sp.read_user(va, buf))
}

fn write(s: &Sim, task: SpaceId, va: VirtAddr, data: &[u8]) -> Result<(), TaskError> {
    s.machine.with_task(task, |sp| sp.write_user(va, data))
}

/// The first 16 bytes of every page, checked against `want`.
fn check_pages(s: &Sim, task: SpaceId, base: VirtAddr, pages: u64, want: impl Fn(u64) -> u8) {
    let mut b = [0u8; 16];
    for p in 0..pages {
        read(s, task, base + p * PS, &mut b).unwrap();
        assert!(b.iter().enumerate().all(|(i, &x)| x == want(p * PS + i as u64)), "page {p}: {b:?}");
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "minutes under miri: reclaim under pressure runs only safe code here; the unsafe parts (the cache's construction, ShmemSwap) run under miri in the small tests"
)]
fn a_file_bigger_than_memory_is_read_through_reclaim_of_its_clean_pages() {
    let s = sim(192, 0);
    let pages = 320;
    let disk = Arc::new(MemFile::with_contents(pattern(1, pages)));
    let file = s.machine.cache.open(disk.clone());
    s.machine.pager.register(1, file.clone());
    let t = s.spawn(1)[0];
    let base = mmap(&s, t, MapRequest::object(pages * PS, Protection::READ, 1, 0));
    // Twice over: the second pass reads back pages the first one's
    // reclaim dropped.
    for _ in 0..2 {
        check_pages(&s, t, base, pages, |i| byte(1, i));
    }
    let f = s.figures();
    assert!(f.evicted_file > 0 && f.file_dropped == f.evicted_file, "{f:?}");
    assert_eq!((f.file_written, f.shmem_swapped, f.swapped_out), (0, 0, 0), "clean pages are only dropped");
    assert!(f.file_refaults > 0 && f.cache.refaults > 0, "pages read again after eviction: {f:?}");
    assert!(f.cache.windows > 0, "mapped reads go through readahead: {f:?}");
    assert!(disk.pages_read() >= pages + f.file_dropped.min(pages) / 2, "the data came back from the file");
    assert_eq!(disk.pages_written(), 0);
    file.check().unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "minutes under miri: reclaim under pressure runs only safe code here; the unsafe parts (the cache's construction, ShmemSwap) run under miri in the small tests"
)]
fn dirty_pages_of_a_shared_file_mapping_are_written_back_before_reclaim_drops_them() {
    let s = sim(192, 0);
    let pages = 300;
    let disk = Arc::new(MemFile::with_contents(vec![0; (pages * PS) as usize]));
    let file = s.machine.cache.open(disk.clone());
    s.machine.pager.register(2, file.clone());
    let t = s.spawn(1)[0];
    let base = mmap(&s, t, MapRequest::object(pages * PS, RW, 2, 0).shared());
    let data = pattern(2, 1);
    for p in 0..pages {
        write(&s, t, base + p * PS, &data[(p as usize % 256) * 8..][..16]).unwrap();
    }
    let f = s.figures();
    assert!(f.evicted_file > 0, "{f:?}");
    assert!(f.file_written + f.cache.written_back > 0, "dirty pages were written before they went");
    // Everything reads back, from memory or from the file.
    check_pages(&s, t, base, pages, |i| {
        if i % PS < 16 {
            data[((i / PS) as usize % 256) * 8 + (i % PS) as usize]
        } else {
            0
        }
    });
    let mut of = OpenFile::new(file.clone());
    s.machine.cache.fsync(&mut of).unwrap();
    let c = disk.contents();
    for p in 0..pages as usize {
        assert_eq!(&c[p * PAGE_SIZE..p * PAGE_SIZE + 16], &data[(p % 256) * 8..][..16], "page {p} on the file");
    }
    file.check().unwrap();
}

#[test]
fn writeback_write_protects_every_mapping_so_the_next_store_reaches_the_file() {
    let s = sim(256, 0);
    let disk = Arc::new(MemFile::with_contents(vec![0; 2 * PAGE_SIZE]));
    let file = s.machine.cache.open(disk.clone());
    s.machine.pager.register(3, file.clone());
    let t = s.spawn(1)[0];
    let a = mmap(&s, t, MapRequest::object(2 * PS, RW, 3, 0).shared());
    let u = s.machine.fork(t).unwrap();
    write(&s, t, a + 8, b"first").unwrap();
    write(&s, u, a + 16, b"child").unwrap();
    let mut of = OpenFile::new(file.clone());
    s.machine.cache.fsync(&mut of).unwrap();
    assert_eq!(&disk.contents()[8..21], b"first\0\0\0child");
    assert_eq!(file.dirty_pages(), 0);
    // The reverse map reached both tasks' mappings: each store after the
    // writeback faults, dirties the page and reaches the file.
    write(&s, t, a + 8, b"again").unwrap();
    assert_eq!(file.dirty_pages(), 1);
    s.machine.cache.fsync(&mut of).unwrap();
    write(&s, u, a + 16, b"CHILD").unwrap();
    s.machine.cache.fsync(&mut of).unwrap();
    assert_eq!(&disk.contents()[8..21], b"again\0\0\0CHILD");
    assert_eq!(s.machine.cache.stats().writeback_exposed, 0, "no space was busy");
    assert_eq!(s.figures().faults.write_notify, 4);
}

#[test]
fn truncation_unmaps_the_pages_it_drops_and_a_later_access_is_a_bus_error() {
    let s = sim(256, 0);
    let disk = Arc::new(MemFile::with_contents(pattern(4, 4)));
    let file = s.machine.cache.open(disk.clone());
    s.machine.pager.register(4, file.clone());
    let t = s.spawn(1)[0];
    let a = mmap(&s, t, MapRequest::object(4 * PS, RW, 4, 0).shared());
    write(&s, t, a + 3 * PS, b"gone").unwrap();
    let frame = file.page(3).unwrap().start_address();
    assert_eq!(s.machine.mm.mappings(frame).len(), 1);
    // While the task's space is in use (a fault of its own), the page
    // cannot be unmapped: the truncation is refused and changes nothing.
    let busy = s.machine.tasks.get(t).unwrap();
    let g = busy.lock();
    assert_eq!(s.machine.cache.truncate(&file, PS + 10), Err(CacheError::Mapped { page: 3 }));
    drop(g);
    assert_eq!(file.size(), 4 * PS);
    s.machine.cache.truncate(&file, PS + 10).unwrap();
    assert!(s.machine.mm.mappings(frame).is_empty(), "the dropped page is mapped nowhere");
    let mut b = [0u8; 4];
    assert_eq!(read(&s, t, a + 3 * PS, &mut b), Err(TaskError::Fault(FaultError::Hook(HookError::BeyondEnd))));
    // The partial page's tail is zero through the mapping too.
    read(&s, t, a + PS + 8, &mut b).unwrap();
    assert_eq!(&b[..2], &[byte(4, PS + 8), byte(4, PS + 9)]);
    assert_eq!(&b[2..], &[0, 0]);
    assert_eq!(disk.contents().len(), PAGE_SIZE + 10);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "minutes under miri: reclaim under pressure runs only safe code here; the unsafe parts (the cache's construction, ShmemSwap) run under miri in the small tests"
)]
fn shmem_shared_across_fork_goes_to_swap_under_pressure_and_comes_back() {
    let s = sim(192, 1024);
    let pages = 300;
    let shm = s.machine.cache.open_shmem(pages * PS);
    s.machine.pager.register(5, shm.clone());
    let t = s.spawn(1)[0];
    let a = mmap(&s, t, MapRequest::object(pages * PS, RW, 5, 0).shared());
    let u = s.machine.fork(t).unwrap();
    let data = pattern(5, 1);
    for p in 0..pages {
        // Each task writes half the pages; each reads all.
        let who = if p % 2 == 0 { t } else { u };
        write(&s, who, a + p * PS, &data[(p as usize % 256) * 8..][..16]).unwrap();
    }
    let want = |i: u64| if i % PS < 16 { data[((i / PS) as usize % 256) * 8 + (i % PS) as usize] } else { 0 };
    check_pages(&s, u, a, pages, want);
    check_pages(&s, t, a, pages, want);
    let f = s.figures();
    assert!(f.shmem_swapped > 0, "{f:?}");
    assert!(f.cache.swap_ins > 0, "{f:?}");
    assert_eq!(f.evicted_file, 0, "shmem pages are on the anonymous list");
    shm.check().unwrap();
}

#[test]
fn a_shmem_page_sent_to_swap_comes_back_through_a_checked_read() {
    let s = sim(128, 64);
    let t = s.spawn(1)[0];
    // MAP_SHARED | MAP_ANONYMOUS: a shmem file of its own.
    let (a, shm) = s.machine.map_shared_anon(&mut s.machine.tasks.get(t).unwrap().lock(), 2 * PS, RW).unwrap();
    assert!(shm.is_shmem() && shm.size() == 2 * PS);
    write(&s, t, a + PS + 8, b"in swap").unwrap();
    // The page leaves every mapping, then memory: its slot holds it.
    let frame = shm.page(1).unwrap();
    assert!(s.machine.tasks.get(t).unwrap().lock().zap_page(a + PS, frame.start_address()).is_some());
    let slot = s.machine.cache.swap_out(&shm, 1).unwrap();
    assert_eq!(shm.swap_slot(1), Some(slot));
    assert_eq!(s.machine.device.swap().used_slots(), 1);
    let mut b = [0u8; 7];
    read(&s, t, a + PS + 8, &mut b).unwrap();
    assert_eq!(&b, b"in swap");
    assert_eq!(s.machine.device.swap().used_slots(), 0, "back in memory: the slot is free");
    assert_eq!(s.machine.cache.stats().swap_ins, 1);
}

#[test]
fn msync_writes_back_the_shared_file_pages_of_its_range_and_reports_errors_once() {
    let s = sim(256, 0);
    let disk = Arc::new(MemFile::with_contents(vec![0; 4 * PAGE_SIZE]));
    let file = s.machine.cache.open(disk.clone());
    let object = s.machine.add_file(file.clone());
    let t = s.spawn(1)[0];
    // The file's pages 1-3 at `a`, then an anonymous page right after.
    let a = mmap(&s, t, MapRequest::object(3 * PS, RW, object, PS).shared());
    let anon = s
        .machine
        .tasks
        .get(t)
        .unwrap()
        .lock()
        .mmap(MapRequest::anonymous(PS, RW).at(mm_vma::Placement::FixedNoReplace(a + 3 * PS)))
        .unwrap();
    assert_eq!(anon, a + 3 * PS);
    for p in 0..3 {
        write(&s, t, a + p * PS, b"mapped").unwrap();
    }
    // The middle page only: file page 2.
    s.machine.msync(t, a + PS, PS).unwrap();
    assert_eq!(&disk.contents()[2 * PAGE_SIZE..2 * PAGE_SIZE + 6], b"mapped");
    assert_eq!(&disk.contents()[PAGE_SIZE..PAGE_SIZE + 6], &[0; 6], "page 1 is outside the range");
    assert_eq!(file.dirty_pages(), 2);
    // A failed write reaches the next msync, once.
    disk.fail_nth_write(1);
    assert_eq!(s.machine.msync(t, a, 4 * PS), Err(mm_wiring::MsyncError::Writeback(mm_types::FileErrorKind::Io)));
    s.machine.msync(t, a, 4 * PS).unwrap();
    assert_eq!(file.dirty_pages(), 0);
    for p in 1..4 {
        assert_eq!(&disk.contents()[p * PAGE_SIZE..p * PAGE_SIZE + 6], b"mapped", "file page {p}");
    }
    // Past what is mapped, or unaligned.
    assert_eq!(s.machine.msync(t, a, 5 * PS), Err(mm_wiring::MsyncError::NotMapped { addr: a + 4 * PS }));
    assert_eq!(s.machine.msync(t, a + 1, PS), Err(mm_wiring::MsyncError::BadRange));
}
