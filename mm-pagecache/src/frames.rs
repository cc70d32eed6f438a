//! The cache's way to a page's bytes: the crate's only unsafe code.

use mm_types::{FrameNumber, PhysMemory, PAGE_SIZE};

use crate::CacheError;

/// A page's bytes, to write.
///
/// # Safety
///
/// For `'a`, nothing else reads or writes the frame: the cache owns it
/// (fresh from the provider, or cached with the file's lock held, under
/// the contract of [`PageCache::new`](crate::PageCache::new)), and the
/// frame is not freed while the reference lives.
// The bytes are physical memory `mem` only leads to, not part of `mem`.
#[allow(clippy::mut_from_ref)]
pub(crate) unsafe fn page_mut<M: PhysMemory + ?Sized>(
    mem: &M,
    frame: FrameNumber,
) -> Result<&mut [u8; PAGE_SIZE], CacheError> {
    let addr = frame.start_address();
    let p = mem.translate(addr, PAGE_SIZE).map_err(|_| CacheError::Unreachable(addr))?;
    // SAFETY: `translate` checked that PAGE_SIZE bytes from `p` are
    // memory; the caller promises that nothing else touches them for `'a`.
    Ok(unsafe { &mut *p.as_ptr().cast::<[u8; PAGE_SIZE]>() })
}

/// A page's bytes, to read.
///
/// # Safety
///
/// For `'a`, nothing writes the frame and it is not freed (as
/// [`page_mut`], for reading).
pub(crate) unsafe fn page_ref<M: PhysMemory + ?Sized>(
    mem: &M,
    frame: FrameNumber,
) -> Result<&[u8; PAGE_SIZE], CacheError> {
    let addr = frame.start_address();
    let p = mem.translate(addr, PAGE_SIZE).map_err(|_| CacheError::Unreachable(addr))?;
    // SAFETY: `translate` checked the range; the caller promises that
    // nothing writes it for `'a`.
    Ok(unsafe { &*p.as_ptr().cast::<[u8; PAGE_SIZE]>() })
}
