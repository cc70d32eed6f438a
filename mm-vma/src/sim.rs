//! A host simulation of the machinery around address spaces (feature
//! `std`): simulated RAM and frames from the mm-types test kit, a swap
//! device with a swap cache kept in memory, a pager serving objects whose
//! bytes are a known pattern, and a TLB hook that counts flushes. Tests,
//! the fuzz model and integrators' host simulations use it.
//!
//! ```
//! use mm_vma::sim::SimWorld;
//! use mm_vma::{Access, MapRequest, Protection};
//!
//! let world = SimWorld::new(4 << 20);
//! let mut space = world.space();
//! let a = space.mmap(MapRequest::anonymous(8192, Protection::READ | Protection::WRITE)).unwrap();
//! space.write_user(a + 10, b"hello").unwrap();
//! // Swap the page out (`a` is page aligned: this is the frame's start)
//! // and fault it back in.
//! let frame = space.resolve(a, Access::Read).unwrap();
//! world.swap.swap_out(frame, &mut [&mut space]).unwrap();
//! let mut buf = [0u8; 5];
//! space.read_user(a + 10, &mut buf).unwrap();
//! assert_eq!(&buf, b"hello");
//! assert_eq!(world.mm.fault_stats().swap_in, 1);
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::vec::Vec;

use mm_paging::{FlushBatch, X86_64};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, FrameBlock, FrameNumber, FrameProvider, Order, PhysAddr, PhysMemory, SwapSlot, PAGE_SIZE};

use crate::mm::{HookError, Hooks, MmContext, Pager, SpaceId, SpaceTlb, SwapSlots};
use crate::space::{AddressSpace, Layout, SpaceError};

/// The frame provider of the simulation.
pub type SimFrames = Arc<RefFrameProvider>;
/// The shared state of the simulation.
pub type SimMm = MmContext<X86_64, SimPhysMemory, SimFrames>;
/// An address space of the simulation.
pub type SimSpace = AddressSpace<X86_64, SimPhysMemory, SimFrames>;

fn block(frame: PhysAddr) -> FrameBlock {
    FrameBlock::new(FrameNumber::containing(frame), Order::ZERO).expect("a frame is a valid block")
}

fn read_page(mem: &SimPhysMemory, frame: PhysAddr) -> Vec<u8> {
    let mut data = std::vec![0u8; PAGE_SIZE];
    // SAFETY: the frame is mapped read-only or unmapped everywhere while reclaim copies it (its
    // mappers were unmapped first), so nobody writes it.
    unsafe { mem.read_bytes(frame, &mut data) }.expect("simulated RAM");
    data
}

struct Slot {
    data: Vec<u8>,
    users: u32,
    cached: Option<PhysAddr>,
}

/// A swap device in memory with a swap cache: a slot read back is cached
/// (pinned) while other page tables still name the slot, so they share one
/// frame (mapped copy-on-write) instead of reading it again.
pub struct SimSwap {
    mm: OnceLock<Weak<SimMm>>,
    slots: Mutex<BTreeMap<u64, Slot>>,
    next: AtomicU64,
    /// Reads fail with [`HookError::Io`] while set.
    pub fail_reads: AtomicBool,
    /// Pages read from the store (cache misses).
    pub reads: AtomicU64,
    /// Swap-outs of a cached page whose slot was trusted (the page clean).
    pub trusted: AtomicU64,
    /// Swap-outs of a cached page written again (the page dirty).
    pub rewrites: AtomicU64,
}

impl SimSwap {
    fn new() -> Self {
        SimSwap {
            mm: OnceLock::new(),
            slots: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            fail_reads: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            trusted: AtomicU64::new(0),
            rewrites: AtomicU64::new(0),
        }
    }

    fn mm(&self) -> Arc<SimMm> {
        self.mm.get().and_then(Weak::upgrade).expect("the world is alive")
    }

    /// Slots in use.
    pub fn slots_used(&self) -> usize {
        self.slots.lock().unwrap().len()
    }

    /// Swaps the anonymous page in `frame` out, as reclaim would: pins it,
    /// replaces every mapping (all of whose spaces must be in `spaces`) by
    /// its slot's entry (a new slot, or the one it still has in the swap
    /// cache), writes it there (a cached page only if it is dirty, mm-vma
    /// MODEL 24: its slot is trusted otherwise), and unpins it, which frees
    /// it unless the swap cache holds it. Refused (changing nothing) if a mapping is in a
    /// locked VMA, or the frame is not a mapped anonymous page.
    pub fn swap_out(&self, frame: PhysAddr, spaces: &mut [&mut SimSpace]) -> Result<SwapSlot, SpaceError> {
        let mm = self.mm();
        let maps = mm.mappings(frame);
        if maps.is_empty() || mm.kind_of(frame) != Some(mm_types::PageKind::Anon) {
            // Nothing maps it, or it is a pager's page: nothing to swap.
            return Err(SpaceError::NotEvictable);
        }
        for m in &maps {
            let s = spaces.iter().find(|s| s.id() == m.space).expect("every mapper is given");
            if !s.is_evictable(m.va) {
                return Err(SpaceError::NotEvictable);
            }
        }
        mm.pin(frame).expect("a mapped frame is tracked");
        // A page still in the swap cache keeps its slot (other page tables
        // name it): its new mappers join them, so all see one page.
        let cached = self.slots.lock().unwrap().iter().find(|(_, s)| s.cached == Some(frame)).map(|(&k, _)| k);
        let slot = match cached {
            Some(slot) => {
                self.slots.lock().unwrap().get_mut(&slot).expect("found").users += maps.len() as u32;
                slot
            }
            None => {
                let slot = self.next.fetch_add(1, Ordering::Relaxed);
                let s = Slot { data: Vec::new(), users: maps.len() as u32, cached: None };
                self.slots.lock().unwrap().insert(slot, s);
                slot
            }
        };
        let entry = SwapSlot::new(1, slot).expect("slot in range");
        // Each mapper's flush once its mappings are all gone, as reclaim
        // does for a batch: the dirty bits reach the page at the flush.
        for m in &maps {
            let s = spaces.iter_mut().find(|s| s.id() == m.space).expect("every mapper is given");
            s.evict_deferred(m.va, Some(entry)).expect("checked evictable");
        }
        for s in spaces.iter_mut() {
            s.flush_deferred();
        }
        // Written after every mapping is gone (no write can be missed), and
        // for a cached page only if a mapping just removed, or an earlier
        // one, had its dirty bit set.
        let dirty = mm.take_dirty(frame);
        if cached.is_none() || dirty {
            let data = read_page(mm.mem(), frame);
            self.slots.lock().unwrap().get_mut(&slot).expect("just added").data = data;
            if cached.is_some() {
                self.rewrites.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.trusted.fetch_add(1, Ordering::Relaxed);
        }
        mm.unpin(frame);
        Ok(entry)
    }
}

impl SimSwap {
    /// Drops from the swap cache every page nobody maps (reclaim taking
    /// cached pages back), writing a dirty one to its slot first (mm-vma
    /// MODEL 24); how many were dropped.
    pub fn drop_cached(&self) -> usize {
        let mm = self.mm();
        let mut dropped = Vec::new();
        {
            let mut slots = self.slots.lock().unwrap();
            for slot in slots.values_mut() {
                let Some(f) = slot.cached else { continue };
                if mm.map_count(f) != 0 {
                    continue;
                }
                if mm.take_dirty(f) {
                    slot.data = read_page(mm.mem(), f);
                    self.rewrites.fetch_add(1, Ordering::Relaxed);
                }
                slot.cached = None;
                dropped.push(f);
            }
        }
        for &f in &dropped {
            mm.unpin(f);
        }
        dropped.len()
    }

    /// Copies bytes of the page `entry` names, from offset `at`, into
    /// `buf`: from its cached frame if it has one, else from the slot (what
    /// a fault would map; for models that check without faulting).
    pub fn peek(&self, entry: SwapSlot, at: usize, buf: &mut [u8]) {
        let slots = self.slots.lock().unwrap();
        let slot = slots.get(&entry.offset()).expect("a live slot");
        match slot.cached {
            Some(f) => {
                assert!(at + buf.len() <= PAGE_SIZE, "peeking past the page");
                let mm = self.mm();
                // SAFETY: simulated RAM; the cached frame is written only through mappings, and the
                // caller (a model between steps) runs nothing concurrently.
                unsafe { mm.mem().read_bytes(f + at as u64, buf) }.expect("simulated RAM");
            }
            None => buf.copy_from_slice(&slot.data[at..at + buf.len()]),
        }
    }
}

impl SwapSlots for SimSwap {
    fn swap_in(&self, entry: SwapSlot) -> Result<PhysAddr, HookError> {
        if self.fail_reads.load(Ordering::Relaxed) {
            return Err(HookError::Io);
        }
        let mm = self.mm();
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(&entry.offset()).expect("a live slot");
        if let Some(f) = slot.cached {
            return Ok(f);
        }
        let frame = mm.frames().allocate_frame(AllocFlags::MOVABLE).map_err(|_| HookError::OutOfMemory)?;
        // SAFETY: the frame was just allocated: nobody else reads or writes it.
        unsafe { mm.mem().write_bytes(frame, &slot.data) }.expect("simulated RAM");
        self.reads.fetch_add(1, Ordering::Relaxed);
        mm.pin_new(frame, mm_types::PageKind::Anon).expect("a frame just allocated is not the zero page");
        slot.cached = Some(frame);
        Ok(frame)
    }

    fn swapped_in(&self, entry: SwapSlot, frame: PhysAddr) {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(&entry.offset()).expect("a live slot");
        assert_eq!(slot.cached, Some(frame));
        slot.users -= 1;
        if slot.users == 0 {
            slots.remove(&entry.offset());
            drop(slots);
            self.mm().unpin(frame);
        }
    }

    fn duplicate(&self, entry: SwapSlot) -> Result<(), HookError> {
        self.slots.lock().unwrap().get_mut(&entry.offset()).expect("a live slot").users += 1;
        Ok(())
    }

    fn release(&self, entry: SwapSlot) {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(&entry.offset()).expect("a live slot");
        slot.users -= 1;
        if slot.users == 0 {
            let cached = slots.remove(&entry.offset()).expect("present").cached;
            drop(slots);
            if let Some(f) = cached {
                self.mm().unpin(f);
            }
        }
    }
}

/// A pager whose objects hold [`SimPager::byte`] at every offset; pages
/// are read in on first use and kept (a page cache) until the pager drops.
pub struct SimPager {
    mem: SimPhysMemory,
    frames: SimFrames,
    pages: Mutex<BTreeMap<(u32, u64), PhysAddr>>,
}

impl SimPager {
    /// The byte at `offset` of `object`.
    pub fn byte(object: u32, offset: u64) -> u8 {
        (offset / 4096).wrapping_mul(31).wrapping_add(u64::from(object) * 7).wrapping_add(offset % 251) as u8
    }

    /// Pages in the cache.
    pub fn cached(&self) -> usize {
        self.pages.lock().unwrap().len()
    }

    /// The cached frame of a page, if read in.
    pub fn frame(&self, object: u32, offset: u64) -> Option<PhysAddr> {
        self.pages.lock().unwrap().get(&(object, offset)).copied()
    }
}

impl Pager for SimPager {
    fn page(&self, object: u32, offset: u64) -> Result<PhysAddr, HookError> {
        let mut pages = self.pages.lock().unwrap();
        if let Some(&f) = pages.get(&(object, offset)) {
            return Ok(f);
        }
        let frame = self.frames.allocate_frame(AllocFlags::MOVABLE).map_err(|_| HookError::OutOfMemory)?;
        // `SimPager::byte` for each byte, with the remainder carried rather than divided out.
        let mut data = [0u8; PAGE_SIZE];
        let (mut at, mut rem) = (offset, offset % 251);
        for b in &mut data {
            *b = (at / 4096).wrapping_mul(31).wrapping_add(u64::from(object) * 7).wrapping_add(rem) as u8;
            at += 1;
            rem = if rem == 250 { 0 } else { rem + 1 };
        }
        // SAFETY: the frame was just allocated: nobody else reads or writes it.
        unsafe { self.mem.write_bytes(frame, &data) }.expect("simulated RAM");
        pages.insert((object, offset), frame);
        Ok(frame)
    }

    /// The pages it holds of the faulting page's 16-page block
    /// (fault-around).
    fn cached_around(&self, object: u32, offset: u64, f: &mut dyn FnMut(u64, PhysAddr)) {
        let block = offset / (16 * 4096) * (16 * 4096);
        for (&(_, off), &frame) in self.pages.lock().unwrap().range((object, block)..(object, block + 16 * 4096)) {
            f(off, frame);
        }
    }
}

impl Drop for SimPager {
    fn drop(&mut self) {
        for (_, f) in std::mem::take(&mut *self.pages.lock().unwrap()) {
            self.frames.free(block(f)).expect("the pager's frame");
        }
    }
}

/// Counts TLB flushes per address space.
#[derive(Default)]
pub struct CountingTlb {
    /// Flush calls.
    pub flushes: AtomicU64,
    /// Pages named by those calls (a full flush counts as 0).
    pub pages: AtomicU64,
    /// Full flushes.
    pub full: AtomicU64,
}

impl SpaceTlb for CountingTlb {
    fn flush(&self, _space: SpaceId, batch: FlushBatch) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        if batch.is_full_flush() {
            self.full.fetch_add(1, Ordering::Relaxed);
        }
        self.pages.fetch_add(batch.pages().count() as u64, Ordering::Relaxed);
    }
}

/// Simulated RAM, frames, hooks and the shared state, ready for address
/// spaces.
pub struct SimWorld {
    /// Simulated RAM.
    pub ram: SimPhysMemory,
    /// Its frames.
    pub frames: SimFrames,
    /// The shared state (its hooks are the three below).
    pub mm: Arc<SimMm>,
    /// The swap device.
    pub swap: Arc<SimSwap>,
    /// The pager.
    pub pager: Arc<SimPager>,
    /// The TLB hook.
    pub tlb: Arc<CountingTlb>,
}

impl SimWorld {
    /// A world with `bytes` of RAM (a multiple of 4 KiB).
    pub fn new(bytes: u64) -> Self {
        SimWorld::with_ram(SimPhysMemory::new(PhysAddr::new(0x10_0000).expect("valid"), bytes))
    }

    /// A world on existing simulated RAM (nothing relies on its contents:
    /// every page is zeroed or written before use).
    pub fn with_ram(ram: SimPhysMemory) -> Self {
        let frames: SimFrames = Arc::new(RefFrameProvider::new(&ram).with_max_order(Order::ZERO));
        let swap = Arc::new(SimSwap::new());
        let pager = Arc::new(SimPager { mem: ram.clone(), frames: frames.clone(), pages: Mutex::new(BTreeMap::new()) });
        let tlb = Arc::new(CountingTlb::default());
        let hooks = Hooks {
            pager: Some(pager.clone() as Arc<dyn Pager>),
            swap: Some(swap.clone() as Arc<dyn SwapSlots>),
            tlb: Some(tlb.clone() as Arc<dyn SpaceTlb>),
        };
        let mm =
            MmContext::new(X86_64::FOUR_LEVEL, ram.clone(), frames.clone(), hooks).expect("room for the zero page");
        assert!(swap.mm.set(Arc::downgrade(&mm)).is_ok(), "set once");
        SimWorld { ram, frames, mm, swap, pager, tlb }
    }

    /// A new empty address space with the x86-64 layout.
    pub fn space(&self) -> SimSpace {
        self.space_with(Layout::X86_64)
    }

    /// A new empty address space with `layout`.
    pub fn space_with(&self, layout: Layout) -> SimSpace {
        AddressSpace::new(&self.mm, layout).expect("room for a page-table root")
    }

    /// Free frames.
    pub fn free_frame_count(&self) -> u64 {
        self.frames.free_frame_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pager_pages_hold_their_objects_bytes() {
        let world = SimWorld::new(1 << 20);
        for (object, offset) in [(0, 0), (7, 4096 * 3), (u32::MAX, 4096 * 1000)] {
            let frame = world.pager.page(object, offset).unwrap();
            let mut got = [0u8; PAGE_SIZE];
            // SAFETY: the pager's frame; nothing else runs.
            unsafe { world.ram.read_bytes(frame, &mut got) }.unwrap();
            for (i, b) in (0..).zip(got) {
                assert_eq!(b, SimPager::byte(object, offset + i), "object {object}, byte {i} of offset {offset}");
            }
        }
    }
}
