//! The file backing trait: a file's pages by index, which a page cache reads
//! and writes back, and the hook through which the cache reaches the
//! mappings of a file's pages.

use core::fmt;

use crate::page::{FrameNumber, PAGE_SIZE};
use crate::store::{StoreError, StoreErrorKind, StoreOp};

/// The operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileOp {
    /// Reading pages.
    Read,
    /// Writing pages.
    Write,
    /// Making written pages durable.
    Sync,
    /// Changing the file's size.
    Resize,
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileErrorKind {
    /// A page wholly past the end of the file (reads), or a size the
    /// backing cannot hold (resizes: a block device's size is fixed).
    BeyondEnd,
    /// The device reported an I/O error.
    Io,
    /// The device did not answer in time.
    Timeout,
    /// The file or its device refuses changes.
    ReadOnly,
    /// No room left for the file's data.
    NoSpace,
    /// The device is gone or not ready.
    NotReady,
}

impl FileErrorKind {
    /// Every kind, in a fixed order (for encodings that store a kind as a
    /// small number).
    pub const ALL: [FileErrorKind; 6] = [
        FileErrorKind::BeyondEnd,
        FileErrorKind::Io,
        FileErrorKind::Timeout,
        FileErrorKind::ReadOnly,
        FileErrorKind::NoSpace,
        FileErrorKind::NotReady,
    ];
}

/// A failed file operation: which operation, at which page, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileError {
    /// The operation.
    pub op: FileOp,
    /// The first page of the failed request, for reads and writes.
    pub page: Option<u64>,
    /// The cause.
    pub kind: FileErrorKind,
}

impl FileError {
    /// An error of `op` at page `page`.
    pub const fn page(op: FileOp, page: u64, kind: FileErrorKind) -> Self {
        FileError { op, page: Some(page), kind }
    }

    /// An error of `op` on the whole file (sync, resize).
    pub const fn file(op: FileOp, kind: FileErrorKind) -> Self {
        FileError { op, page: None, kind }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FileErrorKind::BeyondEnd => "beyond the end of the file",
            FileErrorKind::Io => "I/O error",
            FileErrorKind::Timeout => "timed out",
            FileErrorKind::ReadOnly => "read-only",
            FileErrorKind::NoSpace => "no space left",
            FileErrorKind::NotReady => "device not ready",
        };
        match self.page {
            Some(p) => write!(f, "{:?} at page {p} failed: {what}", self.op),
            None => write!(f, "{:?} failed: {what}", self.op),
        }
    }
}

impl core::error::Error for FileError {}

impl From<StoreError> for FileError {
    /// A block device's error as the file's: the slot is the page.
    fn from(e: StoreError) -> Self {
        let op = match e.op {
            StoreOp::Read => FileOp::Read,
            StoreOp::Write => FileOp::Write,
            StoreOp::Flush => FileOp::Sync,
        };
        let kind = match e.kind {
            StoreErrorKind::OutOfRange => FileErrorKind::BeyondEnd,
            StoreErrorKind::Io => FileErrorKind::Io,
            StoreErrorKind::Timeout => FileErrorKind::Timeout,
            StoreErrorKind::ReadOnly => FileErrorKind::ReadOnly,
            StoreErrorKind::NotReady => FileErrorKind::NotReady,
        };
        FileError { op, page: e.slot, kind }
    }
}

/// Where a file's pages live when they are not cached: a file system's
/// file, a raw block device, or nothing at all (shmem keeps its pages in
/// memory and in swap).
///
/// Pages are numbered from 0; page `n` holds bytes `n * PAGE_SIZE ..
/// (n + 1) * PAGE_SIZE`. A request names consecutive pages, so that a
/// backing can turn a readahead window or a run of dirty pages into one
/// device request. Methods take `&self`; implementations synchronise
/// internally.
///
/// ```
/// use mm_types::testkit::MemFile;
/// use mm_types::{FileBacking, PAGE_SIZE};
///
/// let file = MemFile::new(2 * PAGE_SIZE as u64 + 100);
/// let (mut a, mut b) = ([0u8; PAGE_SIZE], [1u8; PAGE_SIZE]);
/// a[0] = 7;
/// file.write_pages(1, &[&a])?;
/// file.read_pages(1, &mut [&mut b])?;
/// assert_eq!(b[0], 7);
/// // The last page is partly past the end: its tail reads as zeros.
/// file.read_pages(2, &mut [&mut b])?;
/// assert!(b.iter().all(|&x| x == 0));
/// assert_eq!(file.read_pages(3, &mut [&mut b]).unwrap_err().page, Some(3));
/// # Ok::<(), mm_types::FileError>(())
/// ```
pub trait FileBacking {
    /// The file's size in bytes.
    fn size(&self) -> u64;

    /// Reads pages `first .. first + pages.len()` in one request. Bytes
    /// past the end of the file read as zeros; a page that starts at or
    /// past the end is [`FileErrorKind::BeyondEnd`]. On an error the
    /// buffers' contents are unspecified.
    fn read_pages(&self, first: u64, pages: &mut [&mut [u8; PAGE_SIZE]]) -> Result<(), FileError>;

    /// Writes pages `first .. first + pages.len()` in one request. Bytes
    /// past the end of the file are not stored (a write never grows the
    /// file: [`set_size`](FileBacking::set_size) does). A page that starts
    /// at or past the end is [`FileErrorKind::BeyondEnd`].
    fn write_pages(&self, first: u64, pages: &[&[u8; PAGE_SIZE]]) -> Result<(), FileError>;

    /// Makes every completed write durable.
    fn sync(&self) -> Result<(), FileError>;

    /// Sets the file's size: bytes past a smaller size are gone, bytes up
    /// to a larger one read as zeros. The default refuses
    /// ([`FileErrorKind::ReadOnly`]), as a read-only file system does.
    fn set_size(&self, size: u64) -> Result<(), FileError> {
        let _ = size;
        Err(FileError::file(FileOp::Resize, FileErrorKind::ReadOnly))
    }

    /// Whether writes and resizes are refused. A page cache refuses to
    /// dirty the pages of a read-only file instead of failing later, at
    /// writeback.
    fn read_only(&self) -> bool {
        false
    }

    /// The most pages one request should carry (a device's largest
    /// transfer). Batches never exceed it. The default is 64 pages
    /// (256 KiB).
    fn max_batch(&self) -> usize {
        64
    }
}

/// Forwards every method to the backing pointed at.
macro_rules! forward_file {
    ($(#[$m:meta])* $ty:ty) => {
        $(#[$m])*
        impl<B: FileBacking + ?Sized> FileBacking for $ty {
            fn size(&self) -> u64 {
                (**self).size()
            }
            fn read_pages(&self, first: u64, pages: &mut [&mut [u8; PAGE_SIZE]]) -> Result<(), FileError> {
                (**self).read_pages(first, pages)
            }
            fn write_pages(&self, first: u64, pages: &[&[u8; PAGE_SIZE]]) -> Result<(), FileError> {
                (**self).write_pages(first, pages)
            }
            fn sync(&self) -> Result<(), FileError> {
                (**self).sync()
            }
            fn set_size(&self, size: u64) -> Result<(), FileError> {
                (**self).set_size(size)
            }
            fn read_only(&self) -> bool {
                (**self).read_only()
            }
            fn max_batch(&self) -> usize {
                (**self).max_batch()
            }
        }
    };
}

forward_file!(&B);
// A backing shared with whoever injects faults into it or watches it.
forward_file!(#[cfg(feature = "std")] std::sync::Arc<B>);

/// A file as a page cache names it to its mappers: a number the cache gave
/// it when it was opened, unique while the file is cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u64);

/// The hook through which a page cache reaches the rest of the memory
/// manager: the mappings of its pages (implemented by the address-space
/// side, through its reverse map) and the record of which frames hold
/// which file pages (the kernel's per-frame table, Linux's
/// `page->mapping` and `page->index`, from which reclaim finds a victim's
/// file).
///
/// [`unmap`](FileMappings::unmap) is called without the cache's locks
/// held, so it may call back into the cache;
/// [`mkclean`](FileMappings::mkclean), [`added`](FileMappings::added) and
/// [`removed`](FileMappings::removed) are called with the file's lock held
/// (the page must not change meanwhile), so they must not call back into
/// the cache for that file, nor wait for a lock that is held while the
/// cache is called (an address space's, in a fault): take such locks
/// with a try, and answer `false` when one is busy.
pub trait FileMappings {
    /// Removes every mapping of page `page` of `file`, held in `frame`,
    /// from every address space: the page is about to leave the cache
    /// (truncation). Returns `false` if some mapping could not be removed
    /// now (its address space is busy); the cache keeps the page then.
    fn unmap(&self, file: FileId, page: u64, frame: FrameNumber) -> bool;

    /// Write-protects every mapping of page `page` of `file`, held in
    /// `frame`, before writeback writes it: a store through a mapping
    /// after this faults and dirties the page again (Linux's
    /// `page_mkclean`). Returns whether every mapping is read-only now;
    /// `false` (a mapping it could not reach now) keeps the page dirty
    /// after the write, so a store that lands during or after the write
    /// is written again later.
    fn mkclean(&self, file: FileId, page: u64, frame: FrameNumber) -> bool;

    /// Frame `frame` now holds page `page` of `file` (read in, or made
    /// for a write or a hole). `shmem` says the page lives only in memory
    /// and swap; `shadow` is what an eviction of that page left in the
    /// file's index (reclaim's record, for its refault distance), if any.
    fn added(&self, file: FileId, page: u64, frame: FrameNumber, shmem: bool, shadow: Option<u64>) {
        let _ = (file, page, frame, shmem, shadow);
    }

    /// Frame `frame` left the cache and is about to go back to the frame
    /// provider (also called for frames that were never
    /// [`added`](FileMappings::added), when a read into them failed).
    fn removed(&self, frame: FrameNumber) {
        let _ = frame;
    }
}

/// No mappings at all: for a cache whose pages are only read and written
/// through system calls (and for tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMappings;

impl FileMappings for NoMappings {
    fn unmap(&self, _: FileId, _: u64, _: FrameNumber) -> bool {
        true
    }
    fn mkclean(&self, _: FileId, _: u64, _: FrameNumber) -> bool {
        true
    }
}
