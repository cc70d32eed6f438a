//! Shared vocabulary for the `mm-*` memory-management crates.
//!
//! Every crate of the toolkit (page tables, frame, slab and vmalloc
//! allocators, address spaces, reclaim, swap) speaks these types and traits
//! and nothing of each other's internals, so a kernel can adopt one crate and
//! plug in its own implementation of the rest.
//!
//! - Addresses and units: [`PhysAddr`], [`VirtAddr`] (canonical under 4- or
//!   5-level paging, [`PagingMode`]), [`FrameNumber`], [`PageNumber`],
//!   [`PageSize`], [`Order`], [`FrameBlock`], ranges ([`PhysRange`],
//!   [`VirtRange`], [`FrameRange`], [`PageRange`]), [`align`] helpers. No
//!   arithmetic wraps: it returns [`AddrError`] or `None`.
//! - [`FrameProvider`]: allocate and free blocks of `2^order` frames with
//!   [`AllocFlags`] (zone limit, zeroing, atomic context, mobility); bad
//!   frees are reported as [`FrameError`].
//! - [`PhysMemory`]: physical address to pointer (the direct map);
//!   [`DirectMap`] for kernels.
//! - [`BackingStore`]: page-sized slots for swap, with [`StoreError`].
//! - [`CpuLocal`]: the per-CPU hook; [`percpu::PerCpu`] builds on it.
//! - [`PageFlags`] (per-frame state reclaim and swap agree on) and
//!   [`Protection`].
//! - [`sync`]: the `loom` shim that concurrent code is written against.
//!
//! # Example: a frame provider that any crate of the toolkit accepts
//!
//! ```
//! use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
//! use mm_types::{AllocFlags, FrameProvider, Order, PhysAddr};
//!
//! fn grab_two_pages(frames: &impl FrameProvider) -> Result<u64, mm_types::FrameError> {
//!     let block = frames.allocate(Order::new(1).unwrap(), AllocFlags::ZERO | AllocFlags::DMA32)?;
//!     let addr = block.start_address().as_u64();
//!     frames.free(block)?;
//!     Ok(addr)
//! }
//!
//! let mem = SimPhysMemory::new(PhysAddr::new(0x100_0000)?, 0x10_0000);
//! let frames = RefFrameProvider::new(&mem);
//! assert!(grab_two_pages(&frames)? < 1 << 32);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! - `std`: the host [`testkit`] (simulated physical memory, in-memory
//!   backing store with fault injection, reference frame provider).
//! - `x86_64`: conversions to and from the `x86_64` crate, and
//!   [`x86::X86FrameAllocator`].
//!
//! # Not yet
//! Only x86-64 address rules are modelled; other architectures would need
//! their own canonical-form checks.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod addr;
pub mod align;
pub mod error;
#[allow(unsafe_code)]
pub mod frame;
pub mod page;
pub mod percpu;
#[allow(unsafe_code)]
pub mod phys;
pub mod range;
pub mod state;
pub mod store;
pub mod swap;
pub mod sync;

#[cfg(feature = "std")]
#[allow(unsafe_code)]
pub mod testkit;

#[cfg(feature = "x86_64")]
#[allow(unsafe_code)]
pub mod x86;

pub use addr::{Address, PagingMode, PhysAddr, VirtAddr};
pub use error::AddrError;
pub use frame::{AllocFlags, FrameError, FrameProvider, Mobility, OwnedFrames, Zone};
pub use page::{FrameBlock, FrameNumber, Order, PageNumber, PageSize, PAGE_BYTES, PAGE_SHIFT, PAGE_SIZE};
pub use percpu::CpuLocal;
pub use phys::{DirectMap, PhysAccessError, PhysMemory};
pub use range::{AddrRange, FrameRange, PageRange, PhysRange, VirtRange};
pub use state::{PageFlags, PageKind, Protection};
pub use store::{BackingStore, StoreError, StoreErrorKind, StoreOp, SLOT_SIZE};
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
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// The workspace README lies outside this crate's package, so the published
// crate must not read it: its examples are compiled only under
// `--cfg mm_workspace`, which `cargo xtask test package` sets (RUSTDOCFLAGS)
// when it runs them from the workspace.
#[cfg(all(doctest, mm_workspace))]
#[doc = include_str!("../../README.md")]
struct WorkspaceReadmeDoctests;
