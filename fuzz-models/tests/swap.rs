//! The swap fuzz model (`src/swap.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::swap::run,
    target: "swap_model",
    seed: 0x5a4e,
    len: (2048, 64),
    count: (300, 2),
    min_corpus: 51,
}
