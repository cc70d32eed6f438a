//! TLB shootdown: mm-paging's `Shootdown` for this kernel. The initiator
//! publishes one batch of invalidations (mm-paging's `FlushBatch`: up to 32
//! pages, or everything), sets one bit per target CPU in a pending mask,
//! sends each target an NMI, and waits until every target has applied the
//! batch and cleared its bit.
//!
//! Why NMIs: the kernel runs with interrupts off, so a CPU spinning on a
//! lock that the initiator holds (the kernel page table's, a space's)
//! would never take an ordinary interrupt, and the two would wait for each
//! other for ever. An NMI is taken even then. Its handler touches no lock,
//! no allocator and not GS (an NMI can arrive between a `swapgs` and its
//! `iretq`): it finds its CPU through the local APIC id.
//!
//! Who is a target: for the kernel's own tables (vmalloc), every other
//! online CPU; for a user space, the other CPUs whose loaded id names it
//! (Linux's `mm_cpumask`). A CPU stores its loaded id ([`set_loaded`])
//! before it loads the space into CR3, and an initiator reads the ids
//! ([`cpus_with`]) after it changed the page table, each with a full fence
//! between: either the initiator sees the CPU (and flushes it), or the
//! CPU's first walk of the tables comes after the change. A CPU that loads
//! another space flushes its non-global entries with the CR3 load, so one
//! that left is safely skipped.
//!
//! One request is in flight at a time; a CPU waiting for the lock still
//! serves requests sent to it, through the NMI.
//!
//! The protocol itself (lock, request slot, pending mask, loaded ids and
//! their fences) is mm-paging's `smp::ShootdownState`, tested on the host
//! and under loom; this file adds the NMIs, the online mask, the APIC-id
//! lookup and the counters.

use core::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};

use mm_paging::smp::ShootdownState;
use mm_paging::{FlushBatch, HardwareTlb, Shootdown};
use mm_vma::SpaceId;

use crate::percpu::{self, MAX_CPUS};

/// The protocol's shared state: the lock, the request, the pending mask
/// and each CPU's loaded space id.
static STATE: ShootdownState<MAX_CPUS> = ShootdownState::new();

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
    let targets = targets & ONLINE_MASK.load(Ordering::SeqCst);
    // Set by the first NMI sent: the wait counted is from there on, as
    // before the protocol moved to mm-paging.
    let mut start = None;
    let ipi = |i: usize| {
        start.get_or_insert_with(crate::clock::now_us);
        crate::lapic::send_nmi(percpu::cpu(i).apic_id());
        me.counters.ipis_sent.fetch_add(1, Ordering::Relaxed);
    };
    // Requests to this CPU arrive as NMIs while it waits for the lock.
    if STATE.send(me.index(), targets, batch, ipi, || {}) != 0 {
        me.counters.shootdowns.fetch_add(1, Ordering::Relaxed);
        let waited = start.map_or(0, |s| crate::clock::now_us() - s);
        me.counters.shootdown_wait_us.fetch_add(waited, Ordering::Relaxed);
    }
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
    // SAFETY: the kernel runs at CPL 0.
    let mut tlb = unsafe { HardwareTlb::new() };
    if STATE.handle(index, &mut tlb) {
        percpu::cpu(index).counters.ipis_received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Records that this CPU is about to load user space `id` into CR3 (0:
/// the kernel's tables): call it before the CR3 load, and touch the old
/// space's memory no more after it (see the module documentation).
pub fn set_loaded(id: u32) {
    STATE.set_loaded(percpu::index(), id);
}

/// The id of the space this CPU has loaded (0: the kernel's tables).
pub fn loaded() -> u32 {
    STATE.loaded(percpu::index())
}

/// The CPUs (bit = index) that have user space `space` loaded, read after
/// a full fence (see the module documentation).
pub fn cpus_with(space: SpaceId) -> u64 {
    STATE.cpus_with(space.0)
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
