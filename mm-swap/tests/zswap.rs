//! The compressed tier under a `Swap`: a page mix swapped out and in through
//! a small pool (write-back to the disk below), slots freed dropping their
//! pooled pages, corruption below after write-back caught by the checksum,
//! and a failing disk never losing a page.
#![cfg(feature = "zswap")]

use std::sync::Arc;

use mm_swap::zswap::{Compressed, ZswapConfig};
use mm_swap::{Swap, SwapConfig, SwapError};
use mm_types::testkit::{MemStore, PageSample, RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, FrameProvider, PhysAddr, PhysMemory, SwapSlot, SLOT_SIZE};

struct Env {
    mem: SimPhysMemory,
    frames: RefFrameProvider,
    swap: Swap,
    z: Arc<Compressed<Arc<MemStore>>>,
}

fn env(slots: u64, pool_limit: usize) -> Env {
    let mem = SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), 1 << 20);
    let frames = RefFrameProvider::new(&mem);
    let disk = Arc::new(MemStore::new(slots));
    let z = Arc::new(Compressed::new(disk, ZswapConfig { pool_limit, ..ZswapConfig::default() }));
    let swap = Swap::new(SwapConfig { cpus: 1, readahead: 0 });
    swap.add_area(Box::new(z.clone()), 0).unwrap();
    Env { mem, frames, swap, z }
}

fn kind(i: u64) -> PageSample {
    PageSample::ALL[i as usize % 3]
}

impl Env {
    fn out(&self, i: u64) -> Result<SwapSlot, SwapError> {
        let f = self.frames.allocate_frame(AllocFlags::empty()).unwrap();
        // SAFETY: the frame was just allocated: nobody else uses it.
        unsafe { self.mem.write_bytes(f, &kind(i).page(i)) }.unwrap();
        // SAFETY: the test owns the frame and does not write it meanwhile.
        let r = unsafe { self.swap.swap_out(0, f, 1, &self.mem) };
        self.release(f);
        r
    }

    fn release(&self, f: PhysAddr) {
        self.frames.free_frame(f).unwrap();
    }

    /// Swaps `slot` in, checks it holds page `i`, drops the slot.
    fn back(&self, slot: SwapSlot, i: u64) -> Result<(), SwapError> {
        let f = self.swap.swap_in(slot, &self.frames, &self.mem)?.frame;
        let mut b = [0u8; SLOT_SIZE];
        // SAFETY: the frame is in the swap cache; nobody writes it.
        unsafe { self.mem.read_bytes(f, &mut b) }.unwrap();
        assert!(b == kind(i).page(i), "page {i} came back wrong");
        assert_eq!(self.swap.free(slot).unwrap(), Some(f));
        self.release(f);
        Ok(())
    }
}

#[test]
fn mix_through_a_small_pool() {
    // A pool of 8 KiB holds a few text pages; zero pages cost nothing.
    // (LZ4 interpreted by miri is slow: fewer pages there.)
    let n = if cfg!(miri) { 15 } else { 60 };
    let e = env(256, 8 << 10);
    let slots: Vec<SwapSlot> = (0..n).map(|i| e.out(i).unwrap()).collect();
    let s = e.z.stats();
    assert_eq!(s.incompressible, n / 3, "every random page went to disk");
    assert!(s.written_back > 0, "the pool overflowed and wrote back");
    assert!(s.pool_bytes <= 8 << 10);
    assert_eq!(s.same_filled, n / 3, "zero pages stay pooled: they cost nothing");
    assert_eq!(e.z.below().writes(), s.incompressible + s.written_back);
    e.z.check().unwrap();
    for (i, &slot) in slots.iter().enumerate() {
        e.back(slot, i as u64).unwrap();
    }
    assert!(e.z.stats().loads > n / 3, "pooled pages read from memory");
    // Every slot freed: the pool is empty.
    assert_eq!((e.z.stats().pages, e.z.stats().pool_bytes), (0, 0));
    assert_eq!(e.swap.used_slots(), 0);
    e.swap.check().unwrap();
}

#[test]
fn corruption_below_is_caught_after_write_back() {
    let e = env(16, 8 << 10);
    let text = e.out(1).unwrap();
    assert!(e.z.is_pooled(text.offset()));
    assert_eq!(e.z.write_back(1), 1);
    e.z.below().corrupt_slot(text.offset(), 99);
    assert_eq!(e.back(text, 1), Err(SwapError::Corrupt(text)));
    assert_eq!(e.swap.count(text).unwrap(), 1, "the slot keeps its user");
    assert_eq!(e.swap.free(text).unwrap(), None);
    e.swap.check().unwrap();
}

#[test]
fn failing_disk_loses_nothing() {
    let e = env(16, 4 << 10);
    e.z.below().fail_writes(true);
    // Zero and text pages fit the pool; a random page must go to the disk
    // and fails, as the caller must hear (it keeps the page).
    let zero = e.out(0).unwrap();
    let text = e.out(1).unwrap();
    assert!(matches!(e.out(2), Err(SwapError::Store(_))));
    // More text than the pool holds: write-back fails, so the new page is
    // refused too and the pooled one stays.
    let mut refused = 0;
    let mut kept = vec![(zero, 0), (text, 1)];
    for i in [4, 7, 10, 13] {
        match e.out(i) {
            Ok(s) => kept.push((s, i)),
            Err(SwapError::Store(_)) => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0 && e.z.stats().writeback_errors > 0);
    e.z.below().fail_writes(false);
    for (slot, i) in kept {
        e.back(slot, i).unwrap();
    }
    assert_eq!(e.swap.used_slots(), 0);
    e.z.check().unwrap();
    e.swap.check().unwrap();
}
