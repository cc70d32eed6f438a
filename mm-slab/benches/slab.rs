//! mm-slab against the allocators a kernel would otherwise pick, side by
//! side in the same run: a hot 64-byte alloc+free pair, and 10,000 mixed
//! sizes (16 B to 2 KiB) allocated and then freed in random order.
//! Instruction counts per operation come from `cargo xtask ir slab`.

mod common;

use std::hint::black_box;

use common::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn pair(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair_64B");
    macro_rules! peer {
        ($name:literal, $heap:expr) => {{
            let mut h = $heap;
            pairs(&mut h, 1000);
            g.bench_function($name, |b| b.iter(|| pairs(&mut h, black_box(1))));
        }};
    }
    peer!("mm-slab", Ours::new());
    peer!("mm-slab-pinned", OursPinned::new());
    peer!("axallocator-slab", AxSlab::new());
    peer!("talc", Talc::new());
    peer!("linked_list_allocator", LinkedList::new());
    peer!("glibc", Glibc);
    g.finish();
}

fn mixed(c: &mut Criterion) {
    let layouts = mixed_sizes(7);
    let order = permutation(MIXED, 11);
    let mut g = c.benchmark_group("mixed_10000_alloc_then_free_random");
    g.sample_size(20);
    macro_rules! peer {
        ($name:literal, $heap:expr) => {{
            let mut h = $heap;
            g.bench_function($name, |b| {
                b.iter_batched_ref(
                    || Vec::with_capacity(MIXED),
                    |ptrs| {
                        alloc_all(&mut h, &layouts, ptrs);
                        free_in(&mut h, &layouts, ptrs, &order);
                    },
                    BatchSize::PerIteration,
                )
            });
        }};
    }
    peer!("mm-slab", Ours::new());
    peer!("mm-slab-pinned", OursPinned::new());
    peer!("axallocator-slab", AxSlab::new());
    peer!("talc", Talc::new());
    peer!("linked_list_allocator", LinkedList::new());
    peer!("glibc", Glibc);
    g.finish();
}

criterion_group!(benches, pair, mixed);
criterion_main!(benches);
