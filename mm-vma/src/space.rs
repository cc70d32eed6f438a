//! [`AddressSpace`] (documented on the type).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use mm_paging::{AccessBits, Entry, FlushBatch, Lookup, MapFlags, PageTable, PagingArch, PagingError, Unmapped};
use mm_types::{FrameProvider, PageKind, PageSize, PhysAddr, PhysMemory, Protection, SwapSlot, VirtAddr, PAGE_BYTES};

use crate::mm::{FaultCount, HookError, MmContext, SpaceId};
use crate::vma::{Backing, Vma, VmaError, VmaFlags, VmaTree};

/// Where an address space puts things.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Lowest address a mapping may use (Linux's `mmap_min_addr`: page 0
    /// stays unmapped so null dereferences fault).
    pub low: u64,
    /// One past the highest user address.
    pub high: u64,
    /// Searches for a free range go top-down from here first.
    pub mmap_base: u64,
    /// Where the heap (`brk`) starts.
    pub brk_base: u64,
    /// Space kept free below a stack (Linux's `stack_guard_gap`, 256 pages).
    pub stack_guard_gap: u64,
    /// Largest size a stack may grow to (the stack rlimit).
    pub stack_limit: u64,
    /// Map the shared zero page on read faults of untouched anonymous
    /// memory (else read faults allocate).
    pub zero_page: bool,
    /// Most VMAs (Linux's `vm.max_map_count`).
    pub map_limit: usize,
}

impl Layout {
    /// Linux's x86-64 layout with 4-level paging: user space below
    /// `0x7fff_ffff_f000`, mappings from `0x7f00_0000_0000` down, the heap at
    /// `0x5555_0000_0000`, a 1 MiB stack guard gap and an 8 MiB stack limit.
    pub const X86_64: Layout = Layout {
        low: 0x1_0000,
        high: 0x7fff_ffff_f000,
        mmap_base: 0x7f00_0000_0000,
        brk_base: 0x5555_0000_0000,
        stack_guard_gap: 256 * PAGE_BYTES,
        stack_limit: 8 << 20,
        zero_page: true,
        map_limit: 65_530,
    };
}

impl Layout {
    /// Checks the layout against a paging mode and the root entries
    /// borrowed from the kernel (bit `i` of `shared`: entry `i`).
    fn validate<A: PagingArch>(&self, arch: &A, shared: Option<&[u64; 8]>) -> Result<(), SpaceError> {
        let bad = |reason| Err(SpaceError::BadLayout { reason });
        if self.low % PAGE_BYTES != 0 || self.high % PAGE_BYTES != 0 {
            return bad("the user range is not page aligned");
        }
        if self.low == 0 || self.low >= self.high {
            return bad("the user range is empty or starts at page 0");
        }
        let top = self.high - 1;
        if top >> 63 != 0 || VirtAddr::new(top).map_or(true, |a| arch.check_va(a).is_err()) {
            return bad("the user range leaves the lower half of the paging mode's canonical addresses");
        }
        if !(self.low..=self.high).contains(&self.mmap_base) || !(self.low..=self.high).contains(&self.brk_base) {
            return bad("mmap_base or brk_base lies outside the user range");
        }
        if let Some(bits) = shared {
            // Each root entry covers 2^(12 + 9 * levels - 9) bytes.
            let shift = 12 + 9 * (u32::from(arch.levels()) - 1);
            let (first, last) = ((self.low >> shift) as usize, (top >> shift) as usize);
            if (first..=last.min(511)).any(|i| bits[i / 64] & (1 << (i % 64)) != 0) {
                return bad("the user range overlaps a root entry shared with the kernel");
            }
        }
        Ok(())
    }
}

impl Default for Layout {
    fn default() -> Self {
        Layout::X86_64
    }
}

/// How `mmap` picks the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Anywhere free (top-down from the layout's `mmap_base`).
    Anywhere,
    /// At this address if that range is free, else anywhere.
    Hint(u64),
    /// Exactly here, replacing whatever was mapped (`MAP_FIXED`).
    Fixed(u64),
    /// Exactly here, failing if anything is mapped (`MAP_FIXED_NOREPLACE`).
    FixedNoReplace(u64),
}

/// An `mmap` request; built with [`MapRequest::anonymous`] or
/// [`MapRequest::object`] and the builder methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRequest {
    /// Length in bytes (rounded up to pages).
    pub len: u64,
    /// Access rights.
    pub prot: Protection,
    /// Address choice.
    pub placement: Placement,
    /// VMA flags.
    pub flags: VmaFlags,
    /// Backing.
    pub backing: Backing,
    /// Fault every page in now (`MAP_POPULATE`; implied by `LOCKED` and by
    /// shared anonymous memory, whose pages must exist before a fork shares
    /// them).
    pub populate: bool,
    /// Alignment of the start when the address is chosen (a power of two;
    /// 0 or 4096 for none).
    pub align: u64,
}

impl MapRequest {
    /// Private anonymous memory.
    pub const fn anonymous(len: u64, prot: Protection) -> Self {
        MapRequest {
            len,
            prot,
            placement: Placement::Anywhere,
            flags: VmaFlags::empty(),
            backing: Backing::Anonymous,
            populate: false,
            align: 0,
        }
    }

    /// A private mapping of `object` from byte `offset` (page aligned).
    pub const fn object(len: u64, prot: Protection, object: u32, offset: u64) -> Self {
        MapRequest { backing: Backing::Object { object, offset }, ..MapRequest::anonymous(len, prot) }
    }

    /// Sets the placement.
    pub const fn at(self, placement: Placement) -> Self {
        MapRequest { placement, ..self }
    }

    /// Makes the mapping shared.
    pub const fn shared(self) -> Self {
        MapRequest { flags: self.flags.union(VmaFlags::SHARED), ..self }
    }

    /// Adds VMA flags.
    pub const fn flags(self, flags: VmaFlags) -> Self {
        MapRequest { flags: self.flags.union(flags), ..self }
    }

    /// Faults every page in at once.
    pub const fn populate(self) -> Self {
        MapRequest { populate: true, ..self }
    }

    /// Aligns the chosen start.
    pub const fn align(self, align: u64) -> Self {
        MapRequest { align, ..self }
    }
}

/// How `mremap` may move a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remap {
    /// Resize in place only.
    InPlace,
    /// Move if it cannot grow in place (`MREMAP_MAYMOVE`).
    MayMove,
    /// Move to exactly this address, replacing what is there
    /// (`MREMAP_MAYMOVE | MREMAP_FIXED`).
    Fixed(u64),
}

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Execute,
}

/// How a fault was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The shared zero page was mapped read-only.
    ZeroPage,
    /// A zeroed page was allocated and mapped.
    DemandZero,
    /// A shared page was copied for a private write.
    CowCopied,
    /// A private write to a page nobody else held: made writable in place.
    CowReused,
    /// The pager provided the page (copied if the mapping is private and
    /// the access a write).
    Pager,
    /// The page came back from swap.
    SwapSlots,
    /// Nothing to do: the page was already accessible (a stale TLB entry).
    Spurious,
}

/// Why a fault could not be resolved. The first four are segmentation
/// faults (`SIGSEGV`), the others a bus error or the OOM path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// No VMA contains the address (and no stack can grow to it).
    NoMapping {
        /// The faulting address.
        addr: u64,
    },
    /// The VMA does not allow the access.
    Protection {
        /// The faulting address.
        addr: u64,
        /// The access.
        access: Access,
        /// What the VMA allows.
        prot: Protection,
    },
    /// The address is in the guard gap that keeps a stack from growing into
    /// the mapping below it.
    GuardGap {
        /// The faulting address.
        addr: u64,
        /// The stack VMA's start.
        stack: u64,
    },
    /// Growing the stack to the address would exceed the stack limit.
    StackLimit {
        /// The faulting address.
        addr: u64,
        /// The limit.
        limit: u64,
    },
    /// No memory for a page or a page table.
    OutOfMemory,
    /// The pager or swap device failed (`SIGBUS`).
    Hook(HookError),
    /// A page-table update failed for a reason other than memory: the
    /// tables and the VMAs disagree (a bug, reported as itself so that it
    /// never reaches the out-of-memory path).
    Paging(PagingError),
    /// A frame the physical memory accessor cannot reach (a set-up error).
    Unreachable {
        /// The frame.
        frame: u64,
    },
}

impl FaultError {
    /// Whether this is a segmentation fault (a bad access by the program),
    /// as opposed to a resource or I/O failure.
    pub fn is_segfault(&self) -> bool {
        matches!(
            self,
            FaultError::NoMapping { .. }
                | FaultError::Protection { .. }
                | FaultError::GuardGap { .. }
                | FaultError::StackLimit { .. }
        )
    }
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultError::NoMapping { addr } => write!(f, "segfault at {addr:#x}: no mapping"),
            FaultError::Protection { addr, access, prot } => {
                write!(f, "segfault at {addr:#x}: {access:?} not allowed by {prot:?}")
            }
            FaultError::GuardGap { addr, stack } => {
                write!(f, "segfault at {addr:#x}: in the guard gap below the stack at {stack:#x}")
            }
            FaultError::StackLimit { addr, limit } => {
                write!(f, "segfault at {addr:#x}: the stack would exceed its {limit:#x}-byte limit")
            }
            FaultError::OutOfMemory => f.write_str("out of memory"),
            FaultError::Hook(e) => write!(f, "bus error: {e}"),
            FaultError::Paging(e) => write!(f, "page-table update failed: {e}"),
            FaultError::Unreachable { frame } => {
                write!(f, "frame {frame:#x} is not reachable through the memory accessor")
            }
        }
    }
}

impl core::error::Error for FaultError {}

/// Why an address-space operation was refused. A refused operation changes
/// nothing, except as noted at [`AddressSpace::mmap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceError {
    /// The VMA layer refused (alignment, overlap, map-count limit, range).
    Vma(VmaError),
    /// A range outside `[layout.low, layout.high)`.
    OutOfRange,
    /// No free range of that size (`ENOMEM`).
    NoSpace,
    /// No memory for pages or page tables.
    OutOfMemory,
    /// Populating the new mapping failed.
    Fault(FaultError),
    /// A page the operation needs is locked in memory or not evictable.
    NotEvictable,
    /// A frame from the provider is not reachable through the physical
    /// memory accessor (a set-up error).
    Unreachable,
    /// The [`Layout`] given to [`AddressSpace::new`] cannot be used.
    BadLayout {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl From<VmaError> for SpaceError {
    fn from(e: VmaError) -> Self {
        SpaceError::Vma(e)
    }
}

impl fmt::Display for SpaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaceError::Vma(e) => e.fmt(f),
            SpaceError::OutOfRange => f.write_str("outside the user address range"),
            SpaceError::NoSpace => f.write_str("no free address range large enough"),
            SpaceError::OutOfMemory => f.write_str("out of memory"),
            SpaceError::Fault(e) => e.fmt(f),
            SpaceError::NotEvictable => f.write_str("the page is locked or not evictable"),
            SpaceError::Unreachable => f.write_str("a frame is not reachable through the memory accessor"),
            SpaceError::BadLayout { reason } => write!(f, "bad address-space layout: {reason}"),
        }
    }
}

impl core::error::Error for SpaceError {}

/// A page-table failure as a fault error: out of memory only when a table
/// page could not be allocated.
fn paging(e: PagingError) -> FaultError {
    match e {
        PagingError::OutOfFrames(_) => FaultError::OutOfMemory,
        e => FaultError::Paging(e),
    }
}

/// A fault error as a space error: out of memory stays out of memory.
fn space(e: FaultError) -> SpaceError {
    match e {
        FaultError::OutOfMemory => SpaceError::OutOfMemory,
        e => SpaceError::Fault(e),
    }
}

/// A hook failure as a fault error: out of memory stays out of memory.
fn hook(e: HookError) -> FaultError {
    match e {
        HookError::OutOfMemory => FaultError::OutOfMemory,
        e => FaultError::Hook(e),
    }
}

fn page_up(len: u64) -> Result<u64, SpaceError> {
    len.checked_add(PAGE_BYTES - 1).map(|l| l & !(PAGE_BYTES - 1)).ok_or(SpaceError::Vma(VmaError::BadRange))
}

fn va(a: u64) -> VirtAddr {
    VirtAddr::new(a).expect("a user address is canonical")
}

/// The page-table flags of a VMA's pages: its rights plus user access;
/// `PROT_NONE` pages stay mapped for the kernel only.
pub fn page_flags(v: &Vma) -> MapFlags {
    if v.prot.is_empty() {
        MapFlags::READ
    } else {
        MapFlags::from_protection(v.prot.union(Protection::USER))
    }
}

fn allows(prot: Protection, access: Access) -> bool {
    match access {
        Access::Read => prot.intersects(Protection::READ | Protection::WRITE | Protection::EXEC),
        Access::Write => prot.contains(Protection::WRITE),
        Access::Execute => prot.contains(Protection::EXEC),
    }
}

/// TLB invalidations and released pages of the operation in progress.
#[derive(Default)]
struct Gather {
    batch: FlushBatch,
    released: Vec<Unmapped>,
}

/// Pages an address space maps, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceCounts {
    /// Present pages other than the zero page (the resident set).
    pub resident: u64,
    /// Mappings of the shared zero page.
    pub zero: u64,
    /// Swap entries.
    pub swapped: u64,
}

/// One address space: VMAs, page tables, and the operations on them.
///
/// Address spaces: a [`VmaTree`] and the page tables that follow it, with
/// Linux's system-call semantics and page-fault handling.
///
/// Pages are mapped on demand, 4 KiB at a time: an operation on a range
/// (`munmap`, `mprotect`, fork) touches only the pages that are there. Every
/// operation collects its TLB invalidations and the pages it released in a
/// gather; at its end the TLB hook flushes once, and only then are released
/// frames freed and swap slots dropped, so no CPU can reach a freed frame
/// through a stale TLB entry.
pub struct AddressSpace<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> {
    mm: Arc<MmContext<A, M, F>>,
    id: SpaceId,
    layout: Layout,
    vmas: VmaTree,
    pt: Option<PageTable<A, M, F>>,
    brk: u64,
    counts: SpaceCounts,
    gather: Gather,
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> fmt::Debug for AddressSpace<A, M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressSpace")
            .field("id", &self.id)
            .field("vmas", &self.vmas.count())
            .field("brk", &self.brk)
            .field("counts", &self.counts)
            .finish()
    }
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> AddressSpace<A, M, F> {
    /// An empty address space with its own (empty) page tables.
    ///
    /// Refuses a layout ([`SpaceError::BadLayout`]) whose user range is
    /// empty, not page aligned, not canonical lower-half addresses of the
    /// `MmContext`'s paging mode, or overlapping a root entry borrowed from the
    /// kernel ([`MmContext::with_kernel_entries`]): no operation of the space can
    /// then reach an address it cannot map or a table it does not own.
    pub fn new(mm: &Arc<MmContext<A, M, F>>, layout: Layout) -> Result<Self, SpaceError> {
        layout.validate(&mm.arch, mm.kernel.as_ref().map(|k| &k.1))?;
        let (arch, mem, frames) = (mm.arch, mm.mem.clone(), mm.frames.clone());
        let pt = match &mm.kernel {
            // SAFETY: `MmContext::with_kernel_entries`'s contract: the kernel root stays valid while spaces exist.
            Some((root, bits)) => unsafe {
                let shared = (0..512).filter(|i| bits[i / 64] & (1 << (i % 64)) != 0);
                PageTable::new_sharing(arch, mem, frames, *root, shared)
            },
            None => PageTable::new(arch, mem, frames),
        }
        .map_err(|e| space(paging(e)))?;
        Ok(AddressSpace {
            mm: mm.clone(),
            id: mm.new_id(),
            layout,
            vmas: VmaTree::new(layout.map_limit),
            pt: Some(pt),
            brk: layout.brk_base,
            counts: SpaceCounts::default(),
            gather: Gather::default(),
        })
    }

    /// This space's name in the reverse map.
    pub fn id(&self) -> SpaceId {
        self.id
    }

    /// The shared state.
    pub fn mm(&self) -> &Arc<MmContext<A, M, F>> {
        &self.mm
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The VMAs.
    pub fn vmas(&self) -> &VmaTree {
        &self.vmas
    }

    /// The page tables (to load into the MMU, or to inspect).
    pub fn page_table(&self) -> &PageTable<A, M, F> {
        self.pt.as_ref().expect("present until drop")
    }

    fn pt(&mut self) -> &mut PageTable<A, M, F> {
        self.pt.as_mut().expect("present until drop")
    }

    /// Pages mapped, by kind.
    pub fn counts(&self) -> SpaceCounts {
        self.counts
    }

    /// The current program break.
    pub fn current_brk(&self) -> u64 {
        self.brk
    }

    // ----- gather -----

    fn note_unmapped(&mut self, u: Unmapped) {
        match u {
            Unmapped::Page { frame, .. } if frame == self.mm.zero_page() => self.counts.zero -= 1,
            Unmapped::Page { .. } => self.counts.resident -= 1,
            Unmapped::Swap { .. } => self.counts.swapped -= 1,
        }
        self.gather.released.push(u);
    }

    fn note_mapped(&mut self, frame: PhysAddr, kind: PageKind, page: u64) {
        if frame == self.mm.zero_page() {
            self.counts.zero += 1;
        } else {
            self.counts.resident += 1;
            self.mm.add_map(frame, kind, self.id, page);
        }
    }

    /// Ends an operation: one TLB flush, then the released pages and swap
    /// slots go.
    fn finish(&mut self) {
        let batch = core::mem::take(&mut self.gather.batch);
        if !batch.is_empty() {
            if let Some(tlb) = &self.mm.hooks.tlb {
                tlb.flush(self.id, batch);
            }
        }
        for u in core::mem::take(&mut self.gather.released) {
            match u {
                Unmapped::Page { va, frame, flags, .. } => {
                    self.mm.remove_map(frame, self.id, va.as_u64(), flags.contains(MapFlags::DIRTY));
                }
                Unmapped::Swap { slot: entry, .. } => {
                    if let Some(s) = &self.mm.hooks.swap {
                        s.release(entry);
                    }
                }
            }
        }
    }

    fn unmap_pages(&mut self, start: u64, len: u64) {
        let mut removed = Vec::new();
        let flush =
            self.pt().unmap_present(va(start), len, |u| removed.push(u)).expect("4 KiB pages: nothing to split");
        if !removed.is_empty() {
            self.gather.batch.add(flush);
        }
        for u in removed {
            self.note_unmapped(u);
        }
    }

    // ----- mmap family -----

    fn check_range(&self, start: u64, len: u64) -> Result<u64, SpaceError> {
        if start % PAGE_BYTES != 0 {
            return Err(VmaError::Unaligned(start).into());
        }
        let end = start.checked_add(len).ok_or(SpaceError::Vma(VmaError::BadRange))?;
        if len == 0 {
            return Err(VmaError::BadRange.into());
        }
        if start < self.layout.low || end > self.layout.high {
            return Err(SpaceError::OutOfRange);
        }
        Ok(end)
    }

    /// Whether `[start, end)` keeps the guard gap below a stack above it.
    fn clear_of_stacks(&self, end: u64) -> bool {
        self.vmas
            .find_from(end)
            .is_none_or(|n| !n.flags.contains(VmaFlags::GROWS_DOWN) || n.start - end >= self.layout.stack_guard_gap)
    }

    /// A free range of `len` bytes: top-down below `mmap_base`, then
    /// anywhere, never in a stack's guard gap.
    fn find_gap(&self, len: u64, align: u64) -> Result<u64, SpaceError> {
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
                high = stack.saturating_sub(self.layout.stack_guard_gap);
            }
        }
        Err(SpaceError::NoSpace)
    }

    fn is_free(&self, start: u64, end: u64) -> bool {
        self.vmas.overlapping(start, end).next().is_none()
    }

    /// Maps a new range and returns its start (`mmap`). Adjacent compatible
    /// VMAs merge. With [`Placement::Fixed`] the old mappings of the range
    /// are removed first, and stay removed if the new mapping then fails
    /// (as in Linux); a mapping whose population fails is removed again.
    pub fn mmap(&mut self, req: MapRequest) -> Result<u64, SpaceError> {
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
                let ok = h % PAGE_BYTES == 0
                    && self.check_range(h, len).is_ok()
                    && self.is_free(h, h + len)
                    && self.clear_of_stacks(h + len);
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

    fn populate(&mut self, start: u64, end: u64) -> Result<(), FaultError> {
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
    pub fn munmap(&mut self, start: u64, len: u64) -> Result<(), SpaceError> {
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
    pub fn mprotect(&mut self, start: u64, len: u64, prot: Protection) -> Result<(), SpaceError> {
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
            let flush =
                mm.with_sharing(|shared| {
                    pt.update_flags(va(s), e - s, |m| {
                        if private && shared(m.frame) {
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

    /// Sets the program break (`brk`): grows or shrinks the heap that
    /// starts at the layout's `brk_base`. Returns the new break. (The Linux
    /// system call reports failure by returning the old break.)
    pub fn brk(&mut self, new: u64) -> Result<u64, SpaceError> {
        if new < self.layout.brk_base || new > self.layout.high {
            return Err(SpaceError::OutOfRange);
        }
        let old_end = page_up(self.brk)?;
        let new_end = page_up(new)?;
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
    pub fn mremap(&mut self, old: u64, old_len: u64, new_len: u64, mode: Remap) -> Result<u64, SpaceError> {
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
        let new_end = old.checked_add(new_len).ok_or(SpaceError::Vma(VmaError::BadRange))?;
        let can_grow = old_end == v.end
            && !v.flags.contains(VmaFlags::NO_EXPAND)
            && new_end <= self.layout.high
            && self.is_free(old_end, new_end)
            && self.clear_of_stacks(new_end);
        if can_grow {
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

    fn populate_if_shared_anon(&mut self, v: &Vma, start: u64, end: u64) -> Result<(), SpaceError> {
        if v.flags.contains(VmaFlags::SHARED) && v.backing == Backing::Anonymous {
            self.populate(start, end).map_err(SpaceError::Fault)?;
        }
        Ok(())
    }

    /// Moves the pages of `[old, old + len)` (inside `v`) to `to`, in a new
    /// VMA of `new_len` bytes with `v`'s attributes.
    fn move_pages(&mut self, v: &Vma, old: u64, len: u64, to: u64, new_len: u64) -> Result<(), SpaceError> {
        let backing = match v.backing {
            Backing::Object { object, offset } => Backing::Object { object, offset: offset + (old - v.start) },
            Backing::Anonymous => Backing::Anonymous,
        };
        let moved = Vma { start: to, end: to + new_len, backing, ..*v };
        self.vmas.insert(moved)?;
        let mut entries = Vec::new();
        self.page_table().for_each_entry(va(old), len, |e| entries.push(e)).expect("checked range");
        let mut failed = None;
        for e in &entries {
            let r = match *e {
                Entry::Page(m) => {
                    let at = va(to + (m.va.as_u64() - old));
                    self.pt().map(at, m.frame, PageSize::Size4KiB, m.flags).map(|f| f.ignore())
                }
                Entry::Swap { va: from, slot: entry } => {
                    let at = va(to + (from.as_u64() - old));
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
            self.pt().unmap_present(va(to), new_len, |_| {}).expect("4 KiB pages").ignore();
            self.vmas.remove_range(to, new_len, |_| {}).expect("removing a whole new VMA adds none");
            return Err(space(paging(e)));
        }
        // The old mappings' dirty bits as they were removed (a write since
        // the walk above set one the copies lack) move to their pages.
        let mut dirtied = Vec::new();
        let flush = self
            .pt()
            .unmap_present(va(old), len, |u| {
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
                self.mm.move_map(m.frame, self.id, m.va.as_u64(), to + (m.va.as_u64() - old));
            }
        }
        self.vmas.remove_range(old, len, |_| {})?;
        self.finish();
        self.populate_if_shared_anon(&moved, to + len, to + new_len)
    }

    /// Maps a stack of `len` bytes ending at `top`, growing down on faults
    /// below it (up to the layout's stack limit, keeping the guard gap).
    /// Returns its start.
    pub fn map_stack(&mut self, top: u64, len: u64) -> Result<u64, SpaceError> {
        let len = page_up(len)?;
        let start = top.checked_sub(len).ok_or(SpaceError::OutOfRange)?;
        let req = MapRequest::anonymous(len, Protection::READ | Protection::WRITE)
            .flags(VmaFlags::GROWS_DOWN)
            .at(Placement::FixedNoReplace(start));
        self.mmap(req)
    }

    // ----- faults -----

    /// Handles a page fault at `addr` for `access` from user mode: grows a
    /// stack, checks the VMA's rights, and maps the page (zero page, a new
    /// zeroed page, a copy, the pager's page, or the page back from swap).
    pub fn fault(&mut self, addr: u64, access: Access) -> Result<FaultKind, FaultError> {
        let r = self.fault_inner(addr, access);
        self.finish();
        if r.is_err() {
            self.mm.count(FaultCount::Refused);
        }
        r
    }

    fn fault_inner(&mut self, addr: u64, access: Access) -> Result<FaultKind, FaultError> {
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
        self.fault_page(addr & !(PAGE_BYTES - 1), access == Access::Write, &v)
    }

    /// Grows the stack above `addr` down to it for `access`; a refused
    /// fault leaves the stack as it was.
    fn grow_stack(&mut self, addr: u64, access: Access) -> Result<Vma, FaultError> {
        let stack = self
            .vmas
            .find_from(addr)
            .filter(|n| n.flags.contains(VmaFlags::GROWS_DOWN))
            .ok_or(FaultError::NoMapping { addr })?;
        if !allows(stack.prot, access) {
            return Err(FaultError::Protection { addr, access, prot: stack.prot });
        }
        let page = addr & !(PAGE_BYTES - 1);
        if stack.end - page > self.layout.stack_limit {
            return Err(FaultError::StackLimit { addr, limit: self.layout.stack_limit });
        }
        if page < self.layout.low {
            return Err(FaultError::NoMapping { addr });
        }
        if let Some(p) = self.vmas.prev(addr) {
            if !p.prot.is_empty() && p.end.saturating_add(self.layout.stack_guard_gap) > page {
                return Err(FaultError::GuardGap { addr, stack: stack.start });
            }
        }
        let v = self.vmas.expand(stack.start, page, stack.end).map_err(|_| FaultError::OutOfMemory)?;
        self.mm.count(FaultCount::StackGrowth);
        Ok(v)
    }

    /// Resolves a fault on `page` inside `v` (rights already checked).
    fn fault_page(&mut self, page: u64, write: bool, v: &Vma) -> Result<FaultKind, FaultError> {
        let at = va(page);
        let lookup = self.page_table().lookup(at).expect("a user address");
        match lookup {
            Lookup::Mapped(t) => {
                if !write || t.flags.contains(MapFlags::WRITE) {
                    self.mm.count(FaultCount::Spurious);
                    return Ok(FaultKind::Spurious);
                }
                if v.flags.contains(VmaFlags::SHARED) {
                    let f = self.pt().update_flags(at, PAGE_BYTES, |m| m.flags | MapFlags::WRITE).expect("mapped");
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

    fn map_new(&mut self, page: u64, frame: PhysAddr, flags: MapFlags, kind: PageKind) -> Result<(), FaultError> {
        match self.pt().map(va(page), frame, PageSize::Size4KiB, flags) {
            Ok(f) => {
                f.ignore();
                self.note_mapped(frame, kind, page);
                Ok(())
            }
            Err(e) => Err(paging(e)),
        }
    }

    fn demand_zero(&mut self, page: u64, write: bool, v: &Vma) -> Result<FaultKind, FaultError> {
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

    fn copy_on_write(&mut self, page: u64, old: PhysAddr, v: &Vma) -> Result<FaultKind, FaultError> {
        let flags = page_flags(v);
        if !self.mm.is_shared(old) {
            let f = self.pt().update_flags(va(page), PAGE_BYTES, |_| flags).expect("mapped");
            self.gather.batch.add(f);
            self.mm.count(FaultCount::CowReused);
            return Ok(FaultKind::CowReused);
        }
        let frame = self.new_page(Some(old))?;
        let (gone, f) = self.pt().replace(va(page), frame, flags).expect("mapped");
        self.gather.batch.add(f);
        self.note_unmapped(Unmapped::Page { va: gone.va, frame: gone.frame, size: gone.size, flags: gone.flags });
        self.note_mapped(frame, PageKind::Anon, page);
        self.mm.count(FaultCount::CowCopied);
        Ok(FaultKind::CowCopied)
    }

    fn swap_in(&mut self, page: u64, entry: SwapSlot, write: bool, v: &Vma) -> Result<FaultKind, FaultError> {
        let swap = self.mm.hooks.swap.clone().ok_or(FaultError::Hook(HookError::Unavailable))?;
        let frame = swap.swap_in(entry).map_err(hook)?;
        // Private pages start read-only: whether the frame is still shared
        // is known once the device has dropped the entry's reference.
        let mut flags = page_flags(v);
        if !v.flags.contains(VmaFlags::SHARED) {
            flags -= MapFlags::WRITE;
        }
        self.pt().replace_swap(va(page), frame, flags).expect("the entry was just read");
        self.counts.swapped -= 1;
        self.note_mapped(frame, PageKind::Anon, page);
        swap.swapped_in(entry, frame);
        self.mm.count(FaultCount::SwapSlots);
        if write && !flags.contains(MapFlags::WRITE) {
            self.copy_on_write(page, frame, v)?;
        }
        Ok(FaultKind::SwapSlots)
    }

    fn pager_fault(
        &mut self,
        page: u64,
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
        Ok(FaultKind::Pager)
    }

    // ----- user memory access -----

    /// The physical address backing user address `addr` for `access`,
    /// faulting the page in and setting its accessed (and, for a write,
    /// dirty) bit as the MMU would (an emulated access: kernels use it for
    /// `copy_to_user`/`copy_from_user`, tests for "touching" memory).
    pub fn resolve(&mut self, addr: u64, access: Access) -> Result<PhysAddr, FaultError> {
        let ok = |t: &mm_paging::Translation| {
            t.flags.contains(MapFlags::USER)
                && match access {
                    Access::Read => true,
                    Access::Write => t.flags.contains(MapFlags::WRITE),
                    Access::Execute => t.flags.contains(MapFlags::EXECUTE),
                }
        };
        let at = VirtAddr::new(addr).map_err(|_| FaultError::NoMapping { addr })?;
        let t = match self.page_table().translate(at).filter(ok) {
            Some(t) => t,
            None => {
                self.fault(addr, access)?;
                self.page_table().translate(at).filter(ok).expect("a resolved fault leaves the page accessible")
            }
        };
        // As the MMU would (reclaim harvests these); a second walk only
        // when a bit is still clear.
        let write = access == Access::Write;
        if !t.flags.contains(MapFlags::ACCESSED) || (write && !t.flags.contains(MapFlags::DIRTY)) {
            self.page_table().set_access_bits(at, write);
        }
        Ok(t.phys)
    }

    /// Copies `data` to user memory at `addr`, faulting pages in.
    pub fn write_user(&mut self, addr: u64, data: &[u8]) -> Result<(), FaultError> {
        let mut done = 0usize;
        while done < data.len() {
            let a = addr.checked_add(done as u64).ok_or(FaultError::NoMapping { addr })?;
            let n = ((PAGE_BYTES - a % PAGE_BYTES) as usize).min(data.len() - done);
            let phys = self.resolve(a, Access::Write)?;
            // SAFETY: the page is mapped writable in this space, which we borrow mutably; a writable
            // private page is ours alone (copy-on-write ran), a shared mapping's page is written by
            // its sharers as user memory is.
            let r = unsafe { self.mm.mem.write_bytes(phys, &data[done..done + n]) };
            r.map_err(|_| FaultError::Unreachable { frame: phys.as_u64() & !(PAGE_BYTES - 1) })?;
            done += n;
        }
        Ok(())
    }

    /// Copies user memory at `addr` into `buf`, faulting pages in.
    pub fn read_user(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), FaultError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(FaultError::NoMapping { addr })?;
            let n = ((PAGE_BYTES - a % PAGE_BYTES) as usize).min(buf.len() - done);
            let phys = self.resolve(a, Access::Read)?;
            // SAFETY: the page is mapped in this space, borrowed mutably; a page shared with other
            // spaces is read-only in all of them (copy-on-write) or written by sharers as user memory
            // is.
            let r = unsafe { self.mm.mem.read_bytes(phys, &mut buf[done..done + n]) };
            r.map_err(|_| FaultError::Unreachable { frame: phys.as_u64() & !(PAGE_BYTES - 1) })?;
            done += n;
        }
        Ok(())
    }

    // ----- fork -----

    /// Duplicates this address space (`fork`): same VMAs and break; shared
    /// mappings share their pages; private pages are shared copy-on-write
    /// (write-protected in both) and swap entries are duplicated. On failure
    /// this space is unchanged.
    pub fn fork(&mut self) -> Result<Self, SpaceError> {
        let mut child = AddressSpace::new(&self.mm, self.layout)?;
        child.vmas = self.vmas.clone();
        child.brk = self.brk;
        let vmas: Vec<Vma> = self.vmas.iter().collect();
        let mut entries = Vec::new();
        for v in &vmas {
            entries.clear();
            self.page_table().for_each_entry(va(v.start), v.len(), |e| entries.push(e)).expect("a VMA range");
            let private = !v.flags.contains(VmaFlags::SHARED);
            for e in &entries {
                match *e {
                    Entry::Page(m) => {
                        let mut flags = m.flags - (MapFlags::ACCESSED | MapFlags::DIRTY);
                        if private {
                            flags -= MapFlags::WRITE;
                        }
                        child.map_new(m.va.as_u64(), m.frame, flags, PageKind::Anon).map_err(space)?;
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
            let f = self.pt().update_flags(va(v.start), v.len(), |m| m.flags - MapFlags::WRITE).expect("READ kept");
            self.gather.batch.add(f);
        }
        self.finish();
        Ok(child)
    }

    // ----- reclaim -----

    /// Whether the page at `addr` may be evicted: mapped in a VMA that is
    /// not locked.
    pub fn is_evictable(&self, addr: u64) -> bool {
        self.vmas.find(addr).is_some_and(|v| !v.flags.contains(VmaFlags::LOCKED))
    }

    /// Tests and clears the accessed bit of the page at `addr` (reclaim's
    /// reference harvesting); `false` if nothing is mapped there.
    pub fn test_and_clear_young(&mut self, addr: u64) -> bool {
        let mut young = false;
        let f = self
            .page_table()
            .harvest(va(addr & !(PAGE_BYTES - 1)), PAGE_BYTES, AccessBits::ACCESSED, |_, _, _| young = true)
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
    /// must be written back). Reclaim pins the frame ([`MmContext::pin`]) before
    /// unmapping it from its users, so it is not freed until reclaim is done
    /// with it.
    pub fn evict(&mut self, addr: u64, swap: Option<SwapSlot>) -> Result<mm_paging::Mapping, SpaceError> {
        let page = addr & !(PAGE_BYTES - 1);
        if !self.is_evictable(page) {
            return Err(SpaceError::NotEvictable);
        }
        let t = self.page_table().translate(va(page)).ok_or(SpaceError::NotEvictable)?;
        if t.frame == self.mm.zero_page() {
            return Err(SpaceError::NotEvictable);
        }
        // A pager's page is dropped (the pager has it), never swapped.
        if swap.is_some() && self.mm.kind_of(t.frame) != Some(PageKind::Anon) {
            return Err(SpaceError::NotEvictable);
        }
        let gone = match swap {
            Some(entry) => {
                let (gone, f) = self.pt().set_swap(va(page), entry).map_err(|e| space(paging(e)))?;
                self.gather.batch.add(f);
                self.counts.swapped += 1;
                gone.expect("the page was present")
            }
            None => {
                let mut gone = None;
                let f = self.pt().unmap_present(va(page), PAGE_BYTES, |u| gone = Some(u)).expect("4 KiB pages");
                self.gather.batch.add(f);
                match gone {
                    Some(Unmapped::Page { va, frame, size, flags }) => mm_paging::Mapping { va, frame, size, flags },
                    _ => unreachable!("the page was present"),
                }
            }
        };
        self.note_unmapped(Unmapped::Page { va: gone.va, frame: gone.frame, size: gone.size, flags: gone.flags });
        self.finish();
        Ok(gone)
    }

    // ----- checks -----

    fn user_start(&self) -> u64 {
        self.layout.low & !(PAGE_BYTES - 1)
    }

    fn user_len(&self) -> u64 {
        self.layout.high.next_multiple_of(PAGE_BYTES) - self.user_start()
    }

    /// Counts present pages (zero page included) and swap entries by
    /// walking the page tables.
    pub(crate) fn census(&self) -> SpaceCounts {
        let zero = self.mm.zero_page();
        let mut c = SpaceCounts::default();
        self.page_table()
            .for_each_entry(va(self.user_start()), self.user_len(), |e| match e {
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
            .for_each_entry(va(self.user_start()), self.user_len(), |e| {
                match e {
                    Entry::Page(m) if m.frame == zero => c.zero += 1,
                    Entry::Page(_) => c.resident += 1,
                    Entry::Swap { .. } => c.swapped += 1,
                }
                let a = match e {
                    Entry::Page(m) => m.va.as_u64(),
                    Entry::Swap { va, .. } => va.as_u64(),
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

/// Pages and swap entries a dying space releases at a time.
const RELEASE_CHUNK: usize = 128;

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> Drop for AddressSpace<A, M, F> {
    /// Tears the space down: every page and swap entry is released and the
    /// page tables freed. The space must not be active on any CPU.
    fn drop(&mut self) {
        if let Some(pt) = self.pt.take() {
            // Released in chunks as the tables are walked, not gathered
            // whole: a big space's list would need one large allocation
            // just when memory is short (a kernel killing a task for
            // memory). Nothing is cached in any TLB for a space that is
            // not active, so nothing waits for a flush.
            pt.destroy(|u| {
                self.note_unmapped(u);
                if self.gather.released.len() >= RELEASE_CHUNK {
                    self.finish();
                }
            });
        }
        self.finish();
    }
}
