//! The architecture description the engine is generic over.
//!
//! Table geometry is fixed at 512 entries of 8 bytes per 4 KiB table (9 index
//! bits per level, 4 KiB base pages), which x86-64, AArch64 with the 4 KiB
//! granule and RISC-V Sv39/48/57 share. What differs, and what an
//! implementation of [`PagingArch`] says, is the number of levels, which
//! addresses are valid, which levels may hold leaves, and the entry format.

use mm_types::{AddrError, PhysAddr, SwapSlot, VirtAddr};

use crate::flags::MapFlags;

/// Entries per table.
pub const ENTRIES: usize = 512;

/// Bytes mapped by one entry at `level` (1 = the lowest level).
#[inline]
pub const fn level_span(level: u8) -> u64 {
    1 << (12 + 9 * (level as u32 - 1))
}

/// Index of `va` in a table at `level`.
#[inline]
pub const fn level_index(va: u64, level: u8) -> usize {
    ((va >> (12 + 9 * (level as u32 - 1))) & 511) as usize
}

/// An architecture's paging format.
///
/// Entries are raw `u64`s; `0` is always the empty entry.
pub trait PagingArch: Copy {
    /// Number of levels; the root table is at this level, leaves of 4 KiB at
    /// level 1.
    fn levels(&self) -> u8;

    /// Checks that `va` can be translated in this paging mode.
    fn check_va(&self, va: VirtAddr) -> Result<(), AddrError>;

    /// Whether an entry at `level` may map a page directly (level 1 always
    /// can).
    fn leaf_level(&self, level: u8) -> bool;

    /// Whether the entry is present (maps a page or points to a table).
    fn is_present(&self, entry: u64) -> bool;

    /// Whether a present entry at `level` maps a page (rather than pointing
    /// to the next table).
    fn is_leaf(&self, entry: u64, level: u8) -> bool;

    /// A present entry at `level` mapping the page at `phys` with `flags`.
    fn leaf(&self, phys: PhysAddr, flags: MapFlags, level: u8) -> u64;

    /// The page a leaf entry at `level` maps.
    fn leaf_phys(&self, entry: u64, level: u8) -> PhysAddr;

    /// The flags of a leaf entry.
    fn leaf_flags(&self, entry: u64, level: u8) -> MapFlags;

    /// An entry pointing to the table at `phys`, permissive enough that the
    /// leaves below decide access.
    fn table(&self, phys: PhysAddr) -> u64;

    /// The table a non-leaf present entry points to.
    fn table_phys(&self, entry: u64) -> PhysAddr;

    /// Where a table entry keeps the number of non-empty entries of the
    /// table it points to: the lowest of ten bits that the MMU ignores in
    /// table entries, or `None` (the default) when the format has no such
    /// bits.
    ///
    /// The field holds the count plus one (0: not known, as in tables built
    /// by other code). With a count, an unmap that clears an entry knows at
    /// once whether the table emptied (Linux keeps the same count in the
    /// table page's `struct page`); without one, the engine looks at the
    /// table's entries instead. Entries from [`table`](Self::table) must
    /// leave the field zero.
    #[inline]
    fn table_count_shift(&self) -> Option<u32> {
        None
    }

    /// Entry bits of [`MapFlags::ACCESSED`] and [`MapFlags::DIRTY`].
    fn access_bits(&self) -> (u64, u64);

    /// A non-present entry holding `swap`.
    fn swap_entry(&self, swap: SwapSlot) -> u64;

    /// The swap entry held by a non-present entry, if any.
    fn swap_of(&self, entry: u64) -> Option<SwapSlot>;
}
