//! Swap for `no_std` kernels: swap areas over any [`BackingStore`](mm_types::BackingStore), slot
//! allocation in per-CPU clusters, use counts shared by forked address
//! spaces, a swap cache, checksummed reads and writes that never lose a
//! page, readahead, and `swapoff`.
//!
//! The crate depends on mm-types only. It hands out [`SwapSlot`]s (area
//! and offset, mm-types' one name for a swapped page, which mm-paging stores
//! in page tables) and the integrator calls back here from its fault
//! handler and its reclaim evictor. The reference kernel's wiring library
//! (`examples/wiring`) implements mm-vma's `SwapSlots` and mm-reclaim's
//! `Evictor` over a [`Swap`].
//!
//! A page's life in swap (MODEL 1-6):
//! 1. **Out.** [`Swap::swap_out`] allocates a slot with as many uses as the
//!    page has mappers, writes the frame through the store with its
//!    checksum, and returns the slot. If the write fails the slot is freed
//!    (marked bad after [`BAD_AFTER`] failures) and the error returned: the
//!    caller has not unmapped the page yet and keeps it resident.
//! 2. **Shared.** Each page table naming the slot holds one use:
//!    [`Swap::dup`] on fork, [`Swap::free`] on unmap or exit.
//! 3. **In.** [`Swap::swap_in`] returns the frame holding the slot's page:
//!    from the swap cache if it is there (no I/O), else read into a new
//!    frame, checked against the checksum and added to the cache;
//!    concurrent faults on one slot share one read. Readahead brings
//!    neighbouring slots into the cache too.
//! 4. **Cache.** A cached page stays until the last use of its slot goes
//!    ([`Swap::free`] returns the frame then) or the integrator drops it
//!    ([`Swap::uncache`]).
//!
//! ```
//! use mm_swap::{Swap, SwapConfig, SwappedIn};
//! use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
//! use mm_types::{AllocFlags, FrameProvider, PhysAddr, PhysMemory};
//!
//! let mem = SimPhysMemory::new(PhysAddr::new(0x10_0000).unwrap(), 1 << 20);
//! let frames = RefFrameProvider::new(&mem);
//! let swap = Swap::new(SwapConfig::default());
//! let area = swap.add_area(Box::new(MemStore::new(1024)), 0).unwrap();
//!
//! // A page with known contents, swapped out by its single mapper.
//! let frame = frames.allocate_frame(AllocFlags::empty()).unwrap();
//! // SAFETY: the frame was just allocated: nobody else uses it.
//! unsafe { mem.write_bytes(frame, &[0xab; 4096]) }.unwrap();
//! // SAFETY: the frame holds the page and nothing writes it meanwhile.
//! let slot = unsafe { swap.swap_out(0, frame, 1, &mem) }.unwrap();
//! assert_eq!(slot.area(), area);
//! frames.free_frame(frame).unwrap();
//!
//! // The fault: read back into a new frame, checked.
//! let SwappedIn { frame: back, read: io } = swap.swap_in(slot, &frames, &mem).unwrap();
//! assert!(io);
//! let mut buf = [0u8; 4096];
//! // SAFETY: the frame is in the swap cache and nobody writes it.
//! unsafe { mem.read_bytes(back, &mut buf) }.unwrap();
//! assert_eq!(buf, [0xab; 4096]);
//! // The page table now maps the frame: the slot's last use goes and the
//! // cache hands the frame over.
//! assert_eq!(swap.free(slot).unwrap(), Some(back));
//! assert_eq!(swap.used_slots(), 0);
//! ```

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

mod area;
pub mod checksum;
mod error;
#[cfg(all(unix, any(test, feature = "std")))]
pub mod file;
mod swap;
#[cfg(feature = "zswap")]
pub mod zswap;

use mm_types::SwapSlot;

pub use area::{BAD_AFTER, CLUSTER, MAX_SLOTS};
pub use error::SwapError;
pub use mm_types;
pub use swap::{Swap, SwapConfig, SwapStats, SwappedIn};

/// Areas a [`Swap`] can hold: as many as a [`SwapSlot`] can name.
pub const MAX_AREAS: usize = SwapSlot::MAX_AREAS as usize;

// Every slot a `Swap` hands out is a valid `SwapSlot`.
const _: () = assert!(MAX_SLOTS < SwapSlot::OFFSET_LIMIT);

/// The slot at `offset` of area `area`; both in range by construction
/// (areas are numbered below [`MAX_AREAS`], offsets below [`MAX_SLOTS`]).
fn slot_at(area: u8, offset: u64) -> SwapSlot {
    SwapSlot::new(area, offset).expect("a Swap's areas and offsets fit a SwapSlot")
}

/// Slots a CPU's slot cache takes from an area at once (Linux's
/// `SWAP_SLOTS_CACHE_SIZE` is 64 too).
pub const SLOT_BATCH: usize = 64;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
