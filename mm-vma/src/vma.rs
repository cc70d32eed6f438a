//! VMAs and the VMA tree: the bookkeeping half of an address space.
//!
//! A [`VmaTree`] keeps the mapped ranges of one address space with their
//! protection, flags and backing, and applies `mmap`/`munmap`/`mprotect` to
//! them with Linux's rules: a partial unmap or protection change splits a
//! VMA, adjacent VMAs that are compatible are always merged (so the tree is
//! in a canonical form: no two neighbours could be one VMA), incompatible
//! ones never are, and a map-count limit is enforced before any split. It
//! knows nothing of page tables: the address-space layer applies the same
//! changes to the pages.

use alloc::vec::Vec;

use bitflags::bitflags;
use mm_types::{Protection, VirtAddr, PAGE_BYTES};

use crate::tree::{RangeTree, TreeError};

bitflags! {
    /// VMA flags (besides the protection).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct VmaFlags: u16 {
        /// Shared mapping: writes reach the backing object and other
        /// mappers (private mappings copy on write).
        const SHARED = 1 << 0;
        /// A stack that grows down on faults below it.
        const GROWS_DOWN = 1 << 1;
        /// Pages are locked in memory (never reclaimed).
        const LOCKED = 1 << 2;
        /// Never merged with a neighbour.
        const NO_MERGE = 1 << 3;
        /// Must not be expanded by mremap or merges (device mappings).
        const NO_EXPAND = 1 << 4;
    }
}

/// What backs a VMA's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backing {
    /// Anonymous memory: zero-filled on first touch, swapped when evicted.
    Anonymous,
    /// An object (a file, a device, a shared-memory segment) that a pager
    /// serves, from `offset` bytes into it at the VMA's start.
    Object {
        /// The object, as the address space's pager registry names it.
        object: u32,
        /// Offset of the VMA's first byte in the object.
        offset: u64,
    },
}

impl Backing {
    /// The backing of the part of a VMA starting `delta` bytes in.
    fn advanced(self, delta: u64) -> Backing {
        match self {
            Backing::Anonymous => Backing::Anonymous,
            Backing::Object { object, offset } => Backing::Object { object, offset: offset + delta },
        }
    }
}

/// One mapping: a page-aligned range with its rights, flags and backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vma {
    /// First address.
    pub start: VirtAddr,
    /// One past the last address.
    pub end: VirtAddr,
    /// Access rights.
    pub prot: Protection,
    /// Flags.
    pub flags: VmaFlags,
    /// Backing.
    pub backing: Backing,
}

impl Vma {
    /// An anonymous private mapping.
    pub const fn anonymous(start: VirtAddr, end: VirtAddr, prot: Protection) -> Self {
        Vma { start, end, prot, flags: VmaFlags::empty(), backing: Backing::Anonymous }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range is empty (never true of a VMA in a tree).
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `self` followed directly by `next` could be one VMA: adjacent,
    /// same rights, flags and backing object, and (for objects) contiguous
    /// offsets; neither refuses merging.
    pub fn can_merge(&self, next: &Vma) -> bool {
        let no = VmaFlags::NO_MERGE | VmaFlags::NO_EXPAND;
        self.end == next.start
            && self.prot == next.prot
            && self.flags == next.flags
            && !self.flags.intersects(no)
            && self.backing.advanced(self.len()) == next.backing
    }

    fn data(&self) -> Data {
        Data { prot: self.prot, flags: self.flags, backing: self.backing }
    }
}

/// What the tree stores per VMA (the range is the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Data {
    prot: Protection,
    flags: VmaFlags,
    backing: Backing,
}

impl Data {
    fn vma(self, start: VirtAddr, end: VirtAddr) -> Vma {
        Vma { start, end, prot: self.prot, flags: self.flags, backing: self.backing }
    }
}

/// The address a tree key stands for: the tree's keys are only ever made
/// from addresses (`VirtAddr::as_u64`), so they are canonical.
fn addr(key: u64) -> VirtAddr {
    VirtAddr::new(key).expect("VMA tree keys are addresses")
}

/// The VMA of a tree entry.
fn entry((start, end, data): (u64, u64, &Data)) -> Vma {
    data.vma(addr(start), addr(end))
}

/// Why a VMA operation was refused. A refused operation changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaError {
    /// A value that must be page aligned and is not: an address, a length,
    /// an object offset or an alignment, as a raw number.
    Unaligned(u64),
    /// An empty or reversed range, or one that runs past the end of its
    /// half of the address space.
    BadRange,
    /// The new mapping overlaps an existing one.
    Overlap {
        /// The existing VMA's start.
        start: VirtAddr,
        /// Its end.
        end: VirtAddr,
    },
    /// Part of the range is not mapped (mprotect needs all of it).
    NotMapped(VirtAddr),
    /// The operation would need more VMAs than the limit.
    TooManyMappings {
        /// The limit.
        limit: usize,
    },
}

impl core::fmt::Display for VmaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmaError::Unaligned(v) => write!(f, "{v:#x} is not page aligned"),
            VmaError::BadRange => write!(f, "an empty or wrapping range"),
            VmaError::Overlap { start, end } => write!(f, "overlaps the mapping [{start:#x}, {end:#x})"),
            VmaError::NotMapped(a) => write!(f, "{a:#x} is not mapped"),
            VmaError::TooManyMappings { limit } => write!(f, "more than {limit} mappings"),
        }
    }
}

impl core::error::Error for VmaError {}

/// The VMAs of one address space.
#[derive(Clone, Debug)]
pub struct VmaTree {
    tree: RangeTree<Data>,
    limit: usize,
}

impl Default for VmaTree {
    fn default() -> Self {
        VmaTree::new(65_530)
    }
}

/// The end of `[start, start + len)`, which must be page aligned, not
/// empty, and within `start`'s half of the address space.
fn check(start: VirtAddr, len: u64) -> Result<VirtAddr, VmaError> {
    for v in [start.as_u64(), len] {
        if v % PAGE_BYTES != 0 {
            return Err(VmaError::Unaligned(v));
        }
    }
    if len == 0 {
        return Err(VmaError::BadRange);
    }
    start.checked_add(len).ok_or(VmaError::BadRange)
}

/// Checks that `[start, end)` is page aligned, not empty or reversed, and
/// within one half of the address space.
fn check_span(start: VirtAddr, end: VirtAddr) -> Result<(), VmaError> {
    for v in [start, end] {
        if !v.is_aligned(PAGE_BYTES) {
            return Err(VmaError::Unaligned(v.as_u64()));
        }
    }
    if end <= start || end.is_upper_half() != start.is_upper_half() {
        return Err(VmaError::BadRange);
    }
    Ok(())
}

impl VmaTree {
    /// An empty tree allowing at most `limit` VMAs (Linux's default
    /// `vm.max_map_count` is 65,530).
    pub const fn new(limit: usize) -> Self {
        VmaTree { tree: RangeTree::new(), limit }
    }

    /// Number of VMAs.
    pub fn count(&self) -> usize {
        self.tree.len()
    }

    /// The map-count limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The VMA containing `addr`.
    pub fn find(&self, addr: VirtAddr) -> Option<Vma> {
        self.tree.find(addr.as_u64()).map(entry)
    }

    /// The first VMA ending after `addr` (Linux's `find_vma`: the one
    /// containing `addr`, or the next above it).
    pub fn find_from(&self, addr: VirtAddr) -> Option<Vma> {
        self.find(addr).or_else(|| self.tree.next(addr.as_u64()).map(entry))
    }

    /// The last VMA starting at or below `addr` (the one containing it, or
    /// the one below a hole).
    pub fn prev(&self, addr: VirtAddr) -> Option<Vma> {
        self.tree.prev(addr.as_u64()).map(entry)
    }

    /// Every VMA in address order.
    pub fn iter(&self) -> impl Iterator<Item = Vma> + '_ {
        self.tree.iter().map(entry)
    }

    /// The VMAs overlapping `[start, end)`, in order.
    pub fn overlapping(&self, start: VirtAddr, end: VirtAddr) -> impl Iterator<Item = Vma> + '_ {
        let (start, end) = (start.as_u64(), end.as_u64());
        let first = self.tree.prev(start).filter(|x| x.1 > start).map_or(start, |x| x.0);
        self.tree.iter_from(first).take_while(move |x| x.0 < end).map(entry)
    }

    /// The highest (`top_down`) or lowest start for `len` bytes aligned to
    /// `align` inside `[low, high)` that overlaps no VMA. `low` and `high`
    /// must lie in the same half of the address space (`None` otherwise):
    /// a range across the non-canonical hole holds no addresses to find.
    pub fn unmapped_area(
        &self,
        len: u64,
        align: u64,
        low: VirtAddr,
        high: VirtAddr,
        top_down: bool,
    ) -> Option<VirtAddr> {
        if low.is_upper_half() != high.is_upper_half() {
            return None;
        }
        let align = align.max(PAGE_BYTES);
        let (low, high) = (low.as_u64(), high.as_u64());
        let start = if top_down {
            self.tree.gap_top_down(len, align, low, high)
        } else {
            self.tree.gap_bottom_up(len, align, low, high)
        };
        // Inside `[low, high)`, within one half: an address.
        start.map(addr)
    }

    /// Adds `vma` (which must not overlap any), merged with the neighbours
    /// it is compatible with. Returns the VMA that now contains it.
    pub fn insert(&mut self, vma: Vma) -> Result<Vma, VmaError> {
        check_span(vma.start, vma.end)?;
        let end = vma.end;
        if let Some(o) = self.overlapping(vma.start, end).next() {
            return Err(VmaError::Overlap { start: o.start, end: o.end });
        }
        let prev = vma.start.checked_sub(1).and_then(|a| self.find(a)).filter(|p| p.can_merge(&vma));
        let next = self.find(end).filter(|n| vma.can_merge(n));
        if prev.is_none() && next.is_none() && self.count() >= self.limit {
            return Err(VmaError::TooManyMappings { limit: self.limit });
        }
        let merged = match (prev, next) {
            (Some(p), Some(n)) => {
                self.remove_entry(n.start);
                self.resize(p.start, p.start, n.end)?;
                Vma { end: n.end, ..p }
            }
            (Some(p), None) => {
                self.resize(p.start, p.start, end)?;
                Vma { end, ..p }
            }
            (None, Some(n)) => {
                // The merged VMA takes the new one's start and backing offset.
                self.resize(n.start, vma.start, n.end)?;
                self.data_mut(vma.start).backing = vma.backing;
                Vma { start: vma.start, backing: vma.backing, ..n }
            }
            (None, None) => {
                self.insert_entry(vma.start, end, vma.data())?;
                vma
            }
        };
        Ok(merged)
    }

    /// Moves the bounds of the VMA starting at `start` to
    /// `[new_start, new_end)` (brk, stack growth, mremap in place), which
    /// must still contain at least a page and overlap no other VMA; an
    /// object's offset follows the start. Merges with neighbours that became
    /// compatible and returns the VMA that now holds the range.
    pub fn expand(&mut self, start: VirtAddr, new_start: VirtAddr, new_end: VirtAddr) -> Result<Vma, VmaError> {
        check_span(new_start, new_end)?;
        let v = self.find(start).filter(|v| v.start == start).ok_or(VmaError::NotMapped(start))?;
        let backing = match v.backing {
            Backing::Object { object, offset } => {
                let offset = if new_start >= start {
                    Some(offset + (new_start - start))
                } else {
                    offset.checked_sub(start - new_start)
                };
                Backing::Object { object, offset: offset.ok_or(VmaError::BadRange)? }
            }
            Backing::Anonymous => Backing::Anonymous,
        };
        self.resize(start, new_start, new_end)?;
        self.data_mut(new_start).backing = backing;
        self.merge_at(new_end);
        self.merge_at(new_start);
        Ok(self.find(new_start).expect("still mapped"))
    }

    // The tree's entries, keyed by the raw addresses.

    fn insert_entry(&mut self, start: VirtAddr, end: VirtAddr, data: Data) -> Result<(), VmaError> {
        self.tree.insert(start.as_u64(), end.as_u64(), data).map_err(tree_err)
    }

    fn remove_entry(&mut self, start: VirtAddr) -> Option<Data> {
        self.tree.remove(start.as_u64()).map(|(_, _, d)| d)
    }

    /// Moves the bounds of the entry starting at `start`.
    fn resize(&mut self, start: VirtAddr, new_start: VirtAddr, new_end: VirtAddr) -> Result<(), VmaError> {
        self.tree.resize(start.as_u64(), new_start.as_u64(), new_end.as_u64()).map_err(tree_err)
    }

    /// The data of the VMA containing `addr`, which must be mapped.
    fn data_mut(&mut self, addr: VirtAddr) -> &mut Data {
        self.tree.find_mut(addr.as_u64()).expect("a mapped address").2
    }

    /// Splits the VMA containing `addr` (strictly inside it) in two at
    /// `addr`. No-op if `addr` is not strictly inside a VMA.
    fn split_at(&mut self, addr: VirtAddr) {
        let Some(v) = self.find(addr).filter(|v| v.start < addr) else { return };
        self.resize(v.start, v.start, addr).expect("shrinking cannot overlap");
        let right = Data { backing: v.backing.advanced(addr - v.start), ..v.data() };
        self.insert_entry(addr, v.end, right).expect("the range was just freed");
    }

    /// Merges the VMA ending at `addr` with the one starting there if they
    /// are compatible.
    fn merge_at(&mut self, addr: VirtAddr) {
        let Some(left) = addr.checked_sub(1).and_then(|a| self.find(a)) else { return };
        let Some(right) = self.find(addr) else { return };
        if left.end == addr && right.start == addr && left.can_merge(&right) {
            self.remove_entry(right.start);
            self.resize(left.start, left.start, right.end).expect("the right part was just removed");
        }
    }

    /// VMAs a change of `[start, end)` would add by splitting the VMAs
    /// that straddle its ends.
    fn splits_needed(&self, start: VirtAddr, end: VirtAddr) -> usize {
        let straddles = |a: VirtAddr| self.find(a).is_some_and(|v| v.start < a);
        match (self.find(start), straddles(end)) {
            // One VMA around both ends: its middle goes, both sides stay.
            (Some(v), true) if v.start < start && v.end > end => 1,
            (s, e) => usize::from(s.is_some_and(|v| v.start < start)) + usize::from(e),
        }
    }

    /// Removes `[start, start + len)` from every VMA it overlaps (splitting
    /// those that straddle its ends) and reports each removed piece.
    /// Unmapped parts of the range are fine (as in `munmap`).
    pub fn remove_range(&mut self, start: VirtAddr, len: u64, mut removed: impl FnMut(Vma)) -> Result<(), VmaError> {
        let end = check(start, len)?;
        // The common munmap: exactly one whole VMA (else the one containing
        // the start, found by the same descent).
        let first = match self.tree.remove_exact(start.as_u64(), end.as_u64()) {
            Ok(d) => {
                removed(d.vma(start, end));
                return Ok(());
            }
            Err(first) => first.map(|(s, e, d)| d.vma(addr(s), addr(e))),
        };
        // One VMA losing its middle: it keeps the left part, the right part
        // becomes a new VMA (the only case that adds one).
        if let Some(v) = first.filter(|v| v.start < start && v.end > end) {
            if self.count() >= self.limit {
                return Err(VmaError::TooManyMappings { limit: self.limit });
            }
            self.resize(v.start, v.start, start).expect("shrinking cannot overlap");
            let right = Data { backing: v.backing.advanced(end - v.start), ..v.data() };
            self.insert_entry(end, v.end, right).expect("the range was just freed");
            removed(Vma { start, end, backing: v.backing.advanced(start - v.start), ..v });
            return Ok(());
        }
        // A VMA straddling the start keeps its left part.
        if let Some(v) = first.filter(|v| v.start < start) {
            self.resize(v.start, v.start, start).expect("shrinking cannot overlap");
            removed(Vma { start, backing: v.backing.advanced(start - v.start), ..v });
        }
        // From the right: one straddling the end keeps its right part, the
        // ones inside go, until a VMA starting below `start` (the left part
        // kept above, or one ending before the range).
        while let Some(v) = self.prev(end - 1).filter(|v| v.start >= start) {
            if v.end > end {
                self.resize(v.start, end, v.end).expect("shrinking cannot overlap");
                self.data_mut(end).backing = v.backing.advanced(end - v.start);
                removed(Vma { end, ..v });
            } else {
                self.remove_entry(v.start).expect("just found");
                removed(v);
            }
        }
        Ok(())
    }

    /// Sets the protection of `[start, start + len)`, which must be mapped
    /// throughout, splitting at its ends and merging what became compatible.
    pub fn protect(&mut self, start: VirtAddr, len: u64, prot: Protection) -> Result<(), VmaError> {
        let end = check(start, len)?;
        let mut at = start;
        for v in self.overlapping(start, end) {
            if v.start > at {
                return Err(VmaError::NotMapped(at));
            }
            at = v.end;
        }
        if at < end {
            return Err(VmaError::NotMapped(at));
        }
        // Merges come after the splits, so the splits must fit first.
        if self.count() + self.splits_needed(start, end) > self.limit {
            return Err(VmaError::TooManyMappings { limit: self.limit });
        }
        self.split_at(start);
        self.split_at(end);
        let starts: Vec<VirtAddr> = self.overlapping(start, end).map(|v| v.start).collect();
        for &s in &starts {
            self.data_mut(s).prot = prot;
        }
        // Merge from the right so earlier starts stay valid.
        self.merge_at(end);
        for s in starts.iter().rev() {
            self.merge_at(*s);
        }
        Ok(())
    }

    /// Checks the tree and the canonical form: no two adjacent VMAs could be
    /// merged, all page aligned, the count within the limit.
    pub fn check(&self) -> Result<(), &'static str> {
        self.tree.check()?;
        let mut prev: Option<Vma> = None;
        for v in self.iter() {
            if !v.start.is_aligned(PAGE_BYTES) || !v.end.is_aligned(PAGE_BYTES) {
                return Err("a VMA that is not page aligned");
            }
            if prev.is_some_and(|p| p.can_merge(&v)) {
                return Err("two adjacent VMAs that should have been merged");
            }
            prev = Some(v);
        }
        if self.count() > self.limit {
            return Err("more VMAs than the limit");
        }
        Ok(())
    }
}

fn tree_err(e: TreeError) -> VmaError {
    match e {
        TreeError::Empty => VmaError::BadRange,
        TreeError::Overlap { start, end } => VmaError::Overlap { start: addr(start), end: addr(end) },
    }
}
