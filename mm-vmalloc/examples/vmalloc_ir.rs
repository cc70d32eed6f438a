//! Runs one benchmark workload once, for counting instructions with
//! callgrind: `cargo xtask ir vmalloc` runs each allocator and workload under
//! `valgrind --tool=callgrind --toggle-collect=*measure_*`, so only the
//! measured phase counts, and divides by the operations this prints.
//!
//! Usage: `vmalloc_ir ALLOC WORKLOAD` with ALLOC `mm-vmalloc` or
//! `first-fit` and WORKLOAD one of `pair_1page`, `pair_1mib` (100 live
//! areas), `busy_100`, `busy_1000`, `busy_15000` (one-page pairs with that
//! many live areas). An operation is one allocate+free pair.

#[path = "../benches/common/mod.rs"]
mod common;

use common::*;
use mm_types::PAGE_BYTES;

#[inline(never)]
fn measure_pairs<V: VirtAlloc>(v: &mut V, size: u64, count: usize) -> usize {
    pairs(v, size, count);
    count
}

fn run<V: VirtAlloc>(v: &mut V, workload: &str) -> usize {
    let (live, size, count) = match workload {
        "pair_1page" => (100, PAGE_BYTES, 20_000),
        "pair_1mib" => (100, 1 << 20, 500),
        "busy_100" => (100, PAGE_BYTES, 2_000),
        "busy_1000" => (1000, PAGE_BYTES, 2_000),
        "busy_15000" => (15_000, PAGE_BYTES, 2_000),
        other => panic!("unknown workload {other}"),
    };
    fill(v, live);
    // Warm up past the first purge, so purges are part of the steady state.
    pairs(v, size, 100);
    measure_pairs(v, size, count)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (alloc, workload) = (args[1].as_str(), args[2].as_str());
    let ops = match alloc {
        "mm-vmalloc" => run(&mut Ours::new(), workload),
        "first-fit" => run(&mut FirstFit::new(), workload),
        other => panic!("unknown allocator {other}"),
    };
    println!("ops={ops}");
}
