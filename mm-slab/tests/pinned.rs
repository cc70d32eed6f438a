//! The pinned mode (a CPU source that promises pinned, non-re-entered use,
//! `mm_types::percpu::Pinned`) against the default locked mode: the same
//! calls give the same objects and counts, flush requests reach the other
//! CPUs, and threads on their own CPUs lose and duplicate no object.
//! Numbers refer to MODEL.md.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::BTreeSet;

use mm_slab::{Cache, CacheConfig, Kmalloc, KmallocConfig};
use mm_types::percpu::Pinned;
use mm_types::testkit::{RefFrameProvider, SimPhysMemory, ThreadCpus, XorShift as Rng};
use mm_types::{PhysAddr, PhysMemory};

fn set_cpu(cpu: usize) {
    ThreadCpus::set_current(cpu);
}

/// The pinned CPU source of these tests.
fn pinned_cpus() -> Pinned<ThreadCpus> {
    // SAFETY: every test below uses a pinned allocator either from one thread (switching CPU ids only
    // between calls) or from threads that each set a CPU id of their own; no signal handler
    // allocates; other CPUs' slabs are reached from the main thread only after joining.
    unsafe { Pinned::new(ThreadCpus::new(2)) }
}

fn ram() -> SimPhysMemory {
    SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), 4 << 20)
}

#[test]
fn pinned_kmalloc_gives_the_same_objects_and_counts_as_locked() {
    // MODEL.md 2 and 3: one call sequence over two CPUs, switched between calls, in both modes.
    let (mem_l, mem_p) = (ram(), ram());
    let (frames_l, frames_p) = (RefFrameProvider::new(&mem_l), RefFrameProvider::new(&mem_p));
    let l: Kmalloc<_, _, _, 2> =
        Kmalloc::new(&frames_l, mem_l.clone(), ThreadCpus::new(2), KmallocConfig::default()).unwrap();
    let p: Kmalloc<_, _, _, 2> =
        Kmalloc::new(&frames_p, mem_p.clone(), pinned_cpus(), KmallocConfig::default()).unwrap();
    let (off_l, off_p) = (mem_l.linear_offset().unwrap() as usize, mem_p.linear_offset().unwrap() as usize);
    let steps = if cfg!(miri) { 200 } else { 20_000 };
    let mut rng = Rng(3);
    let mut live: Vec<(NonNull<u8>, NonNull<u8>, Layout)> = Vec::new();
    for step in 0..steps {
        let r = rng.next();
        set_cpu((r >> 8) as usize % 2);
        if (r % 3 != 0 && live.len() < 300) || live.is_empty() {
            let layout = Layout::from_size_align(8 + (r >> 16) as usize % 700, 8).unwrap();
            let (a, b) = (l.alloc(layout).unwrap(), p.alloc(layout).unwrap());
            assert_eq!(
                a.as_ptr().addr().wrapping_sub(off_l),
                b.as_ptr().addr().wrapping_sub(off_p),
                "step {step}: another object"
            );
            live.push((a, b, layout));
        } else {
            let (a, b, layout) = live.swap_remove((r >> 32) as usize % live.len());
            // SAFETY: each object is freed once, here.
            unsafe {
                assert_eq!(l.free(a, layout), Ok(()));
                assert_eq!(p.free(b, layout), Ok(()));
            }
        }
    }
    for (a, b, layout) in live.drain(..) {
        // SAFETY: the rest, once each.
        unsafe { (l.free(a, layout).unwrap(), p.free(b, layout).unwrap()) };
    }
    for cpu in 0..2 {
        set_cpu(cpu);
        l.flush_local().unwrap();
        p.flush_local().unwrap();
    }
    let (sl, sp): (Vec<_>, Vec<_>) = (l.stats().collect(), p.stats().collect());
    assert_eq!(sl, sp);
    assert!(sp.iter().all(|s| s.active_objects == 0), "{sp:?}");
    assert_eq!((l.validate(|c| panic!("{c}")), p.validate(|c| panic!("{c}"))), (0, 0));
    assert_eq!(l.shrink(), p.shrink());
    assert_eq!(frames_l.allocated_blocks(), frames_p.allocated_blocks());
}

#[test]
fn flush_requests_reach_other_cpus() {
    let mem = ram();
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _, 2> =
        Cache::new(&frames, mem.clone(), pinned_cpus(), CacheConfig::new("obj", 64)).unwrap();
    set_cpu(0);
    let a = cache.alloc().unwrap();
    // SAFETY: freed once.
    unsafe { cache.free(a).unwrap() };
    assert_eq!(cache.stats().cpu_slabs, 1);
    // CPU 1 flushes: CPU 0's slab stays until CPU 0 next uses the cache.
    set_cpu(1);
    cache.flush_cpus().unwrap();
    assert_eq!(cache.stats().cpu_slabs, 1, "CPU 0's slab is out of reach");
    set_cpu(0);
    let b = cache.alloc().unwrap();
    let s = cache.stats();
    assert_eq!((s.cpu_slabs, s.active_objects), (1, 1), "the request was honoured, then a slab frozen again");
    assert!(s.slabs_grown == 1, "the flushed slab is the one refilled: {s:?}");
    // SAFETY: freed once.
    unsafe { cache.free(b).unwrap() };
    set_cpu(1);
    // SAFETY: CPU 0 runs nothing: this test is one thread, now acting as CPU 1.
    unsafe { cache.flush_cpu_quiescent(0).unwrap() };
    let s = cache.stats();
    assert_eq!((s.cpu_slabs, s.active_objects), (0, 0));
    assert_eq!(cache.validate(|c| panic!("{c}")), 0);
    cache.destroy().unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
}

#[test]
fn pinned_threads_lose_and_duplicate_no_object() {
    // MODEL.md 2: each thread is one CPU; afterwards every object is accounted for once.
    let mem = ram();
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _, 2> =
        Cache::new(&frames, mem.clone(), pinned_cpus(), CacheConfig::new("obj", 48)).unwrap();
    let rounds = if cfg!(miri) { 60 } else { 20_000 };
    let kept: Vec<Vec<usize>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|cpu| {
                let cache = &cache;
                s.spawn(move || {
                    set_cpu(cpu);
                    let mut rng = Rng(cpu as u64 + 5);
                    let mut mine: Vec<NonNull<u8>> = Vec::new();
                    for i in 0..rounds {
                        if rng.next() % 2 == 0 || mine.is_empty() {
                            mine.push(cache.alloc().unwrap());
                        } else {
                            let p = mine.swap_remove(rng.next() as usize % mine.len());
                            // SAFETY: freed once.
                            unsafe { cache.free(p).unwrap() };
                        }
                        if i % 128 == 0 {
                            cache.flush_cpus().unwrap();
                        }
                    }
                    mine.into_iter().map(|p| p.as_ptr().expose_provenance()).collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for cpu in 0..2 {
        // SAFETY: both worker threads were joined: no CPU runs the cache but this thread.
        unsafe { cache.flush_cpu_quiescent(cpu).unwrap() };
    }
    let all: BTreeSet<usize> = kept.iter().flatten().copied().collect();
    assert_eq!(all.len(), kept.iter().map(Vec::len).sum::<usize>(), "an object handed out twice");
    assert_eq!(cache.stats().active_objects, all.len());
    for addr in all {
        let p = NonNull::new(std::ptr::with_exposed_provenance_mut::<u8>(addr)).unwrap();
        // SAFETY: each kept object freed once.
        unsafe { cache.free(p).unwrap() };
    }
    assert_eq!(cache.validate(|c| panic!("{c}")), 0);
    cache.destroy().unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
}
