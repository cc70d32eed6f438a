//! The `pressure` scenario: four tasks writing three times the RAM, then
//! every page checked, and a fork whose child and parent must each keep
//! their own data.

extern crate alloc;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use mm_vma::SpaceId;
use mm_wiring::scenario;
use mm_wiring::scenario::{Touch, Worker};

use super::{activate, kill_all, machine, report, run_workers, unload, workers, KMachine, KernelTouch, TIER};
use crate::frames::Frames;
use crate::sched::Exit;
use crate::{kprintln, sched};

/// `pressure`: four tasks, each a thread, write three times the RAM the
/// allocator has in per-page patterns, then every page is checked.
/// `pages`: the pages the four tasks write between them, instead of three
/// times the free frames (the same absolute workload on machines of
/// different sizes).
pub fn pressure(buddy: &'static Frames, ram_end: u64, pages: Option<&str>) -> bool {
    let ram = buddy.free_frame_count();
    let total = match pages.map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) if n >= 4 => Some(n),
        Some(_) => {
            kprintln!("pressure: {:?} is not a page count (4 or more)", pages);
            return false;
        }
    };
    // The swap disk holds what the tasks write beyond RAM.
    let swap_pages = total.map_or(4 * ram, |n| n + ram);
    let Some(m) = machine(buddy, ram_end, swap_pages, (ram as usize * 4096) / 8) else {
        kprintln!("pressure: cannot set up the machine");
        return false;
    };
    let pages = match total {
        Some(n) => alloc::vec![n / 4; 4],
        None => scenario::pressure_pages(4, ram),
    };
    let Some(ws) = workers(m, buddy, &pages) else {
        kprintln!("pressure: cannot create the tasks");
        return false;
    };
    kprintln!("pressure: {} tasks writing {} pages ({} frames free)", ws.len(), pages.iter().sum::<u64>(), ram);
    let first = ws[0];
    crate::profile::reset();
    // Every thread of this scenario runs on this CPU: its heap counters see
    // every allocation of the run.
    let allocs = || {
        let s = crate::heap::heap().cpu_stats(crate::percpu::index());
        s.alloc_hits + s.alloc_misses
    };
    let (allocs0, faults0, out0) = (allocs(), m.figures(0).faults, m.figures(0).swapped_out);
    let start = crate::clock::now_ms();
    let (out, ended) = run_workers(m, buddy, ws);
    let ms = (crate::clock::now_ms() - start).max(1);
    crate::profile::report("pressure", ms);
    let heap_allocs = allocs() - allocs0;
    let (f1, out1) = (m.figures(0).faults, m.figures(0).swapped_out);
    let count = |f: mm_vma::FaultStats| f.zero_page + f.demand_zero + f.cow_copied + f.cow_reused + f.pager + f.swap_in;
    let faults = count(f1) - count(faults0);
    kprintln!(
        "pressure: heap allocations in the run: {} ({:.2} per fault, {:.2} per page swapped out; {} faults, {} swapped out)",
        heap_allocs,
        heap_allocs as f64 / faults.max(1) as f64,
        heap_allocs as f64 / (out1 - out0).max(1) as f64,
        faults,
        out1 - out0
    );
    kprintln!(
        "pressure: written {} verified {} corrupt {} errors {}; {} threads ended",
        out.written,
        out.verified,
        out.corrupt,
        out.errors,
        ended.len()
    );
    report("pressure", m, buddy);
    let f = m.figures(buddy.free_frame_count());
    kprintln!(
        "pressure: {} ms; {} pages swapped out and {} in per second",
        ms,
        f.swapped_out * 1000 / ms,
        f.faults.swap_in * 1000 / ms
    );
    if let Some(z) = TIER.get() {
        let zs = z.stats();
        kprintln!(
            "pressure: compressed swap now: {} pages ({} same-filled) in {} bytes of pool; {} stored in all, {} refused (pool full)",
            zs.pages,
            zs.same_filled,
            zs.pool_bytes,
            zs.stored,
            zs.pool_full
        );
    }
    let total: u64 = pages.iter().sum();
    let ok = out.corrupt == 0 && out.errors == 0 && out.verified == out.written && out.written == total;
    let ok = ok && ended.iter().all(|e| e.exit == Exit::Done);
    let ok = ok && f.swapped_out > 0 && f.faults.swap_in > 0;
    let ok = fork_check("pressure", m, buddy, &first) && ok && m.device.swap().check().is_ok();
    // Every swap-cache page no mapper wrote since its last write must
    // match its slot (a debug verification of the page-dirty tracking).
    let clean = m.check_clean_cache();
    kprintln!("pressure: clean swap-cache pages match their slots: {}", clean.is_ok());
    let ok = ok && clean.is_ok();
    kill_all(m);
    kprintln!("pressure: data intact: {}", ok);
    ok
}

/// Pages [`fork_check`] covers.
const FORK_PAGES: u64 = 512;

/// After `pressure`'s workload, its first task forks. The child's thread
/// must see the parent's pages (most of them in swap, their slots now
/// shared) and overwrite them, which copy-on-write gives it copies of, and
/// read its own values back; then the parent's thread must find its pages
/// unchanged.
pub(super) fn fork_check(label: &str, m: &'static KMachine, buddy: &'static Frames, parent: &Worker) -> bool {
    type Value = fn(usize, u64) -> u64;
    let before = m.figures(0).faults;
    let Ok(child) = m.fork(parent.id) else {
        kprintln!("{}: fork failed", label);
        return false;
    };
    let n = parent.pages.min(FORK_PAGES);
    let (base, number) = (parent.base, parent.number);
    let theirs: Value = |i, p| !scenario::pattern(i, p);
    // Each pass runs in a thread of its task: it reads the first word of
    // each of the `n` pages, counts those equal to `want`, and writes
    // `write` over it when given.
    let passes: [(SpaceId, Value, Option<Value>); 3] =
        [(child, scenario::pattern, Some(theirs)), (child, theirs, None), (parent.id, scenario::pattern, None)];
    let mut seen = [0u64; 3];
    for (i, (task, want, write)) in passes.into_iter().enumerate() {
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        let body = move || {
            let mut t = KernelTouch { m, buddy };
            for p in 0..n {
                let a = base + p * 4096;
                if t.read(task, a) == Ok(want(number, p)) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(w) = write {
                    let _ = t.write(task, a, w(number, p));
                }
                if p % scenario::TURN == 0 {
                    sched::yield_now();
                }
            }
        };
        if sched::spawn("fork", Some(task), body).is_err() {
            return false;
        }
        let ended = sched::run(activate);
        seen[i] = count.load(Ordering::Relaxed);
        if ended.iter().any(|e| e.exit != Exit::Done) {
            kprintln!("{}: fork: a thread ended badly: {:?}", label, ended);
            return false;
        }
    }
    unload();
    let after = m.figures(0).faults;
    let cow = (after.cow_copied + after.cow_reused) - (before.cow_copied + before.cow_reused);
    let ok = seen == [n; 3] && cow > 0;
    kprintln!(
        "{}: fork: the child saw {} of the parent's {} pages, wrote its own over them ({} copy-on-write faults) and read back {}; the parent's are unchanged: {}; intact: {}",
        label,
        seen[0],
        n,
        cow,
        seen[1],
        seen[2],
        ok
    );
    ok
}
