//! Errors of address arithmetic and address-type construction.

use core::fmt;

use crate::addr::PagingMode;

/// Why an address, number, range or alignment computation was rejected.
///
/// Every arithmetic operation in this crate that could overflow, leave the
/// physical address space or produce a non-canonical virtual address returns
/// this error (or `None`) instead of wrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrError {
    /// A physical address or frame number beyond the 52-bit physical address
    /// space of x86-64.
    PhysOutOfRange {
        /// The rejected value (an address, or a frame number for frame types).
        value: u64,
    },
    /// A virtual address that is not canonical under the given paging mode
    /// (bits above the top translated bit are not copies of it).
    NotCanonical {
        /// The rejected address.
        addr: u64,
        /// The paging mode it was checked against.
        mode: PagingMode,
    },
    /// The computation overflowed, or left the address space (for virtual
    /// addresses: crossed the non-canonical hole).
    Overflow,
    /// An alignment that is not a power of two (or is zero).
    BadAlignment {
        /// The rejected alignment.
        align: u64,
    },
    /// A value that had to be aligned was not.
    Misaligned {
        /// The value.
        value: u64,
        /// The alignment it lacks.
        align: u64,
    },
    /// A range whose end lies before its start.
    InvertedRange {
        /// The start.
        start: u64,
        /// The end (exclusive) that lies before it.
        end: u64,
    },
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddrError::PhysOutOfRange { value } => {
                write!(f, "{value:#x} is beyond the 52-bit physical address space")
            }
            AddrError::NotCanonical { addr, mode } => {
                write!(f, "{addr:#x} is not canonical under {mode}")
            }
            AddrError::Overflow => f.write_str("address arithmetic overflowed"),
            AddrError::BadAlignment { align } => {
                write!(f, "alignment {align:#x} is not a power of two")
            }
            AddrError::Misaligned { value, align } => {
                write!(f, "{value:#x} is not aligned to {align:#x}")
            }
            AddrError::InvertedRange { start, end } => {
                write!(f, "range end {end:#x} lies before its start {start:#x}")
            }
        }
    }
}

impl core::error::Error for AddrError {}
