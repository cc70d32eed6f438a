//! The frame provider user pages come from: [`TrackedFrames`] wraps the
//! kernel's allocator and puts every movable base page it hands out on
//! mm-reclaim's lists (and takes it off when freed). It never reclaims
//! itself: an allocation that fails makes the fault fail, and the fault's
//! caller lets go of the address space, reclaims and retries
//! ([`Machine::with_task`](crate::Machine::with_task)), so that reclaim can
//! take pages of every space, the faulting one included.
//!
//! mm-vma allocates user pages (and mm-swap its swap-in frames) with
//! [`AllocFlags::MOVABLE`]; page tables and the zero page come without it
//! and are never tracked.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use mm_reclaim::{Policy, Reclaim};
use mm_types::{AllocFlags, FrameBlock, FrameError, FrameProvider, Order, PageKind};

use crate::PageIds;

/// Whether free memory is below the min watermark.
pub type BelowMin = Box<dyn Fn() -> bool + Send + Sync>;

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackedStats {
    /// Movable allocations that failed (each makes a fault retry after
    /// reclaim).
    pub failures: u64,
}

/// See the [module documentation](self).
pub struct TrackedFrames<F0, P> {
    inner: F0,
    reclaim: Arc<Reclaim<P>>,
    ids: PageIds,
    below_min: spin::Once<BelowMin>,
    failures: AtomicU64,
}

impl<F0: FrameProvider, P: Policy + Send> TrackedFrames<F0, P> {
    /// Frames of `inner` (those `ids` covers are tracked), tracked by `reclaim`.
    pub fn new(inner: F0, reclaim: Arc<Reclaim<P>>, ids: PageIds) -> Self {
        TrackedFrames { inner, reclaim, ids, below_min: spin::Once::new(), failures: AtomicU64::new(0) }
    }

    /// Installs the min-watermark test for an allocator that has none
    /// (mm-buddy has its own): below it, movable allocations fail, leaving
    /// the last frames to page tables and the kernel. The fault that asked
    /// lets go of its space, reclaims and retries
    /// ([`Machine::with_task`](crate::Machine::with_task)).
    pub fn set_below_min(&self, f: BelowMin) {
        self.below_min.call_once(|| f);
    }

    /// The allocator underneath.
    pub fn inner(&self) -> &F0 {
        &self.inner
    }

    /// The page ids reclaim tracks.
    pub fn ids(&self) -> PageIds {
        self.ids
    }

    /// The reclaim driver.
    pub fn reclaim(&self) -> &Arc<Reclaim<P>> {
        &self.reclaim
    }

    /// The counters.
    pub fn stats(&self) -> TrackedStats {
        TrackedStats { failures: self.failures.load(Ordering::Relaxed) }
    }
}

// SAFETY: every block comes from `inner`'s `allocate` unchanged and goes back through its `free`: its
// guarantees carry over; the lists only record ids.
unsafe impl<F0: FrameProvider, P: Policy + Send> FrameProvider for TrackedFrames<F0, P> {
    fn allocate(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        let movable = flags.contains(AllocFlags::MOVABLE) && !flags.contains(AllocFlags::ATOMIC);
        if movable && self.below_min.get().is_some_and(|f| f()) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(FrameError::OutOfMemory { order });
        }
        let block = self.inner.allocate(order, flags).inspect_err(|_| {
            self.failures.fetch_add(1, Ordering::Relaxed);
        })?;
        if flags.contains(AllocFlags::MOVABLE) && order == Order::ZERO {
            if let Some(id) = self.ids.id(block.start_address()) {
                let r = self.reclaim.insert(id, PageKind::Anon, None);
                debug_assert!(r.is_ok(), "a frame handed out twice: {r:?}");
            }
        }
        Ok(block)
    }

    fn free(&self, block: FrameBlock) -> Result<(), FrameError> {
        if block.order() == Order::ZERO {
            if let Some(id) = self.ids.id(block.start_address()) {
                // Untracked frames (page tables) are not on the lists.
                let _ = self.reclaim.remove(id);
            }
        }
        self.inner.free(block)
    }
}

/// A cloneable handle on [`TrackedFrames`], the `F` of the `MmContext`.
pub struct Tracked<F0, P>(pub Arc<TrackedFrames<F0, P>>);

impl<F0, P> Clone for Tracked<F0, P> {
    fn clone(&self) -> Self {
        Tracked(self.0.clone())
    }
}

impl<F0, P> core::ops::Deref for Tracked<F0, P> {
    type Target = TrackedFrames<F0, P>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

// SAFETY: forwards to the `TrackedFrames` it points at.
unsafe impl<F0: FrameProvider + Send + Sync, P: Policy + Send> FrameProvider for Tracked<F0, P> {
    fn allocate(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        self.0.allocate(order, flags)
    }
    fn free(&self, block: FrameBlock) -> Result<(), FrameError> {
        self.0.free(block)
    }
}
