#![doc = include_str!("../README.md")]
#![no_std]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below:
// the cache's copies to and from its frames.
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod blockdev;
#[allow(unsafe_code)]
mod cache;
mod error;
mod errseq;
#[allow(unsafe_code)]
mod frames;
mod index;
mod readahead;
#[allow(unsafe_code)]
mod shmem;

pub use blockdev::BlockDevice;
pub use cache::{CacheConfig, CacheStats, CachedFile, OpenFile, PageCache, Reclaimed, WritebackReport};
pub use error::{CacheError, IndexError};
pub use errseq::{ErrSeq, ErrSince};
pub use index::{Entry, PageIndex, Tag};
pub use mm_types;
pub use readahead::Readahead;
