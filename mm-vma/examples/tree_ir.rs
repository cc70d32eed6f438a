//! Instructions per range-tree operation, for callgrind:
//! `valgrind --tool=callgrind --toggle-collect='*measure_*' tree_ir STRUCTURE WORKLOAD N`
//! with STRUCTURE `mm-vma` (the range tree), `vma` (the VMA tree) or
//! `btreemap`; WORKLOAD `find`, `remove_insert`, or (range tree) `remove`,
//! `insert`, `gap`, or (VMA tree) `find`, `gap`, `munmap`, `munmap_split`;
//! N live ranges; divide the total by the `ops=` it prints. Criterion
//! comparisons with the peer crates are in `benches/vma.rs`.

use std::collections::BTreeMap;

use mm_types::VirtAddr;
use mm_vma::{Protection, RangeTree, Vma, VmaTree};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const OPS: usize = 100_000;

fn va(a: u64) -> VirtAddr {
    VirtAddr::new(a).unwrap()
}

/// Ranges of 1-4 pages with 1-3 page holes.
fn layout(n: usize) -> Vec<(u64, u64)> {
    let mut r = Rng(42);
    let mut at = 0x10_0000u64;
    (0..n)
        .map(|_| {
            let s = at + (1 + r.next() % 3) * 4096;
            let e = s + (1 + r.next() % 4) * 4096;
            at = e;
            (s, e)
        })
        .collect()
}

#[inline(never)]
fn measure_find_tree(t: &RangeTree<u64>, addrs: &[u64]) -> u64 {
    addrs.iter().map(|&a| t.find(a).map_or(0, |x| *x.2)).sum()
}

#[inline(never)]
fn measure_find_btree(t: &BTreeMap<u64, (u64, u64)>, addrs: &[u64]) -> u64 {
    addrs.iter().map(|&a| t.range(..=a).next_back().filter(|(_, &(e, _))| e > a).map_or(0, |(_, &(_, v))| v)).sum()
}

#[inline(never)]
fn measure_remove_insert_tree(t: &mut RangeTree<u64>, keys: &[(u64, u64)]) {
    for &(s, e) in keys {
        let v = t.remove(s).unwrap().2;
        t.insert(s, e, v).unwrap();
    }
}

#[inline(never)]
fn measure_remove_insert_btree(t: &mut BTreeMap<u64, (u64, u64)>, keys: &[(u64, u64)]) {
    for &(s, _) in keys {
        let v = t.remove(&s).unwrap();
        t.insert(s, v);
    }
}

#[inline(never)]
fn measure_remove_tree(t: &mut RangeTree<u64>, keys: &[(u64, u64)]) -> Vec<u64> {
    keys.iter().map(|&(s, _)| t.remove(s).unwrap().2).collect()
}

#[inline(never)]
fn measure_insert_tree(t: &mut RangeTree<u64>, keys: &[(u64, u64)], vals: &[u64]) {
    for (&(s, e), &v) in keys.iter().zip(vals) {
        t.insert(s, e, v).unwrap();
    }
}

#[inline(never)]
fn measure_gap_tree(t: &RangeTree<u64>, highs: &[u64]) -> u64 {
    highs.iter().map(|&h| t.gap_top_down(5 * 4096, 4096, 0, h).unwrap_or(0)).sum()
}

#[inline(never)]
fn measure_find_vma(t: &VmaTree, addrs: &[VirtAddr]) -> u64 {
    addrs.iter().map(|&a| t.find(a).map_or(0, |v| v.start.as_u64())).sum()
}

#[inline(never)]
fn measure_munmap_vma(t: &mut VmaTree, start: VirtAddr, len: u64) {
    t.remove_range(start, len, |_| {}).unwrap();
}

#[inline(never)]
fn measure_gap_vma(t: &VmaTree, highs: &[VirtAddr]) -> u64 {
    highs.iter().map(|&h| t.unmapped_area(5 * 4096, 4096, VirtAddr::ZERO, h, true).map_or(0, VirtAddr::as_u64)).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (which, workload, n): (&str, &str, usize) = (&args[1], &args[2], args[3].parse().unwrap());
    let ranges = layout(n);
    let end = ranges.last().unwrap().1;
    let mut r = Rng(7);
    let addrs: Vec<u64> = (0..OPS).map(|_| 0x10_0000 + r.next() % (end - 0x10_0000)).collect();
    let keys: Vec<(u64, u64)> = (0..OPS).map(|_| ranges[(r.next() % n as u64) as usize]).collect();
    match which {
        "mm-vma" => {
            let mut t = RangeTree::new();
            for (i, &(s, e)) in ranges.iter().enumerate() {
                t.insert(s, e, i as u64).unwrap();
            }
            match workload {
                "find" => {
                    std::hint::black_box(measure_find_tree(&t, &addrs));
                }
                "remove_insert" => measure_remove_insert_tree(&mut t, &keys),
                "remove" | "insert" => {
                    // A tenth of the ranges, distinct, in random order: removed
                    // (munmap's tree work), or removed and then put back (mmap's).
                    let mut picked: Vec<(u64, u64)> = ranges.iter().copied().step_by(10).collect();
                    let mut r = Rng(3);
                    for i in (1..picked.len()).rev() {
                        picked.swap(i, (r.next() % (i as u64 + 1)) as usize);
                    }
                    if workload == "remove" {
                        std::hint::black_box(measure_remove_tree(&mut t, &picked));
                    } else {
                        let vals: Vec<u64> = picked.iter().map(|&(s, _)| t.remove(s).unwrap().2).collect();
                        measure_insert_tree(&mut t, &picked, &vals);
                    }
                    println!("ops={}", picked.len());
                    return;
                }
                "gap" => {
                    std::hint::black_box(measure_gap_tree(&t, &addrs));
                }
                w => panic!("{w}"),
            }
        }
        "vma" => {
            // The same ranges as VMAs (holes between them: no merges).
            let mut t = VmaTree::new(usize::MAX);
            let rw = Protection::READ | Protection::WRITE;
            for &(s, e) in &ranges {
                t.insert(Vma::anonymous(va(s), va(e), rw)).unwrap();
            }
            let addrs: Vec<VirtAddr> = addrs.iter().map(|&a| va(a)).collect();
            match workload {
                "find" => {
                    std::hint::black_box(measure_find_vma(&t, &addrs));
                }
                "gap" => {
                    std::hint::black_box(measure_gap_vma(&t, &addrs));
                }
                "munmap" | "munmap_split" => {
                    // munmap of a whole VMA, or of the last page of one (a
                    // split: the VMA shrinks), for a tenth of them; each is
                    // put back unmeasured.
                    let picked: Vec<(u64, u64)> = ranges.iter().copied().step_by(10).collect();
                    for &(s, e) in &picked {
                        let (a, len) = if workload == "munmap" { (va(s), e - s) } else { (va(e - 4096), 4096) };
                        measure_munmap_vma(&mut t, a, len);
                        t.insert(Vma::anonymous(a, a + len, rw)).unwrap();
                    }
                    println!("ops={}", picked.len());
                    return;
                }
                w => panic!("{w}"),
            }
        }
        "btreemap" => {
            let mut t = BTreeMap::new();
            for (i, &(s, e)) in ranges.iter().enumerate() {
                t.insert(s, (e, i as u64));
            }
            match workload {
                "find" => {
                    std::hint::black_box(measure_find_btree(&t, &addrs));
                }
                "remove_insert" => measure_remove_insert_btree(&mut t, &keys),
                w => panic!("{w}"),
            }
        }
        w => panic!("{w}"),
    }
    println!("ops={OPS}");
}
