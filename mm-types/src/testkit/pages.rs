//! Sample page contents for swap and compression tests and benchmarks:
//! the page mix that compressed-swap figures are reported on.

use super::XorShift;
use crate::SLOT_SIZE;

/// A kind of page content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSample {
    /// All zeroes (untouched heap, zeroed buffers).
    Zero,
    /// Text: words of a small vocabulary, skewed towards common ones, with
    /// spaces, punctuation and line breaks (source code, logs, documents).
    Text,
    /// Random bytes (encrypted or already compressed data).
    Random,
}

impl PageSample {
    /// The three kinds, in the order a mix cycles through them.
    pub const ALL: [PageSample; 3] = [PageSample::Zero, PageSample::Text, PageSample::Random];

    /// A page of this kind; `seed` picks which one.
    pub fn page(self, seed: u64) -> [u8; SLOT_SIZE] {
        let mut p = [0u8; SLOT_SIZE];
        let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        match self {
            PageSample::Zero => {}
            PageSample::Random => {
                for c in p.chunks_exact_mut(8) {
                    c.copy_from_slice(&rng.next().to_le_bytes());
                }
            }
            PageSample::Text => {
                let mut i = 0;
                while i < SLOT_SIZE {
                    let r = rng.next();
                    // Two draws' minimum: low indices (common words) win.
                    let w = ((r & 63) as usize).min(((r >> 6) & 63) as usize);
                    let sep: &[u8] = match (r >> 12) % 16 {
                        0 => b".\n",
                        1 | 2 => b", ",
                        _ => b" ",
                    };
                    for &b in WORDS[w].as_bytes().iter().chain(sep) {
                        if i < SLOT_SIZE {
                            p[i] = b;
                            i += 1;
                        }
                    }
                }
            }
        }
        p
    }
}

const WORDS: [&str; 64] = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "page",
    "that",
    "for",
    "it",
    "as",
    "with",
    "frame",
    "on",
    "be",
    "by",
    "this",
    "are",
    "from",
    "or",
    "at",
    "an",
    "memory",
    "which",
    "not",
    "swap",
    "have",
    "table",
    "was",
    "can",
    "slot",
    "all",
    "were",
    "when",
    "each",
    "zone",
    "free",
    "there",
    "used",
    "been",
    "fault",
    "map",
    "more",
    "other",
    "into",
    "kernel",
    "address",
    "only",
    "cache",
    "some",
    "new",
    "allocator",
    "time",
    "these",
    "may",
    "first",
    "could",
    "order",
    "reclaim",
    "between",
    "process",
    "through",
    "list",
];
