//! Behaviour of caches and kmalloc over the host test kit; numbers refer to
//! MODEL.md.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use mm_buddy::{BuddyAllocator, BuddyConfig};
use mm_slab::{
    Cache, CacheConfig, CacheFlags, CorruptionKind, GlobalSlab, Kmalloc, KmallocConfig, SlabError, TypedCache,
    POISON_FREE, RED_ACTIVE,
};
use mm_types::percpu::{FixedCpu, SingleCpu};
use mm_types::testkit::{HostCpus, RefFrameProvider, SimPhysMemory};
use mm_types::{FrameError, PhysAccessError, PhysAddr, PhysMemory};

fn ram(mib: u64) -> SimPhysMemory {
    SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), mib << 20)
}

fn debug(name: &'static str, size: usize) -> CacheConfig {
    CacheConfig { flags: CacheFlags::HARDENED_FREELIST | CacheFlags::DEBUG, ..CacheConfig::new(name, size) }
}

/// Writes `byte` over `len` bytes at `p + offset`.
fn scribble(p: NonNull<u8>, offset: usize, len: usize, byte: u8) {
    // SAFETY: tests scribble over slab memory they own or deliberately corrupt; it stays inside the mapped slab.
    unsafe { p.as_ptr().add(offset).write_bytes(byte, len) };
}

#[test]
fn objects_are_distinct_aligned_and_keep_their_contents() {
    // MODEL.md 2.
    let mem = ram(4);
    let frames = RefFrameProvider::new(&mem);
    let config = CacheConfig { align: 64, ..CacheConfig::new("obj", 100) };
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, config).unwrap();
    let objs: Vec<_> = (0..500).map(|_| cache.alloc().unwrap()).collect();
    let mut addrs: Vec<usize> = objs.iter().map(|p| p.as_ptr().addr()).collect();
    addrs.sort();
    assert!(addrs.windows(2).all(|w| w[1] - w[0] >= 100), "objects overlap");
    assert!(addrs.iter().all(|a| a % 64 == 0));
    for (i, p) in objs.iter().enumerate() {
        scribble(*p, 0, 100, i as u8);
    }
    for (i, p) in objs.iter().enumerate().step_by(2) {
        // SAFETY: each object is checked then freed once.
        unsafe {
            assert!(std::slice::from_raw_parts(p.as_ptr(), 100).iter().all(|&b| b == i as u8));
            cache.free(*p).unwrap();
        }
    }
    for (i, p) in objs.iter().enumerate().skip(1).step_by(2) {
        // SAFETY: as above.
        assert!(unsafe { std::slice::from_raw_parts(p.as_ptr(), 100) }.iter().all(|&b| b == i as u8));
    }
    assert_eq!(cache.stats().active_objects, 250);
    assert_eq!(cache.validate(|c| panic!("{c}")), 0);
}

#[test]
fn empty_slabs_go_back_and_shrink_releases_the_rest() {
    // MODEL.md 8.
    let mem = ram(4);
    let frames = RefFrameProvider::new(&mem);
    let config = CacheConfig { min_empty_slabs: 1, cpu_partial: 1, ..CacheConfig::new("obj", 512) };
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, config).unwrap();
    let per_slab = cache.geometry().objects;
    let objs: Vec<_> = (0..per_slab * 6).map(|_| cache.alloc().unwrap()).collect();
    assert_eq!(cache.stats().slabs, 6);
    assert_eq!(frames.allocated_blocks(), 6);
    for p in &objs {
        // SAFETY: each allocated object is freed once.
        unsafe { cache.free(*p).unwrap() };
    }
    // Frees outside the CPU's current slab wait in batches of 16.
    assert!(cache.stats().cpu_deferred_frees > 0);
    cache.flush_deferred().unwrap();
    assert_eq!(cache.stats().cpu_deferred_frees, 0);
    // The CPU keeps its current slab and one partial slab (the first that
    // stopped being full); the node keeps one empty slab; the other three
    // went back to the frame provider as they emptied.
    let s = cache.stats();
    assert_eq!(s.active_objects, 0);
    assert_eq!((s.slabs, s.cpu_slabs, s.empty_slabs, s.slabs_released), (3, 2, 1, 3), "{s:?}");
    assert_eq!(frames.allocated_blocks(), 3);
    assert_eq!(cache.shrink().unwrap(), s.slabs);
    assert_eq!(frames.allocated_blocks(), 0);
    assert_eq!(cache.stats().slabs, 0);
    // The cache still works afterwards.
    let p = cache.alloc().unwrap();
    // SAFETY: allocated just above.
    unsafe { cache.free(p).unwrap() };
}

#[test]
fn frees_outside_the_current_slab_go_back_a_batch_at_a_time() {
    // MODEL.md 3 and 8: the sixteenth queued free waits; the seventeenth
    // sends all sixteen to their slabs, and the slab they emptied goes back.
    let mem = ram(4);
    let frames = RefFrameProvider::new(&mem);
    let config = CacheConfig { min_empty_slabs: 0, cpu_partial: 1, ..CacheConfig::new("batch", 512) };
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, config).unwrap();
    let per_slab = cache.geometry().objects;
    assert!(per_slab < 16, "the scenario empties a slab within one batch");
    // Three full slabs; the third is the CPU's current slab.
    let objs: Vec<_> = (0..per_slab * 3).map(|_| cache.alloc().unwrap()).collect();
    let (first, second) = (&objs[..per_slab], &objs[per_slab..2 * per_slab]);
    // One object of the second slab (it will take the CPU's one partial
    // place), then the whole first slab, then the second slab's rest.
    let order: Vec<_> = second[..1].iter().chain(first).chain(&second[1..]).copied().collect();
    // SAFETY: each allocated object is freed once.
    unsafe {
        for p in &order[..16] {
            cache.free(*p).unwrap();
        }
    }
    let s = cache.stats();
    assert_eq!((s.cpu_deferred_frees, s.active_objects, s.slabs), (16, per_slab * 3 - 16, 3), "{s:?}");
    assert_eq!(frames.allocated_blocks(), 3, "the emptied slab waits for its batch");
    // SAFETY: as above.
    unsafe { cache.free(order[16]).unwrap() };
    let s = cache.stats();
    assert_eq!((s.cpu_deferred_frees, s.active_objects, s.slabs, s.slabs_released), (1, per_slab * 3 - 17, 2, 1));
    assert_eq!(frames.allocated_blocks(), 2);
    assert_eq!(cache.validate(|c| panic!("{c}")), 0);
    // SAFETY: as above, the rest.
    unsafe {
        for p in order[17..].iter().chain(&objs[2 * per_slab..]) {
            cache.free(*p).unwrap();
        }
    }
    assert_eq!(cache.stats().active_objects, 0);
    cache.shrink().unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
}

#[test]
fn a_deferred_double_free_is_reported_when_its_batch_goes_back() {
    // MODEL.md 5: a repeat of the last queued free is refused at once; an
    // older one is found under the node lock when the batch is flushed,
    // reported there by address, and nothing else is lost.
    let mem = ram(4);
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, CacheConfig::new("twice", 512)).unwrap();
    let per_slab = cache.geometry().objects;
    let objs: Vec<_> = (0..per_slab * 2).map(|_| cache.alloc().unwrap()).collect();
    let (x, y) = (objs[0], objs[1]);
    // SAFETY: `x` and `y` are freed once each; the repeated frees must be refused.
    unsafe {
        cache.free(x).unwrap();
        assert_eq!(cache.free(x), Err(SlabError::DoubleFree { addr: x.as_ptr().addr() }));
        cache.free(y).unwrap();
        cache.flush_deferred().unwrap();
        // `y` is its slab's last freed object, no longer queued.
        cache.free(y).unwrap();
        assert_eq!(cache.flush_deferred(), Err(SlabError::DoubleFree { addr: y.as_ptr().addr() }));
        // `x` is not at the head of its slab's freelist: with the queue
        // between, neither check sees it (as on the locked path).
        cache.free(objs[2]).unwrap();
    }
    assert_eq!(cache.stats().active_objects, per_slab * 2 - 3);
    assert_eq!(cache.validate(|c| panic!("{c}")), 0);
    // SAFETY: the rest, each freed once.
    unsafe {
        for p in &objs[3..] {
            cache.free(*p).unwrap();
        }
    }
    cache.shrink().unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
}

#[test]
fn remote_frees_from_other_cpus_are_correct() {
    // MODEL.md 3: objects allocated on CPU 0 and freed on CPU 1 go to their
    // slab's own freelist; CPU 0 finds them again.
    let mem = ram(4);
    let frames = RefFrameProvider::new(&mem);
    let cpu0 = FixedCpu { cpu: 0, count: 2 };
    let a: Cache<_, _, _, 2> = Cache::new(&frames, mem.clone(), cpu0, CacheConfig::new("obj", 64)).unwrap();
    let objs: Vec<_> = (0..100).map(|_| a.alloc().unwrap()).collect();
    // The same cache seen from CPU 1: share it by reference through a
    // CPU source that can change.
    struct Switch(std::sync::atomic::AtomicUsize);
    impl mm_types::CpuLocal for Switch {
        fn current_cpu(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
        fn cpu_count(&self) -> usize {
            2
        }
    }
    let cpu = Switch(0.into());
    let b: Cache<_, _, _, 2> = Cache::new(&frames, mem.clone(), &cpu, CacheConfig::new("obj", 64)).unwrap();
    let objs_b: Vec<_> = (0..100).map(|_| b.alloc().unwrap()).collect();
    cpu.0.store(1, std::sync::atomic::Ordering::Relaxed);
    for p in &objs_b {
        // SAFETY: each object freed once, remotely.
        unsafe { b.free(*p).unwrap() };
    }
    assert_eq!(b.stats().active_objects, 0);
    assert_eq!(b.validate(|c| panic!("{c}")), 0);
    cpu.0.store(0, std::sync::atomic::Ordering::Relaxed);
    let again: Vec<_> = (0..100).map(|_| b.alloc().unwrap()).collect();
    let mut seen: Vec<_> = again.iter().map(|p| p.as_ptr().addr()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 100, "no object handed out twice");
    assert_eq!(b.stats().slabs, b.stats().slabs_grown as usize, "remote-freed objects were reused, no new slab");
    for p in objs.iter() {
        // SAFETY: freed once.
        unsafe { a.free(*p).unwrap() };
    }
    // A pointer of cache `a` is foreign to cache `b` (another secret).
    let x = a.alloc().unwrap();
    // SAFETY: the free must be refused; `x` stays live in `a`.
    assert_eq!(unsafe { b.free(x) }, Err(SlabError::ForeignPointer { addr: x.as_ptr().addr() }));
    // SAFETY: freed once, by its own cache.
    unsafe { a.free(x).unwrap() };
}

#[test]
fn threads_on_several_cpus_alloc_and_free_each_others_objects() {
    // MODEL.md 1-3 under real concurrency (loom covers the interleavings).
    let mem = ram(16);
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _, 4> = Cache::new(
        &frames,
        mem.clone(),
        HostCpus::new(4),
        CacheConfig { cpu_partial: 2, ..CacheConfig::new("obj", 48) },
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let rx = std::sync::Mutex::new(rx);
    let rounds = if cfg!(miri) { 20 } else { 3000 };
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let (cache, tx, rx) = (&cache, tx.clone(), &rx);
            s.spawn(move || {
                for i in 0..rounds {
                    let p = cache.alloc().unwrap();
                    scribble(p, 0, 48, t);
                    tx.send(p.as_ptr().expose_provenance()).unwrap();
                    if i % 2 == 1 {
                        let addr = rx.lock().unwrap().recv().unwrap();
                        let p = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(addr)).unwrap();
                        // SAFETY: every address is sent once and freed once.
                        unsafe { cache.free(p).unwrap() };
                    }
                }
            });
        }
    });
    drop(tx);
    let mut rest = 0;
    for addr in rx.into_inner().unwrap() {
        let p = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(addr)).unwrap();
        // SAFETY: as above.
        unsafe { cache.free(p).unwrap() };
        rest += 1;
    }
    assert_eq!(rest, 4 * rounds / 2);
    assert_eq!(cache.stats().active_objects, 0);
    assert_eq!(cache.validate(|c| panic!("{c}")), 0);
    cache.shrink().unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
}

#[test]
fn poison_catches_a_write_after_free() {
    // MODEL.md 6.
    let mem = ram(1);
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, debug("uaf", 64)).unwrap();
    let p = cache.alloc().unwrap();
    // SAFETY: freed once.
    unsafe { cache.free(p).unwrap() };
    scribble(p, 40, 1, 0x00); // the bug: a write after free
    let mut reports = Vec::new();
    assert_eq!(cache.validate(|c| reports.push(c)), 1);
    assert_eq!(reports[0].object, p.as_ptr().addr());
    assert_eq!(reports[0].kind, CorruptionKind::Poison { offset: 40, expected: POISON_FREE, found: 0 });
    // Handing the object out again reports it too (and quarantines it).
    let err = cache.alloc().unwrap_err();
    assert!(matches!(err, SlabError::Corrupted(c) if c.object == p.as_ptr().addr()), "{err:?}");
    let q = cache.alloc().unwrap();
    assert_ne!(q, p);
}

#[test]
fn red_zone_catches_an_overflow_on_free() {
    let mem = ram(1);
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, debug("overflow", 60)).unwrap();
    let p = cache.alloc().unwrap();
    scribble(p, 0, 62, 0x41); // two bytes past the end
    let mut reports = Vec::new();
    assert_eq!(cache.validate(|c| reports.push(c)), 1);
    assert_eq!(reports[0].kind, CorruptionKind::RedZone { offset: 60, expected: RED_ACTIVE, found: 0x41 });
    // SAFETY: the free is refused and `p` stays allocated.
    let err = unsafe { cache.free(p) }.unwrap_err();
    assert_eq!(
        err,
        SlabError::Corrupted(mm_slab::Corruption {
            cache: "overflow",
            object: p.as_ptr().addr(),
            kind: CorruptionKind::RedZone { offset: 60, expected: RED_ACTIVE, found: 0x41 },
        })
    );
    assert_eq!(cache.stats().active_objects, 1);
    assert!(err.to_string().contains("red zone overwritten at +60"), "{err}");
}

#[test]
fn double_interior_and_foreign_frees_are_refused() {
    // MODEL.md 5.
    let mem = ram(1);
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, debug("checked", 96)).unwrap();
    let a = cache.alloc().unwrap();
    let b = cache.alloc().unwrap();
    // SAFETY: each free below either frees a live object once or must be refused; all pointers stay
    // inside the mapped slab.
    unsafe {
        cache.free(a).unwrap();
        cache.free(b).unwrap();
        // `a` is not the last one freed: only the bitmap can tell.
        assert_eq!(cache.free(a), Err(SlabError::DoubleFree { addr: a.as_ptr().addr() }));
        let c = cache.alloc().unwrap();
        let inner = NonNull::new_unchecked(c.as_ptr().add(8));
        assert_eq!(
            cache.free(inner),
            Err(SlabError::Misaligned { addr: inner.as_ptr().addr(), object: c.as_ptr().addr() })
        );
        // A pointer to another frame of RAM that holds no slab.
        let elsewhere = mem.translate(PhysAddr::new(0x100_0000 + (512 << 10)).unwrap(), 8).unwrap();
        assert_eq!(cache.free(elsewhere), Err(SlabError::ForeignPointer { addr: elsewhere.as_ptr().addr() }));
        cache.free(c).unwrap();
    }
    assert_eq!(cache.stats().active_objects, 0);
    assert_eq!(cache.validate(|c| panic!("{c}")), 0);
}

#[test]
fn hardened_freelist_detects_an_overwritten_link() {
    // MODEL.md 6: the fast path follows a link only inside its slab.
    let mem = ram(1);
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, CacheConfig::new("links", 32)).unwrap();
    let a = cache.alloc().unwrap();
    let b = cache.alloc().unwrap();
    // SAFETY: freed once each.
    unsafe {
        cache.free(b).unwrap();
        cache.free(a).unwrap();
    }
    // Use after free: overwrite `a`'s link with a pointer of the attacker's
    // choosing (the address of `b` itself, stored plainly).
    // SAFETY: deliberately corrupting a free object inside the slab.
    unsafe { a.as_ptr().cast::<usize>().write(b.as_ptr().addr()) };
    let mut reports = Vec::new();
    assert!(cache.validate(|c| reports.push(c)) >= 1);
    assert!(matches!(reports[0].kind, CorruptionKind::FreePointer { .. }), "{reports:?}");
    let err = cache.alloc().unwrap_err();
    assert!(matches!(err, SlabError::Corrupted(c) if c.object == a.as_ptr().addr()), "{err:?}");
    // The broken list was dropped (its objects leak rather than being
    // handed out twice): allocation goes on from a fresh slab.
    let c = cache.alloc().unwrap();
    assert!(c != a && c != b);
    assert_eq!(cache.stats().slabs, 2);
}

#[test]
fn header_overwrite_is_reported() {
    let mem = ram(1);
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, CacheConfig::new("hdr", 256)).unwrap();
    let p = cache.alloc().unwrap();
    let header =
        cache.geometry().slab_bytes() - mm_slab::HEADER_BYTES - (p.as_ptr().addr() % cache.geometry().slab_bytes());
    scribble(p, header, 8, 0);
    let mut reports = Vec::new();
    assert_eq!(cache.validate(|c| reports.push(c)), 1);
    assert_eq!(reports[0].kind, CorruptionKind::Header);
    // A free through the slow path now sees a foreign slab.
    cache.flush_cpus().unwrap();
    // SAFETY: the free must be refused.
    assert!(matches!(unsafe { cache.free(p) }, Err(SlabError::ForeignPointer { .. })));
}

#[test]
fn constructor_runs_once_per_object_and_state_survives() {
    fn ctor(p: NonNull<u8>) {
        // Constructed state lives after the first word (the link).
        scribble(p, 8, 24, 0x5c);
    }
    let mem = ram(1);
    let frames = RefFrameProvider::new(&mem);
    let config = CacheConfig { ctor: Some(ctor), ..CacheConfig::new("ctor", 32) };
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, config).unwrap();
    let p = cache.alloc().unwrap();
    // SAFETY: reading the constructed object, then freeing it once.
    unsafe {
        assert!(std::slice::from_raw_parts(p.as_ptr().add(8), 24).iter().all(|&b| b == 0x5c));
        cache.free(p).unwrap();
        let q = cache.alloc().unwrap();
        assert!(std::slice::from_raw_parts(q.as_ptr().add(8), 24).iter().all(|&b| b == 0x5c));
    }
    let bad = CacheConfig { ctor: Some(ctor), flags: CacheFlags::POISON, ..CacheConfig::new("ctor", 32) };
    assert!(matches!(Cache::<_, _, _>::new(&frames, mem.clone(), SingleCpu, bad), Err(SlabError::InvalidConfig(_))));
}

#[test]
fn bad_configurations_and_out_of_memory() {
    let mem = ram(1);
    let frames = RefFrameProvider::new(&mem);
    let new = |c| Cache::<_, _, _>::new(&frames, mem.clone(), SingleCpu, c);
    assert_eq!(new(CacheConfig::new("zero", 0)).unwrap_err(), SlabError::InvalidLayout { size: 0, align: 8 });
    assert!(matches!(new(CacheConfig { align: 24, ..CacheConfig::new("x", 8) }), Err(SlabError::InvalidLayout { .. })));
    assert!(matches!(new(CacheConfig::new("huge", 1 << 20)), Err(SlabError::ObjectTooLarge { .. })));
    assert!(matches!(
        new(CacheConfig { frame_flags: mm_types::AllocFlags::ZERO, ..CacheConfig::new("z", 8) }),
        Err(SlabError::InvalidConfig(_))
    ));
    let cache = new(CacheConfig::new("big", 4000)).unwrap();
    let mut held = Vec::new();
    let err = loop {
        match cache.alloc() {
            Ok(p) => held.push(p),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SlabError::OutOfMemory(FrameError::OutOfMemory { .. })), "{err}");
    assert!(held.len() >= 200);
    for p in held {
        // SAFETY: freed once.
        unsafe { cache.free(p).unwrap() };
    }
}

/// A direct map that puts frames at a 4 KiB-aligned but not slab-aligned
/// offset.
struct Skewed(SimPhysMemory);
// SAFETY: forwards to the simulated memory with a page offset that stays in its buffer (the test uses
// only its first half).
unsafe impl PhysMemory for Skewed {
    fn translate(&self, addr: PhysAddr, len: usize) -> Result<NonNull<u8>, PhysAccessError> {
        self.0.translate(PhysAddr::new(addr.as_u64() + 4096).unwrap(), len)
    }
}

#[test]
fn a_direct_map_that_breaks_slab_alignment_is_refused() {
    let mem = ram(1);
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _> = Cache::new(
        &frames,
        Skewed(mem.clone()),
        SingleCpu,
        CacheConfig { max_order: 1, ..CacheConfig::new("x", 5000) },
    )
    .unwrap();
    assert_eq!(cache.geometry().order, 1);
    assert!(matches!(cache.alloc(), Err(SlabError::MappingNotAligned { .. })));
    assert_eq!(frames.allocated_blocks(), 0, "the block went back");
}

#[test]
fn typed_cache_drops_values() {
    use std::rc::Rc;
    let mem = ram(1);
    let frames = RefFrameProvider::new(&mem);
    let cache: TypedCache<(u64, Rc<()>), _, _, _> = TypedCache::new(&frames, mem.clone(), SingleCpu, "rc").unwrap();
    let token = Rc::new(());
    let boxes: Vec<_> = (0..10).map(|i| cache.alloc((i, token.clone())).unwrap()).collect();
    assert_eq!(Rc::strong_count(&token), 11);
    assert_eq!(boxes[3].0, 3);
    drop(boxes);
    assert_eq!(Rc::strong_count(&token), 1);
    assert_eq!(cache.stats().active_objects, 0);
}

#[test]
fn kmalloc_classes_large_blocks_realloc_and_global_alloc() {
    let mem = ram(32);
    let buddy: BuddyAllocator<_, _> = BuddyAllocator::new(mem.clone(), SingleCpu, BuddyConfig::default()).unwrap();
    // SAFETY: the simulated RAM belongs to this allocator alone.
    unsafe { buddy.add_memory(mem.span()).unwrap() };
    let free_before = buddy.free_frame_count();
    let heap: Kmalloc<_, _, _> = Kmalloc::new(&buddy, mem.clone(), SingleCpu, KmallocConfig::default()).unwrap();
    for (size, class) in [(1, 8), (8, 8), (9, 16), (96, 96), (97, 112), (150, 160), (192, 192), (8192, 8192)] {
        assert_eq!(heap.class_size(Layout::from_size_align(size, 8).unwrap()), Some(class), "size {size}");
    }
    assert_eq!(heap.class_size(Layout::from_size_align(8193, 8).unwrap()), None);
    // Alignment requests pick an aligned class.
    let l = Layout::from_size_align(24, 64).unwrap();
    assert_eq!(heap.class_size(l), Some(64));
    // krealloc keeps the data.
    let p = heap.kmalloc(40).unwrap();
    scribble(p, 0, 40, 0x77);
    // SAFETY: `p` is 40 bytes from kmalloc; each pointer is freed once.
    unsafe {
        let same = heap.krealloc(p, 40, 48).unwrap();
        assert_eq!(same, p, "same class: in place");
        let moved = heap.krealloc(p, 48, 5000).unwrap();
        assert!(std::slice::from_raw_parts(moved.as_ptr(), 40).iter().all(|&b| b == 0x77));
        let huge = heap.krealloc(moved, 5000, 100_000).unwrap();
        assert!(std::slice::from_raw_parts(huge.as_ptr(), 40).iter().all(|&b| b == 0x77));
        assert_eq!(heap.large_allocations(), 1);
        heap.kfree(huge, 100_000).unwrap();
        // A large block freed twice: the buddy allocator refuses it.
        assert!(matches!(heap.kfree(huge, 100_000), Err(SlabError::Frames(FrameError::DoubleFree(_)))));
    }
    // GlobalAlloc: a refused free is counted, not lost.
    let g = Layout::from_size_align(300, 8).unwrap();
    // SAFETY: the layout is non-zero; the pointer is freed once, then freed again with a different size on purpose.
    unsafe {
        let q = GlobalAlloc::alloc(&heap, g);
        assert!(!q.is_null());
        GlobalAlloc::dealloc(&heap, q, g);
        GlobalAlloc::dealloc(&heap, q, Layout::from_size_align(40, 8).unwrap());
    }
    assert_eq!(heap.refused_frees().0, 1);
    assert!(matches!(heap.refused_frees().1, Some(SlabError::ForeignPointer { .. })));
    heap.shrink().unwrap();
    drop(heap);
    buddy.drain_all();
    assert_eq!(buddy.free_frame_count(), free_before, "every frame back in the buddy allocator");
}

#[test]
fn global_slab_serves_collections() {
    static HEAP: GlobalSlab<'static, RefFrameProvider, SimPhysMemory, HostCpus, 4> = GlobalSlab::new();
    // SAFETY: a zero-size-free layout; before init every allocation fails.
    assert!(unsafe { HEAP.alloc(Layout::new::<u64>()) }.is_null());
    let mem = ram(16);
    // Reachable from the static for the rest of the test binary's life.
    let frames: &'static RefFrameProvider = Box::leak(Box::new(RefFrameProvider::new(&mem)));
    HEAP.init(Kmalloc::new(frames, mem.clone(), HostCpus::new(4), KmallocConfig::default()).unwrap()).unwrap();
    let again = Kmalloc::new(frames, mem.clone(), HostCpus::new(4), KmallocConfig::default()).unwrap();
    assert!(HEAP.init(again).is_err());
    // Drive the allocator through the allocator-API-shaped entry points.
    let mut ptrs = Vec::new();
    for i in 1..if cfg!(miri) { 300 } else { 2000usize } {
        let layout = Layout::from_size_align(i % 700 + 1, 1 << (i % 5)).unwrap();
        // SAFETY: non-zero layouts; each pointer freed once below.
        let p = unsafe { HEAP.alloc(layout) };
        assert!(!p.is_null() && p.addr() % layout.align() == 0);
        // SAFETY: writing the fresh allocation.
        unsafe { p.write_bytes(i as u8, layout.size()) };
        ptrs.push((p, layout, i as u8));
    }
    for (p, layout, b) in ptrs {
        // SAFETY: as above.
        unsafe {
            assert!(std::slice::from_raw_parts(p, layout.size()).iter().all(|&x| x == b));
            HEAP.dealloc(p, layout);
        }
    }
    let heap = HEAP.get().unwrap();
    assert_eq!(heap.stats().map(|s| s.active_objects).sum::<usize>(), 0);
    assert_eq!(heap.refused_frees().0, 0);
}

#[test]
fn stats_report_efficiency_and_display() {
    let mem = ram(4);
    let frames = RefFrameProvider::new(&mem);
    let cache: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, CacheConfig::new("dentry", 192)).unwrap();
    let per_slab = cache.geometry().objects;
    let objs: Vec<_> = (0..per_slab * 3).map(|_| cache.alloc().unwrap()).collect();
    let s = cache.stats();
    assert_eq!((s.active_objects, s.total_objects, s.slabs), (per_slab * 3, per_slab * 3, 3));
    assert!(s.efficiency_percent() > 93.0, "{}", s.efficiency_percent());
    assert!(s.to_string().starts_with("dentry"));
    for p in objs {
        // SAFETY: freed once.
        unsafe { cache.free(p).unwrap() };
    }
    assert_eq!(cache.stats().active_objects, 0);
    cache.destroy().unwrap();
    assert_eq!(frames.allocated_blocks(), 0);
    let busy: Cache<_, _, _> = Cache::new(&frames, mem.clone(), SingleCpu, CacheConfig::new("busy", 64)).unwrap();
    let _p = busy.alloc().unwrap();
    assert_eq!(busy.destroy(), Err(SlabError::CacheBusy { live: 1 }));
    assert_eq!(frames.allocated_blocks(), 1, "the slab with a live object is leaked, not freed");
}
