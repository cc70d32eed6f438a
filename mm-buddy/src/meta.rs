//! Carving metadata out of the memory being added.

use core::sync::atomic::{AtomicU32, AtomicU8};

use mm_types::{PhysAddr, PhysMemory, PAGE_SHIFT};

/// Zeroes `frames` frames starting at frame `start` and returns them as the
/// metadata of a region: `link_words` link words (at the start, so aligned),
/// then the rest as bytes.
///
/// # Safety
///
/// The frames are RAM that nobody else uses for the lifetime `'a`, reachable
/// through `mem` for all of `'a`, and hold at least `4 * link_words` bytes.
pub(crate) unsafe fn carve<'a, M: PhysMemory>(
    mem: &M,
    start: u64,
    frames: u64,
    link_words: usize,
) -> (&'a [AtomicU32], &'a [AtomicU8]) {
    let len = (frames << PAGE_SHIFT) as usize;
    let addr = PhysAddr::new(start << PAGE_SHIFT).expect("managed frames are in the physical range");
    let ptr = mem.translate(addr, len).expect("reachability was checked by the caller");
    let link_bytes = 4 * link_words;
    assert!(link_bytes <= len, "metadata frames hold the links");
    // SAFETY: valid for `len` bytes (`PhysMemory` contract) and unused by anyone else for `'a` (caller's contract).
    unsafe { ptr.as_ptr().write_bytes(0, len) };
    let base = ptr.as_ptr();
    // The pointer is frame aligned (`PhysMemory` contract 3: an aligned frame address gives an aligned pointer), so
    // aligned for
    // `AtomicU32` (size and alignment 4, any bit pattern valid); the first `link_bytes` bytes are initialised
    // (zeroed above), valid and exclusively ours for `'a`, and only accessed through these atomics from now on.
    // SAFETY: as stated.
    let links = unsafe { core::slice::from_raw_parts(base.cast::<AtomicU32>(), link_words) };
    // `AtomicU8` has the size and alignment of `u8`; the bytes after the links, disjoint from them, are initialised,
    // valid and exclusively ours for `'a`, and only accessed through these atomics from now on.
    // SAFETY: `link_bytes <= len` (asserted), so the range is inside the carved frames.
    let bytes = unsafe { core::slice::from_raw_parts(base.add(link_bytes).cast::<AtomicU8>(), len - link_bytes) };
    (links, bytes)
}
