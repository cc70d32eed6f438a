//! Statistics: watermarks, per-zone state, fragmentation.

#![deny(unsafe_code)]

use mm_types::Zone;

use crate::zone::ORDERS;

/// A zone's watermarks, in frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Watermarks {
    /// Below this, only atomic allocations succeed (down to half of it).
    pub min: u64,
    /// Below this, background reclaim should start.
    pub low: u64,
    /// Background reclaim runs until free memory is back above this.
    pub high: u64,
}

/// Free memory of a zone against its watermarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkState {
    /// Free frames on the buddy lists.
    pub free: u64,
    /// Managed frames.
    pub managed: u64,
    /// The watermarks.
    pub watermarks: Watermarks,
}

impl WatermarkState {
    pub(crate) fn new(free: u64, watermarks: Watermarks, managed: u64) -> Self {
        WatermarkState { free, managed, watermarks }
    }

    /// Below min: ordinary allocations fail here.
    pub fn below_min(&self) -> bool {
        self.free < self.watermarks.min
    }

    /// Below low: time to wake background reclaim.
    pub fn below_low(&self) -> bool {
        self.free < self.watermarks.low
    }

    /// Frames reclaim must free to get back to high (0 if above).
    pub fn frames_to_high(&self) -> u64 {
        self.watermarks.high.saturating_sub(self.free)
    }
}

/// One zone's figures.
#[derive(Clone, Copy, Debug)]
pub struct ZoneStats {
    /// The zone.
    pub zone: Zone,
    /// Frames managed.
    pub managed_frames: u64,
    /// Frames on the buddy lists.
    pub free_frames: u64,
    /// Frames in per-CPU caches.
    pub cached_frames: u64,
    /// Free blocks per order (indexes above `max_order` are zero).
    pub free_blocks: [u64; ORDERS],
    /// The allocator's largest order.
    pub max_order: u8,
    /// The zone's watermarks.
    pub watermarks: Watermarks,
    /// Pageblocks that changed mobility through fallback stealing.
    pub claimed_pageblocks: u64,
}

impl core::fmt::Display for ZoneStats {
    /// One line in the shape of `/proc/buddyinfo`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "zone {:>6}", self.zone)?;
        for n in &self.free_blocks[..=self.max_order as usize] {
            write!(f, " {n:>6}")?;
        }
        Ok(())
    }
}

/// How fragmented a zone's free memory is for allocations of one order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragmentation {
    /// Share of free memory, in thousandths, that lies in blocks too small
    /// for the order (Linux's "unusable free space index"): 0 means every
    /// free frame is usable for the order, 1000 none is.
    pub unusable_per_mille: u32,
    /// Whether a free block of the order (or larger) exists.
    pub satisfiable: bool,
}

impl Fragmentation {
    pub(crate) fn from_counts(counts: &[u64; ORDERS], order: u8) -> Self {
        let total: u64 = counts.iter().enumerate().map(|(o, n)| n << o).sum();
        let usable: u64 = counts.iter().enumerate().skip(order as usize).map(|(o, n)| n << o).sum();
        let unusable_per_mille = ((total - usable) * 1000).checked_div(total).unwrap_or(1000) as u32;
        Fragmentation { unusable_per_mille, satisfiable: usable > 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragmentation_index() {
        let mut c = [0u64; ORDERS];
        c[0] = 8; // 8 frames in order-0 blocks
        c[3] = 1; // 8 frames in one order-3 block
        let f = Fragmentation::from_counts(&c, 3);
        assert_eq!(f, Fragmentation { unusable_per_mille: 500, satisfiable: true });
        assert_eq!(Fragmentation::from_counts(&c, 4).unusable_per_mille, 1000);
        assert!(!Fragmentation::from_counts(&c, 4).satisfiable);
        assert_eq!(Fragmentation::from_counts(&c, 0).unusable_per_mille, 0);
    }

    #[test]
    fn watermark_state() {
        let w = Watermarks { min: 10, low: 20, high: 30 };
        let s = WatermarkState::new(15, w, 100);
        assert!(!s.below_min() && s.below_low());
        assert_eq!(s.frames_to_high(), 15);
        assert_eq!(WatermarkState::new(40, w, 100).frames_to_high(), 0);
    }
}
