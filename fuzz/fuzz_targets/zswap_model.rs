//! mm-swap's compressed tier under random writes of zero, text and random
//! pages, reads, discards, write-backs and a failing store below, against a
//! model of every slot's last good write (`mm_fuzz_models::swap::run_zswap`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::swap::run_zswap(data);
});
