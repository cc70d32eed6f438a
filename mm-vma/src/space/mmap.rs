//! The mmap family: `mmap`, `munmap`, `mprotect`, `brk`, `mremap` and the
//! stack mapping, with Linux's semantics.

use alloc::vec::Vec;

use mm_paging::{Entry, MapFlags, PagingArch, Unmapped};
use mm_types::{FrameProvider, PageSize, PhysMemory, Protection, VirtAddr, PAGE_BYTES};

use super::{page_flags, page_up, paging, space, AddressSpace, FaultError, MapRequest, Placement, Remap, SpaceError};
use crate::vma::{Backing, Vma, VmaError, VmaFlags};

/// Whether `start + len` wraps around the 64-bit address space (a bad
/// range, where one that merely runs past the user range is out of range).
fn wraps(start: VirtAddr, len: u64) -> bool {
    start.as_u64().checked_add(len).is_none()
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> AddressSpace<A, M, F> {
    /// The end of `[start, start + len)`, which must be a page-aligned,
    /// non-empty part of the user range.
    fn check_range(&self, start: VirtAddr, len: u64) -> Result<VirtAddr, SpaceError> {
        if !start.is_aligned(PAGE_BYTES) {
            return Err(VmaError::Unaligned(start.as_u64()).into());
        }
        if len == 0 || wraps(start, len) {
            return Err(VmaError::BadRange.into());
        }
        let (low, high) = (self.layout.low, self.layout.high);
        if start < low || start > high || len > high - start {
            return Err(SpaceError::OutOfRange);
        }
        Ok(start + len)
    }

    /// Whether `[start, end)` keeps the guard gap below a stack above it.
    fn clear_of_stacks(&self, end: VirtAddr) -> bool {
        self.vmas
            .find_from(end)
            .is_none_or(|n| !n.flags.contains(VmaFlags::GROWS_DOWN) || n.start - end >= self.layout.stack_guard_gap)
    }

    /// A free range of `len` bytes: top-down below `mmap_base`, then
    /// anywhere, never in a stack's guard gap.
    fn find_gap(&self, len: u64, align: u64) -> Result<VirtAddr, SpaceError> {
        let align = align.max(PAGE_BYTES);
        if !align.is_power_of_two() {
            return Err(VmaError::Unaligned(align).into());
        }
        for top in [self.layout.mmap_base, self.layout.high] {
            let mut high = top;
            while let Some(a) = self.vmas.unmapped_area(len, align, self.layout.low, high, true) {
                if self.clear_of_stacks(a + len) {
                    return Ok(a);
                }
                let stack = self.vmas.find_from(a + len).expect("a stack above").start;
                high = stack.checked_sub(self.layout.stack_guard_gap).unwrap_or(VirtAddr::ZERO);
            }
        }
        Err(SpaceError::NoSpace)
    }

    fn is_free(&self, start: VirtAddr, end: VirtAddr) -> bool {
        self.vmas.overlapping(start, end).next().is_none()
    }

    /// Maps a new range and returns its start (`mmap`). Adjacent compatible
    /// VMAs merge. With [`Placement::Fixed`] the old mappings of the range
    /// are removed first, and stay removed if the new mapping then fails
    /// (as in Linux); a mapping whose population fails is removed again.
    ///
    /// ```
    /// use mm_vma::sim::SimWorld;
    /// use mm_vma::{MapRequest, Protection};
    ///
    /// let world = SimWorld::new(1 << 20);
    /// let mut space = world.space();
    /// let buf = space.mmap(MapRequest::anonymous(3 * 4096, Protection::READ | Protection::WRITE)).unwrap();
    /// assert!(buf.is_aligned(4096));
    /// space.write_user(buf + 4096, b"hello").unwrap(); // faults the page in
    /// let mut back = [0u8; 5];
    /// space.read_user(buf + 4096, &mut back).unwrap();
    /// assert_eq!(&back, b"hello");
    /// ```
    pub fn mmap(&mut self, req: MapRequest) -> Result<VirtAddr, SpaceError> {
        let len = page_up(req.len)?;
        if len == 0 {
            return Err(VmaError::BadRange.into());
        }
        if let Backing::Object { offset, .. } = req.backing {
            if offset % PAGE_BYTES != 0 {
                return Err(VmaError::Unaligned(offset).into());
            }
        }
        let start = match req.placement {
            Placement::Anywhere => self.find_gap(len, req.align)?,
            Placement::Hint(h) => {
                let ok = self.check_range(h, len).is_ok_and(|end| self.is_free(h, end) && self.clear_of_stacks(end));
                if ok {
                    h
                } else {
                    self.find_gap(len, req.align)?
                }
            }
            Placement::Fixed(a) => {
                self.check_range(a, len)?;
                self.munmap(a, len)?;
                a
            }
            Placement::FixedNoReplace(a) => {
                self.check_range(a, len)?;
                a
            }
        };
        let vma = Vma { start, end: start + len, prot: req.prot, flags: req.flags, backing: req.backing };
        self.vmas.insert(vma)?;
        let shared_anon = req.flags.contains(VmaFlags::SHARED) && req.backing == Backing::Anonymous;
        if req.populate || shared_anon || req.flags.contains(VmaFlags::LOCKED) {
            if let Err(e) = self.populate(start, start + len) {
                self.munmap(start, len).expect("the new mapping can be removed");
                return Err(SpaceError::Fault(e));
            }
        }
        Ok(start)
    }

    fn populate(&mut self, start: VirtAddr, end: VirtAddr) -> Result<(), FaultError> {
        let mut page = start;
        while page < end {
            let v = self.vmas.find(page).expect("populating a mapped range");
            let write = v.prot.contains(Protection::WRITE);
            self.fault_page(page, write, &v)?;
            page += PAGE_BYTES;
        }
        self.finish();
        Ok(())
    }

    /// Removes every mapping of `[start, start + len)` (`munmap`; `len` is
    /// rounded up to pages), splitting VMAs that straddle its ends. Unmapped
    /// parts of the range are fine.
    pub fn munmap(&mut self, start: VirtAddr, len: u64) -> Result<(), SpaceError> {
        let len = page_up(len)?;
        self.check_range(start, len)?;
        self.vmas.remove_range(start, len, |_| {})?;
        self.unmap_pages(start, len);
        self.finish();
        Ok(())
    }

    /// Sets the rights of `[start, start + len)`, which must be mapped
    /// throughout (`mprotect`), splitting and merging VMAs as needed. Pages
    /// a private mapping shares with others (after fork, the zero page, a
    /// pager's pages) stay read-only so writes still copy them.
    ///
    /// ```
    /// use mm_vma::sim::SimWorld;
    /// use mm_vma::{FaultError, MapRequest, Protection};
    ///
    /// let world = SimWorld::new(1 << 20);
    /// let mut space = world.space();
    /// let rw = Protection::READ | Protection::WRITE;
    /// let a = space.mmap(MapRequest::anonymous(2 * 4096, rw)).unwrap();
    /// space.mprotect(a + 4096, 4096, Protection::READ).unwrap(); // splits the VMA
    /// assert_eq!(space.vmas().count(), 2);
    /// assert!(space.write_user(a, b"ok").is_ok());
    /// assert!(matches!(space.write_user(a + 4096, b"no"), Err(FaultError::Protection { .. })));
    /// ```
    pub fn mprotect(&mut self, start: VirtAddr, len: u64, prot: Protection) -> Result<(), SpaceError> {
        let len = page_up(len)?;
        let end = self.check_range(start, len)?;
        self.vmas.protect(start, len, prot)?;
        let vmas: Vec<Vma> = self.vmas.overlapping(start, end).collect();
        let mm = self.mm.clone();
        let pt = self.pt.as_mut().expect("present until drop");
        for v in vmas {
            let (s, e) = (v.start.max(start), v.end.min(end));
            let flags = page_flags(&v);
            let private = !v.flags.contains(VmaFlags::SHARED);
            // Write-tracked pages of a shared mapping become writable only
            // through a write fault that reports the store.
            let tracked = match v.backing {
                Backing::Object { object, .. } if !private => {
                    mm.hooks.pager.as_ref().is_some_and(|p| p.tracks_writes(object))
                }
                _ => false,
            };
            let flush = mm.with_sharing(|shared| {
                pt.update_flags(s, e - s, |m| {
                    let keep_ro = (private && shared(m.frame)) || (tracked && !m.flags.contains(MapFlags::WRITE));
                    if keep_ro {
                        flags - MapFlags::WRITE
                    } else {
                        flags
                    }
                })
            });
            self.gather.batch.add(flush.expect("VMA flags always include READ"));
        }
        self.finish();
        Ok(())
    }

    /// Write-protects the page holding `addr` if it is mapped writable, and
    /// says whether it was: one mapping's part of writeback's
    /// `page_mkclean` (the kernel finds the mappings of a page through the
    /// reverse map). The next store faults and, for a write-tracked page
    /// of a shared mapping ([`Pager::tracks_writes`](crate::Pager::tracks_writes)),
    /// is reported to the pager again before the entry becomes writable.
    pub fn write_protect_page(&mut self, addr: VirtAddr) -> bool {
        let page = VirtAddr::new(addr.as_u64() & !(PAGE_BYTES - 1)).expect("a page of a canonical address");
        let writable = matches!(
            self.page_table().lookup(page),
            Ok(mm_paging::Lookup::Mapped(t)) if t.flags.contains(MapFlags::WRITE) && t.size == PageSize::Size4KiB
        );
        if writable {
            let pt = self.pt.as_mut().expect("present until drop");
            let flush = pt.update_flags(page, PAGE_BYTES, |m| m.flags - MapFlags::WRITE).expect("mapped");
            self.gather.batch.add(flush);
            self.finish();
        }
        writable
    }

    /// Sets the program break (`brk`): grows or shrinks the heap that
    /// starts at the layout's `brk_base`. Returns the new break. A break
    /// outside `[brk_base, high]` (0 included) is refused with
    /// [`SpaceError::OutOfRange`]; [`current_brk`](Self::current_brk) reads
    /// the break. (The Linux system call reports failure by returning the
    /// old break, and answers `brk(0)` with the current one.)
    pub fn brk(&mut self, new: VirtAddr) -> Result<VirtAddr, SpaceError> {
        if new < self.layout.brk_base || new > self.layout.high {
            return Err(SpaceError::OutOfRange);
        }
        let round_up = |a: VirtAddr| a.align_up(PAGE_BYTES).map_err(|_| SpaceError::Vma(VmaError::BadRange));
        let old_end = round_up(self.brk)?;
        let new_end = round_up(new)?;
        if new_end > old_end {
            if !self.is_free(old_end, new_end) || !self.clear_of_stacks(new_end) {
                return Err(SpaceError::NoSpace);
            }
            self.vmas.insert(Vma::anonymous(old_end, new_end, Protection::READ | Protection::WRITE))?;
        } else if new_end < old_end {
            self.munmap(new_end, old_end - new_end)?;
        }
        self.brk = new;
        Ok(new)
    }

    /// Resizes the mapping at `[old, old + old_len)`, which must lie in one
    /// VMA (`mremap`): shrinking unmaps the tail; growing extends in place
    /// when the range above is free, else moves the pages (their page-table
    /// entries, not their contents) to a new range if `mode` allows.
    /// Returns the new start.
    pub fn mremap(&mut self, old: VirtAddr, old_len: u64, new_len: u64, mode: Remap) -> Result<VirtAddr, SpaceError> {
        let old_len = page_up(old_len)?;
        let new_len = page_up(new_len)?;
        let old_end = self.check_range(old, old_len)?;
        if new_len == 0 {
            return Err(VmaError::BadRange.into());
        }
        let v = self.vmas.find(old).filter(|v| v.end >= old_end).ok_or(VmaError::NotMapped(old))?;
        if let Remap::Fixed(to) = mode {
            let to_end = self.check_range(to, new_len)?;
            if to < old_end && old < to_end {
                return Err(VmaError::Overlap { start: old, end: old_end }.into());
            }
            if self.vmas.count() + 2 > self.vmas.limit() {
                return Err(VmaError::TooManyMappings { limit: self.vmas.limit() }.into());
            }
            self.munmap(to, new_len)?;
            let moved = old_len.min(new_len);
            // The source's tail goes once the move succeeded: a failed move
            // leaves the source whole.
            self.move_pages(&v, old, moved, to, new_len)?;
            if new_len < old_len {
                self.munmap(old + new_len, old_len - new_len)?;
            }
            return Ok(to);
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.munmap(old + new_len, old_len - new_len)?;
            }
            return Ok(old);
        }
        if wraps(old, new_len) {
            return Err(VmaError::BadRange.into());
        }
        // The new end, if the mapping can grow in place to it (an end past
        // the half is past the user range too).
        let grown = old.checked_add(new_len).filter(|&new_end| {
            old_end == v.end
                && !v.flags.contains(VmaFlags::NO_EXPAND)
                && new_end <= self.layout.high
                && self.is_free(old_end, new_end)
                && self.clear_of_stacks(new_end)
        });
        if let Some(new_end) = grown {
            self.vmas.expand(v.start, v.start, new_end)?;
            self.populate_if_shared_anon(&v, old_end, new_end)?;
            return Ok(old);
        }
        if mode == Remap::InPlace {
            return Err(SpaceError::NoSpace);
        }
        if self.vmas.count() + 2 > self.vmas.limit() {
            return Err(VmaError::TooManyMappings { limit: self.vmas.limit() }.into());
        }
        let to = self.find_gap(new_len, 0)?;
        self.move_pages(&v, old, old_len, to, new_len)?;
        Ok(to)
    }

    fn populate_if_shared_anon(&mut self, v: &Vma, start: VirtAddr, end: VirtAddr) -> Result<(), SpaceError> {
        if v.flags.contains(VmaFlags::SHARED) && v.backing == Backing::Anonymous {
            self.populate(start, end).map_err(SpaceError::Fault)?;
        }
        Ok(())
    }

    /// Moves the pages of `[old, old + len)` (inside `v`) to `to`, in a new
    /// VMA of `new_len` bytes with `v`'s attributes.
    fn move_pages(&mut self, v: &Vma, old: VirtAddr, len: u64, to: VirtAddr, new_len: u64) -> Result<(), SpaceError> {
        let backing = match v.backing {
            Backing::Object { object, offset } => Backing::Object { object, offset: offset + (old - v.start) },
            Backing::Anonymous => Backing::Anonymous,
        };
        let moved = Vma { start: to, end: to + new_len, backing, ..*v };
        self.vmas.insert(moved)?;
        let mut entries = Vec::new();
        self.page_table().for_each_entry(old, len, |e| entries.push(e)).expect("checked range");
        let mut failed = None;
        for e in &entries {
            let r = match *e {
                Entry::Page(m) => {
                    let at = to + (m.va - old);
                    self.pt().map(at, m.frame, PageSize::Size4KiB, m.flags).map(|f| f.ignore())
                }
                Entry::Swap { va: from, slot: entry } => {
                    let at = to + (from - old);
                    self.pt().set_swap(at, entry).map(|(_, f)| f.ignore())
                }
            };
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            // Undo: the copies go (their pages still belong to `old`).
            // (The copies were live: another thread may have used them.)
            let flush = self.pt().unmap_present_deferred(to, new_len, |_| {}).expect("4 KiB pages");
            self.gather.batch.add(flush);
            self.vmas.remove_range(to, new_len, |_| {}).expect("removing a whole new VMA adds none");
            self.finish();
            return Err(space(paging(e)));
        }
        // The old mappings' dirty bits as they were removed (a write since
        // the walk above set one the copies lack) move to their pages.
        let mut dirtied = Vec::new();
        let flush = self
            .pt()
            .unmap_present_deferred(old, len, |u| {
                if let Unmapped::Page { frame, flags, .. } = u {
                    if flags.contains(MapFlags::DIRTY) {
                        dirtied.push(frame);
                    }
                }
            })
            .expect("4 KiB pages");
        if !entries.is_empty() {
            self.gather.batch.add(flush);
        }
        for frame in dirtied {
            self.mm.set_dirty(frame);
        }
        for e in &entries {
            if let Entry::Page(m) = *e {
                self.mm.move_map(m.frame, self.id, m.va, to + (m.va - old));
            }
        }
        self.vmas.remove_range(old, len, |_| {})?;
        self.finish();
        self.populate_if_shared_anon(&moved, to + len, to + new_len)
    }

    /// Maps a stack of `len` bytes ending at `top`, growing down on faults
    /// below it (up to the layout's stack limit, keeping the guard gap).
    /// Returns its start.
    pub fn map_stack(&mut self, top: VirtAddr, len: u64) -> Result<VirtAddr, SpaceError> {
        let len = page_up(len)?;
        let start = top.checked_sub(len).ok_or(SpaceError::OutOfRange)?;
        let req = MapRequest::anonymous(len, Protection::READ | Protection::WRITE)
            .flags(VmaFlags::GROWS_DOWN)
            .at(Placement::FixedNoReplace(start));
        self.mmap(req)
    }
}
