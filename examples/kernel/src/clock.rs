//! The kernel's clock: the TSC, calibrated once against the PIT (channel 2
//! counts 10 ms at 1,193,182 Hz while the TSC runs). Every CPU reads the
//! same TSC (QEMU's vCPUs share the host's), so the clock is valid on all.
//! The timer interrupt is each CPU's local APIC timer (`lapic.rs`); the
//! legacy PICs are masked ([`quiet_pic`]).

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

/// TSC ticks per millisecond (0 until calibrated).
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;

fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter (CR4.TSD is clear: this kernel never sets it).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Calibrates the TSC against 10 ms of the PIT; returns ticks per ms.
pub fn init() -> u64 {
    let mut gate: Port<u8> = Port::new(0x61);
    let mut command: Port<u8> = Port::new(0x43);
    let mut ch2: Port<u8> = Port::new(0x42);
    let count = PIT_HZ / 100;
    // SAFETY: ports 0x61 (speaker gate), 0x43 and 0x42 (PIT channel 2) belong to the PIT, which
    // nothing else in this kernel programs.
    let ticks = unsafe {
        // Gate on, speaker off.
        let g = gate.read();
        gate.write((g & !0x02) | 0x01);
        // Channel 2, low then high byte, mode 0 (out goes high at zero).
        command.write(0b1011_0000);
        ch2.write((count & 0xff) as u8);
        ch2.write((count >> 8) as u8);
        let start = tsc();
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        tsc() - start
    };
    let per_ms = (ticks / 10).max(1);
    TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
    per_ms
}

/// The raw clock: TSC ticks since an arbitrary point.
pub fn ticks() -> u64 {
    tsc()
}

/// `ticks` TSC ticks in microseconds (0 before [`init`]).
pub fn ticks_to_us(ticks: u64) -> u64 {
    match TICKS_PER_MS.load(Ordering::Relaxed) {
        0 => 0,
        t => (ticks as u128 * 1000 / t as u128) as u64,
    }
}

/// Milliseconds since an arbitrary point (0 before [`init`]).
pub fn now_ms() -> u64 {
    match TICKS_PER_MS.load(Ordering::Relaxed) {
        0 => 0,
        t => tsc() / t,
    }
}

/// Microseconds since an arbitrary point (0 before [`init`]).
pub fn now_us() -> u64 {
    match TICKS_PER_MS.load(Ordering::Relaxed) {
        0 => 0,
        t => (tsc() as u128 * 1000 / t as u128) as u64,
    }
}

/// Waits `us` microseconds (spinning on the TSC).
pub fn delay_us(us: u64) {
    let end = now_us() + us;
    while now_us() < end {
        core::hint::spin_loop();
    }
}

/// Timer interrupts per second, on every CPU.
pub const TIMER_HZ: u32 = 1000;

/// The interrupt vector of every CPU's local APIC timer.
pub const TIMER_VECTOR: u8 = 0x30;

/// Where the two 8259 PICs' vectors are moved (0x20-0x2f), away from the
/// CPU's exceptions: only their spurious interrupts (IRQ 7 and 15, vectors
/// 0x27 and 0x2f) can still arrive once every line is masked.
pub const PIC_BASE: u8 = 0x20;

/// Silences the legacy interrupt controllers: both 8259 PICs remapped to
/// [`PIC_BASE`] with every line masked (the firmware leaves the timer line
/// open at vector 8, which the CPU would take for a double fault). The
/// timer is each CPU's local APIC (`lapic.rs`).
pub fn quiet_pic() {
    // SAFETY: ports 0x20/0x21 and 0xa0/0xa1 are the two PICs; nothing else in this kernel uses them,
    // and interrupts stay off in the kernel.
    unsafe {
        let (mut cmd1, mut data1) = (Port::<u8>::new(0x20), Port::<u8>::new(0x21));
        let (mut cmd2, mut data2) = (Port::<u8>::new(0xa0), Port::<u8>::new(0xa1));
        // ICW1: initialise, ICW4 follows; ICW2: vector offsets; ICW3: the
        // slave on line 2; ICW4: 8086 mode; then every line masked.
        cmd1.write(0x11);
        cmd2.write(0x11);
        data1.write(PIC_BASE);
        data2.write(PIC_BASE + 8);
        data1.write(4);
        data2.write(2);
        data1.write(1);
        data2.write(1);
        data1.write(0xff);
        data2.write(0xff);
    }
}
