//! The reference kernel's scenarios on the host simulation: the same
//! wiring, driven through mm-vma's user-access functions.

use mm_wiring::scenario::{self, Touch};
use mm_wiring::sim::{Sim, SimConfig};

fn small() -> bool {
    cfg!(miri)
}

/// Tasks touching three times RAM: every page comes back intact, pages
/// really went to swap and back, and reclaim did the work. One task alone
/// too: its faults must be able to reclaim its own pages (the fault lets
/// go of its space, reclaims and retries). The first run of this test
/// found that reclaim run inside a fault could drop the page being swapped
/// in (84 of 768 pages came back wrong); reclaim now runs with no space in
/// use, and a swap-in in flight is protected from reclaim in any case.
#[test]
fn pressure_keeps_every_page() {
    // 1 MiB of RAM (256 frames), 3 MiB of task memory; under miri 96 KiB.
    let ram = if small() { 96 << 10 } else { 1 << 20 };
    let counts: &[usize] = if small() { &[1] } else { &[1, 2, 3, 4] };
    for &n in counts {
        let mut sim = Sim::new(SimConfig { ram, swap_slots: 4096, second_area: 0, zswap: None });
        let tasks = sim.spawn(n);
        let out = scenario::pressure(&mut sim, &tasks, ram / 4096);
        let f = sim.figures();
        eprintln!("pressure, {n} tasks: {out:?}\n{f:?}");
        assert_eq!(out.written, (3 * ram / 4096 / n as u64) * n as u64);
        assert_eq!((out.corrupt, out.errors), (0, 0), "{n} tasks: {out:?}");
        assert_eq!(out.verified, out.written);
        assert!(out.killed.is_empty());
        assert!(f.swapped_out > 0 && f.swap_reads > 0, "{f:?}");
        assert!(f.faults.swap_in > 0 && f.faults.demand_zero >= out.written);
        assert!(f.reclaim_passes > 0 && f.refaults > 0);
        // Every task ends: every frame and slot comes back.
        for t in tasks {
            assert!(sim.machine.kill(t));
        }
        assert_eq!(sim.machine.device.swap().used_slots(), 0);
        assert_eq!(sim.machine.device.shadows(), 0);
        sim.machine.device.swap().check().unwrap();
        sim.machine.reclaim().check().unwrap();
        // Pages read ahead and never mapped may still sit in the swap
        // cache: reclaim takes them like any other page.
        sim.machine.reclaim_now(u64::MAX);
        assert_eq!(sim.machine.mm.tracked_frames(), 0);
        // What remains allocated: the zero page.
        assert_eq!(sim.free(), sim.total - 1);
    }
}

/// The same through the compressed tier: most pages never reach the disk.
#[test]
#[cfg_attr(miri, ignore = "LZ4 interpreted is slow; mm-swap's own zswap tests run under miri")]
fn pressure_through_zswap() {
    let ram = if small() { 256 << 10 } else { 1 << 20 };
    let mut sim = Sim::new(SimConfig { ram, swap_slots: 4096, second_area: 0, zswap: Some(64 << 10) });
    let tasks = sim.spawn(3);
    let out = scenario::pressure(&mut sim, &tasks, ram / 4096);
    assert_eq!((out.corrupt, out.errors, out.verified), (0, 0, out.written), "{out:?}");
    let z = sim.zswap.as_ref().unwrap().stats();
    assert!(z.stored > 0 && z.loads > 0, "{z:?}");
    sim.zswap.as_ref().unwrap().check().unwrap();
}

/// No swap, one task far bigger than RAM: the OOM killer picks it, the
/// others finish with their data.
#[test]
fn oom_kills_the_biggest() {
    let ram = if small() { 256 << 10 } else { 1 << 20 };
    let frames = ram / 4096;
    let mut sim = Sim::new(SimConfig { ram, swap_slots: 0, second_area: 0, zswap: None });
    let tasks = sim.spawn(3);
    let small_task = frames / 8;
    let out = scenario::oom(&mut sim, &[tasks[0], tasks[1], tasks[2]], frames);
    assert_eq!(out.killed, vec![1], "{out:?}");
    assert_eq!((out.corrupt, out.errors), (0, 0));
    assert_eq!(out.verified, 2 * small_task);
    assert_eq!(sim.figures().oom_kills, 1);
    assert_eq!(sim.machine.tasks.ids().len(), 2);
}

/// A forked task's pages shared with its parent go to swap once and come
/// back to both.
#[test]
fn forked_pages_swap_once_for_both() {
    let mut sim = Sim::new(SimConfig { ram: 512 << 10, swap_slots: 1024, second_area: 0, zswap: None });
    let parent = sim.spawn(1)[0];
    let base = sim.map(parent, 32 * 4096).unwrap();
    for p in 0..32 {
        sim.write(parent, base + p * 4096, scenario::pattern(0, p)).unwrap();
    }
    let child = {
        let s = sim.machine.tasks.get(parent).unwrap();
        let c = s.lock().fork().unwrap();
        let id = c.id();
        drop(c);
        id
    };
    let _ = child;
    // Evict everything the parent has.
    let p = sim.machine.reclaim_now(64);
    assert!(p.reclaimed() > 0, "{p:?}");
    let s = sim.machine.tasks.get(parent).unwrap();
    assert!(s.lock().counts().swapped > 0);
    drop(s);
    for p in 0..32 {
        assert_eq!(sim.read(parent, base + p * 4096), Ok(scenario::pattern(0, p)));
    }
    sim.machine.device.swap().check().unwrap();
}

/// swapoff of the area holding the tasks' pages: every page is faulted
/// back in (reclaim writes others to the second area to make room), the
/// area goes, and every page still reads right.
#[test]
fn swapoff_moves_every_page() {
    let ram: u64 = if small() { 96 << 10 } else { 512 << 10 };
    let frames = ram / 4096;
    let mut sim = Sim::new(SimConfig { ram, swap_slots: 4 * frames, second_area: 4 * frames, zswap: None });
    let tasks = sim.spawn(2);
    // Two times RAM: about half of it in swap, all in area 0 (priority 0).
    let out = scenario::run(&mut sim, &tasks, &[frames, frames]);
    assert_eq!((out.corrupt, out.errors), (0, 0));
    let swap = sim.machine.device.swap().clone();
    assert!(swap.area_used(0).unwrap() > frames / 2);
    assert_eq!(swap.area_used(1), Ok(0));
    sim.machine.swapoff(0).unwrap();
    assert!(matches!(swap.area_used(0), Err(mm_swap::SwapError::NoArea(0))));
    assert!(swap.area_used(1).unwrap() > 0, "pages moved to the other area");
    for (i, &t) in tasks.iter().enumerate() {
        let base = {
            let s = sim.machine.tasks.get(t).unwrap();
            let g = s.lock();
            let v = g.vmas().iter().next().unwrap();
            v.start
        };
        for p in 0..frames {
            let v = scenario::pattern(i, p);
            assert_eq!(sim.read(t, base + p * 4096), Ok(v), "task {i} page {p}");
            assert_eq!(sim.read(t, base + p * 4096 + 4088), Ok(!v));
        }
    }
    swap.check().unwrap();
}

/// A worker's turns: it writes [`scenario::TURN`] pages a turn, waits in
/// `Written` (checking nothing) until told every worker has written, then
/// checks a turn's worth of pages at a time and finds them intact.
#[test]
fn worker_checks_only_after_every_worker_wrote() {
    use scenario::{Step, Worker, TURN};
    let mut sim = Sim::new(SimConfig { ram: 256 << 10, swap_slots: 256, second_area: 0, zswap: None });
    let tasks = sim.spawn(1);
    let mut w = Worker::new(&mut sim, 0, tasks[0], 2 * TURN + 1).unwrap();
    assert_eq!(w.step(), Step::Writing);
    assert_eq!(w.turn(&mut sim, true), Ok(Step::Writing));
    assert_eq!(w.written, TURN);
    w.turn(&mut sim, false).unwrap();
    assert_eq!(w.turn(&mut sim, false), Ok(Step::Written));
    assert_eq!(w.written, 2 * TURN + 1);
    // Not told to check yet: nothing happens, however often it runs.
    assert_eq!(w.turn(&mut sim, false), Ok(Step::Written));
    assert_eq!(w.checked, 0);
    assert_eq!(w.turn(&mut sim, true), Ok(Step::Verifying));
    assert_eq!(w.checked, TURN);
    w.turn(&mut sim, true).unwrap();
    assert_eq!(w.turn(&mut sim, true), Ok(Step::Done));
    assert_eq!((w.verified, w.corrupt, w.errors), (2 * TURN + 1, 0, 0));
    // A page overwritten behind its back is caught.
    let mut v = Worker::new(&mut sim, 0, tasks[0], 1).unwrap();
    v.turn(&mut sim, false).unwrap();
    sim.write(tasks[0], v.base + 4088, 7).unwrap();
    assert_eq!(v.turn(&mut sim, true), Ok(Step::Done));
    assert_eq!((v.verified, v.corrupt), (0, 1));
}
