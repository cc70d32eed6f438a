//! Taking an area out of service: every page in it read back in first.

use alloc::boxed::Box;
use alloc::sync::Arc;

use mm_types::sync::atomic::Ordering;
use mm_types::BackingStore;

use super::Swap;
use crate::area::{ACTIVE, DRAINING};
use crate::SwapError;

impl Swap {
    /// Removes area `n`: no new slots are allocated in it, then `unuse` is
    /// called to bring every page of the area back in (walk the page
    /// tables, swap in each entry of the area and free it; drop cached
    /// pages with [`Swap::uncache`] or `free`). If slots are still in use
    /// afterwards the area goes back to service and
    /// [`SwapError::InUse`] is returned; else it is removed and its store
    /// returned.
    pub fn swapoff(
        &self,
        n: u8,
        unuse: &mut dyn FnMut(&Swap, u8) -> Result<(), SwapError>,
    ) -> Result<Box<dyn BackingStore + Send + Sync>, SwapError> {
        let a = self.area(n)?;
        a.state.store(DRAINING, Ordering::Release);
        self.drain_slot_caches(|area| area == n);
        let r = unuse(self, n);
        // A refill that raced the state change may have cached some more.
        self.drain_slot_caches(|area| area == n);
        let left = a.used.load(Ordering::Acquire);
        if let Err(e) = r {
            a.state.store(ACTIVE, Ordering::Release);
            return Err(e);
        }
        if left != 0 {
            a.state.store(ACTIVE, Ordering::Release);
            return Err(SwapError::InUse { area: n, slots: left });
        }
        let mut areas = self.areas.lock();
        areas.by_number[n as usize] = None;
        areas.reorder();
        drop(areas);
        match Arc::try_unwrap(a) {
            Ok(area) => Ok(area.store),
            // Another CPU still holds the area for a moment (a lookup that
            // found no slot): it is removed; its store goes with the last
            // reference.
            Err(_) => Err(SwapError::NoArea(n)),
        }
    }
}
