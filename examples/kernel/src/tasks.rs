//! Tasks over mm-wiring's `Machine`: each task has its own address space
//! (mm-vma, its own page tables loaded into CR3 when it runs), user pages
//! come through mm-wiring's tracked frames (mm-reclaim's lists, direct
//! reclaim), swap goes through mm-swap, and the CPU's page faults in a
//! task's range go to mm-vma's fault handler ([`handle_fault`]).
//!
//! Each task runs mm-wiring's workload (`scenario::Worker`) in a kernel
//! thread of the scheduler (`sched.rs`), yielding between turns; the
//! scheduler loads the task's page tables into CR3 before it runs. The
//! thread writes task memory with plain loads and stores, which fault into
//! mm-vma exactly where the host simulation calls `write_user`. Background
//! reclaim is a thread too (`kswapd`); direct reclaim and the OOM killer run
//! in the fault handler, which ends the faulting thread when its own task is
//! the victim.
//!
//! Swap goes to the virtio-blk disk (`disk.rs`) when QEMU has one (the
//! xtask always attaches it); without one, to compressed memory (mm-swap's
//! `zswap` tier over a store with no device behind it, as Linux's zram
//! does).

extern crate alloc;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mm_paging::X86_64;
use mm_reclaim::{Level, Mode, Reclaim, S3Fifo, Shrinker, Shrunk};
use mm_swap::zswap::{Compressed, ZswapConfig};
use mm_swap::{Swap, SwapConfig};
use mm_types::{BackingStore, DirectMap, PhysAddr, Protection, StoreError, StoreErrorKind, StoreOp, Zone, SLOT_SIZE};
use mm_vma::{FaultError, Hooks, MapRequest, SpaceId};
use mm_wiring::scenario::{self, Outcome, Step, Touch, TouchError, Worker};
use mm_wiring::{Machine, PageIds};

use crate::frames::{self, Frames};
use crate::kprintln;
use crate::paging;
use crate::sched::{self, Ended, Exit};
use crate::user::{self, Program};
use crate::uspace::{self, LAYOUT};

/// The kernel's machine.
pub type KMachine = Machine<X86_64, DirectMap, &'static Frames, S3Fifo>;

static MACHINE: spin::Once<KMachine> = spin::Once::new();
/// The compressed swap tier when there is no disk (kept here to print its
/// figures).
static TIER: spin::Once<Compressed<NoDisk>> = spin::Once::new();
/// The swap disk.
static DISK: spin::Once<crate::disk::VirtioDisk> = spin::Once::new();
/// The task loaded in CR3 (0: none).
static LOADED: AtomicU32 = AtomicU32::new(0);

/// A store with no device: every access fails (the compressed tier in
/// front of it is the whole of swap until the disk is wired in).
struct NoDisk(u64);

impl BackingStore for NoDisk {
    fn slot_count(&self) -> u64 {
        self.0
    }
    fn read_slot(&self, slot: u64, _: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
        Err(StoreError::slot(StoreOp::Read, slot, StoreErrorKind::NotReady))
    }
    fn write_slot(&self, slot: u64, _: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
        Err(StoreError::slot(StoreOp::Write, slot, StoreErrorKind::NotReady))
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Free memory against the watermarks in the zone the kernel heap and page
/// tables come from: DMA32, all RAM below 4 GiB but the first 16 MiB.
/// Movable user pages fall back to the DMA zone only when DMA32 is empty,
/// which the limit below keeps from happening; a sum over the zones would
/// count the DMA zone's frames, which are too scattered for the heap's
/// slabs, and let user pages starve the heap.
fn level(buddy: &Frames) -> Level {
    let s = buddy.watermark_state(Zone::Dma32);
    let w = s.watermarks;
    Level { free: s.free, min: w.min, low: w.low, high: w.high }
}

/// Whether that zone has fewer than `margin` frames above its low
/// watermark.
fn short(buddy: &Frames, margin: u64) -> bool {
    let l = level(buddy);
    l.free < l.low + margin
}

/// The watermarks background reclaim works to. User pages stop at the
/// zone's low watermark (below it is the kernel's), so background reclaim
/// wakes above that: below the high watermark, and frees up to three times
/// the low-to-high gap above high. (Measured in `pressure` at 64 MiB: with
/// twice the gap, 1,323 direct reclaim runs, because four tasks' turns and
/// their swap-ins with readahead use more than that between two kswapd
/// runs; with three times, 4 runs and 17.7 s; with four times, 4 runs but
/// 22.7 s. Since only the fault path wakes kswapd: 0 runs, 13.1 s.)
fn kswapd_level(buddy: &Frames) -> Level {
    let l = level(buddy);
    let gap = l.high - l.low;
    Level { free: l.free, min: l.low, low: l.high, high: l.high + 3 * gap }
}

/// Builds the machine over `buddy` for RAM below `ram_end`, with a
/// compressed swap area of `slots` slots and a pool of `pool` bytes (no
/// swap if `slots` is 0).
fn machine(buddy: &'static Frames, ram_end: u64, slots: u64, pool: usize) -> Option<&'static KMachine> {
    let ids = PageIds { base: PhysAddr::ZERO, frames: (ram_end / 4096) as u32 };
    let swap = Arc::new(Swap::new(SwapConfig { cpus: 1, readahead: 3 }));
    if slots > 0 {
        match crate::disk::VirtioDisk::probe(buddy) {
            Some(disk) => {
                let disk = DISK.call_once(|| disk);
                swap.add_area(Box::new(disk), 0).ok()?;
            }
            None => {
                kprintln!("tasks: no swap disk; swapping to compressed memory");
                let config = ZswapConfig { pool_limit: pool, ..ZswapConfig::default() };
                let tier = TIER.call_once(|| Compressed::new(NoDisk(slots), config));
                swap.add_area(Box::new(tier), 0).ok()?;
            }
        }
    }
    let n = ids.frames as usize;
    let capacity = buddy.free_frame_count() as usize;
    let reclaim = Reclaim::new(
        mm_reclaim::default_policy(n, capacity, Mode::AccessedBits),
        mm_reclaim::default_policy(n, capacity, Mode::AccessedBits),
        n,
    );
    let root = paging::tables()?.lock().root();
    let m = Machine::new(buddy, ids, swap, reclaim, LAYOUT, |f, hooks| {
        let hooks = Hooks { tlb: Some(Arc::new(uspace::Tlb)), ..hooks };
        // SAFETY: CPL 0 (reading the paging mode); the kernel's tables live for the whole run and
        // their entries 0 and 256-511 never change.
        unsafe {
            mm_vma::MmContext::with_kernel_entries(
                X86_64::current(),
                frames::identity_map(),
                f,
                hooks,
                root,
                (0..1).chain(256..512),
            )
        }
    })
    .ok()?;
    // User pages stop at the low watermark: what lies below it is for the
    // kernel heap (page tables, the reverse map, the swap cache and the
    // compressed pool grow during faults and reclaim). A fault that finds
    // no page fails, and `handle_fault` reclaims and retries.
    m.frames.set_below_min(Box::new(move || short(buddy, 0)));
    m.reclaim().register_shrinker(Arc::new(HeapShrinker));
    let l = level(buddy);
    kprintln!("tasks: DMA32 watermarks min {} low {} high {} (frames)", l.min, l.low, l.high);
    Some(MACHINE.call_once(|| m))
}

/// The kernel heap (mm-slab's kmalloc) as a reclaim shrinker: its empty
/// slabs are objects to scan; a scan hands every empty slab back to
/// mm-buddy.
struct HeapShrinker;

fn heap_pages() -> u64 {
    crate::heap::heap().stats().map(|c| c.pages() as u64).sum()
}

impl Shrinker for HeapShrinker {
    fn name(&self) -> &'static str {
        "kmalloc"
    }

    fn count(&self) -> u64 {
        crate::heap::heap().stats().map(|c| c.empty_slabs as u64).sum()
    }

    fn scan(&self, _nr: u64) -> Shrunk {
        let before = heap_pages();
        let slabs = crate::heap::heap().shrink().unwrap_or(0) as u64;
        Shrunk { objects: slabs, frames: before.saturating_sub(heap_pages()) }
    }

    fn seeks(&self) -> u32 {
        // Empty slabs cost nothing to recreate but the allocation.
        1
    }
}

/// Loads task `id`'s page tables (if it is not loaded already).
fn load(m: &KMachine, id: SpaceId) -> Result<(), TouchError> {
    if LOADED.load(Ordering::SeqCst) == id.0 {
        return Ok(());
    }
    let s = m.tasks.get(id).ok_or(TouchError::Gone)?;
    let g = s.lock();
    // SAFETY: CPL 0; every task space shares the kernel's root entries for everything the kernel
    // touches, and the space lives in the task table until `kill` switches away from it.
    unsafe { g.page_table().activate() };
    uspace::set_loaded(id.0);
    LOADED.store(id.0, Ordering::SeqCst);
    Ok(())
}

/// Back to the kernel's own tables.
fn unload() {
    if LOADED.swap(0, Ordering::SeqCst) != 0 {
        let tables = paging::tables().expect("built at boot");
        // SAFETY: CPL 0; these are the tables the kernel booted on.
        unsafe { tables.lock().activate() };
        uspace::set_loaded(0);
    }
}

/// Times [`wake_kswapd`] woke the background reclaim thread.
static KSWAPD_WAKES: AtomicU64 = AtomicU64::new(0);

/// Wakes the background reclaim thread if free memory is below the level
/// it wakes at (Linux wakes kswapd in the allocator's slow path likewise).
/// Called before every fault of task memory.
fn wake_kswapd(buddy: &Frames) {
    let l = kswapd_level(buddy);
    if l.free < l.low && sched::wake("kswapd") {
        KSWAPD_WAKES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Called by the page-fault handler for addresses in the loaded task's
/// user range: mm-vma's fault handler, retried after direct reclaim (with
/// the space let go) when it runs out of memory. When reclaim frees
/// nothing, the OOM killer ends the biggest task; if that is the faulting
/// thread's own, the thread ends here ([`sched::exit`]). `None` if no task
/// is loaded or the address is not user memory.
pub fn handle_fault(addr: u64, error_code: u64) -> Option<Result<(), FaultError>> {
    let id = LOADED.load(Ordering::SeqCst);
    if id == 0 || !(LAYOUT.low..LAYOUT.high).contains(&addr) {
        return None;
    }
    let (m, buddy) = (MACHINE.get()?, frames::get()?);
    wake_kswapd(buddy);
    let access = uspace::access_of(error_code);
    let mut dry = 0;
    loop {
        // A fault while the space is in use would be a kernel bug. The
        // space is let go before reclaim, so reclaim can take its pages.
        let r = m.tasks.get(SpaceId(id))?.try_lock()?.fault(addr, access);
        if r != Err(FaultError::OutOfMemory) {
            return Some(r.map(|_| ()));
        }
        if m.reclaim_for_retry(&mut dry) {
            continue;
        }
        if sched::current().is_none() {
            return Some(r.map(|_| ()));
        }
        match oom_kill(m, buddy) {
            Some(victim) if victim.0 == id => sched::exit(Exit::OomKilled),
            Some(_) => dry = 0,
            None => return Some(r.map(|_| ())),
        }
    }
}

/// The OOM killer: ends the biggest task (its memory goes back at once, and
/// its waiting threads never run again). Returns the victim.
fn oom_kill(m: &KMachine, buddy: &Frames) -> Option<SpaceId> {
    // The victim's tables may be the loaded ones: leave them first, and
    // come back if the victim was another task.
    let loaded = LOADED.load(Ordering::SeqCst);
    unload();
    let victim = m.oom_kill(buddy.free_frame_count());
    if loaded != 0 && victim.is_none_or(|v| v.0 != loaded) {
        let _ = load(m, SpaceId(loaded));
    }
    let victim = victim?;
    sched::kill_space(victim, Exit::OomKilled);
    kprintln!("oom: killed task {} (the biggest)", victim.0);
    Some(victim)
}

/// Frees task `id`'s address space, leaving its tables first if they are
/// loaded. Used when a task dies.
pub fn end_task(id: SpaceId) {
    if LOADED.load(Ordering::SeqCst) == id.0 {
        unload();
    }
    if let Some(m) = MACHINE.get() {
        m.kill(id);
    }
}

/// Frames above the low watermark a task's access wants free: a page and
/// the page tables above it.
const MARGIN: u64 = 8;

/// The kernel's way of touching task memory, from the task's own thread
/// (its tables in CR3): a plain access, which faults into [`handle_fault`].
/// Before it, memory is reclaimed if it is short.
struct KernelTouch {
    m: &'static KMachine,
    buddy: &'static Frames,
}

impl KernelTouch {
    /// Direct reclaim ahead of an access while free memory is within
    /// [`MARGIN`] of the low watermark. When reclaim frees nothing the
    /// access goes ahead; its fault decides whether the OOM killer runs.
    fn reclaim_ahead(&self) {
        let mut dry = 0;
        while short(self.buddy, MARGIN) && self.m.reclaim_for_retry(&mut dry) {}
    }
}

impl Touch for KernelTouch {
    fn write(&mut self, task: SpaceId, addr: u64, value: u64) -> Result<(), TouchError> {
        self.reclaim_ahead();
        load(self.m, task)?;
        // SAFETY: `addr` is 8-aligned in the loaded task's mapped user range; a fault maps it (or ends the thread).
        unsafe { core::ptr::write_volatile(addr as *mut u64, value) };
        Ok(())
    }

    fn read(&mut self, task: SpaceId, addr: u64) -> Result<u64, TouchError> {
        self.reclaim_ahead();
        load(self.m, task)?;
        // SAFETY: as in `write`.
        Ok(unsafe { core::ptr::read_volatile(addr as *const u64) })
    }

    fn map(&mut self, task: SpaceId, len: u64) -> Result<u64, TouchError> {
        let s = self.m.tasks.get(task).ok_or(TouchError::Gone)?;
        let r = s.lock().mmap(scenario::anon_rw(len));
        r.map_err(|_| TouchError::Fault)
    }

    /// Nothing: background reclaim is the `kswapd` thread.
    fn tick(&mut self) {}

    /// Never called: no access here reports out of memory, because the
    /// fault handler runs the OOM killer itself.
    fn oom(&mut self, _task: SpaceId) -> Option<SpaceId> {
        None
    }
}

/// Loads a thread's space before it runs. Threads without one (kernel
/// threads) run on whatever tables are loaded, whose kernel half is the
/// same in all (Linux's lazy TLB mode).
fn activate(space: Option<SpaceId>) -> bool {
    let Some(m) = MACHINE.get() else { return space.is_none() };
    space.is_none_or(|id| load(m, id).is_ok())
}

/// Runs one thread per worker, plus `kswapd` and any threads already
/// spawned, until every thread has ended. Workers check their pages once
/// every live worker has written all of its own. Returns the workers'
/// outcome (killed ones by number) and how every thread ended.
fn run_workers(m: &'static KMachine, buddy: &'static Frames, workers: Vec<Worker>) -> (Outcome, Vec<Ended>) {
    let board = Arc::new(spin::Mutex::new(workers));
    let n = board.lock().len();
    for i in 0..n {
        let id = board.lock()[i].id;
        let mine = board.clone();
        let body = move || {
            let mut t = KernelTouch { m, buddy };
            loop {
                // The board's lock is never held across an access: a
                // thread may end in any fault, leaving its entry as it was
                // after its last turn (but its task gone).
                let verify = !mine.lock().iter().any(|w| w.still_writing() && m.tasks.get(w.id).is_some());
                let mut w = mine.lock()[i];
                w.killed |= w.turn(&mut t, verify).is_err();
                mine.lock()[i] = w;
                if w.killed || w.step() == Step::Done {
                    return;
                }
                sched::yield_now();
            }
        };
        if let Err(e) = sched::spawn("task", Some(id), body) {
            kprintln!("tasks: no thread for task {}: {}", id.0, e);
            board.lock()[i].killed = true;
        }
    }
    spawn_kswapd(m, buddy);
    let ended = sched::run(activate);
    unload();
    let mut out = Outcome::default();
    for w in board.lock().iter_mut() {
        w.killed |= sched::exit_of(&ended, w.id).is_some_and(|e| e != Exit::Done);
        out.add(w);
    }
    (out, ended)
}

/// Starts the background reclaim thread. It sleeps until [`wake_kswapd`]
/// wakes it, reclaims up to its high watermark, and sleeps again; it ends
/// when every other thread has.
fn spawn_kswapd(m: &'static KMachine, buddy: &'static Frames) {
    let kswapd = move || {
        while sched::others() > 0 {
            m.background(&mut || kswapd_level(buddy));
            sched::sleep();
        }
    };
    if let Err(e) = sched::spawn("kswapd", None, kswapd) {
        kprintln!("tasks: no kswapd thread: {}", e);
    }
}

/// Ends every task left at the end of a scenario.
fn kill_all(m: &KMachine) {
    for id in m.tasks.ids() {
        m.kill(id);
    }
}

/// Maps a [`Worker`] of `pages` pages in a new task per entry.
fn workers(m: &'static KMachine, buddy: &'static Frames, pages: &[u64]) -> Option<Vec<Worker>> {
    let mut t = KernelTouch { m, buddy };
    let mut ws = Vec::new();
    for (i, &n) in pages.iter().enumerate() {
        let id = m.spawn().ok()?;
        ws.push(Worker::new(&mut t, i, id, n).ok()?);
    }
    Some(ws)
}

/// Prints a scenario's figures: faults by kind, swap traffic, reclaim, OOM
/// kills, free memory per zone.
fn report(label: &str, m: &KMachine, buddy: &Frames) {
    let f = m.figures(buddy.free_frame_count());
    let r = m.reclaim().stats();
    kprintln!(
        "{}: faults: demand zero {}, copy-on-write {}, swap-in {} ({} read, {} from the swap cache), refused {}",
        label,
        f.faults.demand_zero,
        f.faults.cow_copied + f.faults.cow_reused,
        f.faults.swap_in,
        f.swap_reads,
        f.cache_hits,
        f.faults.refused
    );
    kprintln!(
        "{}: swapped out {}; reclaim passes {}, refaults {}, direct runs {}, background runs {} (kswapd woken {} times), heap shrunk {} frames",
        label,
        f.swapped_out,
        f.reclaim_passes,
        f.refaults,
        f.direct_runs,
        r.background_runs,
        KSWAPD_WAKES.load(Ordering::Relaxed),
        r.shrunk_frames
    );
    let dma = buddy.watermark_state(Zone::Dma).free;
    let dma32 = buddy.watermark_state(Zone::Dma32).free;
    kprintln!("{}: OOM kills {}; free frames: DMA {}, DMA32 {}", label, f.oom_kills, dma, dma32);
}

/// `pressure`: four tasks, each a thread, write three times the RAM the
/// allocator has in per-page patterns, then every page is checked.
pub fn pressure(buddy: &'static Frames, ram_end: u64) -> bool {
    let ram = buddy.free_frame_count();
    let Some(m) = machine(buddy, ram_end, 4 * ram, (ram as usize * 4096) / 8) else {
        kprintln!("pressure: cannot set up the machine");
        return false;
    };
    let pages = scenario::pressure_pages(4, ram);
    let Some(ws) = workers(m, buddy, &pages) else {
        kprintln!("pressure: cannot create the tasks");
        return false;
    };
    kprintln!("pressure: {} tasks writing {} pages ({} frames free)", ws.len(), pages.iter().sum::<u64>(), ram);
    let first = ws[0];
    let start = crate::clock::now_ms();
    let (out, ended) = run_workers(m, buddy, ws);
    let ms = (crate::clock::now_ms() - start).max(1);
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
    let ok = fork_check(m, buddy, &first) && ok && m.device.swap().check().is_ok();
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
fn fork_check(m: &'static KMachine, buddy: &'static Frames, parent: &Worker) -> bool {
    type Value = fn(usize, u64) -> u64;
    let before = m.figures(0).faults;
    let Ok(child) = m.fork(parent.id) else {
        kprintln!("pressure: fork failed");
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
            kprintln!("pressure: fork: a thread ended badly: {:?}", ended);
            return false;
        }
    }
    unload();
    let after = m.figures(0).faults;
    let cow = (after.cow_copied + after.cow_reused) - (before.cow_copied + before.cow_reused);
    let ok = seen == [n; 3] && cow > 0;
    kprintln!(
        "pressure: fork: the child saw {} of the parent's {} pages, wrote its own over them ({} copy-on-write faults) and read back {}; the parent's are unchanged: {}; intact: {}",
        seen[0],
        n,
        cow,
        seen[1],
        seen[2],
        ok
    );
    ok
}

/// `oom`: no swap; three tasks, the middle one wanting twice the RAM. The
/// OOM killer (in the fault handler) must pick it, and the other two
/// finish with their data.
pub fn oom(buddy: &'static Frames, ram_end: u64) -> bool {
    let ram = buddy.free_frame_count();
    let Some(m) = machine(buddy, ram_end, 0, 0) else {
        kprintln!("oom: cannot set up the machine");
        return false;
    };
    let pages = scenario::oom_pages(ram);
    let Some(ws) = workers(m, buddy, &pages) else { return false };
    kprintln!("oom: 3 tasks, no swap; task {} wants {} pages of {} free", ws[1].id.0, pages[1], ram);
    let (out, _) = run_workers(m, buddy, ws);
    kprintln!(
        "oom: written {} verified {} corrupt {} errors {}; killed {:?}",
        out.written,
        out.verified,
        out.corrupt,
        out.errors,
        out.killed
    );
    report("oom", m, buddy);
    let ok = out.killed == [1] && out.corrupt == 0 && out.errors == 0 && out.verified == pages[0] + pages[2];
    kill_all(m);
    kprintln!("oom: the biggest task was killed and the others finished intact: {}", ok);
    ok
}

static RODATA_TARGET: u64 = 0x5eed;

/// The bad accesses of `faults`, by name.
pub const FAULT_CASES: [&str; 4] = ["null", "rodata", "stack", "user"];

/// Does the bad access `case` (in assembly, so the compiler never sees
/// it): a read of address 0, a write to read-only kernel data, pushes until
/// the stack overflows, or a write to the read-only user page at `user`.
fn bad_access(case: &str, user: u64) {
    kprintln!("faults: thread {} does its bad access", case);
    // SAFETY: every access below faults; the fault handler ends this thread without returning here.
    unsafe {
        match case {
            "null" => core::arch::asm!("mov {0}, qword ptr [0]", out(reg) _, options(nostack, readonly)),
            "rodata" => {
                core::arch::asm!("mov qword ptr [{0}], 1", in(reg) &RODATA_TARGET as *const u64, options(nostack))
            }
            "stack" => core::arch::asm!("2:", "push rax", "jmp 2b", options(noreturn)),
            _ => core::arch::asm!("mov qword ptr [{0}], 1", in(reg) user, options(nostack)),
        }
    }
}

/// `faults [case]`: a thread per bad access (each case, or the one named),
/// each in its own task, beside a task that writes and checks 64 pages.
/// Every bad access must be reported and end its thread and task only: the
/// good task finishes intact, and the kernel goes on to the end.
pub fn faults(buddy: &'static Frames, ram_end: u64, which: Option<&str>) -> bool {
    let cases: Vec<&'static str> = match which {
        None => FAULT_CASES.to_vec(),
        Some(w) => match FAULT_CASES.iter().find(|c| **c == w) {
            Some(c) => alloc::vec![*c],
            None => {
                kprintln!("faults: unknown case {:?} (known: {:?})", w, FAULT_CASES);
                return false;
            }
        },
    };
    let Some(m) = machine(buddy, ram_end, 0, 0) else { return false };
    let Some(ws) = workers(m, buddy, &[64]) else { return false };
    let mut expected = Vec::new();
    for &case in &cases {
        let Ok(id) = m.spawn() else { return false };
        let Some(s) = m.tasks.get(id) else { return false };
        let Ok(user) = s.lock().mmap(MapRequest::anonymous(4096, Protection::READ)) else { return false };
        let addr = match case {
            "null" => 0,
            "rodata" => &RODATA_TARGET as *const u64 as u64,
            _ => user,
        };
        if sched::spawn(case, Some(id), move || bad_access(case, user)).is_err() {
            return false;
        }
        expected.push((case, id, addr));
    }
    let (out, ended) = run_workers(m, buddy, ws);
    let mut ok = out.verified == 64 && out.corrupt == 0 && out.errors == 0 && out.killed.is_empty();
    kprintln!("faults: the good task verified {} of 64 pages, corrupt {}", out.verified, out.corrupt);
    for (case, id, addr) in expected {
        let exit = sched::exit_of(&ended, id).unwrap_or(Exit::Done);
        let right = match (case, exit) {
            ("stack", Exit::StackOverflow { .. }) => true,
            (_, Exit::Fault { vector: 14, addr: a }) => a == addr,
            _ => false,
        };
        let gone = m.tasks.get(id).is_none();
        kprintln!("faults: {}: {}; as expected: {}; its task is gone: {}", case, exit, right, gone);
        ok &= right && gone;
    }
    ok &= ended.iter().any(|e| e.name == "kswapd" && e.exit == Exit::Done);
    kill_all(m);
    kprintln!("faults: {} contained; the kernel went on: {}", cases.len(), ok);
    ok
}

/// Starts a ring 3 thread in a new task running `program` over a fresh
/// region of `pages` pages (at least one): its arguments are the region's
/// address, `pages` and `seed`. Returns the task and the region.
fn spawn_user(m: &'static KMachine, program: Program, pages: u64, seed: u64) -> Option<(SpaceId, u64)> {
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
    let body = move || unsafe { user::enter(at, [base, pages, seed]) };
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
