//! The workloads the reference kernel boots with, written once for the
//! kernel (whose tasks touch memory through real page faults) and the host
//! simulation (which touches it through mm-vma's `write_user`).
//!
//! - [`pressure`]: several tasks write a per-page pattern to anonymous
//!   memory several times the size of RAM, turn by turn, then every page is
//!   read back and checked: nothing may be lost across swap-out and
//!   swap-in.
//! - [`oom`]: the same without swap, with one task far bigger than RAM:
//!   when memory runs out the OOM killer must pick that task, and the
//!   others must finish with their data intact.
//!
//! A task's program is a [`Worker`], run a [`Worker::turn`] at a time:
//! [`run`] drives the workers round robin (the host simulation), and the
//! reference kernel runs each in a thread of its own that yields between
//! turns.

use alloc::vec::Vec;

use mm_types::{Protection, VirtAddr};
use mm_vma::{MapRequest, SpaceId};

/// Why a task's access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TouchError {
    /// No memory even after reclaim: the OOM killer's turn.
    OutOfMemory,
    /// The task is gone (killed).
    Gone,
    /// Any other fault (a bug in the scenario or the kernel).
    Fault,
}

/// How a scenario touches task memory, and where a scheduler would run.
pub trait Touch {
    /// Writes the 8 bytes at `addr` of `task`.
    fn write(&mut self, task: SpaceId, addr: VirtAddr, value: u64) -> Result<(), TouchError>;
    /// Reads the 8 bytes at `addr` of `task`.
    fn read(&mut self, task: SpaceId, addr: VirtAddr) -> Result<u64, TouchError>;
    /// Maps `len` bytes of private anonymous read-write memory in `task`.
    fn map(&mut self, task: SpaceId, len: u64) -> Result<VirtAddr, TouchError>;
    /// Between turns: background reclaim if memory is low.
    fn tick(&mut self);
    /// Memory ran out in `task`: the OOM killer picks a task and ends it;
    /// which one (`None`: nothing to kill).
    fn oom(&mut self, task: SpaceId) -> Option<SpaceId>;
}

/// Private anonymous read-write memory of `len` bytes.
pub fn anon_rw(len: u64) -> MapRequest {
    MapRequest::anonymous(len, Protection::READ | Protection::WRITE)
}

/// The pattern of page `page` of task number `task`: distinct for every
/// page of every task, never zero (so an untouched page cannot pass).
pub fn pattern(task: usize, page: u64) -> u64 {
    ((task as u64 + 1) << 48) ^ page.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// What a scenario saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Pages written, over all tasks.
    pub written: u64,
    /// Pages read back and found right.
    pub verified: u64,
    /// Pages read back wrong (must be 0).
    pub corrupt: u64,
    /// Accesses that failed other than by a kill (must be 0).
    pub errors: u64,
    /// Tasks the OOM killer ended, by task number.
    pub killed: Vec<usize>,
}

impl Outcome {
    /// Adds one worker's counts (and its number to `killed` if it was
    /// killed).
    pub fn add(&mut self, w: &Worker) {
        self.written += w.written;
        self.verified += w.verified;
        self.corrupt += w.corrupt;
        self.errors += w.errors;
        if w.killed {
            self.killed.push(w.number);
        }
    }
}

/// Pages a task writes (or checks) per turn before the next task runs.
pub const TURN: u64 = 16;

/// Where a worker stands after a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Pages are left to write.
    Writing,
    /// Every page is written; it checks them once every worker is here
    /// (`verify` in [`Worker::turn`]), so that the others' writes push its
    /// pages out first.
    Written,
    /// Pages are left to check.
    Verifying,
    /// Every page is checked.
    Done,
}

/// One task's program, run a turn at a time: write a per-page pattern to
/// `pages` pages of its own anonymous memory, then read every page back.
/// The host simulation runs workers round robin ([`run`]); the reference
/// kernel runs each in its own thread, yielding between turns.
#[derive(Clone, Copy, Debug)]
pub struct Worker {
    /// Its number in the scenario (which selects its patterns).
    pub number: usize,
    /// Its space.
    pub id: SpaceId,
    /// Its region.
    pub base: VirtAddr,
    /// Pages in it.
    pub pages: u64,
    /// Pages written so far.
    pub written: u64,
    /// Pages checked so far.
    pub checked: u64,
    /// Pages read back right.
    pub verified: u64,
    /// Pages read back wrong.
    pub corrupt: u64,
    /// Accesses that failed other than by a kill.
    pub errors: u64,
    /// Ended by the OOM killer (or gone).
    pub killed: bool,
}

impl Worker {
    /// Maps the worker's `pages` pages in `id`.
    pub fn new(t: &mut dyn Touch, number: usize, id: SpaceId, pages: u64) -> Result<Worker, TouchError> {
        let base = t.map(id, pages * 4096)?;
        Ok(Worker {
            number,
            id,
            base,
            pages,
            written: 0,
            checked: 0,
            verified: 0,
            corrupt: 0,
            errors: 0,
            killed: false,
        })
    }

    /// Where the worker stands.
    pub fn step(&self) -> Step {
        if self.written < self.pages {
            Step::Writing
        } else if self.checked == 0 && self.pages > 0 {
            Step::Written
        } else if self.checked < self.pages {
            Step::Verifying
        } else {
            Step::Done
        }
    }

    /// Whether it still has pages to write (and was not killed): no worker
    /// checks its pages while one is.
    pub fn still_writing(&self) -> bool {
        !self.killed && self.step() == Step::Writing
    }

    /// One turn: up to [`TURN`] pages written, or checked if `verify` (every
    /// worker has written everything). Each page gets its pattern in its
    /// first and last 8 bytes. An error leaves the page to the next turn;
    /// [`TouchError::Fault`] is also counted in `errors`.
    pub fn turn(&mut self, t: &mut dyn Touch, verify: bool) -> Result<Step, TouchError> {
        for _ in 0..TURN {
            match self.step() {
                Step::Writing => {
                    let (a, v) = (self.base + self.written * 4096, pattern(self.number, self.written));
                    self.counted(t.write(self.id, a, v).and_then(|_| t.write(self.id, a + 4088, !v)))?;
                    self.written += 1;
                }
                Step::Written | Step::Verifying if verify => {
                    let (a, v) = (self.base + self.checked * 4096, pattern(self.number, self.checked));
                    let x = self.counted(t.read(self.id, a))?;
                    let y = self.counted(t.read(self.id, a + 4088))?;
                    if x == v && y == !v {
                        self.verified += 1;
                    } else {
                        self.corrupt += 1;
                    }
                    self.checked += 1;
                }
                other => return Ok(other),
            }
        }
        Ok(self.step())
    }

    fn counted<T>(&mut self, r: Result<T, TouchError>) -> Result<T, TouchError> {
        if let Err(TouchError::Fault) = r {
            self.errors += 1;
        }
        r
    }
}

/// Runs `tasks` (spaces already created) writing `pages[i]` pages each,
/// round robin a [`Worker::turn`] at a time with [`Touch::tick`] between
/// turns, then checks every page of every task still alive. When memory
/// runs out, [`Touch::oom`] picks a task to end.
pub fn run(t: &mut dyn Touch, tasks: &[SpaceId], pages: &[u64]) -> Outcome {
    let mut out = Outcome::default();
    let mut ws: Vec<Worker> = Vec::new();
    for (i, (&id, &n)) in tasks.iter().zip(pages).enumerate() {
        match Worker::new(t, i, id, n) {
            Ok(w) => ws.push(w),
            Err(_) => out.errors += 1,
        }
    }
    loop {
        let verify = !ws.iter().any(Worker::still_writing);
        let mut busy = false;
        for i in 0..ws.len() {
            if ws[i].killed || ws[i].step() == Step::Done {
                continue;
            }
            busy = true;
            match ws[i].turn(t, verify) {
                Ok(_) => {}
                Err(TouchError::OutOfMemory) => {
                    let victim = t.oom(ws[i].id);
                    match victim.and_then(|v| ws.iter().position(|x| x.id == v)) {
                        Some(j) => ws[j].killed = true,
                        // Nothing to kill: the scenario cannot go on.
                        None => {
                            out.errors += 1;
                            busy = false;
                            break;
                        }
                    }
                }
                Err(TouchError::Gone | TouchError::Fault) => ws[i].killed = true,
            }
            t.tick();
        }
        if !busy {
            break;
        }
    }
    for w in &ws {
        out.add(w);
    }
    out
}

/// Pages per task in [`pressure`]: three times `ram_frames` between them.
pub fn pressure_pages(tasks: usize, ram_frames: u64) -> Vec<u64> {
    alloc::vec![3 * ram_frames / tasks.max(1) as u64; tasks]
}

/// `pressure`: the tasks write three times `ram_frames` pages between
/// them, then check every page.
pub fn pressure(t: &mut dyn Touch, tasks: &[SpaceId], ram_frames: u64) -> Outcome {
    run(t, tasks, &pressure_pages(tasks.len(), ram_frames))
}

/// Pages per task in [`oom`]: the middle one wants twice `ram_frames`
/// pages, the others an eighth of RAM each.
pub fn oom_pages(ram_frames: u64) -> [u64; 3] {
    [ram_frames / 8, 2 * ram_frames, ram_frames / 8]
}

/// `oom`: three tasks sized by [`oom_pages`]. Without swap the OOM killer
/// must pick the middle one (task number 1).
pub fn oom(t: &mut dyn Touch, tasks: &[SpaceId; 3], ram_frames: u64) -> Outcome {
    run(t, tasks, &oom_pages(ram_frames))
}
