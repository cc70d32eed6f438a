//! The page-cache fuzz model (`src/pagecache.rs`) on generated inputs and
//! on the checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::pagecache::run,
    target: "pagecache_model",
    seed: 0x9a9e,
    len: (2048, 200),
    count: (300, 3),
    min_corpus: 500,
}
