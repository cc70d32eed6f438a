//! In-memory backing store with fault injection.

extern crate std;

use std::boxed::Box;
use std::collections::BTreeMap;
use std::sync::Mutex;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{check_run, BackingStore, StoreError, StoreErrorKind, StoreOp, SLOT_SIZE};

/// A [`BackingStore`] in host memory that can be told to fail.
///
/// - [`fail_nth_read`](MemStore::fail_nth_read) /
///   [`fail_nth_write`](MemStore::fail_nth_write): the Nth operation of that
///   kind from now on (1 = the next one) returns an I/O error and does nothing.
/// - [`fail_writes`](MemStore::fail_writes): every write fails until cleared.
/// - [`corrupt_slot`](MemStore::corrupt_slot): flips a bit of a stored slot
///   without any error, as bit rot would.
///
/// [`with_max_run`](MemStore::with_max_run) makes it take runs of
/// consecutive slots in one request, as a disk does: such a request counts
/// as one read or write, and an injected fault fails it whole, writing
/// none of its slots.
///
/// Failed operations are counted in [`reads`](MemStore::reads) and
/// [`writes`](MemStore::writes) like successful ones. A slot takes memory
/// only once written (an unwritten slot reads as zeros), so a large store
/// costs nothing to make: models that build one per input stay fast.
#[derive(Debug)]
pub struct MemStore {
    slots: u64,
    data: Mutex<BTreeMap<u64, Box<[u8; SLOT_SIZE]>>>,
    reads: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    discards: AtomicU64,
    fail_read_at: AtomicU64,
    fail_write_at: AtomicU64,
    fail_all_writes: AtomicBool,
    max_run: usize,
}

const NEVER: u64 = u64::MAX;

impl MemStore {
    /// A store of `slots` zero-filled slots.
    pub fn new(slots: u64) -> Self {
        MemStore {
            slots,
            data: Mutex::new(BTreeMap::new()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            discards: AtomicU64::new(0),
            fail_read_at: AtomicU64::new(NEVER),
            fail_write_at: AtomicU64::new(NEVER),
            fail_all_writes: AtomicBool::new(false),
            max_run: 1,
        }
    }

    /// The same store taking runs of up to `max_run` consecutive slots in
    /// one request ([`BackingStore::max_run`]; at least 1).
    pub fn with_max_run(mut self, max_run: usize) -> Self {
        self.max_run = max_run.max(1);
        self
    }

    /// Makes the `n`th read from now on fail (`n` = 1: the next read).
    pub fn fail_nth_read(&self, n: u64) {
        let at = self.reads.load(Ordering::SeqCst).saturating_add(n.max(1));
        self.fail_read_at.store(at, Ordering::SeqCst);
    }

    /// Makes the `n`th write from now on fail (`n` = 1: the next write).
    pub fn fail_nth_write(&self, n: u64) {
        let at = self.writes.load(Ordering::SeqCst).saturating_add(n.max(1));
        self.fail_write_at.store(at, Ordering::SeqCst);
    }

    /// Makes every write fail (`true`) or work again (`false`).
    pub fn fail_writes(&self, on: bool) {
        self.fail_all_writes.store(on, Ordering::SeqCst);
    }

    /// Flips the lowest bit of byte `byte` of `slot`, silently.
    ///
    /// # Panics
    ///
    /// If the slot or byte is out of range.
    pub fn corrupt_slot(&self, slot: u64, byte: usize) {
        assert!(slot < self.slots && byte < SLOT_SIZE, "corrupting outside the store");
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.entry(slot).or_insert_with(|| Box::new([0; SLOT_SIZE]))[byte] ^= 1;
    }

    /// The little-endian word at byte `offset` of `slot` as stored now,
    /// without counting a read or injecting a fault (an unwritten slot
    /// reads as zero): a model's cheap look at a swapped page between the
    /// full, counted reads.
    ///
    /// # Panics
    ///
    /// If the slot is out of range or the word does not fit in the slot.
    pub fn peek_word(&self, slot: u64, offset: usize) -> u64 {
        assert!(slot < self.slots && offset <= SLOT_SIZE - 8, "peeking outside the store");
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.get(&slot).map_or(0, |page| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&page[offset..offset + 8]);
            u64::from_le_bytes(w)
        })
    }

    /// Reads attempted so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Flushes so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// Discards so far (the data stays: a real device may keep it too).
    pub fn discards(&self) -> u64 {
        self.discards.load(Ordering::SeqCst)
    }
}

impl BackingStore for MemStore {
    fn slot_count(&self) -> u64 {
        self.slots
    }

    fn read_slot(&self, slot: u64, buf: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        self.check_slot(StoreOp::Read, slot)?;
        if n == self.fail_read_at.load(Ordering::SeqCst) {
            return Err(StoreError::slot(StoreOp::Read, slot, StoreErrorKind::Io));
        }
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        match data.get(&slot) {
            Some(page) => buf.copy_from_slice(&page[..]),
            None => buf.fill(0),
        }
        Ok(())
    }

    fn write_slot(&self, slot: u64, buf: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        self.check_slot(StoreOp::Write, slot)?;
        if n == self.fail_write_at.load(Ordering::SeqCst) || self.fail_all_writes.load(Ordering::SeqCst) {
            return Err(StoreError::slot(StoreOp::Write, slot, StoreErrorKind::Io));
        }
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.insert(slot, Box::new(*buf));
        Ok(())
    }

    fn max_run(&self) -> usize {
        self.max_run
    }

    /// One request: one counted write, failed whole by an injected fault.
    fn write_slots(&self, first: u64, pages: &[&[u8; SLOT_SIZE]]) -> Result<(), StoreError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        check_run(self, StoreOp::Write, first, pages.len())?;
        if n == self.fail_write_at.load(Ordering::SeqCst) || self.fail_all_writes.load(Ordering::SeqCst) {
            return Err(StoreError::slot(StoreOp::Write, first, StoreErrorKind::Io));
        }
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, page) in (first..).zip(pages) {
            data.insert(slot, Box::new(**page));
        }
        Ok(())
    }

    /// One request: one counted read, failed whole by an injected fault.
    fn read_slots(&self, first: u64, bufs: &mut [&mut [u8; SLOT_SIZE]]) -> Result<(), StoreError> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        check_run(self, StoreOp::Read, first, bufs.len())?;
        if n == self.fail_read_at.load(Ordering::SeqCst) {
            return Err(StoreError::slot(StoreOp::Read, first, StoreErrorKind::Io));
        }
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, buf) in (first..).zip(bufs.iter_mut()) {
            match data.get(&slot) {
                Some(page) => buf.copy_from_slice(&page[..]),
                None => buf.fill(0),
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn discard(&self, _slot: u64) {
        self.discards.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_range_check() {
        let s = MemStore::new(4);
        let mut page = [0u8; SLOT_SIZE];
        page[7] = 42;
        s.write_slot(3, &page).unwrap();
        let mut back = [0u8; SLOT_SIZE];
        s.read_slot(3, &mut back).unwrap();
        assert_eq!(back[7], 42);
        assert_eq!(s.read_slot(4, &mut back), Err(StoreError::slot(StoreOp::Read, 4, StoreErrorKind::OutOfRange)));
        assert_eq!(s.write_slot(9, &page), Err(StoreError::slot(StoreOp::Write, 9, StoreErrorKind::OutOfRange)));
        s.flush().unwrap();
        s.discard(3);
        assert_eq!((s.reads(), s.writes(), s.flushes(), s.discards()), (2, 2, 1, 1));
    }

    #[test]
    fn runs_are_one_request_and_fail_whole() {
        let s = MemStore::new(8).with_max_run(4);
        assert_eq!(s.max_run(), 4);
        let (a, b, c) = ([1u8; SLOT_SIZE], [2u8; SLOT_SIZE], [3u8; SLOT_SIZE]);
        s.write_slots(2, &[&a, &b]).unwrap();
        assert_eq!(s.writes(), 1, "one request");
        s.fail_nth_write(1);
        assert_eq!(s.write_slots(2, &[&c, &c]), Err(StoreError::slot(StoreOp::Write, 2, StoreErrorKind::Io)));
        let (mut x, mut y) = ([0u8; SLOT_SIZE], [0u8; SLOT_SIZE]);
        s.read_slots(2, &mut [&mut x, &mut y]).unwrap();
        assert_eq!((x, y, s.reads()), (a, b, 1), "a failed run writes nothing");
        assert_eq!(
            s.write_slots(7, &[&a, &b]),
            Err(StoreError::slot(StoreOp::Write, 8, StoreErrorKind::OutOfRange)),
            "a run past the end names the first slot outside"
        );
        assert_eq!(s.read_slots(9, &mut [&mut x]), Err(StoreError::slot(StoreOp::Read, 9, StoreErrorKind::OutOfRange)));
        s.fail_nth_read(1);
        assert!(s.read_slots(2, &mut [&mut x, &mut y]).is_err());
        // The trait's default methods go slot by slot.
        struct SlotBySlot(MemStore);
        impl BackingStore for SlotBySlot {
            fn slot_count(&self) -> u64 {
                self.0.slot_count()
            }
            fn read_slot(&self, slot: u64, buf: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
                self.0.read_slot(slot, buf)
            }
            fn write_slot(&self, slot: u64, buf: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
                self.0.write_slot(slot, buf)
            }
            fn flush(&self) -> Result<(), StoreError> {
                self.0.flush()
            }
        }
        let one = SlotBySlot(MemStore::new(4));
        assert_eq!(one.max_run(), 1);
        one.write_slots(0, &[&a, &b, &c]).unwrap();
        assert_eq!(one.0.writes(), 3);
        let mut z = [0u8; SLOT_SIZE];
        one.read_slots(1, &mut [&mut x, &mut z]).unwrap();
        assert_eq!((x, z, one.0.reads()), (b, c, 2));
        assert_eq!(one.write_slots(3, &[&a, &b]), Err(StoreError::slot(StoreOp::Write, 4, StoreErrorKind::OutOfRange)));
        assert_eq!(one.0.writes(), 3, "a run out of range is refused before any write");
    }

    #[test]
    fn nth_faults_fire_once_and_leave_data_alone() {
        let s = MemStore::new(2);
        let a = [1u8; SLOT_SIZE];
        let b = [2u8; SLOT_SIZE];
        s.write_slot(0, &a).unwrap();
        s.fail_nth_write(2);
        s.write_slot(1, &a).unwrap();
        assert_eq!(s.write_slot(0, &b), Err(StoreError::slot(StoreOp::Write, 0, StoreErrorKind::Io)));
        let mut out = [0u8; SLOT_SIZE];
        s.read_slot(0, &mut out).unwrap();
        assert_eq!(out, a, "a failed write must not change the slot");
        s.write_slot(0, &b).unwrap();
        s.fail_nth_read(1);
        assert_eq!(s.read_slot(0, &mut out), Err(StoreError::slot(StoreOp::Read, 0, StoreErrorKind::Io)));
        s.read_slot(0, &mut out).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn persistent_write_failure_and_corruption() {
        let s = MemStore::new(1);
        let a = [0u8; SLOT_SIZE];
        s.fail_writes(true);
        assert!(s.write_slot(0, &a).is_err());
        assert!(s.write_slot(0, &a).is_err());
        s.fail_writes(false);
        s.write_slot(0, &a).unwrap();
        s.corrupt_slot(0, 100);
        let mut out = [0u8; SLOT_SIZE];
        s.read_slot(0, &mut out).unwrap();
        assert_eq!(out[100], 1);
    }

    #[test]
    fn peek_word_sees_the_stored_bytes_and_counts_nothing() {
        let s = MemStore::new(2);
        let mut page = [0u8; SLOT_SIZE];
        page[8..16].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        s.write_slot(1, &page).unwrap();
        s.fail_nth_read(1);
        assert_eq!(s.peek_word(1, 8), 0x1122_3344_5566_7788);
        assert_eq!(s.peek_word(1, 9), 0x0011_2233_4455_6677);
        assert_eq!(s.peek_word(0, 0), 0, "an unwritten slot reads as zero");
        assert_eq!(s.reads(), 0);
        assert!(s.read_slot(1, &mut page).is_err(), "the armed fault is still the next read");
    }
}
