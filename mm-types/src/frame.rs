//! The frame provider trait: how every crate gets physical frames.

use core::fmt;

use bitflags::bitflags;

use crate::addr::PhysAddr;
use crate::page::{FrameBlock, Order};

bitflags! {
    /// What an allocation needs from the frame provider.
    ///
    /// At most one zone limit (`DMA` or `DMA32`) and at most one mobility hint
    /// (`MOVABLE` or `RECLAIMABLE`) may be set; [`AllocFlags::validate`]
    /// rejects other combinations.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct AllocFlags: u32 {
        /// The frames must lie below 16 MiB (legacy ISA DMA).
        const DMA = 1 << 0;
        /// The frames must lie below 4 GiB (32-bit DMA).
        const DMA32 = 1 << 1;
        /// The frames must be zero-filled.
        const ZERO = 1 << 2;
        /// Atomic context: the caller cannot sleep or reclaim, so the provider
        /// may dip below its minimum watermark rather than fail.
        const ATOMIC = 1 << 3;
        /// Do not retry or reclaim: fail fast if no frame is free right now.
        const NO_WAIT = 1 << 4;
        /// Mobility hint: the contents can be migrated (user pages).
        const MOVABLE = 1 << 5;
        /// Mobility hint: the contents can be freed on demand (caches).
        const RECLAIMABLE = 1 << 6;
    }
}

impl AllocFlags {
    /// Checks that at most one zone limit and one mobility hint are set.
    ///
    /// ```
    /// use mm_types::{AllocFlags, FrameError};
    /// assert!((AllocFlags::DMA32 | AllocFlags::ZERO).validate().is_ok());
    /// assert_eq!(
    ///     (AllocFlags::DMA | AllocFlags::DMA32).validate(),
    ///     Err(FrameError::InvalidFlags(AllocFlags::DMA | AllocFlags::DMA32))
    /// );
    /// ```
    #[inline]
    pub fn validate(self) -> Result<Self, FrameError> {
        // Both pairs are adjacent bits: "more than one set" is "both set".
        let zones = (AllocFlags::DMA | AllocFlags::DMA32).bits();
        let mobility = (AllocFlags::MOVABLE | AllocFlags::RECLAIMABLE).bits();
        let b = self.bits();
        if b & zones == zones || b & mobility == mobility {
            return Err(FrameError::InvalidFlags(self));
        }
        Ok(self)
    }

    /// The highest zone these flags allow.
    #[inline]
    pub fn highest_zone(self) -> Zone {
        if self.contains(AllocFlags::DMA) {
            Zone::Dma
        } else if self.contains(AllocFlags::DMA32) {
            Zone::Dma32
        } else {
            Zone::Normal
        }
    }

    /// The mobility these flags ask for.
    #[inline]
    pub fn mobility(self) -> Mobility {
        if self.contains(AllocFlags::MOVABLE) {
            Mobility::Movable
        } else if self.contains(AllocFlags::RECLAIMABLE) {
            Mobility::Reclaimable
        } else {
            Mobility::Unmovable
        }
    }
}

/// Physical memory zones, by the addressing limits of devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Zone {
    /// Below 16 MiB.
    Dma,
    /// From 16 MiB to 4 GiB.
    Dma32,
    /// From 4 GiB up.
    Normal,
}

impl Zone {
    /// All zones, lowest first.
    pub const ALL: [Zone; 3] = [Zone::Dma, Zone::Dma32, Zone::Normal];

    /// The first physical address above the zone (exclusive end), or `None`
    /// for the unbounded normal zone.
    pub const fn limit(self) -> Option<PhysAddr> {
        match self {
            Zone::Dma => Some(DMA_LIMIT),
            Zone::Dma32 => Some(DMA32_LIMIT),
            Zone::Normal => None,
        }
    }

    /// The zone a physical address belongs to.
    pub const fn of(addr: PhysAddr) -> Zone {
        let a = addr.as_u64();
        if a < DMA_LIMIT.as_u64() {
            Zone::Dma
        } else if a < DMA32_LIMIT.as_u64() {
            Zone::Dma32
        } else {
            Zone::Normal
        }
    }

    /// Index 0..3, lowest zone first.
    pub const fn index(self) -> usize {
        self as usize
    }
}

const fn const_phys(v: u64) -> PhysAddr {
    match PhysAddr::new(v) {
        Ok(a) => a,
        Err(_) => panic!("zone limit beyond the physical address space"),
    }
}

/// The end of the DMA zone: 16 MiB.
pub const DMA_LIMIT: PhysAddr = const_phys(16 << 20);
/// The end of the DMA32 zone: 4 GiB.
pub const DMA32_LIMIT: PhysAddr = const_phys(1 << 32);

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Zone::Dma => "DMA",
            Zone::Dma32 => "DMA32",
            Zone::Normal => "Normal",
        })
    }
}

/// How the contents of an allocation can be moved, which guides where a
/// fragmentation-avoiding allocator places it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mobility {
    /// Kernel data that stays where it is.
    Unmovable,
    /// Caches that can be dropped on demand.
    Reclaimable,
    /// Pages whose contents can be migrated.
    Movable,
}

/// Why a frame provider refused an allocation or a free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// No block of the order is free in any zone the flags allow.
    OutOfMemory {
        /// The order asked for.
        order: Order,
    },
    /// The zone the flags require (and every zone below it) is exhausted,
    /// although higher zones have memory.
    ZoneExhausted {
        /// The highest zone the flags allowed.
        zone: Zone,
        /// The order asked for.
        order: Order,
    },
    /// The order is above what this provider manages.
    OrderTooLarge {
        /// The order asked for.
        order: Order,
        /// The largest order the provider supports.
        max: Order,
    },
    /// Conflicting flags (two zone limits, or two mobility hints).
    InvalidFlags(AllocFlags),
    /// A free of memory this provider does not manage.
    NotOwned(FrameBlock),
    /// A free whose address is not aligned to the block it claims to be, or
    /// that does not start a block the provider handed out.
    Misaligned(FrameBlock),
    /// A free with another order than the block was allocated with.
    WrongOrder {
        /// The block as the caller described it.
        block: FrameBlock,
        /// The order the provider handed it out with.
        allocated: Order,
    },
    /// A free of a block that is already free.
    DoubleFree(FrameBlock),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::OutOfMemory { order } => write!(f, "out of memory for a block of {order}"),
            FrameError::ZoneExhausted { zone, order } => {
                write!(f, "zone {zone} and the zones below it have no free block of {order}")
            }
            FrameError::OrderTooLarge { order, max } => {
                write!(f, "{order} is larger than the maximum {max}")
            }
            FrameError::InvalidFlags(flags) => write!(f, "conflicting allocation flags {flags:?}"),
            FrameError::NotOwned(b) => write!(f, "{b:?} is not managed by this allocator"),
            FrameError::Misaligned(b) => write!(f, "{b:?} does not start an allocated block"),
            FrameError::WrongOrder { block, allocated } => {
                write!(f, "{block:?} was allocated with {allocated}")
            }
            FrameError::DoubleFree(b) => write!(f, "{b:?} is already free"),
        }
    }
}

impl core::error::Error for FrameError {}

/// A source of physical frames: the shared interface through which page
/// tables, slab caches, vmalloc and swap get memory, whatever allocator the
/// kernel uses.
///
/// Methods take `&self`: implementations synchronise internally, so one
/// provider can be shared by every CPU.
///
/// # Safety
///
/// Implementors guarantee that
/// 1. a block returned by [`allocate`](FrameProvider::allocate) is naturally
///    aligned, has the requested order, satisfies the zone limit of the flags,
///    and is not handed out again until it has been freed;
/// 2. with [`AllocFlags::ZERO`] its contents are zero;
/// 3. the provider itself never reads or writes an allocated block;
///
/// so that callers may use the memory exclusively (page-table code writes
/// through it without further checks).
pub unsafe trait FrameProvider: Sync {
    /// Allocates a naturally aligned block of `2^order` frames.
    fn allocate(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError>;

    /// Returns a block. Implementations detect frees of blocks they did not
    /// hand out, with the wrong order, or twice, and report them instead of
    /// corrupting their state.
    fn free(&self, block: FrameBlock) -> Result<(), FrameError>;

    /// Allocates one 4 KiB frame.
    fn allocate_frame(&self, flags: AllocFlags) -> Result<PhysAddr, FrameError> {
        self.allocate(Order::ZERO, flags).map(FrameBlock::start_address)
    }

    /// Returns one 4 KiB frame [`allocate_frame`](Self::allocate_frame)
    /// handed out.
    fn free_frame(&self, frame: PhysAddr) -> Result<(), FrameError> {
        let block =
            FrameBlock::new(crate::FrameNumber::containing(frame), Order::ZERO).expect("an order-0 block is aligned");
        self.free(block)
    }

    /// Allocates a block that frees itself when dropped.
    fn allocate_owned(&self, order: Order, flags: AllocFlags) -> Result<OwnedFrames<'_, Self>, FrameError> {
        let block = self.allocate(order, flags)?;
        Ok(OwnedFrames { block, provider: self })
    }
}

/// Implements [`FrameProvider`] for a pointer type by forwarding to the
/// provider it points at.
macro_rules! forward_provider {
    ($(#[$m:meta])* $ty:ty, $($bounds:tt)*) => {
        $(#[$m])*
        // SAFETY: forwards to the provider pointed at, which upholds the contract.
        unsafe impl<P: FrameProvider + ?Sized $($bounds)*> FrameProvider for $ty {
            #[inline]
            fn allocate(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
                (**self).allocate(order, flags)
            }
            #[inline]
            fn free(&self, block: FrameBlock) -> Result<(), FrameError> {
                (**self).free(block)
            }
            #[inline]
            fn allocate_frame(&self, flags: AllocFlags) -> Result<PhysAddr, FrameError> {
                (**self).allocate_frame(flags)
            }
        }
    };
}

forward_provider!(&P,);
forward_provider!(#[cfg(feature = "std")] std::sync::Arc<P>, + Send);

/// A block of frames owned by the holder: dropping it frees it.
///
/// Use [`OwnedFrames::into_raw`] to take over the ownership by hand.
#[must_use = "dropping OwnedFrames frees the frames at once"]
pub struct OwnedFrames<'p, P: FrameProvider + ?Sized> {
    block: FrameBlock,
    provider: &'p P,
}

impl<P: FrameProvider + ?Sized> OwnedFrames<'_, P> {
    /// The block.
    pub fn block(&self) -> FrameBlock {
        self.block
    }

    /// Gives up ownership without freeing.
    pub fn into_raw(self) -> FrameBlock {
        let block = self.block;
        core::mem::forget(self);
        block
    }
}

impl<P: FrameProvider + ?Sized> fmt::Debug for OwnedFrames<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnedFrames({:?})", self.block)
    }
}

impl<P: FrameProvider + ?Sized> Drop for OwnedFrames<'_, P> {
    fn drop(&mut self) {
        // The block came from this provider and is freed exactly once, so an
        // error here means the provider is broken; it cannot be reported from
        // drop, and debug builds flag it.
        let result = self.provider.free(self.block);
        debug_assert!(result.is_ok(), "freeing an owned block failed: {result:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_validation_and_zones() {
        assert_eq!(AllocFlags::empty().highest_zone(), Zone::Normal);
        assert_eq!(AllocFlags::DMA32.highest_zone(), Zone::Dma32);
        assert_eq!(AllocFlags::DMA.highest_zone(), Zone::Dma);
        assert_eq!(AllocFlags::MOVABLE.mobility(), Mobility::Movable);
        assert_eq!(AllocFlags::RECLAIMABLE.mobility(), Mobility::Reclaimable);
        assert_eq!(AllocFlags::ZERO.mobility(), Mobility::Unmovable);
        let bad = AllocFlags::MOVABLE | AllocFlags::RECLAIMABLE;
        assert_eq!(bad.validate(), Err(FrameError::InvalidFlags(bad)));
        assert_eq!(Zone::Dma.limit().unwrap().as_u64(), 16 << 20);
        assert_eq!(Zone::Dma32.limit().unwrap().as_u64(), 1 << 32);
        assert_eq!(Zone::Normal.limit(), None);
        assert_eq!(Zone::of(PhysAddr::new((16 << 20) - 1).unwrap()), Zone::Dma);
        assert_eq!(Zone::of(PhysAddr::new(16 << 20).unwrap()), Zone::Dma32);
        assert_eq!(Zone::of(PhysAddr::new(1 << 32).unwrap()), Zone::Normal);
    }

    #[test]
    fn errors_display() {
        let b = FrameBlock::new(crate::FrameNumber::new(0).unwrap(), Order::ZERO).unwrap();
        let all = [
            FrameError::OutOfMemory { order: Order::ZERO },
            FrameError::ZoneExhausted { zone: Zone::Dma, order: Order::ZERO },
            FrameError::OrderTooLarge { order: Order::MAX, max: Order::ZERO },
            FrameError::InvalidFlags(AllocFlags::DMA | AllocFlags::DMA32),
            FrameError::NotOwned(b),
            FrameError::Misaligned(b),
            FrameError::WrongOrder { block: b, allocated: Order::MAX },
            FrameError::DoubleFree(b),
        ];
        for e in all {
            extern crate std;
            use std::string::ToString;
            assert!(!e.to_string().is_empty());
        }
    }
}
