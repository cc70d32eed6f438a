//! The wiring fuzz model (`src/wiring.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::wiring::run,
    target: "wiring_model",
    seed: 0x3117,
    len: (1024, 96),
    count: (200, 2),
    min_corpus: 21,
}
