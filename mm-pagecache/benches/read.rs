//! A sequential read of a 4 MiB file through the cache, 4 KiB at a time,
//! cold (the file's pages dropped before each pass), with readahead (up to
//! 32 pages, the default) and without, in the same run. Before measuring
//! it prints the backing requests of one pass of each and their ratio (the
//! issue's target: at least 8 times fewer requests with readahead).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use mm_pagecache::{CacheConfig, OpenFile, PageCache};
use mm_types::testkit::{MemFile, RefFrameProvider, SimPhysMemory};
use mm_types::{NoMappings, PhysAddr, PAGE_SIZE};

const PAGES: u64 = 1024;

type Cache = PageCache<RefFrameProvider, SimPhysMemory>;

fn setup(readahead_max: u64) -> (Cache, Arc<MemFile>, Arc<mm_pagecache::CachedFile>) {
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), (PAGES + 64) * PAGE_SIZE as u64);
    let frames = RefFrameProvider::new(&mem);
    let config = CacheConfig { readahead_max, ..CacheConfig::default() };
    // SAFETY: nothing maps the cache's pages.
    let cache = unsafe { PageCache::new(frames, mem, config, Box::new(NoMappings)) }.unwrap();
    let disk = Arc::new(MemFile::with_contents((0..PAGES as usize * PAGE_SIZE).map(|i| (i / 4099) as u8).collect()));
    let file = cache.open(disk.clone());
    (cache, disk, file)
}

/// One cold pass: every page read once, 4 KiB at a time.
fn pass(cache: &Cache, file: &Arc<mm_pagecache::CachedFile>) -> u64 {
    cache.drop_clean(file);
    let mut f = OpenFile::new(file.clone());
    let mut buf = [0u8; PAGE_SIZE];
    let mut sum = 0u64;
    for p in 0..PAGES {
        cache.read(&mut f, p * PAGE_SIZE as u64, &mut buf).unwrap();
        sum = sum.wrapping_add(u64::from(buf[17]));
    }
    sum
}

fn bench(c: &mut Criterion) {
    let with = setup(32);
    let without = setup(0);
    let requests = |(cache, disk, file): &(Cache, Arc<MemFile>, Arc<mm_pagecache::CachedFile>)| {
        let before = disk.read_requests();
        pass(cache, file);
        disk.read_requests() - before
    };
    let (r, n) = (requests(&with), requests(&without));
    eprintln!(
        "sequential read of {PAGES} pages: {r} backing requests with readahead, {n} without: {:.1}x fewer",
        n as f64 / r as f64
    );
    let mut g = c.benchmark_group("sequential_read_4MiB");
    g.bench_function("readahead", |b| b.iter(|| black_box(pass(&with.0, &with.2))));
    g.bench_function("no_readahead", |b| b.iter(|| black_box(pass(&without.0, &without.2))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
