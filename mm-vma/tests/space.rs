//! Address spaces on the host simulation: mmap family, faults, fork with
//! copy-on-write, swap, pager, reverse map. Comments name MODEL.md sections.

use std::sync::atomic::Ordering;

use mm_types::VirtAddr;
use mm_vma::sim::{SimPager, SimSpace, SimWorld};
use mm_vma::{
    Access, Backing, FaultError, FaultKind, Layout, MapRequest, Placement, Protection, Remap, SpaceError, VmaError,
    VmaFlags,
};

const P: u64 = 4096;
const RW: Protection = Protection::READ.union(Protection::WRITE);
const R: Protection = Protection::READ;

fn va(a: u64) -> VirtAddr {
    VirtAddr::new(a).unwrap()
}

fn world() -> SimWorld {
    SimWorld::new(if cfg!(miri) { 2 << 20 } else { 16 << 20 })
}

fn fill(s: &mut SimSpace, addr: VirtAddr, pages: u64, tag: u8) {
    for i in 0..pages {
        let v = [tag, i as u8, (i >> 8) as u8, 0xa5];
        s.write_user(addr + i * P + 100, &v).unwrap();
    }
}

fn holds(s: &mut SimSpace, addr: VirtAddr, pages: u64, tag: u8) -> bool {
    (0..pages).all(|i| {
        let mut v = [0u8; 4];
        s.read_user(addr + i * P + 100, &mut v).unwrap();
        v == [tag, i as u8, (i >> 8) as u8, 0xa5]
    })
}

fn read_byte(s: &mut SimSpace, addr: VirtAddr) -> Result<u8, FaultError> {
    let mut b = [0u8];
    s.read_user(addr, &mut b).map(|_| b[0])
}

/// Every frame is back once the spaces are gone.
fn assert_no_leak(w: &SimWorld, free_at_start: u64) {
    assert_eq!(w.mm.tracked_frames(), 0, "reverse map empty");
    assert_eq!(w.free_frame_count() + w.pager.cached() as u64, free_at_start);
}

/// MODEL 13: read faults map the zero page; writes allocate; data stays.
#[test]
fn demand_zero_and_the_zero_page() {
    let w = world();
    let free = w.free_frame_count();
    let mut s = w.space();
    let a = s.mmap(MapRequest::anonymous(8 * P, RW)).unwrap();
    assert!(a.is_aligned(P));
    assert!((Layout::X86_64.mmap_base - 16 * P..Layout::X86_64.mmap_base).contains(&a), "top-down below mmap_base");
    assert_eq!(read_byte(&mut s, a + 5).unwrap(), 0);
    assert_eq!(s.fault(a + P, Access::Read), Ok(FaultKind::ZeroPage));
    assert_eq!(s.counts().zero, 2);
    assert_eq!(s.counts().resident, 0);
    // Writing a zero-page mapping copies (from zeros); an untouched page is
    // allocated directly.
    assert_eq!(s.fault(a, Access::Write), Ok(FaultKind::CowCopied));
    assert_eq!(s.fault(a + 2 * P, Access::Write), Ok(FaultKind::DemandZero));
    assert_eq!(s.fault(a + 2 * P, Access::Write), Ok(FaultKind::Spurious));
    fill(&mut s, a, 8, 1);
    assert!(holds(&mut s, a, 8, 1));
    assert_eq!(s.counts().resident, 8);
    assert_eq!(s.counts().zero, 0);
    s.check().unwrap();
    w.mm.check_rmap(&[&s]).unwrap();
    drop(s);
    assert_no_leak(&w, free);
}

/// MODEL 14: every illegal access faults with its reason.
#[test]
fn segfault_reasons() {
    let w = world();
    let mut s = w.space();
    let ro = s.mmap(MapRequest::anonymous(P, R)).unwrap();
    let none = s.mmap(MapRequest::anonymous(P, Protection::empty())).unwrap();
    assert_eq!(read_byte(&mut s, VirtAddr::ZERO), Err(FaultError::NoMapping { addr: VirtAddr::ZERO }));
    assert!(matches!(s.write_user(ro, &[1]), Err(FaultError::Protection { access: Access::Write, .. })));
    assert!(matches!(read_byte(&mut s, none), Err(FaultError::Protection { access: Access::Read, .. })));
    assert!(matches!(s.fault(ro, Access::Execute), Err(FaultError::Protection { access: Access::Execute, .. })));
    assert!(s.fault(ro, Access::Write).unwrap_err().is_segfault());
    assert!(!FaultError::OutOfMemory.is_segfault());
    assert_eq!(w.mm.fault_stats().refused, 5);
    // PROT_NONE pages that were mapped stay mapped for the kernel only.
    s.mprotect(ro, P, Protection::empty()).unwrap();
    assert!(read_byte(&mut s, ro).is_err());
    s.check().unwrap();
}

/// MODEL 15: munmap of any sub-range splits VMAs and frees exactly those
/// pages; one TLB flush per call.
#[test]
fn munmap_splits_and_frees() {
    let w = world();
    let free = w.free_frame_count();
    let mut s = w.space();
    let a = s.mmap(MapRequest::anonymous(16 * P, RW)).unwrap();
    fill(&mut s, a, 16, 2);
    let before = w.free_frame_count();
    let flushes = w.tlb.flushes.load(Ordering::Relaxed);
    s.munmap(a + 4 * P, 3 * P).unwrap();
    assert_eq!(w.tlb.flushes.load(Ordering::Relaxed), flushes + 1, "one flush for the call");
    assert_eq!(w.free_frame_count(), before + 3);
    assert_eq!(s.vmas().count(), 2);
    assert_eq!(read_byte(&mut s, a + 5 * P), Err(FaultError::NoMapping { addr: a + 5 * P }));
    s.munmap(a, P).unwrap(); // start
    s.munmap(a + 15 * P, P).unwrap(); // end
    let spans: Vec<(u64, u64)> = s.vmas().iter().map(|v| (v.start - a, v.end - a)).collect();
    assert_eq!(spans, [(P, 4 * P), (7 * P, 15 * P)]);
    for i in [1u64, 2, 3, 7, 14] {
        let mut v = [0u8; 4];
        s.read_user(a + i * P + 100, &mut v).unwrap();
        assert_eq!(v, [2, i as u8, 0, 0xa5], "page {i} intact");
    }
    // An unmapped range is fine; a misaligned start is not.
    s.munmap(a, 16 * P).unwrap();
    assert_eq!(s.vmas().count(), 0);
    assert!(matches!(s.munmap(a + 1, P), Err(SpaceError::Vma(VmaError::Unaligned(_)))));
    s.check().unwrap();
    drop(s);
    assert_no_leak(&w, free);
}

/// MODEL 16: mprotect splits, changes the pages, and merges back.
#[test]
fn mprotect_changes_pages_and_merges() {
    let w = world();
    let mut s = w.space();
    let a = s.mmap(MapRequest::anonymous(8 * P, RW)).unwrap();
    fill(&mut s, a, 8, 3);
    s.mprotect(a + 2 * P, 2 * P, R).unwrap();
    assert_eq!(s.vmas().count(), 3);
    assert!(matches!(s.write_user(a + 2 * P, &[0]), Err(FaultError::Protection { .. })));
    s.write_user(a + P, &[9]).unwrap();
    s.mprotect(a + 2 * P, 2 * P, RW).unwrap();
    assert_eq!(s.vmas().count(), 1, "merged back");
    s.write_user(a + 2 * P, &[9]).unwrap();
    assert!(matches!(s.mprotect(a, 20 * P, R), Err(SpaceError::Vma(VmaError::NotMapped(_)))));
    s.check().unwrap();
}

/// MODEL 17: copy-on-write after fork; the data is always right.
#[test]
fn fork_copy_on_write_cases() {
    let w = world();
    let free = w.free_frame_count();
    let mut parent = w.space();
    let a = parent.mmap(MapRequest::anonymous(4 * P, RW)).unwrap();
    fill(&mut parent, a, 4, 1);
    let resident = w.free_frame_count();
    let mut child = parent.fork().unwrap();
    // Fork copies page tables, not pages.
    assert_eq!(resident - w.free_frame_count(), child.page_table().table_pages());
    // Write in the parent: the child keeps the old data.
    parent.write_user(a + 100, &[7, 0, 0, 0xa5]).unwrap();
    assert!(holds(&mut child, a, 4, 1));
    assert_eq!(read_byte(&mut parent, a + 100).unwrap(), 7);
    // Write in the child: the parent keeps its data.
    child.write_user(a + P + 100, &[8]).unwrap();
    assert_eq!(read_byte(&mut parent, a + P + 100).unwrap(), 1);
    assert_eq!(read_byte(&mut child, a + P + 100).unwrap(), 8);
    let stats = w.mm.fault_stats();
    assert_eq!(stats.cow_copied, 2);
    w.mm.check_rmap(&[&parent, &child]).unwrap();
    parent.check().unwrap();
    child.check().unwrap();
    // A grandchild, then the child exits: the parent's pages it shared with
    // the grandchild only still copy; after the grandchild exits, writes
    // reuse the pages in place.
    let mut grandchild = child.fork().unwrap();
    drop(child);
    w.mm.check_rmap(&[&parent, &grandchild]).unwrap();
    parent.write_user(a + 2 * P + 100, &[5]).unwrap();
    assert_eq!(w.mm.fault_stats().cow_copied, 3);
    assert_eq!(read_byte(&mut grandchild, a + 2 * P + 100).unwrap(), 1);
    drop(grandchild);
    parent.write_user(a + 3 * P + 100, &[6]).unwrap();
    assert_eq!(w.mm.fault_stats().cow_copied, 3);
    assert_eq!(w.mm.fault_stats().cow_reused, 1, "the last reference is reused");
    assert_eq!(read_byte(&mut parent, a + 3 * P + 100).unwrap(), 6);
    let mut v = [0u8; 4];
    parent.read_user(a + P + 100, &mut v).unwrap();
    assert_eq!(v, [1, 1, 0, 0xa5]);
    w.mm.check_rmap(&[&parent]).unwrap();
    parent.check().unwrap();
    drop(parent);
    assert_no_leak(&w, free);
}

/// MODEL 17: shared mappings stay shared across fork.
#[test]
fn shared_anonymous_memory_is_shared_after_fork() {
    let w = world();
    let free = w.free_frame_count();
    let mut p = w.space();
    let a = p.mmap(MapRequest::anonymous(3 * P, RW).shared()).unwrap();
    assert_eq!(p.counts().resident, 3, "populated at mmap");
    let mut c = p.fork().unwrap();
    c.write_user(a + P, &[42]).unwrap();
    assert_eq!(read_byte(&mut p, a + P).unwrap(), 42);
    p.write_user(a, &[43]).unwrap();
    assert_eq!(read_byte(&mut c, a).unwrap(), 43);
    assert_eq!(w.mm.fault_stats().cow_copied, 0);
    drop(p);
    assert_eq!(read_byte(&mut c, a + P).unwrap(), 42);
    drop(c);
    assert_no_leak(&w, free);
}

/// MODEL 18: stacks grow down on faults, up to the limit, never into the
/// guard gap.
#[test]
fn stack_growth_and_guard_gap() {
    let w = world();
    let layout = Layout { stack_limit: 64 * P, stack_guard_gap: 8 * P, ..Layout::X86_64 };
    let mut s = w.space_with(layout);
    let top = va(0x7000_0000_0000);
    let start = s.map_stack(top, 2 * P).unwrap();
    s.write_user(start - 3 * P, &[1]).unwrap();
    assert_eq!(s.vmas().find(start - 3 * P).unwrap().start, start - 3 * P);
    assert_eq!(w.mm.fault_stats().stack_growth, 1);
    assert_eq!(s.vmas().count(), 1);
    assert!(matches!(s.fault(top - 65 * P, Access::Write), Err(FaultError::StackLimit { .. })));
    // A mapping 10 pages below the stack: growth stops 8 pages above it.
    let stack_start = start - 3 * P;
    let below = stack_start - 20 * P;
    s.mmap(MapRequest::anonymous(P, RW).at(Placement::FixedNoReplace(below))).unwrap();
    s.write_user(below + 9 * P, &[1]).unwrap();
    assert!(matches!(s.fault(below + 8 * P, Access::Write), Err(FaultError::GuardGap { .. })));
    s.write_user(below + 9 * P + 5, &[2]).unwrap();
    // A search for free space never lands in a stack's guard gap.
    let layout2 = Layout { mmap_base: top, ..layout };
    let mut s2 = w.space_with(layout2);
    let st = s2.map_stack(top, P).unwrap();
    let m = s2.mmap(MapRequest::anonymous(P, RW)).unwrap();
    assert!(m + P + 8 * P <= st, "{m:#x} below {st:#x} with the gap");
    s.check().unwrap();
    s2.check().unwrap();
}

/// MODEL 19: brk grows and shrinks the heap.
#[test]
fn brk_grows_and_shrinks() {
    let w = world();
    let mut s = w.space();
    let base = s.current_brk();
    assert_eq!(s.brk(base + 3 * P + 10).unwrap(), base + 3 * P + 10);
    fill(&mut s, base, 4, 4);
    let frames = w.free_frame_count();
    s.brk(base + P).unwrap();
    assert_eq!(w.free_frame_count(), frames + 3);
    assert!(read_byte(&mut s, base + 2 * P).is_err());
    s.brk(base + 2 * P).unwrap();
    assert_eq!(read_byte(&mut s, base + P + 7).unwrap(), 0, "regrown heap is zeroed");
    assert!(holds(&mut s, base, 1, 4));
    assert_eq!(s.vmas().count(), 1);
    // A mapping in the way stops the heap.
    s.mmap(MapRequest::anonymous(P, RW).at(Placement::Fixed(base + 4 * P))).unwrap();
    assert_eq!(s.brk(base + 5 * P), Err(SpaceError::NoSpace));
    assert_eq!(s.current_brk(), base + 2 * P);
    assert_eq!(s.brk(base - 1), Err(SpaceError::OutOfRange));
    // Linux's brk(0) queries the break; here 0 lies below the heap and is
    // refused like any other address there (`current_brk` is the query).
    assert_eq!(s.brk(VirtAddr::ZERO), Err(SpaceError::OutOfRange));
    assert_eq!(s.current_brk(), base + 2 * P);
    s.check().unwrap();
}

/// MODEL 20: mremap grows in place, moves page-table entries, shrinks.
#[test]
fn mremap_grow_move_shrink() {
    let w = world();
    let free = w.free_frame_count();
    let mut s = w.space();
    let a = s.mmap(MapRequest::anonymous(4 * P, RW)).unwrap();
    fill(&mut s, a, 4, 5);
    // Room above (top-down placement put nothing there): grow in place.
    assert_eq!(s.mremap(a, 4 * P, 6 * P, Remap::InPlace).unwrap(), a);
    assert_eq!(s.vmas().find(a).unwrap().end, a + 6 * P);
    // Blocked above: move. Same frames, new addresses.
    s.mmap(MapRequest::anonymous(P, RW).at(Placement::Fixed(a + 6 * P))).unwrap();
    assert_eq!(s.mremap(a, 6 * P, 8 * P, Remap::InPlace), Err(SpaceError::NoSpace));
    let frame = s.resolve(a, Access::Read).unwrap();
    let b = s.mremap(a, 6 * P, 8 * P, Remap::MayMove).unwrap();
    assert_ne!(a, b);
    assert_eq!(s.resolve(b, Access::Read).unwrap(), frame, "moved, not copied");
    assert!(holds(&mut s, b, 4, 5));
    assert!(read_byte(&mut s, a).is_err());
    // Shrink, then move to a fixed place.
    assert_eq!(s.mremap(b, 8 * P, 2 * P, Remap::InPlace).unwrap(), b);
    let c = s.mremap(b, 2 * P, 2 * P, Remap::Fixed(a - 16 * P)).unwrap();
    assert_eq!(c, a - 16 * P);
    assert!(holds(&mut s, c, 2, 5));
    // The source must lie in one VMA.
    assert!(matches!(s.mremap(c, 4 * P, 8 * P, Remap::MayMove), Err(SpaceError::Vma(VmaError::NotMapped(_)))));
    s.check().unwrap();
    w.mm.check_rmap(&[&s]).unwrap();
    drop(s);
    assert_no_leak(&w, free);
}

/// MODEL 21: placements, alignment and the map-count limit.
#[test]
fn mmap_placements_and_limits() {
    let w = world();
    let mut s = w.space_with(Layout { map_limit: 4, ..Layout::X86_64 });
    let hint = va(0x1000_0000);
    assert_eq!(s.mmap(MapRequest::anonymous(P, RW).at(Placement::Hint(hint))).unwrap(), hint);
    let elsewhere = s.mmap(MapRequest::anonymous(P, R).at(Placement::Hint(hint))).unwrap();
    assert_ne!(elsewhere, hint);
    assert_eq!(
        s.mmap(MapRequest::anonymous(P, R).at(Placement::FixedNoReplace(hint))),
        Err(SpaceError::Vma(VmaError::Overlap { start: hint, end: hint + P }))
    );
    s.write_user(hint, &[1]).unwrap();
    // Fixed replaces the page (zeroed again).
    s.mmap(MapRequest::anonymous(P, RW).at(Placement::Fixed(hint))).unwrap();
    assert_eq!(read_byte(&mut s, hint).unwrap(), 0);
    let aligned = s.mmap(MapRequest::anonymous(P, R).align(1 << 21)).unwrap();
    assert!(aligned.is_aligned(1 << 21));
    assert_eq!(s.vmas().count(), 3);
    s.mmap(MapRequest::anonymous(P, Protection::EXEC | R)).unwrap();
    assert!(matches!(
        s.mmap(MapRequest::anonymous(P, Protection::WRITE | R).at(Placement::Hint(va(1 << 40)))),
        Err(SpaceError::Vma(VmaError::TooManyMappings { limit: 4 }))
    ));
    // Adjacent compatible mappings merge, so they do not count.
    s.mmap(MapRequest::anonymous(P, RW).at(Placement::FixedNoReplace(hint + P))).unwrap();
    assert_eq!(s.vmas().count(), 4);
    assert_eq!(s.mmap(MapRequest::anonymous(P, RW).at(Placement::Fixed(VirtAddr::ZERO))), Err(SpaceError::OutOfRange));
    assert_eq!(s.mmap(MapRequest::anonymous(0, RW)), Err(SpaceError::Vma(VmaError::BadRange)));
    s.check().unwrap();
}

/// MODEL 22: pager-backed mappings: private copies on write, shared writes
/// reach the object.
#[test]
fn pager_backed_mappings() {
    let w = world();
    let mut s = w.space();
    let a = s.mmap(MapRequest::object(2 * P, RW, 7, 3 * P)).unwrap();
    assert_eq!(read_byte(&mut s, a + P + 9).unwrap(), SimPager::byte(7, 4 * P + 9));
    assert_eq!(w.pager.cached(), 1);
    s.write_user(a + P + 9, &[0xee]).unwrap();
    assert_eq!(w.mm.fault_stats().cow_copied, 1, "a private write copies the pager's page");
    let shared = s.mmap(MapRequest::object(P, RW, 7, 4 * P).shared()).unwrap();
    assert_eq!(read_byte(&mut s, shared + 9).unwrap(), SimPager::byte(7, 4 * P + 9), "the object is unchanged");
    s.write_user(shared + 9, &[0xdd]).unwrap();
    let frame = w.pager.frame(7, 4 * P).unwrap();
    assert_eq!(s.resolve(shared, Access::Read).unwrap(), frame, "shared: the pager's own page");
    assert_eq!(w.mm.map_count(frame), 1);
    // The write is in the object's page itself, seen by another space's
    // shared mapping; the private copy keeps its own write.
    let mut b = [0u8; 1];
    // SAFETY: simulated RAM; nothing else runs.
    unsafe { mm_types::PhysMemory::read_bytes(&w.ram, mm_types::PhysAddr::new(frame.as_u64() + 9).unwrap(), &mut b) }
        .unwrap();
    assert_eq!(b[0], 0xdd, "the object's page holds the shared write");
    let mut other = w.space();
    let o = other.mmap(MapRequest::object(P, R, 7, 4 * P).shared()).unwrap();
    assert_eq!(read_byte(&mut other, o + 9).unwrap(), 0xdd, "another sharer sees it");
    assert_eq!(read_byte(&mut s, a + P + 9).unwrap(), 0xee, "the private copy is its own");
    drop(other);
    // Adjacent mappings of contiguous object offsets merge.
    let b = s.mmap(MapRequest::object(P, R, 9, 0).at(Placement::Fixed(va(0x2000_0000)))).unwrap();
    s.mmap(MapRequest::object(P, R, 9, P).at(Placement::Fixed(b + P))).unwrap();
    assert_eq!(s.vmas().find(b).unwrap().end, b + 2 * P);
    assert_eq!(s.vmas().find(b + P).unwrap().backing, Backing::Object { object: 9, offset: 0 });
    s.check().unwrap();
    w.mm.check_rmap(&[&s]).unwrap();
}

/// MODEL 23: swap-out through the reverse map, swap-in on fault; a page
/// shared by fork is read once and stays copy-on-write.
#[test]
fn swap_out_and_in_with_sharing() {
    let w = world();
    let free = w.free_frame_count();
    let mut p = w.space();
    let a = p.mmap(MapRequest::anonymous(2 * P, RW)).unwrap();
    fill(&mut p, a, 2, 6);
    let mut c = p.fork().unwrap();
    let frame = p.resolve(a, Access::Read).unwrap();
    assert_eq!(w.mm.mappings(frame).len(), 2);
    w.swap.swap_out(frame, &mut [&mut p, &mut c]).unwrap();
    assert_eq!((p.counts().swapped, c.counts().swapped), (1, 1));
    assert_eq!(p.resolve(a + 100, Access::Read).unwrap(), c.resolve(a + 100, Access::Read).unwrap());
    assert_eq!(w.swap.reads.load(Ordering::Relaxed), 1, "one read for both");
    assert_eq!(w.swap.slots_used(), 0);
    assert!(holds(&mut p, a, 2, 6) && holds(&mut c, a, 2, 6));
    c.write_user(a + 100, &[1]).unwrap();
    assert!(holds(&mut p, a, 1, 6));
    w.mm.check_rmap(&[&p, &c]).unwrap();
    // A locked mapping is never evicted.
    let l = p.mmap(MapRequest::anonymous(P, RW).flags(VmaFlags::LOCKED)).unwrap();
    assert_eq!(p.counts().resident, 3, "locked pages are populated");
    let lf = p.resolve(l, Access::Read).unwrap();
    assert_eq!(w.swap.swap_out(lf, &mut [&mut p, &mut c]), Err(SpaceError::NotEvictable));
    // A read error is a bus error, and the entry stays.
    let f2 = p.resolve(a + P, Access::Read).unwrap();
    w.swap.swap_out(f2, &mut [&mut p, &mut c]).unwrap();
    w.swap.fail_reads.store(true, Ordering::Relaxed);
    assert_eq!(read_byte(&mut c, a + P), Err(FaultError::Hook(mm_vma::HookError::Io)));
    w.swap.fail_reads.store(false, Ordering::Relaxed);
    let mut v = [0u8; 4];
    c.read_user(a + P + 100, &mut v).unwrap();
    assert_eq!(v, [6, 1, 0, 0xa5]);
    // Fork duplicates swap entries; exit releases them.
    let g = p.fork().unwrap();
    assert_eq!(g.counts().swapped, 1);
    drop(g);
    drop(c);
    assert!(holds(&mut p, a, 2, 6));
    p.check().unwrap();
    drop(p);
    assert_eq!(w.swap.slots_used(), 0);
    assert_no_leak(&w, free);
}

/// Spaces made for a kernel share its root entries and leave them intact.
#[test]
fn spaces_share_the_kernel_half() {
    use mm_paging::{MapFlags, PageTable, X86_64};
    use mm_types::{PageSize, PhysAddr, VirtAddr};
    let w = world();
    let mut kernel = PageTable::new(X86_64::FOUR_LEVEL, w.ram.clone(), w.frames.clone()).unwrap();
    let kva = VirtAddr::new(0xffff_8000_0010_0000).unwrap();
    let frame = PhysAddr::new(0x20_0000).unwrap();
    kernel.map(kva, frame, PageSize::Size4KiB, MapFlags::KERNEL_DATA).unwrap().ignore();
    let free = w.free_frame_count();
    // SAFETY: `kernel` lives in the same simulated RAM and outlives the spaces.
    let mm = unsafe {
        mm_vma::MmContext::with_kernel_entries(
            X86_64::FOUR_LEVEL,
            w.ram.clone(),
            w.frames.clone(),
            Default::default(),
            kernel.root(),
            256..512,
        )
    }
    .unwrap();
    let mut s = mm_vma::AddressSpace::new(&mm, Layout::X86_64).unwrap();
    assert_eq!(s.page_table().translate(kva).unwrap().frame, frame);
    let a = s.mmap(MapRequest::anonymous(2 * P, RW)).unwrap();
    s.write_user(a, &[1]).unwrap();
    let c = s.fork().unwrap();
    assert_eq!(c.page_table().translate(kva).unwrap().frame, frame);
    s.check().unwrap();
    drop((s, c, mm));
    assert_eq!(w.free_frame_count(), free, "the spaces' own tables and pages are back");
    assert_eq!(kernel.translate(kva).unwrap().frame, frame);
    kernel.destroy(|_| {});
}

/// MODEL 23: reclaim's side: accessed bits are harvested per page, and a
/// pager's page is dropped from every mapper and faulted back from the pager.
#[test]
fn accessed_bits_and_dropping_pager_pages() {
    let w = world();
    let mut s = w.space();
    let a = s.mmap(MapRequest::object(2 * P, R, 3, 0)).unwrap();
    assert!(!s.test_and_clear_young(a), "nothing mapped yet");
    let byte0 = read_byte(&mut s, a).unwrap();
    // Emulated accesses set the accessed bit as the MMU does.
    assert!(s.test_and_clear_young(a));
    assert!(!s.test_and_clear_young(a), "cleared by the first harvest");
    assert!(!s.test_and_clear_young(a + P), "the other page was never touched");
    read_byte(&mut s, a + 5).unwrap();
    assert!(s.test_and_clear_young(a), "set again by the next access");
    let mut c = s.fork().unwrap();
    let frame = s.resolve(a, Access::Read).unwrap();
    assert_eq!(w.mm.mappings(frame).len(), 2);
    assert_eq!(w.mm.kind_of(frame), Some(mm_types::PageKind::File));
    let entry = mm_types::SwapSlot::new(1, 999).unwrap();
    assert_eq!(s.evict(a, Some(entry)), Err(SpaceError::NotEvictable), "a pager's page is not swapped");
    for m in w.mm.mappings(frame) {
        let space = if m.space == s.id() { &mut s } else { &mut c };
        let gone = space.evict(m.va, None).unwrap();
        assert_eq!(gone.frame, frame);
    }
    assert_eq!(w.mm.map_count(frame), 0);
    assert_eq!(s.counts().resident, 0);
    // Refaults come back to the pager's page.
    assert_eq!(read_byte(&mut c, a).unwrap(), byte0);
    assert_eq!(c.resolve(a, Access::Read).unwrap(), frame);
    // The zero page and locked memory are not evictable.
    let z = s.mmap(MapRequest::anonymous(P, RW)).unwrap();
    read_byte(&mut s, z).unwrap();
    assert_eq!(s.evict(z, None), Err(SpaceError::NotEvictable));
    assert_eq!(s.evict(va(0x1234_5000), None), Err(SpaceError::NotEvictable));
    s.check().unwrap();
    c.check().unwrap();
    w.mm.check_rmap(&[&s, &c]).unwrap();
}

/// Deferred evictions pay one TLB flush for the batch, and release their
/// pages (reverse-map records, dirty bits) only at that flush.
#[test]
fn deferred_evictions_flush_once_per_batch() {
    let w = world();
    let mut s = w.space();
    let a = s.mmap(MapRequest::anonymous(8 * P, RW)).unwrap();
    fill(&mut s, a, 8, 7);
    let frames: Vec<_> = (0..8).map(|i| s.resolve(a + i * P, Access::Write).unwrap()).collect();
    for &f in &frames {
        w.mm.pin(f).unwrap();
    }
    let before = w.tlb.flushes.load(Ordering::Relaxed);
    for i in 0..4 {
        let gone = s.evict_deferred(a + i * P, None).unwrap();
        assert!(gone.flags.contains(mm_paging::MapFlags::DIRTY), "the dirty bit comes with the mapping");
    }
    assert_eq!(w.tlb.flushes.load(Ordering::Relaxed), before, "no flush before the batch ends");
    assert!((0..4).all(|i| s.page_table().translate(a + i * P).is_none()));
    assert!(frames[..4].iter().all(|&f| w.mm.map_count(f) == 1), "released only at the flush");
    s.flush_deferred();
    assert_eq!(w.tlb.flushes.load(Ordering::Relaxed), before + 1, "one flush for four pages");
    assert!(frames[..4].iter().all(|&f| w.mm.map_count(f) == 0 && w.mm.is_dirty(f)));
    s.flush_deferred();
    assert_eq!(w.tlb.flushes.load(Ordering::Relaxed), before + 1, "nothing gathered: no flush");
    // The plain form flushes each time.
    for i in 4..6 {
        s.evict(a + i * P, None).unwrap();
    }
    assert_eq!(w.tlb.flushes.load(Ordering::Relaxed), before + 3);
    for &f in &frames {
        w.mm.unpin(f);
    }
    // Refaults find zero-filled pages again (no swap was given).
    assert_eq!(read_byte(&mut s, a).unwrap(), 0);
    let mut v = [0u8; 2];
    s.read_user(a + 7 * P + 100, &mut v).unwrap();
    assert_eq!(v, [7, 7], "pages never evicted keep their data");
    s.check().unwrap();
}
