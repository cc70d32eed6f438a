//! mm-buddy against a model of allocated blocks: allocations of every order,
//! zone and mobility, frees, every kind of bad free, contiguous runs,
//! hot-add and drains (`mm_fuzz_models::buddy`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::buddy::run(data);
});
