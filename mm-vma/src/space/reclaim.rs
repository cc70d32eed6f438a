//! What reclaim asks of an address space: whether a page may be evicted,
//! its accessed bit, and the eviction itself.

use mm_paging::{AccessBits, PagingArch, Unmapped};
use mm_types::{FrameProvider, PageKind, PageSize, PhysAddr, PhysMemory, SwapSlot, VirtAddr, PAGE_BYTES};

use super::{page_of, paging, space, AddressSpace, SpaceError};
use crate::vma::VmaFlags;

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> AddressSpace<A, M, F> {
    /// Whether the page at `addr` may be evicted: mapped in a VMA that is
    /// not locked.
    pub fn is_evictable(&self, addr: VirtAddr) -> bool {
        self.vmas.find(addr).is_some_and(|v| !v.flags.contains(VmaFlags::LOCKED))
    }

    /// Tests and clears the accessed bit of the page at `addr` (reclaim's
    /// reference harvesting); `false` if nothing is mapped there.
    pub fn test_and_clear_young(&mut self, addr: VirtAddr) -> bool {
        let mut young = false;
        let f = self
            .page_table()
            .harvest(page_of(addr), PAGE_BYTES, AccessBits::ACCESSED, |_, _, _| young = true)
            .expect("a user page");
        // x86 does not need a flush to clear the accessed bit (a stale TLB
        // entry only delays the next setting), as Linux's
        // ptep_clear_flush_young on x86 does not flush.
        f.ignore();
        young
    }

    /// Evicts the page at `addr` for reclaim: the mapping is removed (and
    /// replaced by `swap`, for an anonymous page that was written to swap;
    /// a pager's page is refused a swap entry),
    /// the TLB flushed, and the reverse-map record dropped. Returns the
    /// mapping that was removed (its dirty bit says whether a pager's page
    /// must be written back). Reclaim pins the frame ([`MmContext::pin`](crate::MmContext::pin)) before
    /// unmapping it from its users, so it is not freed until reclaim is done
    /// with it.
    pub fn evict(&mut self, addr: VirtAddr, swap: Option<SwapSlot>) -> Result<mm_paging::Mapping, SpaceError> {
        let gone = self.evict_deferred(addr, swap)?;
        self.finish();
        Ok(gone)
    }

    /// [`evict`](Self::evict) with its TLB flush left for later, so that a
    /// batch of evictions in this space pays one flush (one shootdown on
    /// SMP) instead of one each. The page table no longer maps the page
    /// when this returns, but until
    /// [`flush_deferred`](Self::flush_deferred) (or the end of the space's
    /// next operation, which flushes whatever is gathered) a CPU may still
    /// reach the frame through its TLB, and the reverse map still counts
    /// the mapping ([`MmContext::map_count`](crate::MmContext::map_count)):
    /// the caller must not read the page as final, nor free it, before the
    /// flush.
    ///
    /// ```
    /// use mm_vma::sim::SimWorld;
    /// use mm_vma::{Access, MapRequest, Protection};
    ///
    /// let world = SimWorld::new(4 << 20);
    /// let mut s = world.space();
    /// let a = s.mmap(MapRequest::anonymous(8192, Protection::READ | Protection::WRITE)).unwrap();
    /// let f = s.resolve(a, Access::Write).unwrap();
    /// let g = s.resolve(a + 4096, Access::Write).unwrap();
    /// world.mm.pin(f).unwrap(); // reclaim's own references
    /// world.mm.pin(g).unwrap();
    /// s.evict_deferred(a, None).unwrap();
    /// s.evict_deferred(a + 4096, None).unwrap();
    /// assert!(s.page_table().translate(a).is_none(), "unmapped at once");
    /// assert_eq!(world.mm.map_count(f), 1, "counted until the flush");
    /// s.flush_deferred();
    /// assert_eq!((world.mm.map_count(f), world.mm.map_count(g)), (0, 0));
    /// world.mm.unpin(f);
    /// world.mm.unpin(g);
    /// ```
    pub fn evict_deferred(&mut self, addr: VirtAddr, swap: Option<SwapSlot>) -> Result<mm_paging::Mapping, SpaceError> {
        let page = page_of(addr);
        if !self.is_evictable(page) {
            return Err(SpaceError::NotEvictable);
        }
        let t = self.page_table().translate(page).ok_or(SpaceError::NotEvictable)?;
        if t.frame == self.mm.zero_page() {
            return Err(SpaceError::NotEvictable);
        }
        // A pager's page is dropped (the pager has it), never swapped.
        if swap.is_some() && self.mm.kind_of(t.frame) != Some(PageKind::Anon) {
            return Err(SpaceError::NotEvictable);
        }
        let gone = match swap {
            Some(entry) => {
                let (gone, f) = self.pt().set_swap(page, entry).map_err(|e| space(paging(e)))?;
                self.gather.batch.add(f);
                self.counts.swapped += 1;
                gone.expect("the page was present")
            }
            None => self.unmap_present_page(page),
        };
        self.note_unmapped(Unmapped::Page { va: gone.va, frame: gone.frame, size: gone.size, flags: gone.flags });
        Ok(gone)
    }

    /// Ends a batch of [`evict_deferred`](Self::evict_deferred) calls: one
    /// TLB flush through the space's hook, then what the evictions
    /// released (reverse-map records, dirty bits moved to the pages, page
    /// tables emptied) goes. Nothing to do if nothing is gathered.
    pub fn flush_deferred(&mut self) {
        self.finish();
    }

    /// Removes the mapping of `frame` at `addr` if that is what is mapped
    /// there, whatever the VMA's flags: a pager's page is leaving the
    /// pager (a file truncated, a cached page reclaimed), and the next
    /// access faults and asks the pager again. Returns the mapping removed
    /// (its dirty bit says whether it was written since it was made
    /// writable), `None` if `addr` does not map `frame` with a 4 KiB page.
    pub fn zap_page(&mut self, addr: VirtAddr, frame: PhysAddr) -> Option<mm_paging::Mapping> {
        let page = page_of(addr);
        let t = self.page_table().translate(page)?;
        if t.frame != frame || t.size != PageSize::Size4KiB || frame == self.mm.zero_page() {
            return None;
        }
        let gone = self.unmap_present_page(page);
        self.note_unmapped(Unmapped::Page { va: gone.va, frame: gone.frame, size: gone.size, flags: gone.flags });
        self.finish();
        Some(gone)
    }

    /// Unmaps the present 4 KiB page at `page`, its flush gathered.
    fn unmap_present_page(&mut self, page: VirtAddr) -> mm_paging::Mapping {
        let mut gone = None;
        let f = self.pt().unmap_present_deferred(page, PAGE_BYTES, |u| gone = Some(u)).expect("4 KiB pages");
        self.gather.batch.add(f);
        match gone {
            Some(Unmapped::Page { va, frame, size, flags }) => mm_paging::Mapping { va, frame, size, flags },
            _ => unreachable!("the page was present"),
        }
    }
}
