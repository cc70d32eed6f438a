#![doc = include_str!("../README.md")]
#![no_std]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

mod error;
#[allow(unsafe_code)]
mod mapper;
#[allow(unsafe_code)]
mod tree;
mod vmalloc;

pub use error::VmallocError;
pub use mapper::{KernelMapper, PageTableGuard, SharedPageTable};
pub use mm_paging;
pub use mm_types;
pub use tree::AreaKind;
pub use vmalloc::{AreaInfo, AreaOptions, CacheMode, Vmalloc, VmallocConfig, VmallocStats};
