//! The page-table engine.
//!
//! Every operation that changes the structure runs its walker twice over the
//! same range (see `walk.rs`): a read-only *plan* pass checks everything
//! (alignment, mappedness) and counts the table pages the change needs — a
//! missing table or a huge page to split is a *virtual* table whose entries
//! are computed — then all those pages are allocated, then the *apply* pass
//! makes the change and cannot fail. A refused operation therefore leaves the tables exactly as
//! they were. Each table is visited once per pass: range operations cost one
//! walk per table, not per page.

use core::sync::atomic::{AtomicU64, Ordering};

use mm_types::{
    AllocFlags, FrameBlock, FrameNumber, FrameProvider, Order, PageSize, PhysAddr, PhysMemory, SwapSlot, VirtAddr,
    PAGE_BYTES,
};

use crate::arch::{level_index, level_span, PagingArch, ENTRIES};
use crate::error::PagingError;
use crate::flags::MapFlags;
use crate::table::{entries, entries_linear};

mod lookup;
mod map;
mod protect;
mod swap;
mod teardown;
mod unmap;
mod walk;

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
    /// What becomes of the table pages the unmap empties.
    tables: Tables,
    /// Skip pages that hold nothing (else they are an error).
    sparse: bool,
}

/// What an unmap does with a table page it empties.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tables {
    /// Leave it in place for the next mapping of its range.
    Keep,
    /// Unlink it and give it back to the frame provider at once.
    Free,
    /// Unlink it and hold it until [`PageTable::free_unlinked_tables`]
    /// (after the TLB flush).
    Defer,
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
    /// Table pages unlinked by deferring unmaps and not yet freed (see
    /// [`unlinked`](Self::unlinked)). Plain data, changed under `&mut self`:
    /// an atomic here would make `&PageTable` interior-mutable, and the
    /// compiler could then no longer keep the fields a walk reads in
    /// registers across a loop of translations.
    unlinked: Unlinked,
}

/// Table pages unlinked and held: the last one unlinked, which links the
/// one before through its entry 0, and so on; `count` of them.
#[derive(Clone, Copy, Debug, Default)]
struct Unlinked {
    head: u64,
    count: u64,
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
        Ok(PageTable {
            arch,
            mem,
            frames,
            root: block.start_address(),
            linear,
            borrowed: [0; 8],
            unlinked: Unlinked::default(),
        })
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
    /// pages are all reachable through `mem`, and whose table entries leave
    /// the count field ([`PagingArch::table_count_shift`]; bits 52-61 on
    /// x86-64) zero or exact; nothing else modifies it while this value
    /// exists (a count left stale would free a table early); and table
    /// pages this value frees (when unmapping empties them, or in
    /// `destroy`) may be returned to `frames`, so they must have come from
    /// it.
    pub unsafe fn from_root(arch: A, mem: M, frames: F, root: PhysAddr) -> Self {
        let linear = mem.linear_offset();
        PageTable { arch, mem, frames, root, linear, borrowed: [0; 8], unlinked: Unlinked::default() }
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
            None => self.table_checked(phys),
        }
    }

    /// [`table`](Self::table) through the checked accessor (no linear
    /// map), out of line: inlined, its checks would take registers from
    /// every walk of the direct-map case.
    #[inline(never)]
    fn table_checked(&self, phys: PhysAddr) -> &[AtomicU64; ENTRIES] {
        // SAFETY: as in `table`.
        unsafe { entries(&self.mem, phys) }
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

    /// Frees a table page an unmap emptied and unlinked, or with
    /// [`Tables::Defer`] adds it to `held` (to be stored in
    /// [`PageTable::unlinked`] by the `&mut self` caller) until
    /// [`free_unlinked_tables`](Self::free_unlinked_tables).
    fn retire_table(&self, phys: PhysAddr, tables: Tables, held: &mut Unlinked) {
        if tables != Tables::Defer {
            return self.free_table(phys);
        }
        // The page is empty and unlinked, but another CPU's paging-structure
        // cache (or a speculative walk) may still read it until the flush:
        // the link it now holds in entry 0 is a page-aligned address, which
        // reads as a not-present entry. The first page's link is never read.
        let link = if held.count == 0 { 0 } else { held.head };
        debug_assert!(!self.arch.is_present(link), "an unlinked table's link must read as not present");
        self.table(phys)[0].store(link, Ordering::Relaxed);
        *held = Unlinked { head: phys.as_u64(), count: held.count + 1 };
    }

    /// Gives back every table page a deferring unmap
    /// ([`unmap_present_deferred`](Self::unmap_present_deferred)) unlinked,
    /// and returns how many. Call it once the TLB flush of those unmaps has
    /// completed on every CPU that may have the hierarchy loaded.
    pub fn free_unlinked_tables(&mut self) -> u64 {
        let Unlinked { mut head, count } = core::mem::take(&mut self.unlinked);
        for _ in 0..count {
            let phys = PhysAddr::new(head).expect("a table page's address");
            head = self.table(phys)[0].swap(0, Ordering::Relaxed);
            self.free_table(phys);
        }
        count
    }

    /// How many table pages deferring unmaps have unlinked and
    /// [`free_unlinked_tables`](Self::free_unlinked_tables) has not yet
    /// freed (they are not counted by [`table_pages`](Self::table_pages)).
    pub fn unlinked(&self) -> u64 {
        self.unlinked.count
    }

    fn free_table(&self, phys: PhysAddr) {
        let block = FrameBlock::new(FrameNumber::containing(phys), Order::ZERO).expect("order 0");
        // A table page that its provider refuses was not allocated from it
        // (the `from_root` contract was broken); keeping it is the safe choice.
        let _ = self.frames.free(block);
    }

    #[inline]
    fn store(&self, node: Node, idx: usize, value: u64) {
        if let Node::Real(t) = node {
            self.table(t)[idx].store(value, Ordering::Relaxed);
        }
    }

    /// Replaces entry `idx` of a real table and returns what it held, in
    /// one atomic exchange: an accessed or dirty bit another CPU's MMU sets
    /// between a read and a store would otherwise be lost.
    #[inline]
    fn exchange(&self, node: Node, idx: usize, value: u64) -> u64 {
        match node {
            Node::Real(t) => self.table(t)[idx].swap(value, Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Sets entry `idx` of a real table to `f(old)` with a compare-and-swap
    /// loop (so that the MMU's accessed and dirty bits, set concurrently,
    /// reach `f`), and returns the old entry.
    #[inline]
    fn update(&self, node: Node, idx: usize, f: impl Fn(u64) -> u64) -> u64 {
        let Node::Real(t) = node else { return 0 };
        let slot = &self.table(t)[idx];
        let mut e = slot.load(Ordering::Relaxed);
        loop {
            match slot.compare_exchange_weak(e, f(e), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(old) => return old,
                Err(now) => e = now,
            }
        }
    }

    /// The live-entry count kept in the table entry `e` for the table
    /// below, if the format keeps one and it is known.
    #[inline]
    fn table_count(&self, e: u64) -> Option<u16> {
        let shift = self.arch.table_count_shift()?;
        let field = ((e >> shift) & COUNT_FIELD) as u16;
        field.checked_sub(1)
    }

    /// The table entry `e` with its count set to `count`.
    #[inline]
    fn with_table_count(&self, e: u64, count: u16) -> u64 {
        match self.arch.table_count_shift() {
            Some(shift) => (e & !(COUNT_FIELD << shift)) | (u64::from(count) + 1) << shift,
            None => e,
        }
    }

    /// Adds `delta` to the live-entry count that the table entry `slot`
    /// keeps for the table below it and says whether the count is now
    /// zero; `None` (and nothing written) when no count is known.
    ///
    /// A load and a store, not an atomic add: every writer of the tables
    /// holds `&mut self`, and the MMU writes only the accessed bit of a
    /// table entry, which the engine never reads (losing it costs nothing).
    #[inline]
    fn add_count(&self, slot: &AtomicU64, delta: i32) -> Option<bool> {
        let shift = self.arch.table_count_shift()?;
        let e = slot.load(Ordering::Relaxed);
        if e & (COUNT_FIELD << shift) == 0 {
            return None;
        }
        let new = e.wrapping_add((i64::from(delta) as u64) << shift);
        debug_assert!(
            (1..=ENTRIES as u64 + 1).contains(&((new >> shift) & COUNT_FIELD))
                && new >> shift >> 10 == e >> shift >> 10,
            "table count {:?} {delta:+}",
            self.table_count(e)
        );
        slot.store(new, Ordering::Relaxed);
        Some((new >> shift) & COUNT_FIELD == 1)
    }

    /// Checks every live-entry count kept in table entries against the
    /// entries of the table below (a known count must equal the number of
    /// non-empty entries). Returns the first table whose count is wrong: a
    /// virtual address it maps and its level. For tests and debugging: it
    /// reads every table page.
    pub fn check_table_counts(&self) -> Result<(), (VirtAddr, u8)> {
        let levels = self.arch.levels();
        (0..ENTRIES)
            .filter(|&i| !self.is_borrowed(i))
            .try_for_each(|i| self.check_counts_below(self.root, levels, i, i as u64 * level_span(levels)))
    }

    fn check_counts_below(&self, t: PhysAddr, level: u8, idx: usize, va: u64) -> Result<(), (VirtAddr, u8)> {
        let e = self.table(t)[idx].load(Ordering::Relaxed);
        if level == 1 || !self.arch.is_present(e) || self.arch.is_leaf(e, level) {
            return Ok(());
        }
        let child = self.arch.table_phys(e);
        let live = self.table(child).iter().filter(|s| s.load(Ordering::Relaxed) != 0).count();
        if self.table_count(e).is_some_and(|c| usize::from(c) != live) {
            return Err((VirtAddr::new_sign_extended(va, mode_of(self.arch.levels())), level - 1));
        }
        (0..ENTRIES).try_for_each(|i| {
            self.check_counts_below(child, level - 1, i, va.wrapping_add(i as u64 * level_span(level - 1)))
        })
    }
}

/// The ten bits of a table entry's live-entry count field
/// ([`PagingArch::table_count_shift`]).
const COUNT_FIELD: u64 = 0x3ff;

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
