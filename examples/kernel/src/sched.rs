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
//! Several CPUs share one run queue (this table, behind one lock): with a
//! handful of CPUs and turns of milliseconds, the lock is cold, and one
//! queue balances the load for free (a thread runs wherever a CPU is
//! free). A thread is marked as on its CPU from the switch to it until
//! that CPU's scheduler is back on its own stack, so no other CPU takes it
//! halfway through a switch. The kernel runs with interrupts off (only
//! ring 3 and idle CPUs are interrupted), so nothing runs between a
//! switch's halves on one CPU: the table lock is never held across a
//! switch. Which CPUs run threads is the scenario's choice ([`set_cpus`]):
//! the boot CPU only, unless it says otherwise.

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use mm_types::VirtAddr;
use mm_vma::SpaceId;
use mm_vmalloc::VmallocError;

use core::sync::atomic::Ordering;

use crate::percpu::{self, MAX_CPUS};
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
    /// Unique for the kernel's life.
    id: u64,
    name: &'static str,
    space: Option<SpaceId>,
    /// Saved stack pointer while it does not run.
    rsp: u64,
    stack: (u64, u64),
    body: Box<dyn FnMut() + Send>,
    exit: Option<Exit>,
    /// Waits for [`wake`]; not run until then.
    asleep: bool,
    /// The CPU running it, from the switch to it until its CPU's
    /// scheduler is back on its own stack.
    on_cpu: Option<usize>,
    /// The only CPU it may run on, if any.
    only_on: Option<usize>,
}

/// One CPU's part of the scheduler.
#[derive(Clone, Copy)]
struct CpuSched {
    /// The thread it runs.
    current: Option<u64>,
    /// Its scheduler's saved stack pointer while a thread runs.
    sched_rsp: u64,
    /// When the running thread got the CPU (ms).
    slice_start: u64,
}

struct Sched {
    /// Boxed so that `rsp` and `body` stay put while the vector changes:
    /// switches and `thread_start` hold raw pointers to them.
    #[allow(clippy::vec_box)]
    threads: Vec<Box<Thread>>,
    cpus: [CpuSched; MAX_CPUS],
    next: usize,
    next_id: u64,
    /// Threads that ended since [`run`] started.
    ended: Vec<Ended>,
    /// The CPUs that run threads (bit = CPU index).
    cpu_mask: u64,
    /// Loads a thread's space before it runs, while [`run`] runs.
    activate: Option<fn(Option<SpaceId>) -> bool>,
}

impl Sched {
    fn find(&mut self, id: u64) -> &mut Thread {
        self.threads.iter_mut().find(|t| t.id == id).expect("a running thread is in the table")
    }

    fn current(&mut self) -> Option<&mut Thread> {
        let id = self.cpus[percpu::index()].current?;
        Some(self.find(id))
    }
}

static SCHED: spin::Mutex<Sched> = spin::Mutex::new(Sched {
    threads: Vec::new(),
    cpus: [CpuSched { current: None, sched_rsp: 0, slice_start: 0 }; MAX_CPUS],
    next: 0,
    next_id: 1,
    ended: Vec::new(),
    cpu_mask: 1,
    activate: None,
});

/// Creates a thread running `body` on a fresh vmalloc'ed stack, in the
/// address space `space` (the kernel's tables if `None`). It first runs
/// when [`run`] gets to it, on any CPU of [`set_cpus`].
pub fn spawn(
    name: &'static str,
    space: Option<SpaceId>,
    body: impl FnMut() + Send + 'static,
) -> Result<(), VmallocError> {
    spawn_on(None, name, space, body)
}

/// As [`spawn`], on CPU `cpu` only if it is `Some` (the CPU must be in
/// [`set_cpus`]' set, or the thread never runs).
pub fn spawn_on(
    cpu: Option<usize>,
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
    let body = Box::new(body);
    let mut s = SCHED.lock();
    let id = s.next_id;
    s.next_id += 1;
    let t = Thread {
        id,
        name,
        space,
        rsp,
        stack: (bottom, top),
        body,
        exit: None,
        asleep: false,
        on_cpu: None,
        only_on: cpu,
    };
    s.threads.push(Box::new(t));
    let mask = s.cpu_mask;
    drop(s);
    crate::smp::kick(mask);
    Ok(())
}

/// Lets the CPUs in `mask` (bit = CPU index) run threads; the boot CPU
/// always does. Until a scenario calls this, every thread runs on the
/// boot CPU.
pub fn set_cpus(mask: u64) {
    SCHED.lock().cpu_mask = mask | 1;
}

/// Where a new thread starts (returned into by its first switch).
extern "C" fn thread_start() -> ! {
    let body: *mut (dyn FnMut() + Send) = {
        let mut s = SCHED.lock();
        &mut *s.current().expect("a thread runs").body
    };
    // SAFETY: the closure lives in this thread's boxed entry, which the scheduler removes only after
    // the thread ended and it is off this stack; nothing else touches the closure.
    unsafe { (*body)() };
    exit(Exit::Done)
}

/// The running thread, if any.
pub fn current() -> Option<Current> {
    let mut s = SCHED.lock();
    let t = s.current()?;
    Some(Current { name: t.name, space: t.space, stack: t.stack })
}

/// Threads that have not ended, besides the running one.
pub fn others() -> usize {
    let s = SCHED.lock();
    let cur = s.cpus[percpu::index()].current;
    s.threads.iter().filter(|t| Some(t.id) != cur && t.exit.is_none()).count()
}

/// Gives the CPU to the next thread; returns when this one's turn comes
/// again, perhaps on another CPU. Does nothing outside a thread.
pub fn yield_now() {
    let (save, load) = {
        let mut s = SCHED.lock();
        let load = s.cpus[percpu::index()].sched_rsp;
        let Some(t) = s.current() else { return };
        (&raw mut t.rsp, load)
    };
    // SAFETY: `save` points into this thread's boxed entry, which stays put while the thread lives;
    // `load` is this CPU's scheduler stack as `run_one` left it in its own switch. No other CPU
    // takes this thread until that scheduler marks it off the CPU, after this switch.
    unsafe { switch_stack(save, load) };
}

/// A thread's time slice: the timer preempts a ring 3 thread that has run
/// this long.
pub const SLICE_MS: u64 = 10;

/// Whether the running thread has had its time slice.
pub fn slice_used() -> bool {
    let start = SCHED.lock().cpus[percpu::index()].slice_start;
    crate::clock::now_ms() >= start + SLICE_MS
}

/// Gives up the CPU until [`wake`] names the running thread (or until no
/// other thread can run).
pub fn sleep() {
    {
        let mut s = SCHED.lock();
        let Some(t) = s.current() else { return };
        t.asleep = true;
    }
    yield_now();
}

/// Makes the sleeping threads called `name` runnable; whether there was
/// one.
pub fn wake(name: &str) -> bool {
    let mut woke = false;
    let mut s = SCHED.lock();
    for t in s.threads.iter_mut().filter(|t| t.asleep && t.name == name) {
        t.asleep = false;
        woke = true;
    }
    let mask = s.cpu_mask;
    drop(s);
    if woke {
        crate::smp::kick(mask);
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
        let load = s.cpus[percpu::index()].sched_rsp;
        // A thread another CPU already ended (its task was killed) keeps
        // that reason.
        s.current().expect("exit outside a thread").exit.get_or_insert(why);
        load
    };
    let mut abandoned = 0u64;
    // SAFETY: as in `yield_now`; this stack is never switched back to (the scheduler sees `exit` set),
    // so its stack pointer goes to a local.
    unsafe { switch_stack(&raw mut abandoned, load) };
    unreachable!("an ended thread was resumed")
}

/// Ends every thread of task `space` that waits (its task was killed):
/// they are never resumed. The running thread is left to the caller, which
/// calls [`exit`]; one running on another CPU ends at its next switch.
pub fn kill_space(space: SpaceId, why: Exit) {
    let mut s = SCHED.lock();
    let cur = s.cpus[percpu::index()].current;
    for t in s.threads.iter_mut() {
        if Some(t.id) != cur && t.space == Some(space) && t.exit.is_none() {
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

/// Runs the threads round robin until every one has ended, on this CPU
/// and on the others of [`set_cpus`] (their idle loops call [`run_one`]);
/// `activate` loads a thread's address space before it runs (false: the
/// space is gone, and the thread ends without running). Returns how each
/// ended, in the order they ended.
pub fn run(activate: fn(Option<SpaceId>) -> bool) -> Vec<Ended> {
    let mask = {
        let mut s = SCHED.lock();
        s.activate = Some(activate);
        s.cpu_mask
    };
    // The other CPUs looked for work before there was a run to join.
    crate::smp::kick(mask);
    loop {
        if run_one() {
            continue;
        }
        {
            let mut s = SCHED.lock();
            if s.threads.is_empty() {
                s.activate = None;
                return core::mem::take(&mut s.ended);
            }
        }
        // Every thread left runs on another CPU or sleeps while one does.
        crate::smp::idle_wait();
    }
}

/// Whether a thread waits that this CPU could run (a lock-free-ish look
/// for the idle loop: a false answer only delays the thread to the next
/// kick).
pub fn has_work() -> bool {
    let me = percpu::index();
    let s = SCHED.lock();
    s.activate.is_some()
        && s.cpu_mask & (1 << me) != 0
        && s.threads
            .iter()
            .any(|t| t.exit.is_none() && t.on_cpu.is_none() && !t.asleep && t.only_on.is_none_or(|c| c == me))
}

/// Runs one turn of a thread this CPU may run, if there is one (and a
/// [`run`] is under way); whether it did.
pub fn run_one() -> bool {
    let me = percpu::index();
    reap();
    let (id, space, activate) = {
        let mut s = SCHED.lock();
        let Some(activate) = s.activate else { return false };
        if s.cpu_mask & (1 << me) == 0 || s.threads.is_empty() {
            return false;
        }
        let n = s.threads.len();
        let runnable = |t: &Thread| t.exit.is_none() && t.on_cpu.is_none() && t.only_on.is_none_or(|c| c == me);
        let mut pick = (0..n).map(|k| (s.next + k) % n).find(|&i| runnable(&s.threads[i]) && !s.threads[i].asleep);
        if pick.is_none() && s.threads.iter().all(|t| t.on_cpu.is_none()) {
            // Everyone sleeps and no CPU runs a thread that could wake
            // them: they are all woken.
            s.threads.iter_mut().for_each(|t| t.asleep = false);
            pick = (0..n).map(|k| (s.next + k) % n).find(|&i| runnable(&s.threads[i]));
        }
        let Some(i) = pick else { return false };
        s.next = i + 1;
        let t = &mut s.threads[i];
        t.on_cpu = Some(me);
        (t.id, t.space, activate)
    };
    if !activate(space) {
        let mut s = SCHED.lock();
        let t = s.find(id);
        t.exit = Some(Exit::OomKilled);
        t.on_cpu = None;
        return true;
    }
    let (save, load) = {
        let mut s = SCHED.lock();
        s.cpus[me].current = Some(id);
        s.cpus[me].slice_start = crate::clock::now_ms();
        let (rsp, top) = {
            let t = s.find(id);
            (t.rsp, t.stack.1)
        };
        // Traps from ring 3 land at the top of the thread's stack.
        percpu::set_kernel_stack(top);
        (&raw mut s.cpus[me].sched_rsp, rsp)
    };
    percpu::this().counters.switches.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `save` is this CPU's slot in a static; `load` is the thread's stack as `spawn` laid it
    // out or as its last `yield_now` left it (on whichever CPU). The thread switches back through
    // `yield_now` or `exit`, on this CPU, to this stack.
    unsafe { switch_stack(save, load) };
    let mut s = SCHED.lock();
    if let Some(id) = s.cpus[me].current.take() {
        s.find(id).on_cpu = None;
    }
    // More runnable threads than this CPU can take next: an idle CPU may.
    let waiting = s.threads.iter().filter(|t| t.exit.is_none() && t.on_cpu.is_none() && !t.asleep).count();
    let mask = s.cpu_mask;
    drop(s);
    if waiting > 1 {
        crate::smp::kick(mask);
    }
    true
}

/// Removes ended threads that no CPU runs and frees their stacks.
fn reap() {
    let gone: Vec<Box<Thread>> = {
        let mut s = SCHED.lock();
        if !s.threads.iter().any(|t| t.exit.is_some() && t.on_cpu.is_none()) {
            return;
        }
        let (gone, live): (Vec<_>, Vec<_>) =
            core::mem::take(&mut s.threads).into_iter().partition(|t| t.exit.is_some() && t.on_cpu.is_none());
        s.threads = live;
        for t in &gone {
            let exit = t.exit.expect("ended");
            s.ended.push(Ended { name: t.name, space: t.space, exit });
        }
        gone
    };
    for t in gone {
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
