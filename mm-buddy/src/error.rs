//! Errors of setting up the allocator and of contiguous allocation.

use core::fmt;

use mm_types::{FrameError, PhysRange};

/// Why a configuration, an added memory range or a contiguous request was
/// refused. (Ordinary allocation and free report [`FrameError`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuddyError {
    /// A configuration value out of range.
    BadConfig(&'static str),
    /// All region slots are in use (see [`MAX_REGIONS`](crate::MAX_REGIONS)).
    TooManyRegions,
    /// The range overlaps memory the allocator already manages.
    Overlap(PhysRange),
    /// The range is not reachable through the physical memory accessor.
    Unreachable(PhysRange),
    /// The range reaches frame numbers the free lists' 32-bit links cannot
    /// hold (physical addresses at or above 16 TiB less one frame; see
    /// [`MAX_FRAMES`](crate::MAX_FRAMES)).
    BeyondLimit(PhysRange),
    /// A contiguous request for zero frames.
    ZeroLength,
    /// An alignment that is not a power of two.
    BadAlignment(u64),
    /// No free run of the requested size and alignment exists.
    NoContiguousRange {
        /// Frames asked for.
        frames: u64,
    },
    /// A failure of the underlying frame operations.
    Frame(FrameError),
}

impl From<FrameError> for BuddyError {
    fn from(e: FrameError) -> Self {
        BuddyError::Frame(e)
    }
}

impl fmt::Display for BuddyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuddyError::BadConfig(why) => write!(f, "bad configuration: {why}"),
            BuddyError::TooManyRegions => write!(f, "all {} region slots are in use", crate::MAX_REGIONS),
            BuddyError::Overlap(r) => write!(f, "{r:?} overlaps managed memory"),
            BuddyError::Unreachable(r) => write!(f, "{r:?} is not reachable through the physical memory accessor"),
            BuddyError::BeyondLimit(r) => {
                write!(f, "{r:?} reaches above frame {:#x}, beyond what the free lists can link", crate::MAX_FRAMES)
            }
            BuddyError::ZeroLength => f.write_str("contiguous request for zero frames"),
            BuddyError::BadAlignment(a) => write!(f, "alignment {a} is not a power of two"),
            BuddyError::NoContiguousRange { frames } => write!(f, "no free run of {frames} frames"),
            BuddyError::Frame(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for BuddyError {}
