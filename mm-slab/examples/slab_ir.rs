//! Runs one benchmark workload once, for counting instructions with
//! callgrind: `cargo xtask ir slab` runs every heap and workload under
//! `valgrind --tool=callgrind --toggle-collect=*measure_*`, so only the
//! measured phase counts, and divides by the operations this prints.
//!
//! Usage: `slab_ir HEAP WORKLOAD` with HEAP one of `mm-slab`,
//! `axallocator-slab`, `talc`, `linked_list_allocator`,
//! `glibc` and WORKLOAD one of `pair`, `mixed_alloc`, `mixed_free`. For
//! `mm-slab` and `mixed_alloc` it also prints how much of the slab memory
//! the live set fills.

#[path = "../benches/common/mod.rs"]
mod common;

use common::*;

const PAIRS: usize = 100_000;

#[inline(never)]
fn measure_pair<H: Heap>(h: &mut H) -> usize {
    pairs(h, PAIRS);
    PAIRS
}

#[inline(never)]
fn measure_mixed_alloc<H: Heap>(h: &mut H, layouts: &[std::alloc::Layout], out: &mut Vec<*mut u8>) -> usize {
    alloc_all(h, layouts, out);
    layouts.len()
}

#[inline(never)]
fn measure_mixed_free<H: Heap>(h: &mut H, layouts: &[std::alloc::Layout], ptrs: &[*mut u8], order: &[usize]) -> usize {
    free_in(h, layouts, ptrs, order);
    order.len()
}

fn run<H: Heap>(h: &mut H, workload: &str) -> usize {
    let layouts = mixed_sizes(7);
    let order = permutation(MIXED, 11);
    let mut ptrs = Vec::with_capacity(MIXED);
    match workload {
        "pair" => {
            pairs(h, 1000);
            measure_pair(h)
        }
        "mixed_alloc" => {
            // One warm round first, as in the criterion bench.
            alloc_all(h, &layouts, &mut ptrs);
            free_in(h, &layouts, &ptrs, &order);
            ptrs.clear();
            measure_mixed_alloc(h, &layouts, &mut ptrs)
        }
        "mixed_free" => {
            alloc_all(h, &layouts, &mut ptrs);
            free_in(h, &layouts, &ptrs, &order);
            ptrs.clear();
            alloc_all(h, &layouts, &mut ptrs);
            measure_mixed_free(h, &layouts, &ptrs, &order)
        }
        other => panic!("unknown workload {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (heap, workload) = (args[1].as_str(), args[2].as_str());
    let ops = match heap {
        "mm-slab" => {
            let mut h = Ours::new();
            let ops = run(&mut h, workload);
            if workload == "mixed_alloc" {
                let live: usize = mixed_sizes(7).iter().map(|l| l.size()).sum();
                let slab = h.slab_bytes();
                println!(
                    "live requested bytes {live}, at class sizes {}, slab bytes {slab}: {:.1} % requested, {:.1} % class",
                    h.class_bytes(),
                    live as f64 * 100.0 / slab as f64,
                    h.class_bytes() as f64 * 100.0 / slab as f64
                );
            }
            ops
        }
        "mm-slab-pinned" => run(&mut OursPinned::new(), workload),
        "axallocator-slab" => run(&mut AxSlab::new(), workload),
        "talc" => run(&mut Talc::new(), workload),
        "linked_list_allocator" => run(&mut LinkedList::new(), workload),
        "glibc" => run(&mut Glibc, workload),
        other => panic!("unknown heap {other}"),
    };
    println!("ops={ops}");
}
