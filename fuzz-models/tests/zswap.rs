//! The zswap fuzz model (`src/swap.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::swap::run_zswap,
    target: "zswap_model",
    seed: 0x25a9,
    len: (1024, 48),
    count: (300, 2),
    min_corpus: 21,
}
