//! The host simulation: the same [`Machine`] on the host test kit's
//! simulated RAM, frame provider and in-memory swap store, driven through
//! mm-vma's `read_user`/`write_user` (which fault exactly as the kernel's
//! page-fault handler does), so the scenarios run under `cargo test`,
//! miri and fuzzing.

use std::boxed::Box;
use std::sync::Arc;
use std::vec::Vec;

use mm_pagecache::CacheConfig;
use mm_paging::{Entry, Lookup, X86_64};
use mm_reclaim::{Level, Mode, Reclaim, WTinyLfu};
use mm_swap::zswap::{Compressed, ZswapConfig};
use mm_swap::{Swap, SwapConfig};
use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
use mm_types::{PhysAddr, PhysMemory, VirtAddr};
use mm_vma::{Layout, MmContext, SpaceId};

use crate::scenario::{anon_rw, Touch, TouchError};
use crate::{Figures, Machine, PageIds, TaskError};

/// The simulated machine.
pub type SimMachine = Machine<X86_64, SimPhysMemory, RefFrameProvider, WTinyLfu>;

/// What the simulated machine has.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// RAM in bytes.
    pub ram: u64,
    /// Swap slots (0: no swap).
    pub swap_slots: u64,
    /// A second, lower-priority swap area of this many slots (0: none);
    /// area 1 if there is a first one.
    pub second_area: u64,
    /// A compressed tier of this many bytes in front of the swap store.
    pub zswap: Option<usize>,
}

/// A simulated machine and the handles tests look at.
pub struct Sim {
    /// The machine.
    pub machine: SimMachine,
    /// Its RAM.
    pub ram: SimPhysMemory,
    /// The swap store (when there is swap).
    pub store: Option<Arc<MemStore>>,
    /// The compressed tier (when configured).
    pub zswap: Option<Arc<Compressed<Arc<MemStore>>>>,
    /// Frames in all.
    pub total: u64,
    /// The area number of `store` when it is an area itself (no
    /// compressed tier in front): [`Sim::peek_pages`] can read it directly.
    plain_area: Option<u8>,
}

impl Sim {
    /// Builds the machine.
    pub fn new(cfg: SimConfig) -> Sim {
        let base = PhysAddr::new(0x10_0000).expect("aligned");
        let ram = SimPhysMemory::new(base, cfg.ram);
        let frames = RefFrameProvider::new(&ram);
        let total = frames.free_frame_count();
        let ids = PageIds { base, frames: (cfg.ram / 4096) as u32 };
        let swap = Arc::new(Swap::new(SwapConfig { cpus: 1, readahead: 3 }));
        let (mut store, mut zswap, mut plain_area) = (None, None, None);
        if cfg.swap_slots > 0 {
            // A disk: runs of consecutive slots go in one request.
            let s = Arc::new(MemStore::new(cfg.swap_slots).with_max_run(8));
            store = Some(s.clone());
            match cfg.zswap {
                Some(pool) => {
                    let z = Arc::new(Compressed::new(s, ZswapConfig { pool_limit: pool, ..ZswapConfig::default() }));
                    zswap = Some(z.clone());
                    swap.add_area(Box::new(z), 0).expect("one area");
                }
                None => {
                    plain_area = Some(swap.add_area(Box::new(s), 0).expect("one area"));
                }
            }
        }
        if cfg.second_area > 0 {
            swap.add_area(Box::new(MemStore::new(cfg.second_area)), -1).expect("two areas");
        }
        let n = ids.frames as usize;
        let reclaim = Reclaim::new(
            mm_reclaim::default_policy(n, n, Mode::AccessedBits),
            mm_reclaim::default_policy(n, n, Mode::AccessedBits),
            n,
        );
        let cache = CacheConfig::for_memory(total);
        let machine = Machine::new(frames, ids, swap, reclaim, Layout::X86_64, ram.clone(), cache, |f, hooks| {
            MmContext::new(X86_64::FOUR_LEVEL, ram.clone(), f, hooks)
        })
        .expect("room for the zero page");
        // Weakly: the closure lives in the frames it looks at.
        let inner = Arc::downgrade(&machine.frames.0);
        machine.frames.set_below_min(Box::new(move || {
            inner.upgrade().is_some_and(|f| f.inner().free_frame_count() < min_free(total))
        }));
        Sim { machine, ram, store, zswap, total, plain_area }
    }

    /// Free frames now.
    pub fn free(&self) -> u64 {
        self.machine.frames.inner().free_frame_count()
    }

    /// The watermarks: min 1/64 of RAM (at least 8 frames), low twice
    /// that, high four times.
    pub fn level(&self) -> Level {
        level(self.free(), self.total)
    }

    /// The figures now.
    pub fn figures(&self) -> Figures {
        self.machine.figures(self.free())
    }

    /// `n` new tasks.
    pub fn spawn(&self, n: usize) -> Vec<SpaceId> {
        (0..n).map(|_| self.machine.spawn().expect("room for a page-table root")).collect()
    }

    /// The 8 bytes task `task` would read at `addr`, found without a
    /// fault and without changing anything: in the frame its page table
    /// maps, else in the swap cache, else in the swap slot (read and
    /// checked against its checksum). `Ok(None)`: nothing mapped or swapped
    /// there (the page reads as zero once faulted). Models compare every
    /// mapper's view after every step with it.
    pub fn peek(&self, task: SpaceId, addr: VirtAddr) -> Result<Option<u64>, PeekError> {
        let s = self.machine.tasks.get(task).ok_or(PeekError::Gone)?;
        let lookup = s.lock().page_table().lookup(addr).map_err(|_| PeekError::NotUser)?;
        let addr = addr.as_u64();
        let found = match lookup {
            Lookup::Unmapped => return Ok(None),
            Lookup::Mapped(t) => Found::Frame(t.phys.as_u64().wrapping_sub(addr)),
            Lookup::Swapped(slot) => Found::Slot(slot),
        };
        self.value_at(found, addr, false).map(Some)
    }

    /// What `pages` pages from `base` of `task` hold, as [`Sim::peek`]
    /// would see each one's first 8 bytes, into `out` (cleared first; one
    /// entry a page), with one walk of the page table. For a model that
    /// checks after every step, `stored` reads a page in a slot of the
    /// plain swap store (no compressed tier in front) as its 8 bytes there,
    /// without reading the whole slot and checking its checksum: every
    /// swap-in still checks it, and so does a model's whole-state check
    /// with `stored` false.
    pub fn peek_pages(
        &self,
        task: SpaceId,
        base: VirtAddr,
        pages: u64,
        stored: bool,
        out: &mut Vec<Option<u64>>,
    ) -> Result<(), PeekError> {
        out.clear();
        out.resize(usize::try_from(pages).map_err(|_| PeekError::NotUser)?, None);
        let s = self.machine.tasks.get(task).ok_or(PeekError::Gone)?;
        let len = pages.checked_mul(4096).ok_or(PeekError::NotUser)?;
        // The entries' bounds are compared as raw values.
        let lo = base.as_u64();
        let mut failed = None;
        let space = s.lock();
        space
            .page_table()
            .for_each_entry(base, len, |e| {
                let (start, end, found) = match e {
                    Entry::Page(m) => {
                        let start = m.va.as_u64();
                        (start, start + m.size.bytes(), Found::Frame(m.frame.as_u64().wrapping_sub(start)))
                    }
                    Entry::Swap { va, slot } => (va.as_u64(), va.as_u64() + 4096, Found::Slot(slot)),
                };
                let first = start.max(lo);
                let last = end.min(lo + len);
                for addr in (first..last).step_by(4096) {
                    let slot = &mut out[((addr - lo) / 4096) as usize];
                    match self.value_at(found, addr, stored) {
                        Ok(v) => *slot = Some(v),
                        Err(err) => failed = failed.or(Some(err)),
                    }
                }
            })
            .map_err(|_| PeekError::NotUser)?;
        failed.map_or(Ok(()), Err)
    }

    /// The 8 bytes at `addr` in what a page-table entry holds: its frame,
    /// else the page in the swap cache, else the slot.
    fn value_at(&self, found: Found, addr: u64, stored: bool) -> Result<u64, PeekError> {
        let phys = match found {
            Found::Frame(delta) => addr.wrapping_add(delta),
            Found::Slot(slot) => {
                let swap = self.machine.device.swap();
                let off = (addr % 4096) as usize;
                match swap.lookup(slot) {
                    Some(f) => f.as_u64() + off as u64,
                    None => {
                        if let (true, Some(store)) = (stored && self.plain_area == Some(slot.area()), &self.store) {
                            return Ok(store.peek_word(slot.offset(), off));
                        }
                        return read_word(swap, slot, off);
                    }
                }
            }
        };
        let mut b = [0u8; 8];
        // SAFETY: an address of the simulated RAM; nothing runs concurrently with the model that would write it.
        unsafe { self.ram.read_bytes(PhysAddr::new_truncate(phys), &mut b) }.map_err(|_| PeekError::NotUser)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// The 8 bytes at `off` of `slot`, read whole and checked against its
/// checksum. Out of line: its page-sized buffer would otherwise make every
/// [`Sim::value_at`] call set up (and under AddressSanitizer, poison) a
/// 4 KiB stack frame, though most calls find a frame.
#[inline(never)]
fn read_word(swap: &mm_swap::Swap, slot: mm_types::SwapSlot, off: usize) -> Result<u64, PeekError> {
    let mut page = [0u8; 4096];
    swap.read_slot(slot, &mut page).map_err(PeekError::Swap)?;
    let b: [u8; 8] = page[off..off + 8].try_into().expect("8 bytes");
    Ok(u64::from_le_bytes(b))
}

/// Where a page-table entry's page is: a frame (as the difference between
/// physical and virtual addresses, which holds across a huge page), or a
/// swap entry.
#[derive(Clone, Copy)]
enum Found {
    Frame(u64),
    Slot(mm_types::SwapSlot),
}

/// Why [`Sim::peek`] found no page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeekError {
    /// No such task.
    Gone,
    /// Not a user address of the simulated RAM.
    NotUser,
    /// The slot could not be read back.
    Swap(mm_swap::SwapError),
}

/// Frames kept for page tables and the kernel: movable allocations fail
/// below this.
fn min_free(total: u64) -> u64 {
    (total / 64).max(8)
}

fn level(free: u64, total: u64) -> Level {
    let min = min_free(total);
    Level { free, min, low: 2 * min, high: 4 * min }
}

fn touch_error(e: TaskError) -> TouchError {
    match e {
        TaskError::OutOfMemory => TouchError::OutOfMemory,
        TaskError::Gone => TouchError::Gone,
        TaskError::Fault(_) => TouchError::Fault,
    }
}

impl Touch for Sim {
    fn write(&mut self, task: SpaceId, addr: VirtAddr, value: u64) -> Result<(), TouchError> {
        self.machine.with_task(task, |s| s.write_user(addr, &value.to_le_bytes())).map_err(touch_error)
    }

    fn read(&mut self, task: SpaceId, addr: VirtAddr) -> Result<u64, TouchError> {
        let mut b = [0u8; 8];
        self.machine.with_task(task, |s| s.read_user(addr, &mut b)).map_err(touch_error)?;
        Ok(u64::from_le_bytes(b))
    }

    fn map(&mut self, task: SpaceId, len: u64) -> Result<VirtAddr, TouchError> {
        let s = self.machine.tasks.get(task).ok_or(TouchError::Gone)?;
        let r = s.lock().mmap(anon_rw(len));
        r.map_err(|_| TouchError::Fault)
    }

    fn tick(&mut self) {
        let total = self.total;
        let frames = &self.machine.frames;
        self.machine.background(&mut || level(frames.inner().free_frame_count(), total));
    }

    fn oom(&mut self, _task: SpaceId) -> Option<SpaceId> {
        self.machine.oom_kill(self.total)
    }
}
