//! The types fuzz model (`src/types.rs`) on generated inputs and on the
//! checked-in cargo-fuzz corpus.

use mm_fuzz_models::types::*;

mm_fuzz_models::model_tests! {
    run: run,
    target: "types_addr",
    seed: 0x9e37_79b9,
    len: (512, 160),
    count: (200, 4),
    min_corpus: 8,
}

#[test]
fn edge_cases() {
    for raw in [0, 1 << 47, (1 << 47) - 1, 1 << 56, (1 << 56) - 1, u64::MAX, 0xff00_0000_0000_0000] {
        for five in [false, true] {
            check(&Op::Virt { raw, five });
        }
        for delta in [0, 1, 0x1000, 1 << 56, u64::MAX] {
            check(&Op::VirtStep { raw, delta, down: false });
            check(&Op::VirtStep { raw, delta, down: true });
            check(&Op::PhysAdd { raw, delta });
        }
        for shift in [0, 12, 63, 64, 200] {
            check(&Op::Align { raw, shift });
        }
    }
}
