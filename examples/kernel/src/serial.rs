//! COM1 (16550 UART at port 0x3F8): the kernel's console.

use core::fmt::{self, Write};

use spin::Mutex;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// The serial port.
pub struct Serial {
    data: Port<u8>,
    line_status: Port<u8>,
}

impl Serial {
    const fn new() -> Self {
        Serial { data: Port::new(COM1), line_status: Port::new(COM1 + 5) }
    }

    /// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
    fn init(&mut self) {
        let regs: [(u16, u8); 7] = [
            (1, 0x00), // no interrupts
            (3, 0x80), // DLAB on
            (0, 0x01), // divisor 1 (115200 baud), low byte
            (1, 0x00), // high byte
            (3, 0x03), // 8 bits, no parity, one stop bit, DLAB off
            (2, 0xc7), // FIFO on, cleared, 14-byte threshold
            (4, 0x03), // DTR, RTS
        ];
        for (offset, value) in regs {
            // SAFETY: COM1 registers; writing them only configures the UART.
            unsafe { Port::<u8>::new(COM1 + offset).write(value) };
        }
    }

    fn write_byte(&mut self, b: u8) {
        // Reading the line status register.
        // SAFETY: writing the data register of COM1 have no effect beyond the UART.
        unsafe {
            while self.line_status.read() & 0x20 == 0 {
                core::hint::spin_loop();
            }
            self.data.write(b);
        }
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

static SERIAL: Mutex<Serial> = Mutex::new(Serial::new());

/// Initialises COM1.
pub fn init() {
    SERIAL.lock().init();
}

/// Writes formatted text (used by the `kprintln!` macro).
pub fn print(args: fmt::Arguments<'_>) {
    // Interrupts stay off in the kernel and no interrupt handler prints, so
    // the lock is never re-entered on one CPU; other CPUs wait their turn.
    let _ = SERIAL.lock().write_fmt(args);
}

/// Writes a panic report: waits a while for the CPU that holds the port,
/// then writes anyway (it may be the panicking CPU itself, or stopped for
/// good), so that a panic is always reported.
pub fn print_panic(args: fmt::Arguments<'_>) {
    for _ in 0..10_000_000 {
        if let Some(mut s) = SERIAL.try_lock() {
            let _ = s.write_fmt(args);
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the holder has not let go for ten million tries; the port's registers tolerate
    // interleaved bytes, and the run ends right after this report.
    unsafe { SERIAL.force_unlock() };
    let _ = SERIAL.lock().write_fmt(args);
}

/// Prints a line prefixed with `mm-kernel: ` to the serial console.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {
        $crate::serial::print(format_args!("mm-kernel: {}\n", format_args!($($arg)*)))
    };
}
