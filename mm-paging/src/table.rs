//! Raw access to table pages. The only module that turns physical addresses
//! into references.
//!
//! Rule: a [`PageTable`](crate::PageTable) owns every table page reachable
//! from its root (the `from_root` contract), so references to them live as
//! long as the borrow of the `PageTable` they came through. Entries are
//! atomics because the MMU sets accessed and dirty bits concurrently.

use core::sync::atomic::AtomicU64;

use mm_types::{PhysAddr, PhysMemory, PAGE_SIZE};

use crate::arch::ENTRIES;

/// The entries of the table page at `phys`, by adding the accessor's linear
/// offset.
///
/// # Safety
///
/// `phys` is a table page owned by the caller's page table, which stays
/// borrowed for `'m`, and `offset` is the accessor's `linear_offset`.
#[inline]
pub(crate) unsafe fn entries_linear<'m>(offset: u64, phys: PhysAddr) -> &'m [AtomicU64; ENTRIES] {
    let p = core::ptr::with_exposed_provenance::<[AtomicU64; ENTRIES]>(phys.as_u64().wrapping_add(offset) as usize);
    // The caller's accessor maps memory linearly at `offset` (`PhysMemory::linear_offset` contract), and `phys` is a
    // table page of the caller's hierarchy, checked reachable through `translate` when it was allocated (or vouched
    // for by `from_root`).
    // SAFETY: so `p` is that page's 4096 bytes, aligned, valid and shared only atomically, as in `entries`.
    unsafe { &*p }
}

/// The entries of the table page at `phys`, through the checked accessor.
///
/// # Safety
///
/// As [`entries_linear`].
#[inline]
pub(crate) unsafe fn entries<M: PhysMemory>(mem: &M, phys: PhysAddr) -> &[AtomicU64; ENTRIES] {
    let p = match mem.translate(phys, PAGE_SIZE) {
        Ok(p) => p,
        Err(_) => unreachable_table(phys),
    };
    // `translate` gives 4096 bytes, page aligned (so aligned for `AtomicU64`), valid while `mem` is borrowed; any bit
    // pattern is a valid `AtomicU64`.
    // SAFETY: the page belongs to the caller's hierarchy, nothing frees it while borrowed, and all access is atomic.
    unsafe { &*p.as_ptr().cast::<[AtomicU64; ENTRIES]>() }
}

#[cold]
#[inline(never)]
fn unreachable_table(phys: PhysAddr) -> ! {
    panic!("page-table page {phys:#x} is not reachable through the physical memory accessor")
}
