//! The backing store trait: a device of page-sized slots that swap writes
//! pages to and reads them back from.

use core::fmt;

use crate::page::PAGE_SIZE;

/// Size of one slot: one base page.
pub const SLOT_SIZE: usize = PAGE_SIZE;

/// The operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreOp {
    /// Reading a slot.
    Read,
    /// Writing a slot.
    Write,
    /// Flushing written slots to stable storage.
    Flush,
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreErrorKind {
    /// The slot index is not below [`BackingStore::slot_count`].
    OutOfRange,
    /// The device reported an I/O error.
    Io,
    /// The device did not answer in time.
    Timeout,
    /// The device refuses writes.
    ReadOnly,
    /// The device is gone or not ready.
    NotReady,
}

/// A failed backing-store operation: which operation, on which slot, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoreError {
    /// The operation.
    pub op: StoreOp,
    /// The slot, for reads and writes.
    pub slot: Option<u64>,
    /// The cause.
    pub kind: StoreErrorKind,
}

impl StoreError {
    /// An error of `op` on `slot`.
    pub const fn slot(op: StoreOp, slot: u64, kind: StoreErrorKind) -> Self {
        StoreError { op, slot: Some(slot), kind }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StoreErrorKind::OutOfRange => "slot out of range",
            StoreErrorKind::Io => "I/O error",
            StoreErrorKind::Timeout => "timed out",
            StoreErrorKind::ReadOnly => "device is read-only",
            StoreErrorKind::NotReady => "device not ready",
        };
        match self.slot {
            Some(s) => write!(f, "{:?} of slot {s} failed: {what}", self.op),
            None => write!(f, "{:?} failed: {what}", self.op),
        }
    }
}

impl core::error::Error for StoreError {}

/// A device of [`SLOT_SIZE`]-byte slots.
///
/// Methods take `&self`; implementations synchronise internally. A write that
/// returned `Ok` is read back unchanged by later reads of the slot (after
/// [`flush`](BackingStore::flush) if the device caches writes and the data
/// must survive a crash).
pub trait BackingStore {
    /// Number of slots; valid slots are `0..slot_count()`.
    fn slot_count(&self) -> u64;

    /// Reads slot `slot` into `buf`.
    fn read_slot(&self, slot: u64, buf: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError>;

    /// Writes `buf` to slot `slot`.
    fn write_slot(&self, slot: u64, buf: &[u8; SLOT_SIZE]) -> Result<(), StoreError>;

    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// The longest run of consecutive slots that one
    /// [`write_slots`](BackingStore::write_slots) or
    /// [`read_slots`](BackingStore::read_slots) call should carry: a device
    /// that moves a run in one request (a disk: one command for many
    /// sectors) says how long a run it takes. At least 1; the default is 1.
    fn max_run(&self) -> usize {
        1
    }

    /// Writes `pages[i]` to slot `first + i` for every `i`, in one request
    /// where the device can. `Ok` only if every page was written. On an
    /// error any slot of the run may hold its old page or its new one: the
    /// caller treats the whole run as not written. The default writes slot
    /// by slot with [`write_slot`](BackingStore::write_slot), stopping at
    /// the first error.
    ///
    /// ```
    /// # #[cfg(feature = "testkit")] {
    /// use mm_types::testkit::MemStore;
    /// use mm_types::{BackingStore, SLOT_SIZE};
    ///
    /// let store = MemStore::new(8);
    /// let (a, b) = ([1u8; SLOT_SIZE], [2u8; SLOT_SIZE]);
    /// store.write_slots(3, &[&a, &b]).unwrap();
    /// let (mut x, mut y) = ([0u8; SLOT_SIZE], [0u8; SLOT_SIZE]);
    /// store.read_slots(3, &mut [&mut x, &mut y]).unwrap();
    /// assert_eq!((x, y), (a, b));
    /// # }
    /// ```
    fn write_slots(&self, first: u64, pages: &[&[u8; SLOT_SIZE]]) -> Result<(), StoreError> {
        check_run(self, StoreOp::Write, first, pages.len())?;
        for (slot, page) in (first..).zip(pages) {
            self.write_slot(slot, page)?;
        }
        Ok(())
    }

    /// Reads slot `first + i` into `bufs[i]` for every `i`, in one request
    /// where the device can. `Ok` only if every slot was read; on an error
    /// the buffers hold anything. The default reads slot by slot with
    /// [`read_slot`](BackingStore::read_slot), stopping at the first error.
    fn read_slots(&self, first: u64, bufs: &mut [&mut [u8; SLOT_SIZE]]) -> Result<(), StoreError> {
        check_run(self, StoreOp::Read, first, bufs.len())?;
        for (slot, buf) in (first..).zip(bufs.iter_mut()) {
            self.read_slot(slot, buf)?;
        }
        Ok(())
    }

    /// Says that slot `slot`'s contents are no longer needed (its swap slot
    /// was freed), as a disk's TRIM does. A later read of the slot before a
    /// new write may return anything. The default does nothing; a store
    /// that keeps slots in memory drops them here.
    fn discard(&self, slot: u64) {
        let _ = slot;
    }

    /// Checks a slot index, for implementations.
    fn check_slot(&self, op: StoreOp, slot: u64) -> Result<(), StoreError> {
        if slot < self.slot_count() {
            Ok(())
        } else {
            Err(StoreError::slot(op, slot, StoreErrorKind::OutOfRange))
        }
    }
}

/// Checks that the run of `len` slots from `first` lies within the store:
/// [`StoreErrorKind::OutOfRange`] naming the first slot past its end
/// otherwise. For implementations of
/// [`write_slots`](BackingStore::write_slots) and
/// [`read_slots`](BackingStore::read_slots).
pub fn check_run<S: BackingStore + ?Sized>(store: &S, op: StoreOp, first: u64, len: usize) -> Result<(), StoreError> {
    let count = store.slot_count();
    if first >= count && len > 0 {
        return Err(StoreError::slot(op, first, StoreErrorKind::OutOfRange));
    }
    let end = first.saturating_add(len as u64);
    if end > count {
        return Err(StoreError::slot(op, count, StoreErrorKind::OutOfRange));
    }
    Ok(())
}

/// Forwards every method to the store pointed at.
macro_rules! forward_store {
    ($(#[$m:meta])* $ty:ty) => {
        $(#[$m])*
        impl<S: BackingStore + ?Sized> BackingStore for $ty {
            fn slot_count(&self) -> u64 {
                (**self).slot_count()
            }
            fn read_slot(&self, slot: u64, buf: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
                (**self).read_slot(slot, buf)
            }
            fn write_slot(&self, slot: u64, buf: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
                (**self).write_slot(slot, buf)
            }
            fn flush(&self) -> Result<(), StoreError> {
                (**self).flush()
            }
            fn discard(&self, slot: u64) {
                (**self).discard(slot)
            }
            fn max_run(&self) -> usize {
                (**self).max_run()
            }
            fn write_slots(&self, first: u64, pages: &[&[u8; SLOT_SIZE]]) -> Result<(), StoreError> {
                (**self).write_slots(first, pages)
            }
            fn read_slots(&self, first: u64, bufs: &mut [&mut [u8; SLOT_SIZE]]) -> Result<(), StoreError> {
                (**self).read_slots(first, bufs)
            }
        }
    };
}

forward_store!(&S);
// A store shared with whoever injects faults into it or watches it.
forward_store!(#[cfg(feature = "std")] std::sync::Arc<S>);
