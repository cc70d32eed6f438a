//! The model-based fuzz bodies of the workspace, one module per cargo-fuzz
//! target of `fuzz/`: each `run(data)` decodes an operation sequence from
//! the bytes, drives one crate's public API with it, and checks every
//! result and the whole state against a plain model (the invariants of that
//! crate's `MODEL.md`).
//!
//! They live here, not in the crates, so that the published crates carry no
//! fuzzing feature and no `arbitrary` dependency. `tests/` runs each model
//! on generated inputs and replays its checked-in corpus
//! (`fuzz/corpus/<target>/`) under plain `cargo test`, and under miri.
//!
//! | module | target | crate |
//! |---|---|---|
//! | [`types`] | `types_addr` | mm-types |
//! | [`buddy`] | `buddy_model` | mm-buddy |
//! | [`paging`] | `paging_model` | mm-paging |
//! | [`slab`] | `slab_model` | mm-slab |
//! | [`vmalloc`] | `vmalloc_model` | mm-vmalloc |
//! | [`vma`] | `vma_model` | mm-vma |
//! | [`reclaim`] | `reclaim_model` | mm-reclaim |
//! | [`swap`] | `swap_model`, `zswap_model` | mm-swap |
//! | [`pagecache`] | `pagecache_model` | mm-pagecache (the page index) |
//! | [`pagecache_file`] | `pagecache_file_model` | mm-pagecache (the cache) |
//! | [`wiring`] | `wiring_model` | the reference kernel's wiring |

// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod buddy;
pub mod pagecache;
#[allow(unsafe_code)]
pub mod pagecache_file;
pub mod paging;
pub mod reclaim;
#[allow(unsafe_code)]
pub mod slab;
#[allow(unsafe_code)]
pub mod swap;
pub mod types;
#[allow(unsafe_code)]
pub mod vma;
#[allow(unsafe_code)]
pub mod vmalloc;
#[allow(unsafe_code)]
pub mod wiring;

use arbitrary::{Arbitrary, Unstructured};

/// Decodes up to `max` values of `T` from `data`, one after another until
/// the bytes run out or one fails to decode.
///
/// Unlike `Unstructured::arbitrary_iter`, which reads a "one more?" flag
/// before each element and so stops after two elements on average from
/// random bytes, every byte goes into the operations: a 4 KiB input holds
/// hundreds of them, and random inputs make long sequences too.
pub fn decode_ops<'a, T: Arbitrary<'a>>(data: &'a [u8], max: usize) -> Vec<T> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < max && !u.is_empty() {
        match T::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

#[doc(hidden)]
pub use mm_types::testkit::fuzzing as __fuzzing;

/// The two tests of a model, for a file of `tests/`: `generated_inputs`
/// runs it on pseudo-random inputs (fewer and shorter under miri, which
/// interprets every step), and `corpus` replays the target's checked-in
/// cargo-fuzz corpus natively and checks it holds at least `min_corpus`
/// inputs (a corpus that went missing fails instead of passing empty).
///
/// `len` and `count` are (native, miri) pairs: the bytes per input and
/// the number of inputs. Each file of `tests/` is one invocation.
#[macro_export]
macro_rules! model_tests {
    (
        run: $run:path,
        target: $target:literal,
        seed: $seed:expr,
        len: ($len:expr, $miri_len:expr),
        count: ($count:expr, $miri_count:expr),
        min_corpus: $min:expr $(,)?
    ) => {
        #[test]
        fn generated_inputs() {
            let (len, count) = if cfg!(miri) { ($miri_len, $miri_count) } else { ($len, $count) };
            $crate::__fuzzing::random_inputs($seed, len, count, $run);
        }

        /// Replays the checked-in cargo-fuzz corpus.
        #[test]
        #[cfg_attr(miri, ignore = "reads files; the corpus is replayed natively")]
        fn corpus() {
            let n = $crate::__fuzzing::replay_corpus(env!("CARGO_MANIFEST_DIR"), $target, $run);
            assert!(n >= $min, "the {} corpus holds {n} inputs, fewer than {}", $target, $min);
        }
    };
}
