//! The slab fuzz model (`src/slab.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::slab::run,
    target: "slab_model",
    seed: 0x51ab,
    len: (2048, 2048),
    count: (300, 3),
    min_corpus: 700,
}
