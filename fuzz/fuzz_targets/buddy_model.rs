//! mm-buddy against a model of allocated blocks: allocations of every order,
//! zone and mobility, frees, every kind of bad free, contiguous runs,
//! hot-add and drains (`mm_buddy::fuzz_model`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_buddy::fuzz_model::run(data);
});
