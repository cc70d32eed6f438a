//! Errors of page-table operations.

use core::fmt;

use mm_types::{AddrError, FrameError, PageSize, VirtAddr};

/// Why a page-table operation was refused. A refused operation leaves the
/// tables exactly as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// An address that is not canonical (or not translatable) in the paging
    /// mode, or arithmetic that left the address space.
    BadAddress(AddrError),
    /// An address or length that is not aligned to the page size it needs.
    Misaligned {
        /// The offending value.
        value: u64,
        /// The alignment it lacks.
        align: u64,
    },
    /// A huge page whose physical frame is not aligned to its size.
    HugeFrameMisaligned {
        /// The frame address.
        phys: u64,
        /// The page size asked for.
        size: PageSize,
    },
    /// Part of the range is already mapped (or holds a swap entry).
    AlreadyMapped {
        /// First address found mapped.
        addr: VirtAddr,
    },
    /// Part of the range is not mapped.
    NotMapped {
        /// First address found unmapped.
        addr: VirtAddr,
    },
    /// The address holds a swap entry where a present mapping is needed.
    Swapped {
        /// The address.
        addr: VirtAddr,
    },
    /// Flags that cannot be expressed (a mapping without `READ`).
    InvalidFlags,
    /// An empty range.
    EmptyRange,
    /// Page-table pages could not be allocated.
    OutOfFrames(FrameError),
    /// Part of the range lies under a root entry borrowed from another
    /// hierarchy ([`PageTable::new_sharing`](crate::PageTable::new_sharing):
    /// the kernel half), which this one may read but never change.
    KernelRange {
        /// First address of the range under a borrowed root entry.
        addr: VirtAddr,
    },
}

impl From<AddrError> for PagingError {
    fn from(e: AddrError) -> Self {
        PagingError::BadAddress(e)
    }
}

impl From<FrameError> for PagingError {
    fn from(e: FrameError) -> Self {
        PagingError::OutOfFrames(e)
    }
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingError::BadAddress(e) => write!(f, "bad address: {e}"),
            PagingError::Misaligned { value, align } => write!(f, "{value:#x} is not aligned to {align:#x}"),
            PagingError::HugeFrameMisaligned { phys, size } => {
                write!(f, "frame {phys:#x} is not aligned for a {size} page")
            }
            PagingError::AlreadyMapped { addr } => write!(f, "{addr:#x} is already mapped"),
            PagingError::NotMapped { addr } => write!(f, "{addr:#x} is not mapped"),
            PagingError::Swapped { addr } => write!(f, "{addr:#x} is swapped out"),
            PagingError::InvalidFlags => f.write_str("mappings must be readable"),
            PagingError::EmptyRange => f.write_str("empty range"),
            PagingError::OutOfFrames(e) => write!(f, "no frame for a page table: {e}"),
            PagingError::KernelRange { addr } => {
                write!(f, "{addr:#x} lies under a root entry shared from another page table (the kernel's); it cannot be changed here")
            }
        }
    }
}

impl core::error::Error for PagingError {}
