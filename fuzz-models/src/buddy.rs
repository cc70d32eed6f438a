//! mm-buddy's model-based fuzz body.
//!
//! Random sequences of allocations (all orders, zones, mobilities, zeroing,
//! atomic), frees, bad frees of every kind, contiguous allocations, hot-adds
//! and per-CPU drains run against a model: the set of allocated blocks. The
//! model checks MODEL.md 1, 2, 5 and 6 after every step, every allocated
//! block carries a pattern that must survive until it is freed (the allocator
//! never writes into allocated memory), `check` checks 1, 3, 4 and 9, and
//! at the end everything must coalesce back (7).

use std::collections::BTreeMap;
use std::vec::Vec;

use arbitrary::Arbitrary;
use mm_types::percpu::SingleCpu;
use mm_types::testkit::SimPhysMemory;
use mm_types::{
    AllocFlags, FrameBlock, FrameError, FrameNumber, FrameProvider, FrameRange, Order, PhysAddr, PhysMemory, PhysRange,
};

use mm_buddy::{BuddyAllocator, BuddyConfig, BuddyError};

/// One step.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Allocate a block.
    Alloc {
        /// Order (taken modulo 8, so some exceed the maximum of 6).
        order: u8,
        /// 0: any zone, 1: DMA, 2: DMA32.
        zone: u8,
        /// 0: unmovable, 1: reclaimable, 2: movable.
        mobility: u8,
        /// Ask for zeroed memory.
        zero: bool,
        /// Atomic context.
        atomic: bool,
    },
    /// Free a live allocation.
    Free {
        /// Which one.
        pick: u16,
    },
    /// Free a block that was freed before.
    FreeAgain {
        /// Which one.
        pick: u16,
    },
    /// Free a live block with another order.
    FreeWrongOrder {
        /// Which one.
        pick: u16,
    },
    /// Free a frame inside a live block.
    FreeInterior {
        /// Which one.
        pick: u16,
    },
    /// Free a frame the allocator never managed.
    FreeForeign {
        /// Frame offset below the managed memory.
        frame: u8,
    },
    /// Allocate a contiguous run.
    Contiguous {
        /// Frames (1 + value % 48).
        frames: u8,
        /// Alignment shift (value % 6).
        align: u8,
    },
    /// Hot-add the next spare megabyte.
    AddMemory,
    /// Drain the per-CPU caches.
    Drain,
    /// Run the allocator's own consistency check.
    Verify,
}

const BASE: u64 = 15 << 20;
const MAX_ORDER: u8 = 6;

struct Live {
    range: FrameRange,
    /// `Some(order)` for blocks, `None` for contiguous runs.
    order: Option<u8>,
}

struct Harness {
    mem: SimPhysMemory,
    buddy: BuddyAllocator<'static, SimPhysMemory, SingleCpu, 2>,
    live: BTreeMap<u64, Live>,
    freed: Vec<FrameBlock>,
    added_mib: u64,
}

fn pattern(frame: u64) -> [u8; 8] {
    (frame ^ 0x5a5a_1234_dead_beef).to_le_bytes()
}

impl Harness {
    fn new() -> Self {
        let mem = SimPhysMemory::new(PhysAddr::new(BASE).expect("small"), 4 << 20);
        let config = BuddyConfig {
            max_order: MAX_ORDER,
            pcp_batch: 4,
            pcp_high: 8,
            min_free_kib: Some(64),
            ..Default::default()
        };
        let buddy = BuddyAllocator::new(mem.clone(), SingleCpu, config).expect("valid config");
        let mut h = Harness { mem, buddy, live: BTreeMap::new(), freed: Vec::new(), added_mib: 0 };
        h.add_memory();
        h.add_memory();
        h
    }

    fn add_memory(&mut self) {
        if self.added_mib == 4 {
            return;
        }
        let r = PhysRange::new(PhysAddr::new(BASE + (self.added_mib << 20)).expect("small"), 1 << 20).expect("small");
        // SAFETY: the simulated RAM is used only by this allocator, and the allocator holds a handle to it.
        let rep = unsafe { self.buddy.add_memory(r) }.expect("spare memory adds");
        assert_eq!(rep.frames + rep.metadata_frames + rep.skipped_frames, 256);
        self.added_mib += 1;
    }

    fn overlaps_live(&self, r: &FrameRange) -> bool {
        let end = r.start().as_u64() + r.len();
        self.live.range(..end).next_back().is_some_and(|(_, l)| l.range.overlaps(r))
    }

    fn stamp(&self, r: &FrameRange) {
        let last = r.start().as_u64() + r.len() - 1;
        for f in [r.start().as_u64(), last] {
            // SAFETY: the run was just handed to us.
            unsafe { self.mem.write_bytes(PhysAddr::new(f << 12).expect("small"), &pattern(f)) }.expect("backed");
        }
    }

    fn check_stamp(&self, r: &FrameRange) {
        let last = r.start().as_u64() + r.len() - 1;
        for f in [r.start().as_u64(), last] {
            let mut got = [0u8; 8];
            // SAFETY: the run is still allocated to us.
            unsafe { self.mem.read_bytes(PhysAddr::new(f << 12).expect("small"), &mut got) }.expect("backed");
            assert_eq!(got, pattern(f), "allocated memory at frame {f:#x} was overwritten");
        }
    }

    fn take(&mut self, range: FrameRange, order: Option<u8>, zero: bool) {
        assert!(!self.overlaps_live(&range), "{range:?} overlaps a live allocation (MODEL 2)");
        let managed = PhysRange::new(PhysAddr::new(BASE).expect("small"), self.added_mib << 20).expect("small");
        assert!(managed.contains_range(&range.phys_range()), "{range:?} outside managed memory (MODEL 1)");
        if zero {
            let mut buf = [0xffu8; 64];
            // SAFETY: just allocated to us.
            unsafe { self.mem.read_bytes(range.start().start_address(), &mut buf) }.expect("backed");
            assert_eq!(buf, [0; 64], "ZERO allocation is not zeroed");
        }
        self.stamp(&range);
        self.live.insert(range.start().as_u64(), Live { range, order });
    }

    fn pick(&self, pick: u16, blocks_only: bool) -> Option<u64> {
        // Two passes over the model rather than a list of keys per step.
        let keys = || self.live.iter().filter(|(_, l)| !blocks_only || l.order.is_some()).map(|(k, _)| *k);
        let n = if blocks_only { keys().count() } else { self.live.len() };
        (n != 0).then(|| keys().nth(pick as usize % n).expect("n keys"))
    }

    fn step(&mut self, op: &Op) {
        let b = &self.buddy;
        match *op {
            Op::Alloc { order, zone, mobility, zero, atomic } => {
                let order = Order::new(order % 8).expect("small");
                let mut flags = [AllocFlags::empty(), AllocFlags::DMA, AllocFlags::DMA32][zone as usize % 3]
                    | [AllocFlags::empty(), AllocFlags::RECLAIMABLE, AllocFlags::MOVABLE][mobility as usize % 3];
                flags.set(AllocFlags::ZERO, zero);
                flags.set(AllocFlags::ATOMIC, atomic);
                match b.allocate(order, flags) {
                    Ok(blk) => {
                        assert_eq!(blk.order(), order);
                        if flags.contains(AllocFlags::DMA) {
                            assert!(blk.start_address().as_u64() + blk.bytes() <= 16 << 20, "zone limit (MODEL 5)");
                        }
                        self.take(blk.frame_range(), Some(order.as_u8()), zero);
                    }
                    Err(FrameError::OrderTooLarge { .. }) => assert!(order.as_u8() > MAX_ORDER),
                    Err(FrameError::OutOfMemory { .. } | FrameError::ZoneExhausted { .. }) => {}
                    Err(e) => panic!("unexpected allocation error {e:?}"),
                }
            }
            Op::Free { pick } => {
                let Some(k) = self.pick(pick, false) else { return };
                let l = self.live.remove(&k).expect("picked");
                self.check_stamp(&l.range);
                match l.order {
                    Some(o) => {
                        let blk = FrameBlock::new(l.range.start(), Order::new(o).expect("small")).expect("aligned");
                        b.free(blk).expect("freeing a live block");
                        self.freed.push(blk);
                    }
                    None => b.free_contiguous(l.range).expect("freeing a live run"),
                }
            }
            Op::FreeAgain { pick } => {
                if self.freed.is_empty() {
                    return;
                }
                let blk = self.freed[pick as usize % self.freed.len()];
                if self.overlaps_live(&blk.frame_range()) {
                    return; // reallocated since
                }
                assert_eq!(b.free(blk), Err(FrameError::DoubleFree(blk)), "MODEL 6");
            }
            Op::FreeWrongOrder { pick } => {
                let Some(k) = self.pick(pick, true) else { return };
                let l = &self.live[&k];
                let o = l.order.expect("blocks only");
                let other = if o > 0 { o - 1 } else { 1 };
                let Ok(blk) = FrameBlock::new(l.range.start(), Order::new(other).expect("small")) else { return };
                let want = FrameError::WrongOrder { block: blk, allocated: Order::new(o).expect("small") };
                assert_eq!(b.free(blk), Err(want), "MODEL 6");
            }
            Op::FreeInterior { pick } => {
                let Some(k) = self.pick(pick, true) else { return };
                let l = &self.live[&k];
                if l.range.len() < 2 {
                    return;
                }
                let inner =
                    FrameBlock::new(l.range.start().checked_add(1).expect("small"), Order::ZERO).expect("order 0");
                assert_eq!(b.free(inner), Err(FrameError::Misaligned(inner)), "MODEL 6");
            }
            Op::FreeForeign { frame } => {
                let f = FrameNumber::new((BASE >> 12) - 1 - frame as u64).expect("small");
                let blk = FrameBlock::new(f, Order::ZERO).expect("order 0");
                assert_eq!(b.free(blk), Err(FrameError::NotOwned(blk)), "MODEL 6");
            }
            Op::Contiguous { frames, align } => {
                let n = 1 + frames as u64 % 48;
                let a = 1u64 << (align % 6);
                match b.allocate_contiguous(n, a, None, AllocFlags::ZERO) {
                    Ok(r) => {
                        assert_eq!((r.len(), r.start().as_u64() % a), (n, 0));
                        self.take(r, None, true);
                    }
                    Err(BuddyError::NoContiguousRange { .. }) => {}
                    Err(e) => panic!("unexpected contiguous error {e:?}"),
                }
            }
            Op::AddMemory => self.add_memory(),
            Op::Drain => {
                b.drain_all();
                assert_eq!(b.cached_frames(), 0);
            }
            Op::Verify => self.check(),
        }
    }

    fn check(&self) {
        self.buddy.check().expect("allocator invariants");
        let live: u64 = self.live.values().map(|l| l.range.len()).sum();
        let b = &self.buddy;
        assert_eq!(
            b.free_frame_count() + b.cached_frames() + live,
            b.managed_frames(),
            "frames are conserved (MODEL 1)"
        );
    }

    fn finish(mut self) {
        self.check();
        for (_, l) in std::mem::take(&mut self.live) {
            self.check_stamp(&l.range);
            match l.order {
                Some(o) => self
                    .buddy
                    .free(FrameBlock::new(l.range.start(), Order::new(o).expect("small")).expect("aligned"))
                    .expect("final free"),
                None => self.buddy.free_contiguous(l.range).expect("final free"),
            }
        }
        self.buddy.drain_all();
        self.buddy.check().expect("allocator invariants");
        assert_eq!(self.buddy.free_frame_count(), self.buddy.managed_frames(), "everything coalesces back (MODEL 7)");
    }
}

/// Decodes `data` into operations and runs them against the model.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = crate::decode_ops(data, 400);
    let mut h = Harness::new();
    for op in &ops {
        h.step(op);
    }
    h.finish();
}
