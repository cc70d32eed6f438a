//! The page-cache file model (`src/pagecache_file.rs`) on generated inputs
//! and on the checked-in cargo-fuzz corpus.

mm_fuzz_models::model_tests! {
    run: mm_fuzz_models::pagecache_file::run,
    target: "pagecache_file_model",
    seed: 0xf11e,
    len: (1024, 120),
    count: (300, 2),
    min_corpus: 2000,
}
