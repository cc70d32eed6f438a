//! Per-CPU data: one [`Cpu`] per processor in a static array, reached
//! through the GS base (IA32_GS_BASE holds the CPU's own entry while it
//! runs kernel code; `swapgs` trades it for the user value on the way to
//! ring 3 and back, in `interrupts.rs` and `user.rs`). The index read from
//! there feeds mm-types' `CpuLocal` ([`GsCpu`]), so the per-CPU caches of
//! mm-buddy and mm-slab are really per CPU.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use mm_types::percpu::CpuLocal;
use x86_64::registers::model_specific::{GsBase, KernelGsBase};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

pub use crate::acpi::MAX_CPUS;

/// Event counts of one CPU, printed by the `smp` scenario.
#[derive(Default)]
pub struct Counters {
    /// Timer interrupts taken.
    pub ticks: AtomicU64,
    /// TLB shootdowns this CPU started.
    pub shootdowns: AtomicU64,
    /// Shootdown interrupts this CPU sent.
    pub ipis_sent: AtomicU64,
    /// Shootdown interrupts this CPU handled.
    pub ipis_received: AtomicU64,
    /// Page faults in user memory this CPU resolved.
    pub faults: AtomicU64,
    /// Threads this CPU switched to.
    pub switches: AtomicU64,
    /// Microseconds this CPU spent waiting for shootdown acknowledgements
    /// (from its first NMI of each shootdown to the last acknowledgement).
    pub shootdown_wait_us: AtomicU64,
    /// Times this CPU halted for a lock another CPU held (the disk's).
    pub lock_waits: AtomicU64,
    /// Microseconds it spent so.
    pub lock_wait_us: AtomicU64,
}

/// One CPU's own data. The first three words are read through GS by
/// offset (`this` at 0, `index` at 8): keep them first.
#[repr(C, align(64))]
pub struct Cpu {
    /// This entry's own address (GS-relative 0).
    this: AtomicU64,
    /// The logical CPU number, 0 for the boot CPU (GS-relative 8).
    index: AtomicU32,
    /// The local APIC id.
    apic_id: AtomicU32,
    /// The task state segment: RSP0 (the stack ring 3 traps onto), IST 1
    /// (double faults) and IST 2 (NMIs). Written only by its own CPU.
    tss: UnsafeCell<TaskStateSegment>,
    /// This CPU's GDT (the same layout on every CPU, its own TSS).
    pub gdt: spin::Once<crate::interrupts::Tables>,
    /// What it did.
    pub counters: Counters,
}

// SAFETY: every field is atomic or a `spin::Once` but `tss`, which only its own CPU writes
// (`set_kernel_stack`, with interrupts off) and the hardware reads.
unsafe impl Sync for Cpu {}

impl Cpu {
    const fn new() -> Cpu {
        Cpu {
            this: AtomicU64::new(0),
            index: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            tss: UnsafeCell::new(TaskStateSegment::new()),
            gdt: spin::Once::new(),
            counters: Counters {
                ticks: AtomicU64::new(0),
                shootdowns: AtomicU64::new(0),
                ipis_sent: AtomicU64::new(0),
                ipis_received: AtomicU64::new(0),
                faults: AtomicU64::new(0),
                switches: AtomicU64::new(0),
                shootdown_wait_us: AtomicU64::new(0),
                lock_waits: AtomicU64::new(0),
                lock_wait_us: AtomicU64::new(0),
            },
        }
    }

    /// The logical CPU number.
    pub fn index(&self) -> usize {
        self.index.load(Ordering::Relaxed) as usize
    }

    /// The local APIC id.
    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// The TSS's address, for the GDT descriptor (no reference is made:
    /// `set_kernel_stack` writes it later).
    pub fn tss(&'static self) -> *const TaskStateSegment {
        self.tss.get()
    }
}

static CPUS: [Cpu; MAX_CPUS] = [const { Cpu::new() }; MAX_CPUS];

/// CPUs that have started (the boot CPU counts from [`init`]).
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Sets up CPU `index`'s entry and points this CPU's GS base at it. Runs
/// once per CPU, first thing in its kernel life (before any allocator
/// call: they read the CPU number through GS).
pub fn init(index: usize, apic_id: u32, double_fault_stack: u64, nmi_stack: u64) -> &'static Cpu {
    let cpu = &CPUS[index];
    cpu.this.store(cpu as *const Cpu as u64, Ordering::Relaxed);
    cpu.index.store(index as u32, Ordering::Relaxed);
    cpu.apic_id.store(apic_id, Ordering::Relaxed);
    // SAFETY: this CPU is the only user of its entry so far (the one that started it waits until
    // it is online); the TSS is not loaded yet.
    unsafe {
        let tss = &mut *cpu.tss.get();
        tss.interrupt_stack_table[0] = VirtAddr::new(double_fault_stack);
        tss.interrupt_stack_table[1] = VirtAddr::new(nmi_stack);
    }
    GsBase::write(VirtAddr::new(cpu as *const Cpu as u64));
    // The value `swapgs` gives user mode (and takes back on entry).
    KernelGsBase::write(VirtAddr::zero());
    ONLINE.fetch_add(1, Ordering::Release);
    cpu
}

/// This CPU's entry.
pub fn this() -> &'static Cpu {
    let p: u64;
    // SAFETY: `init` pointed GS at this CPU's entry before any caller could run here, and kernel
    // code always runs with the kernel's GS base (entries from ring 3 `swapgs` first).
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags)) };
    // SAFETY: `p` is the address of an element of the static `CPUS`.
    unsafe { &*(p as *const Cpu) }
}

/// This CPU's number, in one instruction (a thread cannot move between
/// CPUs halfway through it).
pub fn index() -> usize {
    let i: u32;
    // SAFETY: as in `this`; offset 8 is `index`.
    unsafe { core::arch::asm!("mov {:e}, gs:[8]", out(reg) i, options(nostack, readonly, preserves_flags)) };
    i as usize
}

/// CPU `i`'s entry.
pub fn cpu(i: usize) -> &'static Cpu {
    &CPUS[i]
}

/// How many CPUs are running.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// Sets the stack this CPU switches to when ring 3 traps into the kernel:
/// the top of the running thread's kernel stack (the scheduler calls this
/// on every switch).
pub fn set_kernel_stack(top: u64) {
    let cpu = this();
    // SAFETY: only this CPU writes its TSS, with interrupts off; the CPU reads RSP0 only on a
    // privilege change, which cannot happen while this kernel code runs.
    unsafe { (*cpu.tss.get()).privilege_stack_table[0] = VirtAddr::new(top) };
}

/// The kernel's CPU source: the CPU number through GS.
#[derive(Clone, Copy, Debug)]
pub struct GsCpu;

impl CpuLocal for GsCpu {
    fn current_cpu(&self) -> usize {
        index()
    }

    fn cpu_count(&self) -> usize {
        MAX_CPUS
    }
}
