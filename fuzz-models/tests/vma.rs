//! The vma fuzz model (`src/vma.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::vma::run,
    target: "vma_model",
    seed: 0x7a5e_5eed,
    len: (2048, 160),
    count: (200, 2),
    min_corpus: 101,
}
