//! The buddy fuzz model (`src/buddy.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::buddy::run,
    target: "buddy_model",
    seed: 0x2545_f491,
    len: (2048, 160),
    count: (60, 2),
    min_corpus: 8,
}
