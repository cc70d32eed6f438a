//! Exceptions on stable Rust (every one a program can raise), the timer
//! interrupt and the system-call gate: `global_asm!` entry stubs save the
//! registers and call [`exception_dispatch`] with a pointer to them; the
//! double fault runs on its own stack (IST 1 of the CPU's TSS), so it is
//! reported even when the kernel stack is gone. The kernel runs with
//! interrupts off, so the timer arrives only in ring 3 and in the idle
//! loop; TLB shootdowns come as NMIs (`shootdown.rs`), which a CPU takes
//! even while it spins on a lock with interrupts off.
//!
//! A page fault in the loaded user address space goes to mm-vma
//! ([`crate::tasks::handle_fault`], or [`crate::uspace::handle_fault`] in
//! the smoke test); when it is resolved the stub restores the registers and
//! retries the access. Any other exception is reported; it ends the thread
//! it happened in (and the thread's task), or the run if it happened outside
//! a thread.

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::control::Cr2;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::{PrivilegeLevel, VirtAddr};

use crate::kprintln;
use crate::percpu::MAX_CPUS;
use crate::sched::Exit;

macro_rules! stubs {
    ($($name:ident: $vector:literal, $errcode:literal;)*) => {
        core::arch::global_asm!(
            // Whatever section the module's previous assembly left open
            // (boot.rs ends in .bss), the stubs are code.
            ".pushsection .text",
            $(
                concat!(".global ", stringify!($name)),
                concat!(stringify!($name), ":"),
                // Vectors without a CPU-pushed error code get a zero one.
                concat!(".if ", $errcode, " == 0"),
                "push 0",
                ".endif",
                concat!("push ", $vector),
                "jmp exception_common",
            )*
            "exception_common:",
            // From ring 3 (CS, 24 bytes up, has RPL 3): take the kernel's
            // GS base (percpu.rs).
            "test byte ptr [rsp + 24], 3",
            "jz 5f",
            "swapgs",
            "5:",
            "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
            "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
            "mov rdi, rsp",
            "cld",
            "call exception_dispatch",
            // Resolved (a user page fault): restore and retry the access.
            "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
            "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
            "add rsp, 16",
            // Back to ring 3: give it its GS base back.
            "test byte ptr [rsp + 8], 3",
            "jz 6f",
            "swapgs",
            "6:",
            "iretq",
            // NMIs (TLB shootdowns, `shootdown.rs`) can arrive anywhere,
            // even between a `swapgs` and its `iretq`: their handler does
            // not use GS, and saves only what a call clobbers. The CPU
            // aligned the stack to 16 before its 5-word frame; nine pushes
            // leave it aligned for the call.
            ".global nmi_stub",
            "nmi_stub:",
            "push rax", "push rcx", "push rdx", "push rsi", "push rdi",
            "push r8", "push r9", "push r10", "push r11",
            "cld",
            // The interrupted instruction's address is above the nine
            // saved registers.
            "mov rdi, rsp",
            "call nmi_dispatch",
            "pop r11", "pop r10", "pop r9", "pop r8",
            "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
            "iretq",
            ".popsection",
        );
        extern "C" {
            $(fn $name();)*
            fn nmi_stub();
        }
    };
}

stubs! {
    divide_error_stub: 0, 0;
    debug_stub: 1, 0;
    breakpoint_stub: 3, 0;
    invalid_opcode_stub: 6, 0;
    device_not_available_stub: 7, 0;
    double_fault_stub: 8, 1;
    invalid_tss_stub: 10, 1;
    segment_not_present_stub: 11, 1;
    stack_segment_stub: 12, 1;
    general_protection_stub: 13, 1;
    page_fault_stub: 14, 1;
    x87_stub: 16, 0;
    alignment_check_stub: 17, 1;
    simd_stub: 19, 0;
    timer_stub: 48, 0;
    pic_spurious_master_stub: 39, 0;
    pic_spurious_slave_stub: 47, 0;
    wake_stub: 241, 0;
    apic_spurious_stub: 255, 0;
    syscall_stub: 128, 0;
}

/// What the entry stubs leave on the stack, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// The exception's name.
pub fn name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug exception",
        3 => "breakpoint",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        19 => "SIMD floating-point exception",
        _ => "exception",
    }
}

/// Called by the stubs with interrupts off, on the faulting stack (or IST 1).
/// Returns only for a page fault in user memory that mm-vma resolved: the
/// stub then retries the faulting instruction.
///
/// Any other exception is reported. In a thread, the thread ends with its
/// task (as Linux's oops ends the current task) and the scheduler goes on;
/// outside a thread, the run ends. A double fault is survived only as a
/// thread's stack overflow: the CPU could not push a page fault's frame
/// below the stack, so nothing was left half done, and the handler switches
/// away from its own stack for good.
#[no_mangle]
extern "C" fn exception_dispatch(frame: &ExceptionFrame) {
    if frame.vector == SYSCALL_VECTOR {
        return syscall(frame);
    }
    if frame.vector == crate::clock::TIMER_VECTOR as u64 {
        return timer(frame);
    }
    if frame.vector == crate::lapic::WAKE_VECTOR as u64 {
        // An idle CPU was woken (`smp.rs`): it looks for work itself.
        return crate::lapic::end_of_interrupt();
    }
    let pic = crate::clock::PIC_BASE as u64;
    if frame.vector == crate::lapic::SPURIOUS_VECTOR as u64 || frame.vector == pic + 7 || frame.vector == pic + 15 {
        // Spurious: acknowledged nowhere (Intel SDM, "Spurious Interrupt";
        // the 8259's IRQ 7 and 15 with every line masked).
        return;
    }
    let cr2 = Cr2::read_raw();
    if frame.vector == 14 {
        match crate::uspace::handle_fault(cr2, frame.error_code) {
            Some(Ok(_)) => return,
            Some(Err(e)) => kprintln!("user {}", e),
            None => match crate::tasks::handle_fault(cr2, frame.error_code) {
                Some(Ok(())) => return,
                Some(Err(e)) => kprintln!("task {}", e),
                None => {}
            },
        }
    }
    kprintln!(
        "EXCEPTION {} (vector {}) at rip {:#x}, error code {:#x}, rsp {:#x}",
        name(frame.vector),
        frame.vector,
        frame.rip,
        frame.error_code,
        frame.rsp
    );
    if frame.vector == 14 {
        let e = frame.error_code;
        kprintln!(
            "page fault: address {:#x}: {}, {} access, {} mode{}",
            cr2,
            if e & 1 != 0 { "protection violation" } else { "page not present" },
            if e & 16 != 0 {
                "instruction fetch"
            } else if e & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if e & 4 != 0 { "user" } else { "kernel" },
            if e & 8 != 0 { ", reserved bit set" } else { "" }
        );
    }
    if frame.vector == 14 || frame.vector == 8 {
        crate::vmem::explain(cr2);
    }
    if let Some(t) = crate::sched::current() {
        let why = match frame.vector {
            8 if crate::sched::in_guard(cr2) => Some(Exit::StackOverflow { addr: cr2 }),
            8 => None,
            v => Some(Exit::Fault { vector: v as u8, addr: if v == 14 { cr2 } else { 0 } }),
        };
        if let Some(why) = why {
            kprintln!("thread {} ends with its task: {}; the kernel goes on", t.name, why);
            if let Some(id) = t.space {
                crate::tasks::end_task(id);
            }
            crate::sched::exit(why)
        }
    }
    crate::finish(false)
}

/// The system-call vector (`int 0x80`), open to ring 3.
const SYSCALL_VECTOR: u64 = 0x80;

/// A system call from ring 3 (see `user.rs`): `rax` is the call, `rdi` its
/// argument; every register is restored on the way back.
fn syscall(frame: &ExceptionFrame) {
    match frame.rax {
        crate::user::SYS_YIELD => crate::sched::yield_now(),
        crate::user::SYS_EXIT => crate::sched::exit(Exit::Exited { status: frame.rdi }),
        other => {
            kprintln!("system call {} unknown (rip {:#x})", other, frame.rip);
            if let Some(t) = crate::sched::current() {
                if let Some(id) = t.space {
                    crate::tasks::end_task(id);
                }
                crate::sched::exit(Exit::Fault { vector: SYSCALL_VECTOR as u8, addr: 0 })
            }
            crate::finish(false)
        }
    }
}

/// Called by `nmi_stub`: NMIs are TLB shootdowns (`shootdown.rs`). Uses
/// no lock, no allocator and not GS (the NMI may have come between a
/// `swapgs` and its `iretq`).
#[no_mangle]
extern "C" fn nmi_dispatch(saved: *const u64) {
    // SAFETY: `nmi_stub` passes its stack pointer after nine pushes: the CPU's interrupt frame,
    // whose first word is the interrupted RIP, follows them.
    let rip = unsafe { saved.add(9).read() };
    crate::profile::nmi_sample(rip);
    crate::shootdown::handle_nmi();
}

/// Times the timer took the CPU from a ring 3 thread.
static PREEMPTIONS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Times the timer preempted ring 3.
pub fn preemptions() -> u64 {
    PREEMPTIONS.load(core::sync::atomic::Ordering::Relaxed)
}

/// The timer interrupt. In the kernel it can only arrive while a CPU is
/// idle (the kernel runs with interrupts off); from ring 3, when the
/// thread has had its time slice, it yields, and returns to user mode on
/// its next turn.
fn timer(frame: &ExceptionFrame) {
    crate::lapic::end_of_interrupt();
    crate::percpu::this().counters.ticks.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    crate::profile::tick();
    if frame.cs & 3 == 3 && crate::sched::slice_used() {
        PREEMPTIONS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        crate::sched::yield_now();
    }
}

const IST_STACK_SIZE: usize = 16 * 1024;

/// Memory only the CPU uses (through a TSS), never read by Rust code.
#[repr(align(16))]
struct Stack(#[allow(dead_code)] [u8; IST_STACK_SIZE]);

/// Each CPU's double-fault and NMI stacks (IST 1 and 2 of its TSS).
static mut IST_STACKS: [[Stack; 2]; MAX_CPUS] = [const { [const { Stack([0; IST_STACK_SIZE]) }; 2] }; MAX_CPUS];

/// One CPU's GDT and the selectors in it (the same on every CPU).
pub struct Tables {
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    user_code: SegmentSelector,
    user_data: SegmentSelector,
    tss: SegmentSelector,
}

/// The ring 3 code and data selectors (RPL 3), the same in every CPU's GDT.
pub fn user_selectors() -> (u64, u64) {
    let t = crate::percpu::this().gdt.get().expect("interrupts::init ran at boot");
    (t.user_code.0 as u64, t.user_data.0 as u64)
}

static IDT: spin::Once<InterruptDescriptorTable> = spin::Once::new();

/// Sets CPU `index` up: its per-CPU entry in GS (`percpu.rs`), its own
/// GDT with its own TSS (IST 1 for double faults, IST 2 for NMIs), and the
/// IDT every CPU shares. The first thing each CPU does in Rust.
pub fn init(index: usize, apic_id: u32) {
    // SAFETY: only the address of CPU `index`'s stacks is taken.
    let stacks = unsafe { &raw const IST_STACKS[index] };
    let top = |k: usize| stacks as u64 + (k * IST_STACK_SIZE + IST_STACK_SIZE) as u64;
    let cpu = crate::percpu::init(index, apic_id, top(0), top(1));
    let t = cpu.gdt.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        // SAFETY: the TSS is in the static per-CPU array, so it outlives the GDT; its size is a
        // TSS's.
        let tss = gdt.append(unsafe { Descriptor::tss_segment_unchecked(cpu.tss()) });
        Tables { gdt, code, data, user_code, user_data, tss }
    });
    t.gdt.load();
    // SAFETY: the selectors index the GDT just loaded (flat 64-bit kernel code and data), and the
    // TSS is this CPU's, static. GS is not reloaded: that would clear the base `percpu::init` set.
    unsafe {
        CS::set_reg(t.code);
        DS::set_reg(t.data);
        ES::set_reg(t.data);
        SS::set_reg(t.data);
        load_tss(t.tss);
    }
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        let addr = |f: unsafe extern "C" fn()| VirtAddr::new(f as usize as u64);
        // SAFETY: each address is an entry stub above: it saves the registers and calls a dispatcher
        // that returns only when the interrupted code may go on.
        unsafe {
            idt.divide_error.set_handler_addr(addr(divide_error_stub));
            idt.debug.set_handler_addr(addr(debug_stub));
            idt.non_maskable_interrupt.set_handler_addr(addr(nmi_stub)).set_stack_index(1);
            idt.breakpoint.set_handler_addr(addr(breakpoint_stub));
            idt.invalid_opcode.set_handler_addr(addr(invalid_opcode_stub));
            idt.device_not_available.set_handler_addr(addr(device_not_available_stub));
            idt.invalid_tss.set_handler_addr(addr(invalid_tss_stub));
            idt.segment_not_present.set_handler_addr(addr(segment_not_present_stub));
            idt.stack_segment_fault.set_handler_addr(addr(stack_segment_stub));
            idt.general_protection_fault.set_handler_addr(addr(general_protection_stub));
            idt.page_fault.set_handler_addr(addr(page_fault_stub));
            idt.x87_floating_point.set_handler_addr(addr(x87_stub));
            idt.alignment_check.set_handler_addr(addr(alignment_check_stub));
            idt.simd_floating_point.set_handler_addr(addr(simd_stub));
            // IST index 0 is IST 1: the stack set in the TSS above.
            idt.double_fault.set_handler_addr(addr(double_fault_stub)).set_stack_index(0);
            idt[crate::clock::TIMER_VECTOR].set_handler_addr(addr(timer_stub));
            idt[crate::clock::PIC_BASE + 7].set_handler_addr(addr(pic_spurious_master_stub));
            idt[crate::clock::PIC_BASE + 15].set_handler_addr(addr(pic_spurious_slave_stub));
            idt[crate::lapic::WAKE_VECTOR].set_handler_addr(addr(wake_stub));
            idt[crate::lapic::SPURIOUS_VECTOR].set_handler_addr(addr(apic_spurious_stub));
            // The only gate ring 3 may use.
            idt[SYSCALL_VECTOR as u8].set_handler_addr(addr(syscall_stub)).set_privilege_level(PrivilegeLevel::Ring3);
        }
        idt
    });
    idt.load();
}
