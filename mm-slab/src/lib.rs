#![doc = include_str!("../README.md")]
#![no_std]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

#[allow(unsafe_code)]
mod cache;
mod config;
mod error;
#[allow(unsafe_code)]
mod kmalloc;
#[allow(unsafe_code)]
mod object_cache;
#[allow(unsafe_code)]
mod slab;
mod stats;

pub use config::{CacheConfig, CacheFlags, Geometry, MAX_SLAB_ORDER};
pub use error::{Corruption, CorruptionKind, SlabError};
pub use kmalloc::{GlobalSlab, Kmalloc, KmallocConfig, KMALLOC_CLASSES, KMALLOC_MAX};
pub use mm_types;
pub use object_cache::{Cache, SlabBox, TypedCache};
pub use slab::{HEADER_BYTES, POISON_FREE, RED_ACTIVE, RED_INACTIVE};
pub use stats::{CacheStats, CpuSlabStats};
