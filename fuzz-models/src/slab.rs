//! mm-slab's model-based fuzz body.
//!
//! Random sequences of kmalloc allocations of mixed sizes and alignments,
//! frees in any order, reallocations, shrinks and CPU switches, plus bad
//! frees (double, interior, wrong size), run against a model: the map of
//! live allocations and the byte pattern each one holds. After every step
//! the live count matches (MODEL.md 1); every live allocation keeps its
//! pattern until freed (2: the allocator never writes into live objects,
//! and no two live objects overlap); bad frees are refused without effect
//! (5); `validate` finds nothing every eighth step and at the end (7); at
//! the end a shrink gives every frame back (8).

use std::collections::BTreeMap;
use std::vec::Vec;

use core::alloc::Layout;
use core::ptr::NonNull;

use arbitrary::{Arbitrary, Unstructured};
use mm_types::percpu::CpuLocal;
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::PhysAddr;

use mm_slab::{CacheFlags, Kmalloc, KmallocConfig, SlabError};

/// One step.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Allocate `size` bytes (mostly small; sometimes above 8 KiB).
    Alloc {
        /// Size selector.
        size: u16,
        /// Alignment: `8 << (align % 8)`.
        align: u8,
    },
    /// Free a live allocation.
    Free {
        /// Which one.
        pick: u16,
    },
    /// Resize a live allocation.
    Realloc {
        /// Which one.
        pick: u16,
        /// New size selector.
        size: u16,
    },
    /// Free a live allocation a second time right after freeing it.
    DoubleFree {
        /// Which one.
        pick: u16,
    },
    /// Free a pointer into a live allocation, not at its start: 8 bytes
    /// in, or 4 in an 8-byte kmalloc-8 object (there, 8 bytes in is the
    /// next object's start, not an interior pointer).
    Interior {
        /// Which one.
        pick: u16,
    },
    /// Move to another CPU (the frees that follow are remote).
    SwitchCpu,
    /// Release empty slabs.
    Shrink,
}

/// Which simulated CPU the current step runs on.
struct StepCpu(core::sync::atomic::AtomicUsize);

impl CpuLocal for StepCpu {
    fn current_cpu(&self) -> usize {
        self.0.load(core::sync::atomic::Ordering::Relaxed)
    }
    fn cpu_count(&self) -> usize {
        2
    }
}

fn size_of_selector(s: u16) -> usize {
    match s % 16 {
        0 => 9000 + (s as usize % 4000),
        1..=3 => 1 + (s as usize >> 4) % 64,
        _ => 1 + (s as usize >> 4) % 2048,
    }
}

fn pattern(id: u64, i: usize) -> u8 {
    (id as u8).wrapping_mul(31).wrapping_add(i as u8) | 1
}

struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    id: u64,
}

fn fill(live: &Live) {
    for i in 0..live.layout.size() {
        // SAFETY: `live` is an allocation of `layout.size()` bytes we own.
        unsafe { live.ptr.as_ptr().add(i).write(pattern(live.id, i)) };
    }
}

fn check(live: &Live) {
    for i in 0..live.layout.size() {
        // SAFETY: as above.
        let b = unsafe { live.ptr.as_ptr().add(i).read() };
        assert_eq!(b, pattern(live.id, i), "allocation {} byte {i} changed", live.id);
    }
}

/// Runs one fuzz input. With `debug`, the caches use every debug check.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let debug = u.arbitrary::<bool>().unwrap_or(false);
    let Ok(ops) = u.arbitrary::<Vec<Op>>() else { return };
    let ram = SimPhysMemory::new(PhysAddr::new(0x400_0000).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let cpus = StepCpu(0.into());
    let flags = if debug { CacheFlags::HARDENED_FREELIST | CacheFlags::DEBUG } else { CacheFlags::HARDENED_FREELIST };
    let config = KmallocConfig { flags, min_empty_slabs: 1, cpu_partial: 2, ..KmallocConfig::default() };
    let heap: Kmalloc<_, _, _, 2> = Kmalloc::new(&frames, ram.clone(), &cpus, config).unwrap();
    let mut live: BTreeMap<u64, Live> = BTreeMap::new();
    let mut next_id = 0u64;
    let pick = |live: &BTreeMap<u64, Live>, p: u16| live.keys().nth(p as usize % live.len().max(1)).copied();

    let n = ops.len().min(400);
    for (step, op) in (1..).zip(ops.into_iter().take(400)) {
        let shown = op.clone();
        match op {
            Op::Alloc { size, align } => {
                let layout = Layout::from_size_align(size_of_selector(size), 8 << (align % 8)).unwrap();
                match heap.alloc(layout) {
                    Ok(ptr) => {
                        assert_eq!(ptr.as_ptr().addr() % layout.align(), 0, "misaligned {layout:?}");
                        let l = Live { ptr, layout, id: next_id };
                        fill(&l);
                        live.insert(next_id, l);
                        next_id += 1;
                    }
                    Err(SlabError::OutOfMemory(_)) => {}
                    Err(e) => panic!("alloc {layout:?}: {e}"),
                }
            }
            Op::Free { pick: p } => {
                if let Some(id) = pick(&live, p) {
                    let l = live.remove(&id).unwrap();
                    check(&l);
                    // SAFETY: a live allocation of ours with its layout.
                    unsafe { heap.free(l.ptr, l.layout) }.unwrap();
                }
            }
            Op::Realloc { pick: p, size } => {
                if let Some(id) = pick(&live, p) {
                    let l = live.remove(&id).unwrap();
                    check(&l);
                    let new_size = size_of_selector(size);
                    // SAFETY: as above.
                    match unsafe { heap.realloc(l.ptr, l.layout, new_size) } {
                        Ok(ptr) => {
                            let layout = Layout::from_size_align(new_size, l.layout.align()).unwrap();
                            let kept = l.layout.size().min(new_size);
                            for i in 0..kept {
                                // SAFETY: the new allocation has at least `kept` bytes.
                                let b = unsafe { ptr.as_ptr().add(i).read() };
                                assert_eq!(b, pattern(l.id, i), "realloc lost data");
                            }
                            let n = Live { ptr, layout, id: next_id };
                            next_id += 1;
                            fill(&n);
                            live.insert(n.id, n);
                        }
                        Err(SlabError::OutOfMemory(_)) => {
                            check(&l);
                            live.insert(id, l);
                        }
                        Err(e) => panic!("realloc: {e}"),
                    }
                }
            }
            Op::DoubleFree { pick: p } => {
                if let Some(id) = pick(&live, p) {
                    let l = live.remove(&id).unwrap();
                    // SAFETY: as above.
                    unsafe { heap.free(l.ptr, l.layout) }.unwrap();
                    // SAFETY: the second free is what is being tested; the memory is still mapped slab
                    // or frame memory. Detected exactly only with the debug bitmap, and for large
                    // blocks by the frame provider; a non-debug cache catches the last-freed object
                    // (the case here).
                    let again = unsafe { heap.free(l.ptr, l.layout) };
                    assert!(again.is_err(), "double free of {:?} accepted", l.layout);
                }
            }
            Op::Interior { pick: p } => {
                if let Some(id) = pick(&live, p) {
                    let l = &live[&id];
                    // Inside the object the allocator handed out (its class
                    // size, or the frame block), never past its end.
                    let offset = if heap.usable_size(l.layout) > 8 { 8 } else { 4 };
                    // SAFETY: `offset` is inside the object, so inside slab or frame memory.
                    let inner = unsafe { NonNull::new_unchecked(l.ptr.as_ptr().add(offset)) };
                    // SAFETY: the free must be refused; nothing is released.
                    let r = unsafe { heap.free(inner, l.layout) };
                    assert!(r.is_err(), "interior free accepted");
                    check(l);
                }
            }
            Op::SwitchCpu => {
                let c = cpus.current_cpu();
                cpus.0.store(1 - c, core::sync::atomic::Ordering::Relaxed);
            }
            Op::Shrink => {
                heap.shrink().unwrap();
            }
        }
        // The heap's whole walk (every slab, free list, poison and red
        // zone) every eighth step and at the end; the counts every step.
        if step % 8 == 0 || step == n {
            assert_eq!(heap.validate(|c| panic!("corruption after {shown:?} (debug: {debug}): {c}")), 0);
        }
        let active: usize = heap.stats().map(|s| s.active_objects).sum();
        let small = live.values().filter(|l| heap.class_size(l.layout).is_some()).count();
        assert_eq!(active, small, "live objects after {shown:?} (debug: {debug})");
        assert_eq!(heap.large_allocations(), live.len() - small);
    }
    for l in live.values() {
        check(l);
        // SAFETY: as above.
        unsafe { heap.free(l.ptr, l.layout) }.unwrap();
    }
    heap.shrink().unwrap();
    assert_eq!(frames.allocated_blocks(), 0, "every slab back to the frame provider");
}
