//! The local APIC in xAPIC mode (32-bit registers in one MMIO page; QEMU's
//! TCG offers no x2APIC): the per-CPU timer, end of interrupt, and the
//! inter-processor interrupts that start CPUs, wake them and shoot down
//! their TLBs. Every CPU sees its own local APIC at the same physical
//! address, mapped once, uncached, through mm-vmalloc's `ioremap`; the
//! vmalloc window is shared by every address space, so the mapping is
//! reachable whatever CR3 holds.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mm_types::PhysAddr;
use mm_vmalloc::CacheMode;

use crate::vmem::Vm;

/// Register offsets (Intel SDM Vol. 3A, "Advanced Programmable Interrupt
/// Controller").
mod reg {
    pub const ID: u64 = 0x20;
    pub const TPR: u64 = 0x80;
    pub const EOI: u64 = 0xb0;
    pub const SVR: u64 = 0xf0;
    pub const ESR: u64 = 0x280;
    pub const ICR_LOW: u64 = 0x300;
    pub const ICR_HIGH: u64 = 0x310;
    pub const LVT_TIMER: u64 = 0x320;
    pub const LVT_ERROR: u64 = 0x370;
    pub const TIMER_INITIAL: u64 = 0x380;
    pub const TIMER_CURRENT: u64 = 0x390;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
}

/// The vector of spurious local APIC interrupts (no end of interrupt).
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// The vector that wakes an idle CPU (its handler only acknowledges it).
pub const WAKE_VECTOR: u8 = 0xf1;

/// ICR delivery modes and flags.
const FIXED: u32 = 0;
const NMI: u32 = 0b100 << 8;
const INIT: u32 = 0b101 << 8;
const STARTUP: u32 = 0b110 << 8;
const DELIVERY_PENDING: u32 = 1 << 12;
const ASSERT: u32 = 1 << 14;
const MASKED: u32 = 1 << 16;
const PERIODIC: u32 = 1 << 17;

/// The virtual address of the register page (0 until [`map`]).
static BASE: AtomicU64 = AtomicU64::new(0);
/// Timer ticks per millisecond at divide-by-1 (0 until calibrated).
static TICKS_PER_MS: AtomicU32 = AtomicU32::new(0);

fn read(r: u64) -> u32 {
    let base = BASE.load(Ordering::Relaxed);
    assert!(base != 0, "the local APIC is not mapped yet");
    // SAFETY: `map` mapped the register page uncached at `base`; `r` is one of the 16-byte aligned
    // 32-bit registers above, read with one 32-bit access as the xAPIC requires.
    unsafe { core::ptr::read_volatile((base + r) as *const u32) }
}

fn write(r: u64, v: u32) {
    let base = BASE.load(Ordering::Relaxed);
    assert!(base != 0, "the local APIC is not mapped yet");
    // SAFETY: as in `read`, one 32-bit store.
    unsafe { core::ptr::write_volatile((base + r) as *mut u32, v) }
}

/// Maps the local APIC's registers at `phys` (from the MADT) and enables
/// the boot CPU's: see [`enable`].
pub fn map(vm: &Vm, phys: u64) -> Result<(), mm_vmalloc::VmallocError> {
    let phys = PhysAddr::new(phys).map_err(|_| mm_vmalloc::VmallocError::BadConfig("local APIC address"))?;
    let va = vm.ioremap(phys, 4096, CacheMode::Uncached)?;
    BASE.store(va.as_u64(), Ordering::Relaxed);
    enable();
    Ok(())
}

/// Whether the registers are mapped.
pub fn ready() -> bool {
    BASE.load(Ordering::Relaxed) != 0
}

/// Enables this CPU's local APIC: software enable with the spurious
/// vector, every priority accepted, the error interrupt masked (errors
/// stay readable in the ESR), the timer masked until [`start_timer`].
pub fn enable() {
    write(reg::TPR, 0);
    write(reg::SVR, 0x100 | SPURIOUS_VECTOR as u32);
    write(reg::LVT_ERROR, MASKED | 0xfe);
    write(reg::LVT_TIMER, MASKED);
    write(reg::ESR, 0);
}

/// This CPU's local APIC id.
pub fn id() -> u32 {
    read(reg::ID) >> 24
}

/// Acknowledges the interrupt being handled.
pub fn end_of_interrupt() {
    write(reg::EOI, 0);
}

/// Measures the timer's rate against the (calibrated) TSC clock: 10 ms of
/// one-shot count-down at divide-by-1. Returns ticks per millisecond.
pub fn calibrate() -> u32 {
    write(reg::TIMER_DIVIDE, 0b1011);
    write(reg::LVT_TIMER, MASKED);
    write(reg::TIMER_INITIAL, u32::MAX);
    let start = crate::clock::now_us();
    while crate::clock::now_us() < start + 10_000 {
        core::hint::spin_loop();
    }
    let counted = u32::MAX - read(reg::TIMER_CURRENT);
    write(reg::TIMER_INITIAL, 0);
    let per_ms = (counted / 10).max(1);
    TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
    per_ms
}

/// Starts this CPU's timer: periodic, `hz` interrupts a second on
/// `vector` (after [`calibrate`] ran on some CPU: all share the clock).
pub fn start_timer(vector: u8, hz: u32) {
    let per_ms = TICKS_PER_MS.load(Ordering::Relaxed);
    assert!(per_ms != 0, "the local APIC timer is not calibrated");
    write(reg::TIMER_DIVIDE, 0b1011);
    write(reg::LVT_TIMER, PERIODIC | vector as u32);
    write(reg::TIMER_INITIAL, (per_ms as u64 * 1000 / hz as u64).max(1) as u32);
}

/// Stops this CPU's timer (an idle CPU sleeps until it is woken).
pub fn stop_timer() {
    write(reg::TIMER_INITIAL, 0);
}

/// Sends an interrupt command to the CPU with local APIC id `dest` and
/// waits until the local APIC has delivered it. Must not be interrupted
/// between its two register writes: the kernel runs with interrupts off,
/// and no NMI handler sends interrupts.
fn send(dest: u32, command: u32) {
    while read(reg::ICR_LOW) & DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
    write(reg::ICR_HIGH, dest << 24);
    write(reg::ICR_LOW, command);
    while read(reg::ICR_LOW) & DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
}

/// INIT to `dest` (the first step of starting an application processor).
pub fn send_init(dest: u32) {
    send(dest, INIT | ASSERT);
}

/// A start-up IPI to `dest`: it starts in real mode at `page << 12`.
pub fn send_startup(dest: u32, page: u8) {
    send(dest, STARTUP | ASSERT | page as u32);
}

/// A fixed interrupt `vector` to `dest`.
pub fn send_fixed(dest: u32, vector: u8) {
    send(dest, FIXED | ASSERT | vector as u32);
}

/// A non-maskable interrupt to `dest`.
pub fn send_nmi(dest: u32) {
    send(dest, NMI | ASSERT);
}
