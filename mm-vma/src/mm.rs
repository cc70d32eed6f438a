//! [`MmContext`] (documented on the type).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mm_paging::{FlushBatch, PagingArch};
use mm_types::{AllocFlags, FrameProvider, PageKind, PhysAddr, PhysMemory, SwapSlot, VirtAddr};

/// Names an address space in the reverse map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceId(pub u32);

/// Why a pager or swap hook could not deliver a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookError {
    /// No hook of that kind is installed.
    Unavailable,
    /// No memory for the page.
    OutOfMemory,
    /// The backing store failed to read the page.
    Io,
    /// The page read back did not verify (a checksum mismatch): the data
    /// is never guessed.
    Corrupt,
    /// The entry names a slot or page the device does not hold (a page
    /// table and the device disagree: a bug, not a lack of memory).
    BadEntry,
    /// The device refused for a reason of its own that is neither memory
    /// nor the entry (a use-count limit, a frame it cannot reach).
    Refused,
    /// The page lies at or past the end of the object (a mapping of a file
    /// longer than the file): the access gets a bus error, as in Linux.
    BeyondEnd,
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookError::Unavailable => "no pager or swap device installed",
            HookError::OutOfMemory => "out of memory",
            HookError::Io => "I/O error",
            HookError::Corrupt => "the page read back failed its checksum",
            HookError::BadEntry => "the device does not hold the page the entry names",
            HookError::BeyondEnd => "the page is past the end of the object",
            HookError::Refused => "the device refused",
        })
    }
}

impl core::error::Error for HookError {}

/// Serves the pages of objects (files, devices, shared-memory segments)
/// that [`Backing::Object`](crate::Backing::Object) VMAs map.
///
/// The pager owns the frames it hands out (its page cache): the address
/// space maps them (read-only in private mappings, which copy on write) and
/// records them in the reverse map, but never frees them.
pub trait Pager: Send + Sync {
    /// The frame holding the 4 KiB page at byte `offset` (page aligned) of
    /// `object`, read in if needed.
    fn page(&self, object: u32, offset: u64) -> Result<PhysAddr, HookError>;

    /// Whether stores to `object`'s pages through shared mappings must be
    /// reported ([`dirtied`](Pager::dirtied)): true for a file whose pages
    /// are written back to a backing. Such pages are then mapped
    /// read-only in shared mappings until a write fault reports the store
    /// and makes the entry writable (Linux's write-notify, `page_mkwrite`),
    /// and `mprotect` never makes their entries writable by itself. The
    /// default (no tracking) suits memory-only objects.
    fn tracks_writes(&self, object: u32) -> bool {
        let _ = object;
        false
    }

    /// A store through a shared mapping is about to change the page at
    /// byte `offset` of `object`: the pager marks it dirty. Called before
    /// the entry becomes writable; an error fails the fault and the entry
    /// stays read-only.
    fn dirtied(&self, object: u32, offset: u64) -> Result<(), HookError> {
        let _ = (object, offset);
        Ok(())
    }

    /// Fault-around: calls `f(offset, frame)` for pages of `object` near
    /// byte `offset` that are in memory now (no I/O, no allocation), so a
    /// read fault maps them too, read-only, and their first reads do not
    /// fault (Linux's `filemap_map_pages`). The address space maps only
    /// those inside the faulting VMA whose entries are empty. The default
    /// offers none.
    fn cached_around(&self, object: u32, offset: u64, f: &mut dyn FnMut(u64, PhysAddr)) {
        let _ = (object, offset, f);
    }
}

/// The swap slots page tables hold: the swap device side of faults, fork
/// and unmap (mm-swap implements it).
///
/// Every page-table entry holding a swap slot owns one reference on it. A
/// fault brings the page in with [`swap_in`](Self::swap_in), maps it, then
/// reports it with [`swapped_in`](Self::swapped_in), which drops the
/// entry's reference. While the swap device holds its pin on the frame (the
/// page is in its swap cache, named by slots other page tables still hold),
/// private mappings map it read-only and copy on write; once the pin is
/// dropped, the last mapper writes to it in place.
pub trait SwapSlots: Send + Sync {
    /// The frame holding the page of `slot`, read in if needed, with a
    /// reference taken by [`MmContext::pin`] that the device keeps while the page
    /// stays in its cache. Does not drop the entry's reference.
    fn swap_in(&self, slot: SwapSlot) -> Result<PhysAddr, HookError>;
    /// The page table that held `slot` now maps `frame` instead: the slot
    /// loses this user (and the device may drop the page from its cache,
    /// unpinning it, when the slot has no users left).
    fn swapped_in(&self, slot: SwapSlot, frame: PhysAddr);
    /// A second page table now holds `slot` (fork): one more user.
    fn duplicate(&self, slot: SwapSlot) -> Result<(), HookError>;
    /// A page table dropped `slot` (unmap, exit): one user less.
    fn release(&self, slot: SwapSlot);
}

/// Invalidates TLB entries of one address space (the kernel knows where it
/// is active: the local CPU, other CPUs through IPIs, or nowhere).
pub trait SpaceTlb: Send + Sync {
    /// Flushes `batch` for the address space `space`. Called before any
    /// frame the change released is freed.
    fn flush(&self, space: SpaceId, batch: FlushBatch);
}

/// The hooks an [`MmContext`] calls. Missing hooks make object faults and swap
/// entries fail with [`HookError::Unavailable`] and skip TLB flushes (right
/// for address spaces that are never active on a CPU, such as host models).
#[derive(Clone, Default)]
pub struct Hooks {
    /// Pager for object-backed VMAs.
    pub pager: Option<Arc<dyn Pager>>,
    /// Swap device.
    pub swap: Option<Arc<dyn SwapSlots>>,
    /// TLB invalidation.
    pub tlb: Option<Arc<dyn SpaceTlb>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("pager", &self.pager.is_some())
            .field("swap", &self.swap.is_some())
            .field("tlb", &self.tlb.is_some())
            .finish()
    }
}

/// Why [`MmContext::pin`] refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// The shared zero page is never pinned (nor freed).
    ZeroPage,
    /// The reverse map does not know the frame: nothing maps it, so its
    /// owner is unknown ([`MmContext::pin_new`] says who owns it).
    Untracked(PhysAddr),
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::ZeroPage => f.write_str("the zero page cannot be pinned"),
            PinError::Untracked(a) => write!(f, "frame {:#x} is not in the reverse map", a.as_u64()),
        }
    }
}

impl core::error::Error for PinError {}

#[derive(Debug)]
struct PageInfo {
    kind: PageKind,
    /// References besides mappings.
    pins: u32,
    /// (space, virtual page) of each mapping.
    maps: Maps,
    /// A mapping that was removed had its dirty bit set (MODEL 24): the
    /// page may differ from any copy made before (a swap slot, a file
    /// block) until the holder of that copy writes it again.
    dirty: bool,
}

impl PageInfo {
    fn new(kind: PageKind) -> Self {
        PageInfo { kind, pins: 0, maps: Maps::default(), dirty: false }
    }
}

/// The mappings of a page: the first one inline, since most pages have
/// one, the others in a vector, which allocates only for a page that is
/// shared (a fault adds a mapping without a heap allocation).
#[derive(Debug, Default)]
struct Maps {
    /// `None` only if `rest` is empty too.
    first: Option<(SpaceId, VirtAddr)>,
    rest: Vec<(SpaceId, VirtAddr)>,
}

impl Maps {
    fn push(&mut self, m: (SpaceId, VirtAddr)) {
        if self.first.is_none() {
            self.first = Some(m);
        } else {
            self.rest.push(m);
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn iter(&self) -> impl Iterator<Item = &(SpaceId, VirtAddr)> {
        self.first.iter().chain(self.rest.iter())
    }

    /// Removes one mapping equal to `m`; whether there was one.
    fn remove(&mut self, m: (SpaceId, VirtAddr)) -> bool {
        if self.first == Some(m) {
            self.first = self.rest.pop();
            return true;
        }
        match self.rest.iter().position(|&x| x == m) {
            Some(i) => {
                self.rest.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn find_mut(&mut self, m: (SpaceId, VirtAddr)) -> Option<&mut (SpaceId, VirtAddr)> {
        self.first.iter_mut().chain(self.rest.iter_mut()).find(|x| **x == m)
    }
}

impl PageInfo {
    /// Whether a private write must copy the page (MODEL 17).
    fn shared(&self) -> bool {
        self.kind != PageKind::Anon || self.maps.len() + self.pins as usize > 1
    }
}

/// Counters of what faults did, over every address space of an [`MmContext`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Read faults answered with the shared zero page.
    pub zero_page: u64,
    /// Anonymous pages allocated zeroed on first touch.
    pub demand_zero: u64,
    /// Private writes that copied a shared page.
    pub cow_copied: u64,
    /// Private writes to a page nobody else held, made writable in place.
    pub cow_reused: u64,
    /// Pages a pager provided.
    pub pager: u64,
    /// Pages brought back from swap.
    pub swap_in: u64,
    /// Stack growths.
    pub stack_growth: u64,
    /// Faults on a page that was already accessible (a stale TLB entry).
    pub spurious: u64,
    /// Faults refused (the caller raises a segfault or bus error).
    pub refused: u64,
    /// Stores through shared mappings reported to the pager before their
    /// page became writable ([`Pager::tracks_writes`]).
    pub write_notify: u64,
    /// Pages a read fault of an object's page mapped around it because the
    /// pager had them in memory ([`Pager::cached_around`]): faults saved.
    pub mapped_around: u64,
}

#[derive(Default)]
struct Counters {
    zero_page: AtomicU64,
    demand_zero: AtomicU64,
    cow_copied: AtomicU64,
    cow_reused: AtomicU64,
    pager: AtomicU64,
    swap_in: AtomicU64,
    stack_growth: AtomicU64,
    spurious: AtomicU64,
    refused: AtomicU64,
    write_notify: AtomicU64,
    mapped_around: AtomicU64,
}

/// What address spaces share (one per machine, as Linux's global page
/// state): the frame provider, physical memory, the zero page, the
/// reverse map, the hooks to pagers, swap and TLB, and counters. Not one
/// address space (Linux's `mm_struct` is [`AddressSpace`](crate::AddressSpace)
/// here): the context every address space is made in.
///
/// The reverse map records, for every frame mapped in a user address space,
/// each `(address space, virtual page)` mapping it and how many other
/// references hold it (a swap cache, reclaim in progress). A page is shared
/// (so a private write must copy it) when it has more than one mapping or any
/// other reference; an anonymous page is freed when its last mapping and
/// reference go. This is a per-page list of mappers, as the first Linux rmap
/// ("pte chains") kept: exact, simple to check, and one heap entry per
/// mapping.
pub struct MmContext<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> {
    pub(crate) arch: A,
    pub(crate) mem: M,
    pub(crate) frames: F,
    pub(crate) hooks: Hooks,
    zero: PhysAddr,
    /// Root entries every address space shares with the kernel's tables.
    pub(crate) kernel: Option<(PhysAddr, [u64; 8])>,
    /// The reverse map (a loom-aware lock: `tests/loom_rmap.rs`).
    rmap: mm_types::sync::Mutex<BTreeMap<u64, PageInfo>>,
    next_id: AtomicU32,
    counters: Counters,
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> fmt::Debug for MmContext<A, M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmContext").field("zero", &self.zero).field("hooks", &self.hooks).finish_non_exhaustive()
    }
}

/// A mapping of a frame, as [`MmContext::mappings`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmapEntry {
    /// The address space.
    pub space: SpaceId,
    /// The virtual page.
    pub va: VirtAddr,
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> MmContext<A, M, F> {
    /// The shared state for address spaces whose page tables and pages come
    /// from `frames`, reached through `mem`. Allocates the zero page.
    pub fn new(arch: A, mem: M, frames: F, hooks: Hooks) -> Result<Arc<Self>, crate::SpaceError> {
        Self::build(arch, mem, frames, hooks, None)
    }

    /// Like [`new`](Self::new), for address spaces that run in a kernel:
    /// each space's root table gets the root entries with an index in
    /// `shared` from the kernel's root table at `kernel_root` (on x86-64,
    /// entries 256-511 are the kernel half; a kernel that runs identity
    /// mapped low also shares entry 0 and keeps user layouts above it).
    ///
    /// # Safety
    ///
    /// As [`PageTable::new_sharing`](mm_paging::PageTable::new_sharing):
    /// `kernel_root` is a live root in `arch`'s format whose shared entries
    /// stay valid while any address space of this `MmContext` exists.
    pub unsafe fn with_kernel_entries(
        arch: A,
        mem: M,
        frames: F,
        hooks: Hooks,
        kernel_root: PhysAddr,
        shared: impl IntoIterator<Item = usize>,
    ) -> Result<Arc<Self>, crate::SpaceError> {
        let mut bits = [0u64; 8];
        for i in shared.into_iter().filter(|&i| i < 512) {
            bits[i / 64] |= 1 << (i % 64);
        }
        Self::build(arch, mem, frames, hooks, Some((kernel_root, bits)))
    }

    fn build(
        arch: A,
        mem: M,
        frames: F,
        hooks: Hooks,
        kernel: Option<(PhysAddr, [u64; 8])>,
    ) -> Result<Arc<Self>, crate::SpaceError> {
        let owned = frames
            .allocate_owned(mm_types::Order::ZERO, AllocFlags::ZERO)
            .map_err(|_| crate::SpaceError::OutOfMemory)?;
        // SAFETY: the frame was just allocated: nobody else reads or writes it.
        if unsafe { mem.zero_block(owned.block()) }.is_err() {
            // Dropping `owned` gives the frame back.
            return Err(crate::SpaceError::Unreachable);
        }
        let zero = owned.into_raw().start_address();
        Ok(Arc::new(MmContext {
            arch,
            mem,
            frames,
            hooks,
            zero,
            kernel,
            rmap: mm_types::sync::Mutex::new(BTreeMap::new()),
            next_id: AtomicU32::new(1),
            counters: Counters::default(),
        }))
    }

    /// The shared zero page (read faults on untouched anonymous memory map
    /// it read-only).
    pub fn zero_page(&self) -> PhysAddr {
        self.zero
    }

    /// The physical memory accessor.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// The frame provider.
    pub fn frames(&self) -> &F {
        &self.frames
    }

    /// The installed hooks.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    pub(crate) fn new_id(&self) -> SpaceId {
        SpaceId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Every mapping of `frame`, in no particular order (reclaim unmaps a
    /// page from each of them and harvests their accessed bits).
    pub fn mappings(&self, frame: PhysAddr) -> Vec<RmapEntry> {
        let mut out = Vec::new();
        self.mappings_into(frame, &mut out);
        out
    }

    /// [`mappings`](Self::mappings) into `out`, which is cleared first: a
    /// caller asking about many pages (reclaim, scanning) reuses one
    /// buffer instead of allocating one per page.
    ///
    /// ```
    /// use mm_vma::sim::SimWorld;
    /// use mm_vma::{Access, MapRequest, Protection};
    ///
    /// let world = SimWorld::new(4 << 20);
    /// let mut s = world.space();
    /// let a = s.mmap(MapRequest::anonymous(4096, Protection::READ | Protection::WRITE)).unwrap();
    /// let f = s.resolve(a, Access::Write).unwrap();
    /// let mut buf = Vec::with_capacity(4);
    /// world.mm.mappings_into(f, &mut buf);
    /// assert_eq!((buf.len(), buf[0].space, buf[0].va), (1, s.id(), a));
    /// ```
    pub fn mappings_into(&self, frame: PhysAddr, out: &mut Vec<RmapEntry>) {
        out.clear();
        let rmap = self.rmap.lock();
        if let Some(p) = rmap.get(&frame.as_u64()) {
            out.extend(p.maps.iter().map(|&(space, va)| RmapEntry { space, va }));
        }
    }

    /// How many page tables map `frame`.
    pub fn map_count(&self, frame: PhysAddr) -> usize {
        self.rmap.lock().get(&frame.as_u64()).map_or(0, |p| p.maps.len())
    }

    /// Takes a reference on a tracked `frame` (one some space maps, or
    /// pinned already) that keeps it allocated and makes every private
    /// mapping of it copy on write (reclaim while it writes a page out; the
    /// swap cache holding a page that swap slots still name). Refuses the
    /// zero page and a frame the reverse map does not know, whose owner it
    /// cannot tell: [`pin_new`](Self::pin_new) tracks such a frame.
    pub fn pin(&self, frame: PhysAddr) -> Result<(), PinError> {
        if frame == self.zero {
            return Err(PinError::ZeroPage);
        }
        let mut rmap = self.rmap.lock();
        let p = rmap.get_mut(&frame.as_u64()).ok_or(PinError::Untracked(frame))?;
        p.pins += 1;
        Ok(())
    }

    /// Like [`pin`](Self::pin), and tracks a frame the reverse map does not
    /// know yet as `kind` (a page just read from swap is
    /// [`PageKind::Anon`]: freed when its last pin and mapping go; a
    /// pager's page is never freed here). A tracked frame keeps its kind.
    /// Refuses the zero page.
    pub fn pin_new(&self, frame: PhysAddr, kind: PageKind) -> Result<(), PinError> {
        if frame == self.zero {
            return Err(PinError::ZeroPage);
        }
        let mut rmap = self.rmap.lock();
        rmap.entry(frame.as_u64()).or_insert_with(|| PageInfo::new(kind)).pins += 1;
        Ok(())
    }

    /// Drops a reference [`pin`](Self::pin) took; frees an anonymous frame
    /// nobody maps or holds any more. Returns whether it was freed.
    ///
    /// # Panics
    ///
    /// If `frame` holds no pin (an unpin without its pin is a caller bug
    /// that would otherwise free a frame still in use).
    pub fn unpin(&self, frame: PhysAddr) -> bool {
        let mut rmap = self.rmap.lock();
        let p = rmap.get_mut(&frame.as_u64()).expect("unpin of a frame that is not pinned");
        assert!(p.pins > 0, "unpin of a frame that is not pinned");
        p.pins -= 1;
        let unused = Self::forget_unused(&mut rmap, frame.as_u64());
        drop(rmap);
        self.free_unused(unused)
    }

    /// Who owns a frame mapped in some space (`None` if untracked).
    pub fn kind_of(&self, frame: PhysAddr) -> Option<PageKind> {
        self.rmap.lock().get(&frame.as_u64()).map(|p| p.kind)
    }

    /// Whether writes through a private mapping of `frame` must copy it:
    /// the zero page, a pager's page, or an anonymous page with another
    /// mapping or reference.
    pub(crate) fn is_shared(&self, frame: PhysAddr) -> bool {
        self.with_sharing(|shared| shared(frame))
    }

    /// Runs `f` with a predicate telling which frames are shared, under one
    /// lock (mprotect asks it for every page of a range). The lock is a
    /// leaf ([`forget_unused`](Self::forget_unused)): `f` must not call the
    /// frame provider or a hook (mprotect's `update_flags` rewrites present
    /// leaves in place: it allocates, frees and splits nothing).
    pub(crate) fn with_sharing<R>(&self, f: impl FnOnce(&dyn Fn(PhysAddr) -> bool) -> R) -> R {
        let rmap = self.rmap.lock();
        let zero = self.zero;
        f(&|frame| frame == zero || rmap.get(&frame.as_u64()).is_none_or(PageInfo::shared))
    }

    /// Records that `space` maps `frame` at `va`.
    pub(crate) fn add_map(&self, frame: PhysAddr, kind: PageKind, space: SpaceId, va: VirtAddr) {
        if frame == self.zero {
            return;
        }
        let mut rmap = self.rmap.lock();
        rmap.entry(frame.as_u64()).or_insert_with(|| PageInfo::new(kind)).maps.push((space, va));
    }

    /// Records that `space` no longer maps `frame` at `va`, and whether
    /// that mapping's dirty bit was set (it moves to the page, MODEL 24);
    /// frees the frame if that was the last use of an anonymous page.
    /// Returns whether the frame was freed.
    pub(crate) fn remove_map(&self, frame: PhysAddr, space: SpaceId, va: VirtAddr, dirty: bool) -> bool {
        if frame == self.zero {
            return false;
        }
        let mut rmap = self.rmap.lock();
        let p = rmap.get_mut(&frame.as_u64()).expect("an unmapped page was in the reverse map");
        assert!(p.maps.remove((space, va)), "the mapping was in the reverse map");
        p.dirty |= dirty;
        let unused = Self::forget_unused(&mut rmap, frame.as_u64());
        drop(rmap);
        self.free_unused(unused)
    }

    /// Whether a mapping of `frame` removed since the last
    /// [`take_dirty`](Self::take_dirty) had its dirty bit set (MODEL 24).
    /// The dirty bits of the mappings still present are not included: they
    /// are in their page tables until the mappings go. `false` for a frame
    /// that is not tracked.
    pub fn is_dirty(&self, frame: PhysAddr) -> bool {
        self.rmap.lock().get(&frame.as_u64()).is_some_and(|p| p.dirty)
    }

    /// Clears the page's dirty record and returns what it was: the holder
    /// of a copy of the page (the swap cache's slot) calls it right before
    /// it writes the page to that copy, and [`set_dirty`](Self::set_dirty)
    /// if the write fails.
    pub fn take_dirty(&self, frame: PhysAddr) -> bool {
        self.rmap.lock().get_mut(&frame.as_u64()).is_some_and(|p| core::mem::take(&mut p.dirty))
    }

    /// Marks a tracked `frame` dirty (a write of it to its copy failed, so
    /// the copy is still stale). Returns whether the frame is tracked.
    pub fn set_dirty(&self, frame: PhysAddr) -> bool {
        self.rmap.lock().get_mut(&frame.as_u64()).map(|p| p.dirty = true).is_some()
    }

    /// Moves the record of `space`'s mapping of `frame` from `from` to `to`
    /// (mremap).
    pub(crate) fn move_map(&self, frame: PhysAddr, space: SpaceId, from: VirtAddr, to: VirtAddr) {
        if frame == self.zero {
            return;
        }
        let mut rmap = self.rmap.lock();
        let p = rmap.get_mut(&frame.as_u64()).expect("a moved page was in the reverse map");
        let m = p.maps.find_mut((space, from)).expect("the mapping was in the reverse map");
        m.1 = to;
    }

    /// Drops `frame`'s entry if nothing maps or pins it any more; returns
    /// it if it is an anonymous page, which the caller frees once the
    /// reverse map's lock is released ([`free_unused`](Self::free_unused)).
    /// The lock is a leaf: the frame provider (which may take reclaim's
    /// locks, whose holders call back into the reverse map) is never called
    /// under it.
    fn forget_unused(rmap: &mut BTreeMap<u64, PageInfo>, frame: u64) -> Option<PhysAddr> {
        let p = &rmap[&frame];
        if !p.maps.is_empty() || p.pins > 0 {
            return None;
        }
        let kind = rmap.remove(&frame).map(|p| p.kind);
        (kind == Some(PageKind::Anon)).then(|| PhysAddr::new_truncate(frame))
    }

    /// Frees what [`forget_unused`](Self::forget_unused) returned; whether
    /// there was a frame. Nothing refers to it any more: its entry is gone.
    fn free_unused(&self, frame: Option<PhysAddr>) -> bool {
        frame.map(|f| self.free_frame(f)).is_some()
    }

    pub(crate) fn alloc_frame(&self) -> Option<PhysAddr> {
        self.frames.allocate_frame(AllocFlags::MOVABLE).ok()
    }

    pub(crate) fn free_frame(&self, frame: PhysAddr) {
        self.frames.free_frame(frame).expect("the provider takes back the frames it gave");
    }

    /// Number of frames in the reverse map (mapped or pinned).
    pub fn tracked_frames(&self) -> usize {
        self.rmap.lock().len()
    }

    /// Checks the reverse map against the page tables of `spaces`, which
    /// must be every address space of this `MmContext`: each mapping recorded is
    /// present, and each present page (but the zero page) is recorded.
    pub fn check_rmap(&self, spaces: &[&crate::AddressSpace<A, M, F>]) -> Result<(), &'static str> {
        let rmap = self.rmap.lock();
        let mut recorded = 0usize;
        for (frame, p) in rmap.iter() {
            if p.maps.is_empty() && p.pins == 0 {
                return Err("an unused frame left in the reverse map");
            }
            for &(id, va) in p.maps.iter() {
                let s = spaces.iter().find(|s| s.id() == id).ok_or("a mapping by an unknown address space")?;
                let t = s.page_table().translate(va);
                if t.is_none_or(|t| t.frame.as_u64() != *frame) {
                    return Err("a recorded mapping that the page table does not hold");
                }
                recorded += 1;
            }
        }
        let mut present = 0usize;
        for s in spaces {
            present += s.census().resident as usize;
        }
        if present != recorded {
            return Err("present pages and recorded mappings differ");
        }
        Ok(())
    }

    pub(crate) fn count(&self, which: FaultCount) {
        let c = &self.counters;
        let a = match which {
            FaultCount::ZeroPage => &c.zero_page,
            FaultCount::DemandZero => &c.demand_zero,
            FaultCount::CowCopied => &c.cow_copied,
            FaultCount::CowReused => &c.cow_reused,
            FaultCount::Pager => &c.pager,
            FaultCount::SwapIn => &c.swap_in,
            FaultCount::StackGrowth => &c.stack_growth,
            FaultCount::Spurious => &c.spurious,
            FaultCount::Refused => &c.refused,
            FaultCount::WriteNotify => &c.write_notify,
            FaultCount::MappedAround => &c.mapped_around,
        };
        a.fetch_add(1, Ordering::Relaxed);
    }

    /// What faults did so far.
    pub fn fault_stats(&self) -> FaultStats {
        let c = &self.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FaultStats {
            zero_page: r(&c.zero_page),
            demand_zero: r(&c.demand_zero),
            cow_copied: r(&c.cow_copied),
            cow_reused: r(&c.cow_reused),
            pager: r(&c.pager),
            swap_in: r(&c.swap_in),
            stack_growth: r(&c.stack_growth),
            spurious: r(&c.spurious),
            refused: r(&c.refused),
            write_notify: r(&c.write_notify),
            mapped_around: r(&c.mapped_around),
        }
    }
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> Drop for MmContext<A, M, F> {
    fn drop(&mut self) {
        // Address spaces hold an `Arc` of this, so all are gone: only the
        // zero page (and frames pinned by someone who leaked them) remain.
        self.free_frame(self.zero);
    }
}

#[derive(Clone, Copy)]
pub(crate) enum FaultCount {
    ZeroPage,
    DemandZero,
    CowCopied,
    CowReused,
    Pager,
    SwapIn,
    StackGrowth,
    Spurious,
    Refused,
    WriteNotify,
    MappedAround,
}
