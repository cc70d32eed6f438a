//! Unmapping ranges, splitting huge pages where a range cuts one, and
//! freeing the tables that empty.

use core::sync::atomic::{AtomicU64, Ordering};

use mm_types::{FrameProvider, PageSize, PhysAddr, PhysMemory, VirtAddr, PAGE_BYTES};

use super::walk::{Descend, Walker};
use super::{page_size, slot_end_of_table, slots, Node, PageTable, Slot, Tables, Unlinked, Unmapped, Walk};
use crate::arch::{level_index, PagingArch, ENTRIES};
use crate::error::PagingError;
use crate::table::entries_linear;
use crate::tlb::Flush;

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> PageTable<A, M, F> {
    /// Unmaps every page of `[va, va + len)`, calling `removed` for each
    /// mapping and swap entry removed (the caller owns those frames and
    /// slots), splitting huge pages the range cuts, and freeing the table
    /// pages that become empty. Fails with [`PagingError::NotMapped`] if any
    /// page of the range is neither mapped nor swapped, changing nothing.
    pub fn unmap_range(&mut self, va: VirtAddr, len: u64, removed: impl FnMut(Unmapped)) -> Result<Flush, PagingError> {
        self.unmap_impl(va, len, Walk { tables: Tables::Free, sparse: false }, removed)
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
        self.unmap_impl(va, len, Walk { tables: Tables::Free, sparse: true }, removed)
    }

    /// Like [`unmap_present`](Self::unmap_present), but a table page the
    /// unmap empties is only unlinked: it stays allocated (and unreachable
    /// from the root) until [`free_unlinked_tables`](Self::free_unlinked_tables).
    ///
    /// This is the unmap of a hierarchy that may be loaded on other CPUs (or
    /// on this one): until the returned [`Flush`] has run on each, their
    /// paging-structure caches may still point at the emptied tables, and a
    /// speculative walk may read them; a table page freed before the flush
    /// and reused as data would then be read as a table. So: unmap, flush
    /// (and shoot down), then free the unlinked tables. The returned `Flush`
    /// covers every unlinked table's range.
    ///
    /// ```
    /// use mm_paging::{MapFlags, PageTable, X86_64};
    /// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
    /// use mm_types::{PageSize, PhysAddr, VirtAddr};
    ///
    /// let ram = SimPhysMemory::new(PhysAddr::new(0)?, 1 << 20);
    /// let frames = RefFrameProvider::new(&ram);
    /// let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames)?;
    /// let va = VirtAddr::new(0x4000_0000)?;
    /// pt.map(va, PhysAddr::new(0x8_0000)?, PageSize::Size4KiB, MapFlags::READ | MapFlags::WRITE | MapFlags::USER)?.ignore();
    /// assert_eq!(pt.table_pages(), 4); // the root and three tables below it
    ///
    /// let flush = pt.unmap_present_deferred(va, 0x1000, |_| {})?;
    /// assert_eq!((pt.table_pages(), pt.unlinked()), (1, 3)); // unlinked, not yet freed
    /// flush.ignore(); // here: flush this CPU's TLB and shoot the others down
    /// assert_eq!(pt.free_unlinked_tables(), 3);
    /// assert_eq!(pt.unlinked(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unmap_present_deferred(
        &mut self,
        va: VirtAddr,
        len: u64,
        removed: impl FnMut(Unmapped),
    ) -> Result<Flush, PagingError> {
        self.unmap_impl(va, len, Walk { tables: Tables::Defer, sparse: true }, removed)
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
        self.unmap_impl(va, len, Walk { tables: Tables::Keep, sparse: false }, removed)
    }

    /// One 4 KiB page takes [`unmap_page`](Self::unmap_page); anything
    /// else, or a page it declines, the range walk.
    #[inline]
    fn unmap_impl(
        &mut self,
        va: VirtAddr,
        len: u64,
        walk: Walk,
        mut removed: impl FnMut(Unmapped),
    ) -> Result<Flush, PagingError> {
        if len == PAGE_BYTES {
            if let Some(done) = self.unmap_page(va, walk, &mut removed) {
                return done;
            }
        }
        self.unmap_walked(va, len, walk, removed)
    }

    /// The unmap of a range: plan, preallocate (a huge page to split needs a
    /// table), apply.
    #[inline(never)]
    fn unmap_walked(
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

    /// The unmap of one 4 KiB page (eviction, the munmap of a page) in one
    /// descent, without the plan and apply passes: nothing can fail once
    /// the level-1 entry is found. `None` when the page lies in a huge page
    /// (which must be split) or the walk meets something unusual: the range
    /// path then runs, and decides.
    #[inline]
    fn unmap_page(
        &mut self,
        va: VirtAddr,
        walk: Walk,
        removed: &mut impl FnMut(Unmapped),
    ) -> Option<Result<Flush, PagingError>> {
        let v = va.as_u64();
        if v & (PAGE_BYTES - 1) != 0 || self.arch.check_va(va).is_err() {
            return None;
        }
        if self.is_borrowed(level_index(v, self.arch.levels())) {
            return None;
        }
        let found = self.level1_slot_and_above(v);
        let (slot, above) = match found {
            Ok(found) => found,
            Err(e) => return (e == 0 && walk.sparse).then(|| Ok(Flush::range(va, 1))),
        };
        let e = slot.load(Ordering::Relaxed);
        let swap = self.arch.swap_of(e);
        if e == 0 || (!self.arch.is_present(e) && swap.is_none()) {
            if walk.sparse && e == 0 {
                return Some(Ok(Flush::range(va, 1)));
            }
            return Some(Err(PagingError::NotMapped { addr: va }));
        }
        // An exchange, not a store: the MMU may set the accessed or dirty bit
        // between the load and here, and the caller needs the dirty bit.
        let e = slot.swap(0, Ordering::Relaxed);
        removed(match swap {
            Some(slot) => Unmapped::Swap { va, slot },
            None => Unmapped::Page {
                va,
                frame: self.arch.leaf_phys(e, 1),
                size: PageSize::Size4KiB,
                flags: self.arch.leaf_flags(e, 1),
            },
        });
        // The entry above the level-1 table keeps its live-entry count when
        // the format has room: then only a table that emptied needs more.
        match self.add_count(above, -1) {
            Some(false) => {}
            Some(true) | None if walk.tables != Tables::Keep => {
                let mut held = self.unlinked;
                self.free_emptied_tables(v, walk.tables, &mut held);
                self.unlinked = held;
            }
            Some(true) | None => {}
        }
        Some(Ok(Flush::range(va, 1)))
    }

    /// The level-1 entry of `v` and the level-2 entry pointing to its
    /// table; or the first entry on the way that is not a table (empty, a
    /// huge leaf, a swap entry). The direct-map case reaches each table by
    /// an addition; the checked accessor's walk is out of line (`table`).
    #[inline(always)]
    pub(super) fn level1_slot_and_above(&self, v: u64) -> Result<(&AtomicU64, &AtomicU64), u64> {
        match self.linear {
            Some(offset) => self.descend_to_level1(v, |t| {
                // SAFETY: `offset` is the accessor's linear offset, and every table this walk reaches
                // belongs to this hierarchy (checked reachable when allocated, or vouched for by
                // `from_root`); `&self` keeps it alive.
                unsafe { entries_linear(offset, t) }
            }),
            None => self.descend_to_level1(v, |t| self.table(t)),
        }
    }

    /// [`level1_slot_and_above`](Self::level1_slot_and_above), reaching
    /// each table through `table`.
    #[inline(always)]
    fn descend_to_level1<'t>(
        &'t self,
        v: u64,
        table: impl Fn(PhysAddr) -> &'t [AtomicU64; ENTRIES],
    ) -> Result<(&'t AtomicU64, &'t AtomicU64), u64> {
        let mut t = self.root;
        let mut level = self.arch.levels();
        loop {
            let slot = &table(t)[level_index(v, level)];
            let e = slot.load(Ordering::Relaxed);
            if !self.arch.is_present(e) || self.arch.is_leaf(e, level) {
                return Err(e);
            }
            t = self.arch.table_phys(e);
            level -= 1;
            if level == 1 {
                return Ok((&table(t)[level_index(v, 1)], slot));
            }
        }
    }

    /// After a one-page unmap at `v` whose level-1 table emptied (its count
    /// says so) or may have (no count is kept): frees each table that is
    /// now empty, bottom up (the root never: the last parent is the root).
    /// Out of line: most unmaps leave their table in use.
    #[inline(never)]
    fn free_emptied_tables(&self, v: u64, tables: Tables, held: &mut Unlinked) {
        let levels = self.arch.levels();
        // The tables on the way down, root first: all present (the unmap
        // just came through them).
        let mut path = [PhysAddr::ZERO; 5];
        let mut t = self.root;
        for level in (1..=levels).rev() {
            path[level as usize - 1] = t;
            if level > 1 {
                t = self.arch.table_phys(self.table(t)[level_index(v, level)].load(Ordering::Relaxed));
            }
        }
        for level in 2..=levels {
            let (parent, child) = (path[level as usize - 1], path[level as usize - 2]);
            let above = &self.table(parent)[level_index(v, level)];
            let child_idx = level_index(v, level - 1);
            // The level-1 table's count was already taken down by the unmap;
            // each higher table loses the entry this loop just cleared.
            let zero = if level == 2 {
                self.table_count(above.load(Ordering::Relaxed)).map(|n| n == 0)
            } else {
                self.add_count(above, -1)
            };
            let empty = zero.unwrap_or_else(|| empty_outside(self.table(child), child_idx, child_idx + 1));
            if !empty {
                break;
            }
            debug_assert!(empty_outside(self.table(child), child_idx, child_idx), "a count of 0 on a live table");
            above.store(0, Ordering::Relaxed);
            self.retire_table(child, tables, held);
        }
    }
}

/// Whether every entry of `table` outside `[lo, hi)` (just cleared) is
/// zero. The entries nearest the cleared run are looked at first, on both
/// sides in turn: after unmaps in address order, either way, the next live
/// entry is the neighbour, so the common answer "not empty" costs a load or
/// two instead of a scan of the table.
fn empty_outside(table: &[AtomicU64; ENTRIES], lo: usize, hi: usize) -> bool {
    // The neighbours first, without the loop's bookkeeping.
    if (hi < ENTRIES && table[hi].load(Ordering::Relaxed) != 0)
        || (lo > 0 && table[lo - 1].load(Ordering::Relaxed) != 0)
    {
        return false;
    }
    let (mut down, mut up) = (lo, hi);
    while down > 0 || up < ENTRIES {
        if up < ENTRIES {
            if table[up].load(Ordering::Relaxed) != 0 {
                return false;
            }
            up += 1;
        }
        if down > 0 {
            down -= 1;
            if table[down].load(Ordering::Relaxed) != 0 {
                return false;
            }
        }
    }
    true
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> Walker<'_, A, M, F> {
    /// Unmaps `[va, end)` below `node` (a table at `level`). Returns how
    /// many entries of `node` it cleared (apply; 0 in plan), for the count
    /// kept in the entry above.
    fn unmap_walk(
        &mut self,
        node: Node,
        level: u8,
        va: u64,
        end: u128,
        walk: Walk,
        removed: &mut impl FnMut(Unmapped),
    ) -> Result<usize, PagingError> {
        if level == 1 {
            if let Node::Real(t) = node {
                return self.unmap_leaves(t, va, end, walk, removed);
            }
        }
        let arch = &self.pt.arch;
        let mut cleared = 0;
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
                cleared += 1;
                if self.applying() {
                    removed(Unmapped::Swap { va: addr, slot: swap });
                }
            } else if !arch.is_present(e) {
                return Err(PagingError::NotMapped { addr });
            } else if arch.is_leaf(e, level) && covers {
                // Exchanged: the dirty bit set since the read goes to
                // `removed`.
                let e = self.exchange(node, level, idx, 0);
                cleared += 1;
                if self.applying() {
                    let frame = arch.leaf_phys(e, level);
                    let flags = arch.leaf_flags(e, level);
                    removed(Unmapped::Page { va: addr, frame, size: page_size(level), flags });
                }
            } else {
                let child = self.child(node, level, idx, e, Descend::SPLIT).expect("present");
                let below = self.unmap_walk(child, level - 1, v, slot_end, walk, removed)?;
                let emptied = match self.add_count(node, idx, -(below as i32)) {
                    Some(zero) => zero,
                    None => self.emptied(child, level - 1, v, slot_end),
                };
                if emptied && walk.tables != Tables::Keep {
                    self.free_child(node, idx, child, walk.tables);
                    cleared += 1;
                }
            }
        }
        Ok(if self.applying() { cleared } else { 0 })
    }

    /// Whether the table `node` at `level`, whose entries for `[va, end)`
    /// a walk just went through, is empty (apply pass; false in plan), by
    /// looking at its entries: for formats that keep no count. A child
    /// table that did not empty is still there, so the walked entries are
    /// checked too, before the rest.
    fn emptied(&self, node: Node, level: u8, va: u64, end: u128) -> bool {
        let (lo, hi) = (level_index(va, level), level_index((end - 1) as u64, level) + 1);
        self.applying()
            && matches!(node, Node::Real(t) if {
                let table = self.pt.table(t);
                table[lo..hi].iter().all(|e| e.load(Ordering::Relaxed) == 0) && empty_outside(table, lo, hi)
            })
    }

    /// Unmaps the level-1 entries of table `t` in `[va, end)` (clipped to the
    /// table); returns how many it cleared.
    fn unmap_leaves(
        &self,
        t: PhysAddr,
        va: u64,
        end: u128,
        walk: Walk,
        removed: &mut impl FnMut(Unmapped),
    ) -> Result<usize, PagingError> {
        let arch = &self.pt.arch;
        let table = self.pt.table(t);
        let first = level_index(va, 1);
        let n = ((slot_end_of_table(va, end) - va as u128) / u128::from(PAGE_BYTES)) as usize;
        let slots = &table[first..first + n];
        if !self.applying() {
            if walk.sparse {
                return Ok(0);
            }
            let bad = slots.iter().position(|s| {
                let e = s.load(Ordering::Relaxed);
                e == 0 || (!arch.is_present(e) && arch.swap_of(e).is_none())
            });
            return match bad {
                Some(i) => {
                    Err(PagingError::NotMapped { addr: VirtAddr::new(va + i as u64 * PAGE_BYTES).expect("in range") })
                }
                None => Ok(0),
            };
        }
        let base = VirtAddr::new(va).expect("checked range");
        let mut cleared = 0;
        for (i, s) in slots.iter().enumerate() {
            if walk.sparse && s.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let e = s.swap(0, Ordering::Relaxed);
            cleared += 1;
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
        Ok(cleared)
    }
}
