#![doc = include_str!("../README.md")]
#![no_std]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

#[allow(unsafe_code)]
mod mm;
#[cfg(feature = "std")]
#[allow(unsafe_code)]
pub mod sim;
#[allow(unsafe_code)]
mod space;
mod tree;
mod vma;

pub use mm::{FaultStats, HookError, Hooks, MmContext, Pager, PinError, RmapEntry, SpaceId, SpaceTlb, SwapSlots};
pub use mm_types;
pub use mm_types::Protection;
pub use space::{
    page_flags, Access, AddressSpace, FaultError, FaultKind, Layout, MapRequest, Placement, Remap, SpaceCounts,
    SpaceError,
};
pub use tree::{Iter, RangeTree, TreeError, FANOUT};
pub use vma::{Backing, Vma, VmaError, VmaFlags, VmaTree};
