//! A [`BackingStore`] over a host file (feature `std`, Unix): slot `i` is
//! bytes `i * 4096 .. (i + 1) * 4096` of the file.

extern crate std;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use mm_types::{BackingStore, StoreError, StoreErrorKind, StoreOp, SLOT_SIZE};

/// A swap file.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    slots: u64,
}

impl FileStore {
    /// Creates (or truncates) `path` to `slots` slots.
    ///
    /// An error of kind [`io::ErrorKind::InvalidInput`] (the file is not
    /// touched) if `slots` pages do not fit a file length: more than
    /// `i64::MAX` bytes, the largest offset a Unix file has.
    pub fn create(path: &Path, slots: u64) -> io::Result<FileStore> {
        let len = slots.checked_mul(SLOT_SIZE as u64).filter(|&l| l <= i64::MAX as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                std::format!("{slots} slots of {SLOT_SIZE} bytes do not fit a file (at most {} slots)", max_slots()),
            )
        })?;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        file.set_len(len)?;
        Ok(FileStore { file, slots })
    }

    /// Opens an existing file; its length (rounded down) gives the slots.
    pub fn open(path: &Path) -> io::Result<FileStore> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let slots = file.metadata()?.len() / SLOT_SIZE as u64;
        Ok(FileStore { file, slots })
    }
}

/// The most slots a file can hold: `i64::MAX` bytes.
const fn max_slots() -> u64 {
    i64::MAX as u64 / SLOT_SIZE as u64
}

fn io_error(op: StoreOp, slot: Option<u64>, e: &io::Error) -> StoreError {
    let kind = match e.kind() {
        io::ErrorKind::PermissionDenied => StoreErrorKind::ReadOnly,
        io::ErrorKind::TimedOut => StoreErrorKind::Timeout,
        io::ErrorKind::NotFound => StoreErrorKind::NotReady,
        _ => StoreErrorKind::Io,
    };
    StoreError { op, slot, kind }
}

impl BackingStore for FileStore {
    fn slot_count(&self) -> u64 {
        self.slots
    }

    fn read_slot(&self, slot: u64, buf: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.check_slot(StoreOp::Read, slot)?;
        self.file.read_exact_at(buf, slot * SLOT_SIZE as u64).map_err(|e| io_error(StoreOp::Read, Some(slot), &e))
    }

    fn write_slot(&self, slot: u64, buf: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.check_slot(StoreOp::Write, slot)?;
        self.file.write_all_at(buf, slot * SLOT_SIZE as u64).map_err(|e| io_error(StoreOp::Write, Some(slot), &e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(|e| io_error(StoreOp::Flush, None, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "file I/O is not interpreted")]
    fn round_trip_and_range() {
        let path = std::env::temp_dir().join(std::format!("mm-swap-file-{}", std::process::id()));
        let store = FileStore::create(&path, 4).unwrap();
        let page = [0x5au8; SLOT_SIZE];
        store.write_slot(3, &page).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = FileStore::open(&path).unwrap();
        assert_eq!(store.slot_count(), 4);
        let mut back = [0u8; SLOT_SIZE];
        store.read_slot(3, &mut back).unwrap();
        assert_eq!(back, page);
        let e = store.read_slot(4, &mut back).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::OutOfRange);
        std::fs::remove_file(&path).unwrap();
    }
}
