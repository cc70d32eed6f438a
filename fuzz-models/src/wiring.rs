//! The reference kernel wiring's model-based fuzz body: the host
//! simulation under random task creation, mappings, writes, reads, forks,
//! kills and reclaim, against a model of every task's pages.
//!
//! Regions are private or shared anonymous memory, or mappings of the
//! machine's two files through its page cache: a file with a backing
//! (write-tracked, written back by writeback, `msync`, throttling and
//! reclaim) and a shmem file (to swap under pressure), mapped privately
//! (copy on write: a page not yet written shows the file's current bytes)
//! or shared (every shared mapping and the file are one object). Every read must return
//! the last value written to that page through any mapping of it (the task
//! itself, its parent before a fork, or any task sharing the region), or 0
//! if none was written. After every step the contents **every** task would
//! read from every page of every region are compared with the model without
//! faulting ([`Sim::peek_pages`]: the frame, the swap cache or the slot's
//! stored bytes) and every clean swap-cache page must match its slot. Every
//! eighth step and at the end, the swapped pages are read whole and checked
//! against their checksums, and the swap areas, the reclaim
//! lists, every address space and the reverse map check themselves. At the
//! end every task goes and every frame and slot must come back.

use std::collections::BTreeMap;
use std::vec::Vec;

use arbitrary::Arbitrary;
use std::sync::Arc;

use mm_pagecache::CachedFile;
use mm_types::testkit::MemFile;
use mm_types::{PhysMemory, Protection, VirtAddr};
use mm_vma::{FaultError, MapRequest, SpaceError, SpaceId};

use mm_wiring::scenario::{anon_rw, Touch};
use mm_wiring::sim::{Sim, SimConfig};

/// One step; task and region indices are taken modulo what exists.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// A new task (at most 4).
    Spawn,
    /// Map `1 + pages % 32` pages in a task, or `1 + pages % 8` shared
    /// ones (populated at once; they stay shared with the children of later
    /// forks).
    Map {
        /// The task.
        task: u8,
        /// Pages.
        pages: u8,
        /// `MAP_SHARED`.
        shared: bool,
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
    /// Map the whole of a file (the one with a backing, else the shmem
    /// one), privately or shared.
    MapFile {
        /// The task.
        task: u8,
        /// The file with a backing (else shmem).
        backed: bool,
        /// `MAP_SHARED`.
        shared: bool,
    },
    /// `msync` of a region: afterwards the backing holds every page of a
    /// shared mapping of the backed file in it.
    Msync {
        /// The task.
        task: u8,
        /// The region.
        region: u8,
    },
    /// Write every dirty file page back (the flusher, or `sync`).
    Flush,
    /// Drop the backed file's clean pages (unmapping them first).
    DropCaches,
}

/// Pages of each file.
const FILE_PAGES: u64 = 8;

/// The machine's files: the object numbers mappings name, the cached
/// files, the backing of the first.
struct Files {
    objects: [u32; 2],
    files: [Arc<CachedFile>; 2],
    disk: Arc<MemFile>,
}

impl Files {
    /// The first 8 bytes of page `p` of file `f` where its authoritative
    /// copy lives: the cached frame, else the backing (file 0) or the
    /// swap slot or a hole (file 1, shmem).
    fn word(&self, sim: &Sim, f: usize, p: u64) -> u64 {
        let mut b = [0u8; 8];
        if let Some(frame) = self.files[f].page(p) {
            // SAFETY: simulated RAM; nothing runs concurrently with the model.
            unsafe { sim.ram.read_bytes(frame.start_address(), &mut b) }.expect("simulated RAM");
        } else if f == 0 {
            b.copy_from_slice(&self.disk.contents()[(p * 4096) as usize..][..8]);
        } else if let Some(slot) = self.files[1].swap_slot(p) {
            let mut page = [0u8; 4096];
            sim.machine.device.swap().read_slot(slot, &mut page).expect("a shmem page's slot reads back");
            b.copy_from_slice(&page[..8]);
        }
        u64::from_le_bytes(b)
    }
}

/// A region of a task: its pages' values live in `objects[obj]`, which
/// the tasks sharing the region (a shared mapping inherited by fork) have
/// in common.
#[derive(Clone, Copy)]
struct Region {
    base: VirtAddr,
    pages: u64,
    obj: usize,
    shared: bool,
    /// A private mapping of this file: a page not in `obj` shows the
    /// file's (object `file`'s) value.
    file: Option<usize>,
}

impl Region {
    /// The value the model expects at page `p`.
    fn want(&self, objects: &[BTreeMap<u64, u64>], p: u64) -> u64 {
        let own = objects[self.obj].get(&p).copied();
        own.or_else(|| self.file.and_then(|f| objects[f].get(&p).copied())).unwrap_or(0)
    }
}

#[derive(Clone)]
struct Task {
    id: SpaceId,
    regions: Vec<Region>,
}

/// The contents every task would read, and (when `whole`) every
/// structure's own check.
fn check(
    sim: &Sim,
    files: &Files,
    tasks: &[Task],
    objects: &[BTreeMap<u64, u64>],
    whole: bool,
    seen: &mut Vec<Option<u64>>,
) {
    for (t, task) in tasks.iter().enumerate() {
        for (r, reg) in task.regions.iter().enumerate() {
            sim.peek_pages(task.id, reg.base, reg.pages, !whole, seen).expect("every page readable");
            for (p, got) in (0..).zip(seen.iter()) {
                // A file page mapped nowhere here shows the file's bytes.
                let file = reg.file.or((reg.obj < 2).then_some(reg.obj));
                let got = match (got, file) {
                    (Some(v), _) => *v,
                    (None, Some(f)) => files.word(sim, f, p),
                    (None, None) => 0,
                };
                let want = reg.want(objects, p);
                assert_eq!(got, want, "task {t} region {r} page {p} (shared: {}), seen without a fault", reg.shared);
            }
        }
    }
    // The files themselves, whether mapped or not.
    for (f, object) in objects.iter().enumerate().take(2) {
        for p in 0..FILE_PAGES {
            let want = object.get(&p).copied().unwrap_or(0);
            assert_eq!(files.word(sim, f, p), want, "file {f} page {p}");
        }
    }
    sim.machine.check_clean_cache().expect("clean swap-cache pages match their slots");
    if !whole {
        return;
    }
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
    for f in &files.files {
        f.check().expect("a cached file");
    }
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = crate::decode_ops(data, 150);
    let (n, mut step) = (ops.len(), 0);
    // 192 KiB of RAM (48 frames) and plenty of swap: running out of memory
    // is never right here.
    let mut sim = Sim::new(SimConfig { ram: 192 << 10, swap_slots: 1024, second_area: 0, zswap: None });
    let mut tasks: Vec<Task> = Vec::new();
    // Objects 0 and 1 are the files' pages.
    let mut objects: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new(), BTreeMap::new()];
    let disk = Arc::new(MemFile::with_contents(vec![0; (FILE_PAGES * 4096) as usize]));
    let backed = sim.machine.cache.open(disk.clone());
    let shmem = sim.machine.cache.open_shmem(FILE_PAGES * 4096);
    let files = Files {
        objects: [sim.machine.add_file(backed.clone()), sim.machine.add_file(shmem.clone())],
        files: [backed, shmem],
        disk,
    };
    let mut seen = Vec::new();
    let pick = |n: usize, i: u8| (n > 0).then(|| usize::from(i) % n);
    for op in ops {
        match op {
            Op::Spawn if tasks.len() < 4 => {
                tasks.push(Task { id: sim.machine.spawn().expect("room for a root"), regions: Vec::new() });
            }
            Op::Spawn => {}
            Op::Map { task, pages, shared } => {
                if let Some(t) = pick(tasks.len(), task) {
                    if tasks[t].regions.len() < 4 {
                        // Shared regions are populated whole at mmap: smaller.
                        let pages = 1 + u64::from(pages % if shared { 8 } else { 32 });
                        let mut req = anon_rw(pages * 4096);
                        if shared {
                            req = req.shared();
                        }
                        // A shared mapping is populated at once: reclaim
                        // makes room as a fault would.
                        let mut dry = 0;
                        let base = loop {
                            let space = sim.machine.tasks.get(tasks[t].id).expect("a live task");
                            let r = space.lock().mmap(req);
                            match r {
                                Err(SpaceError::OutOfMemory | SpaceError::Fault(FaultError::OutOfMemory))
                                    if sim.machine.reclaim_for_retry(&mut dry) => {}
                                r => break r,
                            }
                        };
                        // Out of memory with reclaim tried: refused, nothing changed.
                        let Ok(base) = base else { continue };
                        objects.push(BTreeMap::new());
                        tasks[t].regions.push(Region { base, pages, obj: objects.len() - 1, shared, file: None });
                    }
                }
            }
            Op::Write { task, region, page, value } => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                let Some(r) = pick(tasks[t].regions.len(), region) else { continue };
                let (id, reg) = (tasks[t].id, tasks[t].regions[r]);
                let p = u64::from(page) % reg.pages;
                sim.write(id, reg.base + p * 4096, value).expect("a write with swap to spare");
                objects[reg.obj].insert(p, value);
            }
            Op::Read { task, region, page } => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                let Some(r) = pick(tasks[t].regions.len(), region) else { continue };
                let reg = &tasks[t].regions[r];
                let p = u64::from(page) % reg.pages;
                let got = sim.read(tasks[t].id, reg.base + p * 4096).expect("a read with swap to spare");
                assert_eq!(got, reg.want(&objects, p), "task {t} region {r} page {p}");
            }
            Op::Sweep { task, region, write, seed } => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                let Some(r) = pick(tasks[t].regions.len(), region) else { continue };
                let (id, reg) = (tasks[t].id, tasks[t].regions[r]);
                for p in 0..reg.pages {
                    let a = reg.base + p * 4096;
                    if write {
                        let v = mm_wiring::scenario::pattern(usize::from(seed), p);
                        sim.write(id, a, v).expect("a write with swap to spare");
                        objects[reg.obj].insert(p, v);
                    } else {
                        let got = sim.read(id, a).expect("a read with swap to spare");
                        assert_eq!(got, reg.want(&objects, p), "task {t} region {r} page {p}");
                    }
                }
            }
            Op::Fork(task) => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                if tasks.len() >= 4 {
                    continue;
                }
                let id = sim.machine.fork(tasks[t].id).expect("room to fork");
                let mut regions = tasks[t].regions.clone();
                for reg in regions.iter_mut().filter(|r| !r.shared) {
                    // A private region: the child's copy goes its own way.
                    objects.push(objects[reg.obj].clone());
                    reg.obj = objects.len() - 1;
                }
                tasks.push(Task { id, regions });
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
            Op::MapFile { task, backed, shared } => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                if tasks[t].regions.len() >= 4 {
                    continue;
                }
                let f = usize::from(!backed);
                let mut req =
                    MapRequest::object(FILE_PAGES * 4096, Protection::READ | Protection::WRITE, files.objects[f], 0);
                if shared {
                    req = req.shared();
                }
                let space = sim.machine.tasks.get(tasks[t].id).expect("a live task");
                let base = space.lock().mmap(req).expect("a file mapping is lazy: nothing to allocate but a VMA");
                let region = if shared {
                    Region { base, pages: FILE_PAGES, obj: f, shared, file: None }
                } else {
                    objects.push(BTreeMap::new());
                    Region { base, pages: FILE_PAGES, obj: objects.len() - 1, shared, file: Some(f) }
                };
                tasks[t].regions.push(region);
            }
            Op::Msync { task, region } => {
                let Some(t) = pick(tasks.len(), task) else { continue };
                let Some(r) = pick(tasks[t].regions.len(), region) else { continue };
                let reg = tasks[t].regions[r];
                sim.machine.msync(tasks[t].id, reg.base, reg.pages * 4096).expect("msync with no write failing");
                if reg.shared && reg.obj == 0 {
                    let c = files.disk.contents();
                    for p in 0..reg.pages {
                        let want = objects[0].get(&p).copied().unwrap_or(0);
                        let got = u64::from_le_bytes(c[(p * 4096) as usize..][..8].try_into().expect("8 bytes"));
                        assert_eq!(got, want, "msync: page {p} on the backing");
                    }
                }
            }
            Op::Flush => {
                let r = sim.machine.cache.writeback(u64::MAX);
                assert_eq!(r.failed, 0, "writeback with no write failing");
            }
            Op::DropCaches => {
                sim.machine.cache.drop_clean(&files.files[0]);
            }
        }
        step += 1;
        // Contents after every step; the structures' whole-state checks
        // (walks of every slot, list and page table, and every swapped
        // page read whole) every eighth step and at the end, where a
        // broken structure still shows. Under miri only those: a budget an
        // interpreter can afford.
        let whole = step % 8 == 0 || step == n;
        if whole || !cfg!(miri) {
            check(&sim, &files, &tasks, &objects, whole, &mut seen);
        }
    }
    for t in tasks {
        assert!(sim.machine.kill(t.id));
    }
    // The files let go: the backing holds the file's pages, and every
    // frame and slot comes back.
    for f in &files.files {
        sim.machine.cache.release(f).expect("nothing maps the files any more");
    }
    let c = files.disk.contents();
    for p in 0..FILE_PAGES {
        let got = u64::from_le_bytes(c[(p * 4096) as usize..][..8].try_into().expect("8 bytes"));
        assert_eq!(got, objects[0].get(&p).copied().unwrap_or(0), "released: page {p} on the backing");
    }
    assert_eq!(sim.machine.device.swap().used_slots(), 0, "slots leaked");
    assert_eq!(sim.machine.device.shadows(), 0, "shadows leaked");
    sim.machine.reclaim_now(u64::MAX);
    assert_eq!(sim.machine.mm.tracked_frames(), 0, "frames still mapped or pinned");
    assert_eq!(
        sim.free(),
        sim.total - 1,
        "frames leaked: cache {:?} swap cached {} reclaim lists {:?}",
        sim.machine.cache.stats().cached,
        sim.machine.device.swap().cached().len(),
        (sim.machine.reclaim().len(mm_types::PageKind::Anon), sim.machine.reclaim().len(mm_types::PageKind::File))
    );
}
