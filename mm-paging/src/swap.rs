//! Swap entries: what a non-present page-table entry holds for a page that
//! was written to a swap device.

use core::fmt;

/// A swap device number and a slot on it, stored in a non-present entry.
///
/// Up to [`SwapEntry::MAX_DEVICES`] devices, slots below 2^50.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwapEntry {
    device: u8,
    slot: u64,
}

impl SwapEntry {
    /// Number of swap devices an entry can name (as Linux's `MAX_SWAPFILES`).
    pub const MAX_DEVICES: u8 = 32;
    /// Slots are below this.
    pub const SLOT_LIMIT: u64 = 1 << 50;

    /// A swap entry, or `None` if the device or slot is out of range.
    pub const fn new(device: u8, slot: u64) -> Option<Self> {
        if device < Self::MAX_DEVICES && slot < Self::SLOT_LIMIT {
            Some(SwapEntry { device, slot })
        } else {
            None
        }
    }

    /// The device.
    pub const fn device(self) -> u8 {
        self.device
    }

    /// The slot on the device.
    pub const fn slot(self) -> u64 {
        self.slot
    }
}

impl fmt::Debug for SwapEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwapEntry(device {}, slot {})", self.device, self.slot)
    }
}
