//! The `smp` scenario: every CPU runs threads of the one run queue.
//!
//! 0. Scaling: four tasks fault half the RAM in, on 1, 2, 4 ... CPUs in
//!    turn (the median of three runs each); pages faulted per second, as
//!    a ratio to one CPU.
//! 1. Two tasks per CPU write three times the RAM in per-page patterns and
//!    check every page, with `kswapd` and direct reclaim running on
//!    whichever CPUs are free, while the tasks fault on the others.
//! 2. The first task forks; the child's thread and then the parent's check
//!    copy-on-write, on whichever CPU picks them up.
//! 3. One space, four threads on four CPUs (fewer if there are fewer): `churn` unmaps a region,
//!    maps it afresh and writes a generation number into it, and changes
//!    its protection back and forth; `reader` reads the region after each
//!    generation and must see that generation (a TLB entry the shootdown
//!    missed would show it the previous one, or whatever reused its
//!    frames); `writer` faults in and checks its own region of the same
//!    space all the while, and `forker` forks the space again and again
//!    and checks that the child's copy of `writer`'s pages holds nothing
//!    written after the fork (the parent's pages are write-protected by
//!    fork, and a writable TLB entry left on `writer`'s CPU would let its
//!    later writes into the frames the child shares).
//! 4. Every CPU reports what it did (faults, thread switches, timer ticks,
//!    shootdowns and their interrupts, frames in its mm-buddy cache and
//!    objects in its mm-slab caches, and how those caches served its
//!    allocations and frees: hits, refills, drains) and drains its caches.

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mm_buddy::PcpStats;
use mm_slab::CpuSlabStats;
use mm_types::VirtAddr;
use mm_vma::{MapRequest, Placement, Protection};
use mm_wiring::scenario::{self, Touch};

use super::{activate, kill_all, machine, report, run_workers, unload, workers, KMachine, KernelTouch};
use crate::frames::Frames;
use crate::percpu::{self, MAX_CPUS};
use crate::sched::{self, Exit};
use crate::{clock, kprintln};

/// Pages of the region `churn` remaps.
const CHURN_PAGES: u64 = 16;
/// Generations `churn` maps.
const ROUNDS: u64 = 200;
/// Pages `writer` keeps writing meanwhile.
const WRITER_PAGES: u64 = 64;
/// Forks `forker` makes of the shared space (each costs the writer a
/// copy-on-write fault per page, and each of those a shootdown).
const FORKS: u64 = 8;

/// `smp`: see the module documentation.
pub fn smp(buddy: &'static Frames, ram_end: u64) -> bool {
    let cpus = percpu::online();
    sched::set_cpus((1u64 << cpus) - 1);
    let ram = buddy.free_frame_count();
    let Some(m) = machine(buddy, ram_end, 4 * ram, (ram as usize * 4096) / 8) else {
        kprintln!("smp: cannot set up the machine");
        return false;
    };
    let scaling_ok = scaling(m, buddy, cpus, ram);
    let tasks = 2 * cpus;
    let pages = scenario::pressure_pages(tasks, ram);
    let Some(ws) = workers(m, buddy, &pages) else {
        kprintln!("smp: cannot create the tasks");
        return false;
    };
    let total: u64 = pages.iter().sum();
    kprintln!("smp: {} CPUs; {} tasks writing {} pages ({} frames free)", cpus, tasks, total, ram);
    let first = ws[0];
    crate::profile::reset();
    let start = clock::now_ms();
    let (out, ended) = run_workers(m, buddy, ws);
    let ms = (clock::now_ms() - start).max(1);
    kprintln!(
        "smp: written {} verified {} corrupt {} errors {}; {} threads ended; {} ms, {} pages written per second",
        out.written,
        out.verified,
        out.corrupt,
        out.errors,
        ended.len(),
        ms,
        out.written * 1000 / ms
    );
    report("smp", m, buddy);
    crate::profile::report("smp", ms);
    let f = m.figures(buddy.free_frame_count());
    let mut ok =
        scaling_ok && out.corrupt == 0 && out.errors == 0 && out.verified == out.written && out.written == total;
    ok &= ended.iter().all(|e| e.exit == Exit::Done) && f.swapped_out > 0 && f.faults.swap_in > 0;
    ok &= super::pressure::fork_check("smp", m, buddy, &first);
    ok &= m.device.swap().check().is_ok();
    let clean = m.check_clean_cache();
    kprintln!("smp: clean swap-cache pages match their slots: {}", clean.is_ok());
    ok &= clean.is_ok();
    kill_all(m);
    ok &= shared_space(m, buddy, cpus);
    ok &= per_cpu_report(buddy, cpus);
    sched::set_cpus(1);
    kprintln!("smp: data intact: {}", ok);
    ok
}

/// Tasks in the scaling runs.
const SCALING_TASKS: usize = 4;

/// Runs of each CPU count in the scaling part (the median is reported).
const SCALING_RUNS: usize = 3;

/// Part 0: the same fault-heavy workload (four tasks each map and write a
/// quarter of half the free RAM: demand-zero faults, no reclaim) on 1, 2,
/// 4 ... CPUs, after one unmeasured run on all of them (the first run
/// pays for growing the heap and for QEMU translating the code); the
/// median of three runs each, in pages faulted per second on the kernel's
/// clock, and the ratio to one CPU. Whether every page was right.
fn scaling(m: &'static KMachine, buddy: &'static Frames, cpus: usize, ram: u64) -> bool {
    let per_task = ram / 2 / SCALING_TASKS as u64;
    let pages = per_task * SCALING_TASKS as u64;
    let mut ok = fault_run(m, buddy, cpus, per_task).is_some();
    let mut base = 0;
    let mut n = 1;
    while n <= cpus {
        let mut runs = [0u64; SCALING_RUNS];
        for r in runs.iter_mut() {
            match fault_run(m, buddy, n, per_task) {
                Some(us) => *r = us,
                None => ok = false,
            }
        }
        runs.sort_unstable();
        let us = runs[SCALING_RUNS / 2].max(1);
        let rate = pages * 1_000_000 / us;
        if n == 1 {
            base = rate.max(1);
        }
        kprintln!(
            "smp: scaling: {} CPU(s): {} pages faulted in {} us (median of {}: {:?}), {} per second, {}.{:02} times 1 CPU",
            n,
            pages,
            us,
            SCALING_RUNS,
            runs,
            rate,
            rate / base,
            rate * 100 / base % 100
        );
        n *= 2;
    }
    sched::set_cpus((1u64 << cpus) - 1);
    ok
}

/// One scaling run on the first `n` CPUs: [`SCALING_TASKS`] tasks map and
/// write `per_task` pages each, then read them back; its time in
/// microseconds, or `None` if a page was wrong or a thread ended badly.
fn fault_run(m: &'static KMachine, buddy: &'static Frames, n: usize, per_task: u64) -> Option<u64> {
    sched::set_cpus((1u64 << n) - 1);
    let right = Arc::new(AtomicU64::new(0));
    let mut ids = Vec::new();
    let mut spawned = true;
    for k in 0..SCALING_TASKS {
        let id = m.spawn().ok()?;
        ids.push(id);
        let right = right.clone();
        let body = move || {
            let mut t = KernelTouch { m, buddy };
            let Ok(at) = t.map(id, per_task * 4096) else { return };
            for p in 0..per_task {
                let _ = t.write(id, at + p * 4096, scenario::pattern(k, p));
                if p % scenario::TURN == scenario::TURN - 1 {
                    sched::yield_now();
                }
            }
            let good = (0..per_task).filter(|&p| t.read(id, at + p * 4096) == Ok(scenario::pattern(k, p))).count();
            right.fetch_add(good as u64, Ordering::Relaxed);
        };
        spawned &= sched::spawn("scale", Some(id), body).is_ok();
    }
    let start = clock::now_us();
    let ended = sched::run(activate);
    let us = clock::now_us() - start;
    unload();
    for id in ids {
        m.kill(id);
    }
    let good = spawned
        && right.load(Ordering::Relaxed) == per_task * SCALING_TASKS as u64
        && ended.iter().all(|e| e.exit == Exit::Done);
    if !good {
        kprintln!("smp: scaling: a run on {} CPU(s) went wrong: {} pages right", n, right.load(Ordering::Relaxed));
    }
    good.then_some(us)
}

/// Part 3: `churn`, `reader` and `writer` in one space on three CPUs.
fn shared_space(m: &'static KMachine, buddy: &'static Frames, cpus: usize) -> bool {
    let Ok(id) = m.spawn() else {
        kprintln!("smp: no space for the shared-space threads");
        return false;
    };
    let shots = total(|c| c.shootdowns.load(Ordering::Relaxed));
    let generation = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let stale = Arc::new(AtomicU64::new(0));
    let writer_bad = Arc::new(AtomicU64::new(0));
    let churn_failed = Arc::new(AtomicBool::new(false));
    let space = move || m.tasks.get(id).expect("the shared space lives until the end");
    let Ok(region) = space().lock().mmap(scenario::anon_rw(CHURN_PAGES * 4096)) else { return false };

    let (g, a, failed) = (generation.clone(), acked.clone(), churn_failed.clone());
    let churn = move || {
        let mut t = KernelTouch { m, buddy };
        for round in 1..=ROUNDS {
            let s = space();
            let remapped = {
                let mut s = s.lock();
                let fresh = MapRequest::anonymous(CHURN_PAGES * 4096, Protection::READ | Protection::WRITE)
                    .at(Placement::Fixed(region));
                s.munmap(region, CHURN_PAGES * 4096).and_then(|()| s.mmap(fresh))
            };
            let written = remapped.is_ok_and(|at| at == region)
                && (0..CHURN_PAGES).all(|p| t.write(id, region + p * 4096, round).is_ok());
            // Read-only and back: two more changes every CPU with the
            // space loaded must see.
            let reprotected = {
                let mut s = s.lock();
                s.mprotect(region, CHURN_PAGES * 4096, Protection::READ)
                    .and_then(|()| s.mprotect(region, CHURN_PAGES * 4096, Protection::READ | Protection::WRITE))
                    .is_ok()
            };
            if !written || !reprotected {
                failed.store(true, Ordering::Relaxed);
                g.store(ROUNDS, Ordering::Release);
                return;
            }
            g.store(round, Ordering::Release);
            while a.load(Ordering::Acquire) < round {
                sched::yield_now();
            }
        }
    };
    let (g, a, bad, fin) = (generation.clone(), acked.clone(), stale.clone(), done.clone());
    let reader = move || {
        let mut t = KernelTouch { m, buddy };
        let mut seen = 0;
        while seen < ROUNDS {
            let now = g.load(Ordering::Acquire);
            if now == seen {
                sched::yield_now();
                continue;
            }
            for p in 0..CHURN_PAGES {
                if t.read(id, region + p * 4096) != Ok(now) {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
            seen = now;
            a.store(now, Ordering::Release);
        }
        // The writer stops once the last generation was checked.
        fin.store(true, Ordering::Release);
    };
    // Where `writer`'s pages are (0 until mapped), and the passes it has
    // completed.
    let writer_at = Arc::new(AtomicU64::new(0));
    let writer_passes = Arc::new(AtomicU64::new(0));
    let (fin, bad, at, passes) = (done.clone(), writer_bad.clone(), writer_at.clone(), writer_passes.clone());
    let writer = move || {
        let mut t = KernelTouch { m, buddy };
        let Ok(mine) = t.map(id, WRITER_PAGES * 4096) else {
            bad.fetch_add(1, Ordering::Relaxed);
            fin.store(true, Ordering::Release);
            return;
        };
        at.store(mine.as_u64(), Ordering::Release);
        let mut pass = 0u64;
        while !fin.load(Ordering::Acquire) || pass < 2 {
            pass += 1;
            for p in 0..WRITER_PAGES {
                let _ = t.write(id, mine + p * 4096, pass ^ scenario::pattern(7, p));
            }
            passes.store(pass, Ordering::Release);
            for p in 0..WRITER_PAGES {
                if t.read(id, mine + p * 4096) != Ok(pass ^ scenario::pattern(7, p)) {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
            sched::yield_now();
        }
    };
    // `forker` forks the space while `writer` writes it on another CPU.
    // Fork write-protects the parent's pages, and every CPU that has the
    // space loaded must drop its writable entries before fork returns:
    // a write through one left behind would land in the frame the child
    // now shares. So each of the child's pages must hold a pass no later
    // than the one `writer` was in when fork returned, even after the
    // writer has done two more.
    let forks = Arc::new(AtomicU64::new(0));
    let fork_bad = Arc::new(AtomicU64::new(0));
    let (fin, at, passes, forked, bad) =
        (done.clone(), writer_at.clone(), writer_passes.clone(), forks.clone(), fork_bad.clone());
    let forker = move || {
        let mut t = KernelTouch { m, buddy };
        // Forks start once `writer` has written its pages once.
        while passes.load(Ordering::Acquire) == 0 && !fin.load(Ordering::Acquire) {
            sched::yield_now();
        }
        let base = VirtAddr::new(at.load(Ordering::Acquire)).expect("a user address");
        while !fin.load(Ordering::Acquire) && forked.load(Ordering::Relaxed) < FORKS {
            let Ok(child) = m.fork(id) else {
                bad.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let then = passes.load(Ordering::Acquire);
            while passes.load(Ordering::Acquire) < then + 2 && !fin.load(Ordering::Acquire) {
                sched::yield_now();
            }
            for p in 0..WRITER_PAGES {
                // 0: a page `writer` had not written when the space was
                // forked (pass 0); else the pass that wrote it.
                let pass = t.read(child, base + p * 4096).map(|v| if v == 0 { 0 } else { v ^ scenario::pattern(7, p) });
                let wrong = pass.is_err() || pass.is_ok_and(|pass| pass > then + 1);
                if wrong && bad.fetch_add(1, Ordering::Relaxed) == 0 {
                    kprintln!(
                        "smp: forker: the child's page {} holds pass {:?}, written after the fork (writer was in pass {})",
                        p,
                        pass,
                        then + 1
                    );
                }
            }
            unload();
            m.kill(child);
            forked.fetch_add(1, Ordering::Relaxed);
            sched::yield_now();
        }
    };
    let on = |k: usize| Some(k % cpus);
    let spawned = sched::spawn_on(on(1), "churn", Some(id), churn).is_ok()
        && sched::spawn_on(on(2), "reader", Some(id), reader).is_ok()
        && sched::spawn_on(on(3), "writer", Some(id), writer).is_ok()
        && sched::spawn_on(on(4), "forker", None, forker).is_ok();
    let start = clock::now_ms();
    let ended = sched::run(activate);
    unload();
    let ms = clock::now_ms() - start;
    let shots = total(|c| c.shootdowns.load(Ordering::Relaxed)) - shots;
    let (stale, writer_bad, failed) =
        (stale.load(Ordering::Relaxed), writer_bad.load(Ordering::Relaxed), churn_failed.load(Ordering::Relaxed));
    let (forks, fork_bad) = (forks.load(Ordering::Relaxed), fork_bad.load(Ordering::Relaxed));
    kprintln!(
        "smp: shared space: {} generations remapped and reprotected in {} ms; stale reads {}, writer pages wrong {}, {} forks with {} child pages wrong, shootdowns {}; churn failed: {}",
        generation.load(Ordering::Relaxed),
        ms,
        stale,
        writer_bad,
        forks,
        fork_bad,
        shots,
        failed
    );
    // With fewer than three CPUs the reader's CPU goes idle (and leaves the
    // space) while it waits, so shootdowns may not be needed.
    let ok = spawned && !failed && stale == 0 && writer_bad == 0 && (shots > 0 || cpus < 3);
    let ok = ok && forks > 0 && fork_bad == 0;
    let ok = ok && ended.iter().all(|e| e.exit == Exit::Done);
    m.kill(id);
    kprintln!("smp: shared space: munmap and mprotect raced faults on other CPUs safely: {}", ok);
    ok
}

/// The sum of a counter over every CPU.
fn total(f: impl Fn(&percpu::Counters) -> u64) -> u64 {
    (0..MAX_CPUS).map(|i| f(&percpu::cpu(i).counters)).sum()
}

/// Part 4: a thread on each CPU reads that CPU's caches (only the owner
/// reaches them: the allocators trust the pinned contract) and drains
/// them; then every CPU's figures.
fn per_cpu_report(buddy: &'static Frames, cpus: usize) -> bool {
    type Caches = (usize, u64, usize, PcpStats, CpuSlabStats);
    let caches: Arc<spin::Mutex<Vec<Caches>>> = Arc::new(spin::Mutex::new(Vec::new()));
    let flushed = Arc::new(AtomicBool::new(true));
    for cpu in 0..cpus {
        let (out, flushed) = (caches.clone(), flushed.clone());
        let body = move || {
            let me = percpu::index();
            let frames = buddy.cpu_cached_frames(me);
            let objects: usize = crate::heap::heap().stats().map(|s| s.cpu_free_objects).sum();
            let (pcp, slab) = (buddy.cpu_pcp_stats(me), crate::heap::heap().cpu_stats(me));
            out.lock().push((me, frames, objects, pcp, slab));
            buddy.drain_local();
            if let Err(e) = crate::heap::heap().flush_local() {
                kprintln!("smp: flushing the slab caches of CPU {}: {}", percpu::index(), e);
                flushed.store(false, Ordering::Relaxed);
            }
        };
        if sched::spawn_on(Some(cpu), "drain", None, body).is_err() {
            return false;
        }
    }
    let ended = sched::run(activate);
    let mut caches = caches.lock().clone();
    caches.sort_by_key(|c| c.0);
    kprintln!("smp: per CPU: faults, switches, timer ticks, shootdowns sent, NMIs sent/received, shootdown wait us, disk lock waits/us, buddy cache frames, slab cache objects");
    let mut all_busy = true;
    for &(cpu, frames, objects, pcp, slab) in &caches {
        let c = &percpu::cpu(cpu).counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        kprintln!(
            "smp:   cpu {}: {} {} {} {} {}/{} {} {}/{} {} {}",
            cpu,
            get(&c.faults),
            get(&c.switches),
            get(&c.ticks),
            get(&c.shootdowns),
            get(&c.ipis_sent),
            get(&c.ipis_received),
            get(&c.shootdown_wait_us),
            get(&c.lock_waits),
            get(&c.lock_wait_us),
            frames,
            objects
        );
        kprintln!("smp:     buddy cache: {}", pcp);
        kprintln!("smp:     slab caches: {}", slab);
        all_busy &= get(&c.faults) > 0 && get(&c.switches) > 0 && get(&c.ipis_received) > 0;
        all_busy &= pcp.alloc_hits > 0 && slab.alloc_hits > 0;
    }
    let ok = caches.len() == cpus && ended.iter().all(|e| e.exit == Exit::Done) && flushed.load(Ordering::Relaxed);
    kprintln!("smp: every CPU faulted, switched, took shootdowns and hit its buddy and slab caches: {}", all_busy);
    ok && all_busy
}
