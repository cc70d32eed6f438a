//! Address spaces: a VMA tree, mmap/munmap/mprotect/brk, page faults, fork
//! with copy-on-write, reverse mapping.
//!
//! - [`AddressSpace`]: VMAs plus the space's own mm-paging page tables,
//!   with Linux's `mmap`/`munmap`/`mprotect`/`mremap`/`brk` semantics, stack
//!   growth with a guard gap, page faults (zero page, demand zero,
//!   copy-on-write, [`Pager`] objects, [`SwapSlots`] entries, refusals with a
//!   reason), `fork`, eviction for reclaim; TLB flushes gathered per
//!   operation through a [`SpaceTlb`] hook, frames freed after the flush.
//! - [`MmContext`]: what spaces share: frames, physical memory, the zero page, the
//!   reverse map from each frame to every `(space, page)` mapping it.
//! - [`VmaTree`], the bookkeeping half of an address space: VMAs with
//!   protection, flags and backing, insertion with merging, partial unmap
//!   and protection changes with splits and merges, a map-count limit.
//! - [`RangeTree`], the B+ tree under it: `O(log n)` look-up of the range
//!   containing an address, in-order iteration, and a gap index that finds
//!   the highest (or lowest) free range of a size and alignment, as
//!   `get_unmapped_area` does, in `O(log n)`.
//! - `sim` (feature `std`): a host simulation (RAM, frames, a swap device
//!   with a swap cache, a pager, a counting TLB hook) for tests and models.
//!
//! The invariants are in `MODEL.md`.
//!
//! The crate needs a heap (`alloc`): an address space's metadata grows with
//! its mappings, as Linux's VMAs and maple-tree nodes come from slab caches.
//!
//! ```
//! use mm_vma::RangeTree;
//!
//! let mut t = RangeTree::new();
//! t.insert(0x1000, 0x5000, "text").unwrap();
//! t.insert(0x8000, 0x9000, "data").unwrap();
//! assert_eq!(t.find(0x4fff), Some((0x1000, 0x5000, &"text")));
//! assert_eq!(t.find(0x5000), None);
//! // The highest free 8 KiB below 0x9000: the hole [0x5000, 0x8000).
//! assert_eq!(t.gap_top_down(0x2000, 0x1000, 0, 0x9000), Some(0x6000));
//! assert!(t.insert(0x4000, 0x6000, "clash").is_err());
//! ```

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]
#![warn(missing_docs)]

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

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
