//! The reference kernel's wiring (swap device, evictor, tracked frames,
//! direct and background reclaim) on the host simulation under random
//! tasks, mappings, writes, reads, forks, kills and reclaim, against a
//! model of every task's pages (`mm_fuzz_models::wiring`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_fuzz_models::wiring::run(data);
});
