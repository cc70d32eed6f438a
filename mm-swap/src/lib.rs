//! Swap areas over backing stores: slot allocation, swap cache, swap-out and swap-in.
//!
//! **Status: not implemented yet.** This crate is a placeholder in the
//! workspace layout; its design and scope are tracked in issue #9. It
//! builds as `no_std` for the host and for `x86_64-unknown-none`, and
//! depends only on [`mm_types`] (see the workspace `DESIGN` notes).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub use mm_types;
