//! Swap slots: the name of a page written to swap, as a swap subsystem
//! hands it out and as a non-present page-table entry stores it.

use core::fmt;

/// A slot of a swap area: which area, and the offset in it (in slots).
///
/// One type from the swap allocator to the page table: mm-swap hands slots
/// out and reads and writes them, mm-paging stores one in a non-present
/// entry, mm-vma's fault path reads it back. Every value fits an x86-64
/// swap entry: areas below [`SwapSlot::MAX_AREAS`], offsets below
/// [`SwapSlot::OFFSET_LIMIT`].
///
/// ```
/// use mm_types::SwapSlot;
///
/// let s = SwapSlot::new(3, 4096).expect("in range");
/// assert_eq!((s.area(), s.offset()), (3, 4096));
/// assert_eq!(SwapSlot::new(SwapSlot::MAX_AREAS, 0), None);
/// assert_eq!(SwapSlot::new(0, SwapSlot::OFFSET_LIMIT), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwapSlot {
    area: u8,
    offset: u64,
}

impl SwapSlot {
    /// Swap areas a slot can name (as Linux's `MAX_SWAPFILES`).
    pub const MAX_AREAS: u8 = 32;
    /// Offsets are below this (50 bits, what an x86-64 entry holds beside
    /// the area and its own bits).
    pub const OFFSET_LIMIT: u64 = 1 << 50;

    /// The slot at `offset` of `area`, or `None` if either is out of range.
    pub const fn new(area: u8, offset: u64) -> Option<SwapSlot> {
        if area < Self::MAX_AREAS && offset < Self::OFFSET_LIMIT {
            Some(SwapSlot { area, offset })
        } else {
            None
        }
    }

    /// The area.
    pub const fn area(self) -> u8 {
        self.area
    }

    /// The offset in the area, in slots.
    pub const fn offset(self) -> u64 {
        self.offset
    }

    /// The slot as one number (area in bits 50 to 54, offset below): how a
    /// value entry of a page index stores it.
    pub const fn to_bits(self) -> u64 {
        (self.area as u64) << 50 | self.offset
    }

    /// The slot [`to_bits`](SwapSlot::to_bits) made, or `None` for a number
    /// it cannot have made.
    pub const fn from_bits(bits: u64) -> Option<SwapSlot> {
        if bits >> 55 != 0 {
            return None;
        }
        SwapSlot::new((bits >> 50) as u8, bits & (Self::OFFSET_LIMIT - 1))
    }
}

impl fmt::Debug for SwapSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwapSlot(area {}, offset {})", self.area, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_edges() {
        let last = SwapSlot::new(SwapSlot::MAX_AREAS - 1, SwapSlot::OFFSET_LIMIT - 1).expect("the last slot");
        assert_eq!((last.area(), last.offset()), (31, (1 << 50) - 1));
        assert!(SwapSlot::new(32, 0).is_none());
        assert!(SwapSlot::new(0, 1 << 50).is_none());
        assert!(SwapSlot::new(0, 0) < SwapSlot::new(0, 1), "ordered by area, then offset");
        assert!(SwapSlot::new(0, 9) < SwapSlot::new(1, 0));
    }

    #[test]
    fn bits_round_trip() {
        for s in [SwapSlot::new(0, 0), SwapSlot::new(31, (1 << 50) - 1), SwapSlot::new(7, 12345)] {
            let s = s.unwrap();
            assert_eq!(SwapSlot::from_bits(s.to_bits()), Some(s));
        }
        assert_eq!(SwapSlot::from_bits(32 << 50), None, "area 32");
        assert_eq!(SwapSlot::from_bits(1 << 55), None);
    }
}
