//! In-memory swap for page-cache models: slots in a map, failures on
//! demand.

extern crate std;

use std::boxed::Box;
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{PageSwap, PageSwapError, PhysAddr, PhysMemory, SimPhysMemory, StoreError, StoreErrorKind, StoreOp};
use crate::{SwapSlot, PAGE_SIZE};

const NEVER: u64 = u64::MAX;

/// A [`PageSwap`] of `slots` slots of area 0, kept in host memory, reading
/// and writing frames of a [`SimPhysMemory`].
///
/// [`fail_nth_swap_out`](MemSwap::fail_nth_swap_out) and
/// [`fail_nth_swap_in`](MemSwap::fail_nth_swap_in) make the Nth call of
/// that kind from now on (1 = the next) fail with an I/O error and do
/// nothing. Freeing a slot that is not in use panics: the caller lost
/// track of it.
#[derive(Debug)]
pub struct MemSwap {
    mem: SimPhysMemory,
    slots: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    pages: BTreeMap<u64, Box<[u8; PAGE_SIZE]>>,
    outs: u64,
    ins: u64,
    fail_out_at: u64,
    fail_in_at: u64,
}

impl MemSwap {
    /// `slots` empty slots over the frames of `mem`.
    pub fn new(mem: &SimPhysMemory, slots: u64) -> Self {
        let state = State { fail_out_at: NEVER, fail_in_at: NEVER, ..State::default() };
        MemSwap { mem: mem.clone(), slots, state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the `n`th swap-out from now fail (`n` = 1: the next).
    pub fn fail_nth_swap_out(&self, n: u64) {
        let mut s = self.lock();
        s.fail_out_at = s.outs.saturating_add(n.max(1));
    }

    /// Makes the `n`th swap-in from now fail (`n` = 1: the next).
    pub fn fail_nth_swap_in(&self, n: u64) {
        let mut s = self.lock();
        s.fail_in_at = s.ins.saturating_add(n.max(1));
    }

    /// Swap-outs asked for so far, failed ones included.
    pub fn swap_outs(&self) -> u64 {
        self.lock().outs
    }

    /// Swap-ins asked for so far, failed ones included.
    pub fn swap_ins(&self) -> u64 {
        self.lock().ins
    }

    /// Slots in use.
    pub fn used(&self) -> u64 {
        self.lock().pages.len() as u64
    }

    /// The page in `slot`, if it is in use (not counted as a swap-in).
    pub fn page(&self, slot: SwapSlot) -> Option<Box<[u8; PAGE_SIZE]>> {
        (slot.area() == 0).then(|| self.lock().pages.get(&slot.offset()).cloned()).flatten()
    }
}

// SAFETY: `swap_out` reads only `frame`'s page and `swap_in` writes only
// `frame`'s page; a slot read back holds what was written to it.
unsafe impl PageSwap for MemSwap {
    unsafe fn swap_out(&self, frame: PhysAddr) -> Result<SwapSlot, PageSwapError> {
        let mut s = self.lock();
        s.outs += 1;
        if s.outs == s.fail_out_at {
            return Err(PageSwapError::Io(StoreError { op: StoreOp::Write, slot: None, kind: StoreErrorKind::Io }));
        }
        let offset = (0..self.slots).find(|o| !s.pages.contains_key(o)).ok_or(PageSwapError::Full)?;
        let mut page = Box::new([0u8; PAGE_SIZE]);
        // SAFETY: the caller owns the frame; nothing writes it meanwhile.
        unsafe { self.mem.read_bytes(frame, &mut page[..]) }.map_err(|_| PageSwapError::Unreachable(frame))?;
        s.pages.insert(offset, page);
        Ok(SwapSlot::new(0, offset).expect("offset below the slot count"))
    }

    unsafe fn swap_in(&self, slot: SwapSlot, frame: PhysAddr) -> Result<(), PageSwapError> {
        let mut s = self.lock();
        s.ins += 1;
        if s.ins == s.fail_in_at {
            return Err(PageSwapError::Io(StoreError::slot(StoreOp::Read, slot.offset(), StoreErrorKind::Io)));
        }
        let page = s.pages.get(&slot.offset()).filter(|_| slot.area() == 0).ok_or(PageSwapError::Invalid(slot))?;
        // SAFETY: the caller owns the frame; nothing reads or writes it
        // meanwhile.
        unsafe { self.mem.write_bytes(frame, &page[..]) }.map_err(|_| PageSwapError::Unreachable(frame))
    }

    fn free(&self, slot: SwapSlot) {
        let gone = self.lock().pages.remove(&slot.offset()).filter(|_| slot.area() == 0);
        assert!(gone.is_some(), "{slot:?} freed but not in use");
    }
}
