//! The kernel's clock: the TSC, calibrated once against the PIT (channel 2
//! counts 10 ms at 1,193,182 Hz while the TSC runs).

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
    // SAFETY: ports 0x61 (speaker gate), 0x43 and 0x42 (PIT channel 2) belong to the PIT, which nothing else in this kernel uses.
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
