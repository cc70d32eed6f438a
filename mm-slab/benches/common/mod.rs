//! Shared by the criterion benches and the callgrind runner: the heaps
//! compared and the workloads.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;

use axallocator::{BaseAllocator, ByteAllocator, SlabByteAllocator};
use mm_buddy::{BuddyAllocator, BuddyConfig};
use mm_slab::{Kmalloc, KmallocConfig};
use mm_types::percpu::{CpuLocal, Pinned, SingleCpu};
use mm_types::testkit::SimPhysMemory;
use mm_types::PhysAddr;

/// Bytes of memory every heap gets.
pub const ARENA: usize = 256 << 20;
/// Objects in the mixed workload.
pub const MIXED: usize = 10_000;

/// A heap under test.
pub trait Heap {
    fn alloc(&mut self, layout: Layout) -> *mut u8;
    fn free(&mut self, p: *mut u8, layout: Layout);
}

/// A page-aligned arena for the peers that manage one region.
pub fn arena() -> (*mut u8, usize) {
    let layout = Layout::from_size_align(ARENA, 1 << 21).unwrap();
    // SAFETY: non-zero size; leaked for the life of the benchmark.
    (unsafe { std::alloc::alloc_zeroed(layout) }, ARENA)
}

/// mm-slab's kmalloc over mm-buddy over simulated RAM, both with the CPU
/// source `C` (locked per-CPU slots by default, [`OursPinned`] pinned).
pub struct OursWith<C: CpuLocal + 'static> {
    heap: Kmalloc<'static, BuddyAllocator<'static, SimPhysMemory, C>, SimPhysMemory, C>,
}

/// Ours with the default (locked) per-CPU slots.
pub type Ours = OursWith<SingleCpu>;
/// Ours with a pinned CPU source: no lock on the per-CPU fast paths.
pub type OursPinned = OursWith<Pinned<SingleCpu>>;

impl<C: CpuLocal + Copy + 'static> OursWith<C> {
    pub fn with_cpus(cpus: C) -> Self {
        let mem = SimPhysMemory::new(PhysAddr::new(1 << 30).unwrap(), ARENA as u64);
        let buddy = BuddyAllocator::new(mem.clone(), cpus, BuddyConfig::default()).unwrap();
        // SAFETY: the simulated RAM belongs to this allocator alone.
        unsafe { buddy.add_memory(mem.span()).unwrap() };
        let buddy: &'static _ = Box::leak(Box::new(buddy));
        OursWith { heap: Kmalloc::new(buddy, mem, cpus, KmallocConfig::default()).unwrap() }
    }
}

impl Ours {
    pub fn new() -> Self {
        Self::with_cpus(SingleCpu)
    }
}

impl OursPinned {
    pub fn new() -> Self {
        // SAFETY: each heap is used by the one thread that built it, with no signal handler that
        // allocates from it, and the only CPU id is 0.
        Self::with_cpus(unsafe { Pinned::new(SingleCpu) })
    }
}

impl<C: CpuLocal + 'static> OursWith<C> {
    /// One alloc+free pair of `layout` through `&self`, as threads share it.
    #[inline]
    pub fn pair_shared(&self, layout: Layout) {
        let p = self.heap.alloc(layout).unwrap();
        // SAFETY: allocated just above with `layout`, freed once.
        unsafe { self.heap.free(std::hint::black_box(p), layout).unwrap() }
    }

    /// One allocation of `layout` through `&self`.
    #[inline]
    pub fn alloc_shared(&self, layout: Layout) -> *mut u8 {
        self.heap.alloc(layout).unwrap().as_ptr()
    }

    /// Frees `p` (allocated with `layout` by any thread) through `&self`.
    ///
    /// # Safety
    ///
    /// `p` came from `alloc_shared(layout)` on this heap, is freed once, and
    /// is not used afterwards.
    #[inline]
    pub unsafe fn free_shared(&self, p: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.heap.free(std::ptr::NonNull::new(p).unwrap(), layout).unwrap() }
    }

    /// Bytes of slab memory held.
    pub fn slab_bytes(&self) -> usize {
        self.heap.slab_bytes()
    }

    /// Bytes of live objects counted at their class sizes.
    pub fn class_bytes(&self) -> usize {
        self.heap.stats().map(|s| s.active_objects * s.object_size).sum()
    }
}

impl<C: CpuLocal + 'static> Heap for OursWith<C> {
    #[inline(always)]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.heap.alloc(layout).unwrap().as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, layout: Layout) {
        // SAFETY: the workloads free what they allocated, once.
        unsafe { self.heap.free(NonNull::new_unchecked(p), layout).unwrap() }
    }
}

pub struct Talc(talc::Talc<talc::ErrOnOom>);

impl Talc {
    pub fn new() -> Self {
        let (base, len) = arena();
        let mut t = talc::Talc::new(talc::ErrOnOom);
        // SAFETY: the arena is ours and lives forever.
        unsafe { t.claim(talc::Span::from_base_size(base, len)).unwrap() };
        Talc(t)
    }
}

impl Heap for Talc {
    #[inline(always)]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero layouts.
        unsafe { self.0.malloc(layout).unwrap().as_ptr() }
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, layout: Layout) {
        // SAFETY: allocated with `layout`, freed once.
        unsafe { self.0.free(NonNull::new_unchecked(p), layout) }
    }
}

pub struct LinkedList(linked_list_allocator::Heap);

impl LinkedList {
    pub fn new() -> Self {
        let (base, len) = arena();
        let mut h = linked_list_allocator::Heap::empty();
        // SAFETY: as for talc.
        unsafe { h.init(base, len) };
        LinkedList(h)
    }
}

impl Heap for LinkedList {
    #[inline(always)]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0.allocate_first_fit(layout).unwrap().as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, layout: Layout) {
        // SAFETY: as for talc.
        unsafe { self.0.deallocate(NonNull::new_unchecked(p), layout) }
    }
}

pub struct AxSlab(SlabByteAllocator);

impl AxSlab {
    pub fn new() -> Self {
        let (base, len) = arena();
        let mut a = SlabByteAllocator::new();
        a.init(base as usize, len);
        AxSlab(a)
    }
}

impl Heap for AxSlab {
    #[inline(always)]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0.alloc(layout).unwrap().as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, layout: Layout) {
        // SAFETY: non-null pointers from `alloc`.
        self.0.dealloc(unsafe { NonNull::new_unchecked(p) }, layout)
    }
}

pub struct Glibc;

impl Heap for Glibc {
    #[inline(always)]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero layouts.
        unsafe { System.alloc(layout) }
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, layout: Layout) {
        // SAFETY: allocated by System with `layout`.
        unsafe { System.dealloc(p, layout) }
    }
}

/// Deterministic xorshift.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `MIXED` sizes from 16 to 2048 bytes, log-uniform (small objects are
/// common in kernels; every size class from 16 B to 2 KiB is exercised).
pub fn mixed_sizes(seed: u64) -> Vec<Layout> {
    let mut rng = Rng(seed);
    (0..MIXED)
        .map(|_| {
            let exp = 4.0 + (rng.next() % 1_000_000) as f64 / 1_000_000.0 * 7.0; // 2^4 .. 2^11
            Layout::from_size_align(2f64.powf(exp) as usize, 8).unwrap()
        })
        .collect()
}

/// A random permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    v
}

/// `n` alloc+free pairs of 64 bytes.
#[inline(always)]
pub fn pairs<H: Heap>(h: &mut H, n: usize) {
    let layout = Layout::from_size_align(64, 8).unwrap();
    for _ in 0..n {
        let p = h.alloc(layout);
        std::hint::black_box(p);
        h.free(p, layout);
    }
}

/// Allocates every layout, in order.
#[inline(always)]
pub fn alloc_all<H: Heap>(h: &mut H, layouts: &[Layout], out: &mut Vec<*mut u8>) {
    for &l in layouts {
        out.push(h.alloc(l));
    }
}

/// Frees `ptrs[i]` (allocated with `layouts[i]`) in the order of `order`.
#[inline(always)]
pub fn free_in<H: Heap>(h: &mut H, layouts: &[Layout], ptrs: &[*mut u8], order: &[usize]) {
    for &i in order {
        h.free(ptrs[i], layouts[i]);
    }
}
