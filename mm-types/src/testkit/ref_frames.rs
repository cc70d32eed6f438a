//! A reference frame provider: simple and slow, for tests and models.

extern crate std;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::vec::Vec;

use crate::{
    AllocFlags, FrameBlock, FrameError, FrameNumber, FrameProvider, FrameRange, Order, PhysMemory, SimPhysMemory, Zone,
};

/// A [`FrameProvider`] over the RAM of a [`SimPhysMemory`], built for
/// clarity: free frames in a bitmap, first-fit search, every free
/// checked against the record of allocated blocks.
///
/// It can be told to fail the Nth allocation from now
/// ([`fail_nth_allocation`](RefFrameProvider::fail_nth_allocation)), to test
/// error paths of code that allocates several blocks.
#[derive(Debug)]
pub struct RefFrameProvider {
    mem: SimPhysMemory,
    max_order: Order,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    managed: Vec<FrameRange>,
    free: FreeMap,
    allocated: BTreeMap<u64, Order>,
    allocations: u64,
    fail_at: u64,
}

impl RefFrameProvider {
    /// Manages all RAM of `mem` (holes excluded), up to order 10 blocks.
    pub fn new(mem: &SimPhysMemory) -> Self {
        let managed = mem.frame_ranges();
        let span = mem.span().frames_inward();
        let first = span.start().as_u64();
        let mut free = FreeMap::new(first, first + span.len());
        for r in &managed {
            let start = r.start().as_u64();
            free.set(start..start + r.len(), true);
        }
        RefFrameProvider {
            mem: mem.clone(),
            max_order: Order::new(10).expect("valid order"),
            state: Mutex::new(State { managed, free, allocated: BTreeMap::new(), allocations: 0, fail_at: u64::MAX }),
        }
    }

    /// Sets the largest order served.
    pub fn with_max_order(mut self, max: Order) -> Self {
        self.max_order = max;
        self
    }

    /// Makes the `n`th allocation from now fail with out-of-memory (1 = next).
    pub fn fail_nth_allocation(&self, n: u64) {
        let mut s = self.lock();
        s.fail_at = s.allocations.saturating_add(n.max(1));
    }

    /// Allocations asked for so far, failed ones included (a model's way
    /// to tell whether an injected failure has fired).
    pub fn allocations(&self) -> u64 {
        self.lock().allocations
    }

    /// Number of free frames.
    pub fn free_frame_count(&self) -> u64 {
        self.lock().free.count
    }

    /// Number of blocks handed out and not yet freed.
    pub fn allocated_blocks(&self) -> usize {
        self.lock().allocated.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn find(&self, order: Order, limit: Option<u64>) -> Option<u64> {
        let n = order.frames();
        let end = limit.map_or(self.free.end, |l| (l >> crate::PAGE_SHIFT).min(self.free.end));
        let mut f = self.free.start.next_multiple_of(n);
        while f + n <= end {
            if self.free.all_set(f, n) {
                return Some(f);
            }
            // On to the next free frame, and up to the block alignment.
            f = self.free.next_free(f + 1)?.next_multiple_of(n);
        }
        None
    }
}

/// One bit per frame of `[start, end)`, set when the frame is free, and
/// the number of bits set.
#[derive(Debug)]
struct FreeMap {
    start: u64,
    end: u64,
    words: Vec<u64>,
    count: u64,
}

impl FreeMap {
    fn new(start: u64, end: u64) -> Self {
        FreeMap { start, end, words: std::vec![0; (end - start).div_ceil(64) as usize], count: 0 }
    }

    fn bit(&self, f: u64) -> (usize, u64) {
        let i = f - self.start;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn contains(&self, f: u64) -> bool {
        (self.start..self.end).contains(&f) && {
            let (w, m) = self.bit(f);
            self.words[w] & m != 0
        }
    }

    /// The first free frame at or after `f`.
    fn next_free(&self, f: u64) -> Option<u64> {
        if f >= self.end {
            return None;
        }
        let (mut w, m) = self.bit(f);
        // The bits of `f`'s word from `f` on, then whole words.
        let mut bits = self.words[w] & !(m - 1);
        while bits == 0 {
            w += 1;
            bits = *self.words.get(w)?;
        }
        let found = self.start + w as u64 * 64 + u64::from(bits.trailing_zeros());
        (found < self.end).then_some(found)
    }

    /// The word holding frame `f` and the mask of the frames from `f`
    /// below `end` that lie in that word.
    fn word_mask(&self, f: u64, end: u64) -> (usize, u64) {
        let (w, m) = self.bit(f);
        let bits = (end - f).min(64 - (f - self.start) % 64);
        (w, if bits == 64 { u64::MAX } else { ((1u64 << bits) - 1) * m })
    }

    /// Whether the `n` frames from `f` are all free (`f` inside the map).
    fn all_set(&self, f: u64, n: u64) -> bool {
        let mut g = f;
        while g < f + n {
            let (w, mask) = self.word_mask(g, f + n);
            if self.words[w] & mask != mask {
                return false;
            }
            g += u64::from(mask.count_ones());
        }
        true
    }

    /// Marks the frames of `range` free or taken; they must all change.
    fn set(&mut self, range: core::ops::Range<u64>, free: bool) {
        let mut f = range.start;
        while f < range.end {
            let (w, mask) = self.word_mask(f, range.end);
            let already = if free { self.words[w] & mask } else { !self.words[w] & mask };
            debug_assert_eq!(already, 0, "frames from {f} already in that state");
            let n = u64::from(mask.count_ones());
            if free {
                self.words[w] |= mask;
                self.count += n;
            } else {
                self.words[w] &= !mask;
                self.count -= n;
            }
            f += n;
        }
    }
}

// SAFETY: a frame leaves `free` when its block is handed out and returns only
// when that exact block is freed (1); blocks are naturally aligned and fit the
// zone limit by the search (1); ZERO blocks are zeroed before return (2); the
// provider writes only to blocks it is about to hand out (3).
unsafe impl FrameProvider for RefFrameProvider {
    fn allocate(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        flags.validate()?;
        if order > self.max_order {
            return Err(FrameError::OrderTooLarge { order, max: self.max_order });
        }
        let mut s = self.lock();
        s.allocations += 1;
        if s.allocations == s.fail_at {
            return Err(FrameError::OutOfMemory { order });
        }
        let zone = flags.highest_zone();
        let limit = zone.limit().map(|a| a.as_u64());
        let Some(start) = s.find(order, limit) else {
            if zone != Zone::Normal && s.find(order, None).is_some() {
                return Err(FrameError::ZoneExhausted { zone, order });
            }
            return Err(FrameError::OutOfMemory { order });
        };
        s.free.set(start..start + order.frames(), false);
        s.allocated.insert(start, order);
        drop(s);
        let block = FrameBlock::new(FrameNumber::new(start).expect("managed frame"), order).expect("aligned");
        if flags.contains(AllocFlags::ZERO) {
            // SAFETY: the block was just taken out of the free set: we own it.
            unsafe { self.mem.zero_block(block) }.expect("managed frames are backed");
        }
        Ok(block)
    }

    fn free(&self, block: FrameBlock) -> Result<(), FrameError> {
        let mut s = self.lock();
        let range = block.frame_range();
        if !s.managed.iter().any(|m| m.contains_range(&range)) {
            return Err(FrameError::NotOwned(block));
        }
        let start = block.start().as_u64();
        match s.allocated.get(&start).copied() {
            Some(order) if order == block.order() => {
                s.allocated.remove(&start);
                s.free.set(start..start + order.frames(), true);
                Ok(())
            }
            Some(order) => Err(FrameError::WrongOrder { block, allocated: order }),
            None if s.free.contains(start) => Err(FrameError::DoubleFree(block)),
            None => Err(FrameError::Misaligned(block)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PhysAddr;

    fn o(n: u8) -> Order {
        Order::new(n).unwrap()
    }

    #[test]
    fn every_error_variant() {
        // 16 frames at 15.9 MiB..16 MiB+... : half in DMA, half in DMA32.
        let base = PhysAddr::new((16 << 20) - 8 * 4096).unwrap();
        let mem = SimPhysMemory::new(base, 16 * 4096);
        let p = RefFrameProvider::new(&mem).with_max_order(o(3));
        assert_eq!(p.allocate(o(4), AllocFlags::empty()), Err(FrameError::OrderTooLarge { order: o(4), max: o(3) }));
        let bad = AllocFlags::DMA | AllocFlags::DMA32;
        assert_eq!(p.allocate(o(0), bad), Err(FrameError::InvalidFlags(bad)));
        let dma = p.allocate(o(3), AllocFlags::DMA).unwrap();
        assert!(dma.start_address().as_u64() + dma.bytes() <= 16 << 20);
        assert_eq!(p.allocate(o(0), AllocFlags::DMA), Err(FrameError::ZoneExhausted { zone: Zone::Dma, order: o(0) }));
        let high = p.allocate(o(3), AllocFlags::empty()).unwrap();
        assert_eq!(p.allocate(o(0), AllocFlags::empty()), Err(FrameError::OutOfMemory { order: o(0) }));
        let wrong = FrameBlock::new(high.start(), o(2)).unwrap();
        assert_eq!(p.free(wrong), Err(FrameError::WrongOrder { block: wrong, allocated: o(3) }));
        let inner = FrameBlock::new(high.start().checked_add(1).unwrap(), o(0)).unwrap();
        assert_eq!(p.free(inner), Err(FrameError::Misaligned(inner)));
        let foreign = FrameBlock::new(FrameNumber::new(1).unwrap(), o(0)).unwrap();
        assert_eq!(p.free(foreign), Err(FrameError::NotOwned(foreign)));
        p.free(high).unwrap();
        assert_eq!(p.free(high), Err(FrameError::DoubleFree(high)));
        p.free(dma).unwrap();
        assert_eq!((p.free_frame_count(), p.allocated_blocks()), (16, 0));
    }

    #[test]
    fn zeroing_and_failure_injection() {
        let mem = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 * 4096);
        let p = RefFrameProvider::new(&mem);
        let b = p.allocate(o(0), AllocFlags::empty()).unwrap();
        // SAFETY: `b` is ours.
        unsafe { mem.write_bytes(b.start_address(), &[0xaa; 64]).unwrap() };
        p.free(b).unwrap();
        let z = p.allocate(o(0), AllocFlags::ZERO).unwrap();
        assert_eq!(z, b, "first fit hands the same frame back");
        let mut buf = [1u8; 64];
        // SAFETY: `z` is ours.
        unsafe { mem.read_bytes(z.start_address(), &mut buf).unwrap() };
        assert_eq!(buf, [0; 64]);
        p.fail_nth_allocation(2);
        assert!(p.allocate(o(0), AllocFlags::empty()).is_ok());
        assert_eq!(p.allocate(o(0), AllocFlags::empty()), Err(FrameError::OutOfMemory { order: o(0) }));
        assert!(p.allocate(o(0), AllocFlags::empty()).is_ok());
        let owned = p.allocate_owned(o(1), AllocFlags::empty()).unwrap();
        let before = p.free_frame_count();
        drop(owned);
        assert_eq!(p.free_frame_count(), before + 2);
        let kept = p.allocate_owned(o(0), AllocFlags::empty()).unwrap().into_raw();
        assert_eq!(p.free_frame_count(), before + 1);
        p.free(kept).unwrap();
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_avoid_holes() {
        // 300 frames from frame 7 with a hole of 70 frames: words of the
        // bitmap are crossed at odd places.
        let base = PhysAddr::new(7 * 4096).unwrap();
        let mem = SimPhysMemory::builder(base, 300 * 4096).hole(PhysAddr::new(100 * 4096).unwrap(), 70 * 4096).build();
        let p = RefFrameProvider::new(&mem);
        let total = p.free_frame_count();
        assert_eq!(total, 230);
        let mut taken = std::collections::BTreeSet::new();
        let mut blocks = Vec::new();
        for i in 0.. {
            let order = o([0, 3, 1, 5, 0, 2][i % 6]);
            let Ok(b) = p.allocate(order, AllocFlags::empty()).or_else(|_| p.allocate(o(0), AllocFlags::empty()))
            else {
                break;
            };
            let s = b.start().as_u64();
            assert_eq!(s % b.order().frames(), 0, "{b:?} aligned");
            for f in s..s + b.order().frames() {
                assert!(!(100..170).contains(&f) && (7..307).contains(&f), "{f} is RAM");
                assert!(taken.insert(f), "frame {f} handed out twice");
            }
            assert_eq!(p.free_frame_count(), total - taken.len() as u64);
            blocks.push(b);
        }
        assert_eq!((p.free_frame_count(), taken.len() as u64), (0, total), "every frame handed out");
        for b in blocks {
            p.free(b).unwrap();
        }
        assert_eq!(p.free_frame_count(), total);
        assert_eq!(p.allocate(o(5), AllocFlags::empty()).unwrap().start().as_u64(), 32, "first fit again");
    }
}
