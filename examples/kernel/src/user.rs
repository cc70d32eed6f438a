//! Ring 3: user programs, copied into a task's address space, entered with
//! `iretq`, and calling the kernel with `int 0x80` (`interrupts.rs`).
//!
//! The programs are a few dozen bytes of position-independent assembly in
//! the kernel image, copied into a page of the task (written through
//! mm-vma's `write_user`, then made read+execute with `mprotect`). They use
//! registers only; the user stack is there because `iretq` needs one.
//!
//! System calls: `rax` = 0 yields the CPU, `rax` = 1 exits with status
//! `rdi`. Every register but `rax` survives a call. Ring 3 runs with
//! interrupts on, and the timer preempts a program that has had its time
//! slice.

use mm_types::Protection;
use mm_vma::{MapRequest, SpaceId};

use crate::tasks::KMachine;

/// `yield`: give the CPU to the next thread.
pub const SYS_YIELD: u64 = 0;
/// `exit(status)`: end the thread with `status`.
pub const SYS_EXIT: u64 = 1;

// pattern_writer(rdi = base, rsi = pages, rdx = (task + 1) << 48): writes
// the pattern of mm-wiring's `scenario::pattern` to the first 8 bytes of
// each page and its complement to the last 8, yielding every 16 pages; then
// reads every page back and exits with the number found intact.
//
// kernel_reader: reads the kernel image at 1 MiB, which user mode may not.
core::arch::global_asm!(
    ".pushsection .text",
    // rax = the pattern of page rcx, r8 = the page's address.
    ".macro page_pattern",
    "mov rax, rcx",
    "imul rax, r10",
    "xor rax, rdx",
    "or rax, 1",
    "mov r8, rcx",
    "shl r8, 12",
    "add r8, rdi",
    ".endm",
    ".global pattern_writer_start",
    ".global pattern_writer_end",
    "pattern_writer_start:",
    "movabs r10, 0x9e3779b97f4a7c15",
    "xor ecx, ecx",
    "2:",
    "cmp rcx, rsi",
    "jae 4f",
    "page_pattern",
    "mov [r8], rax",
    "not rax",
    "mov [r8 + 4088], rax",
    "inc rcx",
    "test rcx, 15",
    "jnz 2b",
    "xor eax, eax",
    "int 0x80",
    "jmp 2b",
    "4:",
    "xor ecx, ecx",
    "xor r9d, r9d",
    "5:",
    "cmp rcx, rsi",
    "jae 7f",
    "page_pattern",
    "cmp [r8], rax",
    "jne 6f",
    "not rax",
    "cmp [r8 + 4088], rax",
    "jne 6f",
    "inc r9",
    "6:",
    "inc rcx",
    "test rcx, 15",
    "jnz 5b",
    "xor eax, eax",
    "int 0x80",
    "jmp 5b",
    "7:",
    "mov eax, 1",
    "mov rdi, r9",
    "int 0x80",
    "ud2",
    "pattern_writer_end:",
    ".global kernel_reader_start",
    ".global kernel_reader_end",
    "kernel_reader_start:",
    "mov eax, 0x100000",
    "mov rax, [rax]",
    "mov eax, 1",
    "int 0x80",
    "ud2",
    "kernel_reader_end:",
    // A privileged instruction in a program whose stack pointer is not
    // even canonical: the CPU raises a general protection fault (the
    // handler runs on the kernel stack from the TSS, whatever rsp was).
    ".global halter_start",
    ".global halter_end",
    "halter_start:",
    "movabs rsp, 0x8000000000000000",
    "hlt",
    "ud2",
    "halter_end:",
    // Spins for ever, never calling the kernel.
    ".global spinner_start",
    ".global spinner_end",
    "spinner_start:",
    "2:",
    "jmp 2b",
    "spinner_end:",
    ".popsection",
);

extern "C" {
    static pattern_writer_start: u8;
    static pattern_writer_end: u8;
    static kernel_reader_start: u8;
    static kernel_reader_end: u8;
    static halter_start: u8;
    static halter_end: u8;
    static spinner_start: u8;
    static spinner_end: u8;
}

/// The user programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Writes per-page patterns over its region, checks them, exits with
    /// the number of pages found intact.
    PatternWriter,
    /// Reads kernel memory: must be killed by the page fault.
    KernelReader,
    /// Spoils its stack pointer and halts the CPU: must be killed by the
    /// general protection fault.
    Halter,
    /// Loops without a system call: only the timer takes the CPU from it.
    Spinner,
}

impl Program {
    /// The program's machine code.
    fn code(self) -> &'static [u8] {
        // SAFETY: the symbols bound the assembly above, in the kernel's text, which is mapped readable
        // for the kernel's whole life.
        unsafe {
            let (s, e) = match self {
                Program::PatternWriter => (&raw const pattern_writer_start, &raw const pattern_writer_end),
                Program::KernelReader => (&raw const kernel_reader_start, &raw const kernel_reader_end),
                Program::Halter => (&raw const halter_start, &raw const halter_end),
                Program::Spinner => (&raw const spinner_start, &raw const spinner_end),
            };
            core::slice::from_raw_parts(s, e as usize - s as usize)
        }
    }
}

/// Where a program was loaded: its entry point and the top of its stack.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// The first instruction.
    pub entry: u64,
    /// One past the user stack.
    pub stack_top: u64,
}

/// Copies `program` into a new read+execute page of task `id`, and maps a
/// page of stack.
pub fn load(m: &KMachine, id: SpaceId, program: Program) -> Option<Loaded> {
    let s = m.tasks.get(id)?;
    let mut s = s.lock();
    let code = s.mmap(MapRequest::anonymous(4096, Protection::READ | Protection::WRITE)).ok()?;
    s.write_user(code, program.code()).ok()?;
    s.mprotect(code, 4096, Protection::READ | Protection::EXEC).ok()?;
    let stack = s.mmap(MapRequest::anonymous(4096, Protection::READ | Protection::WRITE)).ok()?;
    Some(Loaded { entry: code.as_u64(), stack_top: (stack + 4096).as_u64() })
}

/// Drops to ring 3 at `at.entry` with `args` in `rdi`, `rsi` and `rdx` and
/// every other register zero, interrupts on (the timer preempts ring 3). The caller's kernel frames
/// are given up: system calls and faults from user mode start again at the
/// top of the thread's kernel stack (the TSS's RSP0, set by the scheduler).
///
/// # Safety
///
/// The running thread's task must be loaded in CR3, with `at` loaded into
/// it by [`load`]; the thread's kernel stack must hold nothing still needed.
pub unsafe fn enter(at: Loaded, args: [u64; 3]) -> ! {
    let (code, data) = crate::interrupts::user_selectors();
    // SAFETY: an `iretq` frame for ring 3 (user data and code selectors from the GDT, RFLAGS with IF
    // and the reserved bit); the caller guarantees the mappings.
    unsafe {
        core::arch::asm!(
            "push r11",
            "push r10",
            "push r9",
            "push r8",
            "push rcx",
            "xor eax, eax",
            "xor ebx, ebx",
            "xor ecx, ecx",
            "xor ebp, ebp",
            "xor r8d, r8d",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "xor r11d, r11d",
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            // Ring 3 gets its GS base; the kernel's waits in
            // IA32_KERNEL_GS_BASE for the next entry (`percpu.rs`).
            "swapgs",
            "iretq",
            in("r11") data,
            in("r10") at.stack_top,
            in("r9") 0x202u64,
            in("r8") code,
            in("rcx") at.entry,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            options(noreturn)
        )
    }
}
