//! The kernel's clock: the TSC, calibrated once against the PIT (channel 2
//! counts 10 ms at 1,193,182 Hz while the TSC runs). PIT channel 0 is the
//! timer interrupt that preempts ring 3 ([`start_timer`]).

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

/// Milliseconds since an arbitrary point (0 before [`init`]).
pub fn now_ms() -> u64 {
    match TICKS_PER_MS.load(Ordering::Relaxed) {
        0 => 0,
        t => tsc() / t,
    }
}

/// Timer interrupts per second.
pub const TIMER_HZ: u64 = 1000;

/// The interrupt vector of the timer (IRQ 0 once the PICs are remapped).
pub const TIMER_VECTOR: u8 = 0x20;

/// Starts the timer: both 8259 PICs remapped to vectors 0x20-0x2f (away
/// from the CPU's exceptions) with every line masked but IRQ 0, and PIT
/// channel 0 as a rate generator at [`TIMER_HZ`]. The kernel itself runs
/// with interrupts off, so the timer only interrupts ring 3 (whose RFLAGS
/// has IF set); [`end_of_interrupt`] acknowledges it.
pub fn start_timer() {
    let divisor = PIT_HZ / TIMER_HZ;
    // SAFETY: ports 0x20/0x21 and 0xa0/0xa1 are the two PICs, 0x43/0x40 PIT channel 0; nothing else in
    // this kernel uses them, and interrupts stay off in the kernel.
    unsafe {
        let (mut cmd1, mut data1) = (Port::<u8>::new(0x20), Port::<u8>::new(0x21));
        let (mut cmd2, mut data2) = (Port::<u8>::new(0xa0), Port::<u8>::new(0xa1));
        // ICW1: initialise, ICW4 follows; ICW2: vector offsets; ICW3: the
        // slave on line 2; ICW4: 8086 mode.
        cmd1.write(0x11);
        cmd2.write(0x11);
        data1.write(TIMER_VECTOR);
        data2.write(TIMER_VECTOR + 8);
        data1.write(4);
        data2.write(2);
        data1.write(1);
        data2.write(1);
        data1.write(0xfe);
        data2.write(0xff);
        // Channel 0, low then high byte, mode 2 (rate generator).
        Port::<u8>::new(0x43).write(0b0011_0100);
        let mut ch0 = Port::<u8>::new(0x40);
        ch0.write((divisor & 0xff) as u8);
        ch0.write((divisor >> 8) as u8);
    }
}

/// Acknowledges the timer interrupt at the master PIC.
pub fn end_of_interrupt() {
    // SAFETY: the non-specific end-of-interrupt command to the master PIC, which `start_timer` set up.
    unsafe { Port::<u8>::new(0x20).write(0x20) };
}
