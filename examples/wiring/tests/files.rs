//! Files mapped into address spaces through the page cache (mm-vma's pager
//! hook over mm-pagecache): private mappings copy on write and never
//! change the file, shared mappings of a shmem file share its pages across
//! fork, a page past the end of the file is a bus error, and every frame
//! comes back once the spaces and files are gone.

use std::sync::Arc;

use mm_pagecache::{CacheConfig, OpenFile, PageCache};
use mm_paging::X86_64;
use mm_types::testkit::{MemFile, RefFrameProvider, SimPhysMemory};
use mm_types::{NoMappings, Order, PhysAddr, Protection, PAGE_SIZE};
use mm_vma::{FaultError, HookError, Hooks, Layout, MapRequest, MmContext, Pager};
use mm_wiring::files::CachePager;

const PS: u64 = PAGE_SIZE as u64;
const RW: Protection = Protection::READ.union(Protection::WRITE);

type Frames = Arc<RefFrameProvider>;
type Cache = PageCache<Frames, SimPhysMemory>;

struct World {
    frames: Frames,
    cache: Arc<Cache>,
    pager: Arc<CachePager<Frames, SimPhysMemory>>,
    mm: Arc<MmContext<X86_64, SimPhysMemory, Frames>>,
}

fn world() -> World {
    let ram = SimPhysMemory::new(PhysAddr::new(0x10_0000).unwrap(), 256 * PS);
    let frames: Frames = Arc::new(RefFrameProvider::new(&ram).with_max_order(Order::ZERO));
    // SAFETY: the cache's pages are written through mappings only by these
    // tests' user accesses, which never overlap a cache call (one thread).
    let cache = unsafe { PageCache::new(frames.clone(), ram.clone(), CacheConfig::default(), Box::new(NoMappings)) };
    let cache = Arc::new(cache.unwrap());
    let pager = Arc::new(CachePager::new(cache.clone()));
    let hooks = Hooks { pager: Some(pager.clone() as Arc<dyn Pager>), ..Hooks::default() };
    let mm = MmContext::new(X86_64::FOUR_LEVEL, ram, frames.clone(), hooks).unwrap();
    World { frames, cache, pager, mm }
}

fn byte(i: u64) -> u8 {
    (i / 8 % 251) as u8
}

#[test]
fn a_private_mapping_reads_the_file_and_copies_on_write() {
    let w = world();
    let free = w.frames.free_frame_count();
    let disk = Arc::new(MemFile::with_contents((0..6 * PS).map(byte).collect()));
    let file = w.cache.open(disk.clone());
    w.pager.register(3, file.clone());
    let mut space = mm_vma::AddressSpace::new(&w.mm, Layout::X86_64).unwrap();
    // Eight pages of a six-page file.
    let base = space.mmap(MapRequest::object(8 * PS, RW, 3, 0)).unwrap();
    let mut b = [0u8; 16];
    for p in 0..6 {
        space.read_user(base + p * PS + 40, &mut b).unwrap();
        assert!(b.iter().enumerate().all(|(i, &x)| x == byte(p * PS + 40 + i as u64)), "page {p}");
    }
    assert!(disk.read_requests() < 6, "read ahead: {} requests", disk.read_requests());
    // Past the end of the file: a bus error.
    assert_eq!(space.read_user(base + 6 * PS, &mut b), Err(FaultError::Hook(HookError::BeyondEnd)));
    // A write copies the page: the file and its cached page stay as they were.
    space.write_user(base + 2 * PS, b"private").unwrap();
    space.read_user(base + 2 * PS, &mut b[..7]).unwrap();
    assert_eq!(&b[..7], b"private");
    let mut f = OpenFile::new(file.clone());
    w.cache.read(&mut f, 2 * PS, &mut b[..7]).unwrap();
    assert!(b[..7].iter().enumerate().all(|(i, &x)| x == byte(2 * PS + i as u64)));
    assert_eq!(file.dirty_pages(), 0);
    drop(space);
    w.cache.release(&file).unwrap();
    assert!(disk.contents().iter().enumerate().all(|(i, &x)| x == byte(i as u64)), "the file unchanged");
    assert_eq!(w.frames.free_frame_count(), free, "every frame back");
}

#[test]
fn a_shared_shmem_mapping_is_shared_across_fork_through_the_file() {
    let w = world();
    let free = w.frames.free_frame_count();
    let shm = w.cache.open_shmem(4 * PS);
    w.pager.register(9, shm.clone());
    let mut parent = mm_vma::AddressSpace::new(&w.mm, Layout::X86_64).unwrap();
    let base = parent.mmap(MapRequest::object(4 * PS, RW, 9, 0).shared()).unwrap();
    parent.write_user(base + PS, b"parent").unwrap();
    let mut child = parent.fork().unwrap();
    // The child writes a page the parent has not touched yet, and one it
    // has: both see each other's writes, and so does a read of the file.
    child.write_user(base + 3 * PS, b"child").unwrap();
    child.write_user(base + PS, b"CHILD!").unwrap();
    let mut b = [0u8; 6];
    parent.read_user(base + 3 * PS, &mut b[..5]).unwrap();
    assert_eq!(&b[..5], b"child");
    parent.read_user(base + PS, &mut b).unwrap();
    assert_eq!(&b, b"CHILD!");
    let mut f = OpenFile::new(shm.clone());
    w.cache.read(&mut f, PS, &mut b).unwrap();
    assert_eq!(&b, b"CHILD!");
    // One page per file page, whoever maps it.
    assert_eq!(w.cache.shmem_pages(&shm), (2, 0));
    drop(child);
    drop(parent);
    w.cache.release(&shm).unwrap();
    assert_eq!(w.frames.free_frame_count(), free, "every frame back");
}

/// A shared mapping of a file with a backing: stores mark the cached page
/// dirty through the pager's write-notify, fsync writes them back, and
/// after write-protection (the kernel's part of writeback) the next store
/// dirties the page again.
#[test]
fn stores_through_a_shared_file_mapping_reach_the_file() {
    let w = world();
    let disk = Arc::new(MemFile::with_contents(vec![0; 2 * PAGE_SIZE]));
    let file = w.cache.open(disk.clone());
    w.pager.register(4, file.clone());
    let mut space = mm_vma::AddressSpace::new(&w.mm, Layout::X86_64).unwrap();
    let base = space.mmap(MapRequest::object(2 * PS, RW, 4, 0).shared()).unwrap();
    let mut b = [0u8; 1];
    space.read_user(base + PS, &mut b).unwrap();
    assert_eq!(file.dirty_pages(), 0, "a read dirties nothing");
    space.write_user(base + PS + 5, b"mapped").unwrap();
    assert_eq!(file.dirty_pages(), 1);
    let mut f = OpenFile::new(file.clone());
    w.cache.fsync(&mut f).unwrap();
    assert_eq!(&disk.contents()[PAGE_SIZE + 5..PAGE_SIZE + 11], b"mapped");
    assert_eq!(file.dirty_pages(), 0);
    // Writeback's write-protection of the mapping: the next store is seen.
    assert!(space.write_protect_page(base + PS));
    space.write_user(base + PS + 5, b"again!").unwrap();
    assert_eq!(file.dirty_pages(), 1);
    w.cache.fsync(&mut f).unwrap();
    assert_eq!(&disk.contents()[PAGE_SIZE + 5..PAGE_SIZE + 11], b"again!");
    assert_eq!(w.mm.fault_stats().write_notify, 2);
    drop(space);
    w.cache.release(&file).unwrap();
}
