//! mm-types' model-based fuzz body for the address vocabulary.
//!
//! Each input is decoded into a sequence of [`Op`]s; each op runs the crate's
//! arithmetic and checks it against a model in 128-bit integer arithmetic or
//! plain sets. `fuzz/fuzz_targets/types_addr.rs` calls [`run`]; the checked-in
//! corpus in `fuzz/corpus/types_addr/` replays through the same function in
//! `cargo test`.

use std::vec::Vec;

use arbitrary::Arbitrary;

use mm_types::{align, FrameNumber, FrameRange, PagingMode, PhysAddr, VirtAddr};

/// One checked operation.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Construct a virtual address in a paging mode.
    Virt {
        /// Raw address.
        raw: u64,
        /// 5-level (true) or 4-level.
        five: bool,
    },
    /// `VirtAddr + delta` or `- delta`.
    VirtStep {
        /// Raw address (used only if canonical).
        raw: u64,
        /// Bytes.
        delta: u64,
        /// Subtract instead of add.
        down: bool,
    },
    /// `PhysAddr + delta`.
    PhysAdd {
        /// Raw address.
        raw: u64,
        /// Bytes.
        delta: u64,
    },
    /// Alignment of a raw value.
    Align {
        /// Value.
        raw: u64,
        /// log2 of the alignment; 64 and above stand for a non-power-of-two.
        shift: u8,
    },
    /// Set operations on two small frame ranges.
    Ranges {
        /// First range start.
        a: u16,
        /// First range length.
        a_len: u8,
        /// Second range start.
        b: u16,
        /// Second range length.
        b_len: u8,
    },
}

fn model_canonical(v: u64, bits: u32) -> bool {
    let half = 1u128 << (bits - 1);
    (v as u128) < half || (v as u128) >= (1u128 << 64) - half
}

/// Checks one operation against the model; panics on a disagreement.
pub fn check(op: &Op) {
    match *op {
        Op::Virt { raw, five } => {
            let (mode, bits) = if five { (PagingMode::FiveLevel, 57) } else { (PagingMode::FourLevel, 48) };
            assert_eq!(VirtAddr::new_in(raw, mode).is_ok(), model_canonical(raw, bits), "{raw:#x} {mode}");
            let ext = VirtAddr::new_sign_extended(raw, mode);
            assert!(model_canonical(ext.as_u64(), bits));
            assert_eq!(ext.as_u64() & ((1u64 << bits) - 1), raw & ((1u64 << bits) - 1));
        }
        Op::VirtStep { raw, delta, down } => {
            let Ok(v) = VirtAddr::new(raw) else { return };
            let upper = raw >= 1 << 63;
            let target = if down { raw as i128 - delta as i128 } else { raw as i128 + delta as i128 };
            let expect = (0..=u64::MAX as i128).contains(&target)
                && model_canonical(target as u64, 57)
                && (target as u64 >= 1 << 63) == upper;
            let got = if down { v.checked_sub(delta) } else { v.checked_add(delta) };
            assert_eq!(got.is_some(), expect, "{raw:#x} {down} {delta:#x}");
            if let Some(g) = got {
                assert_eq!(g.as_u64() as i128, target);
            }
        }
        Op::PhysAdd { raw, delta } => {
            let Ok(p) = PhysAddr::new(raw) else {
                assert!(raw >= 1 << 52);
                return;
            };
            let target = raw as u128 + delta as u128;
            let got = p.checked_add(delta);
            assert_eq!(got.map(|g| g.as_u64() as u128), (target < 1 << 52).then_some(target));
        }
        Op::Align { raw, shift } => {
            if shift >= 64 {
                let bad = (shift as u64) | 3;
                assert!(align::align_up(raw, bad).is_err() && align::align_down(raw, bad).is_err());
                return;
            }
            let a = 1u128 << shift;
            let down = raw as u128 - raw as u128 % a;
            let up = down + if raw as u128 % a == 0 { 0 } else { a };
            assert_eq!(align::align_down(raw, a as u64).ok().map(u128::from), Some(down));
            assert_eq!(align::align_up(raw, a as u64).ok().map(u128::from), (up <= u64::MAX as u128).then_some(up));
            assert_eq!(align::is_aligned(raw, a as u64), raw as u128 % a == 0);
        }
        Op::Ranges { a, a_len, b, b_len } => {
            let f = |n: u64| FrameNumber::new(n).expect("small");
            let ra = FrameRange::new(f(a as u64), a_len as u64).expect("small");
            let rb = FrameRange::new(f(b as u64), b_len as u64).expect("small");
            // The sets by definition, and every frame in either (each once):
            // a range's result equals a set iff each frame it yields is in
            // the set, none twice (ascending), and it yields as many as the
            // set has in that universe.
            let (a, a_end, b, b_end) = (a as u64, a as u64 + a_len as u64, b as u64, b as u64 + b_len as u64);
            let in_a = |v: u64| (a..a_end).contains(&v);
            let in_b = |v: u64| (b..b_end).contains(&v);
            let universe = || (a..a_end).chain((b..b_end).filter(|&v| !in_a(v)));
            let count = |want: &dyn Fn(u64) -> bool| universe().filter(|&v| want(v)).count();
            let yields = |r: &FrameRange, want: &dyn Fn(u64) -> bool| -> usize {
                let mut n = 0;
                let mut last = None;
                for v in r.iter_step(1).map(FrameNumber::as_u64) {
                    assert!(want(v), "{v} is not in the set");
                    assert!(last.is_none_or(|l| l < v), "{v} yielded twice or out of order");
                    last = Some(v);
                    n += 1;
                }
                n
            };
            let both = |v: u64| in_a(v) && in_b(v);
            let inter = count(&both);
            assert_eq!(yields(&ra.intersection(&rb), &both), inter);
            assert_eq!(ra.overlaps(&rb), inter != 0);
            let (lo, hi) = ra.subtract(&rb);
            let a_not_b = |v: u64| in_a(v) && !in_b(v);
            assert!(lo.last().is_none_or(|l| hi.is_empty() || l < hi.start()));
            assert_eq!(yields(&lo, &a_not_b) + yields(&hi, &a_not_b), count(&a_not_b));
            let (x, y) = ra.split_at(f(b));
            yields(&x, &|v| v < b);
            yields(&y, &|v| v >= b);
            assert_eq!(x.len() + y.len(), ra.len());
            for v in [a, b, a_end] {
                assert_eq!(ra.contains(f(v)), in_a(v));
            }
            assert_eq!(
                ra.contains_range(&rb),
                rb.is_empty() && rb.start() >= ra.start() && rb.start().as_u64() <= a_end
                    || !rb.is_empty() && (b..b_end).all(in_a)
            );
        }
    }
}

/// Decodes `data` into operations and checks each against the model.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = crate::decode_ops(data, 256);
    for op in &ops {
        check(op);
    }
}
