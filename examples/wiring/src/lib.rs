//! How the reference kernel wires the mm-* crates together, written once
//! and used by both the kernel (`examples/kernel`) and a host simulation
//! ([`sim`], feature `std`) that runs the same scenarios under `cargo test`
//! and miri.
//!
//! The crates stay independent (mm-swap, mm-reclaim and mm-vma know only
//! mm-types and mm-paging); this crate is where they meet:
//!
//! - [`swapdev::SwapDevice`]: mm-swap behind mm-vma's `SwapSlots` hook (swap-in
//!   on fault, fork duplicating entries, unmap releasing them), keeping the
//!   swap cache's frames pinned in the reverse map;
//! - [`evict::MmEvictor`]: mm-reclaim's `Evictor` over mm-vma's reverse map
//!   (accessed bits, unmap) and mm-swap (write out, drop cached pages);
//! - [`tracked::TrackedFrames`]: the frame provider of user pages, which puts
//!   them on mm-reclaim's lists (it never reclaims itself: a fault that
//!   finds no memory fails, and [`Machine::with_task`] reclaims and retries);
//! - [`files::CachePager`]: mm-pagecache behind mm-vma's `Pager` hook, so
//!   files (and shmem files) map into address spaces through the cache;
//! - [`Machine`]: all of it for a set of tasks (one address space each),
//!   with background reclaim, the OOM choice and the figures scenarios
//!   print;
//! - [`scenario`]: the `pressure` and `oom` workloads and their checks,
//!   over any way of touching a task's memory ([`scenario::Touch`]); a
//!   task's program is a [`scenario::Worker`], run a turn at a time (round
//!   robin on the host, in a kernel thread per task in the kernel).
//!
//! Each piece of this list is small; the order of operations is what
//! matters, and each module says it.

#![no_std]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

#[allow(unsafe_code)]
pub mod evict;
#[allow(unsafe_code)]
pub mod files;
pub mod scenario;
#[cfg(any(test, feature = "std"))]
#[allow(unsafe_code)]
pub mod sim;
#[allow(unsafe_code)]
pub mod swapdev;
#[allow(unsafe_code)]
pub mod tracked;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use mm_pagecache::{CacheConfig, CacheStats, CachedFile, PageCache};
use mm_paging::PagingArch;
use mm_reclaim::{Level, PageId, Policy, Progress, Reclaim, Shadow};
use mm_swap::Swap;
use mm_types::{FrameProvider, PhysAddr, PhysMemory, VirtAddr};
use mm_vma::{AddressSpace, FaultError, Hooks, Layout, MmContext, Pager, SpaceError, SpaceId, SwapSlots};

use evict::{EvictStats, MmEvictor, Spaces};
use files::{CachePager, FileRmap, FrameOwners};
use swapdev::{ShmemSwap, SwapDevice};
use tracked::{Tracked, TrackedFrames};

/// Reclaim's page ids: frame `base + 4096 * id` for ids below `frames`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageIds {
    /// The first frame.
    pub base: PhysAddr,
    /// How many frames.
    pub frames: u32,
}

impl PageIds {
    /// The id of `frame`, if it is in range.
    pub fn id(&self, frame: PhysAddr) -> Option<PageId> {
        let off = frame.as_u64().checked_sub(self.base.as_u64())? / 4096;
        (off < u64::from(self.frames)).then_some(off as PageId)
    }

    /// The frame of `id`.
    pub fn frame(&self, id: PageId) -> PhysAddr {
        PhysAddr::new_truncate(self.base.as_u64() + u64::from(id) * 4096)
    }
}

/// A task's space, locked while the task (or reclaim) uses it.
pub type SharedSpace<A, M, F> = Arc<spin::Mutex<AddressSpace<A, M, F>>>;

/// One address space per task, reachable by reclaim while its task is not
/// using it.
pub struct TaskTable<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> {
    spaces: spin::Mutex<Vec<TaskEntry<A, M, F>>>,
}

type TaskEntry<A, M, F> = (SpaceId, SharedSpace<A, M, F>);

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> TaskTable<A, M, F> {
    fn new() -> Self {
        TaskTable { spaces: spin::Mutex::new(Vec::new()) }
    }

    /// The space of task `id`.
    pub fn get(&self, id: SpaceId) -> Option<SharedSpace<A, M, F>> {
        self.spaces.lock().iter().find(|(i, _)| *i == id).map(|(_, s)| s.clone())
    }

    /// The tasks, oldest first.
    pub fn ids(&self) -> Vec<SpaceId> {
        self.spaces.lock().iter().map(|(i, _)| *i).collect()
    }
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> Spaces<A, M, F> for TaskTable<A, M, F> {
    fn with_space(&self, id: SpaceId, f: &mut dyn FnMut(&mut AddressSpace<A, M, F>)) -> Option<()> {
        let s = self.get(id)?;
        // A task using its space (a fault that is allocating) keeps it.
        let mut g = s.try_lock()?;
        f(&mut g);
        Some(())
    }
}

/// The frame provider of a [`Machine`]'s address spaces.
pub type Frames<F0, P> = Tracked<F0, P>;
/// A [`Machine`]'s `MmContext`.
pub type MachineMm<A, M, F0, P> = MmContext<A, M, Frames<F0, P>>;
/// A task's address space.
pub type TaskSpace<A, M, F0, P> = AddressSpace<A, M, Frames<F0, P>>;
/// A [`Machine`]'s page cache.
pub type MachineCache<M, F0, P> = PageCache<Frames<F0, P>, M>;
/// A [`Machine`]'s files as mm-vma objects (the cache's pager).
pub type MachinePager<M, F0, P> = CachePager<Frames<F0, P>, M>;

/// Direct reclaim runs in a row that free nothing before a task's access
/// is declared out of memory (the OOM killer's turn).
pub const OOM_AFTER: u32 = 3;

/// Why [`Machine::with_task`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskError {
    /// No such task (it was killed).
    Gone,
    /// Reclaim could free nothing more.
    OutOfMemory,
    /// The access faulted for another reason.
    Fault(FaultError),
}

/// Why [`Machine::swapoff`] failed (the area is back in service).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapoffError {
    /// mm-swap's refusal: no such area, memory ran out while pages came
    /// back, or slots are still in use.
    Swap(mm_swap::SwapError),
    /// A page of the area could not be faulted back into `task` at `addr`
    /// (its slot failed to read or verify).
    Fault {
        /// The task.
        task: SpaceId,
        /// The user address.
        addr: VirtAddr,
        /// What the fault said.
        error: FaultError,
    },
}

impl core::fmt::Display for SwapoffError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SwapoffError::Swap(e) => write!(f, "swapoff: {e}"),
            SwapoffError::Fault { task, addr, error } => {
                write!(f, "swapoff: task {} could not fault {addr:#x} back in: {error}", task.0)
            }
        }
    }
}

/// Why [`Machine::msync`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsyncError {
    /// No such task.
    Gone,
    /// Part of the range is not mapped (Linux's `ENOMEM`).
    NotMapped {
        /// The first address of the range that is not.
        addr: VirtAddr,
    },
    /// The range is not page aligned or wraps (Linux's `EINVAL`).
    BadRange,
    /// Writing a file back failed, now or since the last `msync` or
    /// `fsync` through the machine heard of it (Linux's `EIO`): what the
    /// backing said.
    Writeback(mm_types::FileErrorKind),
}

impl core::fmt::Display for MsyncError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MsyncError::Gone => write!(f, "msync: no such task"),
            MsyncError::NotMapped { addr } => write!(f, "msync: {addr:#x} is not mapped"),
            MsyncError::BadRange => write!(f, "msync: the range is not page aligned or wraps"),
            MsyncError::Writeback(k) => write!(f, "msync: writeback failed: {k:?}"),
        }
    }
}

/// What a scenario prints at its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Page faults resolved, by kind.
    pub faults: mm_vma::FaultStats,
    /// Pages written to swap by reclaim.
    pub swapped_out: u64,
    /// Swap-cache pages reclaim dropped (their data was in swap already).
    pub dropped_cached: u64,
    /// Swap-ins served, and of those, reads from the device.
    pub swapped_in: u64,
    /// Swap-ins that needed a read.
    pub swap_reads: u64,
    /// Swap-ins served from the swap cache without I/O.
    pub cache_hits: u64,
    /// Reclaim passes (priority levels scanned).
    pub reclaim_passes: u64,
    /// Pages faulted back in after their eviction (refaults).
    pub refaults: u64,
    /// Direct reclaim runs in the allocation path.
    pub direct_runs: u64,
    /// Tasks the OOM killer ended.
    pub oom_kills: u64,
    /// Free frames of the allocator underneath.
    pub free_frames: u64,
    /// Pages reclaim evicted from the anonymous list (swapped out, or
    /// shmem pages sent to swap) and from the file list (dropped or
    /// written back).
    pub evicted_anon: u64,
    /// See [`evicted_anon`](Self::evicted_anon).
    pub evicted_file: u64,
    /// Clean file pages reclaim dropped.
    pub file_dropped: u64,
    /// Dirty file pages reclaim wrote back before dropping them.
    pub file_written: u64,
    /// Shmem pages reclaim sent to swap.
    pub shmem_swapped: u64,
    /// File pages read back where an eviction had left a shadow.
    pub file_refaults: u64,
    /// The page cache's counters (hits, misses, readahead, writeback).
    pub cache: CacheStats,
}

/// Every piece wired for a set of tasks; see the [crate documentation](crate).
pub struct Machine<A, M, F0, P>
where
    A: PagingArch,
    M: PhysMemory + Clone,
    F0: FrameProvider + Send + Sync,
    P: Policy + Send,
{
    /// The address spaces' shared state.
    pub mm: Arc<MachineMm<A, M, F0, P>>,
    /// The swap device (mm-swap behind mm-vma's hook).
    pub device: Arc<SwapDevice<A, M, Frames<F0, P>>>,
    /// The tracked frame provider.
    pub frames: Frames<F0, P>,
    /// The tasks.
    pub tasks: Arc<TaskTable<A, M, Frames<F0, P>>>,
    /// Reclaim's page ids.
    pub ids: PageIds,
    /// The page cache: files, and shmem files for shared memory.
    pub cache: Arc<MachineCache<M, F0, P>>,
    /// The cache's files as mm-vma objects.
    pub pager: Arc<MachinePager<M, F0, P>>,
    layout: Layout,
    counters: Counters,
    next_object: core::sync::atomic::AtomicU32,
    /// An opener per file added, through which `msync` hears of
    /// writeback errors (as the mapping's open file does in Linux).
    openers: spin::Mutex<alloc::collections::BTreeMap<u32, mm_pagecache::OpenFile>>,
}

/// The machine's counters.
#[derive(Default)]
struct Counters {
    evicted: spin::Mutex<EvictStats>,
    passes: spin::Mutex<u64>,
    kills: spin::Mutex<u64>,
    direct_runs: spin::Mutex<u64>,
}

impl Counters {
    fn add(&self, e: &EvictStats, p: &Progress) {
        let mut t = self.evicted.lock();
        t.swapped_out += e.swapped_out;
        t.uncached += e.uncached;
        t.kept += e.kept;
        t.failed += e.failed;
        t.file_dropped += e.file_dropped;
        t.file_written += e.file_written;
        t.shmem_swapped += e.shmem_swapped;
        *self.passes.lock() += u64::from(p.passes);
    }
}

impl<A, M, F0, P> Machine<A, M, F0, P>
where
    A: PagingArch + Send + Sync + 'static,
    M: PhysMemory + Clone + Send + Sync + 'static,
    F0: FrameProvider + Send + Sync + 'static,
    P: Policy + Send + 'static,
{
    /// Wires `frames` (covering `ids`), `swap` and `reclaim` together,
    /// with a page cache of `cache`'s limits reaching its frames through
    /// `mem` (its shmem files swap to `swap` too). `build_mm` makes the
    /// `MmContext` from the hooks given (adding its own TLB hook; a kernel
    /// shares its root entries there).
    ///
    /// # Panics
    ///
    /// If `cache` is not a valid configuration (its background threshold
    /// above its limit, or a limit of 0).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        frames: F0,
        ids: PageIds,
        swap: Arc<Swap>,
        reclaim: Reclaim<P>,
        layout: Layout,
        mem: M,
        cache: CacheConfig,
        build_mm: impl FnOnce(Frames<F0, P>, Hooks) -> Result<Arc<MachineMm<A, M, F0, P>>, SpaceError>,
    ) -> Result<Self, SpaceError> {
        let frames = Tracked(Arc::new(TrackedFrames::new(frames, Arc::new(reclaim), ids)));
        let device = Arc::new(SwapDevice::new(swap.clone()));
        let owners = Arc::new(FrameOwners::new(ids));
        let lists = frames.reclaim().clone();
        let rmap = FileRmap::new(
            owners.clone(),
            Box::new(move |id, kind, shadow| {
                // The provider filed the frame as anonymous when it handed
                // it out (movable): it moves to its own list, with the
                // shadow its last eviction left (a refault).
                let _ = lists.remove(id);
                let r = lists.insert(id, kind, shadow.map(Shadow));
                debug_assert!(r.is_ok(), "a cached frame filed twice: {r:?}");
            }),
        );
        let cache = files::machine_cache(frames.clone(), mem.clone(), cache, rmap.clone());
        let cache = Arc::new(cache.with_swap(Box::new(ShmemSwap::new(device.clone(), mem, 0))));
        let pager = Arc::new(CachePager::with_owners(cache.clone(), owners));
        let hooks = Hooks {
            swap: Some(device.clone() as Arc<dyn SwapSlots>),
            pager: Some(pager.clone() as Arc<dyn Pager>),
            ..Hooks::default()
        };
        let mm = build_mm(frames.clone(), hooks)?;
        device.attach(&mm);
        let tasks = Arc::new(TaskTable::new());
        let spaces: alloc::sync::Weak<TaskTable<A, M, Frames<F0, P>>> = Arc::downgrade(&tasks);
        rmap.attach(&mm, spaces);
        let m = Machine {
            mm,
            device,
            frames,
            tasks,
            ids,
            cache,
            pager,
            layout,
            counters: Counters::default(),
            next_object: core::sync::atomic::AtomicU32::new(1),
            openers: spin::Mutex::new(alloc::collections::BTreeMap::new()),
        };
        // A page read back from swap goes on reclaim's list with the shadow
        // its eviction left: a refault.
        let (frames, r) = (m.frames.clone(), m.frames.reclaim().clone());
        m.device.set_refault(Box::new(move |frame, shadow| {
            if let Some(id) = frames.ids().id(frame) {
                if r.remove(id).is_ok() {
                    let _ = r.insert(id, mm_types::PageKind::Anon, Some(shadow));
                }
            }
        }));
        Ok(m)
    }

    /// Makes `file` (opened in [`cache`](Self::cache)) mappable by every
    /// task, and its pages reclaimable: the object number a mapping
    /// request names it by ([`MapRequest::object`](mm_vma::MapRequest::object)).
    pub fn add_file(&self, file: Arc<CachedFile>) -> u32 {
        let object = self.next_object.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        self.openers.lock().insert(object, mm_pagecache::OpenFile::new(file.clone()));
        self.pager.register(object, file);
        object
    }

    /// `msync(addr, len, MS_SYNC)` in task `id`: the file pages that
    /// shared mappings in the range map are written back and made
    /// durable, and any writeback error of those files not yet reported
    /// through the machine is returned (once). Private and anonymous
    /// mappings in the range have nothing to write.
    pub fn msync(&self, id: SpaceId, addr: VirtAddr, len: u64) -> Result<(), MsyncError> {
        const PS: u64 = mm_types::PAGE_BYTES;
        if addr.as_u64() % PS != 0 {
            return Err(MsyncError::BadRange);
        }
        let end = addr.as_u64().checked_add(len.next_multiple_of(PS)).ok_or(MsyncError::BadRange)?;
        let end = VirtAddr::new(end).map_err(|_| MsyncError::BadRange)?;
        // The objects and page ranges, read with the space held; the
        // writeback runs with it let go (it write-protects the mappings).
        let mut ranges = Vec::new();
        {
            let space = self.tasks.get(id).ok_or(MsyncError::Gone)?;
            let space = space.lock();
            let mut at = addr;
            for v in space.vmas().overlapping(addr, end) {
                if v.start > at {
                    return Err(MsyncError::NotMapped { addr: at });
                }
                let to = if v.end < end { v.end } else { end };
                if let (mm_vma::Backing::Object { object, offset }, true) =
                    (v.backing, v.flags.contains(mm_vma::VmaFlags::SHARED))
                {
                    let first = (offset + (at - v.start)) / PS;
                    let last = (offset + (to - v.start)).div_ceil(PS);
                    ranges.push((object, first..last));
                }
                at = to;
            }
            if at < end {
                return Err(MsyncError::NotMapped { addr: at });
            }
        }
        let mut first_error = None;
        for (object, pages) in ranges {
            // Taken out while it syncs: no lock held across the I/O.
            let Some(mut of) = self.openers.lock().remove(&object) else { continue };
            if let Err(mm_pagecache::CacheError::Writeback(k)) = self.cache.sync_range(&mut of, pages) {
                first_error.get_or_insert(MsyncError::Writeback(k));
            }
            self.openers.lock().insert(object, of);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// `MAP_SHARED | MAP_ANONYMOUS` in `space`: a new shmem file of
    /// `len` bytes, mapped shared with `prot`. Its pages are shared with the
    /// task's children through the file (never by handing frames around),
    /// made on first touch, and go to swap under pressure. The mapping's
    /// address and the file.
    pub fn map_shared_anon(
        &self,
        space: &mut TaskSpace<A, M, F0, P>,
        len: u64,
        prot: mm_types::Protection,
    ) -> Result<(VirtAddr, Arc<CachedFile>), SpaceError> {
        let file = self.cache.open_shmem(len);
        let object = self.add_file(file.clone());
        let r = space.mmap(mm_vma::MapRequest::object(len, prot, object, 0).shared());
        if r.is_err() {
            self.pager.unregister(object);
        }
        Ok((r?, file))
    }

    /// The reclaim driver.
    pub fn reclaim(&self) -> &Arc<Reclaim<P>> {
        self.frames.reclaim()
    }

    /// Checks that every clean swap-cache page matches its slot
    /// ([`SwapDevice::check_clean_cache`]), looking up the dirty bits of
    /// the present mappings in the tasks' page tables. For models and
    /// tests: no task may be in use meanwhile.
    pub fn check_clean_cache(&self) -> Result<(), &'static str> {
        self.device.check_clean_cache(&mut |frame| {
            self.mm.mappings(frame).iter().any(|m| {
                self.tasks.get(m.space).is_some_and(|s| {
                    let g = s.lock();
                    g.page_table().translate(m.va).is_some_and(|t| t.flags.contains(mm_paging::MapFlags::DIRTY))
                })
            })
        })
    }

    /// A new task with an empty address space.
    pub fn spawn(&self) -> Result<SpaceId, SpaceError> {
        let mut dry = 0;
        let s = loop {
            match AddressSpace::new(&self.mm, self.layout) {
                Err(SpaceError::OutOfMemory) if self.reclaim_for_retry(&mut dry) => {}
                r => break r?,
            }
        };
        let id = s.id();
        self.tasks.spaces.lock().push((id, Arc::new(spin::Mutex::new(s))));
        Ok(id)
    }

    /// A new task whose space is a copy-on-write fork of task `id`'s.
    pub fn fork(&self, id: SpaceId) -> Result<SpaceId, TaskError> {
        // Fork fails only for memory (retried after reclaim) or with a
        // fault error of its own (a swap entry it could not duplicate).
        let child = self.with_task(id, |s| {
            s.fork().map_err(|e| match e {
                SpaceError::Fault(e) => e,
                SpaceError::OutOfMemory => FaultError::OutOfMemory,
                e => unreachable!("fork of a live space refused: {e}"),
            })
        })?;
        let cid = child.id();
        self.tasks.spaces.lock().push((cid, Arc::new(spin::Mutex::new(child))));
        Ok(cid)
    }

    /// Ends task `id`: its space goes, with every page and swap entry.
    /// Whether it existed.
    pub fn kill(&self, id: SpaceId) -> bool {
        let s = {
            let mut t = self.tasks.spaces.lock();
            let Some(i) = t.iter().position(|(i, _)| *i == id) else { return false };
            t.remove(i).1
        };
        drop(s);
        true
    }

    fn run<
        E: FnOnce(&Reclaim<P>, &mut MmEvictor<'_, A, M, Frames<F0, P>, TaskTable<A, M, Frames<F0, P>>>) -> Progress,
    >(
        &self,
        f: E,
    ) -> Progress {
        let mut ev = MmEvictor::new(&self.mm, &self.device, &*self.tasks, self.ids, 0).with_files(&*self.pager);
        let p = f(self.reclaim(), &mut ev);
        self.counters.add(&ev.stats, &p);
        p
    }

    /// Direct reclaim with no address space in use (the path a fault
    /// takes after it failed for lack of memory and let go of its space,
    /// so that its own pages can go too); frames freed.
    pub fn direct_reclaim(&self) -> u64 {
        *self.counters.direct_runs.lock() += 1;
        self.run(|r, ev| r.direct(ev)).reclaimed()
    }

    /// Direct reclaim for an allocation that failed; whether to retry it.
    /// `dry` counts the runs in a row that freed nothing: after
    /// [`OOM_AFTER`] of them, memory is out (the OOM killer's turn).
    pub fn reclaim_for_retry(&self, dry: &mut u32) -> bool {
        if self.direct_reclaim() == 0 {
            *dry += 1;
        } else {
            *dry = 0;
        }
        *dry < OOM_AFTER
    }

    /// Runs `f` on task `id`'s space (a fault, a user access), retrying
    /// after direct reclaim when it fails for lack of memory: the space is
    /// let go of first, so reclaim may take its pages too (as Linux
    /// retries a fault after dropping `mmap_lock`). Out of memory only
    /// when [`OOM_AFTER`] reclaim runs in a row freed nothing.
    pub fn with_task<T, G>(&self, id: SpaceId, mut f: G) -> Result<T, TaskError>
    where
        G: FnMut(&mut TaskSpace<A, M, F0, P>) -> Result<T, FaultError>,
    {
        let mut dry = 0;
        loop {
            let s = self.tasks.get(id).ok_or(TaskError::Gone)?;
            let r = f(&mut s.lock());
            drop(s);
            // A task that dirtied file pages through its mappings is
            // throttled now that its space is free for writeback's
            // write-protection.
            self.cache.balance_dirty_pages();
            match r {
                Ok(v) => return Ok(v),
                Err(FaultError::OutOfMemory) => {
                    if !self.reclaim_for_retry(&mut dry) {
                        return Err(TaskError::OutOfMemory);
                    }
                }
                Err(e) => return Err(TaskError::Fault(e)),
            }
        }
    }

    /// Takes swap area `area` out of service (mm-swap's `swapoff` with
    /// this machine's `unuse`): every page of every task swapped to it is
    /// faulted back in (reclaim may write other pages to other areas to
    /// make room; the draining area takes none), and pages of the area left
    /// in the swap cache by readahead are dropped. Fails, with the area
    /// back in service, if memory runs out, a page cannot be read back
    /// ([`SwapoffError::Fault`] names the task and address), or slots are
    /// still in use.
    pub fn swapoff(&self, area: u8) -> Result<(), SwapoffError> {
        let swap = self.device.swap().clone();
        let mut failed = None;
        let r = swap.swapoff(area, &mut |swap, n| {
            for id in self.tasks.ids() {
                // The entries of the area in this space, then each faulted in
                // (a fault may change the tables, so not while walking them).
                let mut vas = Vec::new();
                // A task that exited meanwhile has no entries left.
                let Some(space) = self.tasks.get(id) else { continue };
                // The task's space was made with the layout: a valid range.
                let (low, high) = (self.layout.low, self.layout.high);
                space
                    .lock()
                    .page_table()
                    .for_each_entry(low, high - low, |e| {
                        if let mm_paging::Entry::Swap { va, slot } = e {
                            if slot.area() == n {
                                vas.push(va);
                            }
                        }
                    })
                    .expect("the user range");
                drop(space);
                for va in vas {
                    match self.with_task(id, |s| s.fault(va, mm_vma::Access::Read).map(|_| ())) {
                        Ok(()) | Err(TaskError::Gone) => {}
                        Err(TaskError::OutOfMemory) => return Err(mm_swap::SwapError::OutOfMemory),
                        Err(TaskError::Fault(e)) => {
                            // Said precisely below; mm-swap only needs to stop.
                            failed = Some(SwapoffError::Fault { task: id, addr: va, error: e });
                            return Err(mm_swap::SwapError::InUse { area: n, slots: 0 });
                        }
                    }
                }
            }
            // Read ahead and never mapped: nothing names these pages.
            for (slot, frame) in swap.cached() {
                if slot.area() == n {
                    self.device.drop_cached(frame);
                }
            }
            Ok(())
        });
        match (r, failed) {
            (Ok(_), _) => Ok(()),
            (Err(_), Some(f)) => Err(f),
            (Err(e), None) => Err(SwapoffError::Swap(e)),
        }
    }

    /// Background reclaim (kswapd): nothing unless `level()` is below its
    /// low watermark, then until it is back at high or nothing more can go.
    ///
    /// It is the flusher too: above the page cache's background threshold,
    /// dirty pages are written back first (down to the threshold).
    pub fn background(&self, level: &mut dyn FnMut() -> Level) -> Progress {
        if self.cache.needs_writeback() {
            self.cache.writeback(self.cache.dirty_pages().saturating_sub(self.cache.config().dirty_background / 2));
        }
        self.run(|r, ev| r.background(level, ev))
    }

    /// Reclaims up to `target` pages now.
    pub fn reclaim_now(&self, target: u64) -> Progress {
        self.run(|r, ev| r.reclaim(target, ev))
    }

    /// The task the OOM killer picks among the live ones (the biggest by
    /// resident and swapped pages), out of `total` frames of memory.
    pub fn oom_victim(&self, total: u64) -> Option<SpaceId> {
        let tasks: Vec<_> = self
            .tasks
            .spaces
            .lock()
            .iter()
            .map(|(id, s)| {
                let c = s.lock().counts();
                mm_reclaim::TaskMemory {
                    task: *id,
                    resident: c.resident,
                    swapped: c.swapped,
                    page_tables: 0,
                    adjust: 0,
                }
            })
            .collect();
        mm_reclaim::choose_victim(tasks, total).ok().flatten().map(|(id, _)| id)
    }

    /// Kills the OOM killer's pick; which task it was.
    pub fn oom_kill(&self, total: u64) -> Option<SpaceId> {
        let id = self.oom_victim(total)?;
        self.kill(id);
        *self.counters.kills.lock() += 1;
        Some(id)
    }

    /// The figures so far; `free_frames` is the allocator's count.
    pub fn figures(&self, free_frames: u64) -> Figures {
        let swap = self.device.swap().stats();
        let dev = self.device.stats();
        let evicted = *self.counters.evicted.lock();
        let rs = self.reclaim().stats();
        Figures {
            faults: self.mm.fault_stats(),
            swapped_out: dev.swap_outs,
            swapped_in: dev.swap_ins,
            swap_reads: swap.reads,
            cache_hits: swap.cache_hits,
            reclaim_passes: *self.counters.passes.lock(),
            refaults: rs.refaults.anon + rs.refaults.file,
            direct_runs: *self.counters.direct_runs.lock(),
            oom_kills: *self.counters.kills.lock(),
            free_frames,
            dropped_cached: evicted.uncached,
            evicted_anon: rs.evicted.anon,
            evicted_file: rs.evicted.file,
            file_dropped: evicted.file_dropped,
            file_written: evicted.file_written,
            shmem_swapped: evicted.shmem_swapped,
            file_refaults: rs.refaults.file,
            cache: self.cache.stats(),
        }
    }
}

#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
