//! Shared by the criterion bench and the callgrind example: mm-vmalloc and
//! a first-fit baseline (the design Linux used before its augmented tree:
//! walk the address-ordered busy areas from the window's start until a gap
//! fits), over the same simulated RAM, mm-buddy frames and mm-paging table.
//! Both build areas the same way (single frames, mapped in one call, a guard
//! page, lazy frees purged after 8,192 pages), so only the range index
//! differs.

#![allow(dead_code)]

use std::collections::BTreeMap;

use mm_buddy::{BuddyAllocator, BuddyConfig};
use mm_paging::{NoShootdown, PageTable, RecordingTlb, Unmapped, X86_64};
use mm_types::percpu::SingleCpu;
use mm_types::{
    FrameBlock, FrameNumber, FrameProvider, Order, PhysAddr, SimPhysMemory, VirtAddr, VirtRange, PAGE_BYTES,
};
use mm_vmalloc::{KernelMapper, SharedPageTable, Vmalloc, VmallocConfig};

pub const BASE: u64 = 0xffff_c900_0000_0000;
pub const WINDOW: u64 = 1 << 40;
const LAZY_MAX: u64 = 8192;
const RAM: u64 = 192 << 20;

pub type Buddy = BuddyAllocator<'static, SimPhysMemory, SingleCpu>;
pub type Kernel = SharedPageTable<X86_64, SimPhysMemory, &'static Buddy, RecordingTlb, NoShootdown>;

/// A kernel virtual allocator under test.
pub trait VirtAlloc {
    /// Allocates and maps `size` bytes.
    fn alloc(&mut self, size: u64) -> u64;
    /// Unmaps and frees the area at `addr`.
    fn free(&mut self, addr: u64);
}

fn kernel() -> (&'static Buddy, &'static Kernel, SimPhysMemory) {
    let mem = SimPhysMemory::new(PhysAddr::new(1 << 30).unwrap(), RAM);
    let buddy = BuddyAllocator::new(mem.clone(), SingleCpu, BuddyConfig::default()).unwrap();
    // SAFETY: the simulated RAM belongs to this allocator alone.
    unsafe { buddy.add_memory(mem.span()).unwrap() };
    let buddy: &'static Buddy = Box::leak(Box::new(buddy));
    let table = PageTable::new(X86_64::FOUR_LEVEL, mem.clone(), buddy).unwrap();
    let kernel = Box::leak(Box::new(SharedPageTable::new(table, RecordingTlb::default(), NoShootdown)));
    (buddy, kernel, mem)
}

fn window() -> VirtRange {
    VirtRange::new(VirtAddr::new(BASE).unwrap(), WINDOW).unwrap()
}

/// mm-vmalloc.
pub struct Ours {
    vm: Vmalloc<&'static Kernel, &'static Buddy, SimPhysMemory>,
}

impl Ours {
    pub fn new() -> Self {
        let (buddy, kernel, mem) = kernel();
        let config = VmallocConfig { lazy_max_pages: LAZY_MAX, ..VmallocConfig::new(window()) };
        Ours { vm: Vmalloc::new(kernel, buddy, mem, config).unwrap() }
    }
}

impl VirtAlloc for Ours {
    #[inline(always)]
    fn alloc(&mut self, size: u64) -> u64 {
        self.vm.vmalloc(size).unwrap().as_u64()
    }
    #[inline(always)]
    fn free(&mut self, addr: u64) {
        self.vm.vfree(VirtAddr::new(addr).unwrap()).unwrap()
    }
}

/// First fit over the address-ordered busy list.
pub struct FirstFit {
    buddy: &'static Buddy,
    kernel: &'static Kernel,
    /// start -> (reserved bytes, mapped bytes, lazily freed)
    busy: BTreeMap<u64, (u64, u64, bool)>,
    lazy_pages: u64,
    frames: Vec<PhysAddr>,
}

impl FirstFit {
    pub fn new() -> Self {
        let (buddy, kernel, _mem) = kernel();
        FirstFit { buddy, kernel, busy: BTreeMap::new(), lazy_pages: 0, frames: Vec::new() }
    }

    fn find(&self, total: u64) -> Option<u64> {
        let mut at = BASE;
        for (&start, &(len, _, _)) in &self.busy {
            if start - at >= total {
                return Some(at);
            }
            at = start + len;
        }
        (BASE + WINDOW - at >= total).then_some(at)
    }

    fn purge(&mut self) {
        self.kernel.flush_unmapped();
        self.busy.retain(|_, a| !a.2);
        self.lazy_pages = 0;
    }
}

impl VirtAlloc for FirstFit {
    fn alloc(&mut self, size: u64) -> u64 {
        let mapped = size.next_multiple_of(PAGE_BYTES);
        let total = mapped + PAGE_BYTES;
        let start = match self.find(total) {
            Some(s) => s,
            None => {
                self.purge();
                self.find(total).expect("space")
            }
        };
        self.busy.insert(start, (total, mapped, false));
        self.frames.clear();
        for _ in 0..mapped / PAGE_BYTES {
            self.frames.push(self.buddy.allocate_frame(Default::default()).unwrap());
        }
        for (i, chunk) in self.frames.chunks(64).enumerate() {
            let va = VirtAddr::new(start + i as u64 * 64 * PAGE_BYTES).unwrap();
            self.kernel.map_frames(va, chunk, mm_paging::MapFlags::KERNEL_DATA).unwrap();
        }
        start
    }

    fn free(&mut self, addr: u64) {
        let a = self.busy.get_mut(&addr).expect("live area");
        a.2 = true;
        let (total, mapped) = (a.0, a.1);
        let buddy = self.buddy;
        self.kernel
            .unmap(VirtAddr::new(addr).unwrap(), mapped, &mut |u| {
                if let Unmapped::Page { frame, .. } = u {
                    buddy.free(FrameBlock::new(FrameNumber::containing(frame), Order::ZERO).unwrap()).unwrap();
                }
            })
            .unwrap();
        self.lazy_pages += total / PAGE_BYTES;
        if self.lazy_pages > LAZY_MAX {
            self.purge();
        }
    }
}

/// `n` live one-page areas, packed from the window's start (each with its
/// guard page), so a first fit walks all of them to find space.
pub fn fill<V: VirtAlloc>(v: &mut V, n: usize) -> Vec<u64> {
    (0..n).map(|_| v.alloc(PAGE_BYTES)).collect()
}

/// `count` allocate+free pairs of `size` bytes.
#[inline(always)]
pub fn pairs<V: VirtAlloc>(v: &mut V, size: u64, count: usize) {
    for _ in 0..count {
        let a = v.alloc(size);
        v.free(a);
    }
}
