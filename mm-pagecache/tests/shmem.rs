//! shmem files: pages only in memory and in swap, the slot in the index
//! where the page was, back on the next touch; never dirty, never dropped.

use std::sync::Arc;

use mm_pagecache::{CacheConfig, CacheError, OpenFile, PageCache, Tag};
use mm_types::testkit::{MemSwap, RefFrameProvider, SimPhysMemory};
use mm_types::{NoMappings, PageSwapError, PhysAddr, PAGE_SIZE};

const PS: u64 = PAGE_SIZE as u64;

type Cache = PageCache<Arc<RefFrameProvider>, SimPhysMemory>;

fn cache(slots: u64) -> (Cache, Arc<RefFrameProvider>, Arc<MemSwap>) {
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), 32 * PS);
    let frames = Arc::new(RefFrameProvider::new(&mem));
    let swap = Arc::new(MemSwap::new(&mem, slots));
    // SAFETY: nothing maps the cache's pages.
    let cache = unsafe { PageCache::new(frames.clone(), mem, CacheConfig::default(), Box::new(NoMappings)) }.unwrap();
    (cache.with_swap(Box::new(Shared(swap.clone()))), frames, swap)
}

/// The cache's end of a swap the test watches.
struct Shared(Arc<MemSwap>);

// SAFETY: forwards to `MemSwap`, which keeps the contract.
unsafe impl mm_types::PageSwap for Shared {
    unsafe fn swap_out(&self, frame: PhysAddr) -> Result<mm_types::SwapSlot, PageSwapError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.0.swap_out(frame) }
    }
    unsafe fn swap_in(&self, slot: mm_types::SwapSlot, frame: PhysAddr) -> Result<(), PageSwapError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.0.swap_in(slot, frame) }
    }
    fn free(&self, slot: mm_types::SwapSlot) {
        self.0.free(slot)
    }
}

#[test]
fn pages_go_to_swap_and_come_back_on_the_next_touch() {
    let (cache, frames, swap) = cache(8);
    let file = cache.open_shmem(4 * PS);
    let mut f = OpenFile::new(file.clone());
    // Holes read as zeros without taking a frame.
    let mut b = [1u8; 16];
    assert_eq!(cache.read(&mut f, PS, &mut b).unwrap(), 16);
    assert_eq!((b, file.cached_pages()), ([0; 16], 0));
    cache.write(&mut f, PS + 8, b"shared").unwrap();
    cache.write(&mut f, 3 * PS, &[9; PAGE_SIZE]).unwrap();
    // Never dirty: the page is the only copy, nothing to write back.
    assert_eq!((file.dirty_pages(), cache.dirty_pages()), (0, 0));
    assert!(!file.has_tag(1, Tag::Dirty));
    cache.fsync(&mut f).unwrap();
    // Reclaim: to swap, the slot in the index.
    let slot = cache.swap_out(&file, 1).unwrap();
    assert_eq!(file.swap_slot(1), Some(slot));
    assert!(file.page(1).is_none());
    assert_eq!((swap.used(), cache.shmem_pages(&file)), (1, (1, 1)));
    assert_eq!(&swap.page(slot).unwrap()[8..14], b"shared");
    // Dropping or evicting it instead is refused: it has nowhere else.
    assert_eq!(cache.evict(&file, 3, 0), Err(CacheError::NeedsSwap { page: 3 }));
    assert_eq!(cache.drop_clean(&file), 0);
    // The next read brings it back and frees the slot.
    let mut b = [0u8; 6];
    cache.read(&mut f, PS + 8, &mut b).unwrap();
    assert_eq!(&b, b"shared");
    assert_eq!((swap.used(), file.swap_slot(1)), (0, None));
    // A write to a swapped page brings it back too, keeping the rest.
    cache.swap_out(&file, 1).unwrap();
    cache.write(&mut f, PS, b"XY").unwrap();
    let mut b = [0u8; 14];
    cache.read(&mut f, PS, &mut b).unwrap();
    assert_eq!(&b, b"XY\0\0\0\0\0\0shared");
    let s = cache.stats();
    assert_eq!((s.swap_outs, s.swap_ins), (2, 2));
    file.check().unwrap();
    // Release: frames and slots all back.
    cache.swap_out(&file, 3).unwrap();
    cache.release(&file).unwrap();
    assert_eq!((frames.allocated_blocks(), swap.used()), (0, 0));
}

#[test]
fn truncation_frees_slots_and_zeroes_a_swapped_partial_page() {
    let (cache, frames, swap) = cache(8);
    let file = cache.open_shmem(0);
    let mut f = OpenFile::new(file.clone());
    cache.write(&mut f, 0, &[7; 3 * PAGE_SIZE]).unwrap();
    for p in 0..3 {
        cache.swap_out(&file, p).unwrap();
    }
    assert_eq!(swap.used(), 3);
    // To 1.5 pages: page 2's slot freed, page 1 back from swap and its tail
    // zeroed, so growing again shows zeros there.
    cache.truncate(&file, PS + 100).unwrap();
    assert_eq!(swap.used(), 1, "page 0 still in swap");
    cache.truncate(&file, 3 * PS).unwrap();
    let mut b = vec![0u8; 2 * PAGE_SIZE];
    cache.read(&mut f, 0, &mut b).unwrap();
    assert!(b[..PAGE_SIZE + 100].iter().all(|&x| x == 7));
    assert!(b[PAGE_SIZE + 100..].iter().all(|&x| x == 0));
    file.check().unwrap();
    cache.release(&file).unwrap();
    assert_eq!((frames.allocated_blocks(), swap.used()), (0, 0));
}

#[test]
fn swap_failures_lose_nothing_and_say_so() {
    let (cache, frames, swap) = cache(1);
    let file = cache.open_shmem(0);
    let mut f = OpenFile::new(file.clone());
    cache.write(&mut f, 0, &[1; 2 * PAGE_SIZE]).unwrap();
    // A failing swap-out: the page stays.
    swap.fail_nth_swap_out(1);
    assert!(matches!(cache.swap_out(&file, 0), Err(CacheError::Swap(PageSwapError::Io(_)))));
    assert!(file.page(0).is_some());
    // Swap full: refused, the page stays.
    cache.swap_out(&file, 0).unwrap();
    assert_eq!(cache.swap_out(&file, 1), Err(CacheError::Swap(PageSwapError::Full)));
    assert!(file.page(1).is_some());
    // A failing swap-in: the read fails, the slot keeps the page.
    swap.fail_nth_swap_in(1);
    let mut b = [0u8; 4];
    assert!(matches!(cache.read(&mut f, 0, &mut b), Err(CacheError::Swap(PageSwapError::Io(_)))));
    assert!(file.swap_slot(0).is_some());
    assert_eq!(cache.read(&mut f, 0, &mut b).unwrap(), 4);
    assert_eq!(b, [1; 4]);
    // Not shmem, no swap, not cached.
    let plain = cache.open(mm_types::testkit::MemFile::new(PS));
    assert_eq!(cache.swap_out(&plain, 0), Err(CacheError::NotShmem));
    assert_eq!(cache.swap_out(&file, 5), Err(CacheError::NotCached { page: 5 }));
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), 8 * PS);
    let frames2 = RefFrameProvider::new(&mem);
    // SAFETY: nothing maps the cache's pages.
    let bare = unsafe { PageCache::new(&frames2, mem, CacheConfig::default(), Box::new(NoMappings)) }.unwrap();
    let s = bare.open_shmem(PS);
    assert_eq!(bare.swap_out(&s, 0), Err(CacheError::NoSwap));
    file.check().unwrap();
    cache.release(&file).unwrap();
    assert_eq!((frames.allocated_blocks(), swap.used()), (0, 0));
}
