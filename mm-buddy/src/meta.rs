//! Carving metadata out of the memory being added.

use core::sync::atomic::AtomicU8;

use mm_types::{PhysAddr, PhysMemory, PAGE_SHIFT};

/// Zeroes `frames` frames starting at frame `start` and returns them as the
/// metadata byte array of a region.
///
/// # Safety
///
/// The frames are RAM that nobody else uses for the lifetime `'a`, reachable
/// through `mem` for all of `'a`.
pub(crate) unsafe fn carve<'a, M: PhysMemory>(mem: &M, start: u64, frames: u64) -> &'a [AtomicU8] {
    let len = (frames << PAGE_SHIFT) as usize;
    let addr = PhysAddr::new(start << PAGE_SHIFT).expect("managed frames are in the physical range");
    let ptr = mem.translate(addr, len).expect("reachability was checked by the caller");
    // SAFETY: valid for `len` bytes (`PhysMemory` contract) and unused by anyone else for `'a` (caller's contract).
    unsafe { ptr.as_ptr().write_bytes(0, len) };
    // `AtomicU8` has the size and alignment of `u8`; the bytes are initialised (zeroed above), valid and exclusively
    // ours for `'a`.
    // SAFETY: are only accessed through these atomics from now on.
    unsafe { core::slice::from_raw_parts(ptr.as_ptr().cast::<AtomicU8>(), len) }
}
