//! A loom model of the evictor's order (`src/evict.rs`, steps 1-5) against
//! a task storing to the page from another CPU, abstracted from the
//! crates: a PTE (present, dirty and frame bits; not present, it names the
//! slot), the frames' and the slot's data, the swap cache's state, the
//! device's `Busy` lock (a fault holds the slot from the cache lookup until
//! the page is mapped; a fault on a slot being written waits), and a TLB
//! shootdown: the other CPU's TLB holds a copy of the PTE, valid until it
//! acknowledges the shootdown (an interrupt, taken between instructions).
//! A store through a TLB entry without the dirty bit sets the bit in the
//! PTE with a locked read-modify-write that re-checks the PTE (as x86
//! does), and faults if the PTE changed.
//!
//! Each model asserts that the value the task stored is found afterwards:
//! in the frame its PTE maps, else in the swap cache, else in the slot;
//! that no freed frame is mapped, cached or stored to; and, for the
//! unmap-first order, that nothing stores to the frame while it is being
//! written to the slot. The unmap-first order passes
//! for a fresh page and for a page already in the swap cache (slot written,
//! mapping clean). The old order (write the slot, then unmap) fails: its
//! model is run under `#[should_panic]` with the message of the lost write,
//! so the model is shown to catch the bug the order fixes.
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::AtomicBool;
use loom::sync::atomic::AtomicU64;
use loom::sync::atomic::AtomicU8;
use loom::sync::atomic::Ordering::SeqCst;
use loom::sync::Mutex;
use mm_types::testkit::loom_model::{model, spawn};

/// The page's data before the task's store, and what it stores.
const OLD: u64 = 1;
const NEW: u64 = 2;

/// PTE bits: present (else the entry names the slot), dirty, and which
/// frame (0: the page's frame; `FRAME_B`: frame 1, a copy a fault read
/// back from the slot).
const PRESENT: u8 = 1;
const DIRTY: u8 = 2;
const FRAME_B: u8 = 4;

fn frame_of(pte: u8) -> usize {
    usize::from(pte & FRAME_B != 0)
}

/// The device's lock over its faulting and writing slots.
#[derive(Default)]
struct Busy {
    faulting: bool,
    writing: bool,
}

struct World {
    pte: AtomicU8,
    frames: [AtomicU64; 2],
    /// 0: never written.
    slot: AtomicU64,
    /// The page's dirty record (mm-vma's, which the dirty bits of removed
    /// mappings move to).
    page_dirty: AtomicBool,
    /// Frame 0 is in the swap cache, as the slot's page.
    cached: AtomicBool,
    /// Frame 0 was freed.
    freed: AtomicBool,
    /// The unmap-first evictor is reading frame 0 for the slot: nothing
    /// may store to it meanwhile (the `SAFETY` of the device's write).
    reading: AtomicBool,
    busy: Mutex<Busy>,
    /// Shootdown requested, acknowledged, and the task done (it stores no
    /// more, so nothing is left to shoot down).
    shootdown: AtomicBool,
    acked: AtomicBool,
    done: AtomicBool,
}

/// Where the page starts.
#[derive(Clone, Copy)]
enum Start {
    /// Mapped and written (dirty), not in swap at all.
    Fresh,
    /// In the swap cache (faulted in earlier), its slot written, mapped
    /// clean: the task's TLB entry has no dirty bit either.
    Cached,
}

impl World {
    fn new(start: Start) -> World {
        let (pte, slot, cached) = match start {
            Start::Fresh => (PRESENT | DIRTY, 0, false),
            Start::Cached => (PRESENT, OLD, true),
        };
        World {
            pte: AtomicU8::new(pte),
            frames: [AtomicU64::new(OLD), AtomicU64::new(0)],
            slot: AtomicU64::new(slot),
            page_dirty: AtomicBool::new(false),
            cached: AtomicBool::new(cached),
            freed: AtomicBool::new(false),
            reading: AtomicBool::new(false),
            busy: Mutex::new(Busy::default()),
            shootdown: AtomicBool::new(false),
            acked: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    /// The TLB flush of the evictor's unmap: returns once the other CPU
    /// dropped its entry (or stores no more).
    fn shoot_down(&self) {
        self.shootdown.store(true, SeqCst);
        while !self.acked.load(SeqCst) && !self.done.load(SeqCst) {
            loom::thread::yield_now();
        }
    }

    /// The evictor in the order of `src/evict.rs`.
    fn evict_unmap_first(&self, fresh: bool) {
        // 1. (The evictor's pin: frame 0 is freed only in step 5.)
        // 2. Into the swap cache under the new slot, unwritten, dirty.
        if fresh {
            self.cached.store(true, SeqCst);
            self.page_dirty.store(true, SeqCst);
        }
        // 3. The mapping replaced by the slot's entry; the TLB shot down
        // once for the batch (`evict_deferred`, then `flush_deferred`),
        // and only then the removed mapping's dirty bit moved to the page
        // (the released list goes after the flush).
        let old = self.pte.swap(0, SeqCst);
        assert_eq!(old & (PRESENT | FRAME_B), PRESENT, "the victim maps frame 0");
        self.shoot_down();
        if old & DIRTY != 0 {
            self.page_dirty.store(true, SeqCst);
        }
        // 4. Written if dirty, with faults held off; refused if a fault is
        // under way or mapped the page again (it stays cached).
        {
            let mut b = self.busy.lock().unwrap();
            if b.faulting || self.pte.load(SeqCst) & PRESENT != 0 {
                return;
            }
            if self.page_dirty.swap(false, SeqCst) {
                b.writing = true;
                drop(b);
                self.reading.store(true, SeqCst);
                let data = self.frames[0].load(SeqCst);
                self.slot.store(data, SeqCst);
                self.reading.store(false, SeqCst);
                self.busy.lock().unwrap().writing = false;
            }
        }
        // 5. Out of the cache and freed only if the slot holds the page.
        let b = self.busy.lock().unwrap();
        if b.faulting || b.writing || self.pte.load(SeqCst) & PRESENT != 0 || self.page_dirty.load(SeqCst) {
            return;
        }
        self.cached.store(false, SeqCst);
        self.freed.store(true, SeqCst);
    }

    /// The order before: the page written to a new slot while still
    /// mapped, then unmapped, its dirty bits taken (and ignored: "no task
    /// ran since"), the frame freed.
    fn evict_write_first(&self) {
        let data = self.frames[0].load(SeqCst);
        self.slot.store(data, SeqCst);
        let _dirty = self.pte.swap(0, SeqCst) & DIRTY;
        self.shoot_down();
        self.freed.store(true, SeqCst);
    }

    /// The task on the other CPU stores `NEW` once, starting with a TLB
    /// entry for frame 0 (dirty as `tlb_dirty`).
    fn store(&self, tlb_dirty: bool) {
        let mut tlb = Some((0, tlb_dirty));
        let mut acked = false;
        loop {
            // An interrupt between instructions: the shootdown.
            if !acked && self.shootdown.load(SeqCst) {
                tlb = None;
                acked = true;
                self.acked.store(true, SeqCst);
            }
            match tlb {
                Some((f, true)) => {
                    assert!(f != 0 || !self.freed.load(SeqCst), "a store to a freed frame");
                    assert!(
                        f != 0 || !self.reading.load(SeqCst),
                        "a store to the frame while it is written to the slot"
                    );
                    self.frames[f].store(NEW, SeqCst);
                    break;
                }
                Some((f, false)) => {
                    // The dirty bit set by a locked update of the PTE, if
                    // it still maps the frame; else a fault.
                    let want = PRESENT | if f == 1 { FRAME_B } else { 0 };
                    let set = self.pte.fetch_update(SeqCst, SeqCst, |p| (p & !DIRTY == want).then_some(p | DIRTY));
                    tlb = set.ok().map(|_| (f, true));
                }
                None => tlb = Some(self.fault()),
            }
        }
        if !acked && self.shootdown.load(SeqCst) {
            self.acked.store(true, SeqCst);
        }
        self.done.store(true, SeqCst);
    }

    /// A write fault: a walk of the PTE if present, else the swap-in: the
    /// cached frame if the swap cache has it, else a copy read from the
    /// slot; mapped writable and dirty. Returns the new TLB entry.
    fn fault(&self) -> (usize, bool) {
        let p = self.pte.load(SeqCst);
        if p & PRESENT != 0 {
            return (frame_of(p), p & DIRTY != 0);
        }
        // The device's swap_in: wait while the slot is being written.
        loop {
            let mut b = self.busy.lock().unwrap();
            if !b.writing {
                b.faulting = true;
                break;
            }
            drop(b);
            loom::thread::yield_now();
        }
        let f = if self.cached.load(SeqCst) {
            assert!(!self.freed.load(SeqCst), "a freed frame in the swap cache");
            0
        } else {
            let data = self.slot.load(SeqCst);
            assert_ne!(data, 0, "a read of a slot never written");
            self.frames[1].store(data, SeqCst);
            1
        };
        self.pte.store(PRESENT | DIRTY | if f == 1 { FRAME_B } else { 0 }, SeqCst);
        // swapped_in: the mapping shows from here on.
        self.busy.lock().unwrap().faulting = false;
        (f, true)
    }

    /// What the task reads now: its frame, else the swap cache, else the
    /// slot.
    fn check(&self) {
        let p = self.pte.load(SeqCst);
        let freed = self.freed.load(SeqCst);
        let v = if p & PRESENT != 0 {
            assert!(frame_of(p) != 0 || !freed, "a freed frame is mapped");
            self.frames[frame_of(p)].load(SeqCst)
        } else if self.cached.load(SeqCst) {
            assert!(!freed, "a freed frame is cached");
            self.frames[0].load(SeqCst)
        } else {
            self.slot.load(SeqCst)
        };
        assert!(v == NEW, "the write was lost: the page reads {v}");
    }
}

/// Which evictor a model runs.
#[derive(Clone, Copy)]
enum Order {
    UnmapFirst,
    WriteFirst,
}

fn run(order: Order, start: Start) {
    let w = Arc::new(World::new(start));
    let tlb_dirty = matches!(start, Start::Fresh);
    let task = {
        let w = w.clone();
        spawn(move || w.store(tlb_dirty))
    };
    match order {
        Order::UnmapFirst => w.evict_unmap_first(matches!(start, Start::Fresh)),
        Order::WriteFirst => w.evict_write_first(),
    }
    task.join().unwrap();
    w.check();
}

/// A fresh page evicted unmap first while the task stores to it.
#[test]
fn unmap_first_keeps_a_store_to_a_fresh_page() {
    model(|| run(Order::UnmapFirst, Start::Fresh));
}

/// A page in the swap cache, mapped clean, evicted unmap first while the
/// task stores to it (setting the dirty bit in the PTE, or faulting).
#[test]
fn unmap_first_keeps_a_store_to_a_cached_page() {
    model(|| run(Order::UnmapFirst, Start::Cached));
}

/// The negative check: the old order loses the store in some
/// interleaving (the store lands between the slot write and the unmap),
/// and the model finds it.
#[test]
#[should_panic(expected = "the write was lost")]
fn write_first_loses_a_store() {
    model(|| run(Order::WriteFirst, Start::Fresh));
}
