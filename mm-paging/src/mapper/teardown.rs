//! Tearing a hierarchy down: every mapping and swap entry reported, every
//! table page freed; and loading a hierarchy into CR3 on bare metal.

use core::sync::atomic::Ordering;

use mm_types::{FrameProvider, PhysAddr, PhysMemory, VirtAddr};

use super::{mode_of, page_size, PageTable, Unmapped};
use crate::arch::{level_span, PagingArch};

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> PageTable<A, M, F> {
    /// Removes every mapping and swap entry (reporting each to `removed`) and
    /// frees every table page, the root included, and the tables deferring
    /// unmaps left unlinked; root entries shared with
    /// [`new_sharing`](Self::new_sharing) are only dropped.
    pub fn destroy(mut self, mut removed: impl FnMut(Unmapped)) {
        self.free_unlinked_tables();
        for (i, slot) in self.table(self.root).iter().enumerate() {
            if self.is_borrowed(i) {
                slot.store(0, Ordering::Relaxed);
            }
        }
        self.clear_table(self.root, self.arch.levels(), 0, &mut removed);
        self.free_table(self.root);
    }

    fn clear_table(&self, t: PhysAddr, level: u8, base: u64, removed: &mut impl FnMut(Unmapped)) {
        let span = level_span(level);
        for (i, slot) in self.table(t).iter().enumerate() {
            let e = slot.swap(0, Ordering::Relaxed);
            if e == 0 {
                continue;
            }
            let v = base.wrapping_add(i as u64 * span);
            let va = VirtAddr::new_sign_extended(v, mode_of(self.arch.levels()));
            if let Some(swap) = self.arch.swap_of(e) {
                removed(Unmapped::Swap { va, slot: swap });
            } else if !self.arch.is_present(e) {
                continue;
            } else if self.arch.is_leaf(e, level) {
                removed(Unmapped::Page {
                    va,
                    frame: self.arch.leaf_phys(e, level),
                    size: page_size(level),
                    flags: self.arch.leaf_flags(e, level),
                });
            } else {
                let child = self.arch.table_phys(e);
                self.clear_table(child, level - 1, v, removed);
                self.free_table(child);
            }
        }
    }

    /// Counts the table pages the hierarchy owns (root included; tables
    /// under shared root entries are not counted).
    pub fn table_pages(&self) -> u64 {
        let level = self.arch.levels();
        1 + self
            .table(self.root)
            .iter()
            .enumerate()
            .filter(|&(i, _)| !self.is_borrowed(i))
            .map(|(_, s)| s.load(Ordering::Relaxed))
            .filter(|&e| self.arch.is_present(e) && !self.arch.is_leaf(e, level))
            .map(|e| self.count_tables(self.arch.table_phys(e), level - 1))
            .sum::<u64>()
    }

    fn count_tables(&self, t: PhysAddr, level: u8) -> u64 {
        if level == 1 {
            return 1;
        }
        1 + self
            .table(t)
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&e| self.arch.is_present(e) && !self.arch.is_leaf(e, level))
            .map(|e| self.count_tables(self.arch.table_phys(e), level - 1))
            .sum::<u64>()
    }

    /// Loads this hierarchy into CR3. Bare metal only.
    ///
    /// # Safety
    ///
    /// Must run at CPL 0; the hierarchy must map the running code, its stack
    /// and everything it will touch, in the paging mode the CPU is in.
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    pub unsafe fn activate(&self) {
        use x86_64::registers::control::{Cr3, Cr3Flags};
        use x86_64::structures::paging::PhysFrame;
        let frame = PhysFrame::containing_address(self.root.into());
        // SAFETY: the caller guarantees CPL 0 and a hierarchy that maps everything in use.
        unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    }
}
