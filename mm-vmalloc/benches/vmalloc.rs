//! mm-vmalloc side by side with a first-fit baseline (see `common`): an
//! allocate+free pair of one page and of 1 MiB with 100 live areas, and of
//! one page with 100, 1,000 and 15,000 live areas (Linux's test_vmalloc
//! calls the last `long_busy_list`). Ratios come from the same run.

mod common;

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mm_types::PAGE_BYTES;

fn pair(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair_100_live");
    for (name, size) in [("1page", PAGE_BYTES), ("1MiB", 1 << 20)] {
        let mut ours = Ours::new();
        fill(&mut ours, 100);
        g.bench_function(BenchmarkId::new("mm-vmalloc", name), |b| b.iter(|| pairs(&mut ours, size, 1)));
        let mut ff = FirstFit::new();
        fill(&mut ff, 100);
        g.bench_function(BenchmarkId::new("first-fit", name), |b| b.iter(|| pairs(&mut ff, size, 1)));
    }
    g.finish();
}

fn busy(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair_1page_busy");
    for live in [100usize, 1000, 15_000] {
        let mut ours = Ours::new();
        fill(&mut ours, live);
        g.bench_function(BenchmarkId::new("mm-vmalloc", live), |b| b.iter(|| pairs(&mut ours, PAGE_BYTES, 1)));
        let mut ff = FirstFit::new();
        fill(&mut ff, live);
        g.bench_function(BenchmarkId::new("first-fit", live), |b| b.iter(|| pairs(&mut ff, PAGE_BYTES, 1)));
    }
    g.finish();
}

criterion_group!(benches, pair, busy);
criterion_main!(benches);
