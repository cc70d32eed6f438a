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

use alloc::vec::Vec;

use mm_types::Protection;
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
    fn write(&mut self, task: SpaceId, addr: u64, value: u64) -> Result<(), TouchError>;
    /// Reads the 8 bytes at `addr` of `task`.
    fn read(&mut self, task: SpaceId, addr: u64) -> Result<u64, TouchError>;
    /// Maps `len` bytes of private anonymous read-write memory in `task`.
    fn map(&mut self, task: SpaceId, len: u64) -> Result<u64, TouchError>;
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

/// One task of a scenario.
#[derive(Clone, Copy, Debug)]
pub struct Task {
    /// Its space.
    pub id: SpaceId,
    /// Its region.
    pub base: u64,
    /// Pages in it.
    pub pages: u64,
    /// Pages written so far.
    pub written: u64,
    /// Killed by the OOM killer.
    pub killed: bool,
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

/// Pages a task writes per turn before the next task runs.
pub const TURN: u64 = 16;

/// Runs `tasks` (spaces already created) writing `pages[i]` pages each,
/// [`TURN`] pages a turn, then verifies every page of every task still
/// alive. Each page gets its pattern in its first and last 8 bytes.
pub fn run(t: &mut dyn Touch, tasks: &[SpaceId], pages: &[u64]) -> Outcome {
    let mut out = Outcome::default();
    let mut ts: Vec<Task> = Vec::new();
    for (&id, &n) in tasks.iter().zip(pages) {
        match t.map(id, n * 4096) {
            Ok(base) => ts.push(Task { id, base, pages: n, written: 0, killed: false }),
            Err(_) => out.errors += 1,
        }
    }
    // Write, turn by turn.
    loop {
        let mut busy = false;
        for i in 0..ts.len() {
            let mut k = 0;
            while k < TURN && !ts[i].killed && ts[i].written < ts[i].pages {
                let (id, p) = (ts[i].id, ts[i].written);
                let a = ts[i].base + p * 4096;
                let v = pattern(i, p);
                match t.write(id, a, v).and_then(|_| t.write(id, a + 4088, !v)) {
                    Ok(()) => {
                        ts[i].written += 1;
                        out.written += 1;
                        k += 1;
                    }
                    Err(TouchError::OutOfMemory) => {
                        let victim = t.oom(id);
                        match victim.and_then(|v| ts.iter().position(|x| x.id == v)) {
                            Some(j) => {
                                ts[j].killed = true;
                                out.killed.push(j);
                            }
                            // Nothing to kill: the scenario cannot go on.
                            None => {
                                out.errors += 1;
                                return out;
                            }
                        }
                    }
                    Err(TouchError::Gone) => ts[i].killed = true,
                    Err(TouchError::Fault) => {
                        out.errors += 1;
                        ts[i].killed = true;
                    }
                }
                busy = true;
            }
            t.tick();
        }
        if !busy {
            break;
        }
    }
    // Verify every page of every live task.
    for (i, task) in ts.iter().enumerate().filter(|(_, x)| !x.killed) {
        for p in 0..task.written {
            let a = task.base + p * 4096;
            let v = pattern(i, p);
            match (t.read(task.id, a), t.read(task.id, a + 4088)) {
                (Ok(x), Ok(y)) if x == v && y == !v => out.verified += 1,
                (Ok(_), Ok(_)) => out.corrupt += 1,
                _ => out.errors += 1,
            }
        }
        t.tick();
    }
    out
}

/// `pressure`: the tasks write three times `ram_frames` pages between
/// them, then check every page.
pub fn pressure(t: &mut dyn Touch, tasks: &[SpaceId], ram_frames: u64) -> Outcome {
    let per = 3 * ram_frames / tasks.len().max(1) as u64;
    run(t, tasks, &alloc::vec![per; tasks.len()])
}

/// `oom`: three tasks; the middle one wants twice `ram_frames` pages, the
/// others an eighth of RAM each. Without swap the OOM killer must pick the
/// middle one (task number 1).
pub fn oom(t: &mut dyn Touch, tasks: &[SpaceId; 3], ram_frames: u64) -> Outcome {
    let small = ram_frames / 8;
    run(t, tasks, &[small, 2 * ram_frames, small])
}
