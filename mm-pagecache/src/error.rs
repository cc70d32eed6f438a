//! Why an index or cache operation was refused.

use core::fmt;

use mm_types::{FileError, FileErrorKind, FrameError, PageSwapError, PhysAddr};

use crate::Tag;

/// Why a [`PageIndex`](crate::PageIndex) operation was refused. A refused
/// operation changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexError {
    /// A page is already cached at this index (a second insert would lose
    /// the first page's frame).
    Occupied {
        /// The page index.
        index: u64,
    },
    /// No page is cached at this index (nothing, or only the shadow of an
    /// evicted page): tags and eviction need a page.
    NotCached {
        /// The page index.
        index: u64,
    },
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::Occupied { index } => write!(f, "page {index} is already cached"),
            IndexError::NotCached { index } => write!(f, "no page is cached at index {index}"),
        }
    }
}

impl core::error::Error for IndexError {}

/// Why a [`PageCache`](crate::PageCache) operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// The file's backing failed a request (a read the caller waits for, a
    /// resize, a sync): what it said.
    Io(FileError),
    /// A writeback of this file failed since this open file last synced
    /// (in the background, or through another open file): the data is
    /// still cached and dirty, and another sync tries again.
    Writeback(FileErrorKind),
    /// No frame for a page: the frame provider's error, unchanged (out of
    /// memory, or a refusal that is a bug).
    Frames(FrameError),
    /// The file refuses changes (a read-only backing).
    ReadOnly,
    /// An offset and length that end past the largest file (2^64 bytes).
    TooLarge {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: u64,
    },
    /// The page is not cached (only a shadow, or nothing).
    NotCached {
        /// The page index.
        page: u64,
    },
    /// The page is mapped in an address space that could not be reached
    /// now (busy): it cannot leave the cache yet; try again once that
    /// space is free.
    Mapped {
        /// The page index.
        page: u64,
    },
    /// The page cannot be evicted now: it carries this tag (dirty, under
    /// writeback, locked).
    Busy {
        /// The page index.
        page: u64,
        /// What keeps it.
        tag: Tag,
    },
    /// A frame the provider handed out that the physical memory access
    /// cannot reach (the kernel's setup is wrong).
    Unreachable(PhysAddr),
    /// A fault at a page at or past the end of the file: the access gets a
    /// bus error.
    BeyondEnd {
        /// The page index.
        page: u64,
    },
    /// A shmem page has no backing to be dropped to: it goes to swap
    /// ([`PageCache::swap_out`](crate::PageCache::swap_out)).
    NeedsSwap {
        /// The page index.
        page: u64,
    },
    /// Only a shmem file's pages go to swap.
    NotShmem,
    /// The cache has no swap ([`PageCache::with_swap`](crate::PageCache::with_swap)).
    NoSwap,
    /// Swap failed a shmem page's swap-out or swap-in: what it said.
    Swap(PageSwapError),
    /// A configuration that cannot work.
    Config(&'static str),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Io(e) => write!(f, "file I/O failed: {e}"),
            CacheError::Writeback(k) => write!(f, "an earlier writeback of this file failed: {k:?}"),
            CacheError::Frames(e) => write!(f, "no frame for a page: {e}"),
            CacheError::ReadOnly => write!(f, "the file is read-only"),
            CacheError::TooLarge { offset, len } => write!(f, "{len} bytes at offset {offset} end past 2^64"),
            CacheError::NotCached { page } => write!(f, "page {page} is not cached"),
            CacheError::Mapped { page } => write!(f, "page {page} is mapped in an address space that is busy"),
            CacheError::Busy { page, tag } => write!(f, "page {page} is {tag:?}"),
            CacheError::Unreachable(a) => write!(f, "frame {a:?} is not reachable through physical memory access"),
            CacheError::BeyondEnd { page } => write!(f, "page {page} is past the end of the file"),
            CacheError::NeedsSwap { page } => write!(f, "shmem page {page} can only go to swap"),
            CacheError::NotShmem => write!(f, "only shmem pages go to swap"),
            CacheError::NoSwap => write!(f, "the cache has no swap"),
            CacheError::Swap(e) => write!(f, "swap failed: {e}"),
            CacheError::Config(why) => write!(f, "bad cache configuration: {why}"),
        }
    }
}

impl core::error::Error for CacheError {}
