//! Contracts a kernel relies on, each once broken: refused operations
//! change nothing, the kernel's borrowed tables stay out of reach, pins
//! never free a frame someone else owns, and failures keep their names.

use std::sync::Arc;

use mm_paging::{MapFlags, PageTable, X86_64};
use mm_types::{PageKind, PageSize, PhysAddr, VirtAddr};
use mm_vma::sim::SimWorld;
use mm_vma::{
    Access, AddressSpace, FaultError, Hooks, Layout, MapRequest, MmContext, PinError, Placement, Protection, Remap,
    SpaceError,
};

const P: u64 = 4096;
const RW: Protection = Protection::READ.union(Protection::WRITE);

fn va(a: u64) -> VirtAddr {
    VirtAddr::new(a).unwrap()
}

fn world() -> SimWorld {
    SimWorld::new(if cfg!(miri) { 1 << 20 } else { 4 << 20 })
}

/// A layout past the canonical lower half, or an empty or misaligned one,
/// is refused when the space is made (it used to panic in the fault path).
#[test]
fn layouts_outside_the_canonical_lower_half_are_refused() {
    let w = world();
    for (layout, what) in [
        (Layout { high: va(1 << 48), ..Layout::X86_64 }, "past 4-level canonical"),
        (Layout { high: va(0xffff_8000_0000_1000), ..Layout::X86_64 }, "upper half"),
        // The first upper-half address (5-level): no lower-half address
        // lies just below it.
        (Layout { high: va(0xff00_0000_0000_0000), ..Layout::X86_64 }, "upper half, above the hole"),
        (Layout { low: va(0x2000), high: va(0x2000), ..Layout::X86_64 }, "empty"),
        (Layout { low: va(0x1001), ..Layout::X86_64 }, "misaligned"),
        (Layout { low: VirtAddr::ZERO, ..Layout::X86_64 }, "page 0"),
        (Layout { brk_base: va(1 << 47), ..Layout::X86_64 }, "brk outside"),
    ] {
        let r = AddressSpace::new(&w.mm, layout);
        assert!(matches!(r, Err(SpaceError::BadLayout { .. })), "{what}: {:?}", r.map(|_| ()));
    }
    assert!(AddressSpace::new(&w.mm, Layout::X86_64).is_ok());
    assert_eq!(w.mm.tracked_frames(), 0);
}

/// A user range that overlaps a root entry borrowed from the kernel is
/// refused; one above it cannot reach the kernel's entry with MAP_FIXED.
#[test]
fn borrowed_kernel_entries_are_out_of_reach() {
    let w = world();
    // The "kernel": its own table with a page in root entry 0.
    let mut kernel = PageTable::new(X86_64::FOUR_LEVEL, w.ram.clone(), w.frames.clone()).unwrap();
    let kpage = VirtAddr::new(0x20_0000).unwrap();
    let kframe = PhysAddr::new(0x10_0000).unwrap();
    kernel.map(kpage, kframe, PageSize::Size4KiB, MapFlags::READ | MapFlags::WRITE).unwrap().ignore();
    // SAFETY: `kernel` outlives every space of `mm` (dropped at the end of the test, after them).
    let mm = unsafe {
        MmContext::with_kernel_entries(
            X86_64::FOUR_LEVEL,
            w.ram.clone(),
            w.frames.clone(),
            Hooks::default(),
            kernel.root(),
            [0],
        )
    }
    .unwrap();
    // The default layout starts at 64 KiB: inside entry 0.
    let r = AddressSpace::new(&mm, Layout::X86_64);
    assert!(matches!(r, Err(SpaceError::BadLayout { .. })), "{:?}", r.map(|_| ()));
    let layout = Layout { low: va(1 << 39), ..Layout::X86_64 };
    let mut s = AddressSpace::new(&mm, layout).unwrap();
    let fixed = MapRequest::anonymous(P, RW).at(Placement::Fixed(va(0x20_0000)));
    assert_eq!(s.mmap(fixed), Err(SpaceError::OutOfRange));
    assert_eq!(s.munmap(va(0x20_0000), P), Err(SpaceError::OutOfRange));
    let a = s.mmap(MapRequest::anonymous(P, RW)).unwrap();
    s.write_user(a, &[1]).unwrap();
    drop(s);
    // The kernel's page is still mapped.
    assert_eq!(kernel.translate(kpage).map(|t| t.frame), Some(kframe));
    drop(mm);
    drop(kernel);
}

/// A fault the stack's rights refuse leaves the stack as it was.
#[test]
fn refused_fault_does_not_grow_the_stack() {
    let w = world();
    let mut s = w.space();
    let top = va(0x7000_0000_0000);
    let start = s.map_stack(top, 2 * P).unwrap();
    let r = s.fault(start - P, Access::Execute);
    assert!(matches!(r, Err(FaultError::Protection { .. })), "{r:?}");
    assert_eq!(s.vmas().find(start).unwrap().start, start, "the stack did not grow");
    assert!(s.vmas().find(start - P).is_none());
    s.write_user(start - P, &[1]).unwrap();
    assert_eq!(s.vmas().find(start - P).unwrap().start, start - P);
}

/// A fixed-target mremap that fails for lack of a table page leaves the
/// source whole, shrinking or not.
#[test]
fn failed_fixed_mremap_keeps_the_source() {
    for (old_len, new_len) in [(4 * P, 2 * P), (2 * P, 2 * P)] {
        let w = world();
        let mut s = w.space();
        let a = s.mmap(MapRequest::anonymous(old_len, RW)).unwrap();
        for i in 0..old_len / P {
            s.write_user(a + i * P, &[i as u8 + 1]).unwrap();
        }
        // Far away: the move needs new table pages; the first one fails.
        let to = va(0x1000_0000_0000);
        w.frames.fail_nth_allocation(1);
        assert_eq!(s.mremap(a, old_len, new_len, Remap::Fixed(to)), Err(SpaceError::OutOfMemory));
        for i in 0..old_len / P {
            let mut b = [0];
            s.read_user(a + i * P, &mut b).unwrap();
            assert_eq!(b[0], i as u8 + 1, "page {i} of {old_len:#x} -> {new_len:#x}");
        }
        assert_eq!(s.vmas().find(a).unwrap().end, a + old_len);
        s.check().unwrap();
        // And it works once memory is there.
        assert_eq!(s.mremap(a, old_len, new_len, Remap::Fixed(to)), Ok(to));
        let mut b = [0];
        s.read_user(to + P, &mut b).unwrap();
        assert_eq!(b[0], 2);
        assert!(s.vmas().find(a + new_len).is_none(), "the tail went once the move succeeded");
    }
}

/// Pins: the zero page and frames nobody maps are refused by `pin`; a
/// pager's page tracked by `pin_new` is never freed by its unpin.
#[test]
fn pins_never_free_what_they_do_not_own() {
    let w = world();
    let mut s = w.space();
    let a = s.mmap(MapRequest::anonymous(2 * P, RW)).unwrap();
    let zero = s.resolve(a, Access::Read).unwrap();
    assert_eq!(zero, w.mm.zero_page());
    assert_eq!(w.mm.pin(zero), Err(PinError::ZeroPage));
    assert_eq!(w.mm.pin_new(zero, PageKind::Anon), Err(PinError::ZeroPage));
    let free = w.free_frame_count();
    let stranger = PhysAddr::new(0x30_0000).unwrap();
    assert_eq!(w.mm.pin(stranger), Err(PinError::Untracked(stranger)));
    w.mm.pin_new(stranger, PageKind::File).unwrap();
    assert!(!w.mm.unpin(stranger), "a pager's page is not freed");
    assert_eq!(w.free_frame_count(), free);
    // A mapped anonymous page: pinned, unmapped, freed by the last unpin.
    s.write_user(a + P, &[1]).unwrap();
    let f = s.resolve(a + P, Access::Read).unwrap();
    w.mm.pin(f).unwrap();
    s.munmap(a + P, P).unwrap();
    assert_eq!(w.free_frame_count(), free - 1);
    assert!(w.mm.unpin(f));
    assert_eq!(w.free_frame_count(), free);
    drop(s);
    let _ = Arc::strong_count(&w.mm);
}

/// Addresses above the user range, in the upper half, or ranges that run
/// into the non-canonical hole are refused with the errors of a user range
/// overrun; only a range that wraps the 64-bit space is a bad range.
#[test]
fn addresses_past_the_user_range_keep_their_errors() {
    let w = world();
    let mut s = w.space();
    let high = Layout::X86_64.high;
    let kernel = va(0xffff_8000_0000_0000);
    // Canonical under 5-level paging, above the 4-level user range.
    let above = va(0x00ff_ffff_ffff_f000);
    for a in [high, above, kernel] {
        assert_eq!(s.fault(a, Access::Read), Err(FaultError::NoMapping { addr: a }));
        assert_eq!(s.write_user(a, &[1]), Err(FaultError::NoMapping { addr: a }));
        assert_eq!(s.mmap(MapRequest::anonymous(P, RW).at(Placement::Fixed(a))), Err(SpaceError::OutOfRange));
        assert_eq!(s.munmap(a, P), Err(SpaceError::OutOfRange));
        assert!(!s.is_evictable(a));
    }
    // From inside the user range across its end, and across the end of the
    // lower half (without wrapping u64): out of range.
    let last = high - P;
    assert_eq!(s.munmap(last, 2 * P), Err(SpaceError::OutOfRange));
    assert_eq!(s.mprotect(last, 1 << 60, Protection::READ), Err(SpaceError::OutOfRange));
    // A length that wraps the 64-bit address space: a bad range.
    assert_eq!(s.munmap(kernel, 1 << 63), Err(SpaceError::Vma(mm_vma::VmaError::BadRange)));
    // A hint up there is ignored; a stack cannot end up there.
    let a = s.mmap(MapRequest::anonymous(P, RW).at(Placement::Hint(kernel))).unwrap();
    assert!(a < high);
    assert_eq!(s.map_stack(kernel, P), Err(SpaceError::OutOfRange));
    // Growing a mapping in place past the end of the lower half: refused
    // as a lack of room, not as a malformed request.
    let top = s.mmap(MapRequest::anonymous(P, RW).at(Placement::Fixed(last))).unwrap();
    assert_eq!(s.mremap(top, P, 1 << 60, Remap::InPlace), Err(SpaceError::NoSpace));
    s.check().unwrap();
}
