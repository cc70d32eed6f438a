//! A raw block device as a file: the device's own page cache (Linux's
//! block device inode), over any [`BackingStore`].

use mm_types::{BackingStore, FileBacking, FileError, FileErrorKind, FileOp, PAGE_SIZE, SLOT_SIZE};

/// A [`BackingStore`] seen as a file of `slot_count` pages, page `n` in
/// slot `n`. Its size is fixed: [`set_size`](FileBacking::set_size) to
/// anything else is refused ([`FileErrorKind::BeyondEnd`]).
///
/// ```
/// use mm_pagecache::BlockDevice;
/// use mm_types::testkit::MemStore;
/// use mm_types::{FileBacking, PAGE_SIZE};
///
/// let disk = BlockDevice::new(MemStore::new(8));
/// assert_eq!(disk.size(), 8 * PAGE_SIZE as u64);
/// let page = [3u8; PAGE_SIZE];
/// disk.write_pages(6, &[&page, &page])?;
/// let mut back = [0u8; PAGE_SIZE];
/// disk.read_pages(7, &mut [&mut back])?;
/// assert_eq!(back, page);
/// assert!(disk.read_pages(8, &mut [&mut back]).is_err());
/// # Ok::<(), mm_types::FileError>(())
/// ```
#[derive(Debug)]
pub struct BlockDevice<S> {
    store: S,
    read_only: bool,
}

impl<S: BackingStore> BlockDevice<S> {
    /// The device, writable.
    pub fn new(store: S) -> Self {
        BlockDevice { store, read_only: false }
    }

    /// The device, refusing writes.
    pub fn read_only(store: S) -> Self {
        BlockDevice { store, read_only: true }
    }

    /// The store below.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn check(&self, op: FileOp, first: u64, n: usize) -> Result<(), FileError> {
        let end = first.checked_add(n as u64);
        if n == 0 || end.is_none_or(|e| e > self.store.slot_count()) {
            let bad = first.max(self.store.slot_count());
            return Err(FileError::page(op, bad, FileErrorKind::BeyondEnd));
        }
        Ok(())
    }
}

impl<S: BackingStore> FileBacking for BlockDevice<S> {
    fn size(&self) -> u64 {
        self.store.slot_count().saturating_mul(PAGE_SIZE as u64)
    }

    fn read_pages(&self, first: u64, pages: &mut [&mut [u8; PAGE_SIZE]]) -> Result<(), FileError> {
        self.check(FileOp::Read, first, pages.len())?;
        for (slot, page) in (first..).zip(pages.iter_mut()) {
            let buf: &mut [u8; SLOT_SIZE] = page;
            self.store.read_slot(slot, buf)?;
        }
        Ok(())
    }

    fn write_pages(&self, first: u64, pages: &[&[u8; PAGE_SIZE]]) -> Result<(), FileError> {
        if self.read_only {
            return Err(FileError::page(FileOp::Write, first, FileErrorKind::ReadOnly));
        }
        self.check(FileOp::Write, first, pages.len())?;
        for (slot, page) in (first..).zip(pages.iter()) {
            self.store.write_slot(slot, page)?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), FileError> {
        self.store.flush().map_err(FileError::from)
    }

    fn set_size(&self, size: u64) -> Result<(), FileError> {
        if self.read_only {
            Err(FileError::file(FileOp::Resize, FileErrorKind::ReadOnly))
        } else if size == self.size() {
            Ok(())
        } else {
            Err(FileError::file(FileOp::Resize, FileErrorKind::BeyondEnd))
        }
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}
