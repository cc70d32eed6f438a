//! mm-pagecache's cache: files read, written, synced, written back,
//! truncated, evicted and released with I/O and frame failures injected,
//! against the bytes each file should hold
//! (`mm_fuzz_models::pagecache_file`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::pagecache_file::run(data);
});
