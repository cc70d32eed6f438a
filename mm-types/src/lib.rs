#![doc = include_str!("../README.md")]
#![no_std]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]

#[cfg(any(test, feature = "std"))]
extern crate std;

mod addr;
pub mod align;
mod error;
mod file;
#[allow(unsafe_code)]
mod frame;
mod page;
#[allow(unsafe_code)]
mod pageswap;
#[allow(unsafe_code)]
pub mod percpu;
#[allow(unsafe_code)]
mod phys;
mod range;
mod state;
mod store;
mod swap;
#[allow(unsafe_code)]
pub mod sync;

#[cfg(feature = "std")]
#[allow(unsafe_code)]
pub mod testkit;

#[cfg(feature = "x86_64")]
#[allow(unsafe_code)]
pub mod x86;

pub use addr::{Address, PagingMode, PhysAddr, VirtAddr, PHYS_ADDR_BITS, PHYS_ADDR_MAX};
pub use error::AddrError;
pub use file::{FileBacking, FileError, FileErrorKind, FileId, FileMappings, FileOp, NoMappings};
pub use frame::{AllocFlags, FrameError, FrameProvider, Mobility, OwnedFrames, Zone, DMA32_LIMIT, DMA_LIMIT};
pub use page::{FrameBlock, FrameNumber, Order, PageNumber, PageSize, PAGE_BYTES, PAGE_SHIFT, PAGE_SIZE};
pub use pageswap::{PageSwap, PageSwapError};
pub use percpu::CpuLocal;
pub use phys::{DirectMap, PhysAccessError, PhysMemory};
pub use range::{AddrRange, FrameRange, PageRange, PhysRange, StepIter, VirtRange};
pub use state::{PageFlags, PageKind, Protection};
pub use store::{check_run, BackingStore, StoreError, StoreErrorKind, StoreOp, SLOT_SIZE};
pub use swap::SwapSlot;

#[cfg(feature = "std")]
pub use testkit::SimPhysMemory;

// Layout facts other crates rely on.
static_assertions::const_assert!(PAGE_SIZE.is_power_of_two());
static_assertions::const_assert_eq!(1usize << PAGE_SHIFT, PAGE_SIZE);
static_assertions::const_assert_eq!(PAGE_BYTES, PageSize::Size4KiB.bytes());
static_assertions::const_assert_eq!(SLOT_SIZE, PAGE_SIZE);
static_assertions::assert_eq_size!(PhysAddr, u64);
static_assertions::assert_eq_size!(VirtAddr, u64);
static_assertions::assert_eq_size!(FrameNumber, u64);
static_assertions::assert_eq_size!(Order, u8);
static_assertions::const_assert!(core::mem::size_of::<FrameBlock>() <= 16);
static_assertions::assert_impl_all!(DirectMap: Send, Sync, PhysMemory);
static_assertions::assert_impl_all!(PhysAddr: Send, Sync, Copy, Ord, core::hash::Hash);

// The README examples (this crate's and the workspace's) are compiled and run
// as doctests, so they cannot go stale.

// The workspace README lies outside this crate's package, so the published
// crate must not read it: its examples are compiled only under
// `--cfg mm_workspace`, which `cargo xtask test package` sets (RUSTDOCFLAGS)
// when it runs them from the workspace.
#[cfg(all(doctest, mm_workspace))]
#[doc = include_str!("../../README.md")]
struct WorkspaceReadmeDoctests;
