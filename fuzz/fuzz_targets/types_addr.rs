//! Address arithmetic, canonical checks and range operations of `mm-types`
//! against a 128-bit integer and set model (`mm_fuzz_models::types`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::types::run(data);
});
