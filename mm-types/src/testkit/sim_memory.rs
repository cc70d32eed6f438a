//! Simulated physical memory.

extern crate std;

use std::alloc::{self, Layout};
use std::sync::Arc;
use std::vec::Vec;

use core::ptr::NonNull;

use crate::{FrameBlock, FrameRange, PhysAccessError, PhysAddr, PhysMemory, PhysRange, PAGE_SIZE};

/// Simulated RAM covering `[base, base + size)` minus holes. Cloning gives
/// another handle to the same memory.
///
/// The buffer is allocated zeroed and lazily by the host (on Linux an
/// anonymous mapping of its own, so neither the allocator nor the kernel
/// zeroes more than the pages actually touched): a gigabyte of simulated
/// RAM, or a fresh simulated RAM for every fuzz input, costs only the pages
/// used.
#[derive(Clone)]
pub struct SimPhysMemory {
    inner: Arc<Inner>,
}

struct Inner {
    base: u64,
    size: u64,
    buf: NonNull<u8>,
    host: HostBuf,
    holes: Vec<PhysRange>,
}

/// How the buffer was obtained, to give it back the same way.
enum HostBuf {
    /// From the global allocator with this layout.
    Heap(Layout),
    /// An anonymous mapping starting at `.0` of `.1` bytes (holding `buf`).
    #[cfg(all(target_os = "linux", not(miri)))]
    Mapped(*mut u8, usize),
}

impl HostBuf {
    /// A zeroed buffer of `layout`: mapped where possible (only touched
    /// pages cost anything), else from the global allocator.
    fn zeroed(layout: Layout) -> (NonNull<u8>, HostBuf) {
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            let len = layout.size() + layout.align();
            let (prot, flags) =
                (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE);
            // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no existing memory.
            let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, -1, 0) };
            if p != libc::MAP_FAILED {
                let p = p.cast::<u8>();
                let skew = p.align_offset(layout.align());
                // SAFETY: `skew < align`, so `p + skew` and the `layout.size()` bytes after it lie
                // inside the `len`-byte mapping.
                let buf = unsafe { NonNull::new_unchecked(p.add(skew)) };
                return (buf, HostBuf::Mapped(p, len));
            }
        }
        // SAFETY: the caller passes a layout of non-zero size.
        let p = unsafe { alloc::alloc_zeroed(layout) };
        (NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout)), HostBuf::Heap(layout))
    }
}

// SAFETY: `buf` is owned by `Inner` (allocated in `build`, freed in `drop`) and only ever handed out
// as raw pointers; who writes through them is governed by `PhysMemory`'s contract, as with real RAM
// shared by CPUs.
unsafe impl Send for Inner {}
// SAFETY: as above; `Inner` itself is never mutated after construction.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        match self.host {
            HostBuf::Heap(layout) if layout.size() == 0 => {}
            // SAFETY: `buf` was allocated in `build` with exactly `layout`.
            HostBuf::Heap(layout) => unsafe { alloc::dealloc(self.buf.as_ptr(), layout) },
            #[cfg(all(target_os = "linux", not(miri)))]
            // SAFETY: `(p, len)` is the mapping made in `build`, unmapped only here.
            HostBuf::Mapped(p, len) => unsafe {
                libc::munmap(p.cast(), len);
            },
        }
    }
}

/// Largest alignment the host buffer is given (see [`SimPhysMemoryBuilder::build`]).
const SIM_ALIGN: u64 = 1 << 21;

/// Builder for [`SimPhysMemory`].
#[derive(Debug)]
pub struct SimPhysMemoryBuilder {
    base: PhysAddr,
    size: u64,
    holes: Vec<PhysRange>,
}

impl SimPhysMemoryBuilder {
    /// Makes `[addr, addr + len)` inaccessible (a hole in the memory map).
    ///
    /// # Panics
    ///
    /// If the hole is not page aligned or overflows.
    pub fn hole(mut self, addr: PhysAddr, len: u64) -> Self {
        assert!(addr.is_aligned(PAGE_SIZE as u64) && len % PAGE_SIZE as u64 == 0, "holes are page aligned");
        self.holes.push(PhysRange::new(addr, len).expect("hole overflows"));
        self
    }

    /// Allocates the simulated memory.
    ///
    /// The host buffer is aligned so that a physical address and its host
    /// address agree modulo 2 MiB (or modulo the largest power of two
    /// dividing `base`, if smaller): code that relies on a naturally aligned
    /// frame block being naturally aligned in the direct map, as slab
    /// allocators do, works as it would on a kernel's direct map.
    pub fn build(self) -> SimPhysMemory {
        let base = self.base.as_u64();
        let align = if base == 0 { SIM_ALIGN } else { SIM_ALIGN.min(1 << base.trailing_zeros()) };
        let layout = Layout::from_size_align(self.size as usize, align as usize).expect("size fits the host");
        let (buf, host) = if self.size == 0 {
            (NonNull::dangling(), HostBuf::Heap(Layout::new::<()>()))
        } else {
            HostBuf::zeroed(layout)
        };
        SimPhysMemory {
            inner: Arc::new(Inner { base: self.base.as_u64(), size: self.size, buf, host, holes: self.holes }),
        }
    }
}

impl SimPhysMemory {
    /// Starts describing `size` bytes of RAM at `base`.
    ///
    /// # Panics
    ///
    /// If `base` or `size` is not page aligned, or the range leaves the
    /// physical address space.
    pub fn builder(base: PhysAddr, size: u64) -> SimPhysMemoryBuilder {
        assert!(base.is_aligned(PAGE_SIZE as u64) && size % PAGE_SIZE as u64 == 0, "RAM is page aligned");
        PhysRange::new(base, size).expect("RAM range overflows");
        SimPhysMemoryBuilder { base, size, holes: Vec::new() }
    }

    /// `size` bytes of RAM at `base` without holes.
    pub fn new(base: PhysAddr, size: u64) -> Self {
        SimPhysMemory::builder(base, size).build()
    }

    /// The whole simulated range, holes included.
    pub fn span(&self) -> PhysRange {
        PhysRange::new(PhysAddr::new(self.inner.base).expect("checked"), self.inner.size).expect("checked")
    }

    /// The usable RAM: the span minus the holes, in address order (what a
    /// boot memory map would list).
    pub fn ram_ranges(&self) -> Vec<PhysRange> {
        let mut out = std::vec![self.span()];
        for hole in &self.inner.holes {
            out = out
                .into_iter()
                .flat_map(|r| {
                    let (a, b) = r.subtract(hole);
                    [a, b]
                })
                .filter(|r| !r.is_empty())
                .collect();
        }
        out.sort_by_key(|r| r.start());
        out
    }

    /// The constant such that physical address `p` of this RAM lives at host
    /// address `p + offset` (wrapping), for code that wants a direct-map
    /// offset, such as the `x86_64` crate's `OffsetPageTable`. The buffer's
    /// provenance is exposed, so pointers made from `p + offset` with
    /// `core::ptr::with_exposed_provenance` may access it.
    pub fn translate_offset(&self) -> u64 {
        (self.inner.buf.as_ptr().expose_provenance() as u64).wrapping_sub(self.inner.base)
    }

    /// The usable RAM as frame ranges.
    pub fn frame_ranges(&self) -> Vec<FrameRange> {
        self.ram_ranges().iter().map(|r| r.frames_inward()).filter(|r| !r.is_empty()).collect()
    }
}

impl core::fmt::Debug for SimPhysMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimPhysMemory").field("span", &self.span()).field("holes", &self.inner.holes).finish()
    }
}

// SAFETY: `translate` returns pointers into the owned buffer only for ranges fully inside the span and
// outside every hole (1); the buffer lives as long as any handle (Arc) and address -> pointer is a
// fixed offset, so the same address always gives the same byte and distinct addresses distinct bytes
// (2); base and buffer are both page aligned, so alignment is preserved (3); without holes every
// successful translation is `addr + translate_offset()` (4).
unsafe impl PhysMemory for SimPhysMemory {
    /// Linear (buffer address minus base) when there are no holes; with
    /// holes, every access must go through the checked `translate`.
    #[inline]
    fn linear_offset(&self) -> Option<u64> {
        self.inner.holes.is_empty().then(|| self.translate_offset())
    }

    #[inline]
    fn translate(&self, addr: PhysAddr, len: usize) -> Result<NonNull<u8>, PhysAccessError> {
        let inner = &*self.inner;
        let err = PhysAccessError::Unbacked { addr, len };
        let offset = addr.as_u64().wrapping_sub(inner.base);
        // One comparison covers "below base" too: the subtraction wraps to a
        // huge offset. `len` is at most isize::MAX, so the sum cannot wrap
        // for offsets inside the span.
        if offset > inner.size || len as u64 > inner.size - offset {
            return Err(err);
        }
        if len > 0 && !inner.holes.is_empty() {
            let want = PhysRange::new(addr, len as u64).map_err(|_| err)?;
            if inner.holes.iter().any(|h| h.overlaps(&want)) {
                return Err(err);
            }
        }
        // SAFETY: `offset + len <= size`, so the pointer stays inside (or one past the end of) the buffer allocation.
        Ok(unsafe { inner.buf.add(offset as usize) })
    }

    /// Blocks of eight frames or more (`ZERO_BY_DISCARD`), in a buffer of its own
    /// mapping, are given back to the host (`MADV_DONTNEED`) instead of
    /// being written: the host then reads them as zeros and maps a page
    /// again only when it is written. Filling a 256 KiB block costs a
    /// memset and, on fresh memory, a host page fault per frame; the
    /// models that allocate with `ZERO` and look at a few bytes of each
    /// block spent most of their time there.
    unsafe fn zero_block(&self, block: FrameBlock) -> Result<(), PhysAccessError> {
        let len = block.bytes() as usize;
        let ptr = self.translate(block.start_address(), len)?;
        #[cfg(all(target_os = "linux", not(miri)))]
        if matches!(self.inner.host, HostBuf::Mapped(..)) && block.frames() >= ZERO_BY_DISCARD {
            // SAFETY: `translate` made `[ptr, ptr + len)` part of this memory's own private anonymous
            // mapping, frame (so host page) aligned (contract 3) and a whole number of pages; the caller
            // owns the block, so nobody reads or writes it meanwhile, and afterwards the host reads those
            // pages as zeros, which is what a zeroed block is.
            if unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) } == 0 {
                return Ok(());
            }
        }
        // SAFETY: `translate` made `ptr` valid for `len` bytes, and the caller owns the block: nobody else sees it.
        unsafe { ptr.as_ptr().write_bytes(0, len) };
        Ok(())
    }
}

/// Frames from which [`SimPhysMemory`] zeroes a block by giving its pages
/// back to the host rather than writing them (a system call costs about
/// what writing a few pages does).
#[cfg(all(target_os = "linux", not(miri)))]
const ZERO_BY_DISCARD: u64 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    fn pa(a: u64) -> PhysAddr {
        PhysAddr::new(a).unwrap()
    }

    #[test]
    fn holes_are_not_accessible() {
        let mem = SimPhysMemory::builder(pa(0x10_0000), 0x10_0000).hole(pa(0x14_0000), 0x2000).build();
        assert!(mem.translate(pa(0x10_0000), 8).is_ok());
        assert!(mem.translate(pa(0x13_f000), 0x1000).is_ok());
        assert!(mem.translate(pa(0x13_f000), 0x1001).is_err());
        assert!(mem.translate(pa(0x14_1fff), 1).is_err());
        assert!(mem.translate(pa(0x14_2000), 1).is_ok());
        assert_eq!(mem.translate(pa(0xf_ffff), 1), Err(PhysAccessError::Unbacked { addr: pa(0xf_ffff), len: 1 }));
        assert!(mem.translate(pa(0x1f_ffff), 1).is_ok());
        assert!(mem.translate(pa(0x1f_ffff), 2).is_err());
        let ram = mem.ram_ranges();
        assert_eq!(ram.len(), 2);
        assert_eq!((ram[0].start(), ram[0].len()), (pa(0x10_0000), 0x4_0000));
        assert_eq!((ram[1].start(), ram[1].len()), (pa(0x14_2000), 0xb_e000));
        assert_eq!(mem.frame_ranges().iter().map(|r| r.len()).sum::<u64>(), 256 - 2);
    }

    #[test]
    fn zeroed_blocks_read_as_zeros_and_leave_their_neighbours() {
        use crate::{FrameNumber, Order};
        let mem = SimPhysMemory::new(pa(0x10_0000), 0x10_0000);
        for order in [0u8, 3, 5] {
            let block = FrameBlock::new(FrameNumber::new(0x140).unwrap(), Order::new(order).unwrap()).unwrap();
            let (start, end) = (block.start_address().as_u64(), block.start_address().as_u64() + block.bytes());
            // SAFETY: the test owns all of the simulated memory.
            unsafe {
                for a in [start - 8, start, end - 8, end] {
                    mem.write_bytes(pa(a), &[0xa5; 8]).unwrap();
                }
                mem.zero_block(block).unwrap();
                let mut out = [0u8; 8];
                for (a, want) in
                    [(start - 8, 0xa5), (start, 0), (start + block.bytes() / 2, 0), (end - 8, 0), (end, 0xa5)]
                {
                    mem.read_bytes(pa(a), &mut out).unwrap();
                    assert_eq!(out, [want; 8], "order {order}, byte {a:#x}");
                }
                // Written again after the zeroing, the block keeps what it is given.
                mem.write_bytes(pa(start), &[7; 8]).unwrap();
                mem.read_bytes(pa(start), &mut out).unwrap();
                assert_eq!(out, [7; 8]);
            }
        }
    }

    #[test]
    fn reads_see_writes_and_clones_share() {
        let mem = SimPhysMemory::new(pa(0x1000), 0x3000);
        let other = mem.clone();
        // SAFETY: the test owns all of the simulated memory.
        unsafe {
            mem.write_bytes(pa(0x1ffe), &[1, 2, 3, 4]).unwrap();
            let mut out = [0u8; 4];
            other.read_bytes(pa(0x1ffe), &mut out).unwrap();
            assert_eq!(out, [1, 2, 3, 4]);
            other.copy_frame(pa(0x1000), pa(0x3000)).unwrap();
            other.read_bytes(pa(0x3ffe), &mut out[..2]).unwrap();
            assert_eq!(&out[..2], &[1, 2]);
            assert!(mem.write_bytes(pa(0x3fff), &[0, 0]).is_err());
        }
        let p = mem.translate(pa(0x2000), 1).unwrap();
        assert_eq!(p.as_ptr() as usize % PAGE_SIZE, 0);
    }
}
