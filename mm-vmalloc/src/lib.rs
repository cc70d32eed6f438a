//! Kernel virtual memory: a window of kernel addresses handed out as areas,
//! backed by frames from any [`FrameProvider`](mm_types::FrameProvider) and
//! mapped through mm-paging (or any [`KernelMapper`]).
//!
//! - [`Vmalloc::vmalloc`] builds a virtually contiguous area from single
//!   frames (or blocks of a configured order, or 2 MiB pages with
//!   [`Vmalloc::vmalloc_huge`]); [`Vmalloc::vfree`] gives them back.
//! - [`Vmalloc::vmap`] maps frames the caller owns; [`Vmalloc::ioremap`]
//!   maps device memory with a [`CacheMode`].
//! - Every area is followed by an unmapped guard page unless asked
//!   otherwise, so running off its end faults.
//! - Free ranges live in an augmented treap: the lowest range that fits a
//!   size and alignment is found in one descent, `O(log n)` expected, however
//!   many areas are live. Frees coalesce with their neighbours.
//! - Frees are lazy: an area is unmapped at once, but its range is reused
//!   only after a purge, which flushes the TLB once for all areas freed
//!   since the last one (when their total passes a threshold, when space
//!   runs out, or on [`Vmalloc::purge`]).
//! - Look-ups map an address to its area ([`Vmalloc::find_area`]), list the
//!   frames behind it, and print `/proc/vmallocinfo`-style lines.
//!
//! The index needs no heap: its nodes live in frames taken from the same
//! frame provider, reached through a [`PhysMemory`](mm_types::PhysMemory).
//! The invariants are in `MODEL.md`.
//!
//! ```
//! use mm_paging::{NoShootdown, PageTable, RecordingTlb, X86_64};
//! use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
//! use mm_types::{PhysAddr, VirtAddr, VirtRange};
//! use mm_vmalloc::{KernelMapper, SharedPageTable, Vmalloc, VmallocConfig};
//!
//! let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 16 << 20);
//! let frames = RefFrameProvider::new(&ram);
//! let table = PageTable::new(X86_64::FOUR_LEVEL, &ram, &frames).unwrap();
//! let kernel = SharedPageTable::new(table, RecordingTlb::default(), NoShootdown);
//! let window = VirtRange::new(VirtAddr::new(0xffff_c900_0000_0000).unwrap(), 1 << 30).unwrap();
//! let vm = Vmalloc::new(&kernel, &frames, &ram, VmallocConfig::new(window)).unwrap();
//!
//! let a = vm.vmalloc(3 * 4096 + 100).unwrap();
//! let area = vm.find_area(a).unwrap();
//! assert_eq!((area.size, area.guard), (4 * 4096, 4096));
//! assert!(vm.mapper().translate(a).is_some());
//! vm.vfree(a).unwrap();
//! assert_eq!(vm.vfree(a), Err(mm_vmalloc::VmallocError::DoubleFree(a)));
//! ```

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

mod error;
#[allow(unsafe_code)]
mod mapper;
#[allow(unsafe_code)]
mod tree;
mod vmalloc;

pub use error::VmallocError;
pub use mapper::{KernelMapper, PageTableGuard, SharedPageTable};
pub use mm_paging;
pub use mm_types;
pub use tree::AreaKind;
pub use vmalloc::{AreaInfo, AreaOptions, CacheMode, Vmalloc, VmallocConfig, VmallocStats};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
