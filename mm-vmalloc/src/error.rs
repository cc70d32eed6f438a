//! Errors.

use core::fmt;

use mm_paging::PagingError;
use mm_types::{FrameError, PhysAddr, VirtAddr};

/// Why a vmalloc operation was refused. A refused allocation has given back
/// everything it took (frames, page-table entries, its virtual range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmallocError {
    /// A size of zero.
    ZeroSize,
    /// An alignment that is not a power of two, or below 4 KiB.
    BadAlignment(u64),
    /// A size (plus guard page) larger than the whole window.
    TooLarge {
        /// Bytes asked for, rounded up to pages.
        size: u64,
        /// The window's length.
        window: u64,
    },
    /// No free range of the window is large enough (after a purge of the
    /// lazily freed areas).
    NoSpace {
        /// Bytes asked for, guard included.
        size: u64,
        /// Alignment asked for.
        align: u64,
    },
    /// A free of an address no area contains.
    NotAnArea(VirtAddr),
    /// A free of an address inside an area but not at its start.
    NotAreaStart {
        /// The address given.
        addr: VirtAddr,
        /// The start of the area that contains it.
        area: VirtAddr,
    },
    /// A free of an area that was freed already (and not yet reused).
    DoubleFree(VirtAddr),
    /// A free through the wrong call (`vfree` of a `vmap` area, say).
    WrongKind {
        /// The area's start.
        addr: VirtAddr,
        /// What the area is.
        kind: crate::AreaKind,
    },
    /// A physical range for `ioremap` or a frame for `vmap` that is empty,
    /// overflows or is not 4 KiB aligned.
    BadPhys(PhysAddr),
    /// The frame provider refused a backing frame.
    OutOfFrames(FrameError),
    /// The frame provider refused to take back a frame of a freed area (the
    /// area is freed all the same; the provider keeps the frame).
    FrameRefused(FrameError),
    /// The frame provider refused a frame for the area index's own nodes.
    Metadata(FrameError),
    /// The physical memory accessor could not reach a frame for the index.
    MetadataUnreachable(PhysAddr),
    /// The page table refused the mapping (its table pages could not be
    /// allocated, or part of the window was mapped by someone else).
    Paging(PagingError),
    /// A configuration that cannot work (an empty, unaligned or
    /// non-canonical window).
    BadConfig(&'static str),
}

impl fmt::Display for VmallocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmallocError::ZeroSize => write!(f, "an area of zero bytes"),
            VmallocError::BadAlignment(a) => write!(f, "alignment {a:#x} is not a power of two of at least 4 KiB"),
            VmallocError::TooLarge { size, window } => {
                write!(f, "{size:#x} bytes do not fit a window of {window:#x} bytes")
            }
            VmallocError::NoSpace { size, align } => {
                write!(f, "no free range of {size:#x} bytes aligned to {align:#x} is left in the window")
            }
            VmallocError::NotAnArea(a) => write!(f, "{a:?} is in no area"),
            VmallocError::NotAreaStart { addr, area } => {
                write!(f, "{addr:?} is inside the area at {area:?}, not its start")
            }
            VmallocError::DoubleFree(a) => write!(f, "the area at {a:?} is already freed"),
            VmallocError::WrongKind { addr, kind } => write!(f, "the area at {addr:?} is {kind:?}"),
            VmallocError::BadPhys(p) => write!(f, "physical address {p:?} is misaligned or the range overflows"),
            VmallocError::OutOfFrames(e) => write!(f, "no frame for the area: {e}"),
            VmallocError::FrameRefused(e) => write!(f, "the frame provider refused a freed frame: {e}"),
            VmallocError::Metadata(e) => write!(f, "no frame for the area index: {e}"),
            VmallocError::MetadataUnreachable(p) => write!(f, "index frame {p:?} is not reachable"),
            VmallocError::Paging(e) => write!(f, "page table: {e}"),
            VmallocError::BadConfig(why) => write!(f, "bad configuration: {why}"),
        }
    }
}

impl core::error::Error for VmallocError {}

impl From<PagingError> for VmallocError {
    fn from(e: PagingError) -> Self {
        VmallocError::Paging(e)
    }
}
