//! Starting the application processors and what they do when idle.
//!
//! The boot CPU finds the others in the MADT (`acpi.rs`), copies the
//! real-mode trampoline of `boot.rs` to [`AP_TRAMPOLINE`], and starts each
//! CPU in turn with INIT, then up to two start-up IPIs (Intel SDM Vol. 3A,
//! "Multiple-Processor Management"), leaving its stack (a vmalloc'ed kernel
//! stack with a guard page) and number in a mailbox. The new CPU goes to
//! long mode with the kernel's tables, sets up its per-CPU data, GDT, TSS
//! and local APIC ([`ap_main`]), reports in, and idles: it runs threads of
//! the scheduler when a scenario lets it ([`crate::sched::set_cpus`]), and
//! halts otherwise, woken by its timer.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::acpi::Madt;
use crate::{clock, kprintln, lapic, vmem};

/// Where the trampoline is copied: a page below 1 MiB (a start-up IPI
/// names a page there), clear of the PVH data in pages 0-2, and never
/// given to the frame allocator (the first MiB is reserved). The
/// assembly's `AP_TRAMPOLINE` must match.
pub const AP_TRAMPOLINE: u64 = 0x8000;

/// The mailbox the trampoline reads: the kernel's CR3, and the stack top
/// and number of the CPU being started (one at a time).
#[no_mangle]
static AP_CR3: AtomicU32 = AtomicU32::new(0);
#[no_mangle]
static AP_STACK: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static AP_INDEX: AtomicU64 = AtomicU64::new(0);

/// The number of the last CPU that finished starting.
static READY: AtomicUsize = AtomicUsize::new(0);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// How long a CPU may take to report in before it is given up.
const START_TIMEOUT_US: u64 = 1_000_000;

/// Starts every enabled CPU of `madt` but this one; returns how many CPUs
/// run now (this one included).
pub fn start_cpus(madt: &Madt) -> usize {
    let me = lapic::id();
    let Some(vm) = vmem::vm() else { return 1 };
    let cr3 = x86_64::registers::control::Cr3::read().0.start_address().as_u64();
    // The trampoline loads CR3 in 32-bit mode.
    let Ok(cr3) = u32::try_from(cr3) else {
        kprintln!("smp: the kernel's root table at {:#x} is above 4 GiB: one CPU", cr3);
        return 1;
    };
    AP_CR3.store(cr3, Ordering::Release);
    // SAFETY: linker symbols of the trampoline's bytes in rodata; the copy goes to a reserved low
    // page, identity mapped writable in the kernel's tables, that nothing else uses.
    unsafe {
        let start = &raw const ap_trampoline_start;
        let len = (&raw const ap_trampoline_end as usize) - (start as usize);
        assert!(len <= 4096, "the trampoline fits a page");
        core::ptr::copy_nonoverlapping(start, AP_TRAMPOLINE as *mut u8, len);
    }
    let mut next = 1;
    for &id in madt.apic_ids[..madt.cpus].iter().filter(|&&id| id != me) {
        let (_, top) = match vmem::alloc_stack(vm) {
            Ok(s) => s,
            Err(e) => {
                kprintln!("smp: no stack for the CPU with APIC id {}: {}", id, e);
                break;
            }
        };
        AP_STACK.store(top, Ordering::Release);
        AP_INDEX.store(next as u64, Ordering::Release);
        let start = clock::now_us();
        lapic::send_init(id);
        clock::delay_us(10_000);
        lapic::send_startup(id, (AP_TRAMPOLINE >> 12) as u8);
        clock::delay_us(200);
        if READY.load(Ordering::Acquire) != next {
            // A CPU that started already ignores the second one.
            lapic::send_startup(id, (AP_TRAMPOLINE >> 12) as u8);
        }
        while READY.load(Ordering::Acquire) != next && clock::now_us() < start + START_TIMEOUT_US {
            core::hint::spin_loop();
        }
        if READY.load(Ordering::Acquire) != next {
            // It might still start later and read the mailbox: start no
            // more.
            kprintln!("smp: the CPU with APIC id {} did not start within a second: going on without it", id);
            break;
        }
        next += 1;
    }
    next
}

/// Where an application processor enters Rust (from `boot.rs`), on the
/// stack the boot CPU gave it, with the kernel's tables in CR3.
#[no_mangle]
extern "C" fn ap_main(index: u64) -> ! {
    let index = index as usize;
    crate::interrupts::init(index, lapic::id());
    lapic::enable();
    lapic::start_timer(clock::TIMER_VECTOR, clock::TIMER_HZ);
    crate::shootdown::join();
    // A shootdown of the kernel's tables sent before `join` left this CPU
    // out, and it may have cached a vmalloc translation meanwhile (none is
    // global): one full flush after joining leaves nothing stale, since
    // every change after the join is sent here.
    x86_64::instructions::tlb::flush_all();
    READY.store(index, Ordering::Release);
    loop {
        if !crate::sched::run_one() {
            // No task's tables stay loaded on an idle CPU (`tasks.rs`).
            crate::tasks::unload();
            idle_wait();
        }
    }
}

/// The CPUs halted in [`idle_wait`] (bit = CPU index).
static IDLE: AtomicU64 = AtomicU64::new(0);

/// Waits for an interrupt with interrupts on, then turns them off again.
/// `sti` takes effect after the next instruction, so no interrupt slips in
/// before the `hlt`.
///
/// An idle CPU's timer is stopped (every tick of an idle virtual CPU costs
/// the host a wake-up, and the host may have fewer cores than the guest has
/// CPUs): [`kick`] wakes it when there is work. Waiting for a CPU that
/// runs a thread (the boot CPU at the end of a run), the timer stays on,
/// to look again within a tick.
pub fn idle_wait() {
    let bit = 1 << crate::percpu::index();
    // The sampling CPU keeps ticking: its ticks take the samples.
    let tickless = bit != 1 && !crate::profile::samples_from(crate::percpu::index());
    if tickless {
        lapic::stop_timer();
    }
    IDLE.fetch_or(bit, Ordering::SeqCst);
    // Work queued between the last look and the flag above would wait for
    // a kick that was never sent: look again.
    if !crate::sched::has_work() {
        // The sampling CPU's halts between its ticks are the profiler's,
        // not the workload's idle time.
        let _timed = (!crate::profile::samples_from(crate::percpu::index()))
            .then(|| crate::profile::start(crate::profile::Phase::Idle));
        // SAFETY: the kernel's handlers for every vector that can arrive (timer, wake, spurious)
        // return to the interrupted code; interrupts are off again afterwards, as the kernel expects.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }
    IDLE.fetch_and(!bit, Ordering::SeqCst);
    if tickless {
        lapic::start_timer(clock::TIMER_VECTOR, clock::TIMER_HZ);
    }
}

/// Wakes the idle CPUs of `mask` (bit = CPU index): there is a thread one
/// of them could run (perhaps one bound to a CPU), and an idle CPU's timer
/// is stopped.
pub fn kick(mask: u64) {
    let idle = IDLE.load(Ordering::SeqCst) & mask & !(1 << crate::percpu::index());
    if idle == 0 || !lapic::ready() {
        return;
    }
    for cpu in (0..crate::percpu::MAX_CPUS).filter(|c| idle & (1 << c) != 0) {
        lapic::send_fixed(crate::percpu::cpu(cpu).apic_id(), lapic::WAKE_VECTOR);
    }
}

/// A lock for long critical sections (a disk request, polled to its end):
/// a CPU that finds it taken halts until the holder lets go and wakes it,
/// instead of spinning. On an emulated machine with fewer host cores than
/// CPUs, spinning CPUs take the host time the holder and the emulated
/// device need; a halted CPU gives it back.
///
/// Halting enables interrupts for the wait: the handlers this kernel has
/// (the timer, the wake-up, spurious interrupts, NMIs) take no lock and
/// touch no allocator, so the wait cannot deadlock or break the pinned
/// contract (`frames.rs`).
pub struct HaltLock<T> {
    locked: core::sync::atomic::AtomicBool,
    /// CPUs halted waiting for it (bit = CPU index).
    waiters: AtomicU64,
    value: core::cell::UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard, which the atomic flag makes exclusive.
unsafe impl<T: Send> Sync for HaltLock<T> {}
// SAFETY: as for `Sync`; the lock owns the value.
unsafe impl<T: Send> Send for HaltLock<T> {}

impl<T> HaltLock<T> {
    /// A lock holding `value`.
    pub const fn new(value: T) -> Self {
        HaltLock {
            locked: core::sync::atomic::AtomicBool::new(false),
            waiters: AtomicU64::new(0),
            value: core::cell::UnsafeCell::new(value),
        }
    }

    fn try_take(&self) -> bool {
        self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Takes the lock, halting while another CPU holds it.
    pub fn lock(&self) -> HaltGuard<'_, T> {
        if self.try_take() {
            return HaltGuard { lock: self };
        }
        let cpu = crate::percpu::this();
        let start = clock::now_us();
        let bit = 1 << cpu.index();
        while !self.try_take() {
            self.waiters.fetch_or(bit, Ordering::SeqCst);
            // A release between the failed try and the flag above sent no
            // wake-up to this CPU: try again before halting.
            if self.try_take() {
                self.waiters.fetch_and(!bit, Ordering::SeqCst);
                break;
            }
            // SAFETY: as in `idle_wait`: every handler that can run returns to this code, and
            // interrupts are off again afterwards.
            unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
            self.waiters.fetch_and(!bit, Ordering::SeqCst);
        }
        cpu.counters.lock_waits.fetch_add(1, Ordering::Relaxed);
        cpu.counters.lock_wait_us.fetch_add(clock::now_us() - start, Ordering::Relaxed);
        HaltGuard { lock: self }
    }
}

/// Exclusive access to a [`HaltLock`]'s value; wakes the waiters when
/// dropped.
pub struct HaltGuard<'a, T> {
    lock: &'a HaltLock<T>,
}

impl<T> core::ops::Deref for HaltGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> core::ops::DerefMut for HaltGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for HaltGuard<'_, T> {
    fn drop(&mut self) {
        // A full fence between the release and the look at the waiters
        // (against the waiter's flag then retry in `lock`).
        self.lock.locked.store(false, Ordering::SeqCst);
        let waiters = self.lock.waiters.load(Ordering::SeqCst);
        for cpu in (0..crate::percpu::MAX_CPUS).filter(|c| waiters & (1 << c) != 0) {
            lapic::send_fixed(crate::percpu::cpu(cpu).apic_id(), lapic::WAKE_VECTOR);
        }
    }
}
