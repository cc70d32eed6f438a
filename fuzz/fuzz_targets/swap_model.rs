//! mm-swap under random swap-outs, fork sharing, frees, swap-ins, cache
//! drops and injected write/read failures and corruption, against a model
//! of every slot's users and page contents (`mm_fuzz_models::swap`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::swap::run(data);
});
