//! The page index against `BTreeMap<u64, u64>` (the map a kernel without a
//! page-cache tree would use) in the same run, one file of a million
//! cached pages:
//!
//! - `get_hit`: look-up of a cached page at a random index;
//! - `insert_remove`: a page removed and cached again at a random index
//!   (eviction and refault without shadows);
//! - `next_dirty`: from a random index, the next page tagged dirty when one
//!   page in 64 is (writeback's walk; the map scans its entries).
//!
//! `examples/index_ir.rs` counts instructions of the same operations
//! (`cargo xtask ir pagecache`).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mm_pagecache::{PageIndex, Tag};
use mm_types::testkit::XorShift;
use mm_types::FrameNumber;

const PAGES: u64 = 1 << 20;

fn bench(c: &mut Criterion) {
    let mut ours = PageIndex::new();
    let mut map = BTreeMap::new();
    for p in 0..PAGES {
        ours.insert(p, FrameNumber::new(p + 1).unwrap()).unwrap();
        map.insert(p, p + 1);
    }
    for p in (0..PAGES).step_by(64) {
        ours.set_tag(p + 17, Tag::Dirty).unwrap();
    }
    let dirty: BTreeMap<u64, u64> = map.iter().filter(|(&k, _)| k % 64 == 17).map(|(&k, &v)| (k, v)).collect();
    let mut g = c.benchmark_group("page_index_1M");
    let mut rng = XorShift(5);
    g.bench_function("get_hit/mm-pagecache", |b| b.iter(|| black_box(ours.page(rng.next() % PAGES))));
    g.bench_function("get_hit/BTreeMap", |b| b.iter(|| black_box(map.get(&(rng.next() % PAGES)).copied())));
    g.bench_function("insert_remove/mm-pagecache", |b| {
        b.iter(|| {
            let p = rng.next() % PAGES;
            let e = ours.remove(p);
            if let Some(mm_pagecache::Entry::Page(f)) = e {
                ours.insert(p, f).unwrap();
                if p % 64 == 17 {
                    ours.set_tag(p, Tag::Dirty).unwrap();
                }
            }
        })
    });
    g.bench_function("insert_remove/BTreeMap", |b| {
        b.iter(|| {
            let p = rng.next() % PAGES;
            let v = map.remove(&p).unwrap();
            map.insert(p, v);
        })
    });
    g.bench_function("next_dirty/mm-pagecache", |b| {
        b.iter(|| black_box(ours.next_tagged(rng.next() % PAGES, Tag::Dirty)))
    });
    // The map's best: a second map of the dirty pages, kept beside the first.
    g.bench_function("next_dirty/BTreeMap (second map)", |b| {
        b.iter(|| black_box(dirty.range(rng.next() % PAGES..).next().map(|(&k, &v)| (k, v))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
