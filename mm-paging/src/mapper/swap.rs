//! Swap entries: a page swapped out becomes an entry naming its slot, and
//! a swap-in turns the entry back into a mapping.

use core::sync::atomic::{AtomicU64, Ordering};

use mm_types::{FrameProvider, PageSize, PhysAddr, PhysMemory, SwapSlot, VirtAddr, PAGE_BYTES};

use super::walk::Descend;
use super::{Mapping, Node, PageTable};
use crate::arch::{level_index, PagingArch};
use crate::error::PagingError;
use crate::flags::MapFlags;
use crate::tlb::Flush;

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> PageTable<A, M, F> {
    /// Puts a swap entry at the 4 KiB page `va` (swap-out): replaces a
    /// present 4 KiB mapping (returned, with its flags, so the caller can
    /// free or keep the frame) or fills an empty slot, creating tables and
    /// splitting a huge page as needed. Fails with
    /// [`PagingError::AlreadyMapped`] if `va` already holds a swap entry.
    ///
    /// ```
    /// use mm_paging::{Lookup, MapFlags, PageTable, X86_64};
    /// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
    /// use mm_types::{PageSize, PhysAddr, SwapSlot, VirtAddr};
    ///
    /// let ram = SimPhysMemory::new(PhysAddr::new(0)?, 1 << 20);
    /// let frames = RefFrameProvider::new(&ram);
    /// let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames)?;
    /// let va = VirtAddr::new(0x40_0000)?;
    /// let user = MapFlags::USER | MapFlags::READ | MapFlags::WRITE;
    /// pt.map(va, PhysAddr::new(0x8_0000)?, PageSize::Size4KiB, user)?.ignore();
    ///
    /// // Swap-out: the entry now names slot 7 of area 0 and the mapping comes back.
    /// let slot = SwapSlot::new(0, 7).unwrap();
    /// let (old, flush) = pt.set_swap(va, slot)?;
    /// assert_eq!(old.map(|m| m.frame), Some(PhysAddr::new(0x8_0000)?));
    /// assert_eq!(pt.lookup(va)?, Lookup::Swapped(slot));
    /// // Swap-in into another frame gives the slot back.
    /// assert_eq!(pt.replace_swap(va, PhysAddr::new(0x9_0000)?, user)?, slot);
    /// # flush.ignore();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_swap(&mut self, va: VirtAddr, swap: SwapSlot) -> Result<(Option<Mapping>, Flush), PagingError> {
        self.check_owned_range(va, PAGE_BYTES)?;
        let levels = self.arch.levels();
        let root = self.root;
        let new = self.arch.swap_entry(swap);
        let old = self.planned(|w| {
            let mut node = Node::Real(root);
            // The entry pointing to `node`, which keeps its live-entry count
            // (none for the root).
            let mut above = None;
            for level in (2..=levels).rev() {
                let idx = level_index(va.as_u64(), level);
                let e = w.entry(node, level, idx);
                let child = w
                    .child(node, level, idx, e, Descend::CREATE_OR_SPLIT)
                    .ok_or(PagingError::AlreadyMapped { addr: va })?;
                if let (0, Some((n, i))) = (e, above) {
                    w.add_count(n, i, 1);
                }
                above = Some((node, idx));
                node = child;
            }
            let idx = level_index(va.as_u64(), 1);
            let e = w.entry(node, 1, idx);
            if e != 0 && !w.pt.arch.is_present(e) {
                return Err(PagingError::AlreadyMapped { addr: va });
            }
            // Exchanged, not stored: the dirty bit another CPU's MMU sets
            // after the read above belongs in the mapping returned.
            let e = w.exchange(node, 1, idx, new);
            if let (0, Some((n, i))) = (e, above) {
                w.add_count(n, i, 1);
            }
            Ok((e != 0).then(|| Mapping {
                va,
                frame: w.pt.arch.leaf_phys(e, 1),
                size: PageSize::Size4KiB,
                flags: w.pt.arch.leaf_flags(e, 1),
            }))
        })?;
        let flush = if old.is_some() { Flush::range(va, 1) } else { Flush::NONE };
        Ok((old, flush))
    }

    /// Replaces the swap entry at `va` by a mapping of `frame` (swap-in) and
    /// returns its slot. Fails with [`PagingError::NotMapped`] if `va`
    /// holds no swap entry.
    pub fn replace_swap(&mut self, va: VirtAddr, frame: PhysAddr, flags: MapFlags) -> Result<SwapSlot, PagingError> {
        let slot = self.leaf_slot_for(va, frame, flags)?;
        let e = slot.load(Ordering::Relaxed);
        let swap = self.arch.swap_of(e).ok_or(PagingError::NotMapped { addr: va })?;
        slot.store(self.arch.leaf(frame, flags, 1), Ordering::Relaxed);
        Ok(swap)
    }

    /// The level-1 slot of `va` for a new 4 KiB leaf of `frame` with
    /// `flags`, after checking all three.
    pub(super) fn leaf_slot_for(
        &self,
        va: VirtAddr,
        frame: PhysAddr,
        flags: MapFlags,
    ) -> Result<&AtomicU64, PagingError> {
        self.check_owned_range(va, PAGE_BYTES)?;
        if frame.as_u64() % PAGE_BYTES != 0 {
            return Err(PagingError::Misaligned { value: frame.as_u64(), align: PAGE_BYTES });
        }
        if !flags.contains(MapFlags::READ) {
            return Err(PagingError::InvalidFlags);
        }
        self.level1_slot(va).ok_or(PagingError::NotMapped { addr: va })
    }

    pub(super) fn level1_slot(&self, va: VirtAddr) -> Option<&AtomicU64> {
        self.level1_slot_and_above(va.as_u64()).ok().map(|(slot, _)| slot)
    }
}
