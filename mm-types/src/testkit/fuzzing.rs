//! Helpers shared by the model-based fuzz bodies (`fuzz-models`), tests and
//! benches: a deterministic generator, pseudo-random inputs, and replay of
//! the checked-in cargo-fuzz corpus as an ordinary test.

extern crate std;

use std::path::Path;
use std::vec::Vec;

/// A xorshift64 generator: deterministic, fast, good enough for test data.
#[derive(Clone, Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value.
    #[inline]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Calls `run` on `count` pseudo-random inputs of `len` bytes from `seed`.
pub fn random_inputs(seed: u64, len: usize, count: usize, mut run: impl FnMut(&[u8])) {
    let mut rng = XorShift(seed | 1);
    let mut buf = std::vec![0u8; len];
    for _ in 0..count {
        for b in buf.iter_mut() {
            *b = rng.next() as u8;
        }
        run(&buf);
    }
}

/// Runs `run` on every input of `fuzz/corpus/<target>` of the workspace
/// that holds `manifest_dir` (a crate directory), and returns how many ran.
///
/// # Panics
///
/// If the corpus directory or a file in it cannot be read.
pub fn replay_corpus(manifest_dir: &str, target: &str, mut run: impl FnMut(&[u8])) -> usize {
    let dir = Path::new(manifest_dir).join("../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is checked in: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    for f in &files {
        run(&std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
    }
    files.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let mut a = std::vec::Vec::new();
        random_inputs(5, 4, 2, |x| a.push(x.to_vec()));
        let mut b = std::vec::Vec::new();
        random_inputs(5, 4, 2, |x| b.push(x.to_vec()));
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        assert_ne!(XorShift(1).next(), XorShift(2).next());
    }
}
