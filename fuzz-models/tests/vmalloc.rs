//! The vmalloc fuzz model (`src/vmalloc.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::vmalloc::run,
    target: "vmalloc_model",
    seed: 0x5eed_5eed,
    len: (2048, 160),
    count: (100, 2),
    min_corpus: 101,
}
