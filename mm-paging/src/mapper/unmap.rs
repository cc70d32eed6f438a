//! Unmapping ranges, splitting huge pages where a range cuts one, and
//! freeing the tables that empty.

use core::sync::atomic::Ordering;

use mm_types::{FrameProvider, PageSize, PhysAddr, PhysMemory, VirtAddr, PAGE_BYTES};

use super::walk::{Descend, Walker};
use super::{page_size, slot_end_of_table, slots, Node, PageTable, Slot, Unmapped, Walk};
use crate::arch::{level_index, PagingArch, ENTRIES};
use crate::error::PagingError;
use crate::tlb::Flush;

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> PageTable<A, M, F> {
    /// Unmaps every page of `[va, va + len)`, calling `removed` for each
    /// mapping and swap entry removed (the caller owns those frames and
    /// slots), splitting huge pages the range cuts, and freeing the table
    /// pages that become empty. Fails with [`PagingError::NotMapped`] if any
    /// page of the range is neither mapped nor swapped, changing nothing.
    pub fn unmap_range(&mut self, va: VirtAddr, len: u64, removed: impl FnMut(Unmapped)) -> Result<Flush, PagingError> {
        self.unmap_impl(va, len, Walk { free_tables: true, sparse: false }, removed)
    }

    /// Like [`unmap_range`](Self::unmap_range), but pages of the range that
    /// hold nothing are skipped rather than refused: removes whatever is
    /// mapped or swapped in `[va, va + len)` (munmap of a demand-paged
    /// range), splitting huge pages the range cuts and freeing the table
    /// pages that become empty. Fails only for a bad range or when a huge
    /// page must be split and no table page is available, changing nothing.
    pub fn unmap_present(
        &mut self,
        va: VirtAddr,
        len: u64,
        removed: impl FnMut(Unmapped),
    ) -> Result<Flush, PagingError> {
        self.unmap_impl(va, len, Walk { free_tables: true, sparse: true }, removed)
    }

    /// Like [`unmap_range`](Self::unmap_range), but leaves every table page
    /// in place, empty or not.
    ///
    /// For kernel windows such as vmalloc's that defer the TLB flush after an
    /// unmap: until the flush, other CPUs' paging-structure caches may still
    /// point at the tables, so a table page must not be freed (and reused)
    /// before it. The tables stay for the next mapping of the range.
    pub fn unmap_range_keep_tables(
        &mut self,
        va: VirtAddr,
        len: u64,
        removed: impl FnMut(Unmapped),
    ) -> Result<Flush, PagingError> {
        self.unmap_impl(va, len, Walk { free_tables: false, sparse: false }, removed)
    }

    fn unmap_impl(
        &mut self,
        va: VirtAddr,
        len: u64,
        walk: Walk,
        mut removed: impl FnMut(Unmapped),
    ) -> Result<Flush, PagingError> {
        let end = self.check_owned_range(va, len)?;
        let levels = self.arch.levels();
        let root = self.root;
        self.planned(|w| w.unmap_walk(Node::Real(root), levels, va.as_u64(), end, walk, &mut removed).map(|_| ()))?;
        Ok(Flush::range(va, len / PAGE_BYTES))
    }
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> Walker<'_, A, M, F> {
    /// Unmaps `[va, end)` below `node` (a table at `level`). Returns whether
    /// the node is now empty (apply; always false in plan).
    fn unmap_walk(
        &mut self,
        node: Node,
        level: u8,
        va: u64,
        end: u128,
        walk: Walk,
        removed: &mut impl FnMut(Unmapped),
    ) -> Result<bool, PagingError> {
        if level == 1 {
            if let Node::Real(t) = node {
                return self.unmap_leaves(t, va, end, walk, removed);
            }
        }
        let arch = &self.pt.arch;
        for Slot { v, idx, end: slot_end, covers } in slots(va, end, level) {
            let e = self.entry(node, level, idx);
            let addr = VirtAddr::new(v).expect("checked range");
            let empty = e == 0 || (!arch.is_present(e) && arch.swap_of(e).is_none());
            if empty && walk.sparse {
                continue;
            }
            if e == 0 {
                return Err(PagingError::NotMapped { addr });
            }
            if let Some(swap) = arch.swap_of(e) {
                self.store(node, idx, 0);
                if self.applying() {
                    removed(Unmapped::Swap { va: addr, slot: swap });
                }
            } else if !arch.is_present(e) {
                return Err(PagingError::NotMapped { addr });
            } else if arch.is_leaf(e, level) && covers {
                self.store(node, idx, 0);
                if self.applying() {
                    let frame = arch.leaf_phys(e, level);
                    let flags = arch.leaf_flags(e, level);
                    removed(Unmapped::Page { va: addr, frame, size: page_size(level), flags });
                }
            } else {
                let child = self.child(node, level, idx, e, Descend::SPLIT).expect("present");
                let emptied = self.unmap_walk(child, level - 1, v, slot_end, walk, removed)?;
                if emptied && walk.free_tables {
                    self.free_child(node, idx, child);
                }
            }
        }
        Ok(self.applying()
            && matches!(node, Node::Real(t) if self.pt.table(t).iter().all(|e| e.load(Ordering::Relaxed) == 0)))
    }

    /// Unmaps the level-1 entries of table `t` in `[va, end)` (clipped to the
    /// table); returns whether the table is now empty.
    fn unmap_leaves(
        &self,
        t: PhysAddr,
        va: u64,
        end: u128,
        walk: Walk,
        removed: &mut impl FnMut(Unmapped),
    ) -> Result<bool, PagingError> {
        let arch = &self.pt.arch;
        let table = self.pt.table(t);
        let first = level_index(va, 1);
        let n = ((slot_end_of_table(va, end) - va as u128) / u128::from(PAGE_BYTES)) as usize;
        let slots = &table[first..first + n];
        if !self.applying() {
            if walk.sparse {
                return Ok(false);
            }
            let bad = slots.iter().position(|s| {
                let e = s.load(Ordering::Relaxed);
                e == 0 || (!arch.is_present(e) && arch.swap_of(e).is_none())
            });
            return match bad {
                Some(i) => {
                    Err(PagingError::NotMapped { addr: VirtAddr::new(va + i as u64 * PAGE_BYTES).expect("in range") })
                }
                None => Ok(false),
            };
        }
        let base = VirtAddr::new(va).expect("checked range");
        for (i, s) in slots.iter().enumerate() {
            if walk.sparse && s.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let e = s.swap(0, Ordering::Relaxed);
            let va =
                VirtAddr::new_sign_extended(base.as_u64() + i as u64 * PAGE_BYTES, mm_types::PagingMode::FiveLevel);
            removed(match arch.swap_of(e) {
                Some(slot) => Unmapped::Swap { va, slot },
                None => Unmapped::Page {
                    va,
                    frame: arch.leaf_phys(e, 1),
                    size: PageSize::Size4KiB,
                    flags: arch.leaf_flags(e, 1),
                },
            });
        }
        Ok(n == ENTRIES || table.iter().all(|e| e.load(Ordering::Relaxed) == 0))
    }
}
