//! TLB shootdown: mm-paging's `Shootdown` for this kernel. The initiator
//! publishes one batch of invalidations (mm-paging's `FlushBatch`: up to 32
//! pages, or everything), sets one bit per target CPU in [`PENDING`], sends
//! each target an NMI, and waits until every target has applied the batch
//! and cleared its bit.
//!
//! Why NMIs: the kernel runs with interrupts off, so a CPU spinning on a
//! lock that the initiator holds (the kernel page table's, a space's)
//! would never take an ordinary interrupt, and the two would wait for each
//! other for ever. An NMI is taken even then. Its handler touches no lock,
//! no allocator and not GS (an NMI can arrive between a `swapgs` and its
//! `iretq`): it finds its CPU through the local APIC id.
//!
//! Who is a target: for the kernel's own tables (vmalloc), every other
//! online CPU; for a user space, the other CPUs whose `loaded` id names it
//! (Linux's `mm_cpumask`). A CPU stores its `loaded` id before it loads the
//! space into CR3, and an initiator reads the ids after it changed the
//! page table, each with a full fence between: either the initiator sees
//! the CPU (and flushes it), or the CPU's first walk of the tables comes
//! after the change. A CPU that loads another space flushes its non-global
//! entries with the CR3 load, so one that left is safely skipped.
//!
//! One request is in flight at a time ([`LOCK`]); a CPU waiting for the lock
//! still serves requests sent to it, through the NMI.

use core::cell::UnsafeCell;
use core::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};

use mm_paging::{FlushBatch, HardwareTlb, NoShootdown, Shootdown};
use mm_vma::SpaceId;

use crate::percpu::{self, MAX_CPUS};

/// One initiator at a time.
static LOCK: AtomicBool = AtomicBool::new(false);
/// The CPUs (bit = CPU index) that have not applied [`REQUEST`] yet.
static PENDING: AtomicU64 = AtomicU64::new(0);

/// The batch being sent: written by the lock holder while [`PENDING`] is 0,
/// read by the handlers of the CPUs whose bit is set.
struct Request(UnsafeCell<FlushBatch>);

// SAFETY: see the field's rule above: the writer and the readers never overlap, ordered by the
// release store and acquire loads of `PENDING`.
unsafe impl Sync for Request {}

static REQUEST: Request = Request(UnsafeCell::new(FlushBatch::new()));

/// Local APIC id -> CPU index + 1 (0: unknown), for the NMI handler.
static BY_APIC_ID: [AtomicU8; 256] = [const { AtomicU8::new(0) }; 256];

/// CPUs that take shootdowns (bit = index): set by each CPU once its NMI
/// handler can run.
static ONLINE_MASK: AtomicU64 = AtomicU64::new(0);

/// Makes this CPU a shootdown target: called by every CPU once its IDT and
/// local APIC are set up.
pub fn join() {
    let cpu = percpu::this();
    if let Some(slot) = BY_APIC_ID.get(cpu.apic_id() as usize) {
        slot.store(cpu.index() as u8 + 1, Ordering::Relaxed);
    }
    ONLINE_MASK.fetch_or(1 << cpu.index(), Ordering::SeqCst);
}

/// Sends `batch` to the CPUs in `targets` (bit = index; this CPU and CPUs
/// not online are left out) and returns once each has applied it.
pub fn send(targets: u64, batch: &FlushBatch) {
    let me = percpu::this();
    let targets = targets & ONLINE_MASK.load(Ordering::SeqCst) & !(1 << me.index());
    if targets == 0 || batch.is_empty() {
        return;
    }
    while LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        // Requests to this CPU arrive as NMIs meanwhile.
        core::hint::spin_loop();
    }
    // SAFETY: the lock is held and `PENDING` is 0 (the last holder waited for it): no handler reads
    // the request now.
    unsafe { *REQUEST.0.get() = batch.clone() };
    PENDING.store(targets, Ordering::Release);
    let start = crate::clock::now_us();
    for i in (0..MAX_CPUS).filter(|i| targets & (1 << i) != 0) {
        crate::lapic::send_nmi(percpu::cpu(i).apic_id());
        me.counters.ipis_sent.fetch_add(1, Ordering::Relaxed);
    }
    while PENDING.load(Ordering::Acquire) != 0 {
        core::hint::spin_loop();
    }
    me.counters.shootdowns.fetch_add(1, Ordering::Relaxed);
    me.counters.shootdown_wait_us.fetch_add(crate::clock::now_us() - start, Ordering::Relaxed);
    LOCK.store(false, Ordering::Release);
}

/// The NMI handler: applies the pending request if this CPU is a target.
pub fn handle_nmi() {
    if !crate::lapic::ready() {
        return;
    }
    let Some(index) =
        BY_APIC_ID.get(crate::lapic::id() as usize).map(|s| s.load(Ordering::Relaxed)).filter(|&i| i != 0)
    else {
        return;
    };
    let index = index as usize - 1;
    let bit = 1 << index;
    if PENDING.load(Ordering::Acquire) & bit == 0 {
        return;
    }
    // SAFETY: this CPU's bit is set, so the initiator wrote the request before setting it and does
    // not write again until every bit is clear.
    let batch = unsafe { (*REQUEST.0.get()).clone() };
    // SAFETY: the kernel runs at CPL 0.
    batch.finish(&mut unsafe { HardwareTlb::new() }, &NoShootdown);
    percpu::cpu(index).counters.ipis_received.fetch_add(1, Ordering::Relaxed);
    PENDING.fetch_and(!bit, Ordering::Release);
}

/// The CPUs (bit = index) that have user space `space` loaded, read after
/// a full fence (see the module documentation).
pub fn cpus_with(space: SpaceId) -> u64 {
    fence(Ordering::SeqCst);
    (0..MAX_CPUS).filter(|&i| percpu::cpu(i).loaded.load(Ordering::SeqCst) == space.0).fold(0, |mask, i| mask | 1 << i)
}

/// Shootdowns for the kernel's own tables (vmalloc): every other online
/// CPU may cache them.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelShootdown;

impl Shootdown for KernelShootdown {
    fn shootdown(&self, batch: &FlushBatch) {
        fence(Ordering::SeqCst);
        send(u64::MAX, batch);
    }
}
