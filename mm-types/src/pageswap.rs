//! Swap as a page cache reaches it for files whose pages live only in
//! memory (shmem): a page goes out to a slot under memory pressure and
//! comes back when it is touched.

use core::fmt;

use crate::{PhysAddr, StoreError, SwapSlot};

/// Why a [`PageSwap`] operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSwapError {
    /// No free slot.
    Full,
    /// The device failed: what it said.
    Io(StoreError),
    /// The slot's contents failed their check: the page is lost.
    Corrupt(SwapSlot),
    /// The slot is not one this swap handed out (a caller's bug).
    Invalid(SwapSlot),
    /// The frame is not reachable through physical memory access.
    Unreachable(PhysAddr),
}

impl fmt::Display for PageSwapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageSwapError::Full => write!(f, "no free swap slot"),
            PageSwapError::Io(e) => write!(f, "swap I/O failed: {e}"),
            PageSwapError::Corrupt(s) => write!(f, "{s:?} failed its check"),
            PageSwapError::Invalid(s) => write!(f, "{s:?} was not handed out"),
            PageSwapError::Unreachable(a) => write!(f, "frame {a:?} is not reachable"),
        }
    }
}

impl core::error::Error for PageSwapError {}

/// A swap device as a page cache uses it for shmem pages (implemented by a
/// kernel over its swap subsystem).
///
/// # Safety
///
/// An implementation reads `frame` in [`swap_out`](PageSwap::swap_out) and
/// writes it in [`swap_in`](PageSwap::swap_in) and touches no other
/// memory the caller owns; a slot [`swap_in`](PageSwap::swap_in) reads
/// holds what [`swap_out`](PageSwap::swap_out) wrote to it, or the call
/// fails.
pub unsafe trait PageSwap {
    /// Writes the page in `frame` to a newly allocated slot with one user,
    /// and returns the slot. On failure nothing is allocated.
    ///
    /// # Safety
    ///
    /// The caller owns `frame`: nothing writes it during the call.
    unsafe fn swap_out(&self, frame: PhysAddr) -> Result<SwapSlot, PageSwapError>;

    /// Reads the page of `slot` into `frame`; the slot keeps its user.
    ///
    /// # Safety
    ///
    /// The caller owns `frame`: nothing reads or writes it during the call.
    unsafe fn swap_in(&self, slot: SwapSlot, frame: PhysAddr) -> Result<(), PageSwapError>;

    /// Drops the slot's user: its page is no longer needed.
    fn free(&self, slot: SwapSlot);
}
