//! Where the time goes: per-phase totals from the kernel's clock (the
//! TSC), summed over every CPU, printed at the end of `pressure` and `smp`
//! (and of any scenario booted with `profile` on its command line, which
//! `cargo xtask run --profile` adds).
//!
//! A phase is timed from its start to its end, whatever runs inside it,
//! so phases nest: a fault's time includes the swap reads and the direct
//! reclaim it ran, and reclaim's includes its swap writes. Each
//! measurement costs two TSC reads and two atomic adds.
//!
//! With `profile`, the boot CPU is also sampled: CPU 1 sends it an NMI at
//! each of its own timer ticks (1 kHz), and the NMI handler
//! records the interrupted instruction address. The kernel runs with
//! interrupts off, so only an NMI sees every instruction; a sample costs
//! the sampled CPU one NMI. The addresses are printed at the end, one line
//! per address with its count, and the xtask names their functions from
//! the kernel's debug information.

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

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

/// Starts the totals afresh (at the start of a measured workload), and
/// the sampling with `profile`.
pub fn reset() {
    for i in 0..PHASES {
        TICKS[i].store(0, Ordering::Relaxed);
        EVENTS[i].store(0, Ordering::Relaxed);
    }
    start_sampling();
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
    print_samples(label);
}

/// Whether the command line asked for the sampling profile.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Samples are being taken.
static SAMPLING: AtomicBool = AtomicBool::new(false);
/// A sample NMI was sent and not taken yet.
static PENDING: AtomicBool = AtomicBool::new(false);
/// The local APIC id of the sampled CPU (the boot CPU).
static TARGET: AtomicU32 = AtomicU32::new(0);
/// Instruction addresses sampled (a heap buffer made when sampling first
/// starts, so that a boot without `profile` has the memory), and how many
/// were (beyond the buffer's length they are counted, not kept).
static SAMPLES: spin::Once<&'static [AtomicU64]> = spin::Once::new();
static TAKEN: AtomicUsize = AtomicUsize::new(0);
/// 32 s of samples at 1 kHz.
const MAX_SAMPLES: usize = 1 << 15;

/// Turns the sampling profile on for this boot (the `profile` word of the
/// command line).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether the sampling profile is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Called first in the NMI handler with the interrupted instruction
/// address: records it if it is a sample's NMI on the sampled CPU. Takes
/// no lock and touches no allocator (an NMI may come anywhere).
pub fn nmi_sample(rip: u64) {
    if !SAMPLING.load(Ordering::Relaxed) || crate::lapic::id() != TARGET.load(Ordering::Relaxed) {
        return;
    }
    if PENDING.swap(false, Ordering::AcqRel) {
        let i = TAKEN.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = SAMPLES.get().and_then(|s| s.get(i)) {
            slot.store(rip, Ordering::Relaxed);
        }
    }
}

/// The CPU whose timer ticks take the samples.
const SAMPLER_CPU: usize = 1;

/// Whether CPU `cpu` takes samples now (its timer must keep ticking when
/// it is idle).
pub fn samples_from(cpu: usize) -> bool {
    cpu == SAMPLER_CPU && SAMPLING.load(Ordering::Relaxed)
}

/// Called at each timer tick: on the sampling CPU, sends the sampled CPU
/// the NMI that takes a sample.
pub fn tick() {
    if samples_from(crate::percpu::index()) {
        PENDING.store(true, Ordering::Release);
        crate::lapic::send_nmi(TARGET.load(Ordering::Relaxed));
    }
}

/// Starts sampling the boot CPU from CPU 1's timer ticks (nothing without
/// `profile`, or with one CPU).
fn start_sampling() {
    if !enabled() || crate::percpu::online() <= SAMPLER_CPU {
        return;
    }
    SAMPLES.call_once(|| alloc::vec::Vec::from_iter((0..MAX_SAMPLES).map(|_| AtomicU64::new(0))).leak());
    TARGET.store(crate::percpu::cpu(0).apic_id(), Ordering::Relaxed);
    TAKEN.store(0, Ordering::Relaxed);
    SAMPLING.store(true, Ordering::Release);
    // An idle sampling CPU has stopped its timer: wake it to start it.
    crate::smp::kick(1 << SAMPLER_CPU);
}

/// Stops sampling and prints the samples: their count, then one line per
/// instruction address with its count (`label: profile: pc ADDRESS COUNT`).
fn print_samples(label: &str) {
    if !SAMPLING.swap(false, Ordering::AcqRel) {
        return;
    }
    let taken = TAKEN.load(Ordering::Relaxed);
    let kept = taken.min(MAX_SAMPLES);
    let buf = SAMPLES.get().map_or(&[][..], |s| &s[..kept]);
    let mut pcs: alloc::vec::Vec<u64> = buf.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    pcs.sort_unstable();
    kprintln!("{}: profile: {} samples of CPU 0 ({} kept), by instruction address", label, taken, kept);
    let mut i = 0;
    while i < pcs.len() {
        let j = i + pcs[i..].iter().take_while(|&&p| p == pcs[i]).count();
        kprintln!("{}: profile: pc {:#x} {}", label, pcs[i], j - i);
        i = j;
    }
}
