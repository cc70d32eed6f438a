//! The slab fuzz model (`src/slab.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

use mm_types::testkit::fuzzing::{random_inputs, replay_corpus};

#[test]
fn random_inputs_hold_the_model() {
    random_inputs(0x51ab, 2048, if cfg!(miri) { 3 } else { 300 }, mm_fuzz_models::slab::run);
}

#[test]
#[cfg_attr(miri, ignore = "the corpus is large; random inputs cover miri")]
fn corpus_replays() {
    let n = replay_corpus(env!("CARGO_MANIFEST_DIR"), "slab_model", mm_fuzz_models::slab::run);
    assert!(n > 0, "the slab_model corpus is checked in");
}
