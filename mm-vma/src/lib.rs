//! Address spaces: a VMA tree, mmap/munmap/mprotect/brk, page faults, fork
//! with copy-on-write, reverse mapping.
//!
//! **Status: in progress** (issue #7). What is here:
//! - [`RangeTree`], a B+ tree of non-overlapping ranges with `O(log n)`
//!   look-up of the range containing an address, in-order iteration, and a
//!   gap index that finds the highest (or lowest) free range of a size and
//!   alignment, as `get_unmapped_area` does, in `O(log n)`;
//! - [`VmaTree`], the bookkeeping half of an address space: VMAs with
//!   protection, flags and backing, insertion with merging, partial unmap
//!   and protection changes with splits and merges, a map-count limit.
//!
//! Page tables, faults, fork and the reverse map come next.
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
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_model;
pub mod mm;
#[cfg(feature = "std")]
pub mod sim;
pub mod space;
pub mod tree;
pub mod vma;

pub use mm::{FaultStats, HookError, Hooks, Mm, PageKind, Pager, RmapEntry, SpaceId, SpaceTlb, SwapIn};
pub use mm_paging::SwapEntry;
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
