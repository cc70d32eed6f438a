//! [`Sketch`]: approximate reference counts of pages, resident or not, in a
//! fixed table (a count-min sketch of 4-bit counters that ages by halving).

use alloc::vec;
use alloc::vec::Vec;

use crate::PageId;

/// Every counter's low three bits: `(word >> 1) & HALVE` halves sixteen
/// counters at once.
const HALVE: u64 = 0x7777_7777_7777_7777;

/// Approximate reference counts of page ids, resident or evicted, in a
/// table sized once for the cache: the frequency history that lets a
/// policy compare a newcomer with a long-resident page (TinyLFU: Einziger,
/// Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
/// Policy", ACM Transactions on Storage 13(4), 2017).
///
/// Each page hashes to one 64-bit word of sixteen 4-bit counters and to
/// one counter in each quarter of it (four rows of a count-min sketch that
/// share a word, so an update touches one cache line). A page's estimate
/// is the smallest of its four counters; an increment raises only the
/// counters equal to that minimum (conservative update), so pages that
/// share counters inflate each other less. Counters saturate at 15. After
/// `sample` increments every counter is halved: old popularity fades, and
/// the estimate follows the recent past (the paper's reset).
#[derive(Clone, Debug)]
pub struct Sketch {
    words: Vec<u64>,
    mask: usize,
    additions: usize,
    sample: usize,
}

impl Sketch {
    /// A sketch for a cache of `capacity` pages: a power-of-two number of
    /// words, at least `capacity / 2` (eight counters, four bytes, per
    /// cached page), halved every ten times `capacity` increments.
    pub fn new(capacity: usize) -> Self {
        let words = (capacity / 2).max(8).next_power_of_two();
        Sketch { words: vec![0; words], mask: words - 1, additions: 0, sample: capacity.max(1).saturating_mul(10) }
    }

    /// The word and the four counters' shifts of `page`.
    #[inline]
    fn slots(&self, page: PageId) -> (usize, [u32; 4]) {
        // A multiply-xorshift mix: consecutive ids land far apart.
        let mut h = (u64::from(page) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 32;
        let word = (h as usize) & self.mask;
        let sel = (h >> 40) as u32;
        // Counter k of the page lies in quarter k of the word.
        let at = |k: u32| (k << 4) | (((sel >> (2 * k)) & 3) << 2);
        (word, [at(0), at(1), at(2), at(3)])
    }

    /// The four counters at `shifts` of `word`.
    #[inline]
    fn counters(word: u64, [a, b, c, d]: [u32; 4]) -> [u64; 4] {
        [(word >> a) & 15, (word >> b) & 15, (word >> c) & 15, (word >> d) & 15]
    }

    /// The estimated count of `page` (never below its true count since the
    /// last halvings, divided as they divided it).
    pub fn estimate(&self, page: PageId) -> u8 {
        let (w, shifts) = self.slots(page);
        let [a, b, c, d] = Self::counters(self.words[w], shifts);
        a.min(b).min(c).min(d) as u8
    }

    /// Adds `n` references of `page`: as `n` conservative increments, each
    /// raising the counters equal to the least, which leaves every counter
    /// below `least + n` at `least + n` (at most 15) and the rest as they were.
    pub fn add(&mut self, page: PageId, n: u8) {
        let (w, shifts) = self.slots(page);
        let mut word = self.words[w];
        let counters = Self::counters(word, shifts);
        let [a, b, c, d] = counters;
        let target = (a.min(b).min(c).min(d) + u64::from(n)).min(15);
        for (s, c) in shifts.into_iter().zip(counters) {
            word += target.saturating_sub(c) << s;
        }
        self.words[w] = word;
        self.additions += usize::from(n);
        if self.additions >= self.sample {
            self.halve();
        }
    }

    /// Halves every counter (the reset that ages the counts).
    #[cold]
    fn halve(&mut self) {
        for word in &mut self.words {
            *word = (*word >> 1) & HALVE;
        }
        self.additions /= 2;
    }

    /// Bytes of the table.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_and_halve() {
        let mut s = Sketch::new(64);
        assert_eq!(s.estimate(7), 0);
        s.add(7, 3);
        assert_eq!(s.estimate(7), 3);
        for _ in 0..10 {
            s.add(7, 3);
        }
        assert_eq!(s.estimate(7), 15);
        // 33 additions so far; the 640th halves every counter.
        for p in 1000..1000 + 607 {
            s.add(p, 1);
        }
        assert_eq!(s.estimate(7), 7);
    }

    #[test]
    fn estimates_rank_hot_above_cold() {
        let mut s = Sketch::new(1024);
        for round in 0..4 {
            for p in 0..512 {
                s.add(p, 1);
                if p < 32 || round == 0 {
                    s.add(p + 10_000, 1);
                }
            }
        }
        let hot = (10_000..10_032).map(|p| u32::from(s.estimate(p))).sum::<u32>();
        let cold = (10_100..10_132).map(|p| u32::from(s.estimate(p))).sum::<u32>();
        assert!(hot >= 4 * 32 && cold < 2 * 32, "hot {hot} cold {cold}");
    }
}
