//! Changing the flags of the leaves of a range, all or nothing.

use mm_types::{FrameProvider, PageSize, PhysMemory, VirtAddr, PAGE_BYTES};

use super::walk::{Descend, Walker};
use super::{slots, Lookup, Node, PageTable, Slot};
use crate::arch::{level_index, PagingArch};
use crate::error::PagingError;
use crate::flags::MapFlags;
use crate::tlb::Flush;

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> PageTable<A, M, F> {
    /// Changes the flags of every page of `[va, va + len)` to `flags`
    /// (keeping the hardware's accessed and dirty bits), splitting huge
    /// pages the range cuts. Swap entries are left as they are (the
    /// protection applies when the page comes back). Fails with
    /// [`PagingError::NotMapped`] if a page is neither mapped nor swapped.
    ///
    /// ```
    /// use mm_paging::{MapFlags, PageTable, X86_64};
    /// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
    /// use mm_types::{PageSize, PhysAddr, VirtAddr};
    ///
    /// let ram = SimPhysMemory::new(PhysAddr::new(0)?, 1 << 20);
    /// let frames = RefFrameProvider::new(&ram);
    /// let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames)?;
    /// let va = VirtAddr::new(0x40_0000)?;
    /// let user = MapFlags::USER | MapFlags::READ | MapFlags::WRITE;
    /// pt.map(va, PhysAddr::new(0x8_0000)?, PageSize::Size4KiB, user)?.ignore();
    ///
    /// let flush = pt.protect_range(va, 4096, MapFlags::USER | MapFlags::READ)?;
    /// assert_eq!(flush.pages(), 1); // the old writable entry may be cached
    /// assert!(!pt.translate(va).unwrap().flags.contains(MapFlags::WRITE));
    /// # flush.ignore();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn protect_range(&mut self, va: VirtAddr, len: u64, flags: MapFlags) -> Result<Flush, PagingError> {
        let end = self.check_owned_range(va, len)?;
        if !flags.contains(MapFlags::READ) {
            return Err(PagingError::InvalidFlags);
        }
        let levels = self.arch.levels();
        let root = self.root;
        self.planned(|w| w.protect_walk(Node::Real(root), levels, va.as_u64(), end, flags))?;
        Ok(Flush::range(va, len / PAGE_BYTES))
    }

    /// Splits the huge page containing `va` into pages of the next smaller
    /// size (same frames and flags). Fails with [`PagingError::NotMapped`]
    /// if `va` is not mapped by a huge page.
    pub fn split(&mut self, va: VirtAddr) -> Result<Flush, PagingError> {
        let t = match self.lookup(va)? {
            Lookup::Mapped(t) if t.size != PageSize::Size4KiB => t,
            _ => return Err(PagingError::NotMapped { addr: va }),
        };
        let (page, size) = (t.page, t.size);
        self.check_owned_range(page, size.bytes())?;
        let levels = self.arch.levels();
        let root = self.root;
        let target = size.level();
        self.planned(|w| {
            let mut node = Node::Real(root);
            for level in (target..=levels).rev() {
                let idx = level_index(page.as_u64(), level);
                let e = w.entry(node, level, idx);
                let how = if level == target { Descend::SPLIT } else { Descend::EXISTING };
                node = w.child(node, level, idx, e, how).expect("mapped");
            }
            Ok(())
        })?;
        Ok(Flush::range(page, size.bytes() / PAGE_BYTES))
    }
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> Walker<'_, A, M, F> {
    /// Sets the flags of the leaves of `[va, end)` below `node` (a table at
    /// `level`).
    fn protect_walk(&mut self, node: Node, level: u8, va: u64, end: u128, flags: MapFlags) -> Result<(), PagingError> {
        let keep = MapFlags::ACCESSED | MapFlags::DIRTY;
        let arch = &self.pt.arch;
        for Slot { v, idx, end: slot_end, covers } in slots(va, end, level) {
            let e = self.entry(node, level, idx);
            let addr = VirtAddr::new(v).expect("checked range");
            if e == 0 || (!arch.is_present(e) && arch.swap_of(e).is_none()) {
                return Err(PagingError::NotMapped { addr });
            }
            if arch.swap_of(e).is_some() {
                // Left alone.
            } else if arch.is_leaf(e, level) && covers {
                // A compare-and-swap: an accessed or dirty bit another
                // CPU's MMU sets meanwhile is kept.
                self.update(node, idx, |e| {
                    let f = (arch.leaf_flags(e, level) & keep) | (flags - keep);
                    arch.leaf(arch.leaf_phys(e, level), f, level)
                });
            } else {
                let child = self.child(node, level, idx, e, Descend::SPLIT).expect("present");
                self.protect_walk(child, level - 1, v, slot_end, flags)?;
            }
        }
        Ok(())
    }
}
