#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
#[cfg(test)]
extern crate std;

mod clock;
mod driver;
pub mod eval;
mod list;
mod mglru;
mod oom;
mod policy;
mod s3fifo;
mod twolist;

pub use clock::Clock;
pub use driver::{
    Evictor, Level, Outcome, PerKind, Progress, Reclaim, ReclaimError, ReclaimStats, Shrinker, ShrinkerId, Shrunk,
    Victim, BATCH, SHRINK_BATCH, START_PRIORITY,
};
pub use mm_types;
pub use policy::{Mode, NoBits, PageId, Policy, PolicyError, Scan, Shadow};

/// The crate's default policy for `capacity` frames and page ids below
/// `ids`: S3-FIFO whose ghost window is three times the capacity (shadows
/// live with the integrator, so a long history costs the policy nothing),
/// promoting a page from the small queue after one reference when every
/// reference is reported, after two when references are seen as accessed
/// bits (the access that faulted the page in sets its bit, so the first
/// one observed says nothing). See the README for how it was chosen and
/// what it achieves.
pub fn default_policy(ids: usize, capacity: usize, mode: Mode) -> S3Fifo {
    let promote = match mode {
        Mode::Callback => 1,
        Mode::AccessedBits => 2,
    };
    S3Fifo::with_params(ids, capacity, 10, 300, promote)
}
/// A policy by name, for a kernel that picks it at run time: `clock`,
/// `twolist`, `mglru`, `s3fifo` or `default` (see [`default_policy`]), for
/// page ids below `ids` and `capacity` frames.
pub fn policy_by_name(name: &str, ids: usize, capacity: usize, mode: Mode) -> Option<Box<dyn Policy + Send>> {
    Some(match name {
        "clock" => Box::new(Clock::new(ids)),
        "twolist" => Box::new(TwoList::new(ids)),
        "mglru" => Box::new(MgLru::new(ids)),
        "s3fifo" => Box::new(S3Fifo::new(ids, capacity)),
        "default" => Box::new(default_policy(ids, capacity, mode)),
        _ => return None,
    })
}

/// The policy names [`policy_by_name`] knows.
pub const POLICY_NAMES: &[&str] = &["clock", "twolist", "mglru", "s3fifo", "default"];

pub use mglru::MgLru;
pub use oom::{badness, choose_victim, OomError, TaskMemory};
pub use s3fifo::S3Fifo;
pub use twolist::TwoList;
