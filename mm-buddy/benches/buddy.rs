//! mm-buddy side by side with `buddy_system_allocator`, `bitmap-allocator`,
//! `frame-alloc` and `free-list` over 1 GiB of 4 KiB frames. Run with
//! `cargo bench -p mm-buddy --bench buddy`; instruction counts per operation
//! come from `cargo xtask ir buddy` (callgrind). No bench asserts a time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn pair(c: &mut Criterion) {
    let mem = ours_memory();
    let mut g = c.benchmark_group("order0_pair_warm");
    g.throughput(Throughput::Elements(1));
    macro_rules! run {
        ($name:expr, $make:expr) => {{
            let mut a = $make;
            let _held = a.alloc(0).unwrap();
            g.bench_function($name, |b| b.iter(|| pairs(&mut a, 1)));
        }};
    }
    run!("mm-buddy", Ours::new(&mem));
    run!("mm-buddy-pinned", OursPinned::new(&mem));
    run!("buddy_system_allocator", Bsa::new());
    run!("bitmap-allocator", Bitmap::new());
    run!("frame-alloc", FrameAlloc::new());
    run!("free-list", FreeListPeer::new());
    g.finish();
}

/// Times `measure` on a fresh allocator per iteration (setup not timed).
fn fresh<A: Frames>(iters: u64, make: &dyn Fn() -> A, measure: &dyn Fn(&mut A) -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut a = make();
        total += measure(&mut a);
    }
    total
}

fn alloc_all_group(c: &mut Criterion) {
    let mem = ours_memory();
    let mut g = c.benchmark_group("alloc_all_frames");
    g.sample_size(10).throughput(Throughput::Elements(FRAMES as u64));
    macro_rules! run {
        ($name:expr, $make:expr) => {
            g.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    fresh(iters, &|| $make, &|a| {
                        let mut out = Vec::with_capacity(FRAMES);
                        let t = Instant::now();
                        alloc_all(a, &mut out);
                        let d = t.elapsed();
                        assert_eq!(out.len(), FRAMES);
                        d
                    })
                })
            });
        };
    }
    run!("mm-buddy", Ours::new(&mem));
    run!("buddy_system_allocator", Bsa::new());
    run!("bitmap-allocator", Bitmap::new());
    run!("frame-alloc", FrameAlloc::new());
    run!("free-list", FreeListPeer::new());
    g.finish();
}

fn free_all_group(c: &mut Criterion) {
    let mem = ours_memory();
    let mut g = c.benchmark_group("free_all_random");
    g.sample_size(10).throughput(Throughput::Elements(FRAMES as u64));
    macro_rules! run {
        ($name:expr, $make:expr, $check:expr) => {
            g.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    fresh(iters, &|| $make, &|a| {
                        let mut out = Vec::with_capacity(FRAMES);
                        alloc_all(a, &mut out);
                        shuffle(&mut out, 99);
                        let t = Instant::now();
                        free_all(a, &out);
                        let d = t.elapsed();
                        assert!($check(a), "a max-order block must be allocatable after freeing everything");
                        d
                    })
                })
            });
        };
    }
    run!("mm-buddy", Ours::new(&mem), |a: &mut Ours| a.max_order_available());
    run!("buddy_system_allocator", Bsa::new(), |a: &mut Bsa| a.alloc(10).is_some());
    run!("bitmap-allocator", Bitmap::new(), |a: &mut Bitmap| a.alloc(10).is_some());
    run!("frame-alloc", FrameAlloc::new(), |a: &mut FrameAlloc| a.alloc(10).is_some());
    g.finish();
}

fn random_orders_group(c: &mut Criterion) {
    let mem = ours_memory();
    let mut g = c.benchmark_group("random_orders_0_9_half_full");
    g.throughput(Throughput::Elements(2));
    macro_rules! run {
        ($name:expr, $make:expr) => {{
            let mut a = $make;
            let mut rng = Rng(5);
            let mut held = fill_half(&mut a, &mut rng);
            g.bench_with_input(BenchmarkId::from_parameter($name), &(), |b, _| {
                b.iter(|| random_orders(&mut a, &mut held, &mut rng, 1))
            });
        }};
    }
    run!("mm-buddy", Ours::new(&mem));
    run!("buddy_system_allocator", Bsa::new());
    run!("bitmap-allocator", Bitmap::new());
    run!("frame-alloc", FrameAlloc::new());
    g.finish();
}

criterion_group!(benches, pair, alloc_all_group, free_all_group, random_orders_group);
criterion_main!(benches);
