//! The paging fuzz model (`src/paging.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::paging::run,
    target: "paging_model",
    seed: 0x9e37_79b9,
    len: (1024, 160),
    count: (100, 2),
    min_corpus: 800,
}
