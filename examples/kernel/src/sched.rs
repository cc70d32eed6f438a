//! The scheduler: kernel threads, each on its own vmalloc'ed stack (with
//! the unmapped page below it as a guard), switched by [`switch_stack`]
//! and run round robin by [`run`] on the boot stack, as xv6's scheduler
//! does. A thread that belongs to a task names the task's space; [`run`]
//! loads that space's page tables into CR3 before every switch to the
//! thread.
//!
//! In the kernel, threads are cooperative: a thread runs until it calls
//! [`yield_now`] (back to the scheduler, which runs the next thread) or
//! [`sleep`] (not run again until [`wake`]), or ends: by returning, or by
//! [`exit`] from a fault handler when it faulted in a way that cannot be
//! resolved (a bad access, a stack overflow, the OOM killer). The
//! scheduler then frees its stack: the kernel goes on. A thread ended while
//! it waits ([`kill_space`]) is never resumed. Either way, what its stack
//! frames owned is not dropped; what the thread's closure owns is.
//!
//! In ring 3, threads are preempted: the timer interrupt calls
//! [`yield_now`] for a thread that has had its [`SLICE_MS`].
//!
//! One CPU, and the kernel runs with interrupts off (only ring 3 is
//! interrupted), so nothing runs between a switch's halves: the table lock
//! is never held across a switch.

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use mm_types::VirtAddr;
use mm_vma::SpaceId;
use mm_vmalloc::VmallocError;

use crate::vmem;

// switch_stack(save: *mut u64 /* rdi */, load: u64 /* rsi */): saves the
// callee-saved registers on the current stack and its stack pointer in
// `*save`, then takes the stack at `load` and restores its registers. The
// `ret` returns to whoever switched away from that stack (or, on a new
// thread's stack, enters `thread_start`).
core::arch::global_asm!(
    ".pushsection .text",
    ".global switch_stack",
    "switch_stack:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rdi], rsp",
    "mov rsp, rsi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".popsection",
);

extern "C" {
    fn switch_stack(save: *mut u64, load: u64);
}

/// How a thread ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Its closure returned.
    Done,
    /// An exception it could not survive: the vector, and for page faults
    /// the address.
    Fault {
        /// Exception vector.
        vector: u8,
        /// CR2 for page faults, 0 otherwise.
        addr: u64,
    },
    /// It ran off the bottom of its stack into the guard page (a double
    /// fault: the CPU could not push the page fault's frame).
    StackOverflow {
        /// The address in the guard page.
        addr: u64,
    },
    /// The OOM killer picked its task.
    OomKilled,
    /// Another thread ended it (the task was killed).
    Killed,
    /// Its user program exited (system call `exit`) with this status.
    Exited {
        /// The status.
        status: u64,
    },
}

impl core::fmt::Display for Exit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Exit::Done => f.write_str("done"),
            Exit::Fault { vector: 14, addr } => write!(f, "page fault at {addr:#x}"),
            Exit::Fault { vector, .. } => write!(f, "{} (vector {vector})", crate::interrupts::name(vector as u64)),
            Exit::StackOverflow { addr } => write!(f, "stack overflow at {addr:#x}"),
            Exit::OomKilled => f.write_str("killed by the OOM killer"),
            Exit::Killed => f.write_str("killed"),
            Exit::Exited { status } => write!(f, "exited with status {status}"),
        }
    }
}

/// A thread that ended, as [`run`] reports it.
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    /// Its name.
    pub name: &'static str,
    /// Its task's space, if it had one.
    pub space: Option<SpaceId>,
    /// How it ended.
    pub exit: Exit,
}

/// What the CPU needs to know of the running thread.
#[derive(Clone, Copy, Debug)]
pub struct Current {
    /// Its name.
    pub name: &'static str,
    /// Its task's space.
    pub space: Option<SpaceId>,
    /// Its stack: lowest address and one past the highest.
    pub stack: (u64, u64),
}

struct Thread {
    name: &'static str,
    space: Option<SpaceId>,
    /// Saved stack pointer while it does not run.
    rsp: u64,
    stack: (u64, u64),
    body: Box<dyn FnMut() + Send>,
    exit: Option<Exit>,
    /// Waits for [`wake`]; not run until then.
    asleep: bool,
}

struct Sched {
    /// Boxed so that `rsp` and `body` stay put while the vector changes:
    /// switches and `thread_start` hold raw pointers to them.
    #[allow(clippy::vec_box)]
    threads: Vec<Box<Thread>>,
    current: Option<usize>,
    next: usize,
    /// The scheduler's own saved stack pointer while a thread runs.
    sched_rsp: u64,
    /// When the running thread got the CPU (ms).
    slice_start: u64,
}

static SCHED: spin::Mutex<Sched> =
    spin::Mutex::new(Sched { threads: Vec::new(), current: None, next: 0, sched_rsp: 0, slice_start: 0 });

/// Creates a thread running `body` on a fresh vmalloc'ed stack, in the
/// address space `space` (the kernel's tables if `None`). It first runs
/// when [`run`] gets to it.
pub fn spawn(
    name: &'static str,
    space: Option<SpaceId>,
    body: impl FnMut() + Send + 'static,
) -> Result<(), VmallocError> {
    let vm = vmem::vm().ok_or(VmallocError::BadConfig("no vmalloc yet"))?;
    let (bottom, top) = vmem::alloc_stack(vm)?;
    // The first switch pops six registers and returns into `thread_start`,
    // with the stack as a call would leave it (8 below a 16-byte boundary,
    // where a zero return address ends backtraces).
    let frame: [u64; 8] = [0, 0, 0, 0, 0, 0, thread_start as *const () as u64, 0];
    let rsp = top - 8 * frame.len() as u64;
    for (i, w) in frame.iter().enumerate() {
        // SAFETY: the 64 bytes below `top` are inside the stack just allocated, mapped read-write and
        // used by nothing else.
        unsafe { core::ptr::write_volatile((rsp + 8 * i as u64) as *mut u64, *w) };
    }
    let t = Thread { name, space, rsp, stack: (bottom, top), body: Box::new(body), exit: None, asleep: false };
    SCHED.lock().threads.push(Box::new(t));
    Ok(())
}

/// Where a new thread starts (returned into by its first switch).
extern "C" fn thread_start() -> ! {
    let body: *mut (dyn FnMut() + Send) = {
        let mut s = SCHED.lock();
        let i = s.current.expect("a thread runs");
        &mut *s.threads[i].body
    };
    // SAFETY: the closure lives in this thread's boxed entry, which the scheduler removes only after
    // the thread ended and it is off this stack; nothing else touches the closure.
    unsafe { (*body)() };
    exit(Exit::Done)
}

/// The running thread, if any.
pub fn current() -> Option<Current> {
    let s = SCHED.lock();
    let t = &s.threads[s.current?];
    Some(Current { name: t.name, space: t.space, stack: t.stack })
}

/// Threads that have not ended, besides the running one.
pub fn others() -> usize {
    let s = SCHED.lock();
    s.threads.iter().enumerate().filter(|(i, t)| Some(*i) != s.current && t.exit.is_none()).count()
}

/// Gives the CPU to the next thread; returns when this one's turn comes
/// again. Does nothing outside a thread.
pub fn yield_now() {
    let (save, load) = {
        let mut s = SCHED.lock();
        let Some(i) = s.current else { return };
        let load = s.sched_rsp;
        (&raw mut s.threads[i].rsp, load)
    };
    // SAFETY: `save` points into this thread's boxed entry, which stays put while the thread lives;
    // `load` is the scheduler's stack as `run` left it in its own switch. One CPU: nothing else runs
    // until the scheduler switches back.
    unsafe { switch_stack(save, load) };
}

/// A thread's time slice: the timer preempts a ring 3 thread that has run
/// this long.
pub const SLICE_MS: u64 = 10;

/// Whether the running thread has had its time slice.
pub fn slice_used() -> bool {
    crate::clock::now_ms() >= SCHED.lock().slice_start + SLICE_MS
}

/// Gives up the CPU until [`wake`] names the running thread (or until no
/// other thread can run).
pub fn sleep() {
    {
        let mut s = SCHED.lock();
        let Some(i) = s.current else { return };
        s.threads[i].asleep = true;
    }
    yield_now();
}

/// Makes the sleeping threads called `name` runnable; whether there was
/// one.
pub fn wake(name: &str) -> bool {
    let mut woke = false;
    for t in SCHED.lock().threads.iter_mut().filter(|t| t.asleep && t.name == name) {
        t.asleep = false;
        woke = true;
    }
    woke
}

/// Ends the running thread with `why` and switches to the scheduler, which
/// frees its stack. Called by the thread's own code or by a fault handler
/// running on its behalf (on its stack or on the double-fault stack).
///
/// Panics outside a thread.
pub fn exit(why: Exit) -> ! {
    let load = {
        let mut s = SCHED.lock();
        let i = s.current.expect("exit outside a thread");
        s.threads[i].exit = Some(why);
        s.sched_rsp
    };
    let mut abandoned = 0u64;
    // SAFETY: as in `yield_now`; this stack is never switched back to (the scheduler sees `exit` set),
    // so its stack pointer goes to a local.
    unsafe { switch_stack(&raw mut abandoned, load) };
    unreachable!("an ended thread was resumed")
}

/// Ends every waiting thread of task `space` (its task was killed): they
/// are never resumed. The running thread is left to the caller, which
/// calls [`exit`].
pub fn kill_space(space: SpaceId, why: Exit) {
    let mut s = SCHED.lock();
    let cur = s.current;
    for (i, t) in s.threads.iter_mut().enumerate() {
        if Some(i) != cur && t.space == Some(space) && t.exit.is_none() {
            t.exit = Some(why);
        }
    }
}

/// How the thread of task `space` ended, if one did (the first, in
/// [`run`]'s report).
pub fn exit_of(ended: &[Ended], space: SpaceId) -> Option<Exit> {
    ended.iter().find(|e| e.space == Some(space)).map(|e| e.exit)
}

/// Threads called `name` that have not ended.
pub fn alive(name: &str) -> usize {
    SCHED.lock().threads.iter().filter(|t| t.name == name && t.exit.is_none()).count()
}

/// Runs the threads round robin until every one has ended; `activate`
/// loads a thread's address space before it runs (false: the space is
/// gone, and the thread ends without running). Returns how each ended, in
/// the order they ended.
pub fn run(mut activate: impl FnMut(Option<SpaceId>) -> bool) -> Vec<Ended> {
    let mut ended = Vec::new();
    loop {
        reap(&mut ended);
        let (i, space) = {
            let mut s = SCHED.lock();
            if s.threads.is_empty() {
                return ended;
            }
            // The next thread that is not asleep; if all are, they are
            // all woken (nothing else could wake them).
            let n = s.threads.len();
            let awake = (0..n).map(|k| (s.next + k) % n).find(|&i| !s.threads[i].asleep);
            let i = awake.unwrap_or_else(|| {
                s.threads.iter_mut().for_each(|t| t.asleep = false);
                s.next % n
            });
            s.next = i + 1;
            (i, s.threads[i].space)
        };
        if !activate(space) {
            SCHED.lock().threads[i].exit = Some(Exit::OomKilled);
            continue;
        }
        let (save, load) = {
            let mut s = SCHED.lock();
            s.current = Some(i);
            // Traps from ring 3 land at the top of the thread's stack.
            crate::interrupts::set_kernel_stack(s.threads[i].stack.1);
            s.slice_start = crate::clock::now_ms();
            let load = s.threads[i].rsp;
            (&raw mut s.sched_rsp, load)
        };
        // SAFETY: `save` is the scheduler's slot in a static; `load` is the thread's stack as `spawn`
        // laid it out or as its last `yield_now` left it. The thread switches back through `yield_now`
        // or `exit`.
        unsafe { switch_stack(save, load) };
        SCHED.lock().current = None;
    }
}

/// Removes ended threads and frees their stacks (the scheduler runs on its
/// own stack here).
fn reap(ended: &mut Vec<Ended>) {
    let gone: Vec<Box<Thread>> = {
        let mut s = SCHED.lock();
        let (gone, live) = core::mem::take(&mut s.threads).into_iter().partition(|t| t.exit.is_some());
        s.threads = live;
        gone
    };
    for t in gone {
        let exit = t.exit.expect("ended");
        ended.push(Ended { name: t.name, space: t.space, exit });
        if let Some(vm) = vmem::vm() {
            let at = VirtAddr::new(t.stack.0).expect("a vmalloc address");
            if let Err(e) = vm.vfree(at) {
                crate::kprintln!("sched: freeing the stack of {} failed: {}", t.name, e);
            }
        }
    }
}

/// Whether `addr` lies in the guard page below the running thread's stack.
pub fn in_guard(addr: u64) -> bool {
    current().is_some_and(|c| (c.stack.0 - 4096..c.stack.0).contains(&addr))
}
