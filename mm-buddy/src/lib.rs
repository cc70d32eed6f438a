//! A zoned binary buddy frame allocator with per-CPU caches, for `no_std`
//! kernels.
//!
//! - Orders 0 to `max_order` (default 10: 4 MiB blocks; up to
//!   [`MAX_ORDER_LIMIT`]); a block's buddy is found by XOR of its frame
//!   number, and frees coalesce as far as they go. A freed block whose
//!   parent's buddy is free goes to the back of its list, so it is handed out
//!   last and has the best chance to merge.
//! - Memory comes from a boot memory map with holes and reserved ranges
//!   ([`BuddyAllocator::add_boot_memory`]) or is hot-added later
//!   ([`BuddyAllocator::add_memory`]). **No heap**: each region keeps its
//!   metadata (one byte per frame, one per 2 MiB pageblock) in its own first
//!   frames, and free-list links live inside the free blocks.
//! - Zones DMA (< 16 MiB), DMA32 (< 4 GiB) and Normal; an allocation takes
//!   from the highest zone its flags allow and falls back downward, keeping a
//!   reserve in lower zones (Linux's `lowmem_reserve`).
//! - Watermarks min/low/high per zone, from Linux's formulas; ordinary
//!   allocations never take a zone below min, [`AllocFlags::ATOMIC`] ones may
//!   go down to half of it. [`BuddyAllocator::watermark_state`] tells a
//!   reclaim driver whether a zone is below low and how far it is from high.
//! - Per-CPU caches for orders 0 to [`PCP_MAX_ORDER`], refilled and drained
//!   in batches with a bounded high mark; [`BuddyAllocator::drain_all`] runs
//!   before an allocation reports out-of-memory.
//! - Mobility grouping per pageblock (unmovable / reclaimable / movable) with
//!   fallback stealing that claims whole or mostly free pageblocks, so churn
//!   does not scatter unmovable blocks over all of memory.
//! - Contiguous runs of N frames with alignment, and blocks inside a physical
//!   range ([`BuddyAllocator::allocate_contiguous`],
//!   [`BuddyAllocator::allocate_in_range`]).
//! - Statistics: free blocks per order and zone (`/proc/buddyinfo`),
//!   watermark state, per-CPU cache sizes, a fragmentation index.
//! - Checked frees: a block the allocator does not own, a misaligned block,
//!   a wrong order (or one above `max_order`) or a double free is returned
//!   as a [`FrameError`] and leaves the allocator unchanged. The check costs
//!   one region look-up and one compare-and-swap of the head frame's byte
//!   per free.
//!
//! # Example
//!
//! ```
//! use mm_buddy::{BuddyAllocator, BuddyConfig};
//! use mm_types::percpu::SingleCpu;
//! use mm_types::testkit::SimPhysMemory;
//! use mm_types::{AllocFlags, FrameError, FrameProvider, Order, PhysAddr, PhysRange};
//!
//! // 64 MiB of simulated RAM at 1 MiB, with the first 256 KiB reserved.
//! let ram = SimPhysMemory::new(PhysAddr::new(1 << 20)?, 64 << 20);
//! let buddy: BuddyAllocator<_, _> = BuddyAllocator::new(ram.clone(), SingleCpu, BuddyConfig::default())?;
//! let reserved = PhysRange::new(PhysAddr::new(1 << 20)?, 256 << 10)?;
//! // SAFETY: the simulated RAM is ours and outlives the allocator.
//! let report = unsafe { buddy.add_boot_memory(&ram.ram_ranges(), &[reserved])? };
//! assert!(report.frames > 16_000);
//!
//! let dma = buddy.allocate(Order::new(2).unwrap(), AllocFlags::DMA | AllocFlags::ZERO)?;
//! assert!(dma.start_address().as_u64() + dma.bytes() <= 16 << 20);
//! buddy.free(dma)?;
//! assert_eq!(buddy.free(dma), Err(FrameError::DoubleFree(dma)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # When not to use it
//! It manages RAM that the kernel can reach through a [`PhysMemory`]
//! accessor (a direct map): the allocator writes into free frames. Memory
//! that must not be touched while free (e.g. device memory) needs another
//! allocator.
//!
//! [`PhysMemory`]: mm_types::PhysMemory
//! [`FrameError`]: mm_types::FrameError
//! [`AllocFlags::ATOMIC`]: mm_types::AllocFlags::ATOMIC

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

#[allow(unsafe_code)]
mod allocator;
mod error;
#[allow(unsafe_code)]
mod free_list;
#[allow(unsafe_code)]
mod meta;
mod pcp;
mod region;
mod state;
mod stats;
mod zone;

pub use allocator::{AddReport, BuddyAllocator, BuddyConfig, MAX_RESERVED};
pub use error::BuddyError;
pub use pcp::PCP_MAX_ORDER;
pub use region::MAX_REGIONS;
pub use stats::{Fragmentation, WatermarkState, Watermarks, ZoneStats};
pub use zone::MAX_ORDER_LIMIT;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
