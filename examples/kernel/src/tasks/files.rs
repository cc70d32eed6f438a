//! The `files` scenario: files in address spaces through the page cache,
//! under memory pressure.
//!
//! - an ext4 file (read-only, through `ext4-view`) mapped privately by two
//!   tasks: one reads it in order twice (readahead), one at random and
//!   writes private copies of some pages (copy-on-write: the file never
//!   changes);
//! - the scratch disk, as a block-device file, mapped shared and written
//!   through the mapping (dirty pages written back under pressure);
//! - shared anonymous memory (`MAP_SHARED | MAP_ANONYMOUS`, a shmem file)
//!   written half by a task and half by its child, each reading the
//!   other's half (shared through the file, not by frame sharing);
//! - anonymous memory, so reclaim has both kinds to choose from;
//! - a small ext4 file mapped longer than it is: its partial last page
//!   reads zeros past the end, and the page after it is a bus error that
//!   ends the thread (and its task) that touched it.
//!
//! Together they want more than the RAM, so reclaim drops clean file
//! pages, writes dirty ones back, and sends anonymous and shmem pages to
//! swap. At the end the tasks go, every cache is dropped (file pages
//! dropped, shmem pages sent to swap) and every byte of every file is
//! read back through the cache, from the disks and swap, and checked.

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec;
use core::sync::atomic::{AtomicU64, Ordering};

use mm_pagecache::{BlockDevice, CacheError, CachedFile, OpenFile};
use mm_types::{Protection, VirtAddr, PAGE_SIZE};
use mm_vma::{MapRequest, SpaceId};
use mm_wiring::scenario::{self, Touch};

use super::{kill_all, machine, report, spawn_kswapd, unload, KMachine, KernelTouch};
use crate::disk::VirtioDisk;
use crate::frames::Frames;
use crate::fs::Ext4Volume;
use crate::sched::{self, Exit};
use crate::{kprintln, tasks};

const PS: u64 = PAGE_SIZE as u64;
const RW: Protection = Protection::READ.union(Protection::WRITE);

/// The ext4 image's files (the xtask writes them): path, size, seed.
const BIG: (&str, u64, u64) = ("/big.bin", 24 << 20, 1);
const SMALL: (&str, u64, u64) = ("/small.bin", 10_000, 2);
/// Shared anonymous memory, and private anonymous memory, in bytes.
const SHM_BYTES: u64 = 12 << 20;
const ANON_BYTES: u64 = 8 << 20;
/// Pages the random reader reads.
const RANDOM_READS: u64 = 2048;
/// Every this many pages it reads, it writes a private copy.
const COW_EVERY: u64 = 16;

/// Word `k` (8 bytes) of the ext4 file with pattern `seed`: the xtask's
/// `file_word`, which wrote the image.
fn word(seed: u64, k: u64) -> u64 {
    (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.wrapping_mul(0x0101_0101_0101_0101)
}

/// What a task writes in the first word of page `p` of a shared mapping
/// (`tag` tells the mappings apart); the last word gets its complement.
fn stamp(tag: u64, p: u64) -> u64 {
    scenario::pattern(tag as usize, p)
}

/// Counts of one task's checks.
#[derive(Default)]
struct Tally {
    checked: AtomicU64,
    bad: AtomicU64,
}

impl Tally {
    fn check(&self, ok: bool) {
        self.checked.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.bad.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn get(&self) -> (u64, u64) {
        (self.checked.load(Ordering::Relaxed), self.bad.load(Ordering::Relaxed))
    }
}

/// A thread of task `id` running `body` with the kernel's way of touching
/// task memory, yielding every [`scenario::TURN`] pages through `turn`.
fn spawn(name: &'static str, id: SpaceId, mut body: impl FnMut(&mut KernelTouch) + Send + 'static) -> bool {
    let (m, buddy) = (super::MACHINE.get().expect("set up"), crate::frames::get().expect("set up"));
    let r = sched::spawn(name, Some(id), move || body(&mut KernelTouch { m, buddy }));
    if let Err(e) = r {
        kprintln!("files: no thread for {}: {}", name, e);
    }
    r.is_ok()
}

fn turn(p: u64) {
    if p % scenario::TURN == scenario::TURN - 1 {
        sched::yield_now();
    }
}

fn map(m: &KMachine, id: SpaceId, req: MapRequest) -> Option<VirtAddr> {
    m.tasks.get(id)?.lock().mmap(req).ok()
}

/// Reads `file` whole through the cache, calling `check(offset, word)`
/// for every 8-byte word (the last one zero-padded): the bytes read. A
/// read that finds no frame reclaims and tries again, as a system call
/// would; what was read stays cached for reclaim to take.
fn read_back(m: &KMachine, file: &Arc<CachedFile>, mut check: impl FnMut(u64, u64)) -> u64 {
    let mut of = OpenFile::new(file.clone());
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0;
    let mut dry = 0;
    loop {
        let n = match m.cache.read(&mut of, at, &mut buf) {
            Ok(0) => return at,
            Ok(n) => n,
            Err(CacheError::Frames(_)) if m.reclaim_for_retry(&mut dry) => continue,
            Err(e) => {
                kprintln!("files: read back at {}: {}", at, e);
                return at;
            }
        };
        buf[n..n.next_multiple_of(8)].fill(0);
        for (i, w) in buf[..n.next_multiple_of(8)].chunks_exact(8).enumerate() {
            check(at + 8 * i as u64, u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        at += n as u64;
    }
}

/// `files`; see the [module documentation](self).
pub fn files(buddy: &'static Frames, ram_end: u64) -> bool {
    let ram = buddy.free_frame_count();
    let Some(m) = machine(buddy, ram_end, 4 * ram, 0) else {
        kprintln!("files: cannot set up the machine");
        return false;
    };
    let vol = match VirtioDisk::take(buddy, "ext4").map(Ext4Volume::load) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            kprintln!("files: the ext4 disk: {}", e);
            return false;
        }
        None => {
            kprintln!("files: no disk with serial \"ext4\"");
            return false;
        }
    };
    let (big, small) = match (vol.open(BIG.0), vol.open(SMALL.0)) {
        (Ok(b), Ok(s)) => (m.cache.open(b), m.cache.open(s)),
        (Err(e), _) | (_, Err(e)) => {
            kprintln!("files: opening the ext4 files: {}", e);
            return false;
        }
    };
    let Some(scratch) = VirtioDisk::take(buddy, "scratch") else {
        kprintln!("files: no disk with serial \"scratch\"");
        return false;
    };
    let dev = m.cache.open(BlockDevice::new(scratch));
    let (obig, odev) = (m.add_file(big.clone()), m.add_file(dev.clone()));
    let (big_pages, dev_pages, shm_pages) = (BIG.1 / PS, dev.size() / PS, SHM_BYTES / PS);
    kprintln!(
        "files: ext4 {} ({} bytes) and {} ({} bytes), scratch device {} bytes, shared anonymous {} bytes, anonymous {} bytes; {} frames free",
        BIG.0,
        big.size(),
        SMALL.0,
        small.size(),
        dev.size(),
        SHM_BYTES,
        ANON_BYTES,
        ram
    );
    let ok_sizes = big.size() == BIG.1 && small.size() == SMALL.1;

    // The tasks and their mappings.
    let Some(ids) = (0..5).map(|_| m.spawn().ok()).collect::<Option<alloc::vec::Vec<_>>>() else {
        kprintln!("files: cannot create the tasks");
        return false;
    };
    let (seq, rnd, writer, sharer, edge) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let osmall = m.add_file(small.clone());
    let maps = (|| {
        let a = map(m, seq, MapRequest::object(BIG.1, Protection::READ, obig, 0))?;
        let b = map(m, rnd, MapRequest::object(BIG.1, RW, obig, 0))?;
        let c = map(m, writer, MapRequest::object(dev.size(), RW, odev, 0).shared())?;
        let (d, shm) = m.map_shared_anon(&mut m.tasks.get(sharer)?.lock(), SHM_BYTES, RW).ok()?;
        let e = map(m, writer, scenario::anon_rw(ANON_BYTES))?;
        // One page longer than the file's pages.
        let f = map(m, edge, MapRequest::object(SMALL.1.div_ceil(PS) * PS + PS, Protection::READ, osmall, 0))?;
        Some((a, b, c, d, e, shm, f))
    })();
    let Some((a_seq, a_rnd, a_dev, a_shm, a_anon, shm, a_small)) = maps else {
        kprintln!("files: cannot map the files");
        return false;
    };
    // The child shares the shmem file's pages through the file.
    let Ok(child) = m.fork(sharer) else {
        kprintln!("files: fork failed");
        return false;
    };

    let tallies: [Arc<Tally>; 6] = Default::default();
    let shm_written = Arc::new(AtomicU64::new(0));
    let mut ok = true;
    // Reads the ext4 file in order, twice: every page's first and last word.
    let t = tallies[0].clone();
    ok &= spawn("seq", seq, move |k| {
        for _ in 0..2 {
            for p in 0..big_pages {
                let (w0, w1) = (p * 512, p * 512 + 511);
                let a = a_seq + p * PS;
                t.check(k.read(seq, a) == Ok(word(BIG.2, w0)) && k.read(seq, a + PS - 8) == Ok(word(BIG.2, w1)));
                turn(p);
            }
        }
    });
    // Reads it at random, and writes a private copy of every 16th page it
    // reads; then reads its copies back.
    let t = tallies[1].clone();
    ok &= spawn("random", rnd, move |k| {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut written = alloc::vec::Vec::new();
        for i in 0..RANDOM_READS {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let p = (x >> 33) % big_pages;
            let a = a_rnd + p * PS + 8 * (x & 511);
            t.check(k.read(rnd, a) == Ok(word(BIG.2, p * 512 + (x & 511))));
            if i % COW_EVERY == 0 && !written.contains(&p) {
                let _ = k.write(rnd, a_rnd + p * PS, !word(BIG.2, p * 512));
                written.push(p);
            }
            turn(i);
        }
        for (i, &p) in written.iter().enumerate() {
            t.check(k.read(rnd, a_rnd + p * PS) == Ok(!word(BIG.2, p * 512)));
            turn(i as u64);
        }
    });
    // Writes every page of the scratch device through a shared mapping,
    // and anonymous memory, then checks both.
    let t = tallies[2].clone();
    let anon_pages = ANON_BYTES / PS;
    let synced = Arc::new(AtomicU64::new(0));
    let synced_by = synced.clone();
    let dev_bytes = dev.size();
    ok &= spawn("device", writer, move |k| {
        for p in 0..dev_pages.max(anon_pages) {
            if p < dev_pages {
                let (a, v) = (a_dev + p * PS, stamp(3, p));
                let _ = k.write(writer, a, v).and_then(|_| k.write(writer, a + PS - 8, !v));
            }
            if p < anon_pages {
                let _ = k.write(writer, a_anon + p * PS, stamp(5, p));
            }
            turn(p);
        }
        // msync of the whole device mapping: every page on the disk.
        let m = super::MACHINE.get().expect("set up");
        match m.msync(writer, a_dev, dev_bytes) {
            Ok(()) => synced_by.store(1, Ordering::SeqCst),
            Err(e) => kprintln!("files: {}", e),
        }
        for p in 0..dev_pages.max(anon_pages) {
            if p < dev_pages {
                let (a, v) = (a_dev + p * PS, stamp(3, p));
                t.check(k.read(writer, a) == Ok(v) && k.read(writer, a + PS - 8) == Ok(!v));
            }
            if p < anon_pages {
                t.check(k.read(writer, a_anon + p * PS) == Ok(stamp(5, p)));
            }
            turn(p);
        }
    });
    // Parent and child each write half the shared anonymous pages, wait
    // for the other, and check all of them.
    for (n, who) in [(0u64, sharer), (1, child)] {
        let (t, done) = (tallies[3 + n as usize].clone(), shm_written.clone());
        ok &= spawn("shared", who, move |k| {
            for p in (n..shm_pages).step_by(2) {
                let _ = k.write(who, a_shm + p * PS, stamp(4, p));
                turn(p / 2);
            }
            done.fetch_add(1, Ordering::SeqCst);
            while done.load(Ordering::SeqCst) < 2 {
                sched::yield_now();
            }
            for p in 0..shm_pages {
                t.check(k.read(who, a_shm + p * PS) == Ok(stamp(4, p)));
                turn(p);
            }
        });
    }
    // The small file's last word, the zeros after it in its last page,
    // then the page past the end: a bus error ends this thread.
    let t = tallies[5].clone();
    let past = a_small + SMALL.1.div_ceil(PS) * PS;
    ok &= spawn("beyond", edge, move |k| {
        let last = (SMALL.1 / 8 - 1) * 8;
        t.check(k.read(edge, a_small + last) == Ok(word(SMALL.2, last / 8)));
        t.check(k.read(edge, a_small + SMALL.1.next_multiple_of(8)) == Ok(0));
        t.check(k.read(edge, past - 8) == Ok(0));
        let _ = k.read(edge, past);
        t.check(false); // not reached
    });
    spawn_kswapd(m, buddy);
    let start = crate::clock::now_ms();
    let ended = sched::run(tasks::activate);
    unload();
    let ms = crate::clock::now_ms() - start;
    let bus_error = Exit::Fault { vector: 14, addr: past.as_u64() };
    let beyond = ended.iter().find(|e| e.name == "beyond").map(|e| e.exit);
    kprintln!(
        "files: a read past the end of a mapped file ended its thread with a bus error: {}",
        beyond == Some(bus_error)
    );
    let clean_exits = beyond == Some(bus_error) && ended.iter().all(|e| e.name == "beyond" || e.exit == Exit::Done);
    let names = ["in order", "at random", "device and anonymous", "shared (parent)", "shared (child)", "past the end"];
    for (i, name) in names.iter().enumerate() {
        let (checked, bad) = tallies[i].get();
        kprintln!("files: {} read {} and found {} wrong", name, checked, bad);
        ok &= bad == 0 && checked > 0;
    }
    kprintln!("files: the tasks ran {} ms; every thread ended normally: {}", ms, clean_exits);
    let synced = synced.load(Ordering::SeqCst) == 1;
    kprintln!("files: msync of the device mapping: {}", if synced { "ok" } else { "failed" });
    ok &= clean_exits && synced;
    let during = m.figures(buddy.free_frame_count());

    // The tasks go; every cache is dropped; every byte comes back from
    // the disks and swap.
    kill_all(m);
    let wb = m.cache.writeback(u64::MAX);
    let dropped: u64 = [&big, &small, &dev].iter().map(|f| m.cache.drop_clean(f)).sum();
    let mut to_swap = 0;
    for p in 0..shm_pages {
        if m.cache.swap_out(&shm, p).is_ok() {
            to_swap += 1;
        }
    }
    let cached_left: u64 = [&big, &small, &dev].iter().map(|f| f.cached_pages()).sum();
    kprintln!(
        "files: dropped the caches: {} pages written back ({} failed), {} clean pages dropped, {} shmem pages sent to swap; {} file pages left cached",
        wb.pages,
        wb.failed,
        dropped,
        to_swap,
        cached_left
    );
    ok &= wb.failed == 0 && cached_left == 0;
    let bad = AtomicU64::new(0);
    let wrong = |b: bool| {
        if !b {
            bad.fetch_add(1, Ordering::Relaxed);
        }
    };
    let n_big = read_back(m, &big, |at, w| wrong(w == word(BIG.2, at / 8)));
    let n_small = read_back(m, &small, |at, w| {
        let mut want = word(SMALL.2, at / 8).to_le_bytes();
        let keep = (SMALL.1 - at).min(8) as usize;
        want[keep..].fill(0);
        wrong(w == u64::from_le_bytes(want))
    });
    let expect_stamped = |tag: u64, complement: bool| {
        move |at: u64, w: u64| {
            let (p, off) = (at / PS, at % PS);
            let want = match off {
                0 => stamp(tag, p),
                o if o == PS - 8 && complement => !stamp(tag, p),
                _ => 0,
            };
            w == want
        }
    };
    let dev_ok = expect_stamped(3, true);
    let n_dev = read_back(m, &dev, |at, w| wrong(dev_ok(at, w)));
    let shm_ok = expect_stamped(4, false);
    let n_shm = read_back(m, &shm, |at, w| wrong(shm_ok(at, w)));
    let bad = bad.load(Ordering::Relaxed);
    let sizes = [n_big, n_small, n_dev, n_shm] == [BIG.1, SMALL.1, dev_pages * PS, SHM_BYTES];
    kprintln!(
        "files: read back from disk and swap: {} + {} bytes of ext4, {} of the device, {} of shared memory; {} words wrong",
        n_big,
        n_small,
        n_dev,
        n_shm,
        bad
    );
    ok &= ok_sizes && sizes && bad == 0;

    let f = m.figures(buddy.free_frame_count());
    let c = f.cache;
    kprintln!(
        "files: page cache: {} hits, {} misses; readahead {} windows ({} started at a marker), {} pages in {} requests; {} pages mapped around faults",
        c.hits,
        c.misses,
        c.windows,
        c.async_windows,
        c.pages_read,
        c.read_requests,
        f.faults.mapped_around
    );
    kprintln!(
        "files: writeback: {} pages in {} requests ({} failed, {} throttled writers); file refaults {}",
        c.written_back,
        c.write_requests,
        c.writeback_errors,
        c.throttled,
        f.file_refaults
    );
    kprintln!(
        "files: reclaim while the tasks ran: {} anonymous pages ({} swapped out, {} shmem to swap), {} file pages ({} dropped clean, {} written back first)",
        during.evicted_anon,
        during.swapped_out,
        during.shmem_swapped,
        during.evicted_file,
        during.file_dropped,
        during.file_written
    );
    report("files", m, buddy);
    let split = during.evicted_file > 0 && during.evicted_anon > 0 && c.written_back > 0 && c.windows > 0;
    kprintln!("files: reclaim took file and anonymous pages, wrote dirty ones back and read ahead: {}", split);
    ok &= split;
    kprintln!("files: every byte intact: {}", ok);
    ok
}
