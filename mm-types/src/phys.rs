//! Physical memory access: turning a physical address into a pointer.
//!
//! In a kernel this is the direct map (Linux `__va`): all RAM mapped at a
//! fixed virtual offset. On the host, [`SimPhysMemory`](crate::testkit::SimPhysMemory)
//! backs it with a buffer, so page-table, slab and swap code runs under
//! `cargo test`, miri and fuzzing.

use core::fmt;
use core::ptr::NonNull;

use crate::addr::{PhysAddr, VirtAddr};
use crate::page::{FrameBlock, PAGE_SIZE};

/// Why a physical range could not be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PhysAccessError {
    /// Part of the range is not backed by memory this accessor reaches (a
    /// hole in the memory map, or beyond its end).
    Unbacked {
        /// First byte asked for.
        addr: PhysAddr,
        /// Length asked for.
        len: usize,
    },
    /// A frame operation ([`PhysMemory::copy_frame`]) was given an address
    /// that is not 4 KiB aligned.
    MisalignedFrame {
        /// The address that is not the start of a frame.
        addr: PhysAddr,
    },
    /// A frame copy whose source and destination are the same frame (or,
    /// through a faulty accessor, overlap): nothing was copied.
    OverlappingFrames {
        /// The source asked for.
        src: PhysAddr,
        /// The destination asked for.
        dst: PhysAddr,
    },
}

impl fmt::Display for PhysAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhysAccessError::Unbacked { addr, len } => {
                write!(f, "physical range {addr:#x}+{len:#x} is not backed by reachable memory")
            }
            PhysAccessError::MisalignedFrame { addr } => {
                write!(f, "physical address {addr:#x} is not the start of a 4 KiB frame")
            }
            PhysAccessError::OverlappingFrames { src, dst } => {
                write!(f, "cannot copy frame {src:#x} onto {dst:#x}: source and destination overlap")
            }
        }
    }
}

impl core::error::Error for PhysAccessError {}

/// Access to physical memory through a mapping.
///
/// # Safety
///
/// Implementors guarantee that for every `Ok(ptr)` returned by
/// [`translate`](PhysMemory::translate)`(addr, len)`:
/// 1. `ptr` is valid for reads and writes of `len` bytes for as long as the
///    accessor lives;
/// 2. it is the same memory for the same physical address every time, and
///    distinct physical bytes never share a virtual byte;
/// 3. a 4 KiB aligned `addr` gives a 4 KiB aligned `ptr`;
/// 4. if [`linear_offset`](PhysMemory::linear_offset) returns `Some(o)`,
///    every successful `translate(addr, len)` returns `addr + o` (wrapping),
///    so callers that already know an address is reachable may compute the
///    pointer themselves.
///
/// Who may read or write that memory is the caller's business: the frame
/// provider's ownership rules decide it, and the `unsafe` helper methods
/// below spell out what the caller must own.
pub unsafe trait PhysMemory: Sync {
    /// A pointer to `len` bytes starting at `addr`.
    fn translate(&self, addr: PhysAddr, len: usize) -> Result<NonNull<u8>, PhysAccessError>;

    /// `Some(o)` if reachable physical memory is mapped linearly, physical
    /// address `p` at `p + o` (a direct map). Hot paths that revisit memory
    /// they already checked with [`translate`](PhysMemory::translate) (page
    /// table walks) then skip the bounds checks. The default says nothing.
    #[inline]
    fn linear_offset(&self) -> Option<u64> {
        None
    }

    /// Fills a block of frames with zeros.
    ///
    /// # Safety
    ///
    /// The caller owns `block` (no other code reads or writes it meanwhile).
    unsafe fn zero_block(&self, block: FrameBlock) -> Result<(), PhysAccessError> {
        let len = block.bytes() as usize;
        let ptr = self.translate(block.start_address(), len)?;
        // SAFETY: `translate` made `ptr` valid for `len` bytes, and the caller owns the block: nobody else sees it.
        unsafe { ptr.as_ptr().write_bytes(0, len) };
        Ok(())
    }

    /// Copies `dst.len()` bytes starting at `addr` into `dst`.
    ///
    /// # Safety
    ///
    /// No other code writes those physical bytes meanwhile.
    unsafe fn read_bytes(&self, addr: PhysAddr, dst: &mut [u8]) -> Result<(), PhysAccessError> {
        let ptr = self.translate(addr, dst.len())?;
        // The source is valid for `dst.len()` bytes (trait contract) and nobody writes it (caller's contract).
        // SAFETY: `dst` is a distinct Rust buffer, so the two cannot overlap.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` to the physical bytes starting at `addr`.
    ///
    /// # Safety
    ///
    /// The caller owns those physical bytes (nobody else reads or writes them
    /// meanwhile).
    unsafe fn write_bytes(&self, addr: PhysAddr, src: &[u8]) -> Result<(), PhysAccessError> {
        let ptr = self.translate(addr, src.len())?;
        // The destination is valid for `src.len()` bytes and owned by the caller.
        // SAFETY: `src` is a Rust slice, distinct from raw physical memory that nobody else references.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), ptr.as_ptr(), src.len()) };
        Ok(())
    }

    /// Copies one 4 KiB frame to another.
    ///
    /// Both addresses must start a frame
    /// ([`MisalignedFrame`](PhysAccessError::MisalignedFrame) otherwise) and
    /// name different frames
    /// ([`OverlappingFrames`](PhysAccessError::OverlappingFrames) otherwise);
    /// a refused copy writes nothing.
    ///
    /// # Safety
    ///
    /// The caller owns `dst`, and nobody writes `src` meanwhile.
    unsafe fn copy_frame(&self, src: PhysAddr, dst: PhysAddr) -> Result<(), PhysAccessError> {
        for addr in [src, dst] {
            if addr.as_u64() % PAGE_SIZE as u64 != 0 {
                return Err(PhysAccessError::MisalignedFrame { addr });
            }
        }
        if src == dst {
            return Err(PhysAccessError::OverlappingFrames { src, dst });
        }
        let s = self.translate(src, PAGE_SIZE)?;
        let d = self.translate(dst, PAGE_SIZE)?;
        // Distinct aligned frames never overlap under trait contract 2; the
        // pointers are checked too, so a faulty accessor is refused rather
        // than handed to `copy_nonoverlapping`.
        if (s.as_ptr() as usize).abs_diff(d.as_ptr() as usize) < PAGE_SIZE {
            return Err(PhysAccessError::OverlappingFrames { src, dst });
        }
        // SAFETY: `translate` made both pointers valid for a frame; they are at least a frame apart (checked above), so
        // the ranges are disjoint; the caller owns `dst` and nobody writes `src`.
        unsafe { core::ptr::copy_nonoverlapping(s.as_ptr(), d.as_ptr(), PAGE_SIZE) };
        Ok(())
    }
}

// SAFETY: forwards to the referenced accessor.
unsafe impl<M: PhysMemory + ?Sized> PhysMemory for &M {
    fn translate(&self, addr: PhysAddr, len: usize) -> Result<NonNull<u8>, PhysAccessError> {
        (**self).translate(addr, len)
    }
    fn linear_offset(&self) -> Option<u64> {
        (**self).linear_offset()
    }
}

/// The kernel's direct map: physical address `p` is reached at virtual
/// address `offset + p`, for every `p` below `limit`.
#[derive(Clone, Copy, Debug)]
pub struct DirectMap {
    offset: u64,
    limit: u64,
}

impl DirectMap {
    /// Describes a direct map.
    ///
    /// # Safety
    ///
    /// All physical memory in `[0, limit)` is mapped readable and writable at
    /// `offset + p` for as long as the value (or any copy) is used, and
    /// `offset` is 4 KiB aligned.
    pub const unsafe fn new(offset: VirtAddr, limit: PhysAddr) -> Self {
        DirectMap { offset: offset.as_u64(), limit: limit.as_u64() }
    }

    /// The virtual offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

// SAFETY: `new`'s contract makes every address below `limit` mapped at `offset + p`, a fixed,
// injective, alignment-preserving (offset is 4 KiB aligned), linear mapping.
unsafe impl PhysMemory for DirectMap {
    #[inline]
    fn linear_offset(&self) -> Option<u64> {
        Some(self.offset)
    }

    fn translate(&self, addr: PhysAddr, len: usize) -> Result<NonNull<u8>, PhysAccessError> {
        let end = addr.as_u64().checked_add(len as u64);
        match end {
            Some(end) if end <= self.limit => {
                let va = self.offset.wrapping_add(addr.as_u64()) as usize;
                NonNull::new(va as *mut u8).ok_or(PhysAccessError::Unbacked { addr, len })
            }
            _ => Err(PhysAccessError::Unbacked { addr, len }),
        }
    }
}
