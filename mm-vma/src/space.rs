//! [`AddressSpace`] (documented on the type).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use mm_paging::{FlushBatch, MapFlags, PageTable, PagingArch, PagingError, Unmapped};
use mm_types::{FrameProvider, PageKind, PageNumber, PhysAddr, PhysMemory, Protection, VirtAddr, PAGE_BYTES};

use crate::mm::{HookError, MmContext, SpaceId};
use crate::vma::{Backing, Vma, VmaError, VmaFlags, VmaTree};

mod check;
mod fault;
mod fork;
mod mmap;
mod reclaim;
mod user;

/// Where an address space puts things.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Lowest address a mapping may use (Linux's `mmap_min_addr`: page 0
    /// stays unmapped so null dereferences fault).
    pub low: VirtAddr,
    /// One past the highest user address.
    pub high: VirtAddr,
    /// Searches for a free range go top-down from here first.
    pub mmap_base: VirtAddr,
    /// Where the heap (`brk`) starts.
    pub brk_base: VirtAddr,
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
        low: const_addr(0x1_0000),
        high: const_addr(0x7fff_ffff_f000),
        mmap_base: const_addr(0x7f00_0000_0000),
        brk_base: const_addr(0x5555_0000_0000),
        stack_guard_gap: 256 * PAGE_BYTES,
        stack_limit: 8 << 20,
        zero_page: true,
        map_limit: 65_530,
    };
}

/// A virtual address in a constant (a layout's), which must be canonical.
const fn const_addr(addr: u64) -> VirtAddr {
    match VirtAddr::new(addr) {
        Ok(a) => a,
        Err(_) => panic!("a layout address that is not canonical"),
    }
}

impl Layout {
    /// Checks the layout against a paging mode and the root entries
    /// borrowed from the kernel (bit `i` of `shared`: entry `i`).
    fn validate<A: PagingArch>(&self, arch: &A, shared: Option<&[u64; 8]>) -> Result<(), SpaceError> {
        let bad = |reason| Err(SpaceError::BadLayout { reason });
        if !self.low.is_aligned(PAGE_BYTES) || !self.high.is_aligned(PAGE_BYTES) {
            return bad("the user range is not page aligned");
        }
        if self.low == VirtAddr::ZERO || self.low >= self.high {
            return bad("the user range is empty or starts at page 0");
        }
        // The last user address, a lower-half address canonical in the
        // paging mode (there is none below the upper half's first address).
        let top = match self.high.checked_sub(1) {
            Some(top) if !top.is_upper_half() && arch.check_va(top).is_ok() => top,
            _ => return bad("the user range leaves the lower half of the paging mode's canonical addresses"),
        };
        if !(self.low..=self.high).contains(&self.mmap_base) || !(self.low..=self.high).contains(&self.brk_base) {
            return bad("mmap_base or brk_base lies outside the user range");
        }
        if let Some(bits) = shared {
            // Each root entry covers 2^(12 + 9 * levels - 9) bytes.
            let shift = 12 + 9 * (u32::from(arch.levels()) - 1);
            let (first, last) = ((self.low.as_u64() >> shift) as usize, (top.as_u64() >> shift) as usize);
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
    Hint(VirtAddr),
    /// Exactly here, replacing whatever was mapped (`MAP_FIXED`).
    Fixed(VirtAddr),
    /// Exactly here, failing if anything is mapped (`MAP_FIXED_NOREPLACE`).
    FixedNoReplace(VirtAddr),
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
    Fixed(VirtAddr),
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
    SwapIn,
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
        addr: VirtAddr,
    },
    /// The VMA does not allow the access.
    Protection {
        /// The faulting address.
        addr: VirtAddr,
        /// The access.
        access: Access,
        /// What the VMA allows.
        prot: Protection,
    },
    /// The address is in the guard gap that keeps a stack from growing into
    /// the mapping below it.
    GuardGap {
        /// The faulting address.
        addr: VirtAddr,
        /// The stack VMA's start.
        stack: VirtAddr,
    },
    /// Growing the stack to the address would exceed the stack limit.
    StackLimit {
        /// The faulting address.
        addr: VirtAddr,
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

/// The start of the 4 KiB page holding `addr`.
fn page_of(addr: VirtAddr) -> VirtAddr {
    PageNumber::containing(addr).start_address()
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
    brk: VirtAddr,
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
    pub fn current_brk(&self) -> VirtAddr {
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

    fn note_mapped(&mut self, frame: PhysAddr, kind: PageKind, page: VirtAddr) {
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
        // Tables the unmaps emptied go only now: until the flush, another
        // CPU's paging-structure cache may still point at them.
        if let Some(pt) = self.pt.as_mut() {
            pt.free_unlinked_tables();
        }
        // Drained, and a small buffer put back: an operation that releases
        // a few pages (every eviction, a copy-on-write fault) then
        // allocates nothing here; a big one (a large munmap) is not kept.
        let mut released = core::mem::take(&mut self.gather.released);
        for u in released.drain(..) {
            match u {
                Unmapped::Page { va, frame, flags, .. } => {
                    self.mm.remove_map(frame, self.id, va, flags.contains(MapFlags::DIRTY));
                }
                Unmapped::Swap { slot: entry, .. } => {
                    if let Some(s) = &self.mm.hooks.swap {
                        s.release(entry);
                    }
                }
            }
        }
        if self.gather.released.is_empty() && released.capacity() <= KEEP_RELEASED {
            self.gather.released = released;
        }
    }

    fn unmap_pages(&mut self, start: VirtAddr, len: u64) {
        let mut removed = Vec::new();
        let flush =
            self.pt().unmap_present_deferred(start, len, |u| removed.push(u)).expect("4 KiB pages: nothing to split");
        if !removed.is_empty() {
            self.gather.batch.add(flush);
        }
        for u in removed {
            self.note_unmapped(u);
        }
    }
}

/// The most entries of a drained release buffer that a space keeps for its
/// next operation.
const KEEP_RELEASED: usize = 64;

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
