//! Writes through shared mappings under swap: a page in the swap cache is
//! a second copy of its slot, and every path that makes the slot stale (a
//! write through a writable mapping of the cached frame) must be seen
//! before the slot is trusted again (mm-vma MODEL 24, the page-dirty
//! record). Each test writes, evicts and reads back through every mapper.

use mm_types::VirtAddr;
use mm_vma::SpaceId;
use mm_wiring::scenario::{anon_rw, Touch};
use mm_wiring::sim::{Sim, SimConfig};

const A: u64 = 0xaaaa_aaaa_aaaa_aaaa;
const B: u64 = 0xbbbb_bbbb_bbbb_bbbb;

fn sim() -> Sim {
    Sim::new(SimConfig { ram: 256 << 10, swap_slots: 256, second_area: 0, zswap: None })
}

fn map_shared(sim: &Sim, task: SpaceId, pages: u64) -> VirtAddr {
    let s = sim.machine.tasks.get(task).unwrap();
    let r = s.lock().mmap(anon_rw(pages * 4096).shared());
    r.unwrap()
}

fn swapped(sim: &Sim, task: SpaceId) -> u64 {
    let s = sim.machine.tasks.get(task).unwrap();
    let n = s.lock().counts().swapped;
    n
}

/// Evicts every page it can (twice over: referenced pages get a second
/// pass) and checks the bookkeeping.
fn evict_all(sim: &Sim) {
    sim.machine.reclaim_now(u64::MAX);
    sim.machine.reclaim_now(u64::MAX);
    sim.machine.device.swap().check().unwrap();
    sim.machine.check_clean_cache().unwrap();
}

/// A shared page swapped out from parent and child (one slot, two users).
fn shared_in_swap(sim: &mut Sim) -> (SpaceId, SpaceId, VirtAddr) {
    let parent = sim.spawn(1)[0];
    let base = map_shared(sim, parent, 1);
    sim.write(parent, base, A).unwrap();
    let child = sim.machine.fork(parent).unwrap();
    evict_all(sim);
    assert_eq!((swapped(sim, parent), swapped(sim, child)), (1, 1), "both page tables name the slot");
    (parent, child, base)
}

/// The six steps: shared page, fork, evict, the parent reads it back (the
/// frame stays cached: the child still names the slot) and writes, evict
/// again: both must read the write.
#[test]
fn shared_write_after_swap_in_survives_eviction() {
    let mut sim = sim();
    let (parent, child, base) = shared_in_swap(&mut sim);
    assert_eq!(sim.read(parent, base), Ok(A));
    sim.write(parent, base, B).unwrap();
    evict_all(&sim);
    assert_eq!(swapped(&sim, parent), 1, "the page was evicted again");
    assert_eq!(sim.read(child, base), Ok(B));
    assert_eq!(sim.read(parent, base), Ok(B));
    // And once more, from the child's side.
    sim.write(child, base, A).unwrap();
    evict_all(&sim);
    assert_eq!(sim.read(parent, base), Ok(A));
    assert_eq!(sim.read(child, base), Ok(A));
}

/// The write-fault path of a shared mapping: the page mapped read-only
/// (mprotect), made writable again by a write fault, then evicted.
#[test]
fn shared_write_fault_after_swap_in_survives_eviction() {
    let mut sim = sim();
    let (parent, child, base) = shared_in_swap(&mut sim);
    assert_eq!(sim.read(parent, base), Ok(A));
    {
        let s = sim.machine.tasks.get(parent).unwrap();
        let mut g = s.lock();
        g.mprotect(base, 4096, mm_types::Protection::READ).unwrap();
        g.mprotect(base, 4096, mm_types::Protection::READ | mm_types::Protection::WRITE).unwrap();
    }
    sim.write(parent, base, B).unwrap();
    evict_all(&sim);
    assert_eq!(sim.read(child, base), Ok(B));
    assert_eq!(sim.read(parent, base), Ok(B));
}

/// Fork copies a shared VMA's writable mapping of a cached frame: the
/// grandchild's write must reach all three.
#[test]
fn fork_of_a_cached_shared_page_keeps_the_write() {
    let mut sim = sim();
    let (parent, child, base) = shared_in_swap(&mut sim);
    assert_eq!(sim.read(parent, base), Ok(A));
    let grandchild = sim.machine.fork(parent).unwrap();
    sim.write(grandchild, base, B).unwrap();
    evict_all(&sim);
    for t in [parent, child, grandchild] {
        assert_eq!(sim.read(t, base), Ok(B));
    }
}

/// The writer unmaps its dirty mapping (munmap, then exit): the dirty bit
/// moves to the page, which stays cached for the child; dropping it from
/// the cache must write it first.
#[test]
fn dirty_bit_reaches_the_page_on_munmap_and_exit() {
    for exit in [false, true] {
        let mut sim = sim();
        let (parent, child, base) = shared_in_swap(&mut sim);
        assert_eq!(sim.read(parent, base), Ok(A));
        sim.write(parent, base, B).unwrap();
        if exit {
            assert!(sim.machine.kill(parent));
        } else {
            let s = sim.machine.tasks.get(parent).unwrap();
            s.lock().munmap(base, 4096).unwrap();
        }
        assert_eq!(sim.machine.mm.map_count(sim.machine.device.swap().cached()[0].1), 0);
        evict_all(&sim);
        assert!(sim.machine.device.swap().cached().is_empty(), "the cached page was dropped");
        assert_eq!(sim.read(child, base), Ok(B), "exit: {exit}");
    }
}

/// mremap moves the dirty mapping: the dirty bit goes with it.
#[test]
fn mremap_keeps_the_dirty_bit() {
    let mut sim = sim();
    let (parent, child, base) = shared_in_swap(&mut sim);
    assert_eq!(sim.read(parent, base), Ok(A));
    sim.write(parent, base, B).unwrap();
    let moved = {
        let s = sim.machine.tasks.get(parent).unwrap();
        let r = s.lock().mremap(base, 4096, 8192, mm_vma::Remap::MayMove);
        r.unwrap()
    };
    evict_all(&sim);
    assert_eq!(sim.read(child, base), Ok(B));
    assert_eq!(sim.read(parent, moved), Ok(B));
}

/// Private pages: a write after swap-in copies (the cached copy is never
/// written through), so the other sharer keeps the old value.
#[test]
fn private_write_after_swap_in_copies() {
    let mut sim = sim();
    let parent = sim.spawn(1)[0];
    let base = sim.map(parent, 4096).unwrap();
    sim.write(parent, base, A).unwrap();
    let child = sim.machine.fork(parent).unwrap();
    evict_all(&sim);
    assert_eq!(sim.read(parent, base), Ok(A));
    sim.write(parent, base, B).unwrap();
    evict_all(&sim);
    assert_eq!(sim.read(child, base), Ok(A));
    assert_eq!(sim.read(parent, base), Ok(B));
}

/// The debug verification sees a clean cached page that differs from its
/// slot: here a stray write to the frame that no mapping's dirty bit saw.
#[test]
fn clean_cache_check_sees_a_lost_write() {
    let mut sim = sim();
    let (parent, _child, base) = shared_in_swap(&mut sim);
    assert_eq!(sim.read(parent, base), Ok(A));
    sim.machine.check_clean_cache().unwrap();
    let (_, frame) = sim.machine.device.swap().cached()[0];
    // SAFETY: a frame of the simulated RAM; no task runs.
    unsafe { mm_types::PhysMemory::write_bytes(&sim.ram, frame, &B.to_le_bytes()) }.unwrap();
    assert_eq!(sim.machine.check_clean_cache(), Err("a clean swap-cache page differs from its slot"));
    // A dirty mapping makes the same page legitimately different.
    sim.write(parent, base, B).unwrap();
    sim.machine.check_clean_cache().unwrap();
}
