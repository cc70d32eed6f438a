#![doc = include_str!("../README.md")]
#![no_std]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]

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

/// The longest run of consecutive slots mm-swap hands a store in one
/// request ([`BackingStore::write_slots`](mm_types::BackingStore::write_slots),
/// [`read_slots`](mm_types::BackingStore::read_slots)), whatever the
/// store's own [`max_run`](mm_types::BackingStore::max_run): 32 pages,
/// 128 KiB, Linux's `SWAP_CLUSTER_MAX` batch of reclaim.
pub const MAX_RUN: usize = 32;

/// Slots a CPU's slot cache takes from an area at once (Linux's
/// `SWAP_SLOTS_CACHE_SIZE` is 64 too).
pub const SLOT_BATCH: usize = 64;
