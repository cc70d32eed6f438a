//! Regions: contiguous runs of managed frames in one zone, each with its
//! metadata (two list links and a state byte per frame, a mobility byte per
//! pageblock) carved from the first frames of the run itself.

use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

use crate::state;

/// Most regions one allocator manages (memory map pieces plus hot-adds).
pub const MAX_REGIONS: usize = 64;

/// A run of managed frames `[start, end)` in one zone.
pub(crate) struct Region<'a> {
    pub start: u64,
    pub end: u64,
    pub zone: usize,
    pb_order: u32,
    /// `[next, prev]` per frame, for the free lists (`free_list`).
    links: &'a [AtomicU32],
    states: &'a [AtomicU8],
    pageblocks: &'a [AtomicU8],
}

/// Frame numbers the allocator manages are below this (the free lists link
/// frames with 32-bit numbers, `u32::MAX` meaning none): physical memory
/// up to 16 TiB less one frame.
pub const MAX_FRAMES: u64 = u32::MAX as u64;

/// Bytes of list links per frame.
pub(crate) const LINK_BYTES: u64 = 8;

/// Bytes of metadata for `frames` frames starting at `start`: the links
/// (first, so that they are aligned), then a state byte per frame and a
/// mobility byte per pageblock.
pub(crate) fn metadata_bytes(start: u64, frames: u64, pb_order: u32) -> u64 {
    let first_pb = start >> pb_order;
    let last_pb = (start + frames).saturating_sub(1) >> pb_order;
    frames * LINK_BYTES + frames + (last_pb - first_pb + 1)
}

impl<'a> Region<'a> {
    /// A region over `[start, end)` whose links live in `links` (two words
    /// per frame, written before they are read) and whose other metadata
    /// lives in `meta` (zeroed: every frame a tail, every pageblock
    /// unmovable until set).
    pub fn new(start: u64, end: u64, zone: usize, pb_order: u32, links: &'a [AtomicU32], meta: &'a [AtomicU8]) -> Self {
        let frames = (end - start) as usize;
        let (states, pageblocks) = meta.split_at(frames);
        debug_assert!(links.len() >= 2 * frames);
        debug_assert!(pageblocks.len() as u64 > ((end - 1) >> pb_order) - (start >> pb_order));
        Region { start, end, zone, pb_order, links, states, pageblocks }
    }

    /// Link word `slot` (0: next, 1: prev) of `frame`.
    #[inline]
    pub fn link(&self, frame: u64, slot: usize) -> u32 {
        self.links[2 * (frame - self.start) as usize + slot].load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set_link(&self, frame: u64, slot: usize, value: u32) {
        self.links[2 * (frame - self.start) as usize + slot].store(value, Ordering::Relaxed);
    }

    #[inline]
    pub fn contains(&self, frame: u64) -> bool {
        frame.wrapping_sub(self.start) < self.end - self.start
    }

    /// Whether the naturally aligned block of `order` at `frame` lies inside.
    pub fn contains_block(&self, frame: u64, order: u8) -> bool {
        frame >= self.start && frame.checked_add(1 << order).is_some_and(|e| e <= self.end)
    }

    #[inline]
    pub fn state(&self, frame: u64) -> u8 {
        self.states[(frame - self.start) as usize].load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set_state(&self, frame: u64, value: u8) {
        self.states[(frame - self.start) as usize].store(value, Ordering::Relaxed);
    }

    /// Atomically replaces `old` by `new`; returns the value found otherwise.
    #[inline]
    pub fn swap_state(&self, frame: u64, old: u8, new: u8) -> Result<(), u8> {
        self.states[(frame - self.start) as usize]
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }

    #[inline]
    fn pageblock_index(&self, frame: u64) -> usize {
        ((frame >> self.pb_order) - (self.start >> self.pb_order)) as usize
    }

    #[inline]
    pub fn pageblock_mobility(&self, frame: u64) -> usize {
        self.pageblocks[self.pageblock_index(frame)].load(Ordering::Relaxed) as usize
    }

    pub fn set_pageblock_mobility(&self, frame: u64, mobility: usize) {
        self.pageblocks[self.pageblock_index(frame)].store(mobility as u8, Ordering::Relaxed);
    }

    /// Calls `f(head, state byte)` for every block whose head lies in
    /// `[from, to)`, walking block by block (`from` must be a head).
    pub fn for_each_block(&self, from: u64, to: u64, mut f: impl FnMut(u64, u8)) {
        let mut frame = from.max(self.start);
        let to = to.min(self.end);
        while frame < to {
            let b = self.state(frame);
            f(frame, b);
            frame += 1 << state::head_order(b);
        }
    }
}

/// The regions of one allocator. Regions are only ever added; readers find
/// them without locking.
pub(crate) struct RegionTable<'a> {
    slots: [spin::Once<Region<'a>>; MAX_REGIONS],
    count: AtomicUsize,
}

impl<'a> RegionTable<'a> {
    pub const fn new() -> Self {
        RegionTable { slots: [const { spin::Once::new() }; MAX_REGIONS], count: AtomicUsize::new(0) }
    }

    /// Publishes a region. The caller serialises additions.
    pub fn push(&self, region: Region<'a>) -> Result<&Region<'a>, Region<'a>> {
        let n = self.count.load(Ordering::Acquire);
        if n == MAX_REGIONS {
            return Err(region);
        }
        let r = self.slots[n].call_once(|| region);
        self.count.store(n + 1, Ordering::Release);
        Ok(r)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Region<'a>> {
        let n = self.count.load(Ordering::Acquire);
        self.slots[..n].iter().filter_map(spin::Once::get)
    }

    /// The region holding `frame`.
    #[inline]
    pub fn find(&self, frame: u64) -> Option<&Region<'a>> {
        let n = self.count.load(Ordering::Acquire);
        for slot in &self.slots[..n] {
            match slot.get() {
                Some(r) if r.contains(frame) => return Some(r),
                _ => {}
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// The region of a frame on a list.
    #[inline]
    pub fn of(&self, frame: u64) -> &Region<'a> {
        self.find(frame).unwrap_or_else(|| unmanaged(frame))
    }

    /// The region of `frame`, a list neighbour of a frame of `r`: `r` itself
    /// if it holds it (lists mostly link frames of one region), else looked
    /// up.
    #[inline]
    pub fn near<'t>(&'t self, r: &'t Region<'t>, frame: u64) -> &'t Region<'t> {
        if r.contains(frame) {
            r
        } else {
            self.of(frame)
        }
    }
}

/// Frames on lists belong to a region; kept out of line so the list paths
/// stay small.
#[cold]
#[inline(never)]
fn unmanaged(frame: u64) -> ! {
    panic!("frame {frame:#x} on a free list belongs to no region")
}
