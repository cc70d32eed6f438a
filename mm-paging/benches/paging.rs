//! mm-paging side by side with the `x86_64` crate's `OffsetPageTable`,
//! `page_table_multiarch` and `page-table-generic` over 1 GiB of 4 KiB
//! pages on simulated physical memory. Run with `cargo bench -p mm-paging
//! --bench paging`; instruction counts come from `cargo xtask ir paging`.
//! No bench asserts a time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn timed<T: Tables>(iters: u64, make: impl Fn() -> T, setup: impl Fn(&mut T), run: impl Fn(&mut T)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut t = make();
        setup(&mut t);
        let start = Instant::now();
        run(&mut t);
        total += start.elapsed();
        drop(t);
    }
    total
}

fn map_unmap(c: &mut Criterion) {
    for (group, huge) in [("map_1gib_4k_pages", false), ("map_1gib_huge_pages_allowed", true)] {
        let mut g = c.benchmark_group(group);
        g.sample_size(10).throughput(Throughput::Elements(PAGES));
        g.bench_function("mm-paging", |b| b.iter_custom(|n| timed(n, Ours::new, |_| {}, |t| t.map(PAGES, huge))));
        g.bench_function("x86_64", |b| b.iter_custom(|n| timed(n, X86Crate::new, |_| {}, |t| t.map(PAGES, huge))));
        g.bench_function("page_table_multiarch", |b| {
            b.iter_custom(|n| timed(n, Multiarch::new, |_| {}, |t| t.map(PAGES, huge)))
        });
        g.bench_function("page-table-generic", |b| {
            b.iter_custom(|n| timed(n, Generic::new, |_| {}, |t| t.map(PAGES, huge)))
        });
        g.finish();
    }
    let mut g = c.benchmark_group("unmap_1gib_4k_pages");
    g.sample_size(10).throughput(Throughput::Elements(PAGES));
    g.bench_function("mm-paging", |b| {
        b.iter_custom(|n| timed(n, Ours::new, |t| t.map(PAGES, false), |t| t.unmap(PAGES, false)))
    });
    g.bench_function("x86_64", |b| {
        b.iter_custom(|n| timed(n, X86Crate::new, |t| t.map(PAGES, false), |t| t.unmap(PAGES, false)))
    });
    g.bench_function("page_table_multiarch", |b| {
        b.iter_custom(|n| timed(n, Multiarch::new, |t| t.map(PAGES, false), |t| t.unmap(PAGES, false)))
    });
    g.bench_function("page-table-generic", |b| {
        b.iter_custom(|n| timed(n, Generic::new, |t| t.map(PAGES, false), |t| t.unmap(PAGES, false)))
    });
    g.finish();
}

fn translate(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate_random");
    g.throughput(Throughput::Elements(1));
    let mut ours = Ours::new();
    ours.map(PAGES, false);
    let mut rng = Rng(3);
    g.bench_function("mm-paging", |b| b.iter(|| translate_random(&ours, &mut rng, 1)));
    let mut x = X86Crate::new();
    x.map(PAGES, false);
    g.bench_function("x86_64", |b| b.iter(|| translate_random(&x, &mut rng, 1)));
    let mut m = Multiarch::new();
    m.map(PAGES, false);
    g.bench_function("page_table_multiarch", |b| b.iter(|| translate_random(&m, &mut rng, 1)));
    let mut p = Generic::new();
    p.map(PAGES, false);
    g.bench_function("page-table-generic", |b| b.iter(|| translate_random(&p, &mut rng, 1)));
    g.finish();
}

/// One call per 4 KiB page (what page faults and eviction do), over the
/// same 1 GiB.
fn per_page(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_1gib_one_page_per_call");
    g.sample_size(10).throughput(Throughput::Elements(PAGES));
    let map_all = |t: &mut dyn Tables| (0..PAGES).for_each(|i| t.map_page(i));
    g.bench_function("mm-paging", |b| b.iter_custom(|n| timed(n, Ours::new, |_| {}, |t| map_all(t))));
    g.bench_function("x86_64", |b| b.iter_custom(|n| timed(n, X86Crate::new, |_| {}, |t| map_all(t))));
    g.bench_function("page_table_multiarch", |b| b.iter_custom(|n| timed(n, Multiarch::new, |_| {}, |t| map_all(t))));
    g.bench_function("page-table-generic", |b| b.iter_custom(|n| timed(n, Generic::new, |_| {}, |t| map_all(t))));
    g.finish();
    let mut g = c.benchmark_group("unmap_1gib_one_page_per_call");
    g.sample_size(10).throughput(Throughput::Elements(PAGES));
    let unmap_all = |t: &mut dyn Tables| (0..PAGES).for_each(|i| t.unmap_page(i));
    let full = |t: &mut dyn Tables| t.map(PAGES, false);
    g.bench_function("mm-paging", |b| b.iter_custom(|n| timed(n, Ours::new, |t| full(t), |t| unmap_all(t))));
    g.bench_function("x86_64", |b| b.iter_custom(|n| timed(n, X86Crate::new, |t| full(t), |t| unmap_all(t))));
    g.bench_function("page_table_multiarch", |b| {
        b.iter_custom(|n| timed(n, Multiarch::new, |t| full(t), |t| unmap_all(t)))
    });
    g.bench_function("page-table-generic", |b| {
        b.iter_custom(|n| timed(n, Generic::new, |t| full(t), |t| unmap_all(t)))
    });
    g.finish();
}

criterion_group!(benches, translate, map_unmap, per_page);
criterion_main!(benches);
