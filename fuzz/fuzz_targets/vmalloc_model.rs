//! mm-vmalloc against a model of the window's live and lazily freed ranges:
//! vmalloc (guards, alignments, huge pages), vfree, bad frees, vmap, ioremap,
//! purges and injected frame-allocation failures; placement must be the
//! model's lowest fit, guard pages must stay unmapped, areas must keep their
//! contents, and teardown must return every frame (`mm_fuzz_models::vmalloc`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::vmalloc::run(data);
});
