//! Runs one workload once, for counting instructions with callgrind:
//! `cargo xtask ir pagecache` runs each index and workload under
//! `valgrind --tool=callgrind --toggle-collect=*measure_*`, so only the
//! measured phase counts, and divides by the operations this prints.
//!
//! Usage: `index_ir INDEX WORKLOAD` with INDEX `mm-pagecache` or `BTreeMap`
//! and WORKLOAD one of `get_hit` (look-ups of cached pages at random
//! indices of a million-page file), `insert_remove` (a page removed and
//! cached again) and `next_dirty` (the next dirty page from a random index,
//! one page in 64 dirty; `BTreeMap` keeps a second map of the dirty pages).

use std::collections::BTreeMap;
use std::hint::black_box;

use mm_pagecache::{Entry, PageIndex, Tag};
use mm_types::testkit::XorShift;
use mm_types::FrameNumber;

const PAGES: u64 = 1 << 20;
const OPS: usize = 100_000;

fn indices() -> Vec<u64> {
    let mut rng = XorShift(5);
    (0..OPS).map(|_| rng.next() % PAGES).collect()
}

#[inline(never)]
fn measure_get_ours(i: &PageIndex, at: &[u64]) -> u64 {
    at.iter().map(|&p| i.page(p).map_or(0, FrameNumber::as_u64)).sum()
}

#[inline(never)]
fn measure_get_map(m: &BTreeMap<u64, u64>, at: &[u64]) -> u64 {
    at.iter().map(|p| m.get(p).copied().unwrap_or(0)).sum()
}

#[inline(never)]
fn measure_insert_remove_ours(i: &mut PageIndex, at: &[u64]) {
    for &p in at {
        if let Some(Entry::Page(f)) = i.remove(p) {
            i.insert(p, f).unwrap();
        }
    }
}

#[inline(never)]
fn measure_insert_remove_map(m: &mut BTreeMap<u64, u64>, at: &[u64]) {
    for p in at {
        let v = m.remove(p).unwrap();
        m.insert(*p, v);
    }
}

#[inline(never)]
fn measure_next_dirty_ours(i: &PageIndex, at: &[u64]) -> u64 {
    at.iter().map(|&p| i.next_tagged(p, Tag::Dirty).map_or(0, |x| x.0)).sum()
}

#[inline(never)]
fn measure_next_dirty_map(m: &BTreeMap<u64, u64>, at: &[u64]) -> u64 {
    at.iter().map(|&p| m.range(p..).next().map_or(0, |x| *x.0)).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (which, workload) = (args[1].as_str(), args[2].as_str());
    let at = indices();
    match which {
        "mm-pagecache" => {
            let mut i = PageIndex::new();
            for p in 0..PAGES {
                i.insert(p, FrameNumber::new(p + 1).unwrap()).unwrap();
                if p % 64 == 17 {
                    i.set_tag(p, Tag::Dirty).unwrap();
                }
            }
            match workload {
                "get_hit" => {
                    black_box(measure_get_ours(&i, &at));
                }
                "insert_remove" => measure_insert_remove_ours(&mut i, &at),
                "next_dirty" => {
                    black_box(measure_next_dirty_ours(&i, &at));
                }
                w => panic!("unknown workload {w}"),
            }
        }
        "BTreeMap" => {
            let mut m: BTreeMap<u64, u64> = (0..PAGES).map(|p| (p, p + 1)).collect();
            let dirty: BTreeMap<u64, u64> = (0..PAGES).filter(|p| p % 64 == 17).map(|p| (p, p + 1)).collect();
            match workload {
                "get_hit" => {
                    black_box(measure_get_map(&m, &at));
                }
                "insert_remove" => measure_insert_remove_map(&mut m, &at),
                "next_dirty" => {
                    black_box(measure_next_dirty_map(&dirty, &at));
                }
                w => panic!("unknown workload {w}"),
            }
        }
        other => panic!("unknown index {other}"),
    }
    println!("ops={OPS}");
}
