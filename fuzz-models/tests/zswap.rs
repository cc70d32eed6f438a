//! The zswap fuzz model (`src/swap.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

use mm_types::testkit::fuzzing::{random_inputs, replay_corpus};

#[test]
fn generated_inputs() {
    random_inputs(
        0x25a9,
        if cfg!(miri) { 48 } else { 1024 },
        if cfg!(miri) { 2 } else { 300 },
        mm_fuzz_models::swap::run_zswap,
    );
}

/// Replays the checked-in cargo-fuzz corpus.
#[test]
#[cfg_attr(miri, ignore = "reads files; the corpus is replayed natively")]
fn corpus() {
    let n = replay_corpus(env!("CARGO_MANIFEST_DIR"), "zswap_model", mm_fuzz_models::swap::run_zswap);
    assert!(n > 20, "the corpus holds {n} inputs");
}
