//! Loom models (MODEL 2, 4): per-CPU cluster allocation with a free and a
//! migrated task racing it, per-CPU slot caches taken from by another CPU, and the swap-cache protocol: concurrent faults
//! on one slot share one read, and a last free racing a fault releases the
//! frame exactly once.
#![cfg(loom)]

use std::sync::Arc;

use mm_swap::{Swap, SwapConfig};
use mm_types::testkit::loom_model::{model, spawn};
use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, FrameProvider, PhysAddr, PhysMemory, SwapSlot};

/// Two CPUs allocate two slots each (CPU 1's second request finds its
/// one-slot cluster full and must take a slot from CPU 0's cluster) while
/// CPU 0 frees one: all live slots distinct, bookkeeping consistent.
#[test]
fn per_cpu_clusters() {
    model(|| {
        let swap = Arc::new(Swap::new(SwapConfig { cpus: 2, readahead: 0 }));
        // Cluster 0 has 512 slots, cluster 1 one slot.
        swap.add_area(Box::new(MemStore::new(513)), 0).unwrap();
        let first = swap.alloc(0).unwrap();
        let s2 = swap.clone();
        let t = spawn(move || [s2.alloc(1).unwrap(), s2.alloc(1).unwrap()]);
        let mine = swap.alloc(0).unwrap();
        swap.free(first).unwrap();
        let theirs = t.join().unwrap();
        let mut all = vec![mine, theirs[0], theirs[1]];
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 3, "a slot handed out twice");
        assert_eq!(swap.used_slots(), 3);
        swap.check().unwrap();
    });
}

/// The same CPU number from two threads (a task migrated between asking
/// and allocating): its cluster lock serialises them.
#[test]
fn one_cpu_two_threads() {
    model(|| {
        let swap = Arc::new(Swap::new(SwapConfig { cpus: 1, readahead: 0 }));
        swap.add_area(Box::new(MemStore::new(4)), 0).unwrap();
        let s2 = swap.clone();
        let t = spawn(move || s2.alloc(0).unwrap());
        let a = swap.alloc(0).unwrap();
        let b = t.join().unwrap();
        assert_ne!(a, b);
        assert_eq!((a.offset().min(b.offset()), a.offset().max(b.offset())), (0, 1));
        swap.check().unwrap();
    });
}

/// CPU 0's slot cache holds the whole (3-slot) area after its first
/// allocation; CPU 1 takes the rest from it while CPU 0 allocates and
/// frees: every slot handed out once, `Full` only when none is left.
#[test]
fn slot_cache_taken_by_another_cpu() {
    model(|| {
        let swap = Arc::new(Swap::new(SwapConfig { cpus: 2, readahead: 0 }));
        swap.add_area(Box::new(MemStore::new(3)), 0).unwrap();
        let first = swap.alloc(0).unwrap();
        let s2 = swap.clone();
        let t = spawn(move || [s2.alloc(1), s2.alloc(1)]);
        let mine = swap.alloc(0);
        let theirs = t.join().unwrap();
        let mut got: Vec<SwapSlot> = theirs.iter().chain([&mine]).filter_map(|r| r.ok()).collect();
        assert_eq!(got.len(), 2, "two slots were left: {theirs:?} {mine:?}");
        got.push(first);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 3, "a slot handed out twice");
        assert_eq!(swap.used_slots(), 3);
        swap.check().unwrap();
    });
}

struct World {
    mem: SimPhysMemory,
    frames: RefFrameProvider,
    store: Arc<MemStore>,
    swap: Swap,
}

/// A world with one page of 0x33 swapped out with `users` users.
fn world(users: u16) -> (Arc<World>, SwapSlot) {
    let mem = SimPhysMemory::new(PhysAddr::new(0x10_0000).unwrap(), 64 << 10);
    let frames = RefFrameProvider::new(&mem);
    let store = Arc::new(MemStore::new(8));
    let swap = Swap::new(SwapConfig { cpus: 2, readahead: 0 });
    swap.add_area(Box::new(store.clone()), 0).unwrap();
    let f = frames.allocate_frame(AllocFlags::empty()).unwrap();
    // SAFETY: the frame was just allocated.
    unsafe { mem.write_bytes(f, &[0x33; 4096]) }.unwrap();
    // SAFETY: nothing writes the frame meanwhile.
    let slot = unsafe { swap.swap_out(0, f, users, &mem) }.unwrap();
    frames.free_frame(f).unwrap();
    (Arc::new(World { mem, frames, store, swap }), slot)
}

fn byte(w: &World, f: PhysAddr) -> u8 {
    let mut b = [0u8; 1];
    // SAFETY: cached frames are only read in these models.
    unsafe { w.mem.read_bytes(f, &mut b) }.unwrap();
    b[0]
}

/// Two faults on one slot: one read, one frame, right data.
#[test]
fn faults_share_one_read() {
    model(|| {
        let (w, slot) = world(2);
        let reads = w.store.reads();
        let w2 = w.clone();
        let t = spawn(move || w2.swap.swap_in(slot, &w2.frames, &w2.mem).unwrap());
        let mine = w.swap.swap_in(slot, &w.frames, &w.mem).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(mine.frame, theirs.frame);
        assert!(mine.read ^ theirs.read, "exactly one of them read");
        assert_eq!(w.store.reads() - reads, 1);
        assert_eq!(byte(&w, mine.frame), 0x33);
        assert_eq!(w.swap.free(slot).unwrap(), None);
        assert_eq!(w.swap.free(slot).unwrap(), Some(mine.frame));
        w.swap.check().unwrap();
    });
}

/// One user faults while the other (last) user exits: whoever is last
/// gets the frame back; it is handed out once, and nothing leaks.
#[test]
fn last_free_races_a_fault() {
    model(|| {
        let (w, slot) = world(2);
        let w2 = w.clone();
        // The exiting user.
        let t = spawn(move || w2.swap.free(slot).unwrap());
        let f = w.swap.swap_in(slot, &w.frames, &w.mem).unwrap().frame;
        assert_eq!(byte(&w, f), 0x33);
        let exit_got = t.join().unwrap();
        // The faulting user maps the frame and drops its use.
        let fault_got = w.swap.free(slot).unwrap();
        assert_eq!(exit_got, None, "the exit was not the last use");
        assert_eq!(fault_got, Some(f));
        assert_eq!(w.swap.used_slots(), 0);
        w.swap.check().unwrap();
    });
}
