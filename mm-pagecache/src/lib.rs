#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod error;
mod index;

pub use error::IndexError;
pub use index::{Entry, PageIndex, Tag};
pub use mm_types;
