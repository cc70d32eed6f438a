//! Model-based fuzz body (feature `fuzzing`, and compiled for tests): the
//! host simulation under random task creation, mappings, writes, reads,
//! forks, kills and reclaim, against a model of every task's pages.
//!
//! Every read must return the last value the task (or, before a fork, its
//! parent) wrote to that page, or 0 if none was written; after every step
//! the swap areas, the reclaim lists, every address space and the reverse
//! map check themselves; at the end every task goes and every frame and
//! slot must come back.

extern crate std;

use std::collections::BTreeMap;
use std::vec::Vec;

use arbitrary::Arbitrary;
use mm_vma::SpaceId;

use crate::scenario::Touch;
use crate::sim::{Sim, SimConfig};

/// One step; task and region indices are taken modulo what exists.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// A new task (at most 4).
    Spawn,
    /// Map `1 + pages % 32` pages in a task.
    Map {
        /// The task.
        task: u8,
        /// Pages.
        pages: u8,
    },
    /// Write `value` to a page of a region.
    Write {
        /// The task.
        task: u8,
        /// The region.
        region: u8,
        /// The page in it.
        page: u8,
        /// The value.
        value: u64,
    },
    /// Read a page of a region.
    Read {
        /// The task.
        task: u8,
        /// The region.
        region: u8,
        /// The page in it.
        page: u8,
    },
    /// Write every page of a region (`write`) with values from `seed`, or
    /// read every page back and check it: pressure, and runs of slots for
    /// readahead.
    Sweep {
        /// The task.
        task: u8,
        /// The region.
        region: u8,
        /// Write (else read).
        write: bool,
        /// Values' seed.
        seed: u8,
    },
    /// Fork a task (at most 4 tasks).
    Fork(u8),
    /// End a task.
    Kill(u8),
    /// Reclaim up to `n` pages now.
    Reclaim(u8),
    /// Background reclaim if memory is low.
    Tick,
}

#[derive(Clone)]
struct Region {
    base: u64,
    pages: u64,
    values: BTreeMap<u64, u64>,
}

#[derive(Clone)]
struct Task {
    id: SpaceId,
    regions: Vec<Region>,
}

fn check(sim: &Sim) {
    sim.machine.device.swap().check().expect("swap bookkeeping");
    sim.machine.reclaim().check().expect("reclaim lists");
    let ids = sim.machine.tasks.ids();
    let spaces: Vec<_> = ids.iter().filter_map(|&i| sim.machine.tasks.get(i)).collect();
    let guards: Vec<_> = spaces.iter().map(|s| s.lock()).collect();
    for g in &guards {
        g.check().expect("address space");
    }
    let refs: Vec<&_> = guards.iter().map(|g| &**g).collect();
    sim.machine.mm.check_rmap(&refs).expect("reverse map");
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = mm_types::testkit::fuzzing::decode_ops(data, 150);
    // 192 KiB of RAM (48 frames) and plenty of swap: running out of memory
    // is never right here.
    let mut sim = Sim::new(SimConfig { ram: 192 << 10, swap_slots: 2048, second_area: 0, zswap: None });
    let mut tasks: Vec<Task> = Vec::new();
    let pick = |n: usize, i: u8| (n > 0).then(|| usize::from(i) % n);
    for op in ops {
        match op {
            Op::Spawn if tasks.len() < 4 => {
                tasks.push(Task { id: sim.machine.spawn().expect("room for a root"), regions: Vec::new() });
            }
            Op::Spawn => {}
            Op::Map { task, pages } => {
                if let Some(t) = pick(tasks.len(), task) {
                    if tasks[t].regions.len() < 4 {
                        let pages = 1 + u64::from(pages % 32);
                        let base = sim.map(tasks[t].id, pages * 4096).expect("room for a mapping");
                        tasks[t].regions.push(Region { base, pages, values: BTreeMap::new() });
                    }
                }
            }
            Op::Write { task, region, page, value } => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                let Some(r) = pick(tasks[t].regions.len(), region) else { continue };
                let (id, reg) = (tasks[t].id, &tasks[t].regions[r]);
                let p = u64::from(page) % reg.pages;
                sim.write(id, reg.base + p * 4096, value).expect("a write with swap to spare");
                tasks[t].regions[r].values.insert(p, value);
            }
            Op::Read { task, region, page } => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                let Some(r) = pick(tasks[t].regions.len(), region) else { continue };
                let reg = &tasks[t].regions[r];
                let p = u64::from(page) % reg.pages;
                let got = sim.read(tasks[t].id, reg.base + p * 4096).expect("a read with swap to spare");
                let want = reg.values.get(&p).copied().unwrap_or(0);
                assert_eq!(got, want, "task {t} region {r} page {p}");
            }
            Op::Sweep { task, region, write, seed } => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                let Some(r) = pick(tasks[t].regions.len(), region) else { continue };
                let id = tasks[t].id;
                let reg = &mut tasks[t].regions[r];
                for p in 0..reg.pages {
                    let a = reg.base + p * 4096;
                    if write {
                        let v = crate::scenario::pattern(usize::from(seed), p);
                        sim.write(id, a, v).expect("a write with swap to spare");
                        reg.values.insert(p, v);
                    } else {
                        let got = sim.read(id, a).expect("a read with swap to spare");
                        assert_eq!(got, reg.values.get(&p).copied().unwrap_or(0), "task {t} region {r} page {p}");
                    }
                }
            }
            Op::Fork(task) => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                if tasks.len() >= 4 {
                    continue;
                }
                let id = sim.machine.fork(tasks[t].id).expect("room to fork");
                let child = Task { id, regions: tasks[t].regions.clone() };
                tasks.push(child);
            }
            Op::Kill(task) => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                assert!(sim.machine.kill(tasks[t].id));
                tasks.remove(t);
            }
            Op::Reclaim(n) => {
                sim.machine.reclaim_now(u64::from(n));
            }
            Op::Tick => sim.tick(),
        }
        check(&sim);
    }
    for t in tasks {
        assert!(sim.machine.kill(t.id));
    }
    assert_eq!(sim.machine.device.swap().used_slots(), 0, "slots leaked");
    assert_eq!(sim.machine.device.shadows(), 0, "shadows leaked");
    sim.machine.reclaim_now(u64::MAX);
    assert_eq!(sim.machine.mm.tracked_frames(), 0, "frames still mapped or pinned");
    assert_eq!(sim.free(), sim.total - 1, "frames leaked");
}

#[cfg(test)]
mod tests {
    use mm_types::testkit::fuzzing::{random_inputs, replay_corpus};

    #[test]
    fn generated_inputs() {
        random_inputs(0x3117, if cfg!(miri) { 96 } else { 1024 }, if cfg!(miri) { 2 } else { 200 }, super::run);
    }

    /// Replays the checked-in cargo-fuzz corpus.
    #[test]
    #[cfg_attr(miri, ignore = "reads files; the corpus is replayed natively")]
    fn corpus() {
        // The crate lives one level deeper than the others.
        let n = replay_corpus(concat!(env!("CARGO_MANIFEST_DIR"), "/.."), "wiring_model", super::run);
        assert!(n > 20, "the corpus holds {n} inputs");
    }
}
