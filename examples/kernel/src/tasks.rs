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
use core::sync::atomic::{AtomicU64, Ordering};

use mm_pagecache::CacheConfig;
use mm_paging::X86_64;
use mm_reclaim::{Level, Mode, Reclaim, Shrinker, Shrunk, WTinyLfu};
use mm_swap::zswap::{Compressed, ZswapConfig};
use mm_swap::{Swap, SwapConfig};
use mm_types::{BackingStore, DirectMap, PhysAddr, StoreError, StoreErrorKind, StoreOp, VirtAddr, Zone, SLOT_SIZE};
use mm_vma::{FaultError, Hooks, SpaceId};
use mm_wiring::scenario::{self, Outcome, Step, Touch, TouchError, Worker};
use mm_wiring::{Machine, PageIds};

use crate::frames::{self, Frames};
use crate::kprintln;
use crate::paging;
use crate::profile::{self, Phase};
use crate::sched::{self, Ended, Exit};
use crate::uspace::{self, LAYOUT};

mod faults;
mod files;
mod oom;
mod pressure;
mod ring3;
mod smp;

pub use faults::faults;
pub use files::files;
pub use oom::oom;
pub use pressure::pressure;
pub use ring3::user;
pub use smp::smp;

/// The kernel's machine.
pub type KMachine = Machine<X86_64, DirectMap, &'static Frames, WTinyLfu>;

static MACHINE: spin::Once<KMachine> = spin::Once::new();
/// The compressed swap tier when there is no disk (kept here to print its
/// figures).
static TIER: spin::Once<Compressed<NoDisk>> = spin::Once::new();
/// The swap disk.
static DISK: spin::Once<crate::disk::VirtioDisk> = spin::Once::new();

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
    // mm-swap's default readahead: 7 pages after the one faulted, 8 in
    // all, as Linux's default page-cluster of 3.
    let swap = Arc::new(Swap::new(SwapConfig { cpus: 1, ..SwapConfig::default() }));
    if slots > 0 {
        match crate::disk::VirtioDisk::take(buddy, "swap") {
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
    let cache = CacheConfig::for_memory(capacity as u64);
    let m = Machine::new(buddy, ids, swap, reclaim, LAYOUT, frames::identity_map(), cache, |f, hooks| {
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
    crate::heap::heap().slab_frames() as u64
}

impl Shrinker for HeapShrinker {
    fn name(&self) -> &'static str {
        "kmalloc"
    }

    fn count(&self) -> u64 {
        // Counted at every reclaim pass: the cheap count, not `stats`,
        // which walks every CPU freelist of every class.
        crate::heap::heap().empty_slabs() as u64
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

/// The space each CPU has loaded, held: a task killed from another CPU
/// (the OOM killer) leaves the task table at once, but its page tables
/// stay alive until every CPU that has them in CR3 has moved on.
static HELD: [spin::Mutex<Option<TaskSpace>>; crate::percpu::MAX_CPUS] =
    [const { spin::Mutex::new(None) }; crate::percpu::MAX_CPUS];

/// A task's address space, shared.
type TaskSpace = mm_wiring::SharedSpace<X86_64, DirectMap, mm_wiring::Frames<&'static Frames, WTinyLfu>>;

/// Loads task `id`'s page tables (if it is not loaded already).
fn load(m: &KMachine, id: SpaceId) -> Result<(), TouchError> {
    if uspace::loaded() == id.0 {
        return Ok(());
    }
    let s = m.tasks.get(id).ok_or(TouchError::Gone)?;
    uspace::set_loaded(id.0);
    // SAFETY: CPL 0; every task space shares the kernel's root entries for everything the kernel
    // touches, and the space lives (`HELD`) until this CPU loads other tables.
    unsafe { s.lock().page_table().activate() };
    // The space loaded before goes only now, with CR3 off its tables.
    let before = HELD[crate::percpu::index()].lock().replace(s);
    drop(before);
    Ok(())
}

/// Back to the kernel's own tables (if a task's are loaded on this CPU).
pub fn unload() {
    if uspace::loaded() != 0 {
        let tables = paging::tables().expect("built at boot");
        uspace::set_loaded(0);
        // SAFETY: CPL 0; these are the tables the kernel booted on.
        unsafe { tables.lock().activate() };
        let before = HELD[crate::percpu::index()].lock().take();
        drop(before);
    }
}

/// Times [`wake_kswapd`] woke the background reclaim thread.
static KSWAPD_WAKES: AtomicU64 = AtomicU64::new(0);

/// Wakes the background reclaim thread if free memory is below the level
/// it wakes at (Linux wakes kswapd in the allocator's slow path likewise),
/// or if the page cache holds more dirty pages than its background
/// threshold (the thread is the flusher too). Called before every fault of
/// task memory.
fn wake_kswapd(buddy: &Frames) {
    let l = kswapd_level(buddy);
    let dirty = MACHINE.get().is_some_and(|m| m.cache.needs_writeback());
    if (l.free < l.low || dirty) && sched::wake("kswapd") {
        KSWAPD_WAKES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Direct reclaim for an allocation that found memory short; whether to
/// retry it ([`Machine::reclaim_for_retry`](mm_wiring::Machine::reclaim_for_retry)). It wakes kswapd first,
/// as Linux's allocation slow path does before it reclaims directly: the
/// check before each fault looks at the zone's free count, which per-CPU
/// batches move by dozens of frames at a time, and may never see it under
/// kswapd's mark (at 96 MiB it never did: 2,421 direct runs, no kswapd run).
fn direct_reclaim(m: &KMachine, dry: &mut u32) -> bool {
    if sched::wake("kswapd") {
        KSWAPD_WAKES.fetch_add(1, Ordering::Relaxed);
    }
    m.reclaim_for_retry(dry)
}

/// Called by the page-fault handler for addresses in the loaded task's
/// user range: mm-vma's fault handler, retried after direct reclaim (with
/// the space let go) when it runs out of memory. When reclaim frees
/// nothing, the OOM killer ends the biggest task; if that is the faulting
/// thread's own, the thread ends here ([`sched::exit`]). `None` if no task
/// is loaded or the address is not user memory.
pub fn handle_fault(addr: u64, error_code: u64) -> Option<Result<(), FaultError>> {
    let id = uspace::loaded();
    if id == 0 {
        return None;
    }
    // CR2 holds a canonical address (a non-canonical access is a general
    // protection fault, not a page fault).
    let addr = VirtAddr::new(addr).ok().filter(|a| (LAYOUT.low..LAYOUT.high).contains(a))?;
    let (m, buddy) = (MACHINE.get()?, frames::get()?);
    let _timed = profile::start(Phase::Fault);
    wake_kswapd(buddy);
    let access = uspace::access_of(error_code);
    let mut dry = 0;
    loop {
        // The space is let go before reclaim, so reclaim can take its
        // pages.
        // Another CPU may hold the space (a thread of the same task
        // mapping or faulting, reclaim unmapping): wait for it.
        let Some(space) = m.tasks.get(SpaceId(id)) else {
            // Killed from another CPU while this thread ran (its tables
            // live on in `HELD`): the thread ends here.
            if sched::current().is_some_and(|t| t.space == Some(SpaceId(id))) {
                unload();
                sched::exit(Exit::Killed);
            }
            return None;
        };
        let waited = profile::start(Phase::SpaceWait);
        let mut space = space.lock();
        drop(waited);
        let r = space.fault(addr, access);
        drop(space);
        if r.is_ok() {
            crate::percpu::this().counters.faults.fetch_add(1, Ordering::Relaxed);
        }
        if r != Err(FaultError::OutOfMemory) {
            // The space is let go: a task that dirtied file pages through
            // its mappings writes some back if too many are dirty.
            m.cache.balance_dirty_pages();
            return Some(r.map(|_| ()));
        }
        let reclaimed = {
            let _timed = profile::start(Phase::DirectReclaim);
            direct_reclaim(m, &mut dry)
        };
        if reclaimed {
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
    let loaded = uspace::loaded();
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
    if uspace::loaded() == id.0 {
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
        while short(self.buddy, MARGIN) && direct_reclaim(self.m, &mut dry) {}
    }
}

impl Touch for KernelTouch {
    fn write(&mut self, task: SpaceId, addr: VirtAddr, value: u64) -> Result<(), TouchError> {
        self.reclaim_ahead();
        load(self.m, task)?;
        // SAFETY: `addr` is 8-aligned in the loaded task's mapped user range; a fault maps it (or ends the thread).
        unsafe { core::ptr::write_volatile(addr.as_mut_ptr::<u64>(), value) };
        Ok(())
    }

    fn read(&mut self, task: SpaceId, addr: VirtAddr) -> Result<u64, TouchError> {
        self.reclaim_ahead();
        load(self.m, task)?;
        // SAFETY: as in `write`.
        Ok(unsafe { core::ptr::read_volatile(addr.as_ptr::<u64>()) })
    }

    fn map(&mut self, task: SpaceId, len: u64) -> Result<VirtAddr, TouchError> {
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
/// threads) run on the kernel's own tables: a task's tables must not stay
/// loaded on a CPU that does not run the task, or the task could end
/// (its tables freed) while the CPU still walks them.
fn activate(space: Option<SpaceId>) -> bool {
    let Some(m) = MACHINE.get() else { return space.is_none() };
    match space {
        Some(id) => load(m, id).is_ok(),
        None => {
            unload();
            true
        }
    }
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
            let timed = profile::start(Phase::Kswapd);
            m.background(&mut || kswapd_level(buddy));
            drop(timed);
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
