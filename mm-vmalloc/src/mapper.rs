//! How vmalloc reaches the kernel page table.

use mm_paging::{
    Flush, FlushBatch, HugePages, MapFlags, Mapping, PageTable, PagingArch, PagingError, Shootdown, TlbFlush,
    Translation, Unmapped,
};
use mm_types::sync::{Mutex, MutexGuard};
use mm_types::{FrameProvider, PhysAddr, PhysMemory, VirtAddr};

/// The kernel page table as vmalloc uses it: internally synchronised (`&self`),
/// shared with the rest of the kernel.
///
/// # Safety
///
/// Implementors guarantee that
/// 1. after `map_range` or `map_frames` returns `Ok`, accesses to the range
///    reach the given physical memory with the given flags, on every CPU;
/// 2. a refused map changes nothing;
/// 3. after `flush_unmapped` returns, no CPU holds a translation of anything
///    `unmap` removed before the call;
/// 4. `translate` and `for_each_mapping` report the current mappings.
///
/// vmalloc hands out memory on the strength of these promises.
pub unsafe trait KernelMapper: Sync {
    /// Maps `len` bytes at `va` to the physically contiguous memory at
    /// `phys`, with huge pages where `huge` allows.
    fn map_range(
        &self,
        va: VirtAddr,
        phys: PhysAddr,
        len: u64,
        flags: MapFlags,
        huge: HugePages,
    ) -> Result<(), PagingError>;

    /// Maps 4 KiB frames at consecutive pages from `va`.
    fn map_frames(&self, va: VirtAddr, frames: &[PhysAddr], flags: MapFlags) -> Result<(), PagingError>;

    /// Unmaps `[va, va + len)`, reporting what it removed, and keeps the
    /// table pages. The TLB is not flushed: stale translations may remain
    /// until [`flush_unmapped`](Self::flush_unmapped).
    fn unmap(&self, va: VirtAddr, len: u64, removed: &mut dyn FnMut(Unmapped)) -> Result<(), PagingError>;

    /// Invalidates, on every CPU, the translations of everything unmapped
    /// since the last call.
    fn flush_unmapped(&self);

    /// The mapping of `va`.
    fn translate(&self, va: VirtAddr) -> Option<Translation>;

    /// Calls `f` for each present leaf overlapping `[va, va + len)`.
    fn for_each_mapping(&self, va: VirtAddr, len: u64, f: &mut dyn FnMut(Mapping)) -> Result<(), PagingError>;
}

// SAFETY: forwards to the referenced mapper, which upholds the contract.
unsafe impl<K: KernelMapper + ?Sized> KernelMapper for &K {
    fn map_range(
        &self,
        va: VirtAddr,
        phys: PhysAddr,
        len: u64,
        flags: MapFlags,
        huge: HugePages,
    ) -> Result<(), PagingError> {
        (**self).map_range(va, phys, len, flags, huge)
    }
    fn map_frames(&self, va: VirtAddr, frames: &[PhysAddr], flags: MapFlags) -> Result<(), PagingError> {
        (**self).map_frames(va, frames, flags)
    }
    fn unmap(&self, va: VirtAddr, len: u64, removed: &mut dyn FnMut(Unmapped)) -> Result<(), PagingError> {
        (**self).unmap(va, len, removed)
    }
    fn flush_unmapped(&self) {
        (**self).flush_unmapped()
    }
    fn translate(&self, va: VirtAddr) -> Option<Translation> {
        (**self).translate(va)
    }
    fn for_each_mapping(&self, va: VirtAddr, len: u64, f: &mut dyn FnMut(Mapping)) -> Result<(), PagingError> {
        (**self).for_each_mapping(va, len, f)
    }
}

/// An mm-paging [`PageTable`] behind a lock, with the TLB of the current CPU
/// and a shootdown hook for the others: the ready-made [`KernelMapper`].
///
/// The rest of the kernel reaches the same table through
/// [`lock`](Self::lock).
pub struct SharedPageTable<A: PagingArch, M: PhysMemory, F: FrameProvider, T: TlbFlush, S: Shootdown> {
    inner: Mutex<Inner<A, M, F>>,
    tlb: Mutex<T>,
    shootdown: S,
}

struct Inner<A: PagingArch, M: PhysMemory, F: FrameProvider> {
    table: PageTable<A, M, F>,
    /// What was unmapped since the last flush (a covering range).
    pending: Flush,
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider, T: TlbFlush, S: Shootdown> SharedPageTable<A, M, F, T, S> {
    /// Wraps `table`; `tlb` invalidates the current CPU's TLB, `shootdown`
    /// the others'.
    pub fn new(table: PageTable<A, M, F>, tlb: T, shootdown: S) -> Self {
        SharedPageTable { inner: Mutex::new(Inner { table, pending: Flush::NONE }), tlb: Mutex::new(tlb), shootdown }
    }

    /// Locks the page table for other uses. Changes made through the guard
    /// are the caller's to flush.
    pub fn lock(&self) -> PageTableGuard<'_, A, M, F> {
        PageTableGuard(self.inner.lock())
    }

    /// The TLB, for callers that flush what they changed through
    /// [`lock`](Self::lock).
    pub fn tlb(&self) -> MutexGuard<'_, T> {
        self.tlb.lock()
    }

    /// The shootdown hook.
    pub fn shootdown(&self) -> &S {
        &self.shootdown
    }
}

/// The locked page table of a [`SharedPageTable`].
pub struct PageTableGuard<'a, A: PagingArch, M: PhysMemory, F: FrameProvider>(MutexGuard<'a, Inner<A, M, F>>);

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> core::ops::Deref for PageTableGuard<'_, A, M, F> {
    type Target = PageTable<A, M, F>;
    fn deref(&self) -> &Self::Target {
        &self.0.table
    }
}

impl<A: PagingArch, M: PhysMemory, F: FrameProvider> core::ops::DerefMut for PageTableGuard<'_, A, M, F> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0.table
    }
}

// SAFETY: every method goes to the mm-paging table under its lock (mm-paging maps what it is asked to
// and changes nothing on refusal); unmaps accumulate a covering flush range that `flush_unmapped`
// sends to this CPU's TLB and, through the shootdown hook, to the others before returning.
unsafe impl<A, M, F, T, S> KernelMapper for SharedPageTable<A, M, F, T, S>
where
    A: PagingArch + Send,
    M: PhysMemory + Send,
    F: FrameProvider + Send,
    T: TlbFlush + Send,
    S: Shootdown + Sync,
{
    fn map_range(
        &self,
        va: VirtAddr,
        phys: PhysAddr,
        len: u64,
        flags: MapFlags,
        huge: HugePages,
    ) -> Result<(), PagingError> {
        let mut g = self.inner.lock();
        let f = g.table.map_range(va, phys, len, flags, huge)?;
        g.pending = g.pending.merge(f);
        Ok(())
    }

    fn map_frames(&self, va: VirtAddr, frames: &[PhysAddr], flags: MapFlags) -> Result<(), PagingError> {
        let mut g = self.inner.lock();
        let f = g.table.map_frames(va, frames, flags)?;
        g.pending = g.pending.merge(f);
        Ok(())
    }

    fn unmap(&self, va: VirtAddr, len: u64, removed: &mut dyn FnMut(Unmapped)) -> Result<(), PagingError> {
        let mut g = self.inner.lock();
        let f = g.table.unmap_range_keep_tables(va, len, removed)?;
        g.pending = g.pending.merge(f);
        Ok(())
    }

    fn flush_unmapped(&self) {
        // The table's lock is held until every CPU has flushed: a caller
        // whose unmapped range an earlier caller's flush took over finds
        // `pending` empty, and must not return (and reuse the range or its
        // frames) before that flush is done. The shootdown hook must
        // therefore not wait for a CPU that could be spinning on this lock
        // with interrupts off (the reference kernel sends NMIs).
        let mut g = self.inner.lock();
        let pending = core::mem::replace(&mut g.pending, Flush::NONE);
        let mut batch = FlushBatch::new();
        pending.batch(&mut batch);
        batch.finish(&mut *self.tlb.lock(), &self.shootdown);
        drop(g);
    }

    fn translate(&self, va: VirtAddr) -> Option<Translation> {
        self.inner.lock().table.translate(va)
    }

    fn for_each_mapping(&self, va: VirtAddr, len: u64, f: &mut dyn FnMut(Mapping)) -> Result<(), PagingError> {
        self.inner.lock().table.for_each_mapping(va, len, f)
    }
}
