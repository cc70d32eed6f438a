//! Fork: the VMAs copied, private pages shared copy-on-write, swap
//! entries duplicated.

use alloc::vec::Vec;

use mm_paging::{Entry, MapFlags, PagingArch};
use mm_types::{FrameProvider, PageKind, PhysMemory};

use super::{hook, paging, space, AddressSpace, SpaceError};
use crate::vma::{Vma, VmaFlags};

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> AddressSpace<A, M, F> {
    /// Duplicates this address space (`fork`): same VMAs and break; shared
    /// mappings share their pages; private pages are shared copy-on-write
    /// (write-protected in both) and swap entries are duplicated. On failure
    /// this space is unchanged.
    ///
    /// ```
    /// use mm_vma::sim::SimWorld;
    /// use mm_vma::{MapRequest, Protection};
    ///
    /// let world = SimWorld::new(1 << 20);
    /// let mut parent = world.space();
    /// let a = parent.mmap(MapRequest::anonymous(4096, Protection::READ | Protection::WRITE)).unwrap();
    /// parent.write_user(a, b"old").unwrap();
    /// let mut child = parent.fork().unwrap();
    /// child.write_user(a, b"new").unwrap(); // copy-on-write: the parent keeps its page
    /// let mut buf = [0u8; 3];
    /// parent.read_user(a, &mut buf).unwrap();
    /// assert_eq!(&buf, b"old");
    /// ```
    pub fn fork(&mut self) -> Result<Self, SpaceError> {
        let mut child = AddressSpace::new(&self.mm, self.layout)?;
        child.vmas = self.vmas.clone();
        child.brk = self.brk;
        let vmas: Vec<Vma> = self.vmas.iter().collect();
        let mut entries = Vec::new();
        for v in &vmas {
            entries.clear();
            self.page_table().for_each_entry(v.start, v.len(), |e| entries.push(e)).expect("a VMA range");
            let private = !v.flags.contains(VmaFlags::SHARED);
            for e in &entries {
                match *e {
                    Entry::Page(m) => {
                        let mut flags = m.flags - (MapFlags::ACCESSED | MapFlags::DIRTY);
                        if private {
                            flags -= MapFlags::WRITE;
                        }
                        child.map_new(m.va, m.frame, flags, PageKind::Anon).map_err(space)?;
                    }
                    Entry::Swap { va: at, slot: entry } => {
                        let swap = self.mm.hooks.swap.clone().expect("swap entries come from a swap device");
                        swap.duplicate(entry).map_err(|e| space(hook(e)))?;
                        if let Err(e) = child.pt().set_swap(at, entry) {
                            swap.release(entry);
                            return Err(space(paging(e)));
                        }
                        child.counts.swapped += 1;
                    }
                }
            }
        }
        for v in vmas.iter().filter(|v| !v.flags.contains(VmaFlags::SHARED)) {
            let f = self.pt().update_flags(v.start, v.len(), |m| m.flags - MapFlags::WRITE).expect("READ kept");
            self.gather.batch.add(f);
        }
        self.finish();
        Ok(child)
    }
}
