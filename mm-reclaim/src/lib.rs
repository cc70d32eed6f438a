//! Page replacement for kernels: replacement policies behind one trait, fed
//! by software references or by hardware accessed bits harvested while
//! scanning.
//!
//! What is here:
//! - [`Policy`]: insert / access / remove / evict, with shadow entries for
//!   refault detection kept by the integrator ([`Shadow`]) and a [`Scan`]
//!   hook through which a policy tests and clears accessed bits and asks
//!   whether a page may be evicted;
//! - [`Clock`] (second chance), [`TwoList`] (Linux's active/inactive lists
//!   with refault distance), [`MgLru`] (generations aged by accessed bits),
//!   [`S3Fifo`] (SOSP 2023), and
//!   [`default_policy`], an S3-FIFO tuned for a long ghost history;
//! - [`eval`]: trace replay under demand paging (with every hit reported,
//!   or only accessed bits seen while scanning) and Belady's MIN;
//!   `examples/replay.rs` is the command-line tool around it.
//!
//! - [`choose_victim`] and [`badness`]: the OOM victim choice (Linux's badness: resident, swap and
//!   page-table pages, shifted by a per-task adjustment);
//! - [`Reclaim`]: the reclaim driver: anonymous and file lists, background
//!   reclaim between the watermarks, direct reclaim, priority passes in
//!   batches, shrinkers, honest progress.
//!
//! ```
//! use mm_reclaim::{Clock, NoBits, Policy};
//!
//! let mut clock = Clock::new(16);
//! for page in 0..4 {
//!     clock.insert(page, None).unwrap();
//! }
//! clock.access(0); // page 0 gets a second chance
//! assert_eq!(clock.evict(&mut NoBits).map(|(p, _)| p), Some(1));
//! ```

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

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
    Evictor, Level, Outcome, Progress, Reclaim, ReclaimError, ReclaimStats, Shrinker, ShrinkerId, Shrunk, Victim,
    BATCH, SHRINK_BATCH, START_PRIORITY,
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

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
