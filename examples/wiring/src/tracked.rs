//! The frame provider user pages come from: [`TrackedFrames`] wraps the
//! kernel's allocator, puts every movable base page it hands out on
//! mm-reclaim's lists (and takes it off when freed), and runs direct
//! reclaim when an allocation fails.
//!
//! mm-vma allocates user pages (and mm-swap its swap-in frames) with
//! [`AllocFlags::MOVABLE`]; page tables and the zero page come without it
//! and are never tracked.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mm_reclaim::driver::{PageKind, Reclaim};
use mm_reclaim::Policy;
use mm_types::{AllocFlags, FrameBlock, FrameError, FrameProvider, Order, PhysAddr};

use crate::PageIds;

/// Direct reclaim: frees some frames now, returns how many.
pub type DirectReclaim = Box<dyn Fn() -> u64 + Send + Sync>;
/// Whether free memory is below the min watermark.
pub type BelowMin = Box<dyn Fn() -> bool + Send + Sync>;

/// Allocations that failed and were retried after this many direct
/// reclaim runs at most.
pub const DIRECT_TRIES: u32 = 4;

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackedStats {
    /// Direct reclaim runs.
    pub direct_runs: u64,
    /// Frames they freed.
    pub direct_freed: u64,
    /// Allocations that failed even after direct reclaim.
    pub failures: u64,
}

/// See the [module documentation](self).
pub struct TrackedFrames<F0, P> {
    inner: F0,
    reclaim: Arc<Reclaim<P>>,
    ids: PageIds,
    direct: spin::Once<DirectReclaim>,
    below_min: spin::Once<BelowMin>,
    in_reclaim: AtomicBool,
    direct_runs: AtomicU64,
    direct_freed: AtomicU64,
    failures: AtomicU64,
}

impl<F0: FrameProvider, P: Policy + Send> TrackedFrames<F0, P> {
    /// Frames of `inner` (those `ids` covers are tracked), tracked by `reclaim`.
    pub fn new(inner: F0, reclaim: Arc<Reclaim<P>>, ids: PageIds) -> Self {
        TrackedFrames {
            inner,
            reclaim,
            ids,
            direct: spin::Once::new(),
            below_min: spin::Once::new(),
            in_reclaim: AtomicBool::new(false),
            direct_runs: AtomicU64::new(0),
            direct_freed: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Installs direct reclaim (once the address spaces it evicts from
    /// exist).
    pub fn set_direct_reclaim(&self, f: DirectReclaim) {
        self.direct.call_once(|| f);
    }

    /// Installs the min-watermark test: below it, a movable allocation
    /// runs direct reclaim first (as Linux's allocator slow path does),
    /// instead of eating the last frames page tables and the kernel need.
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
        TrackedStats {
            direct_runs: self.direct_runs.load(Ordering::Relaxed),
            direct_freed: self.direct_freed.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Runs direct reclaim unless it is running already (an allocation
    /// inside reclaim must not recurse); frames freed.
    fn direct_reclaim(&self) -> u64 {
        let Some(f) = self.direct.get() else { return 0 };
        if self.in_reclaim.swap(true, Ordering::Acquire) {
            return 0;
        }
        let freed = f();
        self.in_reclaim.store(false, Ordering::Release);
        self.direct_runs.fetch_add(1, Ordering::Relaxed);
        self.direct_freed.fetch_add(freed, Ordering::Relaxed);
        freed
    }
}

// SAFETY: every block comes from `inner`'s `allocate` unchanged and goes back
// through its `free`: its guarantees (alignment, order, zone, zeroing, no
// access to allocated blocks) carry over; the lists only record ids.
unsafe impl<F0: FrameProvider, P: Policy + Send> FrameProvider for TrackedFrames<F0, P> {
    fn allocate(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        let movable = flags.contains(AllocFlags::MOVABLE) && !flags.contains(AllocFlags::ATOMIC);
        if movable && self.below_min.get().is_some_and(|f| f()) {
            self.direct_reclaim();
        }
        let mut tries = 0;
        let block = loop {
            match self.inner.allocate(order, flags) {
                Ok(b) => break b,
                Err(e) => {
                    if flags.contains(AllocFlags::ATOMIC) || tries == DIRECT_TRIES || self.direct_reclaim() == 0 {
                        self.failures.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                    tries += 1;
                }
            }
        };
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

/// A cloneable handle on [`TrackedFrames`], the `F` of the `Mm`.
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

/// Gives one frame back to `frames`.
pub fn free_frame<F: FrameProvider + ?Sized>(frames: &F, frame: PhysAddr) {
    let block = FrameBlock::new(mm_types::FrameNumber::containing(frame), Order::ZERO)
        .expect("an order-0 block is always aligned");
    // A provider refusing its own frame is a bug there; nothing to undo here.
    let _ = frames.free(block);
}
