//! mm-pagecache's page index under random inserts, evictions to shadows,
//! removals, tags, searches and truncations, against a map
//! (`mm_fuzz_models::pagecache`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::pagecache::run(data);
});
