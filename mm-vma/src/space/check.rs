//! The address space's own whole-state check: VMAs, page-table entries
//! against their VMAs, and the page counters.

use mm_paging::{Entry, MapFlags, PagingArch};
use mm_types::{FrameProvider, PhysMemory};

use super::{page_flags, AddressSpace, SpaceCounts};
use crate::vma::VmaFlags;

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> AddressSpace<A, M, F> {
    /// The size of the user range (page aligned: the layout was checked).
    fn user_len(&self) -> u64 {
        self.layout.high - self.layout.low
    }

    /// Counts present pages (zero page included) and swap entries by
    /// walking the page tables.
    pub(crate) fn census(&self) -> SpaceCounts {
        let zero = self.mm.zero_page();
        let mut c = SpaceCounts::default();
        self.page_table()
            .for_each_entry(self.layout.low, self.user_len(), |e| match e {
                Entry::Page(m) if m.frame == zero => c.zero += 1,
                Entry::Page(_) => c.resident += 1,
                Entry::Swap { .. } => c.swapped += 1,
            })
            .expect("the user range");
        c
    }

    /// Checks the VMA tree, that every page-table entry lies in a VMA and
    /// agrees with its rights (never writable where the VMA is not, never
    /// writable on a shared page in a private VMA), and the counters.
    pub fn check(&self) -> Result<(), &'static str> {
        self.vmas.check()?;
        let mut bad = None;
        // The counters are checked in the same walk (a census of its own
        // would walk every table again).
        let zero = self.mm.zero_page();
        let mut c = SpaceCounts::default();
        self.page_table()
            .for_each_entry(self.layout.low, self.user_len(), |e| {
                match e {
                    Entry::Page(m) if m.frame == zero => c.zero += 1,
                    Entry::Page(_) => c.resident += 1,
                    Entry::Swap { .. } => c.swapped += 1,
                }
                let a = match e {
                    Entry::Page(m) => m.va,
                    Entry::Swap { va, .. } => va,
                };
                let Some(v) = self.vmas.find(a) else {
                    bad = Some("a page-table entry outside every VMA");
                    return;
                };
                if let Entry::Page(m) = e {
                    let allowed = page_flags(&v);
                    if m.flags.contains(MapFlags::WRITE) && !allowed.contains(MapFlags::WRITE) {
                        bad = Some("a writable page in a VMA that is not writable");
                    }
                    if m.flags.contains(MapFlags::USER) != allowed.contains(MapFlags::USER) {
                        bad = Some("a page whose user bit disagrees with its VMA");
                    }
                    if m.flags.contains(MapFlags::WRITE)
                        && !v.flags.contains(VmaFlags::SHARED)
                        && self.mm.is_shared(m.frame)
                    {
                        bad = Some("a shared page writable in a private mapping");
                    }
                }
            })
            .expect("the user range");
        if let Some(b) = bad {
            return Err(b);
        }
        if c != self.counts {
            return Err("page counters disagree with the page tables");
        }
        Ok(())
    }
}
