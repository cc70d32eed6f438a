//! Per-cache statistics, like a line of `/proc/slabinfo`.

use core::fmt;

use mm_types::PAGE_SIZE;

/// A snapshot of one cache's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// The cache's name.
    pub name: &'static str,
    /// Object size as requested.
    pub object_size: usize,
    /// Bytes from one object to the next (size, red zone, alignment).
    pub stride: usize,
    /// Objects per slab.
    pub objects_per_slab: usize,
    /// Slab order (slabs are `2^order` frames).
    pub order: u8,
    /// Objects allocated and not freed.
    pub active_objects: usize,
    /// Object slots in all slabs.
    pub total_objects: usize,
    /// Slabs owned by the cache.
    pub slabs: usize,
    /// Slabs on the shared partial list.
    pub partial_slabs: usize,
    /// Slabs on the full list.
    pub full_slabs: usize,
    /// Empty slabs kept for reuse.
    pub empty_slabs: usize,
    /// Slabs owned by CPUs (current and CPU partial).
    pub cpu_slabs: usize,
    /// Of those, slabs on CPU partial lists.
    pub cpu_partial_slabs: usize,
    /// Free objects sitting on CPU freelists.
    pub cpu_free_objects: usize,
    /// Freed objects of other slabs waiting in CPU slots to go back to
    /// their slabs (a batch at a time, under one node lock); counted as
    /// freed in `active_objects`, still in use in their slabs.
    pub cpu_deferred_frees: usize,
    /// Slabs taken from the frame provider since creation.
    pub slabs_grown: u64,
    /// Slabs given back to the frame provider since creation.
    pub slabs_released: u64,
}

impl CacheStats {
    /// 4 KiB pages held by the cache.
    pub fn pages(&self) -> usize {
        self.slabs << self.order
    }

    /// Bytes of slab memory held.
    pub fn bytes(&self) -> usize {
        self.pages() * PAGE_SIZE
    }

    /// Share of slab bytes holding live objects, in percent (100 for a
    /// cache holding no slab).
    pub fn efficiency_percent(&self) -> f64 {
        if self.slabs == 0 {
            return 100.0;
        }
        (self.active_objects * self.object_size) as f64 * 100.0 / self.bytes() as f64
    }

    /// The `/proc/slabinfo`-style column names for [`Display`](fmt::Display).
    pub const HEADER: &'static str =
        "# name            <active> <total> <size> <per-slab> <order> <slabs> <partial> <full> <empty> <cpu>";
}

impl fmt::Display for CacheStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<17} {:>8} {:>7} {:>6} {:>10} {:>7} {:>7} {:>9} {:>6} {:>7} {:>5}",
            self.name,
            self.active_objects,
            self.total_objects,
            self.object_size,
            self.objects_per_slab,
            self.order,
            self.slabs,
            self.partial_slabs,
            self.full_slabs,
            self.empty_slabs,
            self.cpu_slabs
        )
    }
}

/// How one CPU's slot of a cache served allocations and frees, counted
/// since the cache was made (SLUB counts the same events per CPU as
/// `ALLOC_FASTPATH` / `ALLOC_SLOWPATH` and `FREE_FASTPATH` against its
/// slow paths).
///
/// Debug caches (which run every operation under the node lock) and large
/// kmalloc allocations (whole frame blocks) count nothing; neither do
/// refused frees, failed allocations, nor the flushes of
/// [`Cache::flush_deferred`](crate::Cache::flush_deferred),
/// [`Cache::flush_cpus`](crate::Cache::flush_cpus) and their kin (they are
/// not frees). The counters wrap at `u64::MAX`.
///
/// From [`Cache::cpu_stats`](crate::Cache::cpu_stats) (one cache) and
/// [`Kmalloc::cpu_stats`](crate::Kmalloc::cpu_stats) (summed over the size
/// classes).
///
/// ```
/// use mm_slab::{Cache, CacheConfig, CpuSlabStats};
/// use mm_types::percpu::SingleCpu;
/// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
/// use mm_types::PhysAddr;
///
/// let ram = SimPhysMemory::new(PhysAddr::new(0x100_0000)?, 1 << 20);
/// let frames = RefFrameProvider::new(&ram);
/// let cache: Cache<_, _, _> = Cache::new(&frames, ram.clone(), SingleCpu, CacheConfig::new("obj", 64))?;
/// // The first allocation refills the empty CPU slot with a new slab; the
/// // next two come off the CPU freelist.
/// let objects = [cache.alloc()?, cache.alloc()?, cache.alloc()?];
/// for x in objects {
///     // SAFETY: each object came from `cache` and is freed once.
///     unsafe { cache.free(x)? }; // back onto the CPU freelist
/// }
/// let s = cache.cpu_stats(0);
/// assert_eq!(s, CpuSlabStats { alloc_hits: 2, alloc_misses: 1, free_hits: 3, free_flushes: 0 });
/// assert_eq!((s.allocations(), s.frees()), (3, 3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlabStats {
    /// Allocations served by the CPU freelist: no node lock.
    pub alloc_hits: u64,
    /// Allocations that found the CPU freelist empty and refilled it under
    /// the node lock (from remote frees of the current slab, a CPU partial
    /// slab, the shared partial list, an empty slab or a new one).
    pub alloc_misses: u64,
    /// Frees kept in the CPU slot: pushed on the CPU freelist (an object
    /// of the CPU's current slab) or queued among its deferred frees (any
    /// other object). No node lock.
    pub free_hits: u64,
    /// Frees that found the CPU's deferred queue full, so that the queued
    /// frees went to their slabs under the node lock first.
    pub free_flushes: u64,
}

impl CpuSlabStats {
    /// Allocations served: hits plus misses.
    pub fn allocations(&self) -> u64 {
        self.alloc_hits.wrapping_add(self.alloc_misses)
    }

    /// Frees taken: hits plus flushes.
    pub fn frees(&self) -> u64 {
        self.free_hits.wrapping_add(self.free_flushes)
    }
}

impl core::ops::AddAssign for CpuSlabStats {
    /// Adds another cache's (or CPU's) counters (wrapping, as the counters
    /// do).
    fn add_assign(&mut self, o: CpuSlabStats) {
        self.alloc_hits = self.alloc_hits.wrapping_add(o.alloc_hits);
        self.alloc_misses = self.alloc_misses.wrapping_add(o.alloc_misses);
        self.free_hits = self.free_hits.wrapping_add(o.free_hits);
        self.free_flushes = self.free_flushes.wrapping_add(o.free_flushes);
    }
}

impl fmt::Display for CpuSlabStats {
    /// `alloc hits H misses M, free hits H flushes F`: one line for a
    /// kernel's per-CPU report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "alloc hits {} misses {}, free hits {} flushes {}",
            self.alloc_hits, self.alloc_misses, self.free_hits, self.free_flushes
        )
    }
}
