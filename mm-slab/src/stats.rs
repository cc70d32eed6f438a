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
