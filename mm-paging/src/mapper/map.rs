//! Mapping: single pages, ranges (huge pages where they fit) and
//! scattered frames, each planned, preallocated, then applied.

use core::sync::atomic::{AtomicU64, Ordering};

use mm_types::{FrameProvider, PageSize, PhysAddr, PhysMemory, VirtAddr, PAGE_BYTES};

use super::walk::{Descend, Walker};
use super::{slot_end_of_table, slots, Node, PageTable, Slot, Source};
use crate::arch::{level_index, level_span, PagingArch};
use crate::error::PagingError;
use crate::flags::{HugePages, MapFlags};
use crate::tlb::Flush;

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> PageTable<A, M, F> {
    /// Maps `len` bytes at `va` to physical memory at `phys` with `flags`,
    /// using 2 MiB and 1 GiB pages (as `huge` allows) wherever the virtual
    /// and physical addresses are aligned for them and the range covers
    /// them. Fails with [`PagingError::AlreadyMapped`] if any page of the
    /// range is mapped or holds a swap entry, leaving everything unchanged.
    ///
    /// New mappings need no TLB flush; the returned record is empty unless
    /// the architecture caches non-present entries.
    pub fn map_range(
        &mut self,
        va: VirtAddr,
        phys: PhysAddr,
        len: u64,
        flags: MapFlags,
        huge: HugePages,
    ) -> Result<Flush, PagingError> {
        let end = self.check_owned_range(va, len)?;
        if phys.as_u64() % PAGE_BYTES != 0 {
            return Err(PagingError::Misaligned { value: phys.as_u64(), align: PAGE_BYTES });
        }
        phys.checked_add(len - 1).ok_or(mm_types::AddrError::Overflow)?;
        if !flags.contains(MapFlags::READ) {
            return Err(PagingError::InvalidFlags);
        }
        let levels = self.arch.levels();
        let root = self.root;
        let op = MapOp { src: Source::Linear(phys.as_u64().wrapping_sub(va.as_u64())), flags, huge };
        self.planned(|w| w.map_walk(Node::Real(root), levels, va.as_u64(), end, &op).map(|_| ()))?;
        Ok(Flush::NONE)
    }

    /// Maps the 4 KiB frames `frames` at consecutive pages from `va` with
    /// `flags`, in one walk (vmalloc and vmap map scattered frames this
    /// way). Fails with [`PagingError::AlreadyMapped`] if any page is mapped
    /// or holds a swap entry, and with [`PagingError::Misaligned`] for a
    /// frame address that is not 4 KiB aligned, leaving everything unchanged.
    pub fn map_frames(&mut self, va: VirtAddr, frames: &[PhysAddr], flags: MapFlags) -> Result<Flush, PagingError> {
        let len = (frames.len() as u64).checked_mul(PAGE_BYTES).ok_or(mm_types::AddrError::Overflow)?;
        let end = self.check_owned_range(va, len)?;
        if let Some(f) = frames.iter().find(|f| f.as_u64() % PAGE_BYTES != 0) {
            return Err(PagingError::Misaligned { value: f.as_u64(), align: PAGE_BYTES });
        }
        if !flags.contains(MapFlags::READ) {
            return Err(PagingError::InvalidFlags);
        }
        let levels = self.arch.levels();
        let root = self.root;
        let op = MapOp { src: Source::Frames { base: va.as_u64(), frames }, flags, huge: HugePages::empty() };
        self.planned(|w| w.map_walk(Node::Real(root), levels, va.as_u64(), end, &op).map(|_| ()))?;
        Ok(Flush::NONE)
    }

    /// Maps one page of `size`. A 4 KiB page (the page-fault path) takes
    /// one descent of the tables.
    #[inline]
    pub fn map(
        &mut self,
        va: VirtAddr,
        frame: PhysAddr,
        size: PageSize,
        flags: MapFlags,
    ) -> Result<Flush, PagingError> {
        if size == PageSize::Size4KiB {
            if va.as_u64() & (PAGE_BYTES - 1) != 0 {
                return Err(PagingError::Misaligned { value: va.as_u64(), align: PAGE_BYTES });
            }
            if frame.as_u64() & (PAGE_BYTES - 1) != 0 {
                return Err(PagingError::HugeFrameMisaligned { phys: frame.as_u64(), size });
            }
            return self.map_page(va, frame, flags);
        }
        self.map_huge(va, frame, size, flags)
    }

    /// [`map`](Self::map) of a 2 MiB or 1 GiB page, through the range
    /// machinery.
    #[inline(never)]
    fn map_huge(
        &mut self,
        va: VirtAddr,
        frame: PhysAddr,
        size: PageSize,
        flags: MapFlags,
    ) -> Result<Flush, PagingError> {
        let s = size.bytes();
        if va.as_u64() & (s - 1) != 0 {
            return Err(PagingError::Misaligned { value: va.as_u64(), align: s });
        }
        if frame.as_u64() & (s - 1) != 0 {
            return Err(PagingError::HugeFrameMisaligned { phys: frame.as_u64(), size });
        }
        if size == PageSize::Size1GiB && !self.arch.leaf_level(3) {
            return Err(PagingError::InvalidFlags);
        }
        let huge = match size {
            PageSize::Size4KiB => HugePages::empty(),
            PageSize::Size2MiB => HugePages::SIZE_2M,
            PageSize::Size1GiB => HugePages::SIZE_1G,
        };
        self.map_range(va, frame, s, flags, huge)
    }

    /// [`map`](Self::map) of one 4 KiB page (the page-fault path) in one
    /// descent, without the plan and apply passes.
    #[inline]
    fn map_page(&mut self, va: VirtAddr, frame: PhysAddr, flags: MapFlags) -> Result<Flush, PagingError> {
        if !flags.contains(MapFlags::READ) {
            return Err(PagingError::InvalidFlags);
        }
        self.arch.check_va(va)?;
        let v = va.as_u64();
        if self.is_borrowed(level_index(v, self.arch.levels())) {
            return Err(PagingError::KernelRange { addr: va });
        }
        let found = self.level1_slot_and_above(v);
        match found {
            Ok((slot, above)) => {
                if slot.load(Ordering::Relaxed) != 0 {
                    return Err(PagingError::AlreadyMapped { addr: va });
                }
                slot.store(self.arch.leaf(frame, flags, 1), Ordering::Relaxed);
                self.add_count(above, 1);
                Ok(Flush::NONE)
            }
            // A table is missing on the way.
            Err(0) => self.map_page_creating(va, frame, flags),
            Err(_) => Err(PagingError::AlreadyMapped { addr: va }),
        }
    }

    /// [`map_page`](Self::map_page) where tables are missing: the one
    /// place where they start is found on the way down, and every table
    /// from there to level 1 is allocated before any is linked, so a
    /// refusal still changes nothing. Out of line: most faults find their
    /// tables.
    #[inline(never)]
    fn map_page_creating(&self, va: VirtAddr, frame: PhysAddr, flags: MapFlags) -> Result<Flush, PagingError> {
        let v = va.as_u64();
        let levels = self.arch.levels();
        let mut t = self.root;
        let mut level = levels;
        // The entry pointing to `t`, which keeps its live-entry count (none
        // for the root).
        let mut above: Option<&AtomicU64> = None;
        while level > 1 {
            let slot = &self.table(t)[level_index(v, level)];
            let e = slot.load(Ordering::Relaxed);
            if e == 0 {
                // Tables are missing from this level down: take them all,
                // then link them top-down, each with the one entry below it.
                let mut pre = self.preallocate(u64::from(level - 1))?;
                if let Some(above) = above {
                    self.add_count(above, 1);
                }
                let mut parent = slot;
                while level > 1 {
                    let new = self.take(&mut pre);
                    parent.store(self.with_table_count(self.arch.table(new), 1), Ordering::Relaxed);
                    t = new;
                    level -= 1;
                    parent = &self.table(t)[level_index(v, level)];
                }
                parent.store(self.arch.leaf(frame, flags, 1), Ordering::Relaxed);
                return Ok(Flush::NONE);
            }
            if !self.arch.is_present(e) || self.arch.is_leaf(e, level) {
                return Err(PagingError::AlreadyMapped { addr: va });
            }
            above = Some(slot);
            t = self.arch.table_phys(e);
            level -= 1;
        }
        let slot = &self.table(t)[level_index(v, 1)];
        if slot.load(Ordering::Relaxed) != 0 {
            return Err(PagingError::AlreadyMapped { addr: va });
        }
        slot.store(self.arch.leaf(frame, flags, 1), Ordering::Relaxed);
        if let Some(above) = above {
            self.add_count(above, 1);
        }
        Ok(Flush::NONE)
    }
}

/// What a map walk writes.
struct MapOp<'s> {
    /// Where the physical addresses come from.
    src: Source<'s>,
    /// The new leaves' flags.
    flags: MapFlags,
    /// The huge page sizes it may use.
    huge: HugePages,
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> Walker<'_, A, M, F> {
    /// Maps `[va, end)` below `node` (a table at `level`). Returns how many
    /// entries of `node` it filled (each was empty), for the count kept in
    /// the entry above.
    fn map_walk(&mut self, node: Node, level: u8, va: u64, end: u128, op: &MapOp<'_>) -> Result<usize, PagingError> {
        let span = level_span(level);
        let leaf_ok = self.pt.arch.leaf_level(level) && op.huge.allows_level(level);
        let mut filled = 0;
        for Slot { v, idx, end: slot_end, covers } in slots(va, end, level) {
            if level == 1 {
                // The whole run of 4 KiB pages inside this table at once.
                let n = ((slot_end_of_table(v, end) - v as u128) / u128::from(PAGE_BYTES)) as usize;
                return self.map_leaves(node, idx, n, v, op).map(|()| n);
            }
            let e = self.entry(node, level, idx);
            let linear = match op.src {
                Source::Linear(delta) => Some(v.wrapping_add(delta)),
                Source::Frames { .. } => None,
            };
            if let Some(phys) = linear.filter(|p| leaf_ok && covers && p % span == 0 && e == 0) {
                let leaf = self.pt.arch.leaf(PhysAddr::new(phys).expect("checked range"), op.flags, level);
                self.store(node, idx, leaf);
                filled += 1;
            } else {
                let Some(child) = self.child(node, level, idx, e, Descend::CREATE) else {
                    return Err(PagingError::AlreadyMapped { addr: VirtAddr::new(v).expect("checked range") });
                };
                if e == 0 {
                    filled += 1;
                }
                let below = self.map_walk(child, level - 1, v, slot_end, op)?;
                self.add_count(node, idx, below as i32);
            }
        }
        Ok(filled)
    }

    /// Fills `n` level-1 entries from `idx` (plan: checks they are empty).
    #[inline]
    fn map_leaves(&self, node: Node, idx: usize, n: usize, va: u64, op: &MapOp<'_>) -> Result<(), PagingError> {
        let Node::Real(t) = node else { return Ok(()) }; // a new table is empty
        let slots = &self.pt.table(t)[idx..idx + n];
        if !self.applying() {
            if let Some(i) = slots.iter().position(|s| s.load(Ordering::Relaxed) != 0) {
                return Err(PagingError::AlreadyMapped {
                    addr: VirtAddr::new(va + i as u64 * PAGE_BYTES).expect("in range"),
                });
            }
            return Ok(());
        }
        let template = self.pt.arch.leaf(PhysAddr::ZERO, op.flags, 1);
        match op.src {
            Source::Linear(delta) => {
                let phys = va.wrapping_add(delta);
                for (i, s) in slots.iter().enumerate() {
                    s.store(template | (phys + i as u64 * PAGE_BYTES), Ordering::Relaxed);
                }
            }
            Source::Frames { base, frames } => {
                let first = ((va - base) / PAGE_BYTES) as usize;
                for (s, f) in slots.iter().zip(&frames[first..first + n]) {
                    s.store(template | f.as_u64(), Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}
