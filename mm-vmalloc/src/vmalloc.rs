//! The allocator: a window of kernel virtual addresses, areas in it, and the
//! frames behind them.

use core::fmt;

use mm_paging::{HugePages, MapFlags, Unmapped};
use mm_types::sync::Mutex;
use mm_types::{
    AllocFlags, FrameBlock, FrameError, FrameNumber, FrameProvider, Order, PageSize, PhysAddr, PhysMemory, VirtAddr,
    VirtRange, PAGE_BYTES,
};

use crate::error::VmallocError;
use crate::mapper::KernelMapper;
use crate::tree::{AreaKind, Follow, Link, Node, NodeRef, Pool, Request};

const HUGE: u64 = 2 << 20;
const HUGE_ORDER: u8 = 9;
/// Frames allocated and mapped per page-table call when an area is built
/// from single frames.
const CHUNK: usize = 64;

/// Settings of a [`Vmalloc`].
#[derive(Clone, Copy, Debug)]
pub struct VmallocConfig {
    /// The virtual window areas come from. Page aligned, canonical, and
    /// ending below the top of the address space.
    pub window: VirtRange,
    /// Lazily freed pages that trigger a purge (one TLB flush for all of
    /// them). Default 8,192 pages (32 MiB).
    pub lazy_max_pages: u64,
    /// Order of the frame blocks ordinary areas are built from (0: single
    /// frames). Larger blocks take fewer allocator calls but need free
    /// contiguous memory. Default 0.
    pub page_order: u8,
    /// Seed of the index's tree priorities.
    pub seed: u64,
}

impl VmallocConfig {
    /// The defaults for `window`.
    pub const fn new(window: VirtRange) -> Self {
        VmallocConfig { window, lazy_max_pages: 8192, page_order: 0, seed: 0x9e37_79b9_7f4a_7c15 }
    }
}

/// How `ioremap` caches device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheMode {
    /// Ordinary write-back caching (memory-like device ranges).
    WriteBack,
    /// Write-through: reads cached, writes go to the device.
    WriteThrough,
    /// Uncached (registers).
    Uncached,
}

impl CacheMode {
    /// The mapping flags of a read-write kernel mapping in this mode.
    pub const fn map_flags(self) -> MapFlags {
        match self {
            CacheMode::WriteBack => MapFlags::KERNEL_DATA,
            CacheMode::WriteThrough => MapFlags::KERNEL_DATA.union(MapFlags::WRITE_THROUGH),
            CacheMode::Uncached => MapFlags::KERNEL_DATA.union(MapFlags::NO_CACHE).union(MapFlags::WRITE_THROUGH),
        }
    }
}

/// Options of one allocation. `AreaOptions::new()` gives a 4 KiB aligned,
/// read-write, non-executable area followed by one unmapped guard page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaOptions {
    align: u64,
    guard: bool,
    flags: MapFlags,
    alloc: AllocFlags,
    huge: bool,
    caller: &'static str,
}

impl Default for AreaOptions {
    fn default() -> Self {
        AreaOptions::new()
    }
}

impl AreaOptions {
    /// The defaults.
    pub const fn new() -> Self {
        AreaOptions {
            align: PAGE_BYTES,
            guard: true,
            flags: MapFlags::KERNEL_DATA,
            alloc: AllocFlags::empty(),
            huge: false,
            caller: "",
        }
    }
    /// Aligns the area's start (a power of two, at least 4 KiB).
    pub const fn align(mut self, align: u64) -> Self {
        self.align = align;
        self
    }
    /// Leaves out the guard page after the area.
    pub const fn no_guard(mut self) -> Self {
        self.guard = false;
        self
    }
    /// The mapping's flags (default [`MapFlags::KERNEL_DATA`]). Add
    /// [`MapFlags::GLOBAL`] only if the mapper's `flush_unmapped` also drops
    /// global translations (a CR3 reload, as mm-paging's full flush does,
    /// keeps them).
    pub const fn flags(mut self, flags: MapFlags) -> Self {
        self.flags = flags;
        self
    }
    /// Flags for the backing frames (zone limits, `ZERO`, ...).
    pub const fn alloc_flags(mut self, flags: AllocFlags) -> Self {
        self.alloc = flags;
        self
    }
    /// Zero-filled frames.
    pub const fn zeroed(mut self) -> Self {
        self.alloc = self.alloc.union(AllocFlags::ZERO);
        self
    }
    /// Backs areas of 2 MiB or more with 2 MiB pages: the size is rounded up
    /// to 2 MiB and the start aligned to it. Falls back to 4 KiB frames when
    /// no 2 MiB block is free.
    pub const fn huge(mut self) -> Self {
        self.huge = true;
        self
    }
    /// A tag for [`Vmalloc::write_info`] and look-ups (who asked).
    pub const fn caller(mut self, caller: &'static str) -> Self {
        self.caller = caller;
        self
    }
}

/// An area as look-ups report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaInfo {
    /// First mapped address.
    pub start: VirtAddr,
    /// Mapped bytes.
    pub size: u64,
    /// Unmapped guard bytes after the mapping.
    pub guard: u64,
    /// What backs it.
    pub kind: AreaKind,
    /// The mapping's flags.
    pub flags: MapFlags,
    /// Who asked for it.
    pub caller: &'static str,
}

impl AreaInfo {
    /// The mapped range.
    pub fn range(&self) -> VirtRange {
        VirtRange::new(self.start, self.size).expect("areas lie in the window")
    }

    /// Whether `addr` is in the guard after the mapping.
    pub fn in_guard(&self, addr: VirtAddr) -> bool {
        let a = addr.as_u64();
        let end = self.start.as_u64() + self.size;
        a >= end && a < end + self.guard
    }
}

/// Counters and sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmallocStats {
    /// Live areas.
    pub areas: u64,
    /// Bytes mapped by live areas.
    pub mapped_bytes: u64,
    /// Frames vmalloc allocated for live areas.
    pub frames: u64,
    /// Bytes of freed areas awaiting the purge.
    pub lazy_bytes: u64,
    /// Free bytes of the window (not counting lazily freed areas).
    pub free_bytes: u64,
    /// Number of free ranges.
    pub free_ranges: u64,
    /// The largest free range.
    pub largest_free: u64,
    /// Purges so far (TLB flushes).
    pub purges: u64,
    /// Frames holding the index's nodes.
    pub index_frames: u64,
    /// Height of the free-range tree (its search depth).
    pub free_tree_height: u32,
    /// Height of the area tree.
    pub area_tree_height: u32,
}

struct State {
    pool: Pool,
    free: Link,
    busy: Link,
    lazy: Link,
    lazy_pages: u64,
    areas: u64,
    mapped: u64,
    frames: u64,
    purges: u64,
}

impl State {
    /// Returns `[n.start, n.end)` to the free tree, merging with the free
    /// neighbours; `n` becomes (part of) a gap node.
    fn release(&mut self, n: NodeRef) {
        let (mut start, mut len) = (self.pool.get(n).start, self.pool.get(n).len);
        if let Some(p) = self.pool.floor(self.free, start) {
            if self.pool.get(p).end() == start {
                let p = self.pool.remove(&mut self.free, self.pool.get(p).start).expect("found");
                start = self.pool.get(p).start;
                len += self.pool.get(p).len;
                self.pool.free(p);
            }
        }
        if let Some(q) = self.pool.ceil(self.free, start + len) {
            if self.pool.get(q).start == start + len {
                let q = self.pool.remove(&mut self.free, start + len).expect("found");
                len += self.pool.get(q).len;
                self.pool.free(q);
            }
        }
        let node = self.pool.get_mut(n);
        node.start = start;
        node.len = len;
        self.pool.insert(&mut self.free, n);
    }
}

/// What look-ups report of an area's node.
fn area_info(node: &Node) -> AreaInfo {
    AreaInfo {
        start: VirtAddr::new(node.start).expect("areas lie in the window"),
        size: node.mapped,
        guard: node.len - node.mapped,
        kind: node.kind,
        flags: MapFlags::from_bits_retain(node.flags),
        caller: node.caller,
    }
}

/// What a free call accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FreeKind {
    Vmalloc,
    Vmap,
    Ioremap,
}

/// Kernel virtual memory: areas of a window, backed by frames from `F` and
/// mapped through the kernel page table `K`; the index's own nodes live in
/// frames from `F` reached through `M`.
///
/// All methods take `&self` (one lock guards the index; frames are
/// allocated and mapped outside it).
///
/// # Example
///
/// ```
/// use mm_paging::{NoShootdown, PageTable, RecordingTlb, X86_64};
/// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
/// use mm_types::{PhysAddr, VirtAddr, VirtRange};
/// use mm_vmalloc::{KernelMapper, SharedPageTable, Vmalloc, VmallocConfig};
///
/// let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 16 << 20);
/// let frames = RefFrameProvider::new(&ram);
/// let table = PageTable::new(X86_64::FOUR_LEVEL, &ram, &frames).unwrap();
/// let kernel = SharedPageTable::new(table, RecordingTlb::default(), NoShootdown);
/// let window = VirtRange::new(VirtAddr::new(0xffff_c900_0000_0000).unwrap(), 1 << 30).unwrap();
/// let vm = Vmalloc::new(&kernel, &frames, &ram, VmallocConfig::new(window)).unwrap();
///
/// let a = vm.vmalloc(3 * 4096 + 100).unwrap();
/// let area = vm.find_area(a).unwrap();
/// assert_eq!((area.size, area.guard), (4 * 4096, 4096));
/// assert!(vm.mapper().translate(a).is_some());
/// vm.vfree(a).unwrap();
/// assert_eq!(vm.vfree(a), Err(mm_vmalloc::VmallocError::DoubleFree(a)));
/// ```
pub struct Vmalloc<K: KernelMapper, F: FrameProvider, M: PhysMemory> {
    mapper: K,
    frames: F,
    mem: M,
    lo: u64,
    hi: u64,
    lazy_max: u64,
    page_order: u8,
    state: Mutex<State>,
    /// Serialises purges (held across the TLB flush, without `state`).
    purge: Mutex<()>,
}

impl<K: KernelMapper, F: FrameProvider, M: PhysMemory> fmt::Debug for Vmalloc<K, F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vmalloc").field("window", &(self.lo..self.hi)).field("stats", &self.stats()).finish()
    }
}

impl<K: KernelMapper, F: FrameProvider, M: PhysMemory> Vmalloc<K, F, M> {
    /// An allocator over `config.window`, which must not be mapped by anyone
    /// else. Takes one frame from `frames` for the index.
    pub fn new(mapper: K, frames: F, mem: M, config: VmallocConfig) -> Result<Self, VmallocError> {
        let w = config.window;
        let lo = w.start().as_u64();
        if w.is_empty() || lo % PAGE_BYTES != 0 || w.len() % PAGE_BYTES != 0 {
            return Err(VmallocError::BadConfig("the window must be a non-empty, page-aligned range"));
        }
        let hi = lo
            .checked_add(w.len())
            .ok_or(VmallocError::BadConfig("the window must end below the top of the address space"))?;
        if config.page_order > 10 {
            return Err(VmallocError::BadConfig("page_order above 10"));
        }
        let mut pool = Pool::new(config.seed);
        let gap = pool.alloc(&frames, &mem, lo, hi - lo)?;
        let mut free = None;
        pool.insert(&mut free, gap);
        let state =
            State { pool, free, busy: None, lazy: None, lazy_pages: 0, areas: 0, mapped: 0, frames: 0, purges: 0 };
        Ok(Vmalloc {
            mapper,
            frames,
            mem,
            lo,
            hi,
            lazy_max: config.lazy_max_pages,
            page_order: config.page_order,
            state: Mutex::new(state),
            purge: Mutex::new(()),
        })
    }

    /// The window.
    pub fn window(&self) -> VirtRange {
        VirtRange::new(VirtAddr::new(self.lo).expect("checked"), self.hi - self.lo).expect("checked")
    }

    /// The page-table access.
    pub fn mapper(&self) -> &K {
        &self.mapper
    }

    /// The frame provider.
    pub fn frames(&self) -> &F {
        &self.frames
    }

    // ----- allocation -----

    /// Allocates `size` bytes (rounded up to pages) of virtually contiguous
    /// memory from single frames, read-write, with a guard page after it.
    pub fn vmalloc(&self, size: u64) -> Result<VirtAddr, VmallocError> {
        self.vmalloc_with(size, AreaOptions::new())
    }

    /// [`vmalloc`](Self::vmalloc) with zero-filled frames.
    pub fn vzalloc(&self, size: u64) -> Result<VirtAddr, VmallocError> {
        self.vmalloc_with(size, AreaOptions::new().zeroed())
    }

    /// [`vmalloc`](Self::vmalloc) backed by 2 MiB pages when `size` is at
    /// least 2 MiB (see [`AreaOptions::huge`]).
    pub fn vmalloc_huge(&self, size: u64) -> Result<VirtAddr, VmallocError> {
        self.vmalloc_with(size, AreaOptions::new().huge())
    }

    /// Allocates an area with `opts`. On failure everything taken is given
    /// back.
    pub fn vmalloc_with(&self, size: u64, opts: AreaOptions) -> Result<VirtAddr, VmallocError> {
        let mut size = self.check_size(size)?;
        let mut align = check_align(opts.align)?;
        let huge = opts.huge && size >= HUGE;
        if huge {
            size = size.checked_next_multiple_of(HUGE).ok_or(self.too_large(size))?;
            align = align.max(HUGE);
        }
        let order = if huge { HUGE_ORDER } else { self.page_order.min((size / PAGE_BYTES).trailing_zeros() as u8) };
        let kind = AreaKind::Vmalloc { order, huge };
        let (start, node) = self.reserve(size, align, &opts, kind)?;
        let built = match self.populate(start, size, order, huge, &opts) {
            Err(VmallocError::OutOfFrames(_)) if order > 0 => {
                // No block of that order: build the area from single frames.
                self.set_kind(node, AreaKind::Vmalloc { order: 0, huge: false });
                self.populate(start, size, 0, false, &opts)
            }
            r => r,
        };
        match built {
            Ok(()) => {
                self.publish(node, size / PAGE_BYTES);
                Ok(VirtAddr::new(start).expect("in the window"))
            }
            Err(e) => {
                self.unreserve(node);
                Err(e)
            }
        }
    }

    /// Maps caller-owned 4 KiB frames contiguously (`vunmap` undoes it and
    /// leaves the frames to the caller).
    pub fn vmap(&self, frames: &[PhysAddr], opts: AreaOptions) -> Result<VirtAddr, VmallocError> {
        let size = self.check_size((frames.len() as u64).saturating_mul(PAGE_BYTES))?;
        if let Some(f) = frames.iter().find(|f| f.as_u64() % PAGE_BYTES != 0) {
            return Err(VmallocError::BadPhys(*f));
        }
        let align = check_align(opts.align)?;
        let (start, node) = self.reserve(size, align, &opts, AreaKind::Vmap)?;
        let va = VirtAddr::new(start).expect("in the window");
        if let Err(e) = self.mapper.map_frames(va, frames, opts.flags) {
            self.unreserve(node);
            return Err(e.into());
        }
        self.publish(node, 0);
        Ok(va)
    }

    /// Maps `len` bytes of device memory at `phys` with the cache `mode`, and
    /// returns the address of `phys` in the mapping (the mapping covers the
    /// whole pages). Ranges of 2 MiB or more at 2 MiB aligned physical
    /// addresses are mapped with 2 MiB pages.
    pub fn ioremap(&self, phys: PhysAddr, len: u64, mode: CacheMode) -> Result<VirtAddr, VmallocError> {
        let offset = phys.as_u64() % PAGE_BYTES;
        let base = phys.as_u64() - offset;
        if len == 0 {
            return Err(VmallocError::ZeroSize);
        }
        let end = phys.as_u64().checked_add(len).ok_or(VmallocError::BadPhys(phys))?;
        let size = self.check_size(end - base)?;
        PhysAddr::new(base + size - 1).map_err(|_| VmallocError::BadPhys(phys))?;
        let huge = size >= HUGE && base % HUGE == 0;
        let align = if huge { HUGE } else { PAGE_BYTES };
        let kind = AreaKind::Ioremap { phys: PhysAddr::new(base).expect("checked"), mode };
        let opts = AreaOptions::new().flags(mode.map_flags()).caller("ioremap");
        let (start, node) = self.reserve(size, align, &opts, kind)?;
        let va = VirtAddr::new(start).expect("in the window");
        let hp = if huge { HugePages::SIZE_2M } else { HugePages::empty() };
        if let Err(e) = self.mapper.map_range(va, PhysAddr::new(base).expect("checked"), size, opts.flags, hp) {
            self.unreserve(node);
            return Err(e.into());
        }
        self.publish(node, 0);
        Ok(VirtAddr::new(start + offset).expect("in the window"))
    }

    // ----- freeing -----

    /// Frees an area from [`vmalloc`](Self::vmalloc) (or its variants):
    /// unmaps it and gives its frames back. Its virtual range is reused only
    /// after the next purge.
    pub fn vfree(&self, addr: VirtAddr) -> Result<(), VmallocError> {
        self.free_area(addr, FreeKind::Vmalloc)
    }

    /// Unmaps an area from [`vmap`](Self::vmap); the frames stay the caller's.
    pub fn vunmap(&self, addr: VirtAddr) -> Result<(), VmallocError> {
        self.free_area(addr, FreeKind::Vmap)
    }

    /// Unmaps an area from [`ioremap`](Self::ioremap), given the address it
    /// returned (or any address in the area's first page).
    pub fn iounmap(&self, addr: VirtAddr) -> Result<(), VmallocError> {
        let a = VirtAddr::new(addr.as_u64() & !(PAGE_BYTES - 1)).expect("aligning down keeps it canonical");
        self.free_area(a, FreeKind::Ioremap)
    }

    /// Flushes the TLB once for every lazily freed area and makes their
    /// ranges allocatable. Returns the number of pages made free.
    pub fn purge(&self) -> u64 {
        let _serial = self.purge.lock();
        let (detached, pages) = {
            let mut s = self.state.lock();
            let t = s.lazy.take();
            (t, core::mem::take(&mut s.lazy_pages))
        };
        if detached.is_none() {
            return 0;
        }
        // Every detached area was unmapped before it joined the lazy tree.
        self.mapper.flush_unmapped();
        let mut s = self.state.lock();
        collect_and_release(&mut s, detached);
        s.purges += 1;
        pages
    }

    // ----- look-ups -----

    /// The area whose reservation (mapping or guard) contains `addr`.
    pub fn find_area(&self, addr: VirtAddr) -> Option<AreaInfo> {
        let s = self.state.lock();
        let n = s.pool.floor(s.busy, addr.as_u64())?;
        let node = s.pool.get(n);
        (addr.as_u64() < node.end() && node.ready).then(|| area_info(node))
    }

    /// Calls `f` with each page (and its size) backing the area starting at
    /// `addr`, in address order.
    pub fn area_frames(
        &self,
        addr: VirtAddr,
        mut f: impl FnMut(VirtAddr, PhysAddr, PageSize),
    ) -> Result<(), VmallocError> {
        let info = self.find_area(addr).ok_or(VmallocError::NotAnArea(addr))?;
        if info.start != addr {
            return Err(VmallocError::NotAreaStart { addr, area: info.start });
        }
        self.mapper.for_each_mapping(info.start, info.size, &mut |m| f(m.va, m.frame, m.size))?;
        Ok(())
    }

    /// Calls `f` for every live area in address order. `f` runs under the
    /// index lock and must not call back into this allocator.
    pub fn for_each_area(&self, mut f: impl FnMut(&AreaInfo)) {
        let s = self.state.lock();
        s.pool.for_each(s.busy, &mut |n| {
            if n.ready {
                f(&area_info(n));
            }
        });
    }

    /// Writes one line per live area, like Linux's `/proc/vmallocinfo`:
    /// range, size, caller, pages and kind.
    pub fn write_info(&self, w: &mut impl fmt::Write) -> fmt::Result {
        let mut r = Ok(());
        self.for_each_area(|a| {
            if r.is_ok() {
                r = write_area(w, a);
            }
        });
        r
    }

    /// Counters and sizes.
    pub fn stats(&self) -> VmallocStats {
        let s = self.state.lock();
        let mut free_bytes = 0;
        let mut free_ranges = 0;
        s.pool.for_each(s.free, &mut |n| {
            free_bytes += n.len;
            free_ranges += 1;
        });
        VmallocStats {
            areas: s.areas,
            mapped_bytes: s.mapped,
            frames: s.frames,
            lazy_bytes: s.lazy_pages * PAGE_BYTES,
            free_bytes,
            free_ranges,
            largest_free: s.pool.subtree_max(s.free),
            purges: s.purges,
            index_frames: s.pool.frame_count,
            free_tree_height: s.pool.shape(s.free).1,
            area_tree_height: s.pool.shape(s.busy).1,
        }
    }

    /// Checks the index: the free, busy and lazy ranges are each a valid
    /// tree, do not overlap, tile the window exactly, and free ranges are
    /// never adjacent (always merged). For tests and debugging; walks
    /// everything.
    pub fn check(&self) -> Result<(), &'static str> {
        let s = self.state.lock();
        for t in [s.free, s.busy, s.lazy] {
            s.pool.check(t, self.lo, self.hi)?;
        }
        // Walk the window in address order: each step finds the range that
        // starts where the previous one ended, in one of the three trees.
        let mut prev_free_end = u64::MAX;
        let mut err = None;
        let mut next = self.lo;
        while next < self.hi && err.is_none() {
            let mut found = None;
            for (which, t) in [(0u8, s.free), (1, s.busy), (2, s.lazy)] {
                if let Some(n) = s.pool.ceil(t, next) {
                    let node = s.pool.get(n);
                    if node.start == next {
                        found = Some((which, node.start, node.len));
                    }
                }
            }
            match found {
                None => err = Some("a hole or an overlap in the window's coverage"),
                Some((which, start, len)) => {
                    if len == 0 {
                        err = Some("an empty range");
                    } else if which == 0 && prev_free_end == start {
                        err = Some("two adjacent free ranges");
                    }
                    if which == 0 {
                        prev_free_end = start + len;
                    }
                    next = start + len;
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        if next != self.hi {
            return Err("coverage overruns the window");
        }
        Ok(())
    }

    // ----- internals -----

    fn check_size(&self, size: u64) -> Result<u64, VmallocError> {
        if size == 0 {
            return Err(VmallocError::ZeroSize);
        }
        let s = size.checked_next_multiple_of(PAGE_BYTES).ok_or(self.too_large(size))?;
        if s > self.hi - self.lo {
            return Err(self.too_large(s));
        }
        Ok(s)
    }

    fn too_large(&self, size: u64) -> VmallocError {
        VmallocError::TooLarge { size, window: self.hi - self.lo }
    }

    /// Reserves `size` bytes (plus the guard) aligned to `align`, recording
    /// an area that look-ups and frees ignore until [`publish`](Self::publish).
    /// Returns its start and its node, which stays the caller's to publish or
    /// give back (nobody else touches an unpublished node).
    fn reserve(
        &self,
        size: u64,
        align: u64,
        opts: &AreaOptions,
        kind: AreaKind,
    ) -> Result<(u64, NodeRef), VmallocError> {
        let total = size + if opts.guard { PAGE_BYTES } else { 0 };
        if total > self.hi - self.lo {
            return Err(self.too_large(total));
        }
        // The purge generation of the last failed search.
        let mut failed_at = None;
        loop {
            let mut guard = self.state.lock();
            // Field by field from here: the pool and the tree roots are disjoint.
            let s = &mut *guard;
            s.pool.reserve(&self.frames, &self.mem, 2)?;
            // First a search that cannot backtrack: a gap of `total + align -
            // PAGE_BYTES` bytes holds an aligned range wherever it starts. If none
            // is that large, an exact search (for large alignments only).
            let lo = self.lo;
            let hi = self.hi;
            let guaranteed = Request { size: total, align, need: total + (align - PAGE_BYTES), lo, hi };
            let mut carved = s.pool.carve(s.free, &guaranteed);
            if carved.is_none() && align > PAGE_BYTES {
                carved = s.pool.carve(s.free, &Request { need: total, ..guaranteed });
            }
            if let Some(c) = carved {
                match c.follow {
                    Follow::Nothing => {}
                    Follow::InsertTail { start, len } => {
                        let n = s.pool.alloc(&self.frames, &self.mem, start, len).expect("reserved");
                        s.pool.insert(&mut s.free, n);
                    }
                    Follow::Remove(key) => {
                        let n = s.pool.remove(&mut s.free, key).expect("carved from it");
                        s.pool.free(n);
                    }
                }
                let n = s.pool.alloc(&self.frames, &self.mem, c.addr, total).expect("reserved");
                let node = s.pool.get_mut(n);
                node.mapped = size;
                node.kind = kind;
                node.flags = opts.flags.bits();
                node.caller = opts.caller;
                node.ready = false;
                s.pool.insert(&mut s.busy, n);
                return Ok((c.addr, n));
            }
            let generation = s.purges;
            drop(guard);
            // Give up once a search has failed with no purge completed since
            // the previous failure: nothing was freed in between. Otherwise
            // purge and search again. Even with nothing lazy here, another
            // CPU's purge may be between detaching the lazy ranges and freeing
            // them (`purge` waits for it), or may have freed ranges that a
            // third CPU took before this search (the loom model found both).
            if failed_at == Some(generation) {
                return Err(VmallocError::NoSpace { size: total, align });
            }
            failed_at = Some(generation);
            self.purge();
        }
    }

    fn set_kind(&self, n: NodeRef, kind: AreaKind) {
        self.state.lock().pool.get_mut(n).kind = kind;
    }

    /// Makes a reserved area visible.
    fn publish(&self, n: NodeRef, frames: u64) {
        let mut s = self.state.lock();
        let node = s.pool.get_mut(n);
        node.ready = true;
        let mapped = node.mapped;
        s.areas += 1;
        s.mapped += mapped;
        s.frames += frames;
    }

    /// Gives back a reservation that was never published. Its range may
    /// have been mapped for a while, so it goes through the lazy purge.
    fn unreserve(&self, n: NodeRef) {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let (start, pages) = (s.pool.get(n).start, s.pool.get(n).len / PAGE_BYTES);
        s.pool.remove(&mut s.busy, start).expect("reserved");
        s.pool.insert(&mut s.lazy, n);
        s.lazy_pages += pages;
    }

    /// Allocates the frames of an area and maps them; on failure unmaps and
    /// frees what it did.
    fn populate(&self, start: u64, size: u64, order: u8, huge: bool, opts: &AreaOptions) -> Result<(), VmallocError> {
        let mut done = 0u64;
        let r = if order == 0 {
            self.populate_frames(start, size, opts, &mut done)
        } else {
            self.populate_blocks(start, size, order, huge, opts, &mut done)
        };
        if r.is_err() && done > 0 {
            // Undo: the mapped part's frames go back; nothing else changed.
            let _ = self.unmap_and_free(start, done, Some(order));
        }
        r
    }

    fn populate_frames(&self, start: u64, size: u64, opts: &AreaOptions, done: &mut u64) -> Result<(), VmallocError> {
        let mut buf = [PhysAddr::ZERO; CHUNK];
        while *done < size {
            let n = (((size - *done) / PAGE_BYTES) as usize).min(CHUNK);
            for i in 0..n {
                match self.frames.allocate_frame(opts.alloc) {
                    Ok(f) => buf[i] = f,
                    Err(e) => {
                        self.free_frames(&buf[..i]);
                        return Err(VmallocError::OutOfFrames(e));
                    }
                }
            }
            let va = VirtAddr::new(start + *done).expect("in the window");
            if let Err(e) = self.mapper.map_frames(va, &buf[..n], opts.flags) {
                self.free_frames(&buf[..n]);
                return Err(e.into());
            }
            *done += n as u64 * PAGE_BYTES;
        }
        Ok(())
    }

    fn populate_blocks(
        &self,
        start: u64,
        size: u64,
        order: u8,
        huge: bool,
        opts: &AreaOptions,
        done: &mut u64,
    ) -> Result<(), VmallocError> {
        let order = Order::new(order).expect("checked in the config");
        let hp = if huge { HugePages::SIZE_2M } else { HugePages::empty() };
        while *done < size {
            // Until mapped, an error return drops `owned`, which frees it.
            let owned = self.frames.allocate_owned(order, opts.alloc).map_err(VmallocError::OutOfFrames)?;
            let (at, bytes) = (owned.block().start_address(), owned.block().bytes());
            let va = VirtAddr::new(start + *done).expect("in the window");
            self.mapper.map_range(va, at, bytes, opts.flags, hp)?;
            // The area owns the block from here (`unmap_and_free` gives it back).
            owned.into_raw();
            *done += bytes;
        }
        Ok(())
    }

    fn free_frames(&self, frames: &[PhysAddr]) {
        for f in frames {
            let _ = self.frames.free(FrameBlock::new(FrameNumber::containing(*f), Order::ZERO).expect("order 0"));
        }
    }

    /// Unmaps `[start, start + len)`; with `order`, frees the frame blocks
    /// (of that order, mapped consecutively from `start`) it held. Returns
    /// the frames freed and the first refusal of the frame provider; fails
    /// only if the page table refused the unmap (then nothing changed).
    fn unmap_and_free(
        &self,
        start: u64,
        len: u64,
        order: Option<u8>,
    ) -> Result<(u64, Option<FrameError>), VmallocError> {
        let mut freed = 0;
        let mut refused: Option<FrameError> = None;
        let va = VirtAddr::new(start).expect("in the window");
        self.mapper.unmap(va, len, &mut |u| {
            let (Some(k), Unmapped::Page { va, frame, .. }) = (order, u) else { return };
            let page = (va.as_u64() - start) / PAGE_BYTES;
            if page % (1u64 << k) == 0 {
                let block = FrameBlock::new(FrameNumber::containing(frame), Order::new(k).expect("valid"));
                let r = match block {
                    Ok(b) => self.frames.free(b),
                    // Only a page table changed behind our back maps a block at a misaligned frame.
                    Err(_) => Err(FrameError::NotOwned(FrameBlock::from_addr(frame, Order::ZERO).expect("a frame"))),
                };
                match r {
                    Ok(()) => freed += 1u64 << k,
                    Err(e) => refused = refused.or(Some(e)),
                }
            }
        })?;
        Ok((freed, refused))
    }

    fn free_area(&self, addr: VirtAddr, want: FreeKind) -> Result<(), VmallocError> {
        let a = addr.as_u64();
        let (n, node) = {
            let mut guard = self.state.lock();
            let s = &mut *guard;
            let found = s.pool.floor(s.busy, a).filter(|&n| {
                let node = s.pool.get(n);
                node.ready && a < node.end()
            });
            let Some(n) = found else {
                if let Some(l) = s.pool.floor(s.lazy, a) {
                    if s.pool.get(l).start == a {
                        return Err(VmallocError::DoubleFree(addr));
                    }
                }
                return Err(VmallocError::NotAnArea(addr));
            };
            let node = *s.pool.get(n);
            if node.start != a {
                return Err(VmallocError::NotAreaStart { addr, area: VirtAddr::new(node.start).expect("in window") });
            }
            let kind_ok = matches!(
                (want, node.kind),
                (FreeKind::Vmalloc, AreaKind::Vmalloc { .. })
                    | (FreeKind::Vmap, AreaKind::Vmap)
                    | (FreeKind::Ioremap, AreaKind::Ioremap { .. })
            );
            if !kind_ok {
                return Err(VmallocError::WrongKind { addr, kind: node.kind });
            }
            s.pool.remove(&mut s.busy, a);
            s.areas -= 1;
            s.mapped -= node.mapped;
            (n, node)
        };
        // Unmap and free outside the lock; the area is in no tree meanwhile,
        // so nobody else can free it or reuse its range.
        let order = match node.kind {
            AreaKind::Vmalloc { order, .. } => Some(order),
            _ => None,
        };
        let unmapped = self.unmap_and_free(a, node.mapped, order);
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let (freed, refused) = match unmapped {
            Ok(r) => r,
            Err(e) => {
                // Nothing was unmapped: the area stays as it was.
                s.pool.insert(&mut s.busy, n);
                s.areas += 1;
                s.mapped += node.mapped;
                return Err(e);
            }
        };
        s.frames -= freed;
        s.pool.insert(&mut s.lazy, n);
        s.lazy_pages += node.len / PAGE_BYTES;
        let over = s.lazy_pages > self.lazy_max;
        drop(guard);
        if over {
            self.purge();
        }
        refused.map_or(Ok(()), |e| Err(VmallocError::FrameRefused(e)))
    }
}

/// Moves every node of a detached lazy tree into the free tree.
fn collect_and_release(s: &mut State, t: Link) {
    // Unlink the tree into a list through `release`-independent order: take
    // the minimum repeatedly by removing the root's leftmost node.
    let mut t = t;
    while let Some(root) = t {
        let key = s.pool.get(root).start;
        let n = s.pool.remove(&mut t, key).expect("the root is in its tree");
        s.release(n);
    }
}

impl<K: KernelMapper, F: FrameProvider, M: PhysMemory> Drop for Vmalloc<K, F, M> {
    /// Gives the index's frames back. Areas still live keep their mappings
    /// and frames (nothing can free them any more).
    fn drop(&mut self) {
        let s = self.state.get_mut();
        // The iterator reads each frame's link before yielding the frame.
        for f in s.pool.frame_addresses() {
            let _ = self.frames.free(FrameBlock::from_addr(f, Order::ZERO).expect("a frame"));
        }
    }
}

fn check_align(align: u64) -> Result<u64, VmallocError> {
    if align < PAGE_BYTES || !align.is_power_of_two() {
        return Err(VmallocError::BadAlignment(align));
    }
    Ok(align)
}

fn write_area(w: &mut impl fmt::Write, a: &AreaInfo) -> fmt::Result {
    let start = a.start.as_u64();
    let end = start + a.size + a.guard;
    let caller = if a.caller.is_empty() { "-" } else { a.caller };
    write!(w, "{start:#018x}-{end:#018x} {:>10} {caller}", a.size + a.guard)?;
    match a.kind {
        AreaKind::Vmalloc { order, huge } => {
            write!(w, " pages={} vmalloc", a.size / PAGE_BYTES)?;
            if huge {
                write!(w, " huge")?;
            } else if order > 0 {
                write!(w, " order={order}")?;
            }
        }
        AreaKind::Vmap => write!(w, " pages={} vmap", a.size / PAGE_BYTES)?,
        AreaKind::Ioremap { phys, mode } => write!(w, " phys={:#x} ioremap {mode:?}", phys.as_u64())?,
    }
    writeln!(w)
}
