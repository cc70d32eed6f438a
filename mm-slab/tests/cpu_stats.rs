//! The per-CPU counters (`CpuSlabStats`, MODEL.md 9): each allocation is a
//! hit on the CPU freelist or a refill, each free is kept in the CPU slot or
//! flushes its deferred queue, counted on the CPU that ran it, against a
//! model of the slab and queue states (MODEL.md 3 fixes the routing).

use core::ptr::NonNull;

use mm_slab::{Cache, CacheConfig, CacheFlags, CpuSlabStats, Kmalloc, KmallocConfig, SlabError};
use mm_types::percpu::Pinned;
use mm_types::testkit::{RefFrameProvider, SimPhysMemory, ThreadCpus};
use mm_types::PhysAddr;

/// Frees of other slabs queued in a CPU slot before the next one flushes
/// them (MODEL.md 3).
const DEFERRED: u64 = 16;

fn ram() -> SimPhysMemory {
    SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), 2 << 20)
}

fn stats(hits: u64, misses: u64, free_hits: u64, flushes: u64) -> CpuSlabStats {
    CpuSlabStats { alloc_hits: hits, alloc_misses: misses, free_hits, free_flushes: flushes }
}

#[test]
fn an_empty_slot_misses_once_per_slab_and_remote_frees_flush_every_seventeenth() {
    ThreadCpus::set_current(0);
    let mem = ram();
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _, 2> =
        Cache::new(&frames, mem.clone(), ThreadCpus::new(2), CacheConfig::new("obj", 64)).unwrap();
    let per_slab = cache.geometry().objects as u64;
    assert!(per_slab > 2 * DEFERRED, "the frees below reach several flushes: {per_slab}");
    // One slab and one object more: the first allocation grows slab A, the next per_slab - 1 are
    // hits, and the one after finds A used up and grows slab B.
    let mut objects = Vec::new();
    for i in 0..=per_slab {
        objects.push(cache.alloc().unwrap());
        let misses = 1 + i / per_slab;
        assert_eq!(cache.cpu_stats(0), stats(i + 1 - misses, misses, 0, 0), "allocation {i}");
    }
    let (hits, misses) = (per_slab - 1, 2);
    // B's object is in the CPU's current slab: onto the CPU freelist.
    // SAFETY: each object came from `cache` and is freed once.
    unsafe { cache.free(objects.pop().unwrap()).unwrap() };
    assert_eq!(cache.cpu_stats(0), stats(hits, misses, 1, 0));
    // A's objects are another slab's: queued, and every 17th free finds the queue full and flushes.
    let (mut queued, mut kept, mut flushes) = (0, 1, 0);
    for (i, x) in objects.into_iter().enumerate() {
        // SAFETY: as above.
        unsafe { cache.free(x).unwrap() };
        if queued == DEFERRED {
            flushes += 1;
            queued = 1;
        } else {
            queued += 1;
            kept += 1;
        }
        assert_eq!(cache.cpu_stats(0), stats(hits, misses, kept, flushes), "free {i}");
        assert_eq!(cache.stats().cpu_deferred_frees as u64, queued, "free {i}");
    }
    assert_eq!(flushes, (per_slab - 1) / DEFERRED);
    // Flushes that no free asked for count nothing.
    cache.flush_deferred().unwrap();
    cache.flush_cpus().unwrap();
    let s = cache.cpu_stats(0);
    assert_eq!(s, stats(hits, misses, kept, flushes));
    assert_eq!((s.allocations(), s.frees()), (per_slab + 1, per_slab + 1));
    assert_eq!(cache.cpu_stats(1), CpuSlabStats::default(), "CPU 1 ran nothing");
    assert_eq!(cache.stats().active_objects, 0);
}

#[test]
fn a_refill_from_remote_frees_of_the_current_slab_is_a_miss() {
    let mem = ram();
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _, 2> =
        Cache::new(&frames, mem.clone(), ThreadCpus::new(2), CacheConfig::new("obj", 64)).unwrap();
    let per_slab = cache.geometry().objects as u64;
    ThreadCpus::set_current(0);
    let mut objects: Vec<NonNull<u8>> = (0..per_slab).map(|_| cache.alloc().unwrap()).collect();
    assert_eq!(cache.cpu_stats(0), stats(per_slab - 1, 1, 0, 0));
    // CPU 1 frees two of CPU 0's objects and sends them to their slab: CPU 0's current one.
    ThreadCpus::set_current(1);
    for x in objects.drain(..2) {
        // SAFETY: each object came from `cache` and is freed once.
        unsafe { cache.free(x).unwrap() };
    }
    cache.flush_deferred().unwrap();
    assert_eq!(cache.cpu_stats(1), stats(0, 0, 2, 0));
    // CPU 0's freelist is empty: the refill takes the slab's own freelist back (one miss), then the
    // second object is a hit.
    ThreadCpus::set_current(0);
    objects.push(cache.alloc().unwrap());
    assert_eq!(cache.cpu_stats(0), stats(per_slab - 1, 2, 0, 0));
    objects.push(cache.alloc().unwrap());
    assert_eq!(cache.cpu_stats(0), stats(per_slab, 2, 0, 0));
    assert_eq!(cache.stats().slabs_grown, 1);
    for x in objects {
        // SAFETY: as above.
        unsafe { cache.free(x).unwrap() };
    }
}

#[test]
fn refused_frees_and_debug_caches_count_nothing() {
    ThreadCpus::set_current(0);
    let mem = ram();
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _, 2> =
        Cache::new(&frames, mem.clone(), ThreadCpus::new(2), CacheConfig::new("obj", 64)).unwrap();
    let other: Cache<_, _, _, 2> =
        Cache::new(&frames, mem.clone(), ThreadCpus::new(2), CacheConfig::new("other", 64)).unwrap();
    let (a, b) = (cache.alloc().unwrap(), other.alloc().unwrap());
    // SAFETY: `a` is freed once; the refused frees below change nothing (MODEL.md 5).
    unsafe {
        cache.free(a).unwrap();
        assert_eq!(cache.free(a), Err(SlabError::DoubleFree { addr: a.as_ptr().addr() }));
        assert!(matches!(cache.free(b), Err(SlabError::ForeignPointer { .. })));
        assert!(matches!(cache.free(a.byte_add(8)), Err(SlabError::Misaligned { .. })));
        other.free(b).unwrap();
    }
    assert_eq!(cache.cpu_stats(0), stats(0, 1, 1, 0));
    // A debug cache runs everything under the node lock: no CPU slot, no count.
    let config = CacheConfig { flags: CacheFlags::DEBUG, ..CacheConfig::new("debug", 64) };
    let debug: Cache<_, _, _, 2> = Cache::new(&frames, mem.clone(), ThreadCpus::new(2), config).unwrap();
    let d = debug.alloc().unwrap();
    // SAFETY: freed once.
    unsafe { debug.free(d).unwrap() };
    assert_eq!(debug.cpu_stats(0), CpuSlabStats::default());
}

#[test]
fn kmalloc_sums_its_classes_per_cpu() {
    let mem = ram();
    let frames = RefFrameProvider::new(&mem);
    let heap: Kmalloc<_, _, _, 2> =
        Kmalloc::new(&frames, mem.clone(), ThreadCpus::new(2), KmallocConfig::default()).unwrap();
    ThreadCpus::set_current(0);
    // kmalloc-8: one refill, two hits; kmalloc-224: one refill; a large allocation: not counted.
    let small: Vec<NonNull<u8>> = (0..3).map(|_| heap.kmalloc(8).unwrap()).collect();
    let mid = heap.kmalloc(200).unwrap();
    let large = heap.kmalloc(20_000).unwrap();
    assert_eq!(heap.cpu_stats(0), stats(2, 2, 0, 0));
    // CPU 1: its own refill of kmalloc-8, and remote frees of CPU 0's objects (queued).
    ThreadCpus::set_current(1);
    let own = heap.kmalloc(8).unwrap();
    // SAFETY: each block came from `heap` with that size and is freed once.
    unsafe {
        for x in small {
            heap.kfree(x, 8).unwrap();
        }
        heap.kfree(own, 8).unwrap();
        heap.kfree(large, 20_000).unwrap();
    }
    assert_eq!(heap.cpu_stats(1), stats(0, 1, 4, 0));
    ThreadCpus::set_current(0);
    // SAFETY: as above.
    unsafe { heap.kfree(mid, 200).unwrap() };
    assert_eq!(heap.cpu_stats(0), stats(2, 2, 1, 0));
}

#[test]
fn pinned_counts_as_locked() {
    let (mem_l, mem_p) = (ram(), ram());
    let (frames_l, frames_p) = (RefFrameProvider::new(&mem_l), RefFrameProvider::new(&mem_p));
    let l: Kmalloc<_, _, _, 2> =
        Kmalloc::new(&frames_l, mem_l.clone(), ThreadCpus::new(2), KmallocConfig::default()).unwrap();
    // SAFETY: this test uses the pinned allocator from one thread, switching CPU ids only between
    // calls; no signal handler allocates.
    let cpus = unsafe { Pinned::new(ThreadCpus::new(2)) };
    let p: Kmalloc<_, _, _, 2> = Kmalloc::new(&frames_p, mem_p.clone(), cpus, KmallocConfig::default()).unwrap();
    let mut live = Vec::new();
    for (step, cpu) in [0, 1, 0, 1].into_iter().enumerate() {
        ThreadCpus::set_current(cpu);
        for i in 0..40 {
            let size = 8 + (i * 24 + step * 8) % 300;
            live.push((l.kmalloc(size).unwrap(), p.kmalloc(size).unwrap(), size));
        }
        // Free every other one, some of them another CPU's.
        for k in (0..live.len()).rev().step_by(2) {
            let (a, b, size) = live.swap_remove(k);
            // SAFETY: each pair came from `l` and `p` with that size and is freed once.
            unsafe { (l.kfree(a, size).unwrap(), p.kfree(b, size).unwrap()) };
        }
        assert_eq!(p.cpu_stats(cpu), l.cpu_stats(cpu), "step {step}");
    }
    let s = l.cpu_stats(0);
    assert!(s.alloc_hits > 0 && s.alloc_misses > 0 && s.free_hits > 0, "{s:?}");
    for (a, b, size) in live {
        // SAFETY: the rest, once each.
        unsafe { (l.kfree(a, size).unwrap(), p.kfree(b, size).unwrap()) };
    }
}

#[test]
#[should_panic(expected = "out of reach")]
fn pinned_refuses_another_cpus_counters() {
    let mem = ram();
    let frames = RefFrameProvider::new(&mem);
    // SAFETY: one thread, which never changes its CPU id.
    let cpus = unsafe { Pinned::new(ThreadCpus::new(2)) };
    let heap: Kmalloc<_, _, _, 2> = Kmalloc::new(&frames, mem.clone(), cpus, KmallocConfig::default()).unwrap();
    ThreadCpus::set_current(0);
    heap.cpu_stats(1);
}
