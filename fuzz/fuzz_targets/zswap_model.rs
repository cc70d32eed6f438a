//! mm-swap's compressed tier under random writes of zero, text and random
//! pages, reads, discards, write-backs and a failing store below, against a
//! model of every slot's last good write (`mm_swap::fuzz_model::run_zswap`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_swap::fuzz_model::run_zswap(data);
});
