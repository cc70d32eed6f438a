//! What went wrong in a swap operation.

use core::fmt;

use mm_types::{FrameError, PhysAddr, StoreError, SwapSlot};

use crate::area::CLUSTER;
use crate::MAX_AREAS;

/// What went wrong, said precisely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapError {
    /// No area has a free slot (or run of slots).
    Full,
    /// All [`MAX_AREAS`] areas are in use.
    TooManyAreas,
    /// No area with this number.
    NoArea(u8),
    /// The slot is past the end of its area.
    OutOfRange(SwapSlot),
    /// The slot is not allocated (a use was dropped twice, or never taken:
    /// a slot waiting in a per-CPU slot cache is not handed out yet).
    NotAllocated(SwapSlot),
    /// The slot is marked bad (its writes failed [`BAD_AFTER`](crate::BAD_AFTER) times): it
    /// has no uses and is never allocated again.
    Bad(SwapSlot),
    /// [`Swap::cache`](crate::Swap::cache) of a slot whose page is in the swap cache already.
    AlreadyCached(SwapSlot),
    /// [`Swap::cache`](crate::Swap::cache) of a frame the swap cache holds for another slot
    /// (one frame cannot be two pages).
    FrameCached {
        /// The frame.
        frame: PhysAddr,
        /// The slot it is cached for.
        slot: SwapSlot,
    },
    /// A store with more slots than an area can address ([`MAX_SLOTS`](crate::MAX_SLOTS)).
    TooLarge {
        /// The slots the store claims.
        slots: u64,
        /// The most an area can have ([`MAX_SLOTS`](crate::MAX_SLOTS)).
        max: u64,
    },
    /// The slot has never been written: there is nothing to read.
    NotWritten(SwapSlot),
    /// A use count would pass its limit (16,383).
    CountOverflow(SwapSlot),
    /// The store failed.
    Store(StoreError),
    /// The data read back does not match the checksum of what was
    /// written: reported, never returned as the page.
    Corrupt(SwapSlot),
    /// No frame for a swap-in: the frame provider is out of memory (or
    /// out of the zones a swap-in may use).
    OutOfMemory,
    /// The frame provider refused a swap-in's frame for another reason
    /// than a lack of memory (a bug or set-up error there).
    Frames(FrameError),
    /// A frame the physical memory accessor cannot reach (a set-up error
    /// of the caller's, never a lack of memory).
    Unreachable(PhysAddr),
    /// A run length that is not a power of two up to [`CLUSTER`].
    BadRun(usize),
    /// `swapoff` could not empty the area: slots still in use.
    InUse {
        /// The area.
        area: u8,
        /// Slots still allocated.
        slots: u64,
    },
}

impl fmt::Display for SwapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwapError::Full => write!(f, "swap is full"),
            SwapError::TooManyAreas => write!(f, "all {MAX_AREAS} swap areas are in use"),
            SwapError::NoArea(a) => write!(f, "no swap area {a}"),
            SwapError::OutOfRange(s) => write!(f, "slot {} is past the end of area {}", s.offset(), s.area()),
            SwapError::NotAllocated(s) => write!(f, "slot {} of area {} is not allocated", s.offset(), s.area()),
            SwapError::Bad(s) => write!(f, "slot {} of area {} is marked bad (failed writes)", s.offset(), s.area()),
            SwapError::AlreadyCached(s) => {
                write!(f, "slot {} of area {} already has a page in the swap cache", s.offset(), s.area())
            }
            SwapError::FrameCached { frame, slot } => write!(
                f,
                "frame {:#x} is in the swap cache already, for slot {} of area {}",
                frame.as_u64(),
                slot.offset(),
                slot.area()
            ),
            SwapError::TooLarge { slots, max } => {
                write!(f, "a store of {slots} slots is larger than a swap area can be ({max} slots)")
            }
            SwapError::NotWritten(s) => write!(f, "slot {} of area {} was never written", s.offset(), s.area()),
            SwapError::CountOverflow(s) => write!(f, "slot {} of area {} has too many users", s.offset(), s.area()),
            SwapError::Store(e) => write!(f, "swap device: {e}"),
            SwapError::Corrupt(s) => write!(f, "slot {} of area {} failed its checksum", s.offset(), s.area()),
            SwapError::OutOfMemory => write!(f, "no frame to swap in"),
            SwapError::Frames(e) => write!(f, "the frame provider refused a frame to swap in: {e}"),
            SwapError::Unreachable(a) => {
                write!(f, "frame {:#x} is not reachable through the memory accessor", a.as_u64())
            }
            SwapError::BadRun(n) => write!(f, "a run of {n} slots is not a power of two up to {CLUSTER}"),
            SwapError::InUse { area, slots } => write!(f, "area {area} still has {slots} slots in use"),
        }
    }
}

impl core::error::Error for SwapError {}
