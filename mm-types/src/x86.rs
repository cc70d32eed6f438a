//! Interop with the `x86_64` crate (feature `x86_64`): address and frame
//! conversions, and an adapter that lets any [`FrameProvider`] serve as that
//! crate's `FrameAllocator` / `FrameDeallocator`.
//!
//! ```
//! use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
//! use mm_types::x86::X86FrameAllocator;
//! use mm_types::{AllocFlags, PhysAddr};
//! use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};
//!
//! let mem = SimPhysMemory::new(PhysAddr::new(0x10_0000)?, 0x10_0000);
//! let provider = RefFrameProvider::new(&mem);
//! let mut frames = X86FrameAllocator::new(&provider, AllocFlags::ZERO);
//! let frame: PhysFrame<Size4KiB> = frames.allocate_frame().unwrap();
//! // SAFETY: the frame is unused.
//! unsafe { frames.deallocate_frame(frame) };
//! # Ok::<(), mm_types::AddrError>(())
//! ```

use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PageSize as X86PageSize, PhysFrame};

use crate::{AddrError, AllocFlags, FrameBlock, FrameNumber, FrameProvider, Order, PhysAddr, VirtAddr};

impl From<PhysAddr> for x86_64::PhysAddr {
    fn from(a: PhysAddr) -> Self {
        // Both types hold exactly the values below 2^52.
        x86_64::PhysAddr::new(a.as_u64())
    }
}

impl From<x86_64::PhysAddr> for PhysAddr {
    fn from(a: x86_64::PhysAddr) -> Self {
        PhysAddr::new(a.as_u64()).expect("x86_64::PhysAddr is below 2^52")
    }
}

impl From<x86_64::VirtAddr> for VirtAddr {
    fn from(a: x86_64::VirtAddr) -> Self {
        // 48-bit canonical addresses are 57-bit canonical too.
        VirtAddr::new(a.as_u64()).expect("48-bit canonical implies 57-bit canonical")
    }
}

impl TryFrom<VirtAddr> for x86_64::VirtAddr {
    type Error = AddrError;
    /// Fails for addresses canonical only under 5-level paging: the `x86_64`
    /// crate models 4-level paging.
    fn try_from(a: VirtAddr) -> Result<Self, AddrError> {
        x86_64::VirtAddr::try_new(a.as_u64())
            .map_err(|_| AddrError::NotCanonical { addr: a.as_u64(), mode: crate::PagingMode::FourLevel })
    }
}

impl<S: X86PageSize> From<PhysFrame<S>> for FrameBlock {
    fn from(f: PhysFrame<S>) -> Self {
        let order = Order::for_bytes(S::SIZE).expect("page sizes are small orders");
        FrameBlock::new(FrameNumber::containing(f.start_address().into()), order).expect("PhysFrame<S> is S-aligned")
    }
}

/// A [`FrameProvider`] seen as the `x86_64` crate's frame allocator, for any
/// of its page sizes, allocating with fixed flags.
#[derive(Debug)]
pub struct X86FrameAllocator<P> {
    provider: P,
    flags: AllocFlags,
}

impl<P: FrameProvider> X86FrameAllocator<P> {
    /// Wraps `provider`; every allocation uses `flags`.
    pub fn new(provider: P, flags: AllocFlags) -> Self {
        X86FrameAllocator { provider, flags }
    }

    /// The wrapped provider.
    pub fn provider(&self) -> &P {
        &self.provider
    }
}

// SAFETY: `FrameProvider`'s contract promises unused, naturally aligned blocks
// of the requested order, which is exactly one unused `S`-sized frame.
unsafe impl<P: FrameProvider, S: X86PageSize> FrameAllocator<S> for X86FrameAllocator<P> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<S>> {
        let order = Order::for_bytes(S::SIZE)?;
        let block = self.provider.allocate(order, self.flags).ok()?;
        PhysFrame::from_start_address(block.start_address().into()).ok()
    }
}

impl<P: FrameProvider, S: X86PageSize> FrameDeallocator<S> for X86FrameAllocator<P> {
    /// Frees the frame. The `x86_64` trait has no way to report errors, so a
    /// bad free (double, foreign) is ignored after the provider rejected it,
    /// leaving the provider's state intact.
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<S>) {
        let _ = self.provider.free(frame.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{RefFrameProvider, SimPhysMemory};
    use x86_64::structures::paging::{Size2MiB, Size4KiB};

    #[test]
    fn conversions() {
        let p = PhysAddr::new(0x1234_5000).unwrap();
        let x: x86_64::PhysAddr = p.into();
        assert_eq!(PhysAddr::from(x), p);
        let v = VirtAddr::new(0xffff_8000_0000_0000).unwrap();
        let xv = x86_64::VirtAddr::try_from(v).unwrap();
        assert_eq!(VirtAddr::from(xv), v);
        let five_only = VirtAddr::new(0x00ff_0000_0000_0000).unwrap();
        assert!(x86_64::VirtAddr::try_from(five_only).is_err());
        let frame = PhysFrame::<Size2MiB>::from_start_address(x86_64::PhysAddr::new(0x40_0000)).unwrap();
        let b = FrameBlock::from(frame);
        assert_eq!((b.start_address().as_u64(), b.order().as_u8()), (0x40_0000, 9));
    }

    #[test]
    fn adapter_allocates_and_frees_each_size() {
        let mem = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 4 << 20);
        let provider = RefFrameProvider::new(&mem);
        let mut a = X86FrameAllocator::new(&provider, AllocFlags::empty());
        let small: PhysFrame<Size4KiB> = a.allocate_frame().unwrap();
        let big: PhysFrame<Size2MiB> = a.allocate_frame().unwrap();
        assert_eq!(provider.allocated_blocks(), 2);
        // SAFETY: both frames are unused.
        unsafe {
            a.deallocate_frame(small);
            a.deallocate_frame(big);
            // A double free is rejected by the provider and ignored here.
            a.deallocate_frame(small);
        }
        assert_eq!(provider.free_frame_count(), 1024);
    }
}
