//! The per-CPU cache counters (`PcpStats`): each allocation of order 0 to
//! `PCP_MAX_ORDER` is a hit or a refill, each free into the caches is kept
//! or drains a batch, counted on the CPU that ran it, against a model of
//! the list lengths (MODEL.md 12; 9 fixes the batch and high mark they
//! follow).

use mm_buddy::{BuddyAllocator, BuddyConfig, PcpStats};
use mm_types::percpu::Pinned;
use mm_types::testkit::{SimPhysMemory, ThreadCpus};
use mm_types::{AllocFlags, FrameBlock, FrameError, FrameProvider, Order, PhysAddr};

type Locked = BuddyAllocator<'static, SimPhysMemory, ThreadCpus, 2>;
type PinnedBuddy = BuddyAllocator<'static, SimPhysMemory, Pinned<ThreadCpus>, 2>;

/// Order 0 moves 4 blocks at a time and drains above 8; order 2 moves 1
/// and drains above 2 (`batch >> order`, high at least twice the batch).
const BATCH: u64 = 4;
const HIGH: u64 = 8;

fn config() -> BuddyConfig {
    BuddyConfig { pcp_batch: BATCH as u32, pcp_high: HIGH as u32, min_free_kib: Some(0), ..BuddyConfig::default() }
}

fn memory(bytes: u64) -> SimPhysMemory {
    SimPhysMemory::new(PhysAddr::new(16 << 20).unwrap(), bytes)
}

fn locked(bytes: u64) -> Locked {
    let mem = memory(bytes);
    let b = BuddyAllocator::new(mem.clone(), ThreadCpus::new(2), config()).unwrap();
    // SAFETY: the simulated RAM is used by nothing else and outlives `b`.
    unsafe { b.add_memory(mem.span()).unwrap() };
    b
}

fn pinned(bytes: u64) -> PinnedBuddy {
    let mem = memory(bytes);
    // SAFETY: each test uses its pinned allocator from one thread, switching CPU ids only between
    // calls; no signal handler allocates.
    let cpus = unsafe { Pinned::new(ThreadCpus::new(2)) };
    let b = BuddyAllocator::new(mem.clone(), cpus, config()).unwrap();
    // SAFETY: as for `locked`.
    unsafe { b.add_memory(mem.span()).unwrap() };
    b
}

fn o(n: u8) -> Order {
    Order::new(n).unwrap()
}

fn stats(hits: u64, misses: u64, free_hits: u64, drains: u64) -> PcpStats {
    PcpStats { alloc_hits: hits, alloc_misses: misses, free_hits, free_drains: drains }
}

#[test]
fn an_empty_cache_misses_once_per_batch() {
    ThreadCpus::set_current(0);
    let b = locked(4 << 20);
    let mut live = Vec::new();
    for i in 0..3 * BATCH + 1 {
        live.push(b.allocate(Order::ZERO, AllocFlags::empty()).unwrap());
        // The 1st, 5th, 9th and 13th allocations find the list empty and refill 4; the rest are hits.
        let misses = i / BATCH + 1;
        assert_eq!(b.cpu_pcp_stats(0), stats(i + 1 - misses, misses, 0, 0), "allocation {i}");
        assert_eq!(b.cpu_cached_frames(0), BATCH - 1 - i % BATCH, "allocation {i}");
    }
    assert_eq!(b.cpu_pcp_stats(0), stats(9, 4, 0, 0));
    assert_eq!(b.cpu_pcp_stats(1), PcpStats::default(), "CPU 1 ran nothing");
    for x in live {
        b.free(x).unwrap();
    }
    b.check().unwrap();
}

#[test]
fn frees_past_the_high_mark_drain_a_batch() {
    ThreadCpus::set_current(0);
    let b = locked(4 << 20);
    let live: Vec<FrameBlock> = (0..30).map(|_| b.allocate(Order::ZERO, AllocFlags::empty()).unwrap()).collect();
    // 30 allocations: 8 refills of 4, 2 blocks left on the list.
    assert_eq!(b.cpu_pcp_stats(0), stats(22, 8, 0, 0));
    let mut len = 2;
    let (mut kept, mut drains) = (0, 0);
    for (i, x) in live.into_iter().enumerate() {
        b.free(x).unwrap();
        // Model: the block goes on the list; above the high mark a batch goes back to the zone.
        len += 1;
        if len > HIGH {
            len -= BATCH;
            drains += 1;
        } else {
            kept += 1;
        }
        assert_eq!(b.cpu_pcp_stats(0), stats(22, 8, kept, drains), "free {i}");
        assert_eq!(b.cpu_cached_frames(0), len, "free {i}");
    }
    // Lengths 3 to 8 keep (6 frees); from then on one free in four passes 8 and drains to 5.
    assert_eq!((kept, drains), (24, 6));
    let s = b.pcp_stats();
    assert_eq!((s.allocations(), s.frees()), (30, 30));
    b.check().unwrap();
}

#[test]
fn each_order_follows_its_own_batch_and_larger_orders_are_not_counted() {
    ThreadCpus::set_current(0);
    let b = locked(4 << 20);
    // Order 2: a batch of 1, so every allocation from an empty list is a refill.
    let small: Vec<FrameBlock> = (0..3).map(|_| b.allocate(o(2), AllocFlags::empty()).unwrap()).collect();
    assert_eq!(b.cpu_pcp_stats(0), stats(0, 3, 0, 0));
    // Order 4 bypasses the caches.
    let big = b.allocate(o(4), AllocFlags::empty()).unwrap();
    b.free(big).unwrap();
    assert_eq!(b.cpu_pcp_stats(0), stats(0, 3, 0, 0));
    // Frees: lengths 1 and 2 keep; the 3rd passes the high mark of 2 and drains 1.
    for x in small {
        b.free(x).unwrap();
    }
    assert_eq!(b.cpu_pcp_stats(0), stats(0, 3, 2, 1));
    // Two blocks wait on the order-2 list: the next two allocations hit.
    let again = [b.allocate(o(2), AllocFlags::empty()).unwrap(), b.allocate(o(2), AllocFlags::empty()).unwrap()];
    assert_eq!(b.cpu_pcp_stats(0), stats(2, 3, 2, 1));
    for x in again {
        b.free(x).unwrap();
    }
    b.check().unwrap();
}

#[test]
fn fallback_hits_count_and_failed_allocations_and_drains_do_not() {
    ThreadCpus::set_current(0);
    // 1 MiB of DMA (below 16 MiB) and 1 MiB of DMA32, each less its metadata frame.
    let mem = SimPhysMemory::new(PhysAddr::new(15 << 20).unwrap(), 2 << 20);
    let b: Locked = BuddyAllocator::new(mem.clone(), ThreadCpus::new(2), config()).unwrap();
    // SAFETY: the simulated RAM is used by nothing else and outlives `b`.
    unsafe { b.add_memory(mem.span()).unwrap() };
    // A DMA allocation refills DMA's list: 3 blocks wait there.
    let mut live = vec![b.allocate(Order::ZERO, AllocFlags::DMA).unwrap()];
    assert_eq!(b.cpu_pcp_stats(0), stats(0, 1, 0, 0));
    // Ordinary allocations refill from DMA32 until it runs dry, then fall back to DMA: the first
    // three of those take the blocks waiting on DMA's list (hits outside the fast path).
    let mut last = b.cpu_pcp_stats(0);
    let err = loop {
        match b.allocate(Order::ZERO, AllocFlags::empty()) {
            Ok(x) => live.push(x),
            Err(e) => break e,
        }
        let s = b.cpu_pcp_stats(0);
        assert_eq!(s.allocations(), last.allocations() + 1, "allocation {}: {s:?}", live.len());
        last = s;
    };
    assert!(matches!(err, FrameError::OutOfMemory { .. }), "{err:?}");
    let s = b.cpu_pcp_stats(0);
    assert_eq!(s, last, "the failing call refilled nothing and served nothing");
    assert_eq!(s.allocations(), live.len() as u64);
    assert!(live.len() > 500 && s.alloc_misses >= live.len() as u64 / BATCH, "{} {s:?}", live.len());
    let x = live.pop().unwrap();
    b.free(x).unwrap();
    b.drain_all();
    b.drain_local();
    assert_eq!(b.cpu_cached_frames(0), 0);
    assert_eq!(b.cpu_pcp_stats(0), PcpStats { free_hits: 1, ..s }, "a drain is no free");
    for x in live {
        b.free(x).unwrap();
    }
    b.check().unwrap();
}

#[test]
fn each_cpu_counts_its_own_and_the_total_sums_them() {
    let b = locked(4 << 20);
    ThreadCpus::set_current(0);
    let a: Vec<FrameBlock> = (0..5).map(|_| b.allocate(Order::ZERO, AllocFlags::empty()).unwrap()).collect();
    ThreadCpus::set_current(1);
    let c = b.allocate(Order::ZERO, AllocFlags::empty()).unwrap();
    // CPU 1 frees what CPU 0 allocated: the frees count where they run.
    for x in a {
        b.free(x).unwrap();
    }
    assert_eq!(b.cpu_pcp_stats(0), stats(3, 2, 0, 0));
    assert_eq!(b.cpu_pcp_stats(1), stats(0, 1, 5, 0));
    let mut sum = b.cpu_pcp_stats(0);
    sum += b.cpu_pcp_stats(1);
    assert_eq!(b.pcp_stats(), sum);
    assert_eq!(b.pcp_stats(), stats(3, 3, 5, 0));
    b.free(c).unwrap();
    ThreadCpus::set_current(0);
    b.check().unwrap();
}

#[test]
fn pinned_counts_as_locked_and_totals_its_own_cpu() {
    let (l, p) = (locked(4 << 20), pinned(4 << 20));
    for cpu in [0, 1, 0] {
        ThreadCpus::set_current(cpu);
        let mut live = Vec::new();
        for i in 0..20u8 {
            let order = o(i % 3);
            let x = l.allocate(order, AllocFlags::empty()).unwrap();
            assert_eq!(p.allocate(order, AllocFlags::empty()), Ok(x));
            live.push(x);
        }
        for x in live {
            l.free(x).unwrap();
            p.free(x).unwrap();
        }
        assert_eq!(p.cpu_pcp_stats(cpu), l.cpu_pcp_stats(cpu));
        // Pinned: the total is this CPU's; locked: both CPUs'.
        assert_eq!(p.pcp_stats(), p.cpu_pcp_stats(cpu));
    }
    ThreadCpus::set_current(1);
    assert_eq!(p.pcp_stats(), l.cpu_pcp_stats(1));
    let mut both = l.cpu_pcp_stats(0);
    both += l.cpu_pcp_stats(1);
    assert_eq!(l.pcp_stats(), both);
    assert_eq!(both.allocations(), 60);
}

#[test]
#[should_panic(expected = "out of reach")]
fn pinned_refuses_another_cpus_counters() {
    ThreadCpus::set_current(0);
    let p = pinned(4 << 20);
    p.cpu_pcp_stats(1);
}
