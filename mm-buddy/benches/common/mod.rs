//! Workloads shared by the criterion bench (`buddy.rs`) and the
//! instruction-count runner (`ir.rs`): 1 GiB of 4 KiB frames (262,144),
//! driven through one small trait so that every allocator runs the same code.

#![allow(dead_code)]

use bitmap_allocator::BitAlloc;
use mm_buddy::{BuddyAllocator, BuddyConfig};
use mm_types::percpu::{CpuLocal, Pinned, SingleCpu};
use mm_types::testkit::SimPhysMemory;
use mm_types::{AllocFlags, FrameBlock, FrameNumber, FrameProvider, Order, PhysAddr};

/// Frames in 1 GiB.
pub const FRAMES: usize = 1 << 18;
/// Frames our allocator uses for metadata in front of the GiB (9 bytes per
/// frame, two list links and a state byte, plus 1 per pageblock, rounded up
/// to frames).
const META_FRAMES: u64 = 578;
/// Where the managed GiB starts (4 MiB aligned, so max-order blocks align).
const MANAGED_BASE: u64 = 64 << 20;

/// The operations every allocator under test offers.
pub trait Frames {
    /// Allocates `2^order` frames, returning the first frame number.
    fn alloc(&mut self, order: u8) -> Option<usize>;
    /// Frees what `alloc(order)` returned.
    fn free(&mut self, frame: usize, order: u8);
}

/// mm-buddy, through its per-CPU caches, over simulated RAM, with the CPU
/// source `C` (locked per-CPU slots by default, [`OursPinned`] pinned).
pub struct OursWith<C: CpuLocal, const CPUS: usize = 1> {
    buddy: BuddyAllocator<'static, SimPhysMemory, C, CPUS>,
}

/// Ours with the default (locked) per-CPU slots.
pub type Ours = OursWith<SingleCpu>;
/// Ours with a pinned CPU source: no lock on the per-CPU fast paths.
pub type OursPinned = OursWith<Pinned<SingleCpu>>;

impl Ours {
    /// A fresh allocator over `mem` (see [`ours_memory`]).
    pub fn new(mem: &SimPhysMemory) -> Self {
        Self::with_cpus(mem, SingleCpu)
    }
}

impl OursPinned {
    /// A fresh pinned allocator over `mem`.
    pub fn new(mem: &SimPhysMemory) -> Self {
        // SAFETY: each allocator is used by the one thread that built it, with no signal handler
        // that allocates from it, and the only CPU id is 0.
        Self::with_cpus(mem, unsafe { Pinned::new(SingleCpu) })
    }
}

impl<C: CpuLocal, const CPUS: usize> OursWith<C, CPUS> {
    /// A fresh allocator over `mem` with the CPU source `cpus`.
    pub fn with_cpus(mem: &SimPhysMemory, cpus: C) -> Self {
        let config = BuddyConfig { min_free_kib: Some(0), ..BuddyConfig::default() };
        let buddy = BuddyAllocator::new(mem.clone(), cpus, config).unwrap();
        // Each benchmark builds a new allocator only after dropping the last.
        // SAFETY: so the simulated RAM is used by this allocator alone, which holds a handle to it.
        let rep = unsafe { buddy.add_memory(mem.span()).unwrap() };
        assert_eq!(rep.frames as usize, FRAMES);
        OursWith { buddy }
    }

    /// One order-0 frame through `&self`, as threads share the allocator.
    #[inline]
    pub fn alloc_shared(&self) -> usize {
        self.buddy.allocate(Order::ZERO, AllocFlags::empty()).unwrap().start().as_u64() as usize
    }

    /// Frees what [`alloc_shared`](Self::alloc_shared) returned.
    #[inline]
    pub fn free_shared(&self, frame: usize) {
        let b = FrameBlock::new(FrameNumber::new(frame as u64).unwrap(), Order::ZERO).unwrap();
        self.buddy.free(b).unwrap();
    }

    /// Whether a max-order block can be allocated (and frees it again).
    pub fn max_order_available(&self) -> bool {
        self.buddy.drain_all();
        match self.buddy.allocate(Order::new(10).unwrap(), AllocFlags::empty()) {
            Ok(b) => self.buddy.free(b).is_ok(),
            Err(_) => false,
        }
    }
}

/// Simulated RAM for [`Ours`]: the GiB plus room for metadata in front.
/// Reused across benchmark iterations so that the host's first-touch page
/// faults are paid once, outside the measurements.
pub fn ours_memory() -> SimPhysMemory {
    let base = MANAGED_BASE - META_FRAMES * 4096;
    SimPhysMemory::new(PhysAddr::new(base).unwrap(), (FRAMES as u64 + META_FRAMES) * 4096)
}

impl<C: CpuLocal, const CPUS: usize> Frames for OursWith<C, CPUS> {
    #[inline]
    fn alloc(&mut self, order: u8) -> Option<usize> {
        self.buddy.allocate(Order::new(order).unwrap(), AllocFlags::empty()).ok().map(|b| b.start().as_u64() as usize)
    }
    #[inline]
    fn free(&mut self, frame: usize, order: u8) {
        let b = FrameBlock::new(FrameNumber::new(frame as u64).unwrap(), Order::new(order).unwrap()).unwrap();
        self.buddy.free(b).unwrap();
    }
}

/// `buddy_system_allocator::FrameAllocator` (BTreeSet per order).
pub struct Bsa(buddy_system_allocator::FrameAllocator<33>);

impl Bsa {
    /// Managing frames 0..FRAMES.
    pub fn new() -> Self {
        let mut a = buddy_system_allocator::FrameAllocator::<33>::new();
        a.add_frame(0, FRAMES);
        Bsa(a)
    }
}

impl Frames for Bsa {
    #[inline]
    fn alloc(&mut self, order: u8) -> Option<usize> {
        self.0.alloc(1 << order)
    }
    #[inline]
    fn free(&mut self, frame: usize, order: u8) {
        self.0.dealloc(frame, 1 << order)
    }
}

/// `bitmap-allocator` (a 16-ary cascade of bitmaps, 1M bits).
pub struct Bitmap(Box<bitmap_allocator::BitAlloc1M>);

impl Bitmap {
    /// Managing frames 0..FRAMES.
    pub fn new() -> Self {
        let mut a: Box<bitmap_allocator::BitAlloc1M> = Box::default();
        a.insert(0..FRAMES);
        Bitmap(a)
    }
}

impl Frames for Bitmap {
    #[inline]
    fn alloc(&mut self, order: u8) -> Option<usize> {
        if order == 0 {
            self.0.alloc()
        } else {
            self.0.alloc_contiguous(None, 1 << order, order as usize)
        }
    }
    #[inline]
    fn free(&mut self, frame: usize, order: u8) {
        if order == 0 {
            self.0.dealloc(frame);
        } else {
            self.0.dealloc_contiguous(frame, 1 << order);
        }
    }
}

/// `free-list` (a sorted array of free ranges; order-0 only here: it
/// keeps at most N ranges, so scattered frees overflow it).
pub struct FreeListPeer(free_list::FreeList<64>);

impl FreeListPeer {
    /// Managing the GiB at 0x1000_0000.
    pub fn new() -> Self {
        let mut a = free_list::FreeList::<64>::new();
        let range = free_list::PageRange::new(0x1000_0000, 0x1000_0000 + FRAMES * 4096).unwrap();
        // SAFETY: the range is made up; free-list never touches the memory.
        unsafe { a.deallocate(range).unwrap() };
        FreeListPeer(a)
    }
}

impl Frames for FreeListPeer {
    #[inline]
    fn alloc(&mut self, order: u8) -> Option<usize> {
        let size = 4096 << order;
        let layout = free_list::PageLayout::from_size_align(size, size).unwrap();
        self.0.allocate(layout).ok().map(|r| r.start() / 4096)
    }
    #[inline]
    fn free(&mut self, frame: usize, order: u8) {
        let range = free_list::PageRange::from_start_len(frame * 4096, 4096 << order).unwrap();
        // SAFETY: as above.
        unsafe { self.0.deallocate(range).unwrap() };
    }
}

/// `frame-alloc`: a lock-free bitmap buddy (`SummaryBuddyAllocator`, its
/// bitmaps carved out of the managed memory) behind its per-CPU magazine and
/// depot cache (`DepotAllocator`, one CPU slot), the composition its
/// documentation describes for kernels. Its "physical" addresses here are
/// host addresses of one buffer the harness owns ([`HostProvenance`]).
pub struct FrameAlloc {
    alloc: Box<FrameAllocStack>,
    /// Physical (host) address of frame 0 of the buffer.
    base: usize,
}

type FrameAllocStack =
    frame_alloc::DepotAllocator<frame_alloc::SummaryBuddyAllocator<11, HostProvenance>, frame_alloc::NoCpuId, 1>;

/// `frame-alloc`'s physical-to-pointer strategy for the harness: physical
/// addresses are host addresses of [`frame_alloc_memory`].
pub struct HostProvenance;

// SAFETY: `create` returns a pointer to the buffer's bytes at that address, which
// the buffer owns for the program's life; `destroy` gives the address back.
unsafe impl frame_alloc::Provenance for HostProvenance {
    unsafe fn create(phys: usize) -> core::ptr::NonNull<u8> {
        core::ptr::NonNull::new(core::ptr::with_exposed_provenance_mut(phys)).expect("inside the buffer")
    }
    unsafe fn destroy<T>(ptr: core::ptr::NonNull<T>) -> usize {
        ptr.as_ptr().expose_provenance()
    }
}

/// Bytes of `frame-alloc`'s span: the GiB plus 4 MiB for its bitmaps.
const FRAME_ALLOC_SPAN: usize = (FRAMES << 12) + (4 << 20);

/// The host buffer `frame-alloc` manages, 4 MiB aligned (its largest
/// block), made once and reused: each allocator built over it writes its
/// own bitmaps at init and never touches the frames it hands out.
fn frame_alloc_memory() -> usize {
    static BUF: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUF.get_or_init(|| {
        let layout = std::alloc::Layout::from_size_align(FRAME_ALLOC_SPAN, 4 << 20).unwrap();
        // SAFETY: the layout has a non-zero size; the buffer is never freed.
        let p = unsafe { std::alloc::alloc(layout) };
        assert!(!p.is_null(), "no memory for frame-alloc's span");
        p.expose_provenance()
    })
}

impl FrameAlloc {
    /// A fresh allocator over the shared buffer, with exactly [`FRAMES`]
    /// frames to hand out (as every allocator here has).
    pub fn new() -> Self {
        // The frames its bitmaps take, measured once: an allocator given the
        // whole span hands out all but those.
        static BITMAP_FRAMES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let bitmap = *BITMAP_FRAMES.get_or_init(|| {
            let mut probe = FrameAlloc::over(FRAME_ALLOC_SPAN);
            let mut n = 0;
            while probe.alloc(0).is_some() {
                n += 1;
            }
            (FRAME_ALLOC_SPAN >> 12) - n
        });
        FrameAlloc::over((FRAMES + bitmap) << 12)
    }

    /// An allocator over the whole span whose first `usable` bytes are free.
    fn over(usable: usize) -> Self {
        let base = frame_alloc_memory();
        let buddy = frame_alloc::SummaryBuddyAllocator::new(frame_alloc::PageSize::from_log2(12));
        let alloc = Box::new(frame_alloc::DepotAllocator::new(frame_alloc::PageSize::from_log2(12), buddy));
        let usable = [frame_alloc::PhysRange { base, len: usable }];
        // SAFETY: the span is the harness's buffer, used by this allocator alone
        // (each benchmark builds a new one only after dropping the last).
        unsafe { frame_alloc::RegionInit::try_init(&*alloc, base, FRAME_ALLOC_SPAN, &usable) }.unwrap();
        FrameAlloc { alloc, base }
    }
}

impl Frames for FrameAlloc {
    #[inline]
    fn alloc(&mut self, order: u8) -> Option<usize> {
        let ps = frame_alloc::PageSize::from_log2(12 + order);
        let one = core::num::NonZeroUsize::MIN;
        frame_alloc::PhysicalAllocator::allocate_physical(&*self.alloc, ps, one).ok().map(|p| (p - self.base) >> 12)
    }
    #[inline]
    fn free(&mut self, frame: usize, order: u8) {
        let ps = frame_alloc::PageSize::from_log2(12 + order);
        let one = core::num::NonZeroUsize::MIN;
        // SAFETY: `frame` came from `alloc(order)` and is given back once.
        unsafe {
            frame_alloc::PhysicalAllocator::deallocate_physical(&*self.alloc, ps, one, self.base + (frame << 12))
        };
    }
}

/// Deterministic generator (the test kit's xorshift).
pub use mm_types::testkit::XorShift as Rng;

/// Order-0 alloc+free pairs with one frame held (the warm case).
#[inline(always)]
pub fn pairs<A: Frames>(a: &mut A, n: usize) {
    for _ in 0..n {
        let f = a.alloc(0).unwrap();
        a.free(std::hint::black_box(f), 0);
    }
}

/// Allocates every frame one by one; returns them.
#[inline(always)]
pub fn alloc_all<A: Frames>(a: &mut A, out: &mut Vec<usize>) {
    while let Some(f) = a.alloc(0) {
        out.push(f);
    }
}

/// Frees the given frames (already shuffled).
#[inline(always)]
pub fn free_all<A: Frames>(a: &mut A, frames: &[usize]) {
    for &f in frames {
        a.free(f, 0);
    }
}

/// Fisher-Yates shuffle.
pub fn shuffle(v: &mut [usize], seed: u64) {
    let mut rng = Rng(seed);
    for i in (1..v.len()).rev() {
        v.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
}

/// Fills about half of memory with blocks of random orders 0..=9.
pub fn fill_half<A: Frames>(a: &mut A, rng: &mut Rng) -> Vec<(usize, u8)> {
    let mut held = Vec::new();
    let mut used = 0;
    while used < FRAMES / 2 {
        let o = (rng.next() % 10) as u8;
        if let Some(f) = a.alloc(o) {
            held.push((f, o));
            used += 1 << o;
        }
    }
    held
}

/// `n` operations at about 50 % occupancy: free a random held block, then
/// allocate a block of a random order 0..=9. Returns the operations done.
#[inline(always)]
pub fn random_orders<A: Frames>(a: &mut A, held: &mut Vec<(usize, u8)>, rng: &mut Rng, n: usize) -> usize {
    let mut ops = 0;
    for _ in 0..n {
        let i = (rng.next() as usize) % held.len();
        let (f, o) = held.swap_remove(i);
        a.free(f, o);
        let o = (rng.next() % 10) as u8;
        if let Some(f) = a.alloc(o) {
            held.push((f, o));
        }
        ops += 2;
    }
    ops
}
