//! Where the time goes: per-phase totals from the kernel's clock (the
//! TSC), summed over every CPU, printed at the end of `pressure` and `smp`.
//!
//! A phase is timed from its start to its end, whatever runs inside it,
//! so phases nest: a fault's time includes the swap reads and the direct
//! reclaim it ran, and reclaim's includes its swap writes. Each
//! measurement costs two TSC reads and two atomic adds.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::{clock, kprintln};

/// A part of the work that is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A user page fault, from the exception to the return to the task
    /// (including the waits and reclaim below).
    Fault,
    /// Waiting for a task's address-space lock in a fault.
    SpaceWait,
    /// Direct reclaim: a fault that found no free frame reclaiming before
    /// it retries.
    DirectReclaim,
    /// One run of the background reclaim thread, woken to its high
    /// watermark.
    Kswapd,
    /// One swap-slot read from the disk (waiting for its lock included).
    DiskRead,
    /// One swap-slot write to the disk (waiting for its lock included).
    DiskWrite,
    /// A CPU halted with nothing to run.
    Idle,
}

const PHASES: usize = 7;

const ALL: [(Phase, &str); PHASES] = [
    (Phase::Fault, "faults (all of it)"),
    (Phase::SpaceWait, "  waiting for the space lock"),
    (Phase::DirectReclaim, "  direct reclaim"),
    (Phase::Kswapd, "kswapd runs"),
    (Phase::DiskRead, "disk reads (in faults)"),
    (Phase::DiskWrite, "disk writes (in reclaim)"),
    (Phase::Idle, "idle (halted)"),
];

/// TSC ticks and events, per phase.
static TICKS: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];
static EVENTS: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];

/// A phase being timed: the time from [`start`] to the drop counts.
#[must_use = "the phase is timed until this is dropped"]
pub struct Timed {
    phase: Phase,
    since: u64,
}

/// Starts timing `phase`.
pub fn start(phase: Phase) -> Timed {
    Timed { phase, since: clock::ticks() }
}

impl Drop for Timed {
    fn drop(&mut self) {
        let i = self.phase as usize;
        TICKS[i].fetch_add(clock::ticks().wrapping_sub(self.since), Ordering::Relaxed);
        EVENTS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the totals afresh (at the start of a measured workload).
pub fn reset() {
    for i in 0..PHASES {
        TICKS[i].store(0, Ordering::Relaxed);
        EVENTS[i].store(0, Ordering::Relaxed);
    }
}

/// Prints each phase's events, total and mean, and its share of `wall_ms`
/// (the workload's elapsed time; on several CPUs a share can pass 100%).
pub fn report(label: &str, wall_ms: u64) {
    kprintln!("{}: profile: phase, events, total ms, mean us, share of the {} ms run", label, wall_ms);
    for (phase, name) in ALL {
        let i = phase as usize;
        let (ticks, n) = (TICKS[i].load(Ordering::Relaxed), EVENTS[i].load(Ordering::Relaxed));
        let us = clock::ticks_to_us(ticks);
        kprintln!(
            "{}: profile: {:<30} {:>8} {:>8} {:>8} {:>5.1}%",
            label,
            name,
            n,
            us / 1000,
            us.checked_div(n).unwrap_or(0),
            us as f64 / 10.0 / wall_ms.max(1) as f64
        );
    }
}
