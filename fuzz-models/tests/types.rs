//! The types fuzz model (`src/types.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

use mm_fuzz_models::types::*;

/// Deterministic pseudo-random inputs, small enough for miri.
#[test]
fn generated_inputs() {
    mm_types::testkit::fuzzing::random_inputs(
        0x9e37_79b9,
        if cfg!(miri) { 160 } else { 512 },
        if cfg!(miri) { 4 } else { 200 },
        run,
    );
}

#[test]
fn edge_cases() {
    for raw in [0, 1 << 47, (1 << 47) - 1, 1 << 56, (1 << 56) - 1, u64::MAX, 0xff00_0000_0000_0000] {
        for five in [false, true] {
            check(&Op::Virt { raw, five });
        }
        for delta in [0, 1, 0x1000, 1 << 56, u64::MAX] {
            check(&Op::VirtStep { raw, delta, down: false });
            check(&Op::VirtStep { raw, delta, down: true });
            check(&Op::PhysAdd { raw, delta });
        }
        for shift in [0, 12, 63, 64, 200] {
            check(&Op::Align { raw, shift });
        }
    }
}

/// Replays the checked-in cargo-fuzz corpus.
#[test]
#[cfg_attr(miri, ignore = "reads files; the corpus is replayed natively")]
fn corpus_replay() {
    let n = mm_types::testkit::fuzzing::replay_corpus(env!("CARGO_MANIFEST_DIR"), "types_addr", run);
    assert!(n >= 8, "the corpus has only {n} inputs");
}
