//! Page state shared between crates: per-frame flags that reclaim and swap
//! agree on, which kind of memory a page is, and mapping protection.

use bitflags::bitflags;

/// Anonymous or file-backed: who keeps a page's contents when it leaves
/// memory, so whether evicting it takes swap space. The address spaces
/// track it per frame (an anonymous frame is freed when unused, a pager
/// keeps its own) and reclaim lists the two kinds apart (a swap write and
/// read against a re-read, or nothing at all for a clean page).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// Anonymous memory: evicting it needs swap space.
    Anon = 0,
    /// A pager's page (a file's, or any object's, page cache): the pager
    /// owns it, and a clean one is dropped rather than written.
    File = 1,
}

bitflags! {
    /// State of one page frame, as reclaim, swap and the fault handler see it
    /// (the subset of Linux's page flags those parts exchange).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PageFlags: u32 {
        /// Accessed since the last scan (software or harvested accessed bit).
        const REFERENCED = 1 << 0;
        /// Contents differ from the backing copy (must be written before
        /// the frame can be reused).
        const DIRTY = 1 << 1;
        /// On the active list (part of the working set).
        const ACTIVE = 1 << 2;
        /// Anonymous memory, backed by swap rather than a file.
        const SWAP_BACKED = 1 << 3;
        /// Locked for I/O or by its owner: reclaim must not touch it.
        const LOCKED = 1 << 4;
        /// Pinned (mlock, DMA): never evicted.
        const UNEVICTABLE = 1 << 5;
        /// Being written to its backing store.
        const WRITEBACK = 1 << 6;
        /// In the swap cache (has a swap slot).
        const SWAP_CACHE = 1 << 7;
        /// Contents are valid (read in completely).
        const UPTODATE = 1 << 8;
        /// Mapped by at least one page table.
        const MAPPED = 1 << 9;
        /// Refaulted within the working-set distance after eviction.
        const WORKINGSET = 1 << 10;
        /// Marked for immediate reclaim once writeback completes.
        const RECLAIM = 1 << 11;
    }
}

impl PageFlags {
    /// Whether reclaim may consider the page at all.
    pub fn is_evictable(self) -> bool {
        !self.intersects(PageFlags::LOCKED | PageFlags::UNEVICTABLE | PageFlags::WRITEBACK)
    }
}

bitflags! {
    /// Architecture-neutral access rights of a mapping.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Protection: u8 {
        /// Readable.
        const READ = 1 << 0;
        /// Writable.
        const WRITE = 1 << 1;
        /// Executable.
        const EXEC = 1 << 2;
        /// Accessible from user mode.
        const USER = 1 << 3;
    }
}

impl Protection {
    /// Whether an access of kind `access` is allowed by these rights.
    ///
    /// ```
    /// use mm_types::Protection;
    /// let rw = Protection::READ | Protection::WRITE;
    /// assert!(rw.allows(Protection::WRITE));
    /// assert!(!rw.allows(Protection::EXEC));
    /// ```
    pub fn allows(self, access: Protection) -> bool {
        self.contains(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictability() {
        assert!(PageFlags::DIRTY.is_evictable());
        assert!(!(PageFlags::DIRTY | PageFlags::LOCKED).is_evictable());
        assert!(!PageFlags::UNEVICTABLE.is_evictable());
        assert!(!PageFlags::WRITEBACK.is_evictable());
    }
}
