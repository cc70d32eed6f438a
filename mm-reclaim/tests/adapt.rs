//! W-TinyLFU's adaptation on synthetic traces built to need one thing each:
//! a scan and a loop larger than the cache must leave the window small
//! (frequency pays), a shifting hot set with short reuse must grow it
//! (recency pays); in both reporting modes, against CLOCK on the same trace.

use mm_reclaim::eval::{replay, Mode};
use mm_reclaim::{Clock, PageId, WTinyLfu};

const MODES: [Mode; 2] = [Mode::Callback, Mode::AccessedBits];

fn ids(trace: &[PageId]) -> usize {
    trace.iter().max().map_or(0, |&m| m as usize + 1)
}

/// Misses of W-TinyLFU and its final window target, and CLOCK's misses.
fn run(trace: &[PageId], capacity: usize, mode: Mode) -> (u64, usize, u64) {
    let n = ids(trace);
    let mut p = WTinyLfu::new(n, capacity);
    let misses = replay(&mut p, trace, n, capacity, mode);
    let clock = replay(&mut Clock::new(n), trace, n, capacity, mode);
    (misses, p.window_target(), clock)
}

/// A loop over 150 pages with 100 frames: CLOCK misses every access; a
/// stable part of the loop stays resident and the window stays small.
#[test]
#[cfg_attr(miri, ignore = "long replays of safe code; mm-reclaim has no unsafe code")]
fn a_loop_larger_than_the_cache_keeps_the_window_small() {
    let trace: Vec<PageId> = (0..60).flat_map(|_| 0..150).collect();
    for mode in MODES {
        let (misses, window, clock) = run(&trace, 100, mode);
        assert_eq!(clock, trace.len() as u64, "{mode:?}");
        assert!(window <= 10, "{mode:?}: window {window}");
        assert!((misses as f64) < 0.6 * trace.len() as f64, "{mode:?}: {misses} of {}", trace.len());
    }
}

/// 50 hot pages referenced in turn, with a one-time scan of 20,000 pages
/// mixed in (two scan pages per hot reference): the hot set stays resident
/// and the window does not grow.
#[test]
#[cfg_attr(miri, ignore = "long replays of safe code; mm-reclaim has no unsafe code")]
fn a_scan_passes_through_the_window() {
    let mut trace = Vec::new();
    let mut scan = 1000;
    for i in 0..10_000u32 {
        trace.push(i % 50);
        trace.extend([scan, scan + 1]);
        scan += 2;
    }
    for mode in MODES {
        let (misses, window, clock) = run(&trace, 100, mode);
        let scans = 20_000;
        // Only the hot set's cold misses (and a few while it settles) on
        // top of the scan's.
        assert!(misses < scans + 500, "{mode:?}: {misses}");
        assert!(clock > scans + 5_000, "{mode:?}: clock {clock}");
        assert!(window <= 10, "{mode:?}: window {window}");
    }
}

/// A hot set of 60 pages referenced often for a long time, then a moving
/// working set: every page is used, used again 10 accesses later, and
/// never after. The window must grow past the reuse distance (five misses)
/// to hold the reuse, since the main region holds pages that were hot once
/// and a newcomer loses the duel against them; the misses stay near CLOCK's.
#[test]
#[cfg_attr(miri, ignore = "long replays of safe code; mm-reclaim has no unsafe code")]
fn a_shifting_hot_set_grows_the_window() {
    let mut trace: Vec<PageId> = (0..200).flat_map(|_| 0..60).collect();
    let start = trace.len();
    for i in 0..40_000u32 {
        let p = 1000 + i / 2;
        trace.push(if i % 2 == 0 { p } else { 1000 + (i / 2).saturating_sub(5) });
    }
    for mode in MODES {
        let (misses, window, clock) = run(&trace, 100, mode);
        let n = ids(&trace);
        let fixed = replay(&mut WTinyLfu::with_reach(n, 100, 0), &trace, n, 100, mode);
        let shifted = (trace.len() - start) as u64;
        assert!(window > 5, "{mode:?}: window {window}");
        // Each new page misses once; its reuse hits under CLOCK, and with
        // the window grown (a fixed 1 % window misses it for a long time).
        assert!(misses <= clock + shifted / 50, "{mode:?}: {misses} against clock {clock}");
        assert!(misses + shifted / 10 < fixed, "{mode:?}: {misses} against a fixed window's {fixed}");
    }
}

/// A policy made for more frames than the integrator lets it hold (a
/// kernel's reclaim keeps fewer pages resident than the zone has frames):
/// the window's candidates must still duel the main region's victims, or
/// the loop flushes the cache as under CLOCK.
#[test]
#[cfg_attr(miri, ignore = "long replays of safe code; mm-reclaim has no unsafe code")]
fn duels_happen_below_the_capacity() {
    let trace: Vec<PageId> = (0..60).flat_map(|_| 0..150).collect();
    let n = ids(&trace);
    for mode in MODES {
        let misses = replay(&mut WTinyLfu::new(n, 400), &trace, n, 100, mode);
        assert!((misses as f64) < 0.6 * trace.len() as f64, "{mode:?}: {misses} of {}", trace.len());
    }
}
