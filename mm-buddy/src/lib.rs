#![doc = include_str!("../README.md")]
#![no_std]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

#[allow(unsafe_code)]
mod allocator;
mod error;
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
pub use pcp::{PcpStats, PCP_MAX_ORDER};
pub use region::{MAX_FRAMES, MAX_REGIONS};
pub use stats::{Fragmentation, WatermarkState, Watermarks, ZoneStats};
pub use zone::MAX_ORDER_LIMIT;
