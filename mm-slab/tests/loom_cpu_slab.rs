//! Loom model of the per-CPU fast path against remote frees and slab
//! hand-back (MODEL.md 3, 4 and 8): CPU 0 allocates and frees on its own
//! slab while CPU 1 frees objects of CPU 0's slabs (remote frees, some of
//! which empty a slab and hand it back), and a third context shrinks the
//! cache. In every interleaving (bounded by preemptions) no object is handed
//! out twice, the counts agree, `validate` finds nothing, and after the last
//! shrink every frame is back with the provider.
//!
//! The same race with a pinned CPU source (`Pinned`): the owners use their
//! CPU slabs with no lock, the third context's flush becomes a request, and
//! loom's tracked cell reports any access of a CPU slab that races.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p mm-slab --test loom_cpu_slab`.
#![cfg(loom)]

use std::cell::Cell;
use std::ptr::NonNull;

use loom::sync::Arc;
use mm_slab::{Cache, CacheConfig};
use mm_types::percpu::Pinned;
use mm_types::testkit::loom_model::{model, spawn};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{CpuLocal, PhysAddr};

loom::thread_local! {
    static CPU: Cell<usize> = Cell::new(0);
}

/// Each loom thread says which CPU it is.
struct LoomCpus;
impl CpuLocal for LoomCpus {
    fn current_cpu(&self) -> usize {
        CPU.with(Cell::get)
    }
    fn cpu_count(&self) -> usize {
        2
    }
}

struct World {
    frames: RefFrameProvider,
    mem: SimPhysMemory,
}

type SlabCache = Cache<'static, RefFrameProvider, SimPhysMemory, LoomCpus, 2>;

/// Two objects per slab, no empty slab kept, one CPU partial slab.
fn cache() -> Arc<SlabCache> {
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), 16 * 4096);
    let world: &'static World = Box::leak(Box::new(World { frames: RefFrameProvider::new(&mem), mem }));
    let config = CacheConfig { min_empty_slabs: 0, cpu_partial: 1, max_order: 0, ..CacheConfig::new("loom", 2000) };
    let cache = Cache::new(&world.frames, world.mem.clone(), LoomCpus, config).unwrap();
    assert_eq!(cache.geometry().objects, 2);
    Arc::new(cache)
}

fn ptr(addr: usize) -> NonNull<u8> {
    NonNull::new(std::ptr::with_exposed_provenance_mut(addr)).unwrap()
}

#[test]
fn fast_path_against_remote_frees_and_shrink() {
    model(|| {
        let cache = cache();
        // CPU 0 fills two slabs; the second is its current slab.
        let objs: Vec<usize> = (0..4).map(|_| cache.alloc().unwrap().as_ptr().expose_provenance()).collect();
        let local = {
            let cache = cache.clone();
            let (a, b) = (objs[2], objs[3]);
            spawn(move || {
                CPU.with(|c| c.set(0));
                // SAFETY: objects of this cache, each freed once.
                unsafe { cache.free(ptr(a)).unwrap() };
                let again = cache.alloc().unwrap();
                // SAFETY: as above.
                unsafe {
                    cache.free(again).unwrap();
                    cache.free(ptr(b)).unwrap();
                }
            })
        };
        let remote = {
            let cache = cache.clone();
            let (a, b) = (objs[0], objs[1]);
            spawn(move || {
                CPU.with(|c| c.set(1));
                // Remote frees of a full slab: the first makes it CPU 1's
                // partial slab, the second empties it.
                // SAFETY: as above.
                unsafe {
                    cache.free(ptr(a)).unwrap();
                    cache.free(ptr(b)).unwrap();
                }
            })
        };
        cache.flush_cpus().unwrap();
        local.join().unwrap();
        remote.join().unwrap();
        assert_eq!(cache.stats().active_objects, 0);
        assert_eq!(cache.validate(|c| panic!("{c}")), 0);
        cache.shrink().unwrap();
        assert_eq!(cache.stats().slabs, 0);
    });
}

#[test]
fn concurrent_allocations_never_share_an_object() {
    model(|| {
        let cache = cache();
        let workers: Vec<_> = (0..2)
            .map(|cpu| {
                let cache = cache.clone();
                spawn(move || {
                    CPU.with(|c| c.set(cpu));
                    let x = cache.alloc().unwrap();
                    let y = cache.alloc().unwrap();
                    assert_ne!(x, y);
                    (x.as_ptr().expose_provenance(), y.as_ptr().expose_provenance())
                })
            })
            .collect();
        let mut all: Vec<usize> = workers
            .into_iter()
            .flat_map(|w| {
                let (x, y) = w.join().unwrap();
                [x, y]
            })
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4, "an object was handed out twice");
        // Free everything from the other CPU: all remote.
        CPU.with(|c| c.set(1));
        for a in all {
            // SAFETY: each object freed once.
            unsafe { cache.free(ptr(a)).unwrap() };
        }
        assert_eq!(cache.validate(|c| panic!("{c}")), 0);
        cache.shrink().unwrap();
        assert_eq!(cache.stats().slabs, 0);
    });
}

#[test]
fn pinned_fast_path_against_remote_frees_and_flush_requests() {
    model(|| {
        let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), 16 * 4096);
        let world: &'static World = Box::leak(Box::new(World { frames: RefFrameProvider::new(&mem), mem }));
        let config = CacheConfig { min_empty_slabs: 0, cpu_partial: 1, max_order: 0, ..CacheConfig::new("loom", 2000) };
        // SAFETY: CPU 0 is the model's thread until it spawns, then the `local` thread alone; CPU 1
        // is the `remote` thread alone; the model's thread is CPU 2 from then on. Each makes one
        // call at a time, and CPUs 0 and 1 are reached from CPU 2 only after the joins.
        let cpus = unsafe { Pinned::new(LoomCpus) };
        let cache: Cache<'static, _, _, _, 3> = Cache::new(&world.frames, world.mem.clone(), cpus, config).unwrap();
        let cache = Arc::new(cache);
        let objs: Vec<usize> = (0..4).map(|_| cache.alloc().unwrap().as_ptr().expose_provenance()).collect();
        let local = {
            let cache = cache.clone();
            let (a, b) = (objs[2], objs[3]);
            spawn(move || {
                CPU.with(|c| c.set(0));
                // SAFETY: objects of this cache, each freed once.
                unsafe { cache.free(ptr(a)).unwrap() };
                let again = cache.alloc().unwrap();
                // SAFETY: as above.
                unsafe {
                    cache.free(again).unwrap();
                    cache.free(ptr(b)).unwrap();
                }
            })
        };
        let remote = {
            let cache = cache.clone();
            let (a, b) = (objs[0], objs[1]);
            spawn(move || {
                CPU.with(|c| c.set(1));
                // SAFETY: as above.
                unsafe {
                    cache.free(ptr(a)).unwrap();
                    cache.free(ptr(b)).unwrap();
                }
            })
        };
        CPU.with(|c| c.set(2));
        cache.flush_cpus().unwrap();
        local.join().unwrap();
        remote.join().unwrap();
        for cpu in 0..2 {
            // SAFETY: the threads acting as CPUs 0 and 1 were joined.
            unsafe { cache.flush_cpu_quiescent(cpu).unwrap() };
        }
        assert_eq!(cache.stats().active_objects, 0);
        assert_eq!(cache.validate(|c| panic!("{c}")), 0);
        cache.shrink().unwrap();
        assert_eq!(cache.stats().slabs, 0);
    });
}
