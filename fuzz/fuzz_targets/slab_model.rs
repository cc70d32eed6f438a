//! mm-slab's kmalloc against a model of live allocations: mixed sizes and
//! alignments, frees in any order, reallocations, remote frees from another
//! CPU, shrinks, and bad frees (double, interior), with and without the
//! debug checks (`mm_fuzz_models::slab`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::slab::run(data);
});
