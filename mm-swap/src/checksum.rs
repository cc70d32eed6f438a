//! The per-slot checksum: four independent Fletcher-style lanes over the
//! page's 64-bit words (a flipped bit changes its lane's first sum; a swap
//! of two words changes the second), folded to a non-zero 64-bit value
//! (zero means "never written" in the slot map). Independent lanes keep it
//! close to memory speed; it detects corruption, not tampering.

use mm_types::SLOT_SIZE;

/// The checksum of one page; never zero.
pub fn page(p: &[u8; SLOT_SIZE]) -> u64 {
    let mut a = [0u64; 4];
    let mut b = [0u64; 4];
    for chunk in p.chunks_exact(32) {
        for lane in 0..4 {
            let w = u64::from_le_bytes(chunk[lane * 8..lane * 8 + 8].try_into().expect("8 bytes"));
            a[lane] = a[lane].wrapping_add(w);
            b[lane] = b[lane].wrapping_add(a[lane]);
        }
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
}
