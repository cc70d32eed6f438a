//! mm-vma address spaces against a page-level model: mmap (anywhere, fixed,
//! fixed-no-replace, hint; anonymous and object, private and shared), munmap,
//! mprotect, mremap, brk, fork, exit, reads, writes and swap-outs over up to
//! four spaces; every result, address, rights and value must be the model's,
//! and every frame must come back (`mm_fuzz_models::vma`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::vma::run(data);
});
