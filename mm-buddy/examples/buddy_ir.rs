//! Runs one benchmark workload once, for counting instructions with
//! callgrind: `cargo xtask ir buddy` runs every allocator and workload under
//! `valgrind --tool=callgrind --toggle-collect=*measure_*`, so only the
//! measured phase counts, and divides by the operations this prints.
//!
//! Usage: `buddy_ir ALLOCATOR WORKLOAD` with ALLOCATOR one of `mm-buddy`,
//! `buddy_system_allocator`, `bitmap-allocator`, `frame-alloc`, `free-list` and WORKLOAD one
//! of `pair`, `alloc_all`, `free_all`, `random_orders`.

#[path = "../benches/common/mod.rs"]
mod common;

use common::*;

const PAIRS: usize = 100_000;
const RANDOM_OPS: usize = 50_000;

#[inline(never)]
fn measure_pair<A: Frames>(a: &mut A) -> usize {
    pairs(a, PAIRS);
    PAIRS
}

#[inline(never)]
fn measure_alloc_all<A: Frames>(a: &mut A, out: &mut Vec<usize>) -> usize {
    alloc_all(a, out);
    out.len()
}

#[inline(never)]
fn measure_free_all<A: Frames>(a: &mut A, frames: &[usize]) -> usize {
    free_all(a, frames);
    frames.len()
}

#[inline(never)]
fn measure_random_orders<A: Frames>(a: &mut A, held: &mut Vec<(usize, u8)>, rng: &mut Rng) -> usize {
    random_orders(a, held, rng, RANDOM_OPS / 2)
}

fn run<A: Frames>(mut a: A, workload: &str) -> usize {
    match workload {
        "pair" => {
            let _held = a.alloc(0).unwrap();
            pairs(&mut a, 1000); // warm up the caches
            measure_pair(&mut a)
        }
        "alloc_all" => {
            let mut out = Vec::with_capacity(FRAMES);
            let n = measure_alloc_all(&mut a, &mut out);
            assert_eq!(n, FRAMES, "every frame is allocatable");
            n
        }
        "free_all" => {
            let mut out = Vec::with_capacity(FRAMES);
            alloc_all(&mut a, &mut out);
            shuffle(&mut out, 99);
            let n = measure_free_all(&mut a, &out);
            assert!(a.alloc(10).is_some(), "a max-order block is allocatable after freeing everything");
            n
        }
        "random_orders" => {
            let mut rng = Rng(5);
            let mut held = fill_half(&mut a, &mut rng);
            measure_random_orders(&mut a, &mut held, &mut rng)
        }
        other => panic!("unknown workload {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (alloc, workload) = (args[1].as_str(), args[2].as_str());
    let ops = match alloc {
        "mm-buddy" => {
            let mem = ours_memory();
            let a = Ours::new(&mem);
            run(a, workload)
        }
        "mm-buddy-pinned" => {
            let mem = ours_memory();
            run(OursPinned::new(&mem), workload)
        }
        "buddy_system_allocator" => run(Bsa::new(), workload),
        "bitmap-allocator" => run(Bitmap::new(), workload),
        "frame-alloc" => run(FrameAlloc::new(), workload),
        "free-list" => run(FreeListPeer::new(), workload),
        other => panic!("unknown allocator {other}"),
    };
    println!("ops={ops}");
}
