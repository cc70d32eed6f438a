//! mm-paging against a per-page model: map (with and without huge pages),
//! unmap, protect, split, swap out/in and translate, with injected
//! allocation failures, in 4- and 5-level mode (`mm_fuzz_models::paging`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::paging::run(data);
});
