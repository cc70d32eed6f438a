//! The `user` scenario: ring 3 programs over their own address spaces.

extern crate alloc;

use alloc::vec::Vec;

use mm_types::VirtAddr;
use mm_vma::SpaceId;
use mm_wiring::scenario;
use mm_wiring::scenario::Touch;

use super::{activate, end_task, kill_all, machine, report, spawn_kswapd, unload, KMachine, KernelTouch};
use crate::frames::Frames;
use crate::sched::Exit;
use crate::user::Program;
use crate::{kprintln, sched, user};

/// Starts a ring 3 thread in a new task running `program` over a fresh
/// region of `pages` pages (at least one): its arguments are the region's
/// address, `pages` and `seed`. Returns the task and the region.
fn spawn_user(m: &'static KMachine, program: Program, pages: u64, seed: u64) -> Option<(SpaceId, VirtAddr)> {
    let id = m.spawn().ok()?;
    let base = m.tasks.get(id)?.lock().mmap(scenario::anon_rw(pages.max(1) * 4096)).ok()?;
    let at = user::load(m, id, program)?;
    let name = match program {
        Program::PatternWriter => "writer",
        Program::KernelReader => "reader",
        Program::Halter => "halter",
        Program::Spinner => "spinner",
    };
    // SAFETY: the scheduler loads task `id` before the thread runs, `at` was loaded into it, and the
    // thread's stack holds nothing but this closure's frames.
    let body = move || unsafe { user::enter(at, [base.as_u64(), pages, seed]) };
    sched::spawn(name, Some(id), body).ok()?;
    Some((id, base))
}

/// `user`: three tasks run a ring 3 program that writes twice the RAM
/// between them in per-page patterns (mm-wiring's `scenario::pattern`),
/// yielding with a system call every 16 pages, then checks its pages and
/// exits with the number found intact. Their page faults come from user
/// mode: demand zero, swap-in. A fourth task's program reads kernel memory
/// and must be ended by its page fault; a fifth's halts the CPU with a
/// non-canonical stack pointer and must be ended by the general protection
/// fault; a sixth's spins without a system call, so only the timer lets
/// the others run, and it is killed when they are done. Afterwards the
/// kernel reads a sample of every task's pages itself.
pub fn user(buddy: &'static Frames, ram_end: u64) -> bool {
    let ram = buddy.free_frame_count();
    let Some(m) = machine(buddy, ram_end, 4 * ram, (ram as usize * 4096) / 8) else { return false };
    let per = 2 * ram / 3;
    let mut writers = Vec::new();
    for i in 0..3 {
        let Some((id, base)) = spawn_user(m, Program::PatternWriter, per, (i as u64 + 1) << 48) else {
            kprintln!("user: cannot start task {}", i);
            return false;
        };
        writers.push((i, id, base));
    }
    let Some((reader, _)) = spawn_user(m, Program::KernelReader, 0, 0) else { return false };
    let Some((halter, _)) = spawn_user(m, Program::Halter, 0, 0) else { return false };
    let Some((spinner, _)) = spawn_user(m, Program::Spinner, 0, 0) else { return false };
    kprintln!(
        "user: 3 ring 3 tasks writing {} pages each ({} frames free); one reading kernel memory, one halting the CPU, one spinning without system calls",
        per,
        ram
    );
    // The spinner never gives up the CPU: only the timer lets the others
    // run. When the writers are done, this thread ends it.
    let reaper = move || {
        while sched::alive("writer") > 0 {
            sched::yield_now();
        }
        end_task(spinner);
        sched::kill_space(spinner, Exit::Killed);
    };
    if sched::spawn("reaper", None, reaper).is_err() {
        return false;
    }
    let preempted = crate::interrupts::preemptions();
    spawn_kswapd(m, buddy);
    let start = crate::clock::now_ms();
    let ended = sched::run(activate);
    let ms = (crate::clock::now_ms() - start).max(1);
    let exit = |id: SpaceId| sched::exit_of(&ended, id).unwrap_or(Exit::Done);
    let mut ok = true;
    let mut t = KernelTouch { m, buddy };
    for &(i, id, base) in &writers {
        let e = exit(id);
        let sample: Vec<u64> = (0..per).step_by(61).collect();
        let right = sample.iter().filter(|&&p| t.read(id, base + p * 4096) == Ok(scenario::pattern(i, p))).count();
        kprintln!("user: task {}: {}; the kernel checked {} of a sample of {} pages", id.0, e, right, sample.len());
        ok &= e == Exit::Exited { status: per } && right == sample.len();
    }
    unload();
    let preempted = crate::interrupts::preemptions() - preempted;
    kprintln!("user: the timer preempted ring 3 {} times", preempted);
    ok &= preempted > 0;
    for (what, id, want) in [
        ("the kernel reader", reader, Exit::Fault { vector: 14, addr: 0x10_0000 }),
        ("the halter", halter, Exit::Fault { vector: 13, addr: 0 }),
        ("the spinner", spinner, Exit::Killed),
    ] {
        let (e, gone) = (exit(id), m.tasks.get(id).is_none());
        kprintln!("user: {}: {}; its task is gone: {}", what, e, gone);
        ok &= e == want && gone;
    }
    report("user", m, buddy);
    let f = m.figures(buddy.free_frame_count());
    kprintln!("user: {} ms; swapped out {}, swapped in {}", ms, f.swapped_out, f.faults.swap_in);
    ok &= f.swapped_out > 0 && f.faults.swap_in > 0 && m.device.swap().check().is_ok();
    kill_all(m);
    kprintln!("user: every ring 3 task found its pages intact and the bad ones were contained: {}", ok);
    ok
}
