//! The buddy fuzz model (`src/buddy.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

use mm_fuzz_models::buddy::*;
use mm_types::testkit::fuzzing::{random_inputs, replay_corpus};

#[test]
fn generated_inputs() {
    random_inputs(0x2545_f491, if cfg!(miri) { 160 } else { 2048 }, if cfg!(miri) { 2 } else { 60 }, run);
}

/// Replays the checked-in cargo-fuzz corpus.
#[test]
#[cfg_attr(miri, ignore = "reads files; the corpus is replayed natively")]
fn corpus_replay() {
    let n = replay_corpus(env!("CARGO_MANIFEST_DIR"), "buddy_model", run);
    assert!(n >= 8, "the corpus has only {n} inputs");
}
