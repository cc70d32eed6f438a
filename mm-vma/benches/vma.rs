//! mm-vma's VMA tree side by side with the structures Rust kernels use for
//! VMAs today: `BTreeMap` keyed by start, the `rangemap` crate, and ArceOS's
//! `ax-memory-set` (over a no-op mapping backend, so only its bookkeeping is
//! measured). 10,000 VMAs of 1-4 pages with 1-3 page holes between them.
//!
//! - `find`: the VMA containing a random address.
//! - `munmap_mmap`: remove one whole VMA and map it back (each structure's
//!   own calls; ours and ax-memory-set's handle partial ranges and splits too).
//! - `gap`: a free range of 5 pages searched from a random address. Every
//!   hole is smaller, so a scan walks to the end of the address space; ours
//!   searches top-down with its gap index, the peers scan (ax-memory-set's
//!   `find_free_area` bottom-up from the hint, `BTreeMap` and `rangemap`
//!   top-down from it). Ours also at 100 and 100,000 VMAs, to show it flat.

use std::collections::BTreeMap;
use std::hint::black_box;

use ax_memory_addr::{AddrRange, VirtAddr};
use ax_memory_set::{MappingBackend, MemoryArea, MemorySet};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mm_types::testkit::XorShift;
use mm_vma::{Protection, Vma, VmaTree};

/// mm-types' address (ax-memory-addr's `VirtAddr` is ax-memory-set's).
type Va = mm_types::VirtAddr;

fn va(a: u64) -> Va {
    Va::new(a).unwrap()
}
use rangemap::RangeMap;

const P: u64 = 4096;
const N: usize = 10_000;
const GAP: u64 = 5 * P;

fn layout(n: usize) -> Vec<(u64, u64)> {
    let mut r = XorShift(42);
    let mut at = 0x10_0000u64;
    (0..n)
        .map(|_| {
            let s = at + (1 + r.next() % 3) * P;
            let e = s + (1 + r.next() % 4) * P;
            at = e;
            (s, e)
        })
        .collect()
}

#[derive(Clone)]
struct NoBackend;

impl MappingBackend for NoBackend {
    type Addr = VirtAddr;
    type Flags = u8;
    type MutationContext = ();
    type PageTable = ();
    fn map(&self, _: VirtAddr, _: usize, _: u8, _: &mut (), _: &mut ()) -> bool {
        true
    }
    fn unmap(&self, _: VirtAddr, _: usize, _: &mut (), _: &mut ()) -> bool {
        true
    }
    fn protect(&self, _: VirtAddr, _: usize, _: u8, _: &mut (), _: &mut ()) -> bool {
        true
    }
    fn split(&mut self, _: usize) -> Option<Self> {
        Some(NoBackend)
    }
}

const RW: Protection = Protection::READ.union(Protection::WRITE);

fn ours(ranges: &[(u64, u64)]) -> VmaTree {
    let mut t = VmaTree::new(usize::MAX);
    for &(s, e) in ranges {
        t.insert(Vma::anonymous(va(s), va(e), RW)).unwrap();
    }
    t
}

fn btree(ranges: &[(u64, u64)]) -> BTreeMap<u64, (u64, u8)> {
    ranges.iter().map(|&(s, e)| (s, (e, 3))).collect()
}

fn rmap(ranges: &[(u64, u64)]) -> RangeMap<u64, u32> {
    let mut m = RangeMap::new();
    // Alternate values so that touching ranges would not coalesce.
    for (i, &(s, e)) in ranges.iter().enumerate() {
        m.insert(s..e, i as u32 % 2);
    }
    m
}

fn mset(ranges: &[(u64, u64)]) -> MemorySet<NoBackend> {
    let mut m = MemorySet::new();
    for &(s, e) in ranges {
        m.map(MemoryArea::new(VirtAddr::from(s as usize), (e - s) as usize, 3, NoBackend), &mut (), &mut (), false)
            .unwrap();
    }
    m
}

/// Random addresses inside the mapped span, and random whole VMAs.
fn inputs(ranges: &[(u64, u64)]) -> (Vec<u64>, Vec<(u64, u64)>) {
    let end = ranges.last().unwrap().1;
    let mut r = XorShift(7);
    let addrs = (0..4096).map(|_| 0x10_0000 + r.next() % (end - 0x10_0000)).collect();
    let picks = (0..4096).map(|_| ranges[(r.next() % ranges.len() as u64) as usize]).collect();
    (addrs, picks)
}

fn find(c: &mut Criterion) {
    let ranges = layout(N);
    let (addrs, _) = inputs(&ranges);
    let mut g = c.benchmark_group("find_10000");
    let t = ours(&ranges);
    let vas: Vec<Va> = addrs.iter().map(|&a| va(a)).collect();
    let mut i = 0;
    g.bench_function("mm-vma", |b| {
        b.iter(|| {
            i = (i + 1) % vas.len();
            black_box(t.find(vas[i]).map(|v| v.start))
        })
    });
    let m = btree(&ranges);
    g.bench_function("BTreeMap", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            let a = addrs[i];
            black_box(m.range(..=a).next_back().filter(|(_, &(e, _))| e > a).map(|(&s, _)| s))
        })
    });
    let m = rmap(&ranges);
    g.bench_function("rangemap", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(m.get_key_value(&addrs[i]).map(|(r, _)| r.start))
        })
    });
    let m = mset(&ranges);
    g.bench_function("ax-memory-set", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(m.find(VirtAddr::from(addrs[i] as usize)).map(|a| a.start()))
        })
    });
    g.finish();
}

fn munmap_mmap(c: &mut Criterion) {
    let ranges = layout(N);
    let (_, picks) = inputs(&ranges);
    let mut g = c.benchmark_group("munmap_mmap_10000");
    let mut i = 0;
    let mut t = ours(&ranges);
    let va_picks: Vec<(Va, Va)> = picks.iter().map(|&(s, e)| (va(s), va(e))).collect();
    g.bench_function("mm-vma", |b| {
        b.iter(|| {
            i = (i + 1) % va_picks.len();
            let (s, e) = va_picks[i];
            t.remove_range(s, e - s, |v| {
                black_box(v);
            })
            .unwrap();
            t.insert(Vma::anonymous(s, e, RW)).unwrap();
        })
    });
    let mut m = btree(&ranges);
    g.bench_function("BTreeMap", |b| {
        b.iter(|| {
            i = (i + 1) % picks.len();
            let (s, e) = picks[i];
            black_box(m.remove(&s));
            m.insert(s, (e, 3));
        })
    });
    let mut m = rmap(&ranges);
    g.bench_function("rangemap", |b| {
        b.iter(|| {
            i = (i + 1) % picks.len();
            let (s, e) = picks[i];
            let v = *m.get(&s).unwrap();
            m.remove(s..e);
            m.insert(s..e, v);
        })
    });
    let mut m = mset(&ranges);
    g.bench_function("ax-memory-set", |b| {
        b.iter(|| {
            i = (i + 1) % picks.len();
            let (s, e) = picks[i];
            let (va, len) = (VirtAddr::from(s as usize), (e - s) as usize);
            m.unmap(va, len, &mut (), &mut ()).unwrap();
            m.map(MemoryArea::new(va, len, 3, NoBackend), &mut (), &mut (), false).unwrap();
        })
    });
    g.finish();
}

/// Top-down: the highest hole of GAP bytes below `high`, by a scan.
fn btree_gap(m: &BTreeMap<u64, (u64, u8)>, high: u64) -> Option<u64> {
    let mut top = high;
    for (&s, &(e, _)) in m.range(..top).rev() {
        if e <= top && top - e >= GAP {
            return Some(top - GAP);
        }
        top = s;
    }
    (top >= GAP).then(|| top - GAP)
}

fn rangemap_gap(m: &RangeMap<u64, u32>, outer: &std::ops::Range<u64>, high: u64) -> Option<u64> {
    m.gaps(&(outer.start..high)).filter(|r| r.end - r.start >= GAP).last().map(|r| r.end - GAP)
}

fn gap(c: &mut Criterion) {
    let mut g = c.benchmark_group("gap");
    g.sample_size(20);
    for n in [100usize, N, 100_000] {
        let ranges = layout(n);
        let (addrs, _) = inputs(&ranges);
        let mut i = 0;
        let t = ours(&ranges);
        let vas: Vec<Va> = addrs.iter().map(|&a| va(a)).collect();
        g.bench_function(BenchmarkId::new("mm-vma", n), |b| {
            b.iter(|| {
                i = (i + 1) % vas.len();
                black_box(t.unmapped_area(GAP, P, Va::ZERO, vas[i], true))
            })
        });
        if n != N {
            continue;
        }
        let m = btree(&ranges);
        let rm = rmap(&ranges);
        let outer = 0..u64::MAX;
        // The scans answer as the index does.
        for &a in &addrs[..256] {
            let want = t.unmapped_area(GAP, P, Va::ZERO, va(a), true).map(Va::as_u64);
            assert_eq!(btree_gap(&m, a), want);
            assert_eq!(rangemap_gap(&rm, &outer, a), want);
        }
        g.bench_function(BenchmarkId::new("BTreeMap", n), |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                black_box(btree_gap(&m, addrs[i]))
            })
        });
        let m = rm;
        g.bench_function(BenchmarkId::new("rangemap", n), |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                black_box(rangemap_gap(&m, &outer, addrs[i]))
            })
        });
        let m = mset(&ranges);
        let limit = AddrRange::new(VirtAddr::from(0), VirtAddr::from(0x7fff_ffff_f000));
        g.bench_function(BenchmarkId::new("ax-memory-set", n), |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                black_box(m.find_free_area(VirtAddr::from(addrs[i] as usize), GAP as usize, limit, P as usize))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, find, munmap_mmap, gap);
criterion_main!(benches);
