//! Per-CPU frame caches (Linux's per-cpu pagesets).
//!
//! Each CPU keeps, per zone, order (0 to [`PCP_MAX_ORDER`]) and mobility, a
//! short stack of blocks threaded through the blocks themselves. Allocation
//! pops from it and free pushes onto it under the CPU's own slot lock, which
//! is never contended when the kernel disables preemption; the zone lock is
//! taken only to refill a batch from the buddy lists or to drain a batch back
//! when the stack passes its high mark. Lock order: slot, then zone.
//!
//! Each CPU also counts, in its own slot, how its order 0-3 allocations and
//! frees went ([`PcpStats`]): plain fields under the slot's owner, with no
//! shared atomic on the fast path.

#![deny(unsafe_code)]

use crate::free_list::Stack;
use crate::zone::MOBILITIES;

/// Largest order served through the per-CPU caches (as Linux's
/// `PAGE_ALLOC_COSTLY_ORDER`).
pub const PCP_MAX_ORDER: u8 = 3;
pub(crate) const PCP_ORDERS: usize = PCP_MAX_ORDER as usize + 1;

/// One CPU's caches.
///
/// `repr(C)` keeps the counters last: a per-CPU slot holds this value
/// first and its lock and mode word right after it, so the counters share
/// the cache line that every fast-path access already touches (the slot
/// lock, or the pinned mode's one load).
#[repr(C)]
pub(crate) struct PcpSet {
    pub lists: [[[Stack; MOBILITIES]; PCP_ORDERS]; 3],
    pub counters: PcpCounters,
}

// The counters and the slot's lock and mode word after the value (two bytes) share a cache line.
const _: () = assert!(core::mem::offset_of!(PcpSet, counters) / 64 == (size_of::<PcpSet>() + 1) / 64);

/// One CPU's counters, written only by the slot's owner (under its lock, or
/// under the pinned promise), so plain adds. They wrap rather than panic.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PcpCounters {
    /// Allocations served by a block already on the CPU's list.
    pub alloc_hits: u64,
    /// Allocations served after refilling the list from the zone.
    pub alloc_misses: u64,
    /// Blocks freed onto the CPU's lists (those that drained included):
    /// the free fast path counts one add, and the hits are derived.
    pub frees: u64,
    /// Frees that took the list past its high mark and drained a batch.
    pub free_drains: u64,
}

impl PcpCounters {
    /// The public figures.
    pub fn stats(&self) -> PcpStats {
        PcpStats {
            alloc_hits: self.alloc_hits,
            alloc_misses: self.alloc_misses,
            free_hits: self.frees.wrapping_sub(self.free_drains),
            free_drains: self.free_drains,
        }
    }
}

impl PcpSet {
    pub fn new() -> Self {
        PcpSet { lists: [[[Stack::EMPTY; MOBILITIES]; PCP_ORDERS]; 3], counters: PcpCounters::default() }
    }

    /// Frames held, all zones.
    pub fn frames(&self) -> u64 {
        let mut n = 0;
        for zone in &self.lists {
            for (order, by_mob) in zone.iter().enumerate() {
                n += by_mob.iter().map(|s| (s.len() as u64) << order).sum::<u64>();
            }
        }
        n
    }

    /// Frames held for one zone.
    pub fn zone_frames(&self, zone: usize) -> u64 {
        self.lists[zone].iter().enumerate().map(|(o, m)| m.iter().map(|s| (s.len() as u64) << o).sum::<u64>()).sum()
    }
}

/// Batch and high mark for an order, from the order-0 values.
pub(crate) fn batch_and_high(order: u8, batch: u32, high: u32) -> (u32, u32) {
    let b = (batch >> order).max(1);
    (b, (high >> order).max(2 * b))
}

/// How one CPU's caches served allocations and frees of orders 0 to
/// [`PCP_MAX_ORDER`], counted since the allocator was made (Linux counts the
/// same events per CPU as `PGALLOC` and `PGFREE` against refills and
/// drains of its per-cpu pagesets).
///
/// Larger orders bypass the caches and are not counted; neither are
/// allocations that failed, nor [`drain_all`](crate::BuddyAllocator::drain_all)
/// and its kin (they are not frees). The counters wrap at `u64::MAX`.
///
/// From [`BuddyAllocator::cpu_pcp_stats`](crate::BuddyAllocator::cpu_pcp_stats)
/// (one CPU) and [`BuddyAllocator::pcp_stats`](crate::BuddyAllocator::pcp_stats)
/// (summed over the CPUs in reach).
///
/// ```
/// use mm_buddy::{BuddyAllocator, BuddyConfig, PcpStats};
/// use mm_types::percpu::SingleCpu;
/// use mm_types::testkit::SimPhysMemory;
/// use mm_types::{AllocFlags, FrameProvider, Order, PhysAddr};
///
/// let mem = SimPhysMemory::new(PhysAddr::new(16 << 20)?, 4 << 20);
/// let config = BuddyConfig { pcp_batch: 4, pcp_high: 8, ..BuddyConfig::default() };
/// let buddy: BuddyAllocator<_, _> = BuddyAllocator::new(mem.clone(), SingleCpu, config)?;
/// // SAFETY: this RAM is used by nothing else and outlives the allocator.
/// unsafe { buddy.add_memory(mem.span())? };
///
/// // The first allocation refills a batch of 4 from the zone; the next 3
/// // are served by the cache.
/// let blocks: Vec<_> = (0..4).map(|_| buddy.allocate(Order::ZERO, AllocFlags::empty())).collect::<Result<_, _>>()?;
/// for b in blocks {
///     buddy.free(b)?; // the list never passes its high mark of 8
/// }
/// let s = buddy.cpu_pcp_stats(0);
/// assert_eq!(s, PcpStats { alloc_hits: 3, alloc_misses: 1, free_hits: 4, free_drains: 0 });
/// assert_eq!((s.allocations(), s.frees()), (4, 4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcpStats {
    /// Allocations served from a block already on the CPU's list: no zone
    /// lock.
    pub alloc_hits: u64,
    /// Allocations that found the list empty and refilled it with a batch
    /// from the zone (under the zone lock) before being served.
    pub alloc_misses: u64,
    /// Frees that left the block on the CPU's list: no zone lock.
    pub free_hits: u64,
    /// Frees that took the list past its high mark, so that a batch drained
    /// back to the zone (under the zone lock); the freed block itself
    /// stays cached.
    pub free_drains: u64,
}

impl PcpStats {
    /// Allocations served through the CPU caches: hits plus misses.
    pub fn allocations(&self) -> u64 {
        self.alloc_hits.wrapping_add(self.alloc_misses)
    }

    /// Frees into the CPU caches: hits plus drains.
    pub fn frees(&self) -> u64 {
        self.free_hits.wrapping_add(self.free_drains)
    }
}

impl core::ops::AddAssign for PcpStats {
    /// Adds another CPU's counters (wrapping, as the counters do).
    fn add_assign(&mut self, o: PcpStats) {
        self.alloc_hits = self.alloc_hits.wrapping_add(o.alloc_hits);
        self.alloc_misses = self.alloc_misses.wrapping_add(o.alloc_misses);
        self.free_hits = self.free_hits.wrapping_add(o.free_hits);
        self.free_drains = self.free_drains.wrapping_add(o.free_drains);
    }
}

impl core::fmt::Display for PcpStats {
    /// `alloc hits H misses M, free hits H drains D`: one line for a
    /// kernel's per-CPU report.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "alloc hits {} misses {}, free hits {} drains {}",
            self.alloc_hits, self.alloc_misses, self.free_hits, self.free_drains
        )
    }
}
