//! Loom models of the TLB shootdown protocol (`mm_paging::smp`). Loom has
//! no interrupts: a "CPU" takes its shootdown interrupt by calling
//! `handle` between its steps, or sleeps until its interrupt line is
//! raised (`ipi`) and then calls it; an initiator waiting for the lock
//! serves itself through `send`'s `serve`.
//!
//! 1. Two initiators and one target: each initiator sends its own batch;
//!    the target applies each exactly once, loom finds no unsynchronised
//!    access to the request slot, and no interleaving deadlocks. Then two
//!    initiators that are each other's target: whichever waits for the
//!    lock must serve the other's request meanwhile.
//! 2. A CPU switching address spaces against an initiator that changes a
//!    PTE, reads `cpus_with` and sends: the CPU caches the translation
//!    (its TLB entry) while the space is loaded, leaves the space (CR3
//!    load: the entry is dropped) and comes back (a fresh walk). Once the
//!    initiator's `send` returned, it frees the old frame; the CPU asserts
//!    that whenever it uses its cached entry for the old frame, the frame
//!    is not freed yet.
//! 3. The same with the CPU's steps in the wrong order (the walk of the
//!    new tables before `set_loaded`), and with the initiator reading its
//!    targets before changing the PTE: the model finds the stale use
//!    (`#[should_panic]`), so it is shown to catch what the order prevents.
//!
//! Weakening the library instead (each tried by hand): the request
//! published, acknowledged or awaited with `Relaxed`, the lock released
//! with `Relaxed`, or the bit cleared before the copy, and loom reports a
//! causality violation on the request slot in model 1; `serve` not
//! called, and model 1 never finishes (a deadlock: loom gives up after its
//! branch limit); the fence left out of `set_loaded` (a `SeqCst` store
//! alone) or of `cpus_with`, and model 2 finds the stale use.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p mm-paging --test loom_shootdown`.
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use loom::sync::{Condvar, Mutex};
use loom::thread::spawn;
use mm_paging::smp::ShootdownState;
use mm_paging::{Flush, FlushBatch, MapFlags, PageTable, TlbFlush, X86_64};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{Order, PageSize, PhysAddr, VirtAddr};

const BASE: u64 = 0x4000_0000;

fn page(i: u64) -> VirtAddr {
    VirtAddr::new(BASE + i * 0x1000).unwrap()
}

/// A one-page flush record for page `i`, as a real unmap makes it (made
/// outside loom's atomics: the page table uses `core`'s).
fn page_flush(i: u64) -> Flush {
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 1 << 20);
    let frames = RefFrameProvider::new(&ram).with_max_order(Order::new(0).unwrap());
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    pt.map(page(i), PhysAddr::new(0x10_0000).unwrap(), PageSize::Size4KiB, MapFlags::KERNEL_DATA).unwrap().ignore();
    pt.unmap_range(page(i), 0x1000, |_| {}).unwrap()
}

fn batch(i: u64) -> FlushBatch {
    let mut b = FlushBatch::new();
    page_flush(i).batch(&mut b);
    b
}

/// The pages a CPU invalidated, in order (full flushes as `u64::MAX`).
#[derive(Default, Debug)]
struct Log(Vec<u64>);

impl TlbFlush for Log {
    fn flush_page(&mut self, va: VirtAddr) {
        self.0.push(va.as_u64());
    }
    fn flush_all(&mut self) {
        self.0.push(u64::MAX);
    }
}

/// The CPUs' interrupt lines: `ipi(cpu)` raises CPU `cpu`'s line, and a
/// CPU with nothing to do sleeps until its line is raised, lowering it. A
/// line raised again before the CPU looked is raised once (the local APIC
/// latches one NMI likewise).
#[derive(Default)]
struct Lines([(Mutex<bool>, Condvar); 3]);

impl Lines {
    fn raise(&self, cpu: usize) {
        let (raised, cv) = &self.0[cpu];
        *raised.lock().unwrap() = true;
        cv.notify_one();
    }

    fn wait(&self, cpu: usize) {
        let (raised, cv) = &self.0[cpu];
        let mut r = raised.lock().unwrap();
        while !*r {
            r = cv.wait(r).unwrap();
        }
        *r = false;
    }
}

/// Model 1: CPUs 0 and 1 each send their own batch to CPU 2 (with
/// `cross`: to each other, and there is no CPU 2), then every CPU takes
/// its interrupts until both initiators are done. Each applies exactly the
/// batches sent to it, once each, and no interleaving deadlocks.
///
/// No CPU spins here for long: loom does not schedule fairly (after a
/// yield it may pick any thread, at no cost in preemptions), so two CPUs
/// spinning could starve the third for ever. A CPU waiting for the lock
/// serves itself (`serve`: `handle`) and then sleeps until its line is
/// raised: by an interrupt for it, or by an initiator that released the
/// lock. The lock holder's wait for the targets is the one spin left.
fn two_initiators(cross: bool) {
    let batches = [batch(0), batch(1)];
    // Three CPUs with three preemptions take about a minute (and pass):
    // two keep the whole file within seconds; two CPUs get three.
    model_with(if cross { 3 } else { 2 }, move || {
        let state = Arc::new(ShootdownState::<3>::new());
        let lines = Arc::new(Lines::default());
        let done = Arc::new(AtomicUsize::new(0));
        // CPU `me` sends `b` to `targets` (if any), then takes interrupts
        // until both initiators are done.
        let cpu = {
            let (state, lines, done) = (state.clone(), lines.clone(), done.clone());
            move |me: usize, targets: u64, b: Option<FlushBatch>| {
                let mut log = Log::default();
                if let Some(b) = b {
                    // Waiting for the lock: served, then asleep until a line is raised.
                    let serve = || {
                        state.handle(me, &mut log);
                        lines.wait(me);
                    };
                    let sent = state.send(me, targets, &b, |cpu| lines.raise(cpu), serve);
                    assert_eq!(sent, targets);
                    done.fetch_add(1, Release);
                    // The lock is free (and, the second time, all is done).
                    (0..3).for_each(|cpu| lines.raise(cpu));
                }
                loop {
                    state.handle(me, &mut log);
                    if done.load(Acquire) == 2 {
                        break;
                    }
                    lines.wait(me);
                }
                log.0
            }
        };
        let p = |i| page(i).as_u64();
        if cross {
            // CPU 1 is this thread.
            let first = {
                let (cpu, b) = (cpu.clone(), batches[0].clone());
                spawn(move || cpu(0, 0b10, Some(b)))
            };
            let second = cpu(1, 0b01, Some(batches[1].clone()));
            assert_eq!(first.join().unwrap(), [p(1)], "CPU 0 applies CPU 1's batch once");
            assert_eq!(second, [p(0)], "CPU 1 applies CPU 0's batch once");
            return;
        }
        let initiators = [0, 1].map(|me| {
            let (cpu, b) = (cpu.clone(), batches[me].clone());
            spawn(move || cpu(me, 0b100, Some(b)))
        });
        // CPU 2 is this thread.
        let mut both = cpu(2, 0, None);
        for t in initiators {
            assert_eq!(t.join().unwrap(), [], "an initiator is no target");
        }
        both.sort();
        assert_eq!(both, [p(0), p(1)], "CPU 2 applies both batches once");
    });
}

/// Model 1: two initiators, one target.
#[test]
fn two_initiators_reach_their_target_once() {
    two_initiators(false);
}

/// Model 1b: two initiators that are each other's targets too: whichever
/// gets the lock second must serve the first one's request while it waits.
#[test]
fn two_initiators_targeting_each_other_do_not_deadlock() {
    two_initiators(true);
}

/// The address space the switching CPU uses, and the one it visits.
const SPACE: u32 = 1;
const OTHER: u32 = 2;
/// What the PTE maps before and after the initiator's change.
const OLD: u64 = 1;
const NEW: u64 = 2;

/// The order of the switching CPU's steps when it loads `SPACE` again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// `set_loaded`, then the CR3 load and its first walk (the protocol).
    LoadedFirst,
    /// The CR3 load and a walk first, `set_loaded` after (broken).
    WalkFirst,
}

/// The order of the initiator's steps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Change the PTE, then read the targets (the protocol).
    PteFirst,
    /// Read the targets, then change the PTE (broken).
    TargetsFirst,
}

struct World {
    state: ShootdownState<2>,
    /// The page table entry of page 0 in `SPACE`: which frame it maps.
    pte: AtomicU64,
    /// The initiator freed frame `OLD` (after its `send` returned).
    freed: AtomicBool,
    /// The initiator is done: nothing more to serve.
    done: AtomicBool,
}

/// CPU 1's TLB: at most one entry, page 0 of the loaded space.
struct Tlb(Option<u64>);

impl TlbFlush for Tlb {
    fn flush_page(&mut self, va: VirtAddr) {
        if va == page(0) {
            self.0 = None;
        }
    }
    fn flush_all(&mut self) {
        self.0 = None;
    }
}

impl World {
    /// An access to page 0 of `SPACE` (loaded): a walk on a TLB miss, then
    /// a use of the entry, which must not name a freed frame.
    fn access(&self, tlb: &mut Tlb) {
        let frame = *tlb.0.get_or_insert_with(|| self.pte.load(Relaxed));
        assert!(frame != OLD || !self.freed.load(SeqCst), "a stale translation used after its frame was freed");
    }

    /// CPU 1: starts in `SPACE` with the old translation cached, uses it,
    /// visits `OTHER`, loads `SPACE` again (in the order `load`) and uses
    /// it, taking the shootdown interrupt between steps.
    fn switching_cpu(&self, load: Load) {
        const ME: usize = 1;
        let mut tlb = Tlb(Some(OLD));
        self.state.handle(ME, &mut tlb);
        self.access(&mut tlb);
        // To `OTHER`: the CR3 load drops every (non-global) entry.
        self.state.set_loaded(ME, OTHER);
        tlb.0 = None;
        self.state.handle(ME, &mut tlb);
        // Back to `SPACE`.
        match load {
            Load::LoadedFirst => {
                self.state.set_loaded(ME, SPACE);
                tlb.0 = None;
                self.access(&mut tlb);
            }
            Load::WalkFirst => {
                // The CR3 load and a first walk (say, of the instruction fetched next).
                tlb.0 = Some(self.pte.load(Relaxed));
                self.state.set_loaded(ME, SPACE);
            }
        }
        self.state.handle(ME, &mut tlb);
        self.access(&mut tlb);
        while !self.done.load(Acquire) {
            self.state.handle(ME, &mut tlb);
            loom::thread::yield_now();
        }
    }

    /// CPU 0: remaps page 0 of `SPACE` to `NEW`, shoots it down on the
    /// CPUs with `SPACE` loaded, then frees the old frame.
    fn initiator(&self, change: Change, batch: &FlushBatch) {
        const ME: usize = 0;
        let targets = match change {
            Change::PteFirst => {
                self.pte.store(NEW, Relaxed);
                self.state.cpus_with(SPACE)
            }
            Change::TargetsFirst => {
                let t = self.state.cpus_with(SPACE);
                self.pte.store(NEW, Relaxed);
                t
            }
        };
        self.state.send(ME, targets, batch, |_| {}, || {});
        self.freed.store(true, SeqCst);
        self.done.store(true, Release);
    }
}

fn switching(load: Load, change: Change) {
    let b = batch(0);
    model_with(3, move || {
        let w = Arc::new(World {
            state: ShootdownState::new(),
            pte: AtomicU64::new(OLD),
            freed: AtomicBool::new(false),
            done: AtomicBool::new(false),
        });
        w.state.set_loaded(1, SPACE);
        let cpu = {
            let w = w.clone();
            spawn(move || w.switching_cpu(load))
        };
        w.initiator(change, &b);
        cpu.join().unwrap();
    });
}

/// Model 2: the protocol's order on both sides.
#[test]
fn a_cpu_switching_spaces_never_uses_a_freed_frame() {
    switching(Load::LoadedFirst, Change::PteFirst);
}

/// Model 3a: the CPU walks the space's tables before it records that it
/// loaded the space; the initiator can miss it and free the frame it cached.
#[test]
#[should_panic(expected = "a stale translation used after its frame was freed")]
fn set_loaded_after_the_cr3_load_is_caught() {
    switching(Load::WalkFirst, Change::PteFirst);
}

/// Model 3b: the initiator reads its targets before it changes the PTE;
/// a CPU loading the space in between walks the old entry and is missed.
#[test]
#[should_panic(expected = "a stale translation used after its frame was freed")]
fn targets_read_before_the_change_is_caught() {
    switching(Load::LoadedFirst, Change::TargetsFirst);
}

/// Explores `f` with at most `preemptions` preemptions per execution.
/// Loom's default thread stacks suffice here (`mm_types::testkit::loom_model`
/// gives 1 MiB ones, whose mapping, once per thread and execution, would
/// cost more than these models).
fn model_with(preemptions: usize, f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}
