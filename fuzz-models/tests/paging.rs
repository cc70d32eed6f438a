//! The paging fuzz model (`src/paging.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

use mm_fuzz_models::paging::*;
use mm_types::testkit::fuzzing::{random_inputs, replay_corpus};

#[test]
fn generated_inputs() {
    random_inputs(0x9e37_79b9, if cfg!(miri) { 160 } else { 1024 }, if cfg!(miri) { 2 } else { 100 }, run);
}

/// Replays the checked-in cargo-fuzz corpus.
#[test]
#[cfg_attr(miri, ignore = "reads files; the corpus is replayed natively")]
fn corpus_replay() {
    let n = replay_corpus(env!("CARGO_MANIFEST_DIR"), "paging_model", run);
    assert!(n >= 8, "the corpus has only {n} inputs");
}
