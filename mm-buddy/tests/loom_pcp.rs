//! Loom model of the per-CPU caches against the zone lock: two CPUs refill
//! from and drain to the buddy lists (batch 2, high mark 4) while a third
//! context drains every cache (the path before an out-of-memory report), and
//! two CPUs race to free the same block. Every interleaving of the locks
//! (bounded by preemptions) must keep the allocator consistent (`check`),
//! lose no frame, and let exactly one of two racing frees succeed.
//!
//! With a pinned CPU source (`Pinned`), the owner uses its caches with no
//! lock while another CPU's `drain_all` posts a drain request: the owner's
//! next call honours it, no cache access races (loom tracks the slot's
//! cell), and no frame is lost.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p mm-buddy --test loom_pcp`.
#![cfg(loom)]

use std::cell::Cell;

use loom::sync::Arc;
use mm_buddy::{BuddyAllocator, BuddyConfig};
use mm_types::percpu::Pinned;
use mm_types::testkit::loom_model::{model, spawn};
use mm_types::testkit::SimPhysMemory;
use mm_types::{AllocFlags, CpuLocal, FrameError, FrameProvider, Order, PhysAddr};

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

type Buddy = BuddyAllocator<'static, SimPhysMemory, LoomCpus, 2>;

fn small_buddy() -> Arc<Buddy> {
    // 64 usable frames after one metadata frame.
    let mem = SimPhysMemory::new(PhysAddr::new(16 << 20).unwrap(), 65 * 4096);
    let config = BuddyConfig { max_order: 3, pcp_batch: 2, pcp_high: 2, min_free_kib: Some(0), ..Default::default() };
    let b = BuddyAllocator::new(mem.clone(), LoomCpus, config).unwrap();
    // SAFETY: the simulated RAM belongs to this allocator alone.
    unsafe { b.add_memory(mem.span()).unwrap() };
    Arc::new(b)
}

#[test]
fn refill_and_drain_race_with_drain_all() {
    model(|| {
        let b = small_buddy();
        let workers: Vec<_> = (0..2)
            .map(|cpu| {
                let b = b.clone();
                spawn(move || {
                    CPU.with(|c| c.set(cpu));
                    let x = b.allocate(Order::ZERO, AllocFlags::empty()).unwrap();
                    let y = b.allocate(Order::ZERO, AllocFlags::empty()).unwrap();
                    assert_ne!(x, y);
                    b.free(x).unwrap();
                    b.free(y).unwrap();
                })
            })
            .collect();
        b.drain_all();
        for w in workers {
            w.join().unwrap();
        }
        b.drain_all();
        b.check().unwrap();
        assert_eq!(b.free_frame_count(), b.managed_frames());
    });
}

#[test]
fn racing_frees_of_one_block_one_wins() {
    model(|| {
        let b = small_buddy();
        let x = b.allocate(Order::ZERO, AllocFlags::empty()).unwrap();
        let racers: Vec<_> = (0..2)
            .map(|cpu| {
                let b = b.clone();
                spawn(move || {
                    CPU.with(|c| c.set(cpu));
                    b.free(x)
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results.contains(&Err(FrameError::DoubleFree(x))));
        b.drain_all();
        b.check().unwrap();
    });
}

#[test]
fn pinned_owner_and_drain_request_conserve_frames() {
    model(|| {
        let mem = SimPhysMemory::new(PhysAddr::new(16 << 20).unwrap(), 65 * 4096);
        let config =
            BuddyConfig { max_order: 3, pcp_batch: 2, pcp_high: 2, min_free_kib: Some(0), ..Default::default() };
        // SAFETY: the worker thread is CPU 0 alone and the model's thread CPU 1 alone, each making
        // one call at a time; CPU 0's caches are reached from CPU 1 only after the join.
        let cpus = unsafe { Pinned::new(LoomCpus) };
        let b = BuddyAllocator::<'static, _, _, 2>::new(mem.clone(), cpus, config).unwrap();
        // SAFETY: the simulated RAM belongs to this allocator alone.
        unsafe { b.add_memory(mem.span()).unwrap() };
        let b = Arc::new(b);
        let owner = {
            let b = b.clone();
            spawn(move || {
                CPU.with(|c| c.set(0));
                for _ in 0..2 {
                    let x = b.allocate(Order::ZERO, AllocFlags::empty()).unwrap();
                    b.free(x).unwrap();
                }
            })
        };
        CPU.with(|c| c.set(1));
        let y = b.allocate(Order::ZERO, AllocFlags::empty()).unwrap();
        b.free(y).unwrap();
        b.drain_all();
        assert_eq!(b.cached_frames(), 0);
        owner.join().unwrap();
        // SAFETY: the owner thread was joined; CPU 0 runs nothing.
        unsafe { b.drain_cpu_quiescent(0) };
        b.check().unwrap();
        assert_eq!(b.free_frame_count(), b.managed_frames());
    });
}
