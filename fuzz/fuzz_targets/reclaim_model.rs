//! mm-reclaim's policies and reclaim driver under random inserts, software and
//! hardware references, removals, evictions and locked pages, against a set
//! model of the tracked pages (`mm_fuzz_models::reclaim`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::reclaim::run(data);
});
