//! Loom model of the lazy-free and purge protocol (MODEL.md 4, 5 and 8):
//! frees unmap outside the index lock and then park the range on the lazy
//! tree; purges detach the lazy tree, flush without the index lock, then
//! free the ranges; an allocation that finds no space purges and retries.
//! The kernel page table is replaced by a model that remembers which pages
//! were unmapped since the last flush ("stale") and refuses to map one of
//! them: in no interleaving (bounded by preemptions) may a range be handed
//! out again while a CPU could still hold its old translation. At the end
//! the index checks itself and every frame is back.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p mm-vmalloc --test loom_purge`.
#![cfg(loom)]

use std::collections::{BTreeMap, BTreeSet};

use loom::sync::{Arc, Mutex};
use mm_paging::{HugePages, MapFlags, Mapping, PagingError, Translation, Unmapped};
use mm_types::testkit::loom_model::{model, spawn};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{PageSize, PhysAddr, VirtAddr, VirtRange, PAGE_BYTES};
use mm_vmalloc::{KernelMapper, Vmalloc, VmallocConfig};

const BASE: u64 = 0xffff_c900_0000_0000;

#[derive(Default)]
struct Tables {
    mapped: BTreeMap<u64, PhysAddr>,
    /// Unmapped since the last flush: a CPU may still translate them.
    stale: BTreeSet<u64>,
    flushes: u64,
}

/// A kernel page table that checks vmalloc never maps a stale page.
#[derive(Default)]
struct ModelMapper(Mutex<Tables>);

// SAFETY: a model for the test: it maps nothing real, and vmalloc's memory is never dereferenced here.
unsafe impl KernelMapper for ModelMapper {
    fn map_range(&self, va: VirtAddr, phys: PhysAddr, len: u64, _: MapFlags, _: HugePages) -> Result<(), PagingError> {
        let frames: Vec<PhysAddr> =
            (0..len / PAGE_BYTES).map(|i| PhysAddr::new(phys.as_u64() + i * PAGE_BYTES).unwrap()).collect();
        self.map_frames(va, &frames, MapFlags::KERNEL_DATA)
    }

    fn map_frames(&self, va: VirtAddr, frames: &[PhysAddr], _: MapFlags) -> Result<(), PagingError> {
        let mut t = self.0.lock().unwrap();
        for (i, f) in frames.iter().enumerate() {
            let p = va.as_u64() + i as u64 * PAGE_BYTES;
            assert!(!t.stale.contains(&p), "{p:#x} reused before the TLB flush that follows its unmap");
            assert!(t.mapped.insert(p, *f).is_none(), "{p:#x} mapped twice");
        }
        Ok(())
    }

    fn unmap(&self, va: VirtAddr, len: u64, removed: &mut dyn FnMut(Unmapped)) -> Result<(), PagingError> {
        let mut t = self.0.lock().unwrap();
        for p in (va.as_u64()..va.as_u64() + len).step_by(PAGE_BYTES as usize) {
            let frame = t.mapped.remove(&p).expect("vmalloc unmaps only what it mapped");
            t.stale.insert(p);
            let va = VirtAddr::new(p).unwrap();
            removed(Unmapped::Page { va, frame, size: PageSize::Size4KiB, flags: MapFlags::KERNEL_DATA });
        }
        Ok(())
    }

    fn flush_unmapped(&self) {
        let mut t = self.0.lock().unwrap();
        t.stale.clear();
        t.flushes += 1;
    }

    fn translate(&self, va: VirtAddr) -> Option<Translation> {
        let t = self.0.lock().unwrap();
        let page = va.as_u64() & !(PAGE_BYTES - 1);
        t.mapped.get(&page).map(|f| Translation {
            phys: PhysAddr::new(f.as_u64() + va.as_u64() % PAGE_BYTES).unwrap(),
            frame: *f,
            page: VirtAddr::new(page).unwrap(),
            size: PageSize::Size4KiB,
            flags: MapFlags::KERNEL_DATA,
        })
    }

    fn for_each_mapping(&self, va: VirtAddr, len: u64, f: &mut dyn FnMut(Mapping)) -> Result<(), PagingError> {
        let t = self.0.lock().unwrap();
        for (&p, &frame) in t.mapped.range(va.as_u64()..va.as_u64() + len) {
            let va = VirtAddr::new(p).unwrap();
            f(Mapping { va, frame, size: PageSize::Size4KiB, flags: MapFlags::KERNEL_DATA });
        }
        Ok(())
    }
}

struct World {
    frames: RefFrameProvider,
    mem: SimPhysMemory,
    mapper: ModelMapper,
}

type Vm = Vmalloc<&'static ModelMapper, &'static RefFrameProvider, &'static SimPhysMemory>;

/// A window of `pages` pages; a purge once more than `lazy` pages wait.
fn vm(pages: u64, lazy: u64) -> (Arc<Vm>, &'static World) {
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 20).unwrap(), 32 * PAGE_BYTES);
    let frames = RefFrameProvider::new(&mem);
    let world: &'static World = Box::leak(Box::new(World { frames, mem, mapper: ModelMapper::default() }));
    let window = VirtRange::new(VirtAddr::new(BASE).unwrap(), pages * PAGE_BYTES).unwrap();
    let config = VmallocConfig { lazy_max_pages: lazy, ..VmallocConfig::new(window) };
    (Arc::new(Vmalloc::new(&world.mapper, &world.frames, &world.mem, config).unwrap()), world)
}

fn finish(vm: &Vm, world: &World) {
    vm.purge();
    vm.check().unwrap();
    let s = vm.stats();
    assert_eq!((s.areas, s.frames, s.free_ranges), (0, 0, 1));
    assert_eq!(world.frames.allocated_blocks() as u64, s.index_frames, "every area frame is back");
    assert!(world.mapper.0.lock().unwrap().mapped.is_empty());
}

#[test]
fn a_tight_window_reuses_ranges_only_after_a_flush() {
    model(|| {
        // Room for two one-page areas (with guards): a third allocation must
        // wait for a purge, which the threshold never triggers.
        let (vm, world) = vm(4, 100);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let vm = vm.clone();
                spawn(move || {
                    let a = vm.vmalloc(PAGE_BYTES).unwrap();
                    vm.vfree(a).unwrap();
                    // Space only once a purge has flushed a freed range.
                    let b = vm.vmalloc(PAGE_BYTES).unwrap();
                    vm.vfree(b).unwrap();
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert!(world.mapper.0.lock().unwrap().flushes >= 1);
        finish(&vm, world);
    });
}

#[test]
fn threshold_purges_race_with_frees_and_explicit_purges() {
    model(|| {
        // Every free passes the threshold (two pages > one): each purges.
        let (vm, world) = vm(8, 1);
        let a = vm.vmalloc(PAGE_BYTES).unwrap();
        let freer = {
            let vm = vm.clone();
            spawn(move || vm.vfree(a).unwrap())
        };
        let allocator = {
            let vm = vm.clone();
            spawn(move || {
                let b = vm.vmalloc(2 * PAGE_BYTES).unwrap();
                vm.purge();
                vm.vfree(b).unwrap();
            })
        };
        freer.join().unwrap();
        allocator.join().unwrap();
        finish(&vm, world);
    });
}
