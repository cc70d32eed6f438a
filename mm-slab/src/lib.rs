//! Object caches and kmalloc size classes for `no_std` kernels, on top of
//! any frame provider.
//!
//! - [`Cache`]: objects of one size and alignment (optionally with a
//!   constructor) in slabs of `2^order` frames; the order is chosen per size
//!   so that a slab wastes at most 1/16 of its bytes where possible.
//!   [`TypedCache`] hands out owning [`SlabBox`]es of a type.
//! - SLUB's structure: each CPU allocates from and frees to the freelist of
//!   its own current slab under its own per-CPU lock, never touching shared
//!   state on that path; each CPU keeps a few partial slabs; a shared
//!   partial list behind one node lock feeds CPUs in batches; a free of an
//!   object of another slab (another CPU's, or no CPU's) goes to that slab's
//!   own freelist ("remote free").
//! - Empty slabs go back to the frame provider, keeping a configurable few;
//!   [`Cache::shrink`] releases all of them (what a reclaim shrinker calls).
//! - [`Kmalloc`]: 34 size classes from 8 bytes to 8 KiB (Linux's, with 96
//!   and 192, refined to four per doubling above 128 bytes), larger requests
//!   as frame blocks, `krealloc`, and [`GlobalAlloc`](core::alloc::GlobalAlloc)
//!   (also through [`GlobalSlab`], which fits in a `static` as
//!   `#[global_allocator]`).
//! - Hardening and debugging per cache ([`CacheFlags`]): freelist links
//!   XOR-ed with a per-cache secret and their own address and checked when
//!   followed; poison of free objects (checked on allocation); red zones
//!   (checked on free); an allocation bitmap for exact double-free and
//!   interior-pointer detection; [`Cache::validate`] walks every slab and
//!   reports each corruption with the object and the bytes overwritten.
//! - Statistics per cache, like `/proc/slabinfo` ([`CacheStats`]).
//!
//! The crate needs no heap. Slab memory is reached through
//! [`PhysMemory`](mm_types::PhysMemory), which must map each naturally
//! aligned slab at a virtual address aligned to the slab size (every linear
//! direct map does; `SimPhysMemory` does for the host).
//!
//! # Example
//!
//! ```
//! use core::alloc::Layout;
//! use mm_buddy::{BuddyAllocator, BuddyConfig};
//! use mm_slab::{Kmalloc, KmallocConfig};
//! use mm_types::percpu::SingleCpu;
//! use mm_types::testkit::SimPhysMemory;
//! use mm_types::PhysAddr;
//!
//! let ram = SimPhysMemory::new(PhysAddr::new(1 << 30)?, 32 << 20);
//! let buddy: BuddyAllocator<_, _> = BuddyAllocator::new(ram.clone(), SingleCpu, BuddyConfig::default())?;
//! // SAFETY: the simulated RAM is ours and outlives the allocator.
//! unsafe { buddy.add_memory(ram.span())? };
//!
//! let heap: Kmalloc<_, _, _> = Kmalloc::new(&buddy, ram.clone(), SingleCpu, KmallocConfig::default())?;
//! let layout = Layout::new::<[u64; 12]>(); // 96 bytes
//! let p = heap.alloc(layout)?;
//! // SAFETY: `p` is 96 writable bytes.
//! unsafe { p.as_ptr().write_bytes(0xab, 96) };
//! // SAFETY: allocated above with `layout`, not used afterwards.
//! unsafe { heap.free(p, layout)? };
//! let s = heap.stats().find(|s| s.object_size == 96).unwrap();
//! assert_eq!((s.active_objects, s.slabs), (0, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # When not to use it
//!
//! - For a user-space allocator, or a heap over one fixed memory region
//!   without a frame allocator: use a general allocator such as `talc`.
//! - Frees need the size (as Rust's allocator API provides). A C-style
//!   `kfree(ptr)` without a size is not offered: finding a slab from an
//!   arbitrary pointer needs per-frame metadata (Linux's `struct page`),
//!   which this crate leaves to the frame allocator.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]
#![warn(missing_docs)]

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
pub use stats::CacheStats;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
