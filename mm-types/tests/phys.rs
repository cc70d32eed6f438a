//! `PhysMemory`'s provided helpers on the host test kit (MODEL.md 12).

use core::ptr::NonNull;

use mm_types::testkit::SimPhysMemory;
use mm_types::{PhysAccessError, PhysAddr, PhysMemory, PAGE_SIZE};

fn pa(a: u64) -> PhysAddr {
    PhysAddr::new(a).unwrap()
}

/// Four frames at 0x1000, frame `i` filled with the byte `i + 1`.
fn four_frames() -> SimPhysMemory {
    let mem = SimPhysMemory::new(pa(0x1000), 4 * PAGE_SIZE as u64);
    for i in 0..4u8 {
        // SAFETY: the test owns all of the simulated memory.
        unsafe { mem.write_bytes(pa(0x1000 * (i as u64 + 1)), &[i + 1; PAGE_SIZE]).unwrap() };
    }
    mem
}

fn frame_bytes(mem: &SimPhysMemory, addr: u64) -> Vec<u8> {
    let mut out = vec![0u8; PAGE_SIZE];
    // SAFETY: the test owns all of the simulated memory.
    unsafe { mem.read_bytes(pa(addr), &mut out).unwrap() };
    out
}

/// MODEL 12: misaligned or identical frames are refused before any byte is
/// copied (a misaligned pair can overlap, which `copy_nonoverlapping` must
/// never see).
#[test]
fn copy_frame_refuses_misaligned_and_overlapping_frames() {
    let mem = four_frames();
    let before: Vec<Vec<u8>> = (1..=4).map(|i| frame_bytes(&mem, i * 0x1000)).collect();
    // SAFETY: the test owns all of the simulated memory.
    unsafe {
        assert_eq!(
            mem.copy_frame(pa(0x1000), pa(0x1800)),
            Err(PhysAccessError::MisalignedFrame { addr: pa(0x1800) }),
            "half a frame apart: the two ranges overlap"
        );
        assert_eq!(mem.copy_frame(pa(0x2010), pa(0x3000)), Err(PhysAccessError::MisalignedFrame { addr: pa(0x2010) }));
        assert_eq!(
            mem.copy_frame(pa(0x2000), pa(0x2000)),
            Err(PhysAccessError::OverlappingFrames { src: pa(0x2000), dst: pa(0x2000) })
        );
        assert!(matches!(mem.copy_frame(pa(0x4000), pa(0x5000)), Err(PhysAccessError::Unbacked { .. })));
    }
    let after: Vec<Vec<u8>> = (1..=4).map(|i| frame_bytes(&mem, i * 0x1000)).collect();
    assert!(before == after, "a refused copy wrote something");
    // A proper copy still works.
    // SAFETY: the test owns all of the simulated memory.
    unsafe { mem.copy_frame(pa(0x1000), pa(0x4000)).unwrap() };
    assert!(frame_bytes(&mem, 0x4000).iter().all(|&b| b == 1));
    let e = PhysAccessError::OverlappingFrames { src: pa(0x2000), dst: pa(0x2000) };
    assert!(e.to_string().contains("overlap"), "{e}");
    assert!(PhysAccessError::MisalignedFrame { addr: pa(0x1800) }.to_string().contains("0x1800"));
}

/// An accessor that breaks trait contract 2 by giving every address the
/// same frame: `copy_frame` checks the pointers and refuses.
struct Aliasing(SimPhysMemory);

// SAFETY: deliberately false for contract 2 (every address maps to the first frame), to show that `copy_frame` does not
// rely on it for soundness; pointers are valid for `len <= PAGE_SIZE` bytes (contract 1) and aligned (3). Only
// `copy_frame`, which checks for overlap, is called on it.
unsafe impl PhysMemory for Aliasing {
    fn translate(&self, addr: PhysAddr, len: usize) -> Result<NonNull<u8>, PhysAccessError> {
        if len > PAGE_SIZE {
            return Err(PhysAccessError::Unbacked { addr, len });
        }
        self.0.translate(pa(0x1000), len)
    }
}

#[test]
fn copy_frame_refuses_an_accessor_that_aliases_frames() {
    let mem = Aliasing(four_frames());
    // SAFETY: the test owns all of the simulated memory.
    let r = unsafe { mem.copy_frame(pa(0x2000), pa(0x3000)) };
    assert_eq!(r, Err(PhysAccessError::OverlappingFrames { src: pa(0x2000), dst: pa(0x3000) }));
}
