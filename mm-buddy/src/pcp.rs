//! Per-CPU frame caches (Linux's per-cpu pagesets).
//!
//! Each CPU keeps, per zone, order (0 to [`PCP_MAX_ORDER`]) and mobility, a
//! short stack of blocks threaded through the blocks themselves. Allocation
//! pops from it and free pushes onto it under the CPU's own slot lock, which
//! is never contended when the kernel disables preemption; the zone lock is
//! taken only to refill a batch from the buddy lists or to drain a batch back
//! when the stack passes its high mark. Lock order: slot, then zone.

#![deny(unsafe_code)]

use crate::free_list::Stack;
use crate::zone::MOBILITIES;

/// Largest order served through the per-CPU caches (as Linux's
/// `PAGE_ALLOC_COSTLY_ORDER`).
pub const PCP_MAX_ORDER: u8 = 3;
pub(crate) const PCP_ORDERS: usize = PCP_MAX_ORDER as usize + 1;

/// One CPU's caches.
pub(crate) struct PcpSet {
    pub lists: [[[Stack; MOBILITIES]; PCP_ORDERS]; 3],
}

impl PcpSet {
    pub fn new() -> Self {
        PcpSet { lists: [[[Stack::EMPTY; MOBILITIES]; PCP_ORDERS]; 3] }
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
