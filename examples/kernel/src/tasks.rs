//! Tasks over mm-wiring's `Machine`: each task has its own address space
//! (mm-vma, its own page tables loaded into CR3 when it runs), user pages
//! come through mm-wiring's tracked frames (mm-reclaim's lists, direct
//! reclaim), swap goes through mm-swap, and the CPU's page faults in a
//! task's range go to mm-vma's fault handler ([`handle_fault`]).
//!
//! The `pressure` scenario runs mm-wiring's workload here with real page
//! faults: the scenario code writes task memory with CR3 switched to the
//! task, exactly as the host simulation does it through `write_user`.
//!
//! Swap goes to the virtio-blk disk (`disk.rs`) when QEMU has one (the
//! xtask always attaches it); without one, to compressed memory (mm-swap's
//! `zswap` tier over a store with no device behind it, as Linux's zram
//! does).

extern crate alloc;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use mm_paging::X86_64;
use mm_reclaim::driver::{Level, Reclaim, Shrinker, Shrunk};
use mm_reclaim::{Mode, S3Fifo};
use mm_swap::zswap::{Compressed, ZswapConfig};
use mm_swap::{Swap, SwapConfig};
use mm_types::{BackingStore, DirectMap, PhysAddr, StoreError, StoreErrorKind, StoreOp, Zone, SLOT_SIZE};
use mm_vma::{FaultError, Hooks, SpaceId};
use mm_wiring::scenario::{self, Touch, TouchError};
use mm_wiring::{Machine, PageIds};

use crate::frames::{self, Frames};
use crate::kprintln;
use crate::paging;
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

/// Free memory against the watermarks, over the zones.
fn level(buddy: &Frames) -> Level {
    let mut l = Level::default();
    for z in Zone::ALL {
        let s = buddy.watermark_state(z);
        l.free += s.free;
        l.min += s.watermarks.min;
        l.low += s.watermarks.low;
        l.high += s.watermarks.high;
    }
    l
}

/// The watermarks background reclaim works to. User pages stop at the
/// zones' low watermark (below it is the kernel's), so background reclaim
/// wakes above that: below the high watermark, and frees up to twice the
/// low-to-high gap above high.
fn kswapd_level(buddy: &Frames) -> Level {
    let l = level(buddy);
    let gap = l.high - l.low;
    Level { free: l.free, min: l.low, low: l.high, high: l.high + 2 * gap }
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
    let capacity = buddy.free_frames() as usize;
    let reclaim = Reclaim::new(
        mm_reclaim::default_policy(n, capacity, Mode::AccessedBits),
        mm_reclaim::default_policy(n, capacity, Mode::AccessedBits),
        n,
    );
    let root = paging::tables()?.lock().root();
    let m = Machine::new(buddy, ids, swap, reclaim, LAYOUT, |f, hooks| {
        let hooks = Hooks { tlb: Some(Arc::new(uspace::Tlb)), ..hooks };
        // SAFETY: CPL 0 (reading the paging mode); the kernel's tables live for the whole run and their entries 0 and 256-511 never change.
        unsafe {
            mm_vma::Mm::with_kernel_entries(
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
    m.frames.set_below_min(Box::new(move || {
        let l = level(buddy);
        l.free < l.low
    }));
    m.reclaim().register_shrinker(Arc::new(HeapShrinker));
    let l = level(buddy);
    kprintln!("tasks: watermarks min {} low {} high {} (frames)", l.min, l.low, l.high);
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
    // SAFETY: CPL 0; every task space shares the kernel's root entries for everything the kernel touches, and the space lives in the task table until `kill` switches away from it.
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

/// Called by the page-fault handler for addresses in the loaded task's
/// user range: mm-vma's fault handler, retried after direct reclaim (with
/// the space let go) when it runs out of memory. `None` if no task is
/// loaded or the address is not user memory.
pub fn handle_fault(addr: u64, error_code: u64) -> Option<Result<(), FaultError>> {
    let id = LOADED.load(Ordering::SeqCst);
    if id == 0 || !(LAYOUT.low..LAYOUT.high).contains(&addr) {
        return None;
    }
    let m = MACHINE.get()?;
    let access = uspace::access_of(error_code);
    let mut dry = 0;
    loop {
        let s = m.tasks.get(SpaceId(id))?;
        // A fault while the space is in use would be a kernel bug.
        let r = s.try_lock()?.fault(addr, access);
        match r {
            Err(FaultError::OutOfMemory) => {
                if !m.reclaim_for_retry(&mut dry) {
                    return Some(r.map(|_| ()));
                }
            }
            other => return Some(other.map(|_| ())),
        }
    }
}

/// Frames above the low watermark a task's access wants free: a page and
/// the page tables above it.
const MARGIN: u64 = 8;

/// The kernel's way of touching task memory: CR3 switched to the task and
/// a plain access, which faults into [`handle_fault`]. Before it, memory is
/// reclaimed if it is short; when reclaim can free nothing, the access
/// reports out of memory and the scenario calls the OOM killer (a fault
/// handler cannot end the kernel-mode code it interrupted).
struct KernelTouch {
    m: &'static KMachine,
    buddy: &'static Frames,
}

impl KernelTouch {
    fn ensure_memory(&self) -> Result<(), TouchError> {
        let mut dry = 0;
        loop {
            let l = level(self.buddy);
            if l.free >= l.low + MARGIN {
                return Ok(());
            }
            if !self.m.reclaim_for_retry(&mut dry) {
                return Err(TouchError::OutOfMemory);
            }
        }
    }
}

impl Touch for KernelTouch {
    fn write(&mut self, task: SpaceId, addr: u64, value: u64) -> Result<(), TouchError> {
        self.ensure_memory()?;
        load(self.m, task)?;
        // SAFETY: `addr` is 8-aligned in the loaded task's mapped user range; a fault maps it (or ends the run).
        unsafe { core::ptr::write_volatile(addr as *mut u64, value) };
        Ok(())
    }

    fn read(&mut self, task: SpaceId, addr: u64) -> Result<u64, TouchError> {
        self.ensure_memory()?;
        load(self.m, task)?;
        // SAFETY: as in `write`.
        Ok(unsafe { core::ptr::read_volatile(addr as *const u64) })
    }

    fn map(&mut self, task: SpaceId, len: u64) -> Result<u64, TouchError> {
        let s = self.m.tasks.get(task).ok_or(TouchError::Gone)?;
        let r = s.lock().mmap(scenario::anon_rw(len));
        r.map_err(|_| TouchError::Fault)
    }

    fn tick(&mut self) {
        let buddy = self.buddy;
        self.m.background(&mut || kswapd_level(buddy));
    }

    fn oom(&mut self, _task: SpaceId) -> Option<SpaceId> {
        let victim = self.m.oom_victim(self.buddy.free_frames())?;
        if LOADED.load(Ordering::SeqCst) == victim.0 {
            unload();
        }
        self.m.kill(victim);
        kprintln!("oom: killed task {} (the biggest)", victim.0);
        Some(victim)
    }
}

/// Prints a scenario's figures: faults by kind, swap traffic, reclaim, OOM
/// kills, free memory per zone.
fn report(label: &str, m: &KMachine, buddy: &Frames) {
    let f = m.figures(buddy.free_frames());
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
        "{}: swapped out {}; reclaim passes {}, refaults {}, direct runs {}, background runs {}, heap shrunk {} frames",
        label,
        f.swapped_out,
        f.reclaim_passes,
        f.refaults,
        f.direct_runs,
        r.background_runs,
        r.shrunk_frames
    );
    let dma = buddy.watermark_state(Zone::Dma).free;
    let dma32 = buddy.watermark_state(Zone::Dma32).free;
    kprintln!("{}: OOM kills {}; free frames: DMA {}, DMA32 {}", label, f.oom_kills, dma, dma32);
}

/// `pressure`: four tasks write three times the RAM the allocator has in
/// per-page patterns, then every page is checked.
pub fn pressure(buddy: &'static Frames, ram_end: u64) -> bool {
    let ram = buddy.free_frames();
    let Some(m) = machine(buddy, ram_end, 4 * ram, (ram as usize * 4096) / 8) else {
        kprintln!("pressure: cannot set up the machine");
        return false;
    };
    let tasks: Vec<SpaceId> = (0..4).filter_map(|_| m.spawn().ok()).collect();
    kprintln!("pressure: {} tasks writing {} pages ({} frames free)", tasks.len(), 3 * ram, ram);
    let mut t = KernelTouch { m, buddy };
    let start = crate::clock::now_ms();
    let out = scenario::pressure(&mut t, &tasks, ram);
    let ms = (crate::clock::now_ms() - start).max(1);
    unload();
    kprintln!(
        "pressure: written {} verified {} corrupt {} errors {}",
        out.written,
        out.verified,
        out.corrupt,
        out.errors
    );
    report("pressure", m, buddy);
    let f = m.figures(buddy.free_frames());
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
    let ok = out.corrupt == 0 && out.errors == 0 && out.verified == out.written && out.written == 3 * ram / 4 * 4;
    let ok = ok && f.swapped_out > 0 && f.faults.swap_in > 0 && m.device.swap().check().is_ok();
    for id in tasks {
        m.kill(id);
    }
    kprintln!("pressure: data intact: {}", ok);
    ok
}

/// `oom`: no swap; three tasks, the middle one wanting twice the RAM. The
/// OOM killer must pick it, and the other two finish with their data.
pub fn oom(buddy: &'static Frames, ram_end: u64) -> bool {
    let ram = buddy.free_frames();
    let Some(m) = machine(buddy, ram_end, 0, 0) else {
        kprintln!("oom: cannot set up the machine");
        return false;
    };
    let tasks: Vec<SpaceId> = (0..3).filter_map(|_| m.spawn().ok()).collect();
    let [a, b, c] = tasks[..] else { return false };
    kprintln!("oom: 3 tasks, no swap; task {} wants {} pages of {} free", b.0, 2 * ram, ram);
    let mut t = KernelTouch { m, buddy };
    let out = scenario::oom(&mut t, &[a, b, c], ram);
    unload();
    kprintln!(
        "oom: written {} verified {} corrupt {} errors {}; killed {:?}",
        out.written,
        out.verified,
        out.corrupt,
        out.errors,
        out.killed
    );
    report("oom", m, buddy);
    let ok = out.killed == [1] && out.corrupt == 0 && out.errors == 0 && out.verified == 2 * (ram / 8);
    for id in m.tasks.ids() {
        m.kill(id);
    }
    kprintln!("oom: the biggest task was killed and the others finished intact: {}", ok);
    ok
}
