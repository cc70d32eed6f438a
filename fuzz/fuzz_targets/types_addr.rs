//! Address arithmetic, canonical checks and range operations of `mm-types`
//! against a 128-bit integer and set model (`mm_types::fuzz_model`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_types::fuzz_model::run(data);
});
