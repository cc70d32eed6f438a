//! The page-table engine.
//!
//! Every operation that changes the structure runs its walker twice over the
//! same range: a read-only *plan* pass checks everything (alignment,
//! mappedness) and counts the table pages the change needs — a missing table
//! or a huge page to split is a *virtual* table whose entries are computed —
//! then all those pages are allocated, then the *apply* pass makes the change
//! and cannot fail. A refused operation therefore leaves the tables exactly as
//! they were. Each table is visited once per pass: range operations cost one
//! walk per table, not per page.

use core::sync::atomic::{AtomicU64, Ordering};

use mm_types::{
    AllocFlags, FrameBlock, FrameNumber, FrameProvider, Order, PageSize, PhysAddr, PhysMemory, SwapSlot, VirtAddr,
    PAGE_BYTES,
};

use crate::arch::{level_index, level_span, PagingArch, ENTRIES};
use crate::error::PagingError;
use crate::flags::{AccessBits, HugePages, MapFlags};
use crate::table::{entries, entries_linear};
use crate::tlb::Flush;

/// A present mapping, as [`PageTable::translate`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address of the byte asked about.
    pub phys: PhysAddr,
    /// The physical address of the page's first byte.
    pub frame: PhysAddr,
    /// The page's virtual start.
    pub page: VirtAddr,
    /// The page size.
    pub size: PageSize,
    /// The mapping's flags.
    pub flags: MapFlags,
}

/// What a virtual address holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A present mapping.
    Mapped(Translation),
    /// A swap entry (not present).
    Swapped(SwapSlot),
    /// Nothing.
    Unmapped,
}

/// Something an unmap removed, handed to the caller (who owns the frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// A page mapping.
    Page {
        /// Virtual start.
        va: VirtAddr,
        /// The frame it mapped.
        frame: PhysAddr,
        /// Its size.
        size: PageSize,
        /// Its flags (including the hardware's accessed and dirty bits).
        flags: MapFlags,
    },
    /// A swap entry (the caller frees the swap slot).
    Swap {
        /// Virtual address.
        va: VirtAddr,
        /// The slot.
        slot: SwapSlot,
    },
}

/// A present leaf or a swap entry, as [`PageTable::for_each_entry`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A present mapping.
    Page(Mapping),
    /// A swap entry at a 4 KiB page.
    Swap {
        /// Virtual address.
        va: VirtAddr,
        /// The slot.
        slot: SwapSlot,
    },
}

/// One leaf, as [`PageTable::for_each_mapping`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Virtual start.
    pub va: VirtAddr,
    /// Physical start.
    pub frame: PhysAddr,
    /// Size.
    pub size: PageSize,
    /// Flags.
    pub flags: MapFlags,
}

fn page_size(level: u8) -> PageSize {
    match level {
        1 => PageSize::Size4KiB,
        2 => PageSize::Size2MiB,
        _ => PageSize::Size1GiB,
    }
}

/// How an unmap walk runs.
#[derive(Clone, Copy)]
struct Walk {
    /// Apply pass (else plan).
    apply: bool,
    /// Free table pages the unmap empties.
    free_tables: bool,
    /// Skip pages that hold nothing (else they are an error).
    sparse: bool,
}

/// A table in a walk: a real page, or one the plan pass imagines.
#[derive(Clone, Copy)]
enum Node {
    Real(PhysAddr),
    /// A table that does not exist yet: all entries empty.
    Empty,
    /// The table a huge leaf (the entry, at the level above) splits into.
    Split(u64),
}

/// Where a map operation takes its physical addresses from.
#[derive(Clone, Copy)]
enum Source<'s> {
    /// Physically contiguous: page `v` maps `v + delta` (wrapping).
    Linear(u64),
    /// Scattered 4 KiB frames: page `base + i * 4096` maps `frames[i]`.
    Frames { base: u64, frames: &'s [PhysAddr] },
}

/// Table pages allocated for one operation before it changes anything,
/// chained through their first word.
struct Prealloc {
    head: u64,
}

const NO_PAGE: u64 = u64::MAX;

/// A page-table hierarchy, generic over the architecture `A`, the physical
/// memory accessor `M` and the frame provider `F` that table pages come from
/// and go back to.
///
/// Mutating operations take `&mut self`: one owner changes the structure at a
/// time (an address space's page-table lock). Entries are read and written
/// atomically, so the MMU's concurrent accessed/dirty updates are never lost.
///
/// Dropping a `PageTable` leaks its table pages; [`destroy`](Self::destroy)
/// frees them.
///
/// # Example
///
/// ```
/// use mm_paging::{HugePages, MapFlags, PageTable, X86_64};
/// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
/// use mm_types::{PageSize, PhysAddr, VirtAddr};
///
/// let ram = SimPhysMemory::new(PhysAddr::new(0)?, 8 << 20);
/// let frames = RefFrameProvider::new(&ram);
/// let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames)?;
///
/// // 4 MiB + 8 KiB at a 2 MiB-aligned address: two 2 MiB pages and two 4 KiB pages.
/// let va = VirtAddr::new(0xffff_8000_0020_0000)?;
/// pt.map_range(va, PhysAddr::new(0x20_0000)?, (4 << 20) + 0x2000, MapFlags::KERNEL_DATA, HugePages::all())?
///     .ignore(); // not live yet: no TLB to flush
/// let t = pt.translate(VirtAddr::new(0xffff_8000_0030_1234)?).unwrap();
/// assert_eq!((t.phys.as_u64(), t.size), (0x30_1234, PageSize::Size2MiB));
///
/// // Unmapping the middle splits a 2 MiB page; the frames come back to us.
/// let mut removed = 0;
/// let flush = pt.unmap_range(VirtAddr::new(0xffff_8000_0030_0000)?, 0x1000, |_| removed += 1)?;
/// assert_eq!((removed, flush.pages()), (1, 1));
/// # flush.ignore();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PageTable<A: PagingArch, M: PhysMemory, F: FrameProvider> {
    arch: A,
    mem: M,
    frames: F,
    root: PhysAddr,
    /// `mem.linear_offset()`, read once.
    linear: Option<u64>,
    /// Root entries borrowed from another hierarchy (a kernel half shared by
    /// every address space): never freed or cleared by `destroy`.
    borrowed: [u64; 8],
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> core::fmt::Debug for PageTable<A, M, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageTable").field("root", &self.root).field("levels", &self.arch.levels()).finish()
    }
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> PageTable<A, M, F> {
    /// An empty hierarchy with a fresh root table from `frames`.
    pub fn new(arch: A, mem: M, frames: F) -> Result<Self, PagingError> {
        let owned = frames.allocate_owned(Order::ZERO, AllocFlags::ZERO)?;
        let block = owned.block();
        // Check the root is reachable (and zero it, whatever the provider
        // did) before the walker relies on it; if not, dropping `owned`
        // gives the frame back.
        // SAFETY: the block was just allocated to us.
        if unsafe { mem.zero_block(block) }.is_err() {
            return Err(PagingError::OutOfFrames(mm_types::FrameError::NotOwned(block)));
        }
        let block = owned.into_raw();
        let linear = mem.linear_offset();
        Ok(PageTable { arch, mem, frames, root: block.start_address(), linear, borrowed: [0; 8] })
    }

    /// A new hierarchy whose root entries with an index in `shared` (such as
    /// `256..512`) are copied from the root at `kernel_root`: the tables below them (the
    /// kernel's half of every address space, on x86-64 the upper 256 entries)
    /// are shared, not owned: [`destroy`](Self::destroy) leaves them alone.
    ///
    /// This value reads through the shared entries ([`translate`](Self::translate),
    /// [`lookup`](Self::lookup), [`for_each_mapping`](Self::for_each_mapping),
    /// [`for_each_entry`](Self::for_each_entry)) but never changes anything
    /// below them: every operation that changes entries (maps, unmaps,
    /// [`protect_range`](Self::protect_range), [`update_flags`](Self::update_flags),
    /// [`harvest`](Self::harvest), [`split`](Self::split), [`replace`](Self::replace),
    /// swap entries) refuses a range reaching a shared entry with
    /// [`PagingError::KernelRange`], changing nothing, and
    /// [`set_access_bits`](Self::set_access_bits) returns `false` there. So
    /// no table page of the kernel's is ever freed through this value.
    ///
    /// # Safety
    ///
    /// `kernel_root` is the root of a live hierarchy in `arch`'s format,
    /// reachable through `mem`, whose shared entries stay valid (the tables
    /// they point at are neither freed nor replaced) for as long as this
    /// value may be walked or loaded into the MMU.
    pub unsafe fn new_sharing(
        arch: A,
        mem: M,
        frames: F,
        kernel_root: PhysAddr,
        shared: impl IntoIterator<Item = usize>,
    ) -> Result<Self, PagingError> {
        let mut pt = PageTable::new(arch, mem, frames)?;
        let mut borrowed = [0u64; 8];
        let (dst, src) = (pt.table(pt.root), pt.table(kernel_root));
        for i in shared.into_iter().filter(|&i| i < ENTRIES) {
            dst[i].store(src[i].load(Ordering::Relaxed), Ordering::Relaxed);
            borrowed[i / 64] |= 1 << (i % 64);
        }
        pt.borrowed = borrowed;
        Ok(pt)
    }

    /// Takes over an existing hierarchy (one built by the bootloader or by
    /// the `x86_64` crate's `OffsetPageTable`, for instance).
    ///
    /// # Safety
    ///
    /// `root` is the root of a valid hierarchy in `arch`'s format whose table
    /// pages are all reachable through `mem`; nothing else modifies it while
    /// this value exists; and table pages this value frees (when unmapping
    /// empties them, or in `destroy`) may be returned to `frames`, so they
    /// must have come from it.
    pub unsafe fn from_root(arch: A, mem: M, frames: F, root: PhysAddr) -> Self {
        let linear = mem.linear_offset();
        PageTable { arch, mem, frames, root, linear, borrowed: [0; 8] }
    }

    /// The root table's physical address (what CR3 holds).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The architecture description.
    pub fn arch(&self) -> &A {
        &self.arch
    }

    /// The frame provider.
    pub fn frames(&self) -> &F {
        &self.frames
    }

    /// The physical memory accessor.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    #[inline]
    fn table(&self, phys: PhysAddr) -> &[AtomicU64; ENTRIES] {
        match self.linear {
            // Every table page this walker reaches belongs to this hierarchy and was checked reachable when allocated
            // (or vouched for by `from_root`); `&self` keeps it alive.
            // SAFETY: `linear` is the accessor's linear offset.
            Some(offset) => unsafe { entries_linear(offset, phys) },
            // SAFETY: as above.
            None => unsafe { entries(&self.mem, phys) },
        }
    }

    /// The entry `idx` of a node at `level`.
    #[inline]
    fn entry(&self, node: Node, level: u8, idx: usize) -> u64 {
        match node {
            Node::Real(t) => self.table(t)[idx].load(Ordering::Relaxed),
            Node::Empty => 0,
            Node::Split(parent) => {
                let frame = self.arch.leaf_phys(parent, level + 1).as_u64() + idx as u64 * level_span(level);
                let flags = self.arch.leaf_flags(parent, level + 1);
                self.arch.leaf(PhysAddr::new(frame).expect("inside the parent page"), flags, level)
            }
        }
    }

    // ----- validation -----

    fn check_range(&self, va: VirtAddr, len: u64) -> Result<u128, PagingError> {
        if len == 0 {
            return Err(PagingError::EmptyRange);
        }
        for v in [va.as_u64(), len] {
            if v % PAGE_BYTES != 0 {
                return Err(PagingError::Misaligned { value: v, align: PAGE_BYTES });
            }
        }
        self.arch.check_va(va)?;
        let last = va.checked_add(len - 1).ok_or(mm_types::AddrError::Overflow)?;
        self.arch.check_va(last)?;
        Ok(va.as_u64() as u128 + len as u128)
    }

    /// Whether root entry `idx` was borrowed from another hierarchy by
    /// [`new_sharing`](Self::new_sharing).
    #[inline]
    fn is_borrowed(&self, idx: usize) -> bool {
        self.borrowed[idx / 64] & (1 << (idx % 64)) != 0
    }

    /// [`check_range`](Self::check_range) for an operation that changes
    /// entries: also refuses a range that reaches a borrowed root entry
    /// (the tables below it are another hierarchy's), naming the first
    /// address of the range under one.
    fn check_owned_range(&self, va: VirtAddr, len: u64) -> Result<u128, PagingError> {
        let end = self.check_range(va, len)?;
        if self.borrowed != [0; 8] {
            let level = self.arch.levels();
            if let Some(slot) = slots(va.as_u64(), end, level).find(|s| self.is_borrowed(s.idx)) {
                let addr = VirtAddr::new(slot.v).expect("inside a checked range");
                return Err(PagingError::KernelRange { addr });
            }
        }
        Ok(end)
    }

    // ----- preallocation -----

    fn preallocate(&self, count: u64) -> Result<Prealloc, PagingError> {
        let mut p = Prealloc { head: NO_PAGE };
        for _ in 0..count {
            match self.frames.allocate(Order::ZERO, AllocFlags::ZERO) {
                Ok(b) => {
                    let t = self.fresh_table(b.start_address());
                    t[0].store(p.head, Ordering::Relaxed);
                    p.head = b.start_address().as_u64();
                }
                Err(e) => {
                    self.release(p);
                    return Err(e.into());
                }
            }
        }
        Ok(p)
    }

    /// A page just allocated (or about to be freed): not in the hierarchy.
    fn fresh_table(&self, phys: PhysAddr) -> &[AtomicU64; ENTRIES] {
        // SAFETY: the page was allocated to this page table and is not linked from the root: nothing else uses it.
        unsafe { entries(&self.mem, phys) }
    }

    fn take(&self, p: &mut Prealloc) -> PhysAddr {
        assert_ne!(p.head, NO_PAGE, "plan counted fewer tables than apply needs");
        let phys = PhysAddr::new(p.head).expect("allocated frame");
        let t = self.fresh_table(phys);
        p.head = t[0].swap(0, Ordering::Relaxed);
        phys
    }

    fn release(&self, mut p: Prealloc) {
        while p.head != NO_PAGE {
            let phys = self.take(&mut p);
            self.free_table(phys);
        }
    }

    fn free_table(&self, phys: PhysAddr) {
        let block = FrameBlock::new(FrameNumber::containing(phys), Order::ZERO).expect("order 0");
        // A table page that its provider refuses was not allocated from it
        // (the `from_root` contract was broken); keeping it is the safe choice.
        let _ = self.frames.free(block);
    }

    /// Plans with `walk::<false>`, allocates what it counted, applies with
    /// `walk::<true>`.
    fn planned<R>(
        &mut self,
        mut walk: impl FnMut(&mut Self, bool, &mut u64, &mut Prealloc) -> Result<R, PagingError>,
    ) -> Result<R, PagingError> {
        let mut needed = 0;
        let mut none = Prealloc { head: NO_PAGE };
        walk(self, false, &mut needed, &mut none)?;
        let mut pre = self.preallocate(needed)?;
        let mut unused = 0;
        let r = walk(self, true, &mut unused, &mut pre);
        debug_assert!(r.is_ok(), "apply failed after a successful plan");
        debug_assert_eq!(pre.head, NO_PAGE, "plan counted more tables than apply used");
        self.release(pre);
        r
    }

    /// The child node of entry `e` at `level` for a walk that needs to go
    /// below it, creating (apply) or counting (plan) a table, or splitting a
    /// huge leaf when `split` allows. `Ok(None)`: the entry is a leaf or swap
    /// entry that cannot be descended.
    #[allow(clippy::too_many_arguments)]
    fn child(
        &self,
        node: Node,
        level: u8,
        idx: usize,
        e: u64,
        create: bool,
        split: bool,
        apply: bool,
        needed: &mut u64,
        pre: &mut Prealloc,
    ) -> Option<Node> {
        if e == 0 {
            if !create {
                return None;
            }
            if !apply {
                *needed += 1;
                return Some(Node::Empty);
            }
            let t = self.take(pre);
            self.store(node, idx, self.arch.table(t));
            return Some(Node::Real(t));
        }
        if !self.arch.is_present(e) {
            return None;
        }
        if !self.arch.is_leaf(e, level) {
            return Some(Node::Real(self.arch.table_phys(e)));
        }
        if !split || level == 1 {
            return None;
        }
        if !apply {
            *needed += 1;
            return Some(Node::Split(e));
        }
        let t = self.take(pre);
        let new = self.fresh_table(t);
        for (i, slot) in new.iter().enumerate() {
            slot.store(self.entry(Node::Split(e), level - 1, i), Ordering::Relaxed);
        }
        self.store(node, idx, self.arch.table(t));
        Some(Node::Real(t))
    }

    #[inline]
    fn store(&self, node: Node, idx: usize, value: u64) {
        if let Node::Real(t) = node {
            self.table(t)[idx].store(value, Ordering::Relaxed);
        }
    }

    // ----- map -----

    /// Maps `len` bytes at `va` to physical memory at `phys` with `flags`,
    /// using 2 MiB and 1 GiB pages (as `huge` allows) wherever the virtual
    /// and physical addresses are aligned for them and the range covers
    /// them. Fails with [`PagingError::AlreadyMapped`] if any page of the
    /// range is mapped or holds a swap entry, leaving everything unchanged.
    ///
    /// New mappings need no TLB flush; the returned record is empty unless
    /// the architecture caches non-present entries.
    pub fn map_range(
        &mut self,
        va: VirtAddr,
        phys: PhysAddr,
        len: u64,
        flags: MapFlags,
        huge: HugePages,
    ) -> Result<Flush, PagingError> {
        let end = self.check_owned_range(va, len)?;
        if phys.as_u64() % PAGE_BYTES != 0 {
            return Err(PagingError::Misaligned { value: phys.as_u64(), align: PAGE_BYTES });
        }
        phys.checked_add(len - 1).ok_or(mm_types::AddrError::Overflow)?;
        if !flags.contains(MapFlags::READ) {
            return Err(PagingError::InvalidFlags);
        }
        let levels = self.arch.levels();
        let root = self.root;
        let src = Source::Linear(phys.as_u64().wrapping_sub(va.as_u64()));
        self.planned(|pt, apply, needed, pre| {
            pt.map_walk(Node::Real(root), levels, va.as_u64(), end, src, flags, huge, apply, needed, pre)
        })?;
        Ok(Flush::NONE)
    }

    /// Maps the 4 KiB frames `frames` at consecutive pages from `va` with
    /// `flags`, in one walk (vmalloc and vmap map scattered frames this
    /// way). Fails with [`PagingError::AlreadyMapped`] if any page is mapped
    /// or holds a swap entry, and with [`PagingError::Misaligned`] for a
    /// frame address that is not 4 KiB aligned, leaving everything unchanged.
    pub fn map_frames(&mut self, va: VirtAddr, frames: &[PhysAddr], flags: MapFlags) -> Result<Flush, PagingError> {
        let len = (frames.len() as u64).checked_mul(PAGE_BYTES).ok_or(mm_types::AddrError::Overflow)?;
        let end = self.check_owned_range(va, len)?;
        if let Some(f) = frames.iter().find(|f| f.as_u64() % PAGE_BYTES != 0) {
            return Err(PagingError::Misaligned { value: f.as_u64(), align: PAGE_BYTES });
        }
        if !flags.contains(MapFlags::READ) {
            return Err(PagingError::InvalidFlags);
        }
        let levels = self.arch.levels();
        let root = self.root;
        let src = Source::Frames { base: va.as_u64(), frames };
        self.planned(|pt, apply, needed, pre| {
            pt.map_walk(Node::Real(root), levels, va.as_u64(), end, src, flags, HugePages::empty(), apply, needed, pre)
        })?;
        Ok(Flush::NONE)
    }

    /// Maps one page of `size`.
    pub fn map(
        &mut self,
        va: VirtAddr,
        frame: PhysAddr,
        size: PageSize,
        flags: MapFlags,
    ) -> Result<Flush, PagingError> {
        let s = size.bytes();
        if va.as_u64() % s != 0 {
            return Err(PagingError::Misaligned { value: va.as_u64(), align: s });
        }
        if frame.as_u64() % s != 0 {
            return Err(PagingError::HugeFrameMisaligned { phys: frame.as_u64(), size });
        }
        if size == PageSize::Size1GiB && !self.arch.leaf_level(3) {
            return Err(PagingError::InvalidFlags);
        }
        let huge = match size {
            PageSize::Size4KiB => HugePages::empty(),
            PageSize::Size2MiB => HugePages::SIZE_2M,
            PageSize::Size1GiB => HugePages::SIZE_1G,
        };
        self.map_range(va, frame, s, flags, huge)
    }

    #[allow(clippy::too_many_arguments)]
    fn map_walk(
        &self,
        node: Node,
        level: u8,
        va: u64,
        end: u128,
        src: Source<'_>,
        flags: MapFlags,
        huge: HugePages,
        apply: bool,
        needed: &mut u64,
        pre: &mut Prealloc,
    ) -> Result<(), PagingError> {
        let span = level_span(level);
        let leaf_ok = self.arch.leaf_level(level) && huge.allows_level(level);
        for Slot { v, idx, end: slot_end, covers } in slots(va, end, level) {
            if level == 1 {
                // The whole run of 4 KiB pages inside this table at once.
                let n = ((slot_end_of_table(v, end) - v as u128) / u128::from(PAGE_BYTES)) as usize;
                self.map_leaves(node, idx, n, v, src, flags, apply)?;
                return Ok(());
            }
            let e = self.entry(node, level, idx);
            let linear = match src {
                Source::Linear(delta) => Some(v.wrapping_add(delta)),
                Source::Frames { .. } => None,
            };
            if let Some(phys) = linear.filter(|p| leaf_ok && covers && p % span == 0 && e == 0) {
                if apply {
                    let leaf = self.arch.leaf(PhysAddr::new(phys).expect("checked range"), flags, level);
                    self.store(node, idx, leaf);
                }
            } else {
                let Some(child) = self.child(node, level, idx, e, true, false, apply, needed, pre) else {
                    return Err(PagingError::AlreadyMapped { addr: VirtAddr::new(v).expect("checked range") });
                };
                self.map_walk(child, level - 1, v, slot_end, src, flags, huge, apply, needed, pre)?;
            }
        }
        Ok(())
    }

    /// Fills `n` level-1 entries from `idx` (plan: checks they are empty).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn map_leaves(
        &self,
        node: Node,
        idx: usize,
        n: usize,
        va: u64,
        src: Source<'_>,
        flags: MapFlags,
        apply: bool,
    ) -> Result<(), PagingError> {
        let Node::Real(t) = node else { return Ok(()) }; // a new table is empty
        let slots = &self.table(t)[idx..idx + n];
        if !apply {
            if let Some(i) = slots.iter().position(|s| s.load(Ordering::Relaxed) != 0) {
                return Err(PagingError::AlreadyMapped {
                    addr: VirtAddr::new(va + i as u64 * PAGE_BYTES).expect("in range"),
                });
            }
            return Ok(());
        }
        let template = self.arch.leaf(PhysAddr::ZERO, flags, 1);
        match src {
            Source::Linear(delta) => {
                let phys = va.wrapping_add(delta);
                for (i, s) in slots.iter().enumerate() {
                    s.store(template | (phys + i as u64 * PAGE_BYTES), Ordering::Relaxed);
                }
            }
            Source::Frames { base, frames } => {
                let first = ((va - base) / PAGE_BYTES) as usize;
                for (s, f) in slots.iter().zip(&frames[first..first + n]) {
                    s.store(template | f.as_u64(), Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    // ----- unmap -----

    /// Unmaps every page of `[va, va + len)`, calling `removed` for each
    /// mapping and swap entry removed (the caller owns those frames and
    /// slots), splitting huge pages the range cuts, and freeing the table
    /// pages that become empty. Fails with [`PagingError::NotMapped`] if any
    /// page of the range is neither mapped nor swapped, changing nothing.
    pub fn unmap_range(&mut self, va: VirtAddr, len: u64, removed: impl FnMut(Unmapped)) -> Result<Flush, PagingError> {
        self.unmap_impl(va, len, Walk { apply: false, free_tables: true, sparse: false }, removed)
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
        self.unmap_impl(va, len, Walk { apply: false, free_tables: true, sparse: true }, removed)
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
        self.unmap_impl(va, len, Walk { apply: false, free_tables: false, sparse: false }, removed)
    }

    fn unmap_impl(
        &mut self,
        va: VirtAddr,
        len: u64,
        walk: Walk,
        mut removed: impl FnMut(Unmapped),
    ) -> Result<Flush, PagingError> {
        let end = self.check_owned_range(va, len)?;
        let levels = self.arch.levels();
        let root = self.root;
        self.planned(|pt, apply, needed, pre| {
            let walk = Walk { apply, ..walk };
            pt.unmap_walk(Node::Real(root), levels, va.as_u64(), end, walk, needed, pre, &mut removed).map(|_| ())
        })?;
        Ok(Flush::range(va, len / PAGE_BYTES))
    }

    /// Returns whether the node is now empty (apply; always false in plan).
    #[allow(clippy::too_many_arguments)]
    fn unmap_walk(
        &self,
        node: Node,
        level: u8,
        va: u64,
        end: u128,
        walk: Walk,
        needed: &mut u64,
        pre: &mut Prealloc,
        removed: &mut impl FnMut(Unmapped),
    ) -> Result<bool, PagingError> {
        let apply = walk.apply;
        if level == 1 {
            if let Node::Real(t) = node {
                return self.unmap_leaves(t, va, end, walk, removed);
            }
        }
        for Slot { v, idx, end: slot_end, covers } in slots(va, end, level) {
            let e = self.entry(node, level, idx);
            let addr = VirtAddr::new(v).expect("checked range");
            let empty = e == 0 || (!self.arch.is_present(e) && self.arch.swap_of(e).is_none());
            if empty && walk.sparse {
                continue;
            }
            if e == 0 {
                return Err(PagingError::NotMapped { addr });
            }
            if let Some(swap) = self.arch.swap_of(e) {
                if apply {
                    self.store(node, idx, 0);
                    removed(Unmapped::Swap { va: addr, slot: swap });
                }
            } else if !self.arch.is_present(e) {
                return Err(PagingError::NotMapped { addr });
            } else if self.arch.is_leaf(e, level) && covers {
                if apply {
                    self.store(node, idx, 0);
                    let frame = self.arch.leaf_phys(e, level);
                    let flags = self.arch.leaf_flags(e, level);
                    removed(Unmapped::Page { va: addr, frame, size: page_size(level), flags });
                }
            } else {
                let child = self.child(node, level, idx, e, false, true, apply, needed, pre).expect("present");
                let emptied = self.unmap_walk(child, level - 1, v, slot_end, walk, needed, pre, removed)?;
                if apply && emptied && walk.free_tables {
                    if let Node::Real(t) = child {
                        self.store(node, idx, 0);
                        self.free_table(t);
                    }
                }
            }
        }
        Ok(apply && matches!(node, Node::Real(t) if self.table(t).iter().all(|e| e.load(Ordering::Relaxed) == 0)))
    }

    /// Unmaps the level-1 entries of table `t` in `[va, end)` (clipped to the
    /// table); returns whether the table is now empty.
    fn unmap_leaves(
        &self,
        t: PhysAddr,
        va: u64,
        end: u128,
        walk: Walk,
        removed: &mut impl FnMut(Unmapped),
    ) -> Result<bool, PagingError> {
        let table = self.table(t);
        let first = level_index(va, 1);
        let n = ((slot_end_of_table(va, end) - va as u128) / u128::from(PAGE_BYTES)) as usize;
        let slots = &table[first..first + n];
        if !walk.apply {
            if walk.sparse {
                return Ok(false);
            }
            let bad = slots.iter().position(|s| {
                let e = s.load(Ordering::Relaxed);
                e == 0 || (!self.arch.is_present(e) && self.arch.swap_of(e).is_none())
            });
            return match bad {
                Some(i) => {
                    Err(PagingError::NotMapped { addr: VirtAddr::new(va + i as u64 * PAGE_BYTES).expect("in range") })
                }
                None => Ok(false),
            };
        }
        let base = VirtAddr::new(va).expect("checked range");
        for (i, s) in slots.iter().enumerate() {
            if walk.sparse && s.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let e = s.swap(0, Ordering::Relaxed);
            let va =
                VirtAddr::new_sign_extended(base.as_u64() + i as u64 * PAGE_BYTES, mm_types::PagingMode::FiveLevel);
            removed(match self.arch.swap_of(e) {
                Some(slot) => Unmapped::Swap { va, slot },
                None => Unmapped::Page {
                    va,
                    frame: self.arch.leaf_phys(e, 1),
                    size: PageSize::Size4KiB,
                    flags: self.arch.leaf_flags(e, 1),
                },
            });
        }
        Ok(n == ENTRIES || table.iter().all(|e| e.load(Ordering::Relaxed) == 0))
    }

    // ----- protect -----

    /// Changes the flags of every page of `[va, va + len)` to `flags`
    /// (keeping the hardware's accessed and dirty bits), splitting huge
    /// pages the range cuts. Swap entries are left as they are (the
    /// protection applies when the page comes back). Fails with
    /// [`PagingError::NotMapped`] if a page is neither mapped nor swapped.
    pub fn protect_range(&mut self, va: VirtAddr, len: u64, flags: MapFlags) -> Result<Flush, PagingError> {
        let end = self.check_owned_range(va, len)?;
        if !flags.contains(MapFlags::READ) {
            return Err(PagingError::InvalidFlags);
        }
        let levels = self.arch.levels();
        let root = self.root;
        self.planned(|pt, apply, needed, pre| {
            pt.protect_walk(Node::Real(root), levels, va.as_u64(), end, flags, apply, needed, pre)
        })?;
        Ok(Flush::range(va, len / PAGE_BYTES))
    }

    #[allow(clippy::too_many_arguments)]
    fn protect_walk(
        &self,
        node: Node,
        level: u8,
        va: u64,
        end: u128,
        flags: MapFlags,
        apply: bool,
        needed: &mut u64,
        pre: &mut Prealloc,
    ) -> Result<(), PagingError> {
        let keep = MapFlags::ACCESSED | MapFlags::DIRTY;
        for Slot { v, idx, end: slot_end, covers } in slots(va, end, level) {
            let e = self.entry(node, level, idx);
            let addr = VirtAddr::new(v).expect("checked range");
            if e == 0 || (!self.arch.is_present(e) && self.arch.swap_of(e).is_none()) {
                return Err(PagingError::NotMapped { addr });
            }
            if self.arch.swap_of(e).is_some() {
                // Left alone.
            } else if self.arch.is_leaf(e, level) && covers {
                if apply {
                    let f = (self.arch.leaf_flags(e, level) & keep) | (flags - keep);
                    self.store(node, idx, self.arch.leaf(self.arch.leaf_phys(e, level), f, level));
                }
            } else {
                let child = self.child(node, level, idx, e, false, true, apply, needed, pre).expect("present");
                self.protect_walk(child, level - 1, v, slot_end, flags, apply, needed, pre)?;
            }
        }
        Ok(())
    }

    /// Splits the huge page containing `va` into pages of the next smaller
    /// size (same frames and flags). Fails with [`PagingError::NotMapped`]
    /// if `va` is not mapped by a huge page.
    pub fn split(&mut self, va: VirtAddr) -> Result<Flush, PagingError> {
        let t = match self.lookup(va)? {
            Lookup::Mapped(t) if t.size != PageSize::Size4KiB => t,
            _ => return Err(PagingError::NotMapped { addr: va }),
        };
        let (page, size) = (t.page, t.size);
        self.check_owned_range(page, size.bytes())?;
        let levels = self.arch.levels();
        let root = self.root;
        let target = size.level();
        self.planned(|pt, apply, needed, pre| {
            let mut node = Node::Real(root);
            for level in (target..=levels).rev() {
                let idx = level_index(page.as_u64(), level);
                let e = pt.entry(node, level, idx);
                let split_here = level == target;
                node = pt.child(node, level, idx, e, false, split_here, apply, needed, pre).expect("mapped");
            }
            Ok(())
        })?;
        Ok(Flush::range(page, size.bytes() / PAGE_BYTES))
    }

    // ----- look-ups -----

    /// The mapping of `va`, if present.
    #[inline]
    pub fn translate(&self, va: VirtAddr) -> Option<Translation> {
        self.arch.check_va(va).ok()?;
        let mut t = self.root;
        let mut level = self.arch.levels();
        let v = va.as_u64();
        let mut shift = 12 + 9 * (level as u32 - 1);
        loop {
            let e = self.table(t)[((v >> shift) & 511) as usize].load(Ordering::Relaxed);
            if !self.arch.is_present(e) {
                return None;
            }
            if self.arch.is_leaf(e, level) {
                let frame = self.arch.leaf_phys(e, level);
                let span = level_span(level);
                return Some(Translation {
                    phys: PhysAddr::new_truncate(frame.as_u64() + (v & (span - 1))),
                    frame,
                    // Clearing low bits of a canonical address keeps it canonical.
                    page: VirtAddr::new_sign_extended(v & !(span - 1), mm_types::PagingMode::FiveLevel),
                    size: page_size(level),
                    flags: self.arch.leaf_flags(e, level),
                });
            }
            t = self.arch.table_phys(e);
            level -= 1;
            shift -= 9;
        }
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
        let mut first = u64::MAX;
        let mut last = 0u64;
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
            first = first.min(v);
            last = last.max(v + level_span(level));
        });
        Ok(if first == u64::MAX {
            Flush::NONE
        } else {
            Flush::range(VirtAddr::new(first).expect("canonical"), (last - first) / PAGE_BYTES)
        })
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
        let mut first = u64::MAX;
        let mut last = 0u64;
        self.visit(self.root, self.arch.levels(), va.as_u64(), end, &mut |level, v, slot| {
            if slot.load(Ordering::Relaxed) & mask == 0 {
                return;
            }
            let old = slot.fetch_and(!mask, Ordering::Relaxed);
            let mut bits = AccessBits::empty();
            bits.set(AccessBits::ACCESSED, old & a & mask != 0);
            bits.set(AccessBits::DIRTY, old & d & mask != 0);
            f(VirtAddr::new(v).expect("canonical"), page_size(level), bits);
            first = first.min(v);
            last = last.max(v + level_span(level));
        });
        Ok(if first == u64::MAX {
            Flush::NONE
        } else {
            Flush::range(VirtAddr::new(first).expect("canonical"), (last - first) / PAGE_BYTES)
        })
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

    // ----- swap entries -----

    /// Puts a swap entry at the 4 KiB page `va` (swap-out): replaces a
    /// present 4 KiB mapping (returned, with its flags, so the caller can
    /// free or keep the frame) or fills an empty slot, creating tables and
    /// splitting a huge page as needed. Fails with
    /// [`PagingError::AlreadyMapped`] if `va` already holds a swap entry.
    pub fn set_swap(&mut self, va: VirtAddr, swap: SwapSlot) -> Result<(Option<Mapping>, Flush), PagingError> {
        self.check_owned_range(va, PAGE_BYTES)?;
        let levels = self.arch.levels();
        let root = self.root;
        let new = self.arch.swap_entry(swap);
        let old = self.planned(|pt, apply, needed, pre| {
            let mut node = Node::Real(root);
            for level in (2..=levels).rev() {
                let idx = level_index(va.as_u64(), level);
                let e = pt.entry(node, level, idx);
                node = pt
                    .child(node, level, idx, e, true, true, apply, needed, pre)
                    .ok_or(PagingError::AlreadyMapped { addr: va })?;
            }
            let idx = level_index(va.as_u64(), 1);
            let e = pt.entry(node, 1, idx);
            if e != 0 && !pt.arch.is_present(e) {
                return Err(PagingError::AlreadyMapped { addr: va });
            }
            if apply {
                pt.store(node, idx, new);
            }
            Ok((e != 0).then(|| Mapping {
                va,
                frame: pt.arch.leaf_phys(e, 1),
                size: PageSize::Size4KiB,
                flags: pt.arch.leaf_flags(e, 1),
            }))
        })?;
        let flush = if old.is_some() { Flush::range(va, 1) } else { Flush::NONE };
        Ok((old, flush))
    }

    /// Replaces the swap entry at `va` by a mapping of `frame` (swap-in) and
    /// returns its slot. Fails with [`PagingError::NotMapped`] if `va`
    /// holds no swap entry.
    pub fn replace_swap(&mut self, va: VirtAddr, frame: PhysAddr, flags: MapFlags) -> Result<SwapSlot, PagingError> {
        let slot = self.leaf_slot_for(va, frame, flags)?;
        let e = slot.load(Ordering::Relaxed);
        let swap = self.arch.swap_of(e).ok_or(PagingError::NotMapped { addr: va })?;
        slot.store(self.arch.leaf(frame, flags, 1), Ordering::Relaxed);
        Ok(swap)
    }

    /// The level-1 slot of `va` for a new 4 KiB leaf of `frame` with
    /// `flags`, after checking all three.
    fn leaf_slot_for(&self, va: VirtAddr, frame: PhysAddr, flags: MapFlags) -> Result<&AtomicU64, PagingError> {
        self.check_owned_range(va, PAGE_BYTES)?;
        if frame.as_u64() % PAGE_BYTES != 0 {
            return Err(PagingError::Misaligned { value: frame.as_u64(), align: PAGE_BYTES });
        }
        if !flags.contains(MapFlags::READ) {
            return Err(PagingError::InvalidFlags);
        }
        self.level1_slot(va).ok_or(PagingError::NotMapped { addr: va })
    }

    fn level1_slot(&self, va: VirtAddr) -> Option<&AtomicU64> {
        let mut t = self.root;
        for level in (2..=self.arch.levels()).rev() {
            let e = self.table(t)[level_index(va.as_u64(), level)].load(Ordering::Relaxed);
            if !self.arch.is_present(e) || self.arch.is_leaf(e, level) {
                return None;
            }
            t = self.arch.table_phys(e);
        }
        Some(&self.table(t)[level_index(va.as_u64(), 1)])
    }

    // ----- teardown -----

    /// Removes every mapping and swap entry (reporting each to `removed`) and
    /// frees every table page, the root included; root entries shared with
    /// [`new_sharing`](Self::new_sharing) are only dropped.
    pub fn destroy(self, mut removed: impl FnMut(Unmapped)) {
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

/// One entry of a table at some level that a walk over a range touches.
#[derive(Clone, Copy)]
struct Slot {
    /// First address of the range inside the entry's span.
    v: u64,
    /// The entry's index.
    idx: usize,
    /// End (exclusive) of the range inside the entry's span.
    end: u128,
    /// Whether the range covers the entry's whole span.
    covers: bool,
}

/// The entries of a table at `level` that `[va, end)` touches, in order (the
/// range lies inside one table's span; `end` may be 2^64).
fn slots(va: u64, end: u128, level: u8) -> impl Iterator<Item = Slot> {
    let span = level_span(level);
    let mut next = Some(va);
    core::iter::from_fn(move || {
        let v = next?;
        let slot_end = ((v & !(span - 1)) as u128 + span as u128).min(end);
        next = (slot_end < end).then_some(slot_end as u64);
        let covers = v % span == 0 && slot_end - v as u128 == span as u128;
        Some(Slot { v, idx: level_index(v, level), end: slot_end, covers })
    })
}

/// End (exclusive) of the level-1 table span containing `v`, clipped to `end`.
#[inline]
fn slot_end_of_table(v: u64, end: u128) -> u128 {
    ((v & !(level_span(2) - 1)) as u128 + level_span(2) as u128).min(end)
}

fn mode_of(levels: u8) -> mm_types::PagingMode {
    if levels >= 5 {
        mm_types::PagingMode::FiveLevel
    } else {
        mm_types::PagingMode::FourLevel
    }
}
