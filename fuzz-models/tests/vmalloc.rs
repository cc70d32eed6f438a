//! The vmalloc fuzz model (`src/vmalloc.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

use mm_fuzz_models::vmalloc::*;
use mm_types::testkit::fuzzing::{random_inputs, replay_corpus};

#[test]
fn generated_inputs() {
    random_inputs(0x5eed_5eed, if cfg!(miri) { 160 } else { 2048 }, if cfg!(miri) { 2 } else { 100 }, run);
}

/// Replays the checked-in cargo-fuzz corpus.
#[test]
#[cfg_attr(miri, ignore = "reads files; the corpus is replayed natively")]
fn corpus() {
    let n = replay_corpus(env!("CARGO_MANIFEST_DIR"), "vmalloc_model", run);
    assert!(n > 100, "the corpus holds {n} inputs");
}
