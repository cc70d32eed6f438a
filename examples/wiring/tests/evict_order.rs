//! Eviction while a task on another CPU writes the page: the write must
//! survive. The machine here has a TLB hook (the other CPU's TLB entry for
//! the page, valid until a flush names it) and a swap store that lets the
//! other CPU act at the moment a page is written to its slot. An evictor
//! that wrote the page before unmapping it (the order before multi-CPU)
//! loses a write made in between: the page is freed with the write in it
//! and the slot holds the older data. Unmapping first (and shooting down
//! the TLB entry) means the write either lands before the unmap, where the
//! dirty bit sends it to the slot, or faults and finds the page in the
//! swap cache.

use std::boxed::Box;
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::thread;
use std::time::Duration;

use mm_pagecache::CacheConfig;
use mm_paging::{FlushBatch, X86_64};
use mm_reclaim::{Mode, Reclaim, WTinyLfu};
use mm_swap::{Swap, SwapConfig};
use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
use mm_types::{BackingStore, PhysAddr, PhysMemory, StoreError, VirtAddr, SLOT_SIZE};
use mm_vma::{Hooks, Layout, MmContext, SpaceId, SpaceTlb};
use mm_wiring::scenario::anon_rw;
use mm_wiring::{Machine, PageIds};

type SimMachine = Machine<X86_64, SimPhysMemory, RefFrameProvider, WTinyLfu>;

const OLD: u64 = 0x0123_4567_89ab_cdef;
const NEW: u64 = 0xfeed_f00d_dead_beef;

/// What runs on "another CPU" when the swap store has written a slot
/// (after the store's write, before the evictor goes on), once.
type AtWrite = Box<dyn FnOnce(&[u8; SLOT_SIZE]) + Send>;

/// The other CPU: its TLB entry for one page, and what it does at the next
/// slot write.
#[derive(Default)]
struct OtherCpu {
    /// (space, page, frame): the translation the CPU cached, valid until a
    /// flush of that space names the page (or flushes it all).
    tlb: Mutex<Option<(SpaceId, VirtAddr, PhysAddr)>>,
    at_write: Mutex<Option<AtWrite>>,
    /// Flushes (shootdowns) sent.
    flushes: std::sync::atomic::AtomicU64,
}

/// The TLB hook: a flush drops the other CPU's entry if it names it (the
/// shootdown is acknowledged when `flush` returns).
struct Shootdown(Arc<OtherCpu>);

impl SpaceTlb for Shootdown {
    fn flush(&self, space: SpaceId, batch: FlushBatch) {
        self.0.flushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tlb = self.0.tlb.lock().unwrap();
        if let Some((s, va, _)) = *tlb {
            if s == space && (batch.is_full_flush() || batch.pages().any(|p| p == va)) {
                *tlb = None;
            }
        }
    }
}

/// A swap store that hands control to the other CPU right after each write.
struct WatchedStore {
    inner: Arc<MemStore>,
    cpu: Arc<OtherCpu>,
}

impl BackingStore for WatchedStore {
    fn slot_count(&self) -> u64 {
        self.inner.slot_count()
    }
    fn read_slot(&self, slot: u64, buf: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.inner.read_slot(slot, buf)
    }
    fn write_slot(&self, slot: u64, buf: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.inner.write_slot(slot, buf)?;
        let act = self.cpu.at_write.lock().unwrap().take();
        if let Some(act) = act {
            act(buf);
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn discard(&self, slot: u64) {
        self.inner.discard(slot);
    }
}

struct World {
    machine: Arc<SimMachine>,
    ram: SimPhysMemory,
    store: Arc<MemStore>,
    cpu: Arc<OtherCpu>,
}

/// 256 KiB of RAM, 64 swap slots, the TLB hook and the watched store.
fn world() -> World {
    let base = PhysAddr::new(0x10_0000).unwrap();
    let ram = SimPhysMemory::new(base, 256 << 10);
    let frames = RefFrameProvider::new(&ram);
    let total = frames.free_frame_count();
    let ids = PageIds { base, frames: 64 };
    let cpu = Arc::new(OtherCpu::default());
    let swap = Arc::new(Swap::new(SwapConfig { cpus: 1, readahead: 0 }));
    let store = Arc::new(MemStore::new(64));
    swap.add_area(Box::new(WatchedStore { inner: store.clone(), cpu: cpu.clone() }), 0).unwrap();
    let reclaim = Reclaim::new(
        mm_reclaim::default_policy(64, 64, Mode::AccessedBits),
        mm_reclaim::default_policy(64, 64, Mode::AccessedBits),
        64,
    );
    let tlb = Arc::new(Shootdown(cpu.clone())) as Arc<dyn SpaceTlb>;
    let mem = ram.clone();
    let machine = Machine::new(
        frames,
        ids,
        swap,
        reclaim,
        Layout::X86_64,
        ram.clone(),
        CacheConfig::for_memory(total),
        |f, hooks| MmContext::new(X86_64::FOUR_LEVEL, mem, f, Hooks { tlb: Some(tlb), ..hooks }),
    )
    .unwrap();
    World { machine: Arc::new(machine), ram, store, cpu }
}

impl World {
    fn write(&self, t: SpaceId, a: VirtAddr, v: u64) {
        self.machine.with_task(t, |s| s.write_user(a, &v.to_le_bytes())).unwrap();
    }

    fn read(&self, t: SpaceId, a: VirtAddr) -> u64 {
        let mut b = [0u8; 8];
        self.machine.with_task(t, |s| s.read_user(a, &mut b)).unwrap();
        u64::from_le_bytes(b)
    }

    /// A task with one page of `OLD` (written, so its dirty bit is set),
    /// shared with a forked child if `fork`; its address.
    fn page(&self, shared: bool, fork: bool) -> (SpaceId, Option<SpaceId>, VirtAddr) {
        let t = self.machine.spawn().unwrap();
        let req = if shared { anon_rw(4096).shared() } else { anon_rw(4096) };
        let a = self.machine.tasks.get(t).unwrap().lock().mmap(req).unwrap();
        self.write(t, a, OLD);
        let child = fork.then(|| self.machine.fork(t).unwrap());
        (t, child, a)
    }

    fn frame(&self, t: SpaceId, a: VirtAddr) -> PhysAddr {
        let s = self.machine.tasks.get(t).unwrap();
        let tr = s.lock().page_table().translate(a);
        tr.expect("mapped").frame
    }

    /// Whether the page table of `t` names a swap slot at `a`.
    fn swapped(&self, t: SpaceId, a: VirtAddr) -> bool {
        let s = self.machine.tasks.get(t).unwrap();
        let l = s.lock().page_table().lookup(a).unwrap();
        matches!(l, mm_paging::Lookup::Swapped(_))
    }

    /// Reclaims everything it can (twice: referenced pages get a second
    /// pass), then checks the bookkeeping.
    fn evict_all(&self) {
        self.machine.reclaim_now(u64::MAX);
        self.machine.reclaim_now(u64::MAX);
        self.machine.device.swap().check().unwrap();
        self.machine.check_clean_cache().unwrap();
    }
}

/// The other CPU has the page in its TLB (the task ran there and wrote
/// it) and writes it again through that entry when the page's data goes to
/// its slot, as a CPU does without taking any lock. If the entry was shot
/// down by then, its write faults instead (here: once reclaim is done).
/// Either way the value read back must be the new one.
#[test]
fn a_write_through_a_stale_tlb_entry_during_swap_out_survives() {
    let w = world();
    let (t, _, a) = w.page(false, false);
    *w.cpu.tlb.lock().unwrap() = Some((t, a, w.frame(t, a)));
    let faulted = Arc::new(Mutex::new(false));
    let (cpu, ram, f2) = (w.cpu.clone(), w.ram.clone(), faulted.clone());
    *w.cpu.at_write.lock().unwrap() = Some(Box::new(move |buf| {
        assert_eq!(buf[..8], OLD.to_le_bytes(), "the page is the one being written");
        match *cpu.tlb.lock().unwrap() {
            // SAFETY: a frame of the simulated RAM, which the other CPU's
            // TLB still maps: what a store instruction there does.
            Some((_, _, frame)) => unsafe { ram.write_bytes(frame, &NEW.to_le_bytes()) }.unwrap(),
            None => *f2.lock().unwrap() = true,
        }
    }));
    w.evict_all();
    assert!(w.cpu.at_write.lock().unwrap().is_none(), "the page was written to swap");
    if *faulted.lock().unwrap() {
        // The entry was shot down before the write: the store faults.
        w.write(t, a, NEW);
    }
    let got = w.read(t, a);
    assert!(got == NEW, "the other CPU's write was lost: read {got:#x}, it wrote {NEW:#x}");
}

/// The task writes through its page table when the page's data goes to
/// its slot: through the mapping if it is still there (a copy-on-write
/// fault for a forked private page), else its store faults on the slot's
/// entry, which waits until the write is done (here: once reclaim is
/// done; `a_fault_during_the_slot_write_waits_for_it` has it on a thread).
/// In every sharing (private, shared, forked) every mapper reads what it
/// should, after this eviction and the next.
#[test]
fn a_write_through_the_page_table_during_swap_out_survives() {
    for (shared, fork) in [(false, false), (true, false), (true, true), (false, true)] {
        let w = world();
        let (t, child, a) = w.page(shared, fork);
        let m: Weak<SimMachine> = Arc::downgrade(&w.machine);
        let faulted = Arc::new(Mutex::new(false));
        let f2 = faulted.clone();
        *w.cpu.at_write.lock().unwrap() = Some(Box::new(move |_| {
            let m = m.upgrade().unwrap();
            let mapped = {
                let s = m.tasks.get(t).unwrap();
                let g = s.lock();
                matches!(g.page_table().lookup(a), Ok(mm_paging::Lookup::Mapped(_)))
            };
            if mapped {
                m.with_task(t, |s| s.write_user(a, &NEW.to_le_bytes())).unwrap();
            } else {
                *f2.lock().unwrap() = true;
            }
        }));
        w.evict_all();
        assert!(w.cpu.at_write.lock().unwrap().is_none(), "the page was written to swap");
        if *faulted.lock().unwrap() {
            w.write(t, a, NEW);
        }
        let case = format!("shared {shared}, forked {fork}");
        let got = w.read(t, a);
        assert!(got == NEW, "{case}: the task's write was lost: read {got:#x}, it wrote {NEW:#x}");
        if let Some(c) = child {
            // A private page was copied for the writer; a shared one is
            // one page for both.
            assert_eq!(w.read(c, a), if shared { NEW } else { OLD }, "{case}: the child");
        }
        // Evicted again, nothing lost either.
        w.evict_all();
        assert_eq!(w.read(t, a), NEW, "{case}: after a second eviction");
        if let Some(c) = child {
            assert_eq!(w.read(c, a), if shared { NEW } else { OLD }, "{case}: the child, evicted again");
        }
    }
}

/// A fault on the slot while its page is being written to it, from
/// another thread: the page table names the slot already (the unmap came
/// first), and the fault waits until the write is done, then reads the
/// page back; its write is kept.
#[test]
fn a_fault_during_the_slot_write_waits_for_it() {
    let w = world();
    let (t, _, a) = w.page(false, false);
    let (reached, at_write) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    *w.cpu.at_write.lock().unwrap() = Some(Box::new(move |_| {
        reached.send(()).unwrap();
        wait.recv().unwrap();
    }));
    let m = w.machine.clone();
    let evictor = thread::spawn(move || {
        m.reclaim_now(u64::MAX);
        m.reclaim_now(u64::MAX);
    });
    at_write.recv().unwrap();
    assert!(w.swapped(t, a), "the mapping names the slot before the page is written");
    let m = w.machine.clone();
    let writer = thread::spawn(move || m.with_task(t, |s| s.write_user(a, &NEW.to_le_bytes())).unwrap());
    thread::sleep(Duration::from_millis(50));
    assert!(!writer.is_finished(), "the fault waits while the slot is written");
    go.send(()).unwrap();
    evictor.join().unwrap();
    writer.join().unwrap();
    assert_eq!(w.read(t, a), NEW);
    w.machine.device.swap().check().unwrap();
    w.machine.check_clean_cache().unwrap();
}

/// A write error after the unmap: the page stays resident in the swap
/// cache (the slot has no data), its mapping names the slot, and a fault
/// finds it there; the next eviction writes it.
#[test]
fn a_failed_write_keeps_the_page_in_the_swap_cache() {
    let w = world();
    let (t, _, a) = w.page(false, false);
    let frame = w.frame(t, a);
    *w.cpu.at_write.lock().unwrap() = Some(Box::new(|_| panic!("no write succeeds")));
    w.store.fail_writes(true);
    w.machine.reclaim_now(u64::MAX);
    w.machine.reclaim_now(u64::MAX);
    w.machine.device.swap().check().unwrap();
    assert!(w.swapped(t, a), "the mapping names the slot");
    let cached = w.machine.device.swap().cached();
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0].1, frame, "the page stayed in memory, in the swap cache");
    assert!(w.machine.mm.is_dirty(frame), "its slot is stale");
    let mut b = [0u8; 8];
    // SAFETY: a frame of the simulated RAM that nothing writes now.
    unsafe { w.ram.read_bytes(frame, &mut b) }.unwrap();
    assert_eq!(u64::from_le_bytes(b), OLD);
    *w.cpu.at_write.lock().unwrap() = None;
    w.store.fail_writes(false);
    w.evict_all();
    assert!(w.machine.device.swap().cached().is_empty(), "written and dropped");
    assert_eq!(w.read(t, a), OLD);
}

/// A batch of victims in one space costs one shootdown, not one per page,
/// and every page still reaches its slot only after it.
#[test]
fn one_shootdown_per_space_for_a_batch_of_victims() {
    let w = world();
    let t = w.machine.spawn().unwrap();
    let a = w.machine.tasks.get(t).unwrap().lock().mmap(anon_rw(16 * 4096)).unwrap();
    for i in 0..16 {
        w.write(t, a + i * 4096, OLD ^ i);
    }
    let before = w.cpu.flushes.load(std::sync::atomic::Ordering::Relaxed);
    w.evict_all();
    let flushes = w.cpu.flushes.load(std::sync::atomic::Ordering::Relaxed) - before;
    let out = (0..16).filter(|&i| w.swapped(t, a + i * 4096)).count() as u64;
    assert!(out >= 8, "most pages went to swap: {out}");
    assert!(flushes * 2 <= out, "{flushes} shootdowns for {out} pages");
    for i in 0..16 {
        assert_eq!(w.read(t, a + i * 4096), OLD ^ i, "page {i}");
    }
}
