//! Runs one page-table workload once, for counting instructions with
//! callgrind (`cargo xtask ir paging`; only functions named `measure_*`
//! count).
//!
//! Usage: `paging_ir IMPL WORKLOAD`, IMPL one of `mm-paging`, `x86_64`,
//! `page_table_multiarch`, `page-table-generic`; WORKLOAD one of `map`, `translate`, `unmap`,
//! `map_huge` (ranges of 1 GiB in one call), `map_page`, `unmap_page` (the
//! same pages, one call each), `unmap_sparse` (one-page unmaps in tables
//! whose other live entry is 256 entries away).

#[path = "../benches/common/mod.rs"]
mod common;

use common::*;

const TRANSLATIONS: u64 = 100_000;

#[inline(never)]
fn measure_map<T: Tables>(t: &mut T, huge: bool) -> u64 {
    t.map(PAGES, huge);
    PAGES
}

#[inline(never)]
fn measure_unmap<T: Tables>(t: &mut T) -> u64 {
    t.unmap(PAGES, false);
    PAGES
}

#[inline(never)]
fn measure_map_pages<T: Tables>(t: &mut T) -> u64 {
    for i in 0..PAGES {
        t.map_page(i);
    }
    PAGES
}

#[inline(never)]
fn measure_unmap_pages<T: Tables>(t: &mut T) -> u64 {
    for i in 0..PAGES {
        t.unmap_page(i);
    }
    PAGES
}

/// Level-1 tables in the sparse workload.
const SPARSE_TABLES: u64 = 2048;

#[inline(never)]
fn measure_unmap_sparse<T: Tables>(t: &mut T) -> u64 {
    for i in 0..SPARSE_TABLES {
        t.unmap_page(i * 512 + 256);
    }
    SPARSE_TABLES
}

#[inline(never)]
fn measure_translate<T: Tables>(t: &T, rng: &mut Rng) -> u64 {
    std::hint::black_box(translate_random(t, rng, TRANSLATIONS));
    TRANSLATIONS
}

fn run<T: Tables>(mut t: T, workload: &str) -> u64 {
    match workload {
        "map" => {
            let n = measure_map(&mut t, false);
            assert_eq!(t.translate(VA + 0x1234_5678), Some(PA + 0x1234_5678));
            n
        }
        "map_huge" => {
            let n = measure_map(&mut t, true);
            assert_eq!(t.translate(VA + 0x1234_5678), Some(PA + 0x1234_5678));
            n
        }
        "map_page" => {
            let n = measure_map_pages(&mut t);
            assert_eq!(t.translate(VA + 0x1234_5678), Some(PA + 0x1234_5678));
            n
        }
        "unmap_page" => {
            t.map(PAGES, false);
            let before = pool().available();
            let n = measure_unmap_pages(&mut t);
            eprintln!("table pages freed by unmap_page: {}", pool().available() - before);
            assert_eq!(t.translate(VA), None);
            n
        }
        "translate" => {
            t.map(PAGES, false);
            measure_translate(&t, &mut Rng(3))
        }
        "unmap" => {
            t.map(PAGES, false);
            let before = pool().available();
            let n = measure_unmap(&mut t);
            eprintln!("table pages freed by unmap: {}", pool().available() - before);
            assert_eq!(t.translate(VA), None);
            n
        }
        "unmap_sparse" => {
            // Two pages per level-1 table, 256 entries apart; the unmap of
            // the second must find out the table is not empty.
            for i in 0..SPARSE_TABLES {
                t.map_page(i * 512);
                t.map_page(i * 512 + 256);
            }
            let n = measure_unmap_sparse(&mut t);
            assert_eq!(t.translate(VA + 256 * 4096), None);
            assert_eq!(t.translate(VA), Some(PA));
            n
        }
        other => panic!("unknown workload {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ops = match args[1].as_str() {
        "mm-paging" => run(Ours::new(), &args[2]),
        "x86_64" => run(X86Crate::new(), &args[2]),
        "page_table_multiarch" => run(Multiarch::new(), &args[2]),
        "page-table-generic" => run(Generic::new(), &args[2]),
        other => panic!("unknown implementation {other}"),
    };
    println!("ops={ops}");
}
