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
mod genclock;
mod list;
mod oom;
mod policy;
mod s3fifo;
mod sketch;
mod tinylfu;
mod twolist;

pub use clock::Clock;
pub use driver::{
    Evictor, Level, Outcome, PerKind, Progress, Reclaim, ReclaimError, ReclaimStats, Shrinker, ShrinkerId, Shrunk,
    Victim, BATCH, SHRINK_BATCH, START_PRIORITY,
};
pub use mm_types;
pub use policy::{Mode, NoBits, PageId, Policy, PolicyError, Scan, Shadow};

/// The crate's default policy for `capacity` frames and page ids below
/// `ids`: [`WTinyLfu`], whose window adapts to the workload as it runs.
/// `mode` says how references will be reported; the default treats both
/// ways alike (the README reports it in both). See the README for how it
/// was chosen and what it achieves, in sample and out of sample.
pub fn default_policy(ids: usize, capacity: usize, mode: Mode) -> WTinyLfu {
    let _ = mode;
    WTinyLfu::new(ids, capacity)
}

/// A policy by name, for a kernel that picks it at run time: `clock`,
/// `twolist`, `genclock`, `s3fifo`, `wtinylfu`, or `default` (the same as
/// `wtinylfu`, see [`default_policy`]), for page ids below `ids` and
/// `capacity` frames.
pub fn policy_by_name(name: &str, ids: usize, capacity: usize, mode: Mode) -> Option<Box<dyn Policy + Send>> {
    Some(match name {
        "clock" => Box::new(Clock::new(ids)),
        "twolist" => Box::new(TwoList::new(ids)),
        "genclock" => Box::new(GenClock::new(ids)),
        "s3fifo" => Box::new(S3Fifo::new(ids, capacity)),
        "wtinylfu" => Box::new(WTinyLfu::new(ids, capacity)),
        "default" => Box::new(default_policy(ids, capacity, mode)),
        _ => return None,
    })
}

/// The policy names [`policy_by_name`] knows, besides `default`.
pub const POLICY_NAMES: &[&str] = &["clock", "twolist", "genclock", "s3fifo", "wtinylfu"];

pub use genclock::GenClock;
pub use oom::{badness, choose_victim, OomError, TaskMemory};
pub use s3fifo::S3Fifo;
pub use sketch::Sketch;
pub use tinylfu::WTinyLfu;
pub use twolist::TwoList;
