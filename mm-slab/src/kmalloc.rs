//! kmalloc: general-purpose allocation in size classes from 8 bytes to
//! 8 KiB, larger requests straight from the frame provider, and the
//! `GlobalAlloc` implementation.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr::{self, NonNull};

use mm_types::sync::atomic::{AtomicUsize, Ordering};
use mm_types::sync::Mutex;
use mm_types::{AllocFlags, CpuLocal, FrameBlock, FrameProvider, Order, PhysAddr, PhysMemory, PAGE_SIZE};

use crate::cache::{CacheCore, Env};
use crate::config::{CacheConfig, CacheFlags};
use crate::error::{Corruption, SlabError};
use crate::stats::{CacheStats, CpuSlabStats};

/// The kmalloc size classes: Linux's powers of two with its 96 and 192
/// classes, refined to four classes per doubling above 128 bytes (as
/// jemalloc and mimalloc do) so that rounding wastes at most 20 % of an
/// object, and about 10 % on average.
pub const KMALLOC_CLASSES: [usize; 34] = [
    8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536,
    1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192,
];

/// Largest request served from a size class; larger ones take whole frame
/// blocks.
pub const KMALLOC_MAX: usize = 8192;

const CLASSES: usize = KMALLOC_CLASSES.len();

/// Class index for every size rounded up to 8 bytes: `CLASS_OF[(size + 7) / 8]`.
static CLASS_OF: [u8; KMALLOC_MAX / 8 + 1] = {
    let mut table = [0u8; KMALLOC_MAX / 8 + 1];
    let mut i = 1;
    let mut class = 0;
    while i < table.len() {
        while KMALLOC_CLASSES[class] < i * 8 {
            class += 1;
        }
        table[i] = class as u8;
        i += 1;
    }
    table
};

/// Options for every kmalloc cache.
#[derive(Clone, Copy, Debug)]
pub struct KmallocConfig {
    /// Hardening and debug options of all size classes.
    pub flags: CacheFlags,
    /// Boot secret (see [`CacheConfig::secret`]).
    pub secret: u64,
    /// Empty slabs each class keeps.
    pub min_empty_slabs: usize,
    /// Slabs per CPU partial list.
    pub cpu_partial: usize,
    /// Largest slab order.
    pub max_order: u8,
    /// Flags for every frame allocation (slabs and large requests).
    pub frame_flags: AllocFlags,
}

impl Default for KmallocConfig {
    fn default() -> Self {
        let c = CacheConfig::new("", 8);
        KmallocConfig {
            flags: c.flags,
            secret: c.secret,
            min_empty_slabs: c.min_empty_slabs,
            cpu_partial: c.cpu_partial,
            max_order: c.max_order,
            frame_flags: c.frame_flags,
        }
    }
}

/// Names of the class caches, for statistics.
const NAMES: [&str; CLASSES] = [
    "kmalloc-8",
    "kmalloc-16",
    "kmalloc-24",
    "kmalloc-32",
    "kmalloc-48",
    "kmalloc-64",
    "kmalloc-80",
    "kmalloc-96",
    "kmalloc-112",
    "kmalloc-128",
    "kmalloc-160",
    "kmalloc-192",
    "kmalloc-224",
    "kmalloc-256",
    "kmalloc-320",
    "kmalloc-384",
    "kmalloc-448",
    "kmalloc-512",
    "kmalloc-640",
    "kmalloc-768",
    "kmalloc-896",
    "kmalloc-1k",
    "kmalloc-1280",
    "kmalloc-1536",
    "kmalloc-1792",
    "kmalloc-2k",
    "kmalloc-2560",
    "kmalloc-3k",
    "kmalloc-3584",
    "kmalloc-4k",
    "kmalloc-5k",
    "kmalloc-6k",
    "kmalloc-7k",
    "kmalloc-8k",
];

/// A general-purpose allocator: one object cache per size class, plus
/// large allocations from the frame provider.
///
/// Frees take the layout (or size) the memory was allocated with, as Rust's
/// allocator API does; a free with the wrong size is detected as a foreign
/// pointer (the class's slab header does not match) and changes nothing.
///
/// ```
/// use core::alloc::Layout;
/// use mm_slab::{Kmalloc, KmallocConfig};
/// use mm_types::percpu::SingleCpu;
/// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
/// use mm_types::PhysAddr;
///
/// let ram = SimPhysMemory::new(PhysAddr::new(0x100_0000)?, 8 << 20);
/// let frames = RefFrameProvider::new(&ram);
/// let heap: Kmalloc<_, _, _> = Kmalloc::new(&frames, ram.clone(), SingleCpu, KmallocConfig::default())?;
///
/// let small = heap.kmalloc(100)?; // from kmalloc-112
/// let big = heap.alloc(Layout::from_size_align(20_000, 4096)?)?; // 8 frames
/// // SAFETY: both came from `heap` with these sizes and are not used again.
/// unsafe {
///     let small = heap.krealloc(small, 100, 300)?; // moves to kmalloc-320
///     heap.kfree(small, 300)?;
///     heap.free(big, Layout::from_size_align(20_000, 4096)?)?;
/// }
/// heap.shrink()?;
/// assert_eq!(frames.allocated_blocks(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Kmalloc<'a, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize = 8> {
    caches: [CacheCore<N>; CLASSES],
    env: Env<'a, P, M, C>,
    frame_flags: AllocFlags,
    large_live: AtomicUsize,
    free_errors: AtomicUsize,
    last_error: Mutex<Option<SlabError>>,
}

impl<'a, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Kmalloc<'a, P, M, C, N> {
    /// Creates the size-class caches (empty; slabs come on first use).
    pub fn new(frames: &'a P, mem: M, cpus: C, config: KmallocConfig) -> Result<Self, SlabError> {
        let mut error = None;
        let caches = core::array::from_fn(|i| {
            let cache = CacheConfig {
                flags: config.flags,
                secret: config.secret,
                min_empty_slabs: config.min_empty_slabs,
                cpu_partial: config.cpu_partial,
                max_order: config.max_order,
                frame_flags: config.frame_flags,
                // Power-of-two classes are aligned to their size (up to 64
                // bytes, so that red zones do not double the stride).
                align: (1 << KMALLOC_CLASSES[i].trailing_zeros()).min(64),
                ..CacheConfig::new(NAMES[i], KMALLOC_CLASSES[i])
            };
            CacheCore::new(&cache, i as u64, C::PINNING).unwrap_or_else(|e| {
                error.get_or_insert(e);
                CacheCore::new(&CacheConfig::new(NAMES[i], KMALLOC_CLASSES[i]), i as u64, C::PINNING)
                    .expect("defaults are valid")
            })
        });
        if let Some(e) = error {
            return Err(e);
        }
        Ok(Kmalloc {
            caches,
            env: Env { frames, mem, cpus },
            frame_flags: config.frame_flags,
            large_live: AtomicUsize::new(0),
            free_errors: AtomicUsize::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// The size class serving `layout`, or `None` for a large allocation.
    #[inline(always)]
    fn class_of(&self, layout: Layout) -> Option<usize> {
        if layout.size() > KMALLOC_MAX {
            return None;
        }
        // In bounds: size <= KMALLOC_MAX, so the index is at most 1024.
        let class = CLASS_OF[(layout.size() + 7) >> 3] as usize;
        if layout.align() <= 8 {
            return Some(class);
        }
        self.aligned_class(class, layout.align())
    }

    /// First class from `class` up whose objects are all `align`-aligned.
    #[cold]
    fn aligned_class(&self, class: usize, align: usize) -> Option<usize> {
        (class..CLASSES).find(|&c| self.caches[c].geo.align >= align)
    }

    /// The size class serving `layout` (its object size), or `None` when
    /// the request takes whole frames.
    pub fn class_size(&self, layout: Layout) -> Option<usize> {
        self.class_of(layout).map(|c| KMALLOC_CLASSES[c])
    }

    /// The bytes usable at an allocation for `layout`: the class size, or
    /// the frame block size for large requests.
    pub fn usable_size(&self, layout: Layout) -> usize {
        match self.class_of(layout) {
            Some(c) => KMALLOC_CLASSES[c],
            None => large_order(layout).map_or(0, |o| o.bytes() as usize),
        }
    }

    /// Allocates memory for `layout`. A zero-size layout gets a unique
    /// 8-byte object, as `malloc(0)` does.
    #[inline]
    pub fn alloc(&self, layout: Layout) -> Result<NonNull<u8>, SlabError> {
        match self.class_of(layout) {
            Some(class) => self.caches[class].alloc(&self.env),
            None => self.alloc_large(layout),
        }
    }

    /// Frees memory from [`alloc`](Self::alloc).
    ///
    /// # Safety
    ///
    /// `ptr` is not used after this call, and `layout` is the one it was
    /// allocated with (a different size is detected when its class differs;
    /// see [`Cache::free`](crate::Cache::free) for what else is checked and
    /// what must hold for the check to be safe).
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), SlabError> {
        match self.class_of(layout) {
            // SAFETY: forwarded contract.
            Some(class) => unsafe { self.caches[class].free(&self.env, ptr) },
            None => self.free_large(ptr, layout),
        }
    }

    /// `kmalloc(size)`: 8-byte aligned memory for `size` bytes.
    pub fn kmalloc(&self, size: usize) -> Result<NonNull<u8>, SlabError> {
        self.alloc(Layout::from_size_align(size, 8).map_err(|_| SlabError::InvalidLayout { size, align: 8 })?)
    }

    /// Frees `kmalloc(size)` memory.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free), with the size given to `kmalloc`.
    pub unsafe fn kfree(&self, ptr: NonNull<u8>, size: usize) -> Result<(), SlabError> {
        let layout = Layout::from_size_align(size, 8).map_err(|_| SlabError::InvalidLayout { size, align: 8 })?;
        // SAFETY: forwarded contract.
        unsafe { self.free(ptr, layout) }
    }

    /// `krealloc`: resizes `kmalloc(old_size)` memory to `new_size` bytes.
    /// Stays in place when both sizes share a class; otherwise moves the
    /// first `min(old, new)` bytes. On failure the old memory is untouched.
    ///
    /// # Safety
    ///
    /// As for [`kfree`](Self::kfree) with `old_size`.
    pub unsafe fn krealloc(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
    ) -> Result<NonNull<u8>, SlabError> {
        let old =
            Layout::from_size_align(old_size, 8).map_err(|_| SlabError::InvalidLayout { size: old_size, align: 8 })?;
        // SAFETY: forwarded contract.
        unsafe { self.realloc(ptr, old, new_size) }
    }

    /// Resizes memory allocated with `layout` to `new_size` bytes (same
    /// alignment), in place when the class does not change.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, layout: Layout, new_size: usize) -> Result<NonNull<u8>, SlabError> {
        let new = Layout::from_size_align(new_size, layout.align())
            .map_err(|_| SlabError::InvalidLayout { size: new_size, align: layout.align() })?;
        let (old_class, new_class) = (self.class_of(layout), self.class_of(new));
        if old_class.is_some() && old_class == new_class {
            return Ok(ptr);
        }
        if old_class.is_none() && new_class.is_none() && large_order(layout) == large_order(new) {
            return Ok(ptr);
        }
        let fresh = self.alloc(new)?;
        // SAFETY: both blocks are at least `min(old, new)` bytes and are distinct allocations.
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), fresh.as_ptr(), layout.size().min(new_size)) };
        // SAFETY: forwarded contract.
        if let Err(e) = unsafe { self.free(ptr, layout) } {
            // The old pointer was not ours after all: undo and report.
            // SAFETY: `fresh` was just allocated with `new`.
            let _ = unsafe { self.free(fresh, new) };
            return Err(e);
        }
        Ok(fresh)
    }

    fn alloc_large(&self, layout: Layout) -> Result<NonNull<u8>, SlabError> {
        let bad = SlabError::InvalidLayout { size: layout.size(), align: layout.align() };
        let order = large_order(layout).ok_or(bad)?;
        let offset = self.env.mem.linear_offset().ok_or(SlabError::NoLinearMap)?;
        // An error return drops `owned`, which gives the block back.
        let owned = self.env.frames.allocate_owned(order, self.frame_flags).map_err(SlabError::OutOfMemory)?;
        let phys = owned.block().start_address();
        match self.env.mem.translate(phys, owned.block().bytes() as usize) {
            Ok(p)
                if p.as_ptr().addr() as u64 == phys.as_u64().wrapping_add(offset)
                    && p.as_ptr().addr() % layout.align() == 0 =>
            {
                // The caller owns the block now (`free` gives it back).
                owned.into_raw();
                self.large_live.fetch_add(1, Ordering::Relaxed);
                Ok(p)
            }
            Ok(p) => Err(SlabError::MappingNotAligned { phys, virt: p.as_ptr().addr() }),
            Err(e) => Err(SlabError::Unmapped(e)),
        }
    }

    fn free_large(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), SlabError> {
        let bad = SlabError::InvalidLayout { size: layout.size(), align: layout.align() };
        let order = large_order(layout).ok_or(bad)?;
        let offset = self.env.mem.linear_offset().ok_or(SlabError::NoLinearMap)?;
        let phys = (ptr.as_ptr().addr() as u64).wrapping_sub(offset);
        let foreign = SlabError::ForeignPointer { addr: ptr.as_ptr().addr() };
        let block = PhysAddr::new(phys).ok().and_then(|a| FrameBlock::from_addr(a, order).ok()).ok_or(foreign)?;
        // The frame provider checks ownership, alignment, order and double
        // frees of whole blocks.
        self.env.frames.free(block).map_err(SlabError::Frames)?;
        self.large_live.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Shrinks every class (see [`Cache::shrink`](crate::Cache::shrink)).
    /// Returns the number of slabs released.
    pub fn shrink(&self) -> Result<usize, SlabError> {
        let mut total = 0;
        let mut result = Ok(());
        for cache in &self.caches {
            match cache.shrink(&self.env, true) {
                Ok(n) => total += n,
                Err(e) => result = result.and(Err(e)),
            }
        }
        result.map(|()| total)
    }

    /// Returns the calling CPU's slabs of every class to the shared lists
    /// (see [`Cache::flush_local`](crate::Cache::flush_local)): with a
    /// pinned CPU source, what the kernel runs on each CPU after
    /// [`shrink`](Self::shrink) asked the others.
    pub fn flush_local(&self) -> Result<(), SlabError> {
        self.caches.iter().map(|c| c.flush_local(&self.env)).fold(Ok(()), Result::and)
    }

    /// Gives the calling CPU's deferred frees of every class to their slabs
    /// now (see [`Cache::flush_deferred`](crate::Cache::flush_deferred)).
    pub fn flush_deferred(&self) -> Result<(), SlabError> {
        self.caches.iter().map(|c| c.flush_deferred_local(&self.env)).fold(Ok(()), Result::and)
    }

    /// Returns CPU `cpu`'s slabs of every class to the shared lists from
    /// another CPU (see
    /// [`Cache::flush_cpu_quiescent`](crate::Cache::flush_cpu_quiescent)).
    ///
    /// # Safety
    ///
    /// With a pinned CPU source, CPU `cpu` runs no operation on this
    /// allocator during the call: it is offline, parked, or known idle.
    pub unsafe fn flush_cpu_quiescent(&self, cpu: usize) -> Result<(), SlabError> {
        let mut result = Ok(());
        for c in &self.caches {
            // SAFETY: forwarded contract.
            result = result.and(unsafe { c.flush_cpu_quiescent(&self.env, cpu) });
        }
        result
    }

    /// Validates every class (see [`Cache::validate`](crate::Cache::validate)).
    pub fn validate(&self, mut report: impl FnMut(Corruption)) -> usize {
        self.caches.iter().map(|c| c.validate(&self.env.cpus, &mut report)).sum()
    }

    /// Statistics of every class, smallest first.
    pub fn stats(&self) -> impl Iterator<Item = CacheStats> + '_ {
        self.caches.iter().map(|c| c.stats(&self.env.cpus))
    }

    /// CPU `cpu`'s counters (see [`Cache::cpu_stats`](crate::Cache::cpu_stats))
    /// summed over every size class. Large allocations, which bypass the
    /// classes, are not counted.
    ///
    /// ```
    /// use mm_slab::{CpuSlabStats, Kmalloc, KmallocConfig};
    /// use mm_types::percpu::SingleCpu;
    /// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
    /// use mm_types::PhysAddr;
    ///
    /// let ram = SimPhysMemory::new(PhysAddr::new(0x100_0000)?, 4 << 20);
    /// let frames = RefFrameProvider::new(&ram);
    /// let heap: Kmalloc<_, _, _> = Kmalloc::new(&frames, ram.clone(), SingleCpu, KmallocConfig::default())?;
    /// // Two classes, each refilled once, then one hit in kmalloc-8.
    /// let (a, b, c) = (heap.kmalloc(8)?, heap.kmalloc(100)?, heap.kmalloc(8)?);
    /// // SAFETY: each came from `heap` with that size and is freed once.
    /// unsafe { (heap.kfree(a, 8)?, heap.kfree(b, 100)?, heap.kfree(c, 8)?) };
    /// let s = heap.cpu_stats(0);
    /// assert_eq!(s, CpuSlabStats { alloc_hits: 1, alloc_misses: 2, free_hits: 3, free_flushes: 0 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    ///
    /// With a pinned CPU source, if `cpu` is not the calling CPU.
    pub fn cpu_stats(&self, cpu: usize) -> CpuSlabStats {
        let mut total = CpuSlabStats::default();
        for c in &self.caches {
            total += c.cpu_stats(&self.env.cpus, cpu);
        }
        total
    }

    /// Bytes of frames held by slabs of all classes.
    pub fn slab_bytes(&self) -> usize {
        self.slab_frames() * PAGE_SIZE
    }

    /// Frames held by slabs of all classes. Cheap: each class's count is
    /// read under its node lock, with none of [`stats`](Self::stats)'s
    /// walks of CPU freelists.
    pub fn slab_frames(&self) -> usize {
        self.caches.iter().map(|c| c.slab_counts().0 << c.geo.order).sum()
    }

    /// Empty slabs of all classes: what [`shrink`](Self::shrink) can hand
    /// back (beyond each class's reserve). Cheap, as
    /// [`slab_frames`](Self::slab_frames): a shrinker's count.
    ///
    /// ```
    /// use mm_slab::{Kmalloc, KmallocConfig};
    /// use mm_types::percpu::SingleCpu;
    /// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
    /// use mm_types::PhysAddr;
    ///
    /// let ram = SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), 8 << 20);
    /// let frames = RefFrameProvider::new(&ram);
    /// let heap: Kmalloc<_, _, _> = Kmalloc::new(&frames, ram.clone(), SingleCpu, KmallocConfig::default()).unwrap();
    /// let objs: Vec<_> = (0..500).map(|_| heap.kmalloc(100).unwrap()).collect();
    /// for o in objs {
    ///     // SAFETY: allocated above with this size, freed once.
    ///     unsafe { heap.kfree(o, 100) }.unwrap();
    /// }
    /// let by_stats: usize = heap.stats().map(|s| s.empty_slabs).sum();
    /// assert!(by_stats > 0);
    /// assert_eq!(heap.empty_slabs(), by_stats);
    /// assert_eq!(heap.slab_frames(), heap.stats().map(|s| s.pages()).sum::<usize>());
    /// ```
    pub fn empty_slabs(&self) -> usize {
        self.caches.iter().map(|c| c.slab_counts().1).sum()
    }

    /// Large allocations live.
    pub fn large_allocations(&self) -> usize {
        self.large_live.load(Ordering::Relaxed)
    }

    /// Frees through [`GlobalAlloc`] that were refused (double free,
    /// foreign pointer, corruption): they cannot return an error, so they
    /// are counted here and the last one is kept.
    pub fn refused_frees(&self) -> (usize, Option<SlabError>) {
        (self.free_errors.load(Ordering::Relaxed), *self.last_error.lock())
    }
}

/// Frame order of a large allocation.
fn large_order(layout: Layout) -> Option<Order> {
    Order::for_bytes(layout.size().max(layout.align()).max(PAGE_SIZE) as u64)
}

// SAFETY: `alloc` returns memory of at least `layout.size()` bytes aligned to `layout.align()` (class
// objects are aligned to their class's alignment, chosen to cover the request; large blocks are
// naturally aligned and checked) that no other allocation overlaps, until it is passed to `dealloc`.
// Nothing here allocates through the global allocator.
unsafe impl<P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> GlobalAlloc
    for Kmalloc<'_, P, M, C, N>
{
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Kmalloc::alloc(self, layout).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(p) = NonNull::new(ptr) else { return };
        // SAFETY: the GlobalAlloc contract: `ptr` came from `alloc` with `layout` and is not used again.
        if let Err(e) = unsafe { self.free(p, layout) } {
            self.refuse(e);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(p) = NonNull::new(ptr) else { return ptr::null_mut() };
        // SAFETY: the GlobalAlloc contract, as for `dealloc`.
        match unsafe { Kmalloc::realloc(self, p, layout, new_size) } {
            Ok(p) => p.as_ptr(),
            Err(SlabError::OutOfMemory(_)) => ptr::null_mut(),
            Err(e) => {
                self.refuse(e);
                ptr::null_mut()
            }
        }
    }
}

impl<P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Kmalloc<'_, P, M, C, N> {
    #[cold]
    fn refuse(&self, e: SlabError) {
        self.free_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(e);
    }
}

impl<P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Drop for Kmalloc<'_, P, M, C, N> {
    /// Gives empty slabs back; slabs with live objects and live large
    /// allocations are leaked rather than freed under their users.
    fn drop(&mut self) {
        for cache in &mut self.caches {
            let _ = cache.shrink_exclusive(&self.env);
        }
    }
}

impl<P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> fmt::Debug for Kmalloc<'_, P, M, C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kmalloc").field("classes", &CLASSES).field("large_live", &self.large_allocations()).finish()
    }
}

/// A [`Kmalloc`] that can sit in a `static` and serve as
/// `#[global_allocator]`: it starts empty (every allocation fails with a
/// null pointer) until [`init`](GlobalSlab::init) installs the allocator.
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use mm_slab::{GlobalSlab, Kmalloc, KmallocConfig};
/// use mm_types::percpu::SingleCpu;
/// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
/// use mm_types::PhysAddr;
///
/// // In a kernel this static carries `#[global_allocator]`, with the
/// // kernel's frame allocator and direct map in place of the test kit's.
/// static HEAP: GlobalSlab<'static, RefFrameProvider, SimPhysMemory, SingleCpu> = GlobalSlab::new();
///
/// let layout = Layout::new::<[u64; 4]>();
/// // SAFETY: a non-zero layout; before `init` every allocation fails.
/// assert!(unsafe { HEAP.alloc(layout) }.is_null());
///
/// // Early in boot, once frames and the direct map exist:
/// let ram = SimPhysMemory::new(PhysAddr::new(0x100_0000)?, 4 << 20);
/// let frames: &'static RefFrameProvider = Box::leak(Box::new(RefFrameProvider::new(&ram)));
/// let config = KmallocConfig { secret: 0x1234_5678_9abc_def1, ..KmallocConfig::default() };
/// HEAP.init(Kmalloc::new(frames, ram.clone(), SingleCpu, config)?).map_err(|_| "installed twice")?;
///
/// // SAFETY: as above; freed once with its layout.
/// unsafe {
///     let p = HEAP.alloc(layout);
///     assert!(!p.is_null());
///     HEAP.dealloc(p, layout);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct GlobalSlab<'a, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize = 8> {
    inner: spin::Once<Kmalloc<'a, P, M, C, N>>,
}

impl<'a, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> GlobalSlab<'a, P, M, C, N> {
    /// An allocator that is not ready yet.
    pub const fn new() -> Self {
        GlobalSlab { inner: spin::Once::new() }
    }

    /// Installs the allocator. A second call is refused and hands the
    /// allocator back.
    pub fn init(&self, heap: Kmalloc<'a, P, M, C, N>) -> Result<&Kmalloc<'a, P, M, C, N>, Kmalloc<'a, P, M, C, N>> {
        let mut heap = Some(heap);
        let installed = self.inner.call_once(|| heap.take().expect("taken once"));
        match heap {
            None => Ok(installed),
            Some(h) => Err(h),
        }
    }

    /// The installed allocator.
    pub fn get(&self) -> Option<&Kmalloc<'a, P, M, C, N>> {
        self.inner.get()
    }
}

impl<P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Default for GlobalSlab<'_, P, M, C, N> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: forwards to the installed `Kmalloc` (see its implementation); before installation nothing is
// ever allocated, so nothing is freed.
unsafe impl<P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> GlobalAlloc
    for GlobalSlab<'_, P, M, C, N>
{
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.inner.get() {
            // SAFETY: forwarded contract.
            Some(heap) => unsafe { GlobalAlloc::alloc(heap, layout) },
            None => ptr::null_mut(),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(heap) = self.inner.get() {
            // SAFETY: forwarded contract.
            unsafe { GlobalAlloc::dealloc(heap, ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match self.inner.get() {
            // SAFETY: forwarded contract.
            Some(heap) => unsafe { GlobalAlloc::realloc(heap, ptr, layout, new_size) },
            None => ptr::null_mut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_table_rounds_up_to_the_smallest_fitting_class() {
        for size in 1..=KMALLOC_MAX {
            let class = CLASS_OF[(size + 7) >> 3] as usize;
            assert!(KMALLOC_CLASSES[class] >= size, "size {size}");
            assert!(class == 0 || KMALLOC_CLASSES[class - 1] < size.next_multiple_of(8), "size {size}");
        }
        assert!(KMALLOC_CLASSES.contains(&96) && KMALLOC_CLASSES.contains(&192));
        assert!(KMALLOC_CLASSES.windows(2).all(|w| w[0] < w[1] && (w[0] < 128 || (w[1] - w[0]) * 5 <= w[1])));
    }
}
