//! Page tables for `no_std` kernels: a generic engine with x86-64 4-level and
//! 5-level paging, range operations, automatic huge pages, table freeing,
//! swap entries and batched TLB flushes.
//!
//! - [`PageTable`] is generic over a [`PagingArch`] (levels, entry format,
//!   flag encoding; [`X86_64`] for 4- and 5-level paging, chosen at run
//!   time), a [`PhysMemory`](mm_types::PhysMemory) accessor and a
//!   [`FrameProvider`](mm_types::FrameProvider) for table pages, so it runs
//!   on bare metal and on the host test kit alike.
//! - Range operations walk each table once: [`PageTable::map_range`] (1 GiB
//!   and 2 MiB pages where alignment and [`HugePages`] allow),
//!   [`PageTable::unmap_range`] (returns the frames, frees tables that
//!   become empty), [`PageTable::protect_range`] (splits huge pages it cuts),
//!   [`PageTable::harvest`] (test-and-clear accessed/dirty bits),
//!   [`PageTable::for_each_mapping`].
//! - Single addresses: [`PageTable::translate`], [`PageTable::lookup`],
//!   [`PageTable::split`], swap entries ([`PageTable::set_swap`],
//!   [`PageTable::replace_swap`]).
//! - Every change to a live mapping returns a `#[must_use]` [`Flush`];
//!   [`FlushBatch`] collects them and flushes page by page up to a threshold,
//!   then everything; [`Shootdown`] is the SMP hook.
//! - A refused operation (bad address, misalignment, overlap, unmapped page,
//!   no memory for tables) changes nothing: each operation plans, allocates
//!   every table page it needs, then applies.
//! - A hierarchy sharing the kernel's root entries
//!   ([`PageTable::new_sharing`]) reads through them but refuses to change
//!   anything below them ([`PagingError::KernelRange`]).
//!
//! # Example
//!
//! ```
//! use mm_paging::{HugePages, MapFlags, PageTable, X86_64};
//! use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
//! use mm_types::{PageSize, PhysAddr, VirtAddr};
//!
//! let ram = SimPhysMemory::new(PhysAddr::new(0)?, 8 << 20);
//! let frames = RefFrameProvider::new(&ram);
//! let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames)?;
//!
//! // 4 MiB + 8 KiB at a 2 MiB-aligned address: two 2 MiB pages and two 4 KiB pages.
//! let va = VirtAddr::new(0xffff_8000_0020_0000)?;
//! pt.map_range(va, PhysAddr::new(0x20_0000)?, (4 << 20) + 0x2000, MapFlags::KERNEL_DATA, HugePages::all())?
//!     .ignore(); // not live yet: no TLB to flush
//! let t = pt.translate(VirtAddr::new(0xffff_8000_0030_1234)?).unwrap();
//! assert_eq!((t.phys.as_u64(), t.size), (0x30_1234, PageSize::Size2MiB));
//!
//! // Unmapping the middle splits a 2 MiB page; the frames come back to us.
//! let mut removed = 0;
//! let flush = pt.unmap_range(VirtAddr::new(0xffff_8000_0030_0000)?, 0x1000, |_| removed += 1)?;
//! assert_eq!((removed, flush.pages()), (1, 1));
//! # flush.ignore();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Not yet
//! Table geometry is fixed at 512 eight-byte entries per 4 KiB table (x86-64,
//! AArch64 4 KiB granule, RISC-V Sv39/48/57 share it); only the x86-64 format
//! is implemented.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

mod arch;
mod error;
mod flags;
#[allow(unsafe_code)]
mod mapper;
#[allow(unsafe_code)]
mod table;
#[allow(unsafe_code)]
mod tlb;
#[allow(unsafe_code)]
mod x86;

pub use arch::{level_index, level_span, PagingArch, ENTRIES};
pub use error::PagingError;
pub use flags::{AccessBits, HugePages, MapFlags};
pub use mapper::{Entry, Lookup, Mapping, PageTable, Translation, Unmapped};
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub use tlb::HardwareTlb;
pub use tlb::{heapless_pages, Flush, FlushBatch, NoShootdown, RecordingTlb, Shootdown, TlbFlush, BATCH_PAGES};
pub use x86::{entry_bits, map_flags, EntryBits, X86_64};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
