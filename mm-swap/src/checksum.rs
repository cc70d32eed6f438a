//! The per-slot checksum: four independent Fletcher-style lanes over the
//! page's 64-bit words (a flipped bit changes its lane's first sum; a swap
//! of two words changes the second), folded to a non-zero 64-bit value
//! (zero means "never written" in the slot map). Independent lanes keep it
//! close to memory speed; it detects corruption, not tampering.

use mm_types::SLOT_SIZE;

/// The checksum of one page; never zero.
pub fn page(p: &[u8; SLOT_SIZE]) -> u64 {
    /// The little-endian word at `o` of a 32-byte chunk. Constant offsets
    /// into an array: no bounds checks left once inlined, and few steps
    /// for an interpreter such as miri (this runs for every page written
    /// to or read from swap). The chunk is copied out first: under miri a
    /// reference into the page, when the page is simulated RAM, costs far
    /// more than the copy.
    #[inline(always)]
    fn word(c: &[u8; 32], o: usize) -> u64 {
        u64::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3], c[o + 4], c[o + 5], c[o + 6], c[o + 7]])
    }
    let mut a = [0u64; 4];
    let mut b = [0u64; 4];
    for chunk in p.chunks_exact(32) {
        let c: [u8; 32] = chunk.try_into().expect("32 bytes");
        let w = [word(&c, 0), word(&c, 8), word(&c, 16), word(&c, 24)];
        a[0] = a[0].wrapping_add(w[0]);
        a[1] = a[1].wrapping_add(w[1]);
        a[2] = a[2].wrapping_add(w[2]);
        a[3] = a[3].wrapping_add(w[3]);
        b[0] = b[0].wrapping_add(a[0]);
        b[1] = b[1].wrapping_add(a[1]);
        b[2] = b[2].wrapping_add(a[2]);
        b[3] = b[3].wrapping_add(a[3]);
    }
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for lane in 0..4 {
        h = (h ^ a[lane]).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        h = (h ^ b[lane]).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    h | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_flips_and_swaps() {
        let mut p = [0u8; SLOT_SIZE];
        for (i, b) in p.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let base = page(&p);
        assert_ne!(base, 0);
        // Every single-bit flip of a sample of positions is seen.
        for byte in (0..SLOT_SIZE).step_by(if cfg!(miri) { 509 } else { 13 }) {
            for bit in 0..8 {
                p[byte] ^= 1 << bit;
                assert_ne!(page(&p), base, "flip at {byte}.{bit}");
                p[byte] ^= 1 << bit;
            }
        }
        // Two words of one lane swapped.
        let (x, y) = (p[0..8].to_vec(), p[32..40].to_vec());
        p[0..8].copy_from_slice(&y);
        p[32..40].copy_from_slice(&x);
        assert_ne!(page(&p), base);
        assert_ne!(page(&[0; SLOT_SIZE]), 0);
    }

    #[test]
    fn lanes_are_the_words_of_each_32_byte_chunk() {
        // The definition, written plainly: word i goes to lane i % 4.
        let mut p = [0u8; SLOT_SIZE];
        for (i, b) in p.iter_mut().enumerate() {
            *b = (i * 131 + 17) as u8;
        }
        let (mut a, mut b) = ([0u64; 4], [0u64; 4]);
        for (i, w) in p.chunks_exact(8).enumerate() {
            let lane = i % 4;
            a[lane] = a[lane].wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
            b[lane] = b[lane].wrapping_add(a[lane]);
        }
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for lane in 0..4 {
            h = (h ^ a[lane]).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
            h = (h ^ b[lane]).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        }
        assert_eq!(page(&p), h | 1);
    }
}
