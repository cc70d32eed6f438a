//! Why an index operation was refused.

use core::fmt;

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
