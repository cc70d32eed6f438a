//! The two passes of a change to the tables. A [`Walker`] in its plan pass
//! reads, checks and counts the table pages the change needs, and cannot
//! write; in its apply pass it writes, taking those pages from the ones
//! allocated in between. Walk code is written once for both passes.

use core::sync::atomic::Ordering;

use mm_types::{FrameProvider, PhysAddr, PhysMemory};

use super::{Node, PageTable, Prealloc, Tables, Unlinked, NO_PAGE};
use crate::arch::{PagingArch, ENTRIES};
use crate::error::PagingError;

/// What a pass does.
enum Pass {
    /// Reads and checks; counts the table pages the apply pass will take.
    Plan { needed: u64 },
    /// Makes the change, with the table pages the plan counted.
    Apply { pre: Prealloc },
}

/// How a walk may go below an entry that is not a table.
#[derive(Clone, Copy)]
pub(super) struct Descend {
    /// Create a table where the entry is empty.
    create: bool,
    /// Split a huge leaf into a table of smaller pages.
    split: bool,
}

impl Descend {
    /// Only through tables that exist.
    pub const EXISTING: Descend = Descend { create: false, split: false };
    /// Creating missing tables (a map).
    pub const CREATE: Descend = Descend { create: true, split: false };
    /// Splitting huge leaves (an unmap or protect that cuts one).
    pub const SPLIT: Descend = Descend { create: false, split: true };
    /// Both (a swap entry where nothing or a huge page was).
    pub const CREATE_OR_SPLIT: Descend = Descend { create: true, split: true };
}

/// One pass of a planned change over a page table.
pub(super) struct Walker<'t, A: PagingArch, M: PhysMemory, F: FrameProvider> {
    /// The table walked.
    pub pt: &'t PageTable<A, M, F>,
    pass: Pass,
    /// The table's held pages and those this walk unlinked and held
    /// (apply pass), stored back into the table when the walk ends.
    unlinked: Unlinked,
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> PageTable<A, M, F> {
    /// Runs `walk` as a plan pass, allocates the table pages it counted,
    /// then runs it again as the apply pass, which cannot fail after a
    /// successful plan. A refused change leaves the tables as they were.
    pub(super) fn planned<R>(
        &mut self,
        mut walk: impl FnMut(&mut Walker<'_, A, M, F>) -> Result<R, PagingError>,
    ) -> Result<R, PagingError> {
        let unlinked = self.unlinked;
        let mut plan = Walker { pt: self, pass: Pass::Plan { needed: 0 }, unlinked };
        walk(&mut plan)?;
        let Pass::Plan { needed } = plan.pass else { unreachable!("a plan pass stays one") };
        let pre = self.preallocate(needed)?;
        let mut apply = Walker { pt: self, pass: Pass::Apply { pre }, unlinked };
        let r = walk(&mut apply);
        debug_assert!(r.is_ok(), "apply failed after a successful plan");
        let unlinked = apply.unlinked;
        if let Pass::Apply { pre } = apply.pass {
            debug_assert_eq!(pre.head, NO_PAGE, "plan counted more tables than apply used");
            self.release(pre);
        }
        self.unlinked = unlinked;
        r
    }
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> Walker<'_, A, M, F> {
    /// Whether this is the apply pass (side effects beyond the tables, such
    /// as reporting what an unmap removed, happen only in it).
    #[inline]
    pub fn applying(&self) -> bool {
        matches!(self.pass, Pass::Apply { .. })
    }

    /// The entry `idx` of a node at `level`.
    #[inline]
    pub fn entry(&self, node: Node, level: u8, idx: usize) -> u64 {
        self.pt.entry(node, level, idx)
    }

    /// Writes entry `idx` of a real table (apply pass; the plan pass writes
    /// nothing).
    #[inline]
    pub fn store(&self, node: Node, idx: usize, value: u64) {
        if self.applying() {
            self.pt.store(node, idx, value);
        }
    }

    /// Replaces a present leaf at entry `idx` (apply pass) and returns the
    /// entry it held then, with any accessed or dirty bit another CPU's MMU
    /// set since it was read; the plan pass writes nothing and returns the
    /// entry as it is.
    #[inline]
    pub fn exchange(&self, node: Node, level: u8, idx: usize, value: u64) -> u64 {
        if self.applying() {
            self.pt.exchange(node, idx, value)
        } else {
            self.entry(node, level, idx)
        }
    }

    /// Sets a present leaf at entry `idx` to `f` of what it holds, keeping
    /// up with bits the MMU sets meanwhile (apply pass; the plan pass
    /// writes nothing).
    #[inline]
    pub fn update(&self, node: Node, idx: usize, f: impl Fn(u64) -> u64) {
        if self.applying() {
            self.pt.update(node, idx, f);
        }
    }

    /// Unlinks the table below entry `idx` of `node` and frees it, or holds
    /// it as `tables` says (apply pass).
    pub fn free_child(&mut self, node: Node, idx: usize, child: Node, tables: Tables) {
        if let (true, Node::Real(t)) = (self.applying(), child) {
            self.pt.store(node, idx, 0);
            self.pt.retire_table(t, tables, &mut self.unlinked);
        }
    }

    /// The child node of entry `e` (index `idx` of `node`, at `level`) for
    /// a walk that goes below it: the table it points to, or, as `how`
    /// allows, a new table for an empty entry or the split of a huge leaf
    /// (counted in the plan pass, taken from the preallocation in the apply
    /// pass). `None`: the entry is a leaf, a swap entry or empty, and cannot
    /// be descended.
    pub fn child(&mut self, node: Node, level: u8, idx: usize, e: u64, how: Descend) -> Option<Node> {
        let arch = &self.pt.arch;
        let virtual_node = if e == 0 {
            if !how.create {
                return None;
            }
            Node::Empty
        } else if !arch.is_present(e) {
            return None;
        } else if !arch.is_leaf(e, level) {
            return Some(Node::Real(arch.table_phys(e)));
        } else if !how.split || level == 1 {
            return None;
        } else {
            Node::Split(e)
        };
        let pre = match &mut self.pass {
            Pass::Plan { needed } => {
                *needed += 1;
                return Some(virtual_node);
            }
            Pass::Apply { pre } => pre,
        };
        let t: PhysAddr = self.pt.take(pre);
        // A new table starts empty; a split one has every entry filled.
        let mut count = 0;
        if let Node::Split(_) = virtual_node {
            let new = self.pt.fresh_table(t);
            for (i, slot) in new.iter().enumerate() {
                slot.store(self.pt.entry(virtual_node, level - 1, i), Ordering::Relaxed);
            }
            count = ENTRIES as u16;
        }
        self.pt.store(node, idx, self.pt.with_table_count(self.pt.arch.table(t), count));
        Some(Node::Real(t))
    }

    /// Adds `delta` to the live-entry count kept in entry `idx` of `node`
    /// for the table below it (apply pass; see `PageTable::add_count`).
    /// Returns whether the count is now zero, if it is known.
    #[inline]
    pub fn add_count(&self, node: Node, idx: usize, delta: i32) -> Option<bool> {
        match node {
            Node::Real(t) if self.applying() => self.pt.add_count(&self.pt.table(t)[idx], delta),
            _ => None,
        }
    }
}
