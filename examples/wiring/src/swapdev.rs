//! mm-swap as mm-vma's swap device: [`SwapDevice`] implements
//! [`SwapSlots`] over a [`Swap`], and gives the evictor what it needs to
//! write pages out and drop swap-cache pages.
//!
//! The swap cache's frames are pinned in the [`MmContext`] (so mappers copy on
//! write while other page tables still name the slot) for as long as this
//! device holds them. Frames readahead brought in are not pinned until a
//! fault maps them; [`SwapDevice::drop_cached`] and the release paths
//! tell the two apart.
//!
//! A cached page is written to its slot and dropped from the cache only
//! while nothing maps it, and tasks may run on other CPUs meanwhile, so
//! the device keeps faults and those writes apart (`Busy`): a fault holds
//! its slot from the cache lookup until the page is mapped (nobody writes
//! or drops the page meanwhile), and a fault on a slot whose page is being
//! written waits until the write is done (nothing writes the frame while
//! it is read, as Linux keeps pages stable under writeback).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use mm_paging::PagingArch;
use mm_reclaim::Shadow;
use mm_swap::{Swap, SwapError, SwappedIn};
use mm_types::{FrameProvider, PageSwap, PageSwapError, PhysAddr, PhysMemory, SwapSlot, SLOT_SIZE};
use mm_vma::{HookError, MmContext, SwapSlots};

/// What a failed swap-in tells the fault: the fault fails (the task gets
/// a bus error) and the data is never guessed, but a read error, a
/// checksum mismatch and a slot the page tables should not name stay
/// apart, and only a lack of frames is out of memory.
fn hook_error(e: SwapError) -> HookError {
    match e {
        SwapError::OutOfMemory => HookError::OutOfMemory,
        SwapError::Store(_) => HookError::Io,
        SwapError::Corrupt(_) => HookError::Corrupt,
        SwapError::NoArea(_)
        | SwapError::OutOfRange(_)
        | SwapError::NotAllocated(_)
        | SwapError::NotWritten(_)
        | SwapError::Bad(_) => HookError::BadEntry,
        _ => HookError::Refused,
    }
}

/// Counters of the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Faults served (from the cache or by a read).
    pub swap_ins: u64,
    /// Faults that needed a read.
    pub reads: u64,
    /// Faults that failed (read error, corruption, no memory).
    pub errors: u64,
    /// Pages written out by the evictor.
    pub swap_outs: u64,
    /// Swap-cache pages written to their slot again because a mapper had
    /// written them since (dirty shared pages).
    pub rewrites: u64,
}

/// mm-swap behind mm-vma's [`SwapSlots`] hook; see the
/// [module documentation](self).
pub struct SwapDevice<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> {
    swap: Arc<Swap>,
    mm: spin::Once<Weak<MmContext<A, M, F>>>,
    /// Cached frames this device holds a pin on, and their slots.
    pinned: spin::Mutex<BTreeMap<u64, SwapSlot>>,
    /// Slots a fault or a write of their cached page is using.
    busy: spin::Mutex<Busy>,
    /// What reclaim's policy left for each evicted page, by slot.
    shadows: spin::Mutex<BTreeMap<SwapSlot, Shadow>>,
    refault: spin::Once<Refault>,
    stats: spin::Mutex<DeviceStats>,
}

/// Slots in use by a fault or by a write of their cached page; see the
/// [module documentation](self).
#[derive(Default)]
struct Busy {
    /// Slots whose swap-in is under way, from [`SwapSlots::swap_in`] to
    /// [`SwapSlots::swapped_in`] (by then the fault has mapped the page):
    /// their frame is in the cache, maybe not mapped nor pinned yet (while
    /// readahead allocates), and is neither written nor dropped meanwhile.
    /// One entry per fault.
    faulting: Vec<SwapSlot>,
    /// Slots whose cached page is being written to them: faults on them
    /// wait in `swap_in` until the write is done.
    writing: Vec<SwapSlot>,
}

/// Removes one `slot` from `v` (it was pushed by the caller's path).
fn remove_one(v: &mut Vec<SwapSlot>, slot: SwapSlot) {
    let i = v.iter().position(|s| *s == slot).expect("pushed earlier");
    v.swap_remove(i);
}

/// Called with a page read back from swap and its eviction's shadow.
pub type Refault = Box<dyn Fn(PhysAddr, Shadow) + Send + Sync>;

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> SwapDevice<A, M, F> {
    /// A device over `swap`; [`attach`](Self::attach) it to its `MmContext` once
    /// that exists (the `MmContext` takes the device among its hooks).
    pub fn new(swap: Arc<Swap>) -> Self {
        SwapDevice {
            swap,
            mm: spin::Once::new(),
            pinned: spin::Mutex::new(BTreeMap::new()),
            busy: spin::Mutex::new(Busy::default()),
            shadows: spin::Mutex::new(BTreeMap::new()),
            refault: spin::Once::new(),
            stats: spin::Mutex::new(DeviceStats::default()),
        }
    }

    /// Connects the device to the `MmContext` whose hooks hold it.
    pub fn attach(&self, mm: &Arc<MmContext<A, M, F>>) {
        self.mm.call_once(|| Arc::downgrade(mm));
    }

    /// The swap areas.
    pub fn swap(&self) -> &Arc<Swap> {
        &self.swap
    }

    /// The counters.
    pub fn stats(&self) -> DeviceStats {
        *self.stats.lock()
    }

    /// Installs what a refault tells reclaim.
    pub fn set_refault(&self, f: Refault) {
        self.refault.call_once(|| f);
    }

    /// A page was written to `slot` and freed: count it, keep its shadow.
    pub(crate) fn swapped_out(&self, slot: SwapSlot, shadow: Shadow) {
        self.stats.lock().swap_outs += 1;
        self.keep_shadow(slot, shadow);
    }

    pub(crate) fn keep_shadow(&self, slot: SwapSlot, shadow: Shadow) {
        self.shadows.lock().insert(slot, shadow);
    }

    /// Shadows kept (one per slot whose page was evicted and not read back).
    pub fn shadows(&self) -> usize {
        self.shadows.lock().len()
    }

    /// Forgets the shadow of `slot` once no page table names it.
    fn forget_if_free(&self, slot: SwapSlot) {
        if self.swap.count(slot).map_or(true, |c| c == 0) {
            self.shadows.lock().remove(&slot);
        }
    }

    fn mm(&self) -> Arc<MmContext<A, M, F>> {
        self.mm.get().and_then(Weak::upgrade).expect("the device is attached to a live MmContext")
    }

    /// The slot of `frame` if it is a swap-cache page this device pinned.
    pub fn pinned_slot(&self, frame: PhysAddr) -> Option<SwapSlot> {
        self.pinned.lock().get(&frame.as_u64()).copied()
    }

    /// Gives back a frame the swap cache let go of: unpinned if this
    /// device pinned it (freed once nothing maps it), else (a readahead
    /// page never mapped) freed.
    fn let_go(&self, mm: &MmContext<A, M, F>, frame: PhysAddr) {
        if self.pinned.lock().remove(&frame.as_u64()).is_some() {
            mm.unpin(frame);
        } else {
            // A provider refusing its own frame is a bug there; nothing to undo.
            let _ = mm.frames().free_frame(frame);
        }
    }

    /// Drops `frame` from the swap cache if it is there and nothing maps
    /// it (reclaim taking a cached page back), written to its slot first if
    /// a mapper wrote it since it was last written there; whether it was
    /// freed.
    pub fn drop_cached(&self, frame: PhysAddr) -> bool {
        let Some(slot) = self.swap.cached_slot(frame) else { return false };
        self.clean(slot, frame).is_ok() && self.uncache_if_idle(slot, frame)
    }

    /// Makes `slot` hold the page of its cached `frame`, which nothing
    /// maps: if the page is dirty (a mapping removed since the last write
    /// had its dirty bit set, mm-vma MODEL 24) it is written to the slot
    /// again. `Err(None)` if the page is in use again (a fault is mapping
    /// it, or a page table maps it): it stays cached, as it is. On a failed
    /// write (`Err(Some(_))`) the page stays dirty, and the caller must keep
    /// it in the cache: it is the only good copy.
    pub(crate) fn clean(&self, slot: SwapSlot, frame: PhysAddr) -> Result<(), Option<SwapError>> {
        if self.write_cached(slot, frame, false)? {
            self.count_rewrites(1);
        }
        Ok(())
    }

    /// Counts `n` pages written again because a mapper had written them.
    pub(crate) fn count_rewrites(&self, n: u64) {
        self.stats.lock().rewrites += n;
    }

    /// Writes `frame`, the cached page of `slot`, to the slot if it is
    /// dirty or `always` (its dirty record taken, and set again if the
    /// write fails); whether it wrote. Refused with `Err(None)` unless the
    /// cache still holds it for `slot`, no fault is bringing it in and no
    /// page table maps it; faults on the slot wait while it is written.
    fn write_cached(&self, slot: SwapSlot, frame: PhysAddr, always: bool) -> Result<bool, Option<SwapError>> {
        let mut done = [Ok(false)];
        self.write_batch(&[(slot, frame, always)], &mut done);
        let [r] = done;
        r
    }

    /// [`write_cached`](Self::write_cached) for several pages:
    /// `pages[i]` is `(slot, frame, always)`, its result goes to `done[i]`.
    /// The pages are written with one [`Swap::write_batch`], in slot
    /// order, so that slots that follow each other go to the store as one
    /// request.
    ///
    /// # Panics
    /// If `done` and `pages` differ in length.
    pub(crate) fn write_batch(
        &self,
        pages: &[(SwapSlot, PhysAddr, bool)],
        done: &mut [Result<bool, Option<SwapError>>],
    ) {
        assert_eq!(pages.len(), done.len(), "one result per page");
        let mm = self.mm();
        // The pages to write, by slot, with their places in `pages`.
        // Allocated only when there is something to write (a clean page
        // dropped from the cache writes nothing).
        let mut chosen: Vec<(SwapSlot, PhysAddr, usize)> = Vec::new();
        {
            let mut busy = self.busy.lock();
            for (i, &(slot, frame, always)) in pages.iter().enumerate() {
                done[i] = if busy.faulting.contains(&slot)
                    || mm.map_count(frame) != 0
                    || self.swap.lookup(slot) != Some(frame)
                {
                    Err(None)
                } else if !mm.take_dirty(frame) && !always {
                    Ok(false)
                } else {
                    busy.writing.push(slot);
                    if chosen.capacity() == 0 {
                        chosen.reserve_exact(pages.len() - i);
                    }
                    chosen.push((slot, frame, i));
                    Ok(true)
                };
            }
        }
        if chosen.is_empty() {
            return;
        }
        chosen.sort_unstable_by_key(|c| c.0);
        let run: Vec<(SwapSlot, PhysAddr)> = chosen.iter().map(|&(s, f, _)| (s, f)).collect();
        let mut written = alloc::vec![Ok(()); run.len()];
        // SAFETY: nothing writes the frames during the call. No page table
        // maps them (each map count was 0 with no fault under way: each
        // mapping was replaced by the slot's entry or unmapped, and the
        // TLB entries of those mappings flushed, on every CPU, before that
        // returned), and no fault maps one again before its write is done:
        // one that looked the slot up earlier is in `faulting` until the
        // page is mapped (and the map count would show it), and one that
        // looks it up now waits in `swap_in` while the slot is in `writing`.
        unsafe { self.swap.write_batch(&run, mm.mem(), &mut written) };
        {
            let mut busy = self.busy.lock();
            for &(slot, _, _) in &chosen {
                remove_one(&mut busy.writing, slot);
            }
        }
        for (&(_, frame, i), r) in chosen.iter().zip(written) {
            if let Err(e) = r {
                mm.set_dirty(frame);
                done[i] = Err(Some(e));
            }
        }
    }

    /// Drops `frame`, the cached page of `slot`, from the cache if its
    /// slot holds it: no fault under way, no page table mapping it, not
    /// dirty (nothing written since the slot was written), not being
    /// written. Checked and done under the lock that faults take before
    /// they look in the cache: a fault after this reads the slot. Whether
    /// it was dropped (and its pin or frame let go).
    pub(crate) fn uncache_if_idle(&self, slot: SwapSlot, frame: PhysAddr) -> bool {
        let mm = self.mm();
        let busy = self.busy.lock();
        if busy.faulting.contains(&slot)
            || busy.writing.contains(&slot)
            || mm.map_count(frame) != 0
            || mm.is_dirty(frame)
            || self.swap.lookup(slot) != Some(frame)
        {
            return false;
        }
        let gone = self.swap.uncache(slot);
        drop(busy);
        match gone {
            Ok(Some(f)) => {
                self.let_go(&mm, f);
                true
            }
            _ => false,
        }
    }

    /// Checks that every swap-cache page that nobody wrote since it was
    /// last written to its slot (not dirty, and no mapping of it with its
    /// dirty bit set) matches the slot's checksum: a clean page that
    /// differs is a write the slot lost. `dirty_mapping(frame)` tells
    /// whether a present mapping of `frame` has its dirty bit set (the
    /// caller has the page tables). A debug verification: it reads every
    /// cached page, so it must run with every task stopped and reclaim not
    /// running (a host model between steps, a kernel after its workload).
    pub fn check_clean_cache(&self, dirty_mapping: &mut dyn FnMut(PhysAddr) -> bool) -> Result<(), &'static str> {
        let mm = self.mm();
        for (slot, frame) in self.swap.cached() {
            if mm.is_dirty(frame) || dirty_mapping(frame) {
                continue;
            }
            // SAFETY: every task is stopped and reclaim is not running (the caller's duty, documented
            // above): nobody writes a cached page meanwhile.
            match unsafe { self.swap.cached_matches(slot, mm.mem()) } {
                Ok(Some(false)) => return Err("a clean swap-cache page differs from its slot"),
                Ok(_) => {}
                Err(_) => return Err("a cached slot that mm-swap cannot check"),
            }
        }
        Ok(())
    }

    /// Puts `frame`, a page that `users` page tables map, in the swap
    /// cache under a new slot (of `cpu`'s cluster) with one use per mapper,
    /// not written yet and marked dirty ([`MmContext::set_dirty`]): the
    /// first step of an unmap-first swap-out. The device takes a pin of its
    /// own on the frame while it holds it.
    pub(crate) fn cache_new(&self, cpu: usize, frame: PhysAddr, users: u16) -> Result<SwapSlot, SwapError> {
        let mm = self.mm();
        let slot = self.swap.alloc_cached(cpu, frame, users)?;
        mm.pin(frame).expect("a mapped frame is tracked");
        self.pinned.lock().insert(frame.as_u64(), slot);
        mm.set_dirty(frame);
        Ok(slot)
    }

    /// Drops one use of `slot` (a page table that no longer names it, or
    /// the evictor's own use); if it was the last, the cache lets its page
    /// go and the device gives the frame back.
    pub(crate) fn drop_use(&self, slot: SwapSlot) {
        match self.swap.free(slot) {
            Ok(Some(f)) => self.let_go(&self.mm(), f),
            Ok(None) => {}
            Err(e) => panic!("a use of a slot mm-swap does not know: {e}"),
        }
        self.forget_if_free(slot);
    }
}

impl<A, M, F> SwapSlots for SwapDevice<A, M, F>
where
    A: PagingArch + Send + Sync,
    M: PhysMemory + Clone + Send + Sync,
    F: FrameProvider + Clone + Send + Sync,
{
    fn swap_in(&self, slot: SwapSlot) -> Result<PhysAddr, HookError> {
        let mm = self.mm();
        loop {
            let mut busy = self.busy.lock();
            if !busy.writing.contains(&slot) {
                // Held until `swapped_in`, or an error below.
                busy.faulting.push(slot);
                break;
            }
            // Its page is being written: mapped only once that is done.
            drop(busy);
            core::hint::spin_loop();
        }
        let r = self.swap.swap_in(slot, mm.frames(), mm.mem());
        if let Ok(SwappedIn { frame, .. }) = r {
            if let alloc::collections::btree_map::Entry::Vacant(v) = self.pinned.lock().entry(frame.as_u64()) {
                // A page read now, or read ahead earlier: the device's pin.
                mm.pin_new(frame, mm_types::PageKind::Anon).expect("a frame read from swap is not the zero page");
                v.insert(slot);
            }
        }
        let mut st = self.stats.lock();
        let SwappedIn { frame, read: io } = match r {
            Ok(x) => x,
            Err(e) => {
                // No `swapped_in` follows a failed swap-in.
                remove_one(&mut self.busy.lock().faulting, slot);
                st.errors += 1;
                return Err(hook_error(e));
            }
        };
        st.swap_ins += 1;
        st.reads += u64::from(io);
        drop(st);
        if io {
            let shadow = self.shadows.lock().remove(&slot);
            if let (Some(sh), Some(f)) = (shadow, self.refault.get()) {
                f(frame, sh);
            }
        }
        Ok(frame)
    }

    fn swapped_in(&self, slot: SwapSlot, frame: PhysAddr) {
        // The page is mapped: the map count shows it from here on.
        remove_one(&mut self.busy.lock().faulting, slot);
        // The last user: the cache lets its page go (the page just mapped,
        // or the original if the fault copied it).
        self.drop_use(slot);
        let _ = frame;
    }

    fn duplicate(&self, slot: SwapSlot) -> Result<(), HookError> {
        self.swap.dup(slot).map_err(hook_error)
    }

    fn release(&self, slot: SwapSlot) {
        self.drop_use(slot);
    }
}

/// mm-swap as the page cache's swap for shmem files ([`PageSwap`]): a
/// shmem page goes to a slot of its own with one user (the file's index
/// names it, no page table does) and comes back by a checked read of the
/// slot, never through the swap cache that faults of anonymous pages use.
/// A shmem slot may still be read into that cache by an anonymous page's
/// swap-in reading ahead: when the file lets go of the slot, that copy is
/// given back through the device, as any readahead page.
pub struct ShmemSwap<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> {
    device: Arc<SwapDevice<A, M, F>>,
    mem: M,
    cpu: usize,
}

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> ShmemSwap<A, M, F> {
    /// Shmem pages to `device`'s swap, their frames reached through `mem`,
    /// slots taken from `cpu`'s cluster.
    pub fn new(device: Arc<SwapDevice<A, M, F>>, mem: M, cpu: usize) -> Self {
        ShmemSwap { device, mem, cpu }
    }
}

/// What the page cache hears of an mm-swap failure: a read of `slot`
/// (`Some`), or a write of `frame` to a new slot (`None`).
fn page_swap_error(e: SwapError, slot: Option<SwapSlot>, frame: PhysAddr) -> PageSwapError {
    match (e, slot) {
        (SwapError::Full, _) => PageSwapError::Full,
        (SwapError::Store(e), _) => PageSwapError::Io(e),
        (SwapError::Corrupt(s), _) => PageSwapError::Corrupt(s),
        (SwapError::Unreachable(a), _) => PageSwapError::Unreachable(a),
        // A slot the index named that swap does not hold written.
        (_, Some(s)) => PageSwapError::Invalid(s),
        // A write to a new slot refused otherwise (the slot went bad
        // under the write): the device could not take the page.
        (e, None) => {
            debug_assert!(matches!(e, SwapError::Bad(_)), "swap-out of {frame:?}: {e:?}");
            PageSwapError::Io(mm_types::StoreError {
                op: mm_types::StoreOp::Write,
                slot: None,
                kind: mm_types::StoreErrorKind::Io,
            })
        }
    }
}

// SAFETY: `swap_out` only reads `frame` (mm-swap's write of it to a slot)
// and `swap_in` only writes it (a read of the slot into it); a slot read
// holds what was written to it or the read fails its checksum
// (`PageSwapError::Corrupt`).
unsafe impl<A, M, F> PageSwap for ShmemSwap<A, M, F>
where
    A: PagingArch,
    M: PhysMemory + Clone + Send + Sync,
    F: FrameProvider + Clone,
    SwapDevice<A, M, F>: Send + Sync,
{
    unsafe fn swap_out(&self, frame: PhysAddr) -> Result<SwapSlot, PageSwapError> {
        // SAFETY: the caller owns `frame` and nothing writes it during the
        // call (PageSwap's contract), which is what mm-swap asks.
        unsafe { self.device.swap().swap_out(self.cpu, frame, 1, &self.mem) }
            .map_err(|e| page_swap_error(e, None, frame))
    }

    unsafe fn swap_in(&self, slot: SwapSlot, frame: PhysAddr) -> Result<(), PageSwapError> {
        let p = self.mem.translate(frame, SLOT_SIZE).map_err(|_| PageSwapError::Unreachable(frame))?;
        // SAFETY: `translate` checked the frame's SLOT_SIZE bytes; the
        // caller owns the frame and nothing else reads or writes it during
        // the call (PageSwap's contract).
        let buf = unsafe { &mut *p.as_ptr().cast::<[u8; SLOT_SIZE]>() };
        self.device.swap().read_slot(slot, buf).map_err(|e| page_swap_error(e, Some(slot), frame))
    }

    fn free(&self, slot: SwapSlot) {
        match self.device.swap().free(slot) {
            // A copy an anonymous swap-in read ahead: nothing maps it.
            Ok(Some(f)) => self.device.let_go(&self.device.mm(), f),
            Ok(None) => {}
            Err(e) => debug_assert!(false, "the page cache freed a slot it did not hold: {e:?}"),
        }
    }
}
