//! The pinned mode (a CPU source that promises pinned, non-re-entered use,
//! `mm_types::percpu::Pinned`) against the default locked mode: the same
//! operations give the same frames and counts, drain requests reach the other
//! CPUs, and threads on their own CPUs lose and duplicate no frame. Comments
//! name the MODEL.md invariants checked.

use std::collections::BTreeSet;

use mm_buddy::{BuddyAllocator, BuddyConfig};
use mm_types::percpu::{CpuLocal, Pinned};
use mm_types::testkit::{SimPhysMemory, ThreadCpus, XorShift as Rng};
use mm_types::{AllocFlags, FrameBlock, FrameError, FrameProvider, Order, PhysAddr};

fn set_cpu(cpu: usize) {
    ThreadCpus::set_current(cpu);
}

type Locked = BuddyAllocator<'static, SimPhysMemory, ThreadCpus, 2>;
type PinnedBuddy = BuddyAllocator<'static, SimPhysMemory, Pinned<ThreadCpus>, 2>;

fn config() -> BuddyConfig {
    BuddyConfig { pcp_batch: 8, pcp_high: 16, min_free_kib: Some(0), ..BuddyConfig::default() }
}

fn memory() -> SimPhysMemory {
    SimPhysMemory::new(PhysAddr::new(16 << 20).unwrap(), 4 << 20)
}

fn locked() -> Locked {
    let mem = memory();
    let b = BuddyAllocator::new(mem.clone(), ThreadCpus::new(2), config()).unwrap();
    // SAFETY: the simulated RAM is used by nothing else and outlives `b`.
    unsafe { b.add_memory(mem.span()).unwrap() };
    b
}

fn pinned() -> PinnedBuddy {
    let mem = memory();
    // SAFETY: every test below uses a pinned allocator either from one thread (switching CPU ids only
    // between calls) or from threads that each set a CPU id of their own, and no signal handler
    // allocates; the main thread reaches other CPUs' caches only after joining their threads.
    let cpus = unsafe { Pinned::new(ThreadCpus::new(2)) };
    let b = BuddyAllocator::new(mem.clone(), cpus, config()).unwrap();
    // SAFETY: as for `locked`.
    unsafe { b.add_memory(mem.span()).unwrap() };
    b
}

fn o(n: u8) -> Order {
    Order::new(n).unwrap()
}

#[test]
fn pinned_gives_the_same_frames_and_counts_as_locked() {
    // MODEL 1, 2, 9: one op sequence, over two CPUs switched between calls, on both modes.
    let (l, p) = (locked(), pinned());
    let steps = if cfg!(miri) { 150 } else { 20_000 };
    let mut rng = Rng(7);
    let mut live: Vec<FrameBlock> = Vec::new();
    for step in 0..steps {
        let r = rng.next();
        set_cpu((r >> 8) as usize % 2);
        // At most 40 blocks of up to 16 frames live: memory never runs out, so no allocation falls
        // back to drain_all (which reaches other CPUs at once only in the locked mode).
        if (r % 3 != 0 && live.len() < 40) || live.is_empty() {
            let order = o((r >> 16) as u8 % 5);
            let flags = if r >> 24 & 7 == 0 { AllocFlags::ZERO } else { AllocFlags::empty() };
            let (a, b) = (l.allocate(order, flags), p.allocate(order, flags));
            assert_eq!(a, b, "step {step}");
            if let Ok(x) = a {
                live.push(x);
            }
        } else {
            let x = live.swap_remove((r >> 32) as usize % live.len());
            assert_eq!(l.free(x), Ok(()));
            assert_eq!(p.free(x), Ok(()));
            assert_eq!((l.free(x), p.free(x)), (Err(FrameError::DoubleFree(x)), Err(FrameError::DoubleFree(x))));
        }
        assert_eq!(l.free_frame_count(), p.free_frame_count(), "step {step}");
        let cpu = ThreadCpus::new(2).current_cpu();
        assert_eq!(l.cpu_cached_frames(cpu), p.cpu_cached_frames(cpu), "step {step}");
    }
    l.check().unwrap();
    p.check().unwrap();
    let distinct: BTreeSet<_> = live.iter().map(|b| b.start()).collect();
    assert_eq!(distinct.len(), live.len(), "a frame handed out twice");
    for x in live {
        l.free(x).unwrap();
        p.free(x).unwrap();
    }
    l.drain_all();
    for cpu in 0..2 {
        set_cpu(cpu);
        p.drain_local();
    }
    assert_eq!(l.free_frame_count(), l.managed_frames());
    assert_eq!(p.free_frame_count(), p.managed_frames());
    assert_eq!(l.managed_frames(), p.managed_frames());
    p.check().unwrap();
}

#[test]
fn drain_all_reaches_other_cpus_through_requests() {
    let b = pinned();
    set_cpu(0);
    let held: Vec<_> = (0..12).map(|_| b.allocate(o(0), AllocFlags::empty()).unwrap()).collect();
    for x in held {
        b.free(x).unwrap();
    }
    let cached0 = b.cpu_cached_frames(0);
    assert!(cached0 > 8, "{cached0}");
    // CPU 1 drains: its own caches now, CPU 0's only when CPU 0 next runs the allocator.
    set_cpu(1);
    let x = b.allocate(o(0), AllocFlags::empty()).unwrap();
    b.free(x).unwrap();
    b.drain_all();
    assert_eq!(b.cached_frames(), 0, "CPU 1's own caches are drained");
    assert_eq!(b.free_frame_count(), b.managed_frames() - cached0, "CPU 0's are not reached directly");
    set_cpu(0);
    assert_eq!(b.cpu_cached_frames(0), cached0, "statistics do not take the request");
    let y = b.allocate(o(0), AllocFlags::empty()).unwrap();
    assert!(b.cpu_cached_frames(0) < 8, "the request was honoured before the allocation refilled");
    b.free(y).unwrap();
    // A CPU going offline is drained from another once it is stopped.
    set_cpu(1);
    // SAFETY: CPU 0 runs nothing: this test is one thread, now acting as CPU 1.
    unsafe { b.drain_cpu_quiescent(0) };
    assert_eq!(b.free_frame_count(), b.managed_frames());
    b.check().unwrap();
}

#[test]
#[should_panic(expected = "out of reach")]
fn another_cpus_cache_is_out_of_reach_when_pinned() {
    let b = pinned();
    set_cpu(1);
    let _ = b.cpu_cached_frames(0);
}

#[test]
fn pinned_threads_lose_and_duplicate_no_frame() {
    // MODEL 1, 2: each thread is one CPU; afterwards every frame is back exactly once.
    let b = pinned();
    let rounds = if cfg!(miri) { 40 } else { 20_000 };
    let kept: Vec<Vec<FrameBlock>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|cpu| {
                let b = &b;
                s.spawn(move || {
                    set_cpu(cpu);
                    let mut rng = Rng(cpu as u64 + 11);
                    let mut mine: Vec<FrameBlock> = Vec::new();
                    for i in 0..rounds {
                        let r = rng.next();
                        if r % 2 == 0 || mine.is_empty() {
                            if let Ok(x) = b.allocate(o((r >> 8) as u8 % 4), AllocFlags::empty()) {
                                mine.push(x);
                            }
                        } else {
                            b.free(mine.swap_remove((r >> 16) as usize % mine.len())).unwrap();
                        }
                        if i % 64 == 0 {
                            b.drain_all();
                        }
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut frames = BTreeSet::new();
    for x in kept.iter().flatten() {
        for f in 0..x.frames() {
            assert!(frames.insert(x.start().as_u64() + f), "frame handed out twice");
        }
    }
    for x in kept.into_iter().flatten() {
        b.free(x).unwrap();
    }
    for cpu in 0..2 {
        // SAFETY: both worker threads were joined: no CPU runs the allocator but this thread.
        unsafe { b.drain_cpu_quiescent(cpu) };
    }
    assert_eq!(b.free_frame_count(), b.managed_frames());
    b.check().unwrap();
}

/// With the default batch, each CPU's cache is refilled with a whole
/// 64-frame run of a fresh zone: two CPUs' cached frames lie in different
/// 64-frame groups, so they never write the same cache line of state bytes
/// (64 per line) or links (8 per line) on their hot paths.
#[test]
fn cpus_cache_frames_of_separate_metadata_lines() {
    let mem = SimPhysMemory::new(PhysAddr::new(16 << 20).unwrap(), 8 << 20);
    let config = BuddyConfig { min_free_kib: Some(0), ..BuddyConfig::default() };
    let b: Locked = BuddyAllocator::new(mem.clone(), ThreadCpus::new(2), config).unwrap();
    // SAFETY: the simulated RAM is used by nothing else and outlives `b`.
    unsafe { b.add_memory(mem.span()).unwrap() };
    let group = |f: &FrameBlock| f.start().as_u64() / 64;
    set_cpu(0);
    let a = b.allocate(Order::ZERO, AllocFlags::empty()).unwrap();
    set_cpu(1);
    let c = b.allocate(Order::ZERO, AllocFlags::empty()).unwrap();
    assert_eq!((b.cpu_cached_frames(0), b.cpu_cached_frames(1)), (63, 63));
    assert_ne!(group(&a), group(&c), "{a:?} and {c:?} share a metadata line");
    b.free(c).unwrap();
    set_cpu(0);
    b.free(a).unwrap();
    b.drain_all();
    b.check().unwrap();
}
