//! Alignment helpers on plain integers.
//!
//! Alignments must be non-zero powers of two; anything else is reported as
//! [`AddrError::BadAlignment`], and rounding up past `u64::MAX` as
//! [`AddrError::Overflow`]. Nothing here wraps.

use crate::error::AddrError;

/// Checks that `align` is a non-zero power of two.
///
/// ```
/// use mm_types::align::check_alignment;
/// assert!(check_alignment(4096).is_ok());
/// assert!(check_alignment(0).is_err());
/// assert!(check_alignment(12).is_err());
/// ```
pub const fn check_alignment(align: u64) -> Result<u64, AddrError> {
    if align.is_power_of_two() {
        Ok(align)
    } else {
        Err(AddrError::BadAlignment { align })
    }
}

/// Rounds `value` down to a multiple of `align`.
///
/// ```
/// use mm_types::align::align_down;
/// assert_eq!(align_down(0x1fff, 0x1000), Ok(0x1000));
/// ```
pub const fn align_down(value: u64, align: u64) -> Result<u64, AddrError> {
    match check_alignment(align) {
        Ok(a) => Ok(value & !(a - 1)),
        Err(e) => Err(e),
    }
}

/// Rounds `value` up to a multiple of `align`.
///
/// ```
/// use mm_types::align::align_up;
/// use mm_types::AddrError;
/// assert_eq!(align_up(0x1001, 0x1000), Ok(0x2000));
/// assert_eq!(align_up(u64::MAX, 0x1000), Err(AddrError::Overflow));
/// ```
pub const fn align_up(value: u64, align: u64) -> Result<u64, AddrError> {
    match check_alignment(align) {
        Ok(a) => match value.checked_add(a - 1) {
            Some(v) => Ok(v & !(a - 1)),
            None => Err(AddrError::Overflow),
        },
        Err(e) => Err(e),
    }
}

/// Whether `value` is a multiple of `align`; `false` when `align` is not a
/// power of two.
pub const fn is_aligned(value: u64, align: u64) -> bool {
    align.is_power_of_two() && value & (align - 1) == 0
}

/// Returns `value` if it is aligned to `align`, else [`AddrError::Misaligned`]
/// (or [`AddrError::BadAlignment`]).
pub const fn require_aligned(value: u64, align: u64) -> Result<u64, AddrError> {
    match check_alignment(align) {
        Err(e) => Err(e),
        Ok(_) if is_aligned(value, align) => Ok(value),
        Ok(_) => Err(AddrError::Misaligned { value, align }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(align_down(0, 8), Ok(0));
        assert_eq!(align_down(17, 8), Ok(16));
        assert_eq!(align_up(16, 8), Ok(16));
        assert_eq!(align_up(17, 8), Ok(24));
        assert_eq!(align_up(u64::MAX - 7, 8), Ok(u64::MAX - 7));
        assert_eq!(align_up(u64::MAX - 6, 8), Err(AddrError::Overflow));
        assert_eq!(align_up(5, 1), Ok(5));
    }

    #[test]
    fn bad_alignments() {
        for a in [0u64, 3, 12, u64::MAX] {
            assert_eq!(align_down(4, a), Err(AddrError::BadAlignment { align: a }));
            assert_eq!(align_up(4, a), Err(AddrError::BadAlignment { align: a }));
            assert!(!is_aligned(0, a));
        }
    }

    #[test]
    fn require() {
        assert_eq!(require_aligned(0x2000, 0x1000), Ok(0x2000));
        assert_eq!(require_aligned(0x2001, 0x1000), Err(AddrError::Misaligned { value: 0x2001, align: 0x1000 }));
        assert_eq!(require_aligned(1, 6), Err(AddrError::BadAlignment { align: 6 }));
    }
}
