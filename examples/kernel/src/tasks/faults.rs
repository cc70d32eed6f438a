//! The `faults` scenario: kernel threads doing bad accesses, each
//! contained by the fault handler.

extern crate alloc;

use alloc::vec::Vec;

use mm_types::Protection;
use mm_vma::MapRequest;

use super::{kill_all, machine, run_workers, workers};
use crate::frames::Frames;
use crate::sched::Exit;
use crate::{kprintln, sched};

static RODATA_TARGET: u64 = 0x5eed;

/// The bad accesses of `faults`, by name.
pub const FAULT_CASES: [&str; 4] = ["null", "rodata", "stack", "user"];

/// Does the bad access `case` (in assembly, so the compiler never sees
/// it): a read of address 0, a write to read-only kernel data, pushes until
/// the stack overflows, or a write to the read-only user page at `user`.
fn bad_access(case: &str, user: u64) {
    kprintln!("faults: thread {} does its bad access", case);
    // SAFETY: every access below faults; the fault handler ends this thread without returning here.
    unsafe {
        match case {
            "null" => core::arch::asm!("mov {0}, qword ptr [0]", out(reg) _, options(nostack, readonly)),
            "rodata" => {
                core::arch::asm!("mov qword ptr [{0}], 1", in(reg) &RODATA_TARGET as *const u64, options(nostack))
            }
            "stack" => core::arch::asm!("2:", "push rax", "jmp 2b", options(noreturn)),
            _ => core::arch::asm!("mov qword ptr [{0}], 1", in(reg) user, options(nostack)),
        }
    }
}

/// `faults [case]`: a thread per bad access (each case, or the one named),
/// each in its own task, beside a task that writes and checks 64 pages.
/// Every bad access must be reported and end its thread and task only: the
/// good task finishes intact, and the kernel goes on to the end.
pub fn faults(buddy: &'static Frames, ram_end: u64, which: Option<&str>) -> bool {
    let cases: Vec<&'static str> = match which {
        None => FAULT_CASES.to_vec(),
        Some(w) => match FAULT_CASES.iter().find(|c| **c == w) {
            Some(c) => alloc::vec![*c],
            None => {
                kprintln!("faults: unknown case {:?} (known: {:?})", w, FAULT_CASES);
                return false;
            }
        },
    };
    let Some(m) = machine(buddy, ram_end, 0, 0) else { return false };
    let Some(ws) = workers(m, buddy, &[64]) else { return false };
    let mut expected = Vec::new();
    for &case in &cases {
        let Ok(id) = m.spawn() else { return false };
        let Some(s) = m.tasks.get(id) else { return false };
        let Ok(user) = s.lock().mmap(MapRequest::anonymous(4096, Protection::READ)) else { return false };
        // The raw address the bad access writes to and its fault reports.
        let user = user.as_u64();
        let addr = match case {
            "null" => 0,
            "rodata" => &RODATA_TARGET as *const u64 as u64,
            _ => user,
        };
        if sched::spawn(case, Some(id), move || bad_access(case, user)).is_err() {
            return false;
        }
        expected.push((case, id, addr));
    }
    let (out, ended) = run_workers(m, buddy, ws);
    let mut ok = out.verified == 64 && out.corrupt == 0 && out.errors == 0 && out.killed.is_empty();
    kprintln!("faults: the good task verified {} of 64 pages, corrupt {}", out.verified, out.corrupt);
    for (case, id, addr) in expected {
        let exit = sched::exit_of(&ended, id).unwrap_or(Exit::Done);
        let right = match (case, exit) {
            ("stack", Exit::StackOverflow { .. }) => true,
            (_, Exit::Fault { vector: 14, addr: a }) => a == addr,
            _ => false,
        };
        let gone = m.tasks.get(id).is_none();
        kprintln!("faults: {}: {}; as expected: {}; its task is gone: {}", case, exit, right, gone);
        ok &= right && gone;
    }
    ok &= ended.iter().any(|e| e.name == "kswapd" && e.exit == Exit::Done);
    kill_all(m);
    kprintln!("faults: {} contained; the kernel went on: {}", cases.len(), ok);
    ok
}
