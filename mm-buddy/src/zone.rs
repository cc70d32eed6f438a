//! A zone's buddy lists and the buddy algorithm proper: take a block
//! (splitting larger ones, stealing from other mobilities when needed) and
//! free a block (coalescing with its buddy, XOR of the frame number, as far
//! as it goes).

#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use mm_types::sync::Mutex;

use crate::free_list::FreeList;
use crate::region::{Region, RegionTable};
use crate::state::{self, FrameState};

/// Mobility indexes (`mm_types::Mobility` order).
pub(crate) const UNMOVABLE: usize = 0;
pub(crate) const RECLAIMABLE: usize = 1;
pub(crate) const MOVABLE: usize = 2;
pub(crate) const MOBILITIES: usize = 3;

/// Largest configurable maximum order (4 GiB blocks).
pub const MAX_ORDER_LIMIT: u8 = 20;
pub(crate) const ORDERS: usize = MAX_ORDER_LIMIT as usize + 1;

/// Which other mobilities a request may steal from, in order of preference
/// (as Linux's fallback table: never take movable memory for unmovable data
/// before trying reclaimable).
const FALLBACK: [[usize; 2]; MOBILITIES] = [[RECLAIMABLE, MOVABLE], [UNMOVABLE, MOVABLE], [RECLAIMABLE, UNMOVABLE]];

/// Watermark indexes.
pub(crate) const WMARK_MIN: usize = 0;
pub(crate) const WMARK_LOW: usize = 1;
pub(crate) const WMARK_HIGH: usize = 2;

/// Everything the algorithm needs besides the lists.
pub(crate) struct Ctx<'r, 'a> {
    pub regions: &'r RegionTable<'a>,
    pub max_order: u8,
    pub pb_order: u8,
}

impl<'a> Ctx<'_, 'a> {
    fn region(&self, frame: u64) -> &Region<'a> {
        self.regions.find(frame).expect("frames on buddy lists belong to a region")
    }
}

/// The free lists of one zone, by order and mobility.
pub(crate) struct FreeArea {
    pub lists: [[FreeList; MOBILITIES]; ORDERS],
    /// Pageblocks that changed mobility through fallback stealing.
    pub claimed_pageblocks: u64,
}

/// One zone.
pub(crate) struct Zone {
    pub area: Mutex<FreeArea>,
    /// Frames on the buddy lists (per-CPU lists not included).
    pub free: AtomicU64,
    pub managed: AtomicU64,
    /// min, low, high.
    pub watermarks: [AtomicU64; 3],
    /// `reserve[j]`: frames kept back from allocations whose highest allowed
    /// zone is `j` (Linux's lowmem_reserve).
    pub reserve: [AtomicU64; 3],
}

impl Zone {
    pub fn new() -> Self {
        Zone {
            area: Mutex::new(FreeArea { lists: [[FreeList::EMPTY; MOBILITIES]; ORDERS], claimed_pageblocks: 0 }),
            free: AtomicU64::new(0),
            managed: AtomicU64::new(0),
            watermarks: [const { AtomicU64::new(0) }; 3],
            reserve: [const { AtomicU64::new(0) }; 3],
        }
    }

    /// Frames available above `threshold` right now.
    pub fn headroom(&self, threshold: u64) -> u64 {
        self.free.load(Ordering::Relaxed).saturating_sub(threshold)
    }
}

impl FreeArea {
    fn add(&mut self, ctx: &Ctx<'_, '_>, r: &Region<'_>, head: u64, order: u8, mob: usize, back: bool) {
        r.set_state(head, state::free(order, mob));
        let list = &mut self.lists[order as usize][mob];
        if back {
            list.push_back(ctx.regions, r, head);
        } else {
            list.push_front(ctx.regions, r, head);
        }
    }

    /// Adds `[start, end)` of region `r` as free blocks, each as large as
    /// alignment and `max_order` allow, with their pageblock's mobility.
    /// The range must not merge with anything outside it (callers add fresh
    /// memory or the remainder of a block they split).
    pub fn add_range(&mut self, ctx: &Ctx<'_, '_>, r: &Region<'_>, start: u64, end: u64) {
        for (head, order) in aligned_blocks(start, end, ctx.max_order) {
            let mob = r.pageblock_mobility(head);
            self.add(ctx, r, head, order, mob, false);
        }
    }

    /// Unlinks the free block at `head` (its byte says which list).
    pub fn unlink(&mut self, ctx: &Ctx<'_, '_>, r: &Region<'_>, head: u64) -> u8 {
        let FrameState::Free { order, mobility } = state::decode(r.state(head)) else {
            unreachable!("unlinking a block that is not free")
        };
        self.lists[order as usize][mobility].remove(ctx.regions, r, head);
        r.set_state(head, state::TAIL);
        order
    }

    /// Takes a free block of exactly `order` for `mob`, or `None`. The head's
    /// byte is left for the caller to set.
    pub fn take(&mut self, ctx: &Ctx<'_, '_>, order: u8, mob: usize) -> Option<u64> {
        for o in order..=ctx.max_order {
            if let Some(head) = self.lists[o as usize][mob].first() {
                let r = ctx.region(head);
                self.lists[o as usize][mob].remove(ctx.regions, r, head);
                self.split(ctx, r, head, o, order, mob);
                return Some(head);
            }
        }
        self.steal(ctx, order, mob)
    }

    /// Takes a free run for `mob` of at least `order` and at most `cap`
    /// (splitting a larger block down to `cap`), preferring the smallest
    /// block available as [`take`](Self::take) does. Returns the head and the
    /// run's order; the caller hands out its `order`-sized pieces (per-CPU
    /// refill), which saves a buddy-list operation per piece.
    pub fn take_run(&mut self, ctx: &Ctx<'_, '_>, order: u8, cap: u8, mob: usize) -> Option<(u64, u8)> {
        for o in order..=ctx.max_order {
            if let Some(head) = self.lists[o as usize][mob].first() {
                let r = ctx.region(head);
                self.lists[o as usize][mob].remove(ctx.regions, r, head);
                let keep = o.min(cap);
                self.split(ctx, r, head, o, keep, mob);
                return Some((head, keep));
            }
        }
        self.steal(ctx, order, mob).map(|head| (head, order))
    }

    /// Splits the block `head` of order `high` down to `low`, returning the
    /// upper halves to the lists of `mob`.
    fn split(&mut self, ctx: &Ctx<'_, '_>, r: &Region<'_>, head: u64, high: u8, low: u8, mob: usize) {
        let mut o = high;
        while o > low {
            o -= 1;
            self.add(ctx, r, head + (1 << o), o, mob, false);
        }
    }

    /// Fallback: take the largest free block of another mobility, claiming
    /// its pageblock(s) for `mob` when that keeps mobilities apart (whole
    /// pageblocks, or pageblocks at least half free).
    fn steal(&mut self, ctx: &Ctx<'_, '_>, order: u8, mob: usize) -> Option<u64> {
        for o in (order..=ctx.max_order).rev() {
            for &from in &FALLBACK[mob] {
                let Some(head) = self.lists[o as usize][from].first() else { continue };
                let r = ctx.region(head);
                let claimed = if o >= ctx.pb_order {
                    let mut pb = head;
                    while pb < head + (1 << o) {
                        r.set_pageblock_mobility(pb, mob);
                        self.claimed_pageblocks += 1;
                        pb += 1 << ctx.pb_order;
                    }
                    true
                } else if o >= ctx.pb_order / 2 || mob != MOVABLE {
                    self.claim_pageblock(ctx, r, head, mob)
                } else {
                    false
                };
                // The claim may have moved the block to `mob`'s list.
                let FrameState::Free { mobility: now, .. } = state::decode(r.state(head)) else { unreachable!() };
                self.lists[o as usize][now].remove(ctx.regions, r, head);
                self.split(ctx, r, head, o, order, if claimed { mob } else { from });
                return Some(head);
            }
        }
        None
    }

    /// Gives the pageblock holding `frame` to `mob` if at least half of it is
    /// free, moving its free blocks to `mob`'s lists.
    fn claim_pageblock(&mut self, ctx: &Ctx<'_, '_>, r: &Region<'_>, frame: u64, mob: usize) -> bool {
        let pb_start = frame & !((1u64 << ctx.pb_order) - 1);
        let from = pb_start.max(r.start);
        let to = (pb_start + (1 << ctx.pb_order)).min(r.end);
        let mut free = 0;
        r.for_each_block(from, to, |_, b| {
            if let FrameState::Free { order, .. } = state::decode(b) {
                free += 1u64 << order;
            }
        });
        if free * 2 < to - from {
            return false;
        }
        r.set_pageblock_mobility(from, mob);
        self.claimed_pageblocks += 1;
        r.for_each_block(from, to, |head, b| {
            if let FrameState::Free { order, mobility } = state::decode(b) {
                if mobility != mob {
                    self.lists[order as usize][mobility].remove(ctx.regions, r, head);
                    self.add(ctx, r, head, order, mob, false);
                }
            }
        });
        true
    }

    /// Frees the block `head` of `order` (whose byte the caller has already
    /// claimed), merging with free buddies. Returns the merged order.
    pub fn free(&mut self, ctx: &Ctx<'_, '_>, r: &Region<'_>, head: u64, order: u8) -> u8 {
        let mut head = head;
        let mut o = order;
        while o < ctx.max_order {
            let buddy = head ^ (1 << o);
            if !r.contains_block(buddy, o) {
                break;
            }
            match state::decode(r.state(buddy)) {
                FrameState::Free { order: bo, mobility } if bo == o => {
                    self.lists[o as usize][mobility].remove(ctx.regions, r, buddy);
                    r.set_state(buddy, state::TAIL);
                }
                _ => break,
            }
            r.set_state(head, state::TAIL);
            head &= !(1 << o);
            o += 1;
        }
        let mob = r.pageblock_mobility(head);
        if o > ctx.pb_order {
            // A block spanning several pageblocks is wholly free: give them
            // one mobility so that a later split stays consistent.
            let mut pb = head + (1 << ctx.pb_order);
            while pb < head + (1 << o) {
                r.set_pageblock_mobility(pb, mob);
                pb += 1 << ctx.pb_order;
            }
        }
        // If the buddy of our parent is free, our own buddy's return would
        // merge twice: keep this block at the back so it is not handed out
        // first.
        let back = o + 1 < ctx.max_order && {
            let parent = head & !((1u64 << (o + 1)) - 1);
            let uncle = parent ^ (1 << (o + 1));
            r.contains_block(uncle, o + 1)
                && matches!(state::decode(r.state(uncle)), FrameState::Free { order, .. } if order == o + 1)
        };
        self.add(ctx, r, head, o, mob, back);
        o
    }

    /// Free blocks per order, all mobilities.
    pub fn counts(&self) -> [u64; ORDERS] {
        core::array::from_fn(|o| self.lists[o].iter().map(FreeList::len).sum())
    }
}

/// The decomposition of `[start, end)` into naturally aligned blocks, each as
/// large as possible up to `max_order`.
pub(crate) fn aligned_blocks(start: u64, end: u64, max_order: u8) -> impl Iterator<Item = (u64, u8)> {
    let mut at = start;
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let align = if at == 0 { max_order as u32 } else { at.trailing_zeros().min(max_order as u32) };
        let fit = 63 - (end - at).leading_zeros();
        let order = align.min(fit) as u8;
        let head = at;
        at += 1 << order;
        Some((head, order))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_decomposition() {
        let v: std::vec::Vec<(u64, u8)> = aligned_blocks(3, 21, 3).collect();
        assert_eq!(v, [(3, 0), (4, 2), (8, 3), (16, 2), (20, 0)]);
        assert_eq!(aligned_blocks(0, 1 << 12, 10).count(), 4);
        assert_eq!(aligned_blocks(5, 5, 10).count(), 0);
    }
}
