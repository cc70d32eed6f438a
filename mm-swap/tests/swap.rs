//! Swap areas: use counts through sharing, cluster allocation patterns,
//! priorities, the swap cache (one read for many faults), readahead,
//! fault injection (failed writes, failed reads, corrupted data), swapoff.

use std::sync::Arc;

use mm_swap::{Swap, SwapConfig, SwapError, SwappedIn, BAD_AFTER, CLUSTER, SLOT_BATCH};
use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, FrameProvider, PhysAddr, PhysMemory, SwapSlot};

struct Env {
    mem: SimPhysMemory,
    frames: RefFrameProvider,
}

fn env() -> Env {
    let mem = SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), 2 << 20);
    let frames = RefFrameProvider::new(&mem);
    Env { mem, frames }
}

impl Env {
    fn page(&self, fill: u8) -> PhysAddr {
        let f = self.frames.allocate_frame(AllocFlags::empty()).unwrap();
        let mut data = [fill; 4096];
        data[0] = fill.wrapping_mul(3);
        data[4095] = !fill;
        // SAFETY: the frame was just allocated: nobody else uses it.
        unsafe { self.mem.write_bytes(f, &data) }.unwrap();
        f
    }

    fn holds(&self, f: PhysAddr, fill: u8) -> bool {
        let mut b = [0u8; 4096];
        // SAFETY: test frames are only read here.
        unsafe { self.mem.read_bytes(f, &mut b) }.unwrap();
        b[0] == fill.wrapping_mul(3) && b[4095] == !fill && b[1..4095].iter().all(|&x| x == fill)
    }

    fn free(&self, f: PhysAddr) {
        self.frames.free_frame(f).unwrap();
    }

    /// Swaps out a fresh page of `fill` with `users` mappers; frees it.
    fn out(&self, swap: &Swap, cpu: usize, fill: u8, users: u16) -> SwapSlot {
        let f = self.page(fill);
        // SAFETY: the test owns the frame and does not write it meanwhile.
        let s = unsafe { swap.swap_out(cpu, f, users, &self.mem) }.unwrap();
        self.free(f);
        s
    }
}

fn swap_with(slots: u64, cpus: usize, readahead: u32) -> (Swap, Arc<MemStore>) {
    let store = Arc::new(MemStore::new(slots));
    let swap = Swap::new(SwapConfig { cpus, readahead });
    swap.add_area(Box::new(store.clone()), 0).unwrap();
    (swap, store)
}

#[test]
fn use_counts_follow_fork_like_sharing() {
    let e = env();
    let (swap, _) = swap_with(64, 1, 0);
    // A page mapped by two spaces is swapped out with two uses; a fork of
    // one of them adds a third.
    let s = e.out(&swap, 0, 9, 2);
    assert_eq!(swap.count(s), Ok(2));
    swap.dup(s).unwrap();
    assert_eq!(swap.count(s), Ok(3));
    // The first fault reads it; each page table that maps the frame drops
    // its use; the last one gets the frame from the cache.
    let SwappedIn { frame: f, read: io } = swap.swap_in(s, &e.frames, &e.mem).unwrap();
    assert!(io && e.holds(f, 9));
    assert_eq!(swap.swap_in(s, &e.frames, &e.mem).unwrap(), SwappedIn { frame: f, read: false });
    assert_eq!(swap.free(s), Ok(None));
    assert_eq!(swap.free(s), Ok(None));
    assert_eq!(swap.lookup(s), Some(f));
    assert_eq!(swap.free(s), Ok(Some(f)));
    assert_eq!(swap.free(s), Err(SwapError::NotAllocated(s)));
    assert_eq!(swap.dup(s), Err(SwapError::NotAllocated(s)));
    assert_eq!(swap.used_slots(), 0);
    swap.check().unwrap();
    e.free(f);
    // Exit without a fault: uses simply go.
    let s = e.out(&swap, 0, 1, 1);
    assert_eq!(swap.free(s), Ok(None));
    assert_eq!(swap.used_slots(), 0);
    assert_eq!(e.frames.allocated_blocks(), 0);
}

#[test]
fn clusters_keep_a_cpus_writes_contiguous() {
    let (swap, _) = swap_with(4 * CLUSTER as u64, 2, 0);
    // Interleaved allocations of two CPUs: each CPU's run is contiguous,
    // in its own cluster.
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..100 {
        a.push(swap.alloc(0).unwrap().offset());
        b.push(swap.alloc(1).unwrap().offset());
    }
    assert!(a.windows(2).all(|w| w[1] == w[0] + 1), "cpu 0: {a:?}");
    assert!(b.windows(2).all(|w| w[1] == w[0] + 1), "cpu 1: {b:?}");
    assert_ne!(a[0] / CLUSTER as u64, b[0] / CLUSTER as u64);
    // A CPU that fills its cluster moves to a free one.
    let mut last = 0;
    for _ in 0..CLUSTER {
        last = swap.alloc(0).unwrap().offset();
    }
    assert_ne!(last / CLUSTER as u64, a[0] / CLUSTER as u64);
    // A folio's run: aligned, contiguous, from the current or a free
    // cluster; bad lengths refused.
    let run = swap.alloc_run(1, 16).unwrap();
    assert_eq!(run.offset() % 16, 0);
    for k in 0..16 {
        assert_eq!(swap.count(SwapSlot::new(0, run.offset() + k).unwrap()), Ok(1));
    }
    assert_eq!(swap.alloc_run(1, 3), Err(SwapError::BadRun(3)));
    assert_eq!(swap.alloc_run(1, 1024), Err(SwapError::BadRun(1024)));
    swap.check().unwrap();
}

#[test]
fn freed_clusters_are_reused_and_full_is_reported() {
    let (swap, _) = swap_with(2 * CLUSTER as u64 + 10, 1, 0);
    let all: Vec<SwapSlot> = (0..2 * CLUSTER + 10).map(|_| swap.alloc(0).unwrap()).collect();
    assert_eq!(swap.alloc(0), Err(SwapError::Full));
    assert_eq!(swap.alloc_run(0, 2), Err(SwapError::Full));
    // Free a few slots of the first cluster: they are found again (the
    // cluster went on the partial list).
    for s in &all[3..6] {
        swap.free(*s).unwrap();
    }
    let mut again: Vec<u64> = (0..3).map(|_| swap.alloc(0).unwrap().offset()).collect();
    again.sort();
    assert_eq!(again, vec![3, 4, 5]);
    assert_eq!(swap.alloc(0), Err(SwapError::Full));
    // Free a whole cluster: a run fits again.
    for s in &all[CLUSTER..2 * CLUSTER] {
        swap.free(*s).unwrap();
    }
    let run = swap.alloc_run(0, CLUSTER).unwrap();
    assert_eq!(run.offset(), CLUSTER as u64);
    assert_eq!(swap.used_slots(), (2 * CLUSTER + 10) as u64);
    swap.check().unwrap();
}

#[test]
fn slot_caches_never_hide_free_slots() {
    let (swap, _) = swap_with(100, 2, 0);
    // CPU 0's first allocation caches a batch.
    let first = swap.alloc(0).unwrap();
    assert_eq!(swap.used_slots(), 1, "cached slots are not counted as used");
    assert_eq!(swap.area_used(0), Ok(1));
    // CPU 1 gets every other slot, the last ones from CPU 0's cache.
    let mut theirs: Vec<u64> = (0..99).map(|_| swap.alloc(1).unwrap().offset()).collect();
    assert_eq!(swap.alloc(1), Err(SwapError::Full));
    assert_eq!(swap.alloc(0), Err(SwapError::Full));
    theirs.push(first.offset());
    theirs.sort();
    assert_eq!(theirs, (0..100).collect::<Vec<u64>>());
    swap.check().unwrap();
    // Freed slots are found again; draining returns cached ones.
    swap.free(SwapSlot::new(0, 7).unwrap()).unwrap();
    swap.free(SwapSlot::new(0, 8).unwrap()).unwrap();
    assert_eq!(swap.alloc(0).unwrap().offset(), 7);
    assert_eq!(swap.used_slots(), 99);
    swap.drain_caches();
    assert_eq!(swap.used_slots(), 99);
    assert_eq!(swap.alloc(1).unwrap().offset(), 8);
    swap.check().unwrap();
}

#[test]
fn priorities_then_round_robin() {
    let swap = Swap::new(SwapConfig { cpus: 1, readahead: 0 });
    let slow = swap.add_area(Box::new(MemStore::new(600)), -1).unwrap();
    let a = swap.add_area(Box::new(MemStore::new(600)), 5).unwrap();
    let b = swap.add_area(Box::new(MemStore::new(600)), 5).unwrap();
    let mut per = [0usize; 3];
    for _ in 0..1000 {
        per[swap.alloc(0).unwrap().area() as usize] += 1;
    }
    // The two fast areas take turns by slot-cache batch; the slow one is
    // used only when they fill.
    assert_eq!(per[slow as usize], 0);
    assert_eq!(per[a as usize] + per[b as usize], 1000);
    assert!(per[a as usize].abs_diff(per[b as usize]) <= SLOT_BATCH, "{per:?}");
    for _ in 0..300 {
        swap.alloc(0).unwrap();
    }
    assert_eq!(swap.area_used(slow), Ok(100));
    assert!(matches!(swap.area_used(9), Err(SwapError::NoArea(9))));
}

#[test]
fn concurrent_faults_share_one_read() {
    let e = Arc::new(env());
    let (swap, store) = swap_with(64, 4, 0);
    let swap = Arc::new(swap);
    let s = e.out(&swap, 0, 77, 4);
    let reads = store.reads();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (e, swap) = (e.clone(), swap.clone());
            std::thread::spawn(move || swap.swap_in(s, &e.frames, &e.mem).unwrap())
        })
        .collect();
    let got: Vec<SwappedIn> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(store.reads() - reads, 1, "four faults, one read");
    assert!(got.iter().all(|g| g.frame == got[0].frame));
    assert_eq!(got.iter().filter(|g| g.read).count(), 1);
    assert!(e.holds(got[0].frame, 77));
    assert_eq!(swap.stats().cache_hits, 3);
    for _ in 0..3 {
        assert_eq!(swap.free(s), Ok(None));
    }
    let f = swap.free(s).unwrap().unwrap();
    e.free(f);
    swap.check().unwrap();
}

#[test]
fn readahead_brings_neighbours_into_the_cache() {
    let e = env();
    let (swap, store) = swap_with(64, 1, 3);
    let slots: Vec<SwapSlot> = (0..6).map(|i| e.out(&swap, 0, i as u8 + 1, 1)).collect();
    let r0 = store.reads();
    let SwappedIn { frame: f, read: io } = swap.swap_in(slots[0], &e.frames, &e.mem).unwrap();
    assert!(io && e.holds(f, 1));
    assert_eq!(store.reads() - r0, 4, "one read and three ahead");
    assert_eq!(swap.stats().readahead, 3);
    for (i, s) in slots.iter().enumerate().skip(1).take(3) {
        let SwappedIn { frame: g, read: io } = swap.swap_in(*s, &e.frames, &e.mem).unwrap();
        assert!(!io && e.holds(g, i as u8 + 1));
    }
    assert_eq!(swap.lookup(slots[4]), None);
    // A slot freed while its page sat in the cache hands the frame back.
    for s in &slots {
        if let Some(f) = swap.free(*s).unwrap() {
            e.free(f);
        }
    }
    assert_eq!(e.frames.allocated_blocks(), 0);
    swap.check().unwrap();
}

#[test]
fn failed_writes_keep_the_page_and_bad_slots_retire() {
    let e = env();
    let (swap, store) = swap_with(CLUSTER as u64, 1, 0);
    let f = e.page(5);
    store.fail_writes(true);
    for i in 0..BAD_AFTER {
        // SAFETY: the test owns the frame.
        let r = unsafe { swap.swap_out(0, f, 1, &e.mem) };
        assert!(matches!(r, Err(SwapError::Store(_))), "attempt {i}: {r:?}");
        // The page is untouched and no slot stays allocated.
        assert!(e.holds(f, 5));
        assert_eq!(swap.used_slots(), 0);
    }
    assert_eq!(swap.stats().write_errors, u64::from(BAD_AFTER));
    // Each attempt took the next slot of the cluster (the search moves on),
    // so no slot failed three times yet: none is bad.
    assert_eq!(swap.bad_slots(0), Ok(0));
    // One slot whose writes fail three times (a caller retrying it) is
    // retired when it is freed.
    let retired = swap.alloc(0).unwrap();
    for _ in 0..BAD_AFTER {
        // SAFETY: as above.
        assert!(matches!(unsafe { swap.write(retired, f, &e.mem) }, Err(SwapError::Store(_))));
    }
    store.fail_writes(false);
    assert_eq!(swap.free(retired), Ok(None));
    let bad_before = swap.bad_slots(0).unwrap();
    assert_eq!(bad_before, 1);
    assert_eq!(swap.count(retired), Err(SwapError::Bad(retired)));
    // SAFETY: as above.
    let s = unsafe { swap.swap_out(0, f, 1, &e.mem) }.unwrap();
    e.free(f);
    let g = swap.swap_in(s, &e.frames, &e.mem).unwrap().frame;
    assert!(e.holds(g, 5));
    assert_eq!(swap.free(s), Ok(Some(g)));
    e.free(g);
    // Fill the area (the slot caches drained first, so that the retired
    // slot's neighbours come back through the search): every slot but the
    // bad one is handed out, never the bad one.
    swap.drain_caches();
    let mut n = 0;
    while let Ok(t) = swap.alloc(0) {
        assert_ne!(t, retired, "a bad slot was handed out");
        assert_eq!(swap.count(t), Ok(1));
        n += 1;
    }
    assert_eq!(n + bad_before, CLUSTER as u64);
    assert_eq!(swap.bad_slots(0), Ok(bad_before));
    swap.check().unwrap();
}

#[test]
fn a_slot_failing_repeatedly_is_marked_bad() {
    let e = env();
    let (swap, store) = swap_with(1, 1, 0);
    let f = e.page(3);
    store.fail_writes(true);
    for _ in 0..BAD_AFTER {
        // SAFETY: the test owns the frame.
        assert!(unsafe { swap.swap_out(0, f, 1, &e.mem) }.is_err());
    }
    assert_eq!(swap.bad_slots(0), Ok(1));
    store.fail_writes(false);
    // SAFETY: as above.
    assert_eq!(unsafe { swap.swap_out(0, f, 1, &e.mem) }, Err(SwapError::Full));
    assert!(e.holds(f, 3));
    e.free(f);
}

#[test]
fn failed_and_corrupt_reads_are_reported_never_returned() {
    let e = env();
    let (swap, store) = swap_with(16, 1, 0);
    let s = e.out(&swap, 0, 42, 1);
    store.fail_nth_read(1);
    assert!(matches!(swap.swap_in(s, &e.frames, &e.mem), Err(SwapError::Store(_))));
    assert_eq!(swap.count(s), Ok(1), "the slot keeps its user and data");
    assert_eq!(e.frames.allocated_blocks(), 0, "the frame of the failed read is back");
    // Bit rot on the device: the checksum catches it.
    store.corrupt_slot(s.offset(), 100);
    assert_eq!(swap.swap_in(s, &e.frames, &e.mem), Err(SwapError::Corrupt(s)));
    assert_eq!(swap.stats().read_errors, 2);
    assert_eq!(e.frames.allocated_blocks(), 0);
    swap.check().unwrap();
    // Reading a slot that was allocated but never written is refused.
    let raw = swap.alloc(0).unwrap();
    assert_eq!(swap.swap_in(raw, &e.frames, &e.mem), Err(SwapError::NotWritten(raw)));
    // Slots that do not exist.
    assert_eq!(swap.count(SwapSlot::new(0, 16).unwrap()), Err(SwapError::OutOfRange(SwapSlot::new(0, 16).unwrap())));
    assert_eq!(swap.free(SwapSlot::new(3, 0).unwrap()), Err(SwapError::NoArea(3)));
}

#[test]
fn swapoff_brings_every_page_back_first() {
    let e = env();
    let swap = Swap::new(SwapConfig { cpus: 1, readahead: 0 });
    let a = swap.add_area(Box::new(MemStore::new(64)), 1).unwrap();
    let b = swap.add_area(Box::new(MemStore::new(64)), 0).unwrap();
    let slots: Vec<SwapSlot> = (0..10).map(|i| e.out(&swap, 0, i, 1)).collect();
    assert!(slots.iter().all(|s| s.area() == a));
    // An unuse that brings nothing in: refused, area still in service.
    let r = swap.swapoff(a, &mut |_, _| Ok(()));
    assert_eq!(r.err(), Some(SwapError::InUse { area: a, slots: 10 }));
    assert_eq!(swap.alloc(0).map(|s| s.area()), Ok(a));
    swap.free(SwapSlot::new(a, 10).unwrap()).unwrap();
    // A real unuse: every page read back (checked) and its slot freed;
    // meanwhile new swap-outs go to the other area.
    let mut back = Vec::new();
    let store = swap
        .swapoff(a, &mut |swap, area| {
            let extra = e.out(swap, 0, 99, 1);
            assert_eq!(extra.area(), b, "a draining area takes no new slots");
            swap.free(extra)?;
            for (i, s) in slots.iter().enumerate() {
                assert_eq!(s.area(), area);
                let f = swap.swap_in(*s, &e.frames, &e.mem)?.frame;
                assert!(e.holds(f, i as u8));
                assert_eq!(swap.free(*s)?, Some(f));
                back.push(f);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(store.slot_count(), 64);
    assert_eq!(back.len(), 10);
    assert_eq!(swap.count(slots[0]), Err(SwapError::NoArea(a)));
    assert_eq!(swap.alloc(0).map(|s| s.area()), Ok(b));
    for f in back {
        e.free(f);
    }
}

#[test]
fn cached_pages_map_again_without_io() {
    let e = env();
    let (swap, store) = swap_with(16, 1, 0);
    // Unmap-first eviction: the page is written while it sits in the
    // cache; a fault before it is dropped maps it again without a read.
    let f = e.page(8);
    let s = swap.alloc(0).unwrap();
    swap.cache(s, f).unwrap();
    assert_eq!(swap.cache(s, f), Err(SwapError::AlreadyCached(s)));
    // SAFETY: the page is unmapped (only the cache holds it).
    unsafe { swap.write(s, f, &e.mem) }.unwrap();
    let reads = store.reads();
    assert_eq!(swap.swap_in(s, &e.frames, &e.mem), Ok(SwappedIn { frame: f, read: false }));
    assert_eq!(store.reads(), reads);
    // Reclaim finds the cached frame's slot and drops it from the cache;
    // the slot keeps its data.
    assert_eq!(swap.cached_slot(f), Some(s));
    assert_eq!(swap.uncache(s), Ok(Some(f)));
    assert_eq!(swap.cached(), vec![]);
    assert_eq!(swap.cached_slot(f), None);
    e.free(f);
    let SwappedIn { frame: g, read: io } = swap.swap_in(s, &e.frames, &e.mem).unwrap();
    assert!(io && e.holds(g, 8));
    assert_eq!(swap.cached_slot(g), Some(s));
    assert_eq!(swap.capacity(), 16);
    assert_eq!(swap.free(s), Ok(Some(g)));
    assert_eq!(swap.cached_slot(g), None);
    e.free(g);
    swap.check().unwrap();
}

#[test]
fn alloc_cached_holds_the_page_in_memory_until_written() {
    let e = env();
    let (swap, store) = swap_with(16, 1, 0);
    // A page with two mappers enters the cache under a new slot, unwritten.
    let f = e.page(9);
    let writes = store.writes();
    let s = swap.alloc_cached(0, f, 2).unwrap();
    assert_eq!(store.writes(), writes, "nothing written yet");
    assert_eq!((swap.count(s), swap.lookup(s), swap.cached_slot(f)), (Ok(2), Some(f), Some(s)));
    swap.check().unwrap();
    // The slot has no data: a read says so, the cached frame is the page.
    let mut buf = [0u8; 4096];
    assert_eq!(swap.read_slot(s, &mut buf), Err(SwapError::NotWritten(s)));
    let reads = store.reads();
    assert_eq!(swap.swap_in(s, &e.frames, &e.mem), Ok(SwappedIn { frame: f, read: false }));
    assert_eq!(store.reads(), reads, "a fault maps the cached frame without I/O");
    // Written once nothing maps it, then dropped: the slot has the page.
    // SAFETY: the page is unmapped (only the cache holds it).
    unsafe { swap.write(s, f, &e.mem) }.unwrap();
    assert_eq!(swap.read_slot(s, &mut buf), Ok(()));
    assert_eq!(swap.uncache(s), Ok(Some(f)));
    e.free(f);
    let SwappedIn { frame: g, read: io } = swap.swap_in(s, &e.frames, &e.mem).unwrap();
    assert!(io && e.holds(g, 9));
    assert_eq!(swap.free(s), Ok(None));
    assert_eq!(swap.free(s), Ok(Some(g)));
    e.free(g);
    // Never written: the last use hands the frame back as for any cached
    // page, and the slot is free again.
    let f = e.page(10);
    let s = swap.alloc_cached(0, f, 0).unwrap();
    assert_eq!(swap.count(s), Ok(1), "0 users count as 1");
    assert_eq!(swap.free(s), Ok(Some(f)));
    assert!(e.holds(f, 10));
    e.free(f);
    assert_eq!(swap.used_slots(), 0);
    swap.check().unwrap();
}

#[test]
fn alloc_cached_allocates_nothing_when_it_fails() {
    let e = env();
    let (swap, _store) = swap_with(2, 1, 0);
    let f = e.page(1);
    let s = swap.alloc_cached(0, f, 1).unwrap();
    // One frame is one page: not cached under a second slot.
    assert_eq!(swap.alloc_cached(0, f, 1), Err(SwapError::FrameCached { frame: f, slot: s }));
    assert_eq!(swap.used_slots(), 1);
    let g = e.page(2);
    let too_many = 16_384;
    assert!(matches!(swap.alloc_cached(0, g, too_many), Err(SwapError::CountOverflow(_))));
    assert_eq!((swap.used_slots(), swap.cached_slot(g)), (1, None));
    // The most uses a slot takes; under miri fewer (each use is freed one
    // by one below, 16,383 frees take minutes interpreted).
    let most = if cfg!(miri) { 3 } else { 16_383 };
    let t = swap.alloc_cached(0, g, most).unwrap();
    assert_eq!(swap.count(t), Ok(most));
    let h = e.page(3);
    assert_eq!(swap.alloc_cached(0, h, 1), Err(SwapError::Full));
    assert_eq!(swap.used_slots(), 2);
    swap.check().unwrap();
    for (slot, frame, users) in [(s, f, 1), (t, g, most)] {
        for _ in 1..users {
            assert_eq!(swap.free(slot), Ok(None));
        }
        assert_eq!(swap.free(slot), Ok(Some(frame)));
        e.free(frame);
    }
    e.free(h);
    assert_eq!((swap.used_slots(), e.frames.allocated_blocks()), (0, 0));
    swap.check().unwrap();
}

fn run_swap(slots: u64, max_run: usize, readahead: u32) -> (Swap, Arc<MemStore>) {
    let store = Arc::new(MemStore::new(slots).with_max_run(max_run));
    let swap = Swap::new(SwapConfig { cpus: 1, readahead });
    swap.add_area(Box::new(store.clone()), 0).unwrap();
    (swap, store)
}

/// Allocates `n` slots with one use each (consecutive: one cluster).
fn alloc_slots(swap: &Swap, n: usize) -> Vec<SwapSlot> {
    (0..n).map(|_| swap.alloc(0).unwrap()).collect()
}

#[test]
fn write_batch_sends_consecutive_slots_as_one_request() {
    let e = env();
    let (swap, store) = run_swap(64, 4, 0);
    let slots = alloc_slots(&swap, 7);
    assert!(slots.windows(2).all(|w| w[1].offset() == w[0].offset() + 1), "one cluster: {slots:?}");
    let frames: Vec<PhysAddr> = (0..7).map(|i| e.page(40 + i as u8)).collect();
    // Slots 0-2, then 4-6 (in order), then 3: runs of 3, 3 (cut at 4 by
    // the gap, not by the store's limit) and 1.
    let order = [0, 1, 2, 4, 5, 6, 3];
    let pages: Vec<(SwapSlot, PhysAddr)> = order.iter().map(|&i| (slots[i], frames[i])).collect();
    let mut done = vec![Err(SwapError::Full); pages.len()];
    let w0 = store.writes();
    // SAFETY: the test owns the frames and does not write them meanwhile.
    unsafe { swap.write_batch(&pages, &e.mem, &mut done) };
    assert!(done.iter().all(|r| r.is_ok()), "{done:?}");
    assert_eq!(store.writes() - w0, 3, "three runs, three requests");
    assert_eq!(swap.stats().writes, 7);
    // The store's limit cuts a longer run: 7 in order go as 4 + 3.
    let pages: Vec<(SwapSlot, PhysAddr)> = (0..7).map(|i| (slots[i], frames[i])).collect();
    let w0 = store.writes();
    // SAFETY: as above.
    unsafe { swap.write_batch(&pages, &e.mem, &mut done) };
    assert_eq!(store.writes() - w0, 2);
    for (i, s) in slots.iter().enumerate() {
        let mut b = [0u8; 4096];
        swap.read_slot(*s, &mut b).unwrap();
        assert_eq!((b[1], b[4095]), (40 + i as u8, !(40 + i as u8)), "slot {i}");
    }
    swap.check().unwrap();
}

#[test]
fn a_failed_run_is_tried_again_slot_by_slot() {
    let e = env();
    let (swap, store) = run_swap(64, 8, 0);
    let slots = alloc_slots(&swap, 6);
    let frames: Vec<PhysAddr> = (0..6).map(|i| e.page(60 + i as u8)).collect();
    // A free slot in the middle: refused alone, splitting the run around it.
    swap.free(slots[2]).unwrap();
    let pages: Vec<(SwapSlot, PhysAddr)> = (0..6).map(|i| (slots[i], frames[i])).collect();
    let mut done = vec![Ok(()); 6];
    // The second request (slots 3-5) fails once: its slots are written
    // again one by one, and all of them make it.
    store.fail_nth_write(2);
    let w0 = store.writes();
    // SAFETY: the test owns the frames.
    unsafe { swap.write_batch(&pages, &e.mem, &mut done) };
    assert_eq!(store.writes() - w0, 2 + 3, "slots 0-1, then 3-5, then 3, 4 and 5 alone");
    assert_eq!(done[2], Err(SwapError::NotAllocated(slots[2])));
    assert!([0, 1, 3, 4, 5].iter().all(|&i| done[i].is_ok()), "{done:?}");
    assert_eq!((swap.stats().writes, swap.stats().write_errors), (5, 0));
    let mut b = [0u8; 4096];
    for i in [0, 1, 3, 4, 5] {
        swap.read_slot(slots[i], &mut b).unwrap();
        assert_eq!(b[1], 60 + i as u8, "slot {i}");
    }
    // A device that fails every write: each page fails on its own, and
    // keeps no checksum.
    store.fail_writes(true);
    let pages: Vec<(SwapSlot, PhysAddr)> = [3, 4, 5].iter().map(|&i| (slots[i], frames[i])).collect();
    let mut done = vec![Ok(()); 3];
    // SAFETY: as above.
    unsafe { swap.write_batch(&pages, &e.mem, &mut done) };
    assert!(done.iter().all(|r| matches!(r, Err(SwapError::Store(_)))), "{done:?}");
    assert_eq!(swap.stats().write_errors, 3);
    for &i in &[3, 4, 5] {
        assert_eq!(swap.read_slot(slots[i], &mut b), Err(SwapError::NotWritten(slots[i])));
    }
    swap.check().unwrap();
}

#[test]
fn readahead_reads_the_run_in_one_request() {
    let e = env();
    let (swap, store) = run_swap(64, 8, 7);
    let slots: Vec<SwapSlot> = (0..10).map(|i| e.out(&swap, 0, i as u8 + 1, 1)).collect();
    let r0 = store.reads();
    let SwappedIn { frame: f, read: io } = swap.swap_in(slots[0], &e.frames, &e.mem).unwrap();
    assert!(io && e.holds(f, 1));
    assert_eq!(store.reads() - r0, 1, "the fault's page and seven ahead in one read");
    assert_eq!(swap.stats().readahead, 7);
    for (i, s) in slots.iter().enumerate().take(8).skip(1) {
        let SwappedIn { frame: g, read: io } = swap.swap_in(*s, &e.frames, &e.mem).unwrap();
        assert!(!io && e.holds(g, i as u8 + 1), "slot {i}");
    }
    assert_eq!(swap.lookup(slots[8]), None);
    // A store taking 3 slots a request: 8 pages in 3 requests.
    let (swap2, store2) = run_swap(64, 3, 7);
    let slots2: Vec<SwapSlot> = (0..8).map(|i| e.out(&swap2, 0, i as u8 + 1, 1)).collect();
    let r0 = store2.reads();
    swap2.swap_in(slots2[0], &e.frames, &e.mem).unwrap();
    assert_eq!((store2.reads() - r0, swap2.stats().readahead), (3, 7));
    for sw in [(&swap, &slots), (&swap2, &slots2)] {
        for s in sw.1 {
            if let Some(f) = sw.0.free(*s).unwrap() {
                e.free(f);
            }
        }
        sw.0.check().unwrap();
    }
    assert_eq!(e.frames.allocated_blocks(), 0);
}

#[test]
fn a_failed_or_corrupt_run_never_fails_the_fault_for_a_page_ahead() {
    let e = env();
    let (swap, store) = run_swap(64, 8, 3);
    let slots: Vec<SwapSlot> = (0..4).map(|i| e.out(&swap, 0, i as u8 + 1, 1)).collect();
    // The run's request fails: the fault's page is read again alone, and
    // nothing is read ahead.
    store.fail_nth_read(1);
    let r0 = store.reads();
    let SwappedIn { frame: f, read: io } = swap.swap_in(slots[0], &e.frames, &e.mem).unwrap();
    assert!(io && e.holds(f, 1));
    assert_eq!((store.reads() - r0, swap.stats().readahead), (2, 0));
    for s in &slots[1..] {
        assert_eq!(swap.lookup(*s), None, "nothing cached from a failed read");
    }
    // A corrupt page ahead is dropped; the others ahead are kept.
    store.corrupt_slot(slots[2].offset(), 9);
    let SwappedIn { frame: g, read: io } = swap.swap_in(slots[1], &e.frames, &e.mem).unwrap();
    assert!(io && e.holds(g, 2));
    assert_eq!(swap.lookup(slots[2]), None, "the corrupt page is not cached");
    assert!(swap.lookup(slots[3]).is_some());
    assert_eq!(swap.stats().readahead, 1);
    assert_eq!(swap.swap_in(slots[2], &e.frames, &e.mem), Err(SwapError::Corrupt(slots[2])));
    // The fault's own page corrupt: an error, and its frame freed.
    for s in &slots {
        if let Some(f) = swap.free(*s).unwrap() {
            e.free(f);
        }
    }
    assert_eq!(e.frames.allocated_blocks(), 0);
    swap.check().unwrap();
}
