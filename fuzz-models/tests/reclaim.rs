//! The reclaim fuzz model (`src/reclaim.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::reclaim::run,
    target: "reclaim_model",
    seed: 0x4ec1,
    len: (2048, 160),
    count: (200, 2),
    min_corpus: 51,
}
