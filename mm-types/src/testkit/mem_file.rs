//! In-memory file backing with fault injection and request counts.

extern crate std;

use std::sync::Mutex;
use std::vec::Vec;

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::{FileBacking, FileError, FileErrorKind, FileOp, PAGE_SIZE};

const NEVER: u64 = u64::MAX;

/// A [`FileBacking`] in host memory that counts its requests and can be
/// told to fail.
///
/// - [`fail_nth_read`](MemFile::fail_nth_read) /
///   [`fail_nth_write`](MemFile::fail_nth_write): the Nth request of that
///   kind from now on (1 = the next one) fails with an I/O error and
///   transfers nothing.
/// - [`fail_writes`](MemFile::fail_writes): every write request fails
///   until cleared; [`fail_syncs`](MemFile::fail_syncs) likewise for syncs.
/// - [`set_read_only`](MemFile::set_read_only): writes and resizes are
///   refused, as a read-only file system does.
/// - [`set_max_batch`](MemFile::set_max_batch): the largest request.
///
/// Requests and the pages they carry are counted
/// ([`read_requests`](MemFile::read_requests),
/// [`pages_read`](MemFile::pages_read) and the write side), failed ones
/// too; [`contents`](MemFile::contents) shows the bytes as stored, without
/// counting. A request longer than [`max_batch`](FileBacking::max_batch)
/// panics: the caller broke the contract.
#[derive(Debug)]
pub struct MemFile {
    data: Mutex<Vec<u8>>,
    read_requests: AtomicU64,
    pages_read: AtomicU64,
    write_requests: AtomicU64,
    pages_written: AtomicU64,
    syncs: AtomicU64,
    fail_read_at: AtomicU64,
    fail_write_at: AtomicU64,
    fail_all_writes: AtomicBool,
    fail_all_syncs: AtomicBool,
    read_only: AtomicBool,
    max_batch: AtomicUsize,
}

impl MemFile {
    /// A file of `size` zero bytes.
    pub fn new(size: u64) -> Self {
        Self::with_contents(std::vec![0; size as usize])
    }

    /// A file holding `bytes`.
    pub fn with_contents(bytes: Vec<u8>) -> Self {
        MemFile {
            data: Mutex::new(bytes),
            read_requests: AtomicU64::new(0),
            pages_read: AtomicU64::new(0),
            write_requests: AtomicU64::new(0),
            pages_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            fail_read_at: AtomicU64::new(NEVER),
            fail_write_at: AtomicU64::new(NEVER),
            fail_all_writes: AtomicBool::new(false),
            fail_all_syncs: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
            max_batch: AtomicUsize::new(64),
        }
    }

    /// Makes the `n`th read request from now on fail (`n` = 1: the next).
    pub fn fail_nth_read(&self, n: u64) {
        let at = self.read_requests.load(Ordering::SeqCst).saturating_add(n.max(1));
        self.fail_read_at.store(at, Ordering::SeqCst);
    }

    /// Makes the `n`th write request from now on fail (`n` = 1: the next).
    pub fn fail_nth_write(&self, n: u64) {
        let at = self.write_requests.load(Ordering::SeqCst).saturating_add(n.max(1));
        self.fail_write_at.store(at, Ordering::SeqCst);
    }

    /// Makes every write request fail (`true`) or work again (`false`).
    pub fn fail_writes(&self, on: bool) {
        self.fail_all_writes.store(on, Ordering::SeqCst);
    }

    /// Makes every sync fail (`true`) or work again (`false`).
    pub fn fail_syncs(&self, on: bool) {
        self.fail_all_syncs.store(on, Ordering::SeqCst);
    }

    /// Refuses writes and resizes (`true`), or takes them again.
    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, Ordering::SeqCst);
    }

    /// Sets the largest request (at least one page).
    pub fn set_max_batch(&self, pages: usize) {
        self.max_batch.store(pages.max(1), Ordering::SeqCst);
    }

    /// The file's bytes as stored now (not counted as a read).
    pub fn contents(&self) -> Vec<u8> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Read requests so far.
    pub fn read_requests(&self) -> u64 {
        self.read_requests.load(Ordering::SeqCst)
    }

    /// Pages those read requests asked for.
    pub fn pages_read(&self) -> u64 {
        self.pages_read.load(Ordering::SeqCst)
    }

    /// Write requests so far.
    pub fn write_requests(&self) -> u64 {
        self.write_requests.load(Ordering::SeqCst)
    }

    /// Pages those write requests carried.
    pub fn pages_written(&self) -> u64 {
        self.pages_written.load(Ordering::SeqCst)
    }

    /// Syncs so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Checks a request of `n` pages from `first` against the contract and
    /// the size: the first page must start before the end.
    fn check(&self, op: FileOp, first: u64, n: usize, len: usize) -> Result<(), FileError> {
        assert!(n <= self.max_batch(), "a request of {n} pages, more than max_batch");
        if first.checked_mul(PAGE_SIZE as u64).is_none_or(|start| start >= len as u64) || n == 0 {
            return Err(FileError::page(op, first, FileErrorKind::BeyondEnd));
        }
        // Every page of the request must start before the end.
        let last = first + n as u64 - 1;
        if last.checked_mul(PAGE_SIZE as u64).is_none_or(|start| start >= len as u64) {
            return Err(FileError::page(op, last, FileErrorKind::BeyondEnd));
        }
        Ok(())
    }
}

impl FileBacking for MemFile {
    fn size(&self) -> u64 {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    fn read_pages(&self, first: u64, pages: &mut [&mut [u8; PAGE_SIZE]]) -> Result<(), FileError> {
        let n = self.read_requests.fetch_add(1, Ordering::SeqCst) + 1;
        self.pages_read.fetch_add(pages.len() as u64, Ordering::SeqCst);
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        self.check(FileOp::Read, first, pages.len(), data.len())?;
        if n == self.fail_read_at.load(Ordering::SeqCst) {
            return Err(FileError::page(FileOp::Read, first, FileErrorKind::Io));
        }
        for (i, page) in pages.iter_mut().enumerate() {
            let start = (first as usize + i) * PAGE_SIZE;
            let end = (start + PAGE_SIZE).min(data.len());
            page[..end - start].copy_from_slice(&data[start..end]);
            page[end - start..].fill(0);
        }
        Ok(())
    }

    fn write_pages(&self, first: u64, pages: &[&[u8; PAGE_SIZE]]) -> Result<(), FileError> {
        let n = self.write_requests.fetch_add(1, Ordering::SeqCst) + 1;
        self.pages_written.fetch_add(pages.len() as u64, Ordering::SeqCst);
        if self.read_only() {
            return Err(FileError::page(FileOp::Write, first, FileErrorKind::ReadOnly));
        }
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        self.check(FileOp::Write, first, pages.len(), data.len())?;
        if n == self.fail_write_at.load(Ordering::SeqCst) || self.fail_all_writes.load(Ordering::SeqCst) {
            return Err(FileError::page(FileOp::Write, first, FileErrorKind::Io));
        }
        let len = data.len();
        for (i, page) in pages.iter().enumerate() {
            let start = (first as usize + i) * PAGE_SIZE;
            let end = (start + PAGE_SIZE).min(len);
            data[start..end].copy_from_slice(&page[..end - start]);
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), FileError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_all_syncs.load(Ordering::SeqCst) {
            return Err(FileError::file(FileOp::Sync, FileErrorKind::Io));
        }
        Ok(())
    }

    fn set_size(&self, size: u64) -> Result<(), FileError> {
        if self.read_only() {
            return Err(FileError::file(FileOp::Resize, FileErrorKind::ReadOnly));
        }
        let size = usize::try_from(size).map_err(|_| FileError::file(FileOp::Resize, FileErrorKind::NoSpace))?;
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        match size.checked_sub(data.len()) {
            // Zeros by one copy of a zeroed buffer (`resize` writes them a
            // byte at a time, which miri interprets slowly).
            Some(grow) => data.extend_from_slice(&std::vec![0; grow]),
            None => data.truncate(size),
        }
        Ok(())
    }

    fn read_only(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    fn max_batch(&self) -> usize {
        self.max_batch.load(Ordering::SeqCst)
    }
}
