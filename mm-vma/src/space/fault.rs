//! Page faults: the zero page, demand-zero pages, copy-on-write, pager
//! pages, swap-ins, stack growth, and refusals with a reason.

use mm_paging::{Lookup, MapFlags, PagingArch, Unmapped};
use mm_types::{FrameProvider, PageKind, PageSize, PhysAddr, PhysMemory, SwapSlot, VirtAddr, PAGE_BYTES};

use super::{allows, hook, page_flags, page_of, paging, Access, AddressSpace, FaultError, FaultKind};
use crate::mm::{FaultCount, HookError};
use crate::vma::{Backing, Vma, VmaFlags};

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> AddressSpace<A, M, F> {
    /// Handles a page fault at `addr` for `access` from user mode: grows a
    /// stack, checks the VMA's rights, and maps the page (zero page, a new
    /// zeroed page, a copy, the pager's page, or the page back from swap).
    ///
    /// ```
    /// use mm_vma::sim::SimWorld;
    /// use mm_vma::{Access, FaultError, FaultKind, MapRequest, Protection};
    ///
    /// let world = SimWorld::new(1 << 20);
    /// let mut space = world.space();
    /// let a = space.mmap(MapRequest::anonymous(4096, Protection::READ | Protection::WRITE)).unwrap();
    /// assert_eq!(space.fault(a, Access::Read), Ok(FaultKind::ZeroPage)); // the shared zero page
    /// assert_eq!(space.fault(a, Access::Write), Ok(FaultKind::CowCopied)); // a page of its own
    /// assert_eq!(space.fault(a, Access::Write), Ok(FaultKind::Spurious)); // already writable
    /// assert_eq!(space.fault(a + 4096, Access::Read), Err(FaultError::NoMapping { addr: a + 4096 }));
    /// ```
    pub fn fault(&mut self, addr: VirtAddr, access: Access) -> Result<FaultKind, FaultError> {
        let r = self.fault_inner(addr, access);
        self.finish();
        if r.is_err() {
            self.mm.count(FaultCount::Refused);
        }
        r
    }

    fn fault_inner(&mut self, addr: VirtAddr, access: Access) -> Result<FaultKind, FaultError> {
        if addr >= self.layout.high {
            return Err(FaultError::NoMapping { addr });
        }
        let v = match self.vmas.find(addr) {
            Some(v) => v,
            None => self.grow_stack(addr, access)?,
        };
        if !allows(v.prot, access) {
            return Err(FaultError::Protection { addr, access, prot: v.prot });
        }
        self.fault_page(page_of(addr), access == Access::Write, &v)
    }

    /// Grows the stack above `addr` down to it for `access`; a refused
    /// fault leaves the stack as it was.
    fn grow_stack(&mut self, addr: VirtAddr, access: Access) -> Result<Vma, FaultError> {
        let stack = self
            .vmas
            .find_from(addr)
            .filter(|n| n.flags.contains(VmaFlags::GROWS_DOWN))
            .ok_or(FaultError::NoMapping { addr })?;
        if !allows(stack.prot, access) {
            return Err(FaultError::Protection { addr, access, prot: stack.prot });
        }
        let page = page_of(addr);
        if stack.end - page > self.layout.stack_limit {
            return Err(FaultError::StackLimit { addr, limit: self.layout.stack_limit });
        }
        if page < self.layout.low {
            return Err(FaultError::NoMapping { addr });
        }
        if let Some(p) = self.vmas.prev(addr) {
            if !p.prot.is_empty() && p.end.checked_add(self.layout.stack_guard_gap).is_none_or(|e| e > page) {
                return Err(FaultError::GuardGap { addr, stack: stack.start });
            }
        }
        let v = self.vmas.expand(stack.start, page, stack.end).map_err(|_| FaultError::OutOfMemory)?;
        self.mm.count(FaultCount::StackGrowth);
        Ok(v)
    }

    /// Resolves a fault on `page` inside `v` (rights already checked).
    pub(super) fn fault_page(&mut self, page: VirtAddr, write: bool, v: &Vma) -> Result<FaultKind, FaultError> {
        let lookup = self.page_table().lookup(page).expect("a user address");
        match lookup {
            Lookup::Mapped(t) => {
                if !write || t.flags.contains(MapFlags::WRITE) {
                    self.mm.count(FaultCount::Spurious);
                    return Ok(FaultKind::Spurious);
                }
                if v.flags.contains(VmaFlags::SHARED) {
                    if let Backing::Object { object, offset } = v.backing {
                        // A write-tracked page learns of the store first.
                        if let Some(pager) = self.mm.hooks.pager.clone().filter(|p| p.tracks_writes(object)) {
                            pager.dirtied(object, offset + (page - v.start)).map_err(hook)?;
                            self.mm.count(FaultCount::WriteNotify);
                        }
                    }
                    let f = self.pt().update_flags(page, PAGE_BYTES, |m| m.flags | MapFlags::WRITE).expect("mapped");
                    self.gather.batch.add(f);
                    self.mm.count(FaultCount::Spurious);
                    return Ok(FaultKind::Spurious);
                }
                self.copy_on_write(page, t.frame, v)
            }
            Lookup::Swapped(entry) => self.swap_in(page, entry, write, v),
            Lookup::Unmapped => match v.backing {
                Backing::Anonymous => self.demand_zero(page, write, v),
                Backing::Object { object, offset } => {
                    self.pager_fault(page, write, v, object, offset + (page - v.start))
                }
            },
        }
    }

    fn new_page(&mut self, copy_of: Option<PhysAddr>) -> Result<PhysAddr, FaultError> {
        let frame = self.mm.alloc_frame().ok_or(FaultError::OutOfMemory)?;
        let block = mm_types::FrameBlock::new(mm_types::FrameNumber::containing(frame), mm_types::Order::ZERO)
            .expect("a frame is a valid block");
        let r = match copy_of {
            // SAFETY: `frame` was just allocated and is ours alone; `src` is mapped read-only
            // everywhere (a shared page), so nobody writes it.
            Some(src) if src != self.mm.zero_page() => unsafe { self.mm.mem.copy_frame(src, frame) },
            // SAFETY: `frame` was just allocated and is ours alone.
            _ => unsafe { self.mm.mem.zero_block(block) },
        };
        if r.is_err() {
            self.mm.free_frame(frame);
            return Err(FaultError::Unreachable { frame: frame.as_u64() });
        }
        Ok(frame)
    }

    pub(super) fn map_new(
        &mut self,
        page: VirtAddr,
        frame: PhysAddr,
        flags: MapFlags,
        kind: PageKind,
    ) -> Result<(), FaultError> {
        match self.pt().map(page, frame, PageSize::Size4KiB, flags) {
            Ok(f) => {
                f.ignore();
                self.note_mapped(frame, kind, page);
                Ok(())
            }
            Err(e) => Err(paging(e)),
        }
    }

    fn demand_zero(&mut self, page: VirtAddr, write: bool, v: &Vma) -> Result<FaultKind, FaultError> {
        let flags = page_flags(v);
        if !write && !v.flags.contains(VmaFlags::SHARED) && self.layout.zero_page {
            let zero = self.mm.zero_page();
            self.map_new(page, zero, flags - MapFlags::WRITE, PageKind::Anon)?;
            self.mm.count(FaultCount::ZeroPage);
            return Ok(FaultKind::ZeroPage);
        }
        let frame = self.new_page(None)?;
        if let Err(e) = self.map_new(page, frame, flags, PageKind::Anon) {
            self.mm.free_frame(frame);
            return Err(e);
        }
        self.mm.count(FaultCount::DemandZero);
        Ok(FaultKind::DemandZero)
    }

    fn copy_on_write(&mut self, page: VirtAddr, old: PhysAddr, v: &Vma) -> Result<FaultKind, FaultError> {
        let flags = page_flags(v);
        if !self.mm.is_shared(old) {
            let f = self.pt().update_flags(page, PAGE_BYTES, |_| flags).expect("mapped");
            self.gather.batch.add(f);
            self.mm.count(FaultCount::CowReused);
            return Ok(FaultKind::CowReused);
        }
        let frame = self.new_page(Some(old))?;
        let (gone, f) = self.pt().replace(page, frame, flags).expect("mapped");
        self.gather.batch.add(f);
        self.note_unmapped(Unmapped::Page { va: gone.va, frame: gone.frame, size: gone.size, flags: gone.flags });
        self.note_mapped(frame, PageKind::Anon, page);
        self.mm.count(FaultCount::CowCopied);
        Ok(FaultKind::CowCopied)
    }

    fn swap_in(&mut self, page: VirtAddr, entry: SwapSlot, write: bool, v: &Vma) -> Result<FaultKind, FaultError> {
        let swap = self.mm.hooks.swap.clone().ok_or(FaultError::Hook(HookError::Unavailable))?;
        let frame = swap.swap_in(entry).map_err(hook)?;
        // Private pages start read-only: whether the frame is still shared
        // is known once the device has dropped the entry's reference.
        let mut flags = page_flags(v);
        if !v.flags.contains(VmaFlags::SHARED) {
            flags -= MapFlags::WRITE;
        }
        self.pt().replace_swap(page, frame, flags).expect("the entry was just read");
        self.counts.swapped -= 1;
        self.note_mapped(frame, PageKind::Anon, page);
        swap.swapped_in(entry, frame);
        self.mm.count(FaultCount::SwapIn);
        if write && !flags.contains(MapFlags::WRITE) {
            self.copy_on_write(page, frame, v)?;
        }
        Ok(FaultKind::SwapIn)
    }

    fn pager_fault(
        &mut self,
        page: VirtAddr,
        write: bool,
        v: &Vma,
        object: u32,
        offset: u64,
    ) -> Result<FaultKind, FaultError> {
        let pager = self.mm.hooks.pager.clone().ok_or(FaultError::Hook(HookError::Unavailable))?;
        let frame = pager.page(object, offset).map_err(hook)?;
        let flags = page_flags(v);
        self.mm.count(FaultCount::Pager);
        if v.flags.contains(VmaFlags::SHARED) {
            // A write-tracked page is mapped writable only by a write, which
            // the pager hears of first.
            let flags = if !pager.tracks_writes(object) {
                flags
            } else if write {
                pager.dirtied(object, offset).map_err(hook)?;
                self.mm.count(FaultCount::WriteNotify);
                flags
            } else {
                flags - MapFlags::WRITE
            };
            self.map_new(page, frame, flags, PageKind::File)?;
        } else if !write {
            self.map_new(page, frame, flags - MapFlags::WRITE, PageKind::File)?;
        } else {
            let copy = self.new_page(Some(frame))?;
            if let Err(e) = self.map_new(page, copy, flags, PageKind::Anon) {
                self.mm.free_frame(copy);
                return Err(e);
            }
            self.mm.count(FaultCount::CowCopied);
        }
        if !write {
            self.map_around(page, v, object, offset, &*pager);
        }
        Ok(FaultKind::Pager)
    }

    /// Fault-around after a read fault of `page` (byte `offset` of
    /// `object`): the pager's pages in memory near it, inside `v`, whose
    /// entries are empty, mapped read-only (a store faults as for any
    /// read-only entry: copy-on-write, or write-notify).
    fn map_around(&mut self, page: VirtAddr, v: &Vma, object: u32, offset: u64, pager: &dyn crate::Pager) {
        let mut near = alloc::vec::Vec::new();
        pager.cached_around(object, offset, &mut |off, frame| near.push((off, frame)));
        let flags = page_flags(v) - MapFlags::WRITE;
        for (off, frame) in near {
            // The neighbour's address, if it lies inside the VMA.
            let va = if off >= offset {
                page.as_u64().checked_add(off - offset)
            } else {
                page.as_u64().checked_sub(offset - off)
            };
            let Some(va) = va.and_then(|a| VirtAddr::new(a).ok()) else { continue };
            if va == page || va < v.start || va >= v.end || off % PAGE_BYTES != 0 {
                continue;
            }
            if !matches!(self.page_table().lookup(va), Ok(Lookup::Unmapped)) {
                continue;
            }
            // A page table that cannot be allocated now only means one
            // fault more later.
            if self.map_new(va, frame, flags, PageKind::File).is_ok() {
                self.mm.count(FaultCount::MappedAround);
            }
        }
    }
}
