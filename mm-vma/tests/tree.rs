//! The range tree against a `BTreeMap` model: random insertions, removals,
//! resizes, look-ups, iteration and gap searches.

use std::collections::BTreeMap;

use mm_types::testkit::fuzzing::XorShift;
use mm_vma::{RangeTree, TreeError};

/// Model gap search: the highest (or lowest) aligned fit.
fn model_gap(m: &BTreeMap<u64, (u64, u32)>, size: u64, align: u64, low: u64, high: u64, top: bool) -> Option<u64> {
    let mut gaps = Vec::new();
    let mut at = 0u64;
    for (&s, &(e, _)) in m {
        if s > at {
            gaps.push((at, s));
        }
        at = e;
    }
    gaps.push((at, u64::MAX));
    let fits = |(g0, g1): (u64, u64)| {
        let (a, b) = (g0.max(low), g1.min(high));
        if b < a || b - a < size {
            return None;
        }
        if top {
            let s = (b - size) & !(align - 1);
            (s >= a).then_some(s)
        } else {
            let s = a.checked_next_multiple_of(align)?;
            (s <= b && b - s >= size).then_some(s)
        }
    };
    if top {
        gaps.into_iter().rev().find_map(fits)
    } else {
        gaps.into_iter().find_map(fits)
    }
}

fn run(seed: u64, ops: usize, span: u64) {
    let mut rng = XorShift(seed);
    let mut t = RangeTree::new();
    let mut m: BTreeMap<u64, (u64, u32)> = BTreeMap::new();
    for step in 0..ops {
        let r = rng.next();
        let a = (rng.next() % span) * 4096;
        let len = (1 + rng.next() % 8) * 4096;
        match r % 8 {
            0..=2 => {
                // The lowest entry in the way: the one containing `a`, else the first starting inside.
                let containing = m.range(..=a).next_back().filter(|(_, &(e, _))| e > a);
                let overlap = containing.or_else(|| m.range(a..a + len).next());
                let res = t.insert(a, a + len, step as u32);
                match overlap {
                    Some((&s, &(e, _))) => assert_eq!(res, Err(TreeError::Overlap { start: s, end: e }), "step {step}"),
                    None => {
                        res.unwrap();
                        m.insert(a, (a + len, step as u32));
                    }
                }
            }
            3 | 4 => {
                // Remove an existing entry (or a missing key).
                let key = if r % 16 < 12 { m.range(a..).next().map(|(&k, _)| k).unwrap_or(a) } else { a };
                let got = t.remove(key);
                let want = m.remove(&key).map(|(e, v)| (key, e, v));
                assert_eq!(got, want, "step {step}");
            }
            5 => {
                // Resize an entry in place (grow or shrink at either end).
                if let Some((&s, &(e, _))) = m.range(a..).next() {
                    let ns = if rng.next() % 2 == 0 { s.saturating_sub(4096) } else { s };
                    let ne = if rng.next() % 2 == 0 { e + 4096 } else { (e - 4096).max(ns + 4096) };
                    let prev_end = m.range(..s).next_back().map_or(0, |(_, &(pe, _))| pe);
                    let next_start = m.range(s + 1..).next().map_or(u64::MAX, |(&ns, _)| ns);
                    let ok = ns >= prev_end && ne <= next_start;
                    assert_eq!(t.resize(s, ns, ne).is_ok(), ok, "step {step}");
                    if ok {
                        let v = m.remove(&s).unwrap().1;
                        m.insert(ns, (ne, v));
                    }
                }
            }
            6 => {
                let want = m.range(..=a).next_back().filter(|(_, &(e, _))| e > a).map(|(&s, &(e, v))| (s, e, v));
                assert_eq!(t.find(a).map(|(s, e, v)| (s, e, *v)), want, "step {step}");
                let want_next = m.range(a + 1..).next().map(|(&s, &(e, v))| (s, e, v));
                assert_eq!(t.next(a).map(|(s, e, v)| (s, e, *v)), want_next, "step {step}");
            }
            _ => {
                let size = (1 + rng.next() % 16) * 4096;
                let align = 4096 << (rng.next() % 4);
                let low = (rng.next() % span) * 2048;
                let high = low + (rng.next() % span) * 8192;
                assert_eq!(
                    t.gap_top_down(size, align, low, high),
                    model_gap(&m, size, align, low, high, true),
                    "step {step}"
                );
                assert_eq!(
                    t.gap_bottom_up(size, align, low, high),
                    model_gap(&m, size, align, low, high, false),
                    "step {step}"
                );
            }
        }
        if step % 64 == 0 || ops < 500 {
            t.check().unwrap();
            assert_eq!(t.len(), m.len());
        }
    }
    t.check().unwrap();
    let all: Vec<_> = t.iter().map(|(s, e, v)| (s, e, *v)).collect();
    let want: Vec<_> = m.iter().map(|(&s, &(e, v))| (s, e, v)).collect();
    assert_eq!(all, want);
    // iter_from from every entry's start and from inside.
    for (&s, _) in m.iter().step_by(7) {
        let got: Vec<_> = t.iter_from(s + 1).map(|x| x.0).collect();
        let want: Vec<_> = m.range(s + 1..).map(|(&k, _)| k).collect();
        assert_eq!(got, want);
    }
    // Remove everything.
    let keys: Vec<u64> = m.keys().copied().collect();
    for k in keys {
        assert!(t.remove(k).is_some());
    }
    assert!(t.is_empty());
    t.check().unwrap();
    assert_eq!(t.height(), 0);
}

#[test]
fn matches_a_btreemap_model_small() {
    let (seeds, ops) = if cfg!(miri) { (2, 120) } else { (40, 300) };
    for seed in 1..seeds {
        run(seed, ops, 64);
    }
}

#[test]
fn matches_a_btreemap_model_large() {
    let ops = if cfg!(miri) { 600 } else { 60_000 };
    run(99, ops, 20_000);
}

#[test]
fn sequential_growth_keeps_the_tree_shallow() {
    let mut t = RangeTree::new();
    let n = if cfg!(miri) { 600 } else { 100_000 };
    for i in 0..n {
        t.insert(i * 0x3000, i * 0x3000 + 0x1000, i).unwrap();
    }
    t.check().unwrap();
    // Half-full nodes after sequential splits: log_8(n) + 1 levels at most.
    let bound = (n as f64).log(8.0).ceil() as u32 + 1;
    assert!(t.height() <= bound, "height {} for {n} entries", t.height());
    assert_eq!(t.find(0x3000 * 500 + 0xfff).map(|x| *x.2), Some(500));
    assert_eq!(t.gap_top_down(0x2000, 0x1000, 0, u64::MAX - 0xfff), Some(u64::MAX - 0x2fff));
    // Remove every other: the tree merges underfull leaves.
    for i in (0..n).step_by(2) {
        t.remove(i * 0x3000).unwrap();
    }
    t.check().unwrap();
    assert_eq!(t.len() as u64, n / 2);
    // Left: [0x3000, 0x4000), [0x9000, 0xa000), ...: 20 KiB holes between them.
    assert_eq!(t.gap_bottom_up(0x5000, 0x1000, 0, u64::MAX), Some(0x4000));
    assert_eq!(t.gap_bottom_up(0x5000, 0x1000, 0x5000, u64::MAX), Some(0xa000));
    assert_eq!(t.gap_top_down(0x5000, 0x1000, 0, 0x9800), Some(0x4000));
}
