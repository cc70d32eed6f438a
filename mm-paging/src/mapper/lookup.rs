//! Look-ups: translation, walks over the present leaves and swap entries
//! of a range, accessed-bit harvesting and the other read-mostly queries.

use core::sync::atomic::{AtomicU64, Ordering};

use mm_types::{FrameProvider, PageSize, PhysAddr, PhysMemory, VirtAddr, PAGE_BYTES};

use super::{mode_of, page_size, slots, Entry, Lookup, Mapping, PageTable, Slot, Translation};
use crate::arch::{level_span, PagingArch, ENTRIES};
use crate::error::PagingError;
use crate::flags::{AccessBits, MapFlags};
use crate::table::entries_linear;
use crate::tlb::Flush;

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> PageTable<A, M, F> {
    /// The mapping of `va`, if present.
    #[inline]
    pub fn translate(&self, va: VirtAddr) -> Option<Translation> {
        self.arch.check_va(va).ok()?;
        let v = va.as_u64();
        let (e, level) = match self.linear {
            // The common case, a direct map: each table is an addition away.
            Some(offset) => self.walk_to_leaf(v, |t| {
                // SAFETY: `offset` is the accessor's linear offset, and every table this walk reaches
                // belongs to this hierarchy (checked reachable when allocated, or vouched for by
                // `from_root`); `&self` keeps it alive.
                unsafe { entries_linear(offset, t) }
            })?,
            None => self.walk_checked(v)?,
        };
        let frame = self.arch.leaf_phys(e, level);
        let span = level_span(level);
        Some(Translation {
            phys: PhysAddr::new_truncate(frame.as_u64() + (v & (span - 1))),
            frame,
            // Clearing low bits of a canonical address keeps it canonical.
            page: VirtAddr::new_sign_extended(v & !(span - 1), mm_types::PagingMode::FiveLevel),
            size: page_size(level),
            flags: self.arch.leaf_flags(e, level),
        })
    }

    /// `walk_to_leaf` through the checked accessor (no linear map), out of
    /// line: its checks would cost the direct-map walk registers.
    #[inline(never)]
    fn walk_checked(&self, v: u64) -> Option<(u64, u8)> {
        self.walk_to_leaf(v, |t| self.table(t))
    }

    /// The present leaf entry translating `v` and its level, reaching each
    /// table through `table`.
    #[inline(always)]
    fn walk_to_leaf<'t>(&'t self, v: u64, table: impl Fn(PhysAddr) -> &'t [AtomicU64; ENTRIES]) -> Option<(u64, u8)> {
        let mut t = self.root;
        let mut level = self.arch.levels();
        let mut shift = 12 + 9 * (level as u32 - 1);
        while level > 1 {
            let e = table(t)[((v >> shift) & 511) as usize].load(Ordering::Relaxed);
            if !self.arch.is_present(e) {
                return None;
            }
            if self.arch.is_leaf(e, level) {
                return Some((e, level));
            }
            t = self.arch.table_phys(e);
            level -= 1;
            shift -= 9;
        }
        let e = table(t)[((v >> 12) & 511) as usize].load(Ordering::Relaxed);
        self.arch.is_present(e).then_some((e, 1))
    }

    /// What `va` holds: a mapping, a swap entry or nothing.
    pub fn lookup(&self, va: VirtAddr) -> Result<Lookup, PagingError> {
        self.arch.check_va(va)?;
        if let Some(t) = self.translate(va) {
            return Ok(Lookup::Mapped(t));
        }
        Ok(match self.level1_entry(va) {
            Some(e) => self.arch.swap_of(e).map_or(Lookup::Unmapped, Lookup::Swapped),
            None => Lookup::Unmapped,
        })
    }

    /// The level-1 entry for `va`, if the tables down to level 1 exist.
    fn level1_entry(&self, va: VirtAddr) -> Option<u64> {
        self.level1_slot(va).map(|s| s.load(Ordering::Relaxed))
    }

    /// Calls `f` for every present leaf overlapping `[va, va + len)`, in
    /// address order.
    pub fn for_each_mapping(&self, va: VirtAddr, len: u64, mut f: impl FnMut(Mapping)) -> Result<(), PagingError> {
        let end = self.check_range(va, len)?;
        self.visit(self.root, self.arch.levels(), va.as_u64(), end, &mut |level, v, slot| {
            let e = slot.load(Ordering::Relaxed);
            f(Mapping {
                va: VirtAddr::new(v).expect("canonical"),
                frame: self.arch.leaf_phys(e, level),
                size: page_size(level),
                flags: self.arch.leaf_flags(e, level),
            });
        });
        Ok(())
    }

    /// Calls `f` for each present leaf and each swap entry in
    /// `[va, va + len)`, in address order (fork copies both).
    pub fn for_each_entry(&self, va: VirtAddr, len: u64, mut f: impl FnMut(Entry)) -> Result<(), PagingError> {
        let end = self.check_range(va, len)?;
        self.visit_entries(self.root, self.arch.levels(), va.as_u64(), end, &mut f);
        Ok(())
    }

    fn visit_entries(&self, t: PhysAddr, level: u8, va: u64, end: u128, f: &mut impl FnMut(Entry)) {
        let table = self.table(t);
        for Slot { v, idx, end: slot_end, .. } in slots(va, end, level) {
            let e = table[idx].load(Ordering::Relaxed);
            if self.arch.is_present(e) {
                if self.arch.is_leaf(e, level) {
                    f(Entry::Page(Mapping {
                        va: VirtAddr::new(v & !(level_span(level) - 1)).expect("canonical"),
                        frame: self.arch.leaf_phys(e, level),
                        size: page_size(level),
                        flags: self.arch.leaf_flags(e, level),
                    }));
                } else {
                    self.visit_entries(self.arch.table_phys(e), level - 1, v, slot_end, f);
                }
            } else if let Some(slot) = self.arch.swap_of(e) {
                f(Entry::Swap { va: VirtAddr::new(v).expect("canonical"), slot });
            }
        }
    }

    /// Sets the flags of each present leaf in `[va, va + len)` to what
    /// `f(leaf)` returns (the hardware's accessed and dirty bits are kept
    /// whatever `f` says, and an update never loses one the MMU sets
    /// meanwhile). Pages that hold nothing are skipped. Returns the flush
    /// covering the leaves whose flags changed.
    ///
    /// All or nothing: `f` is first asked about every leaf, and if any
    /// answer lacks [`MapFlags::READ`] the call fails with
    /// [`PagingError::InvalidFlags`] before any leaf changes. Only then is
    /// `f` asked again, leaf by leaf, and its answers applied; so `f` is
    /// called twice per leaf and must give the same answer both times (a
    /// function of the [`Mapping`]). Should the second answer lack `READ`
    /// anyway, that leaf keeps its flags and the rest still apply (with
    /// their flush).
    ///
    /// This is `mprotect` and fork's write-protection on a demand-paged
    /// range, where the new flags may differ page by page.
    pub fn update_flags(
        &mut self,
        va: VirtAddr,
        len: u64,
        mut f: impl FnMut(Mapping) -> MapFlags,
    ) -> Result<Flush, PagingError> {
        let end = self.check_owned_range(va, len)?;
        let levels = self.arch.levels();
        let mapping = |pt: &Self, level: u8, v: u64, e: u64| Mapping {
            va: VirtAddr::new(v).expect("canonical"),
            frame: pt.arch.leaf_phys(e, level),
            size: page_size(level),
            flags: pt.arch.leaf_flags(e, level),
        };
        // Plan: every answer must be expressible before anything changes.
        let mut bad = false;
        self.visit(self.root, levels, va.as_u64(), end, &mut |level, v, slot| {
            if !bad && !f(mapping(self, level, v, slot.load(Ordering::Relaxed))).contains(MapFlags::READ) {
                bad = true;
            }
        });
        if bad {
            return Err(PagingError::InvalidFlags);
        }
        // Apply.
        let keep = MapFlags::ACCESSED | MapFlags::DIRTY;
        let mut touched = Touched::NONE;
        self.visit(self.root, levels, va.as_u64(), end, &mut |level, v, slot| {
            let mut e = slot.load(Ordering::Relaxed);
            let m = mapping(self, level, v, e);
            let new = f(m);
            if !new.contains(MapFlags::READ) || (new - keep) == (m.flags - keep) {
                return;
            }
            loop {
                let cur = self.arch.leaf_flags(e, level);
                let value = self.arch.leaf(m.frame, (cur & keep) | (new - keep), level);
                match slot.compare_exchange_weak(e, value, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(now) => e = now,
                }
            }
            touched.add(v, level);
        });
        Ok(touched.flush())
    }

    /// Replaces the present 4 KiB mapping at `va` by one of `frame` with
    /// `flags` (a copy-on-write fault's new page), returning the old mapping
    /// (with its accessed and dirty bits) and the flush it needs. Fails with
    /// [`PagingError::NotMapped`] if `va` has no present 4 KiB mapping.
    pub fn replace(&mut self, va: VirtAddr, frame: PhysAddr, flags: MapFlags) -> Result<(Mapping, Flush), PagingError> {
        let slot = self.leaf_slot_for(va, frame, flags)?;
        let e = slot.load(Ordering::Relaxed);
        if !self.arch.is_present(e) {
            return Err(PagingError::NotMapped { addr: va });
        }
        let old = slot.swap(self.arch.leaf(frame, flags, 1), Ordering::Relaxed);
        let mapping = Mapping {
            va,
            frame: self.arch.leaf_phys(old, 1),
            size: PageSize::Size4KiB,
            flags: self.arch.leaf_flags(old, 1),
        };
        Ok((mapping, Flush::range(va, 1)))
    }

    fn visit(&self, t: PhysAddr, level: u8, va: u64, end: u128, f: &mut impl FnMut(u8, u64, &AtomicU64)) {
        let table = self.table(t);
        for Slot { v, idx, end: slot_end, .. } in slots(va, end, level) {
            let slot = &table[idx];
            let e = slot.load(Ordering::Relaxed);
            if self.arch.is_present(e) {
                if self.arch.is_leaf(e, level) {
                    f(level, v & !(level_span(level) - 1), slot);
                } else {
                    self.visit(self.arch.table_phys(e), level - 1, v, slot_end, f);
                }
            }
        }
    }

    /// Test-and-clear of the accessed and/or dirty bits (`clear`) of every
    /// leaf overlapping `[va, va + len)`; `f(page, size, bits that were set)`
    /// is called for each leaf that had any of `clear` set. A huge page is
    /// reported (and cleared) as a whole. Reclaim uses this to harvest the
    /// hardware's reference information. The bits are cleared atomically, so
    /// a concurrent hardware update is never lost.
    pub fn harvest(
        &self,
        va: VirtAddr,
        len: u64,
        clear: AccessBits,
        mut f: impl FnMut(VirtAddr, PageSize, AccessBits),
    ) -> Result<Flush, PagingError> {
        let end = self.check_owned_range(va, len)?;
        let (a, d) = self.arch.access_bits();
        let mask = if clear.contains(AccessBits::ACCESSED) { a } else { 0 }
            | if clear.contains(AccessBits::DIRTY) { d } else { 0 };
        let mut touched = Touched::NONE;
        self.visit(self.root, self.arch.levels(), va.as_u64(), end, &mut |level, v, slot| {
            if slot.load(Ordering::Relaxed) & mask == 0 {
                return;
            }
            let old = slot.fetch_and(!mask, Ordering::Relaxed);
            let mut bits = AccessBits::empty();
            bits.set(AccessBits::ACCESSED, old & a & mask != 0);
            bits.set(AccessBits::DIRTY, old & d & mask != 0);
            f(VirtAddr::new(v).expect("canonical"), page_size(level), bits);
            touched.add(v, level);
        });
        Ok(touched.flush())
    }

    /// Sets the accessed bit, and for a write the dirty bit, of the leaf
    /// mapping `va`, as the MMU does on an access (for emulated accesses:
    /// host simulations, kernel copies). Returns whether a leaf was there
    /// (`false` under a root entry borrowed with
    /// [`new_sharing`](Self::new_sharing), which this value never changes).
    pub fn set_access_bits(&self, va: VirtAddr, write: bool) -> bool {
        let page = VirtAddr::new_sign_extended(va.as_u64() & !0xfff, mode_of(self.arch.levels()));
        let Ok(end) = self.check_owned_range(page, PAGE_BYTES) else { return false };
        let (a, d) = self.arch.access_bits();
        let bits = if write { a | d } else { a };
        let mut found = false;
        self.visit(self.root, self.arch.levels(), va.as_u64() & !0xfff, end, &mut |_, _, slot| {
            slot.fetch_or(bits, Ordering::Relaxed);
            found = true;
        });
        found
    }
}

/// The span of the leaves a walk changed, for the one flush that covers
/// them.
struct Touched {
    first: u64,
    last: u64,
}

impl Touched {
    const NONE: Touched = Touched { first: u64::MAX, last: 0 };

    /// A leaf at `v` of `level` changed.
    fn add(&mut self, v: u64, level: u8) {
        self.first = self.first.min(v);
        self.last = self.last.max(v + level_span(level));
    }

    fn flush(&self) -> Flush {
        if self.first == u64::MAX {
            Flush::NONE
        } else {
            Flush::range(VirtAddr::new(self.first).expect("canonical"), (self.last - self.first) / PAGE_BYTES)
        }
    }
}
