//! mm-paging on the host test kit. Comments name MODEL.md invariants.

use std::collections::BTreeMap;

use mm_paging::{
    AccessBits, FlushBatch, HugePages, Lookup, MapFlags, NoShootdown, PageTable, PagingError, RecordingTlb, Unmapped,
    X86_64,
};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{AddrError, FrameError, Order, PageSize, PagingMode, PhysAddr, SwapSlot, VirtAddr};

type Pt<'f> = PageTable<X86_64, SimPhysMemory, &'f RefFrameProvider>;

fn va(a: u64) -> VirtAddr {
    VirtAddr::new(a).unwrap()
}
fn pa(a: u64) -> PhysAddr {
    PhysAddr::new(a).unwrap()
}

/// 8 MiB of RAM for table pages; mapped frames are just numbers.
fn setup() -> (SimPhysMemory, RefFrameProvider) {
    let ram = SimPhysMemory::new(pa(0), 8 << 20);
    let frames = RefFrameProvider::new(&ram).with_max_order(Order::new(0).unwrap());
    (ram, frames)
}

/// Every leaf: va -> (frame, size, flags).
fn snapshot(pt: &Pt<'_>) -> BTreeMap<u64, (u64, PageSize, MapFlags)> {
    let mut m = BTreeMap::new();
    for (start, len) in [(0u64, 1u64 << 47), (0xffff_8000_0000_0000, 1 << 47)] {
        pt.for_each_mapping(va(start), len, |x| {
            m.insert(x.va.as_u64(), (x.frame.as_u64(), x.size, x.flags));
        })
        .unwrap();
    }
    m
}

#[test]
fn every_page_size_in_both_modes() {
    for arch in [X86_64::FOUR_LEVEL, X86_64::FIVE_LEVEL] {
        let (ram, frames) = setup();
        let mut pt = PageTable::new(arch, ram.clone(), &frames).unwrap();
        let base = if arch.mode() == PagingMode::FiveLevel { 0x00f0_0000_0000_0000 } else { 0x7000_0000_0000 };
        let f = MapFlags::KERNEL_DATA;
        pt.map(va(base), pa(0x1234_5000), PageSize::Size4KiB, f).unwrap().ignore();
        pt.map(va(base + (2 << 20)), pa(0x4000_0000), PageSize::Size2MiB, f).unwrap().ignore();
        pt.map(va(base + (1 << 30)), pa(0x8000_0000), PageSize::Size1GiB, f).unwrap().ignore();
        for (addr, phys, size) in [
            (base + 0x10, 0x1234_5010, PageSize::Size4KiB),
            (base + (2 << 20) + 0x12_3456, 0x4012_3456, PageSize::Size2MiB),
            (base + (1 << 30) + 0x3456_789a, 0xb456_789a, PageSize::Size1GiB),
        ] {
            let t = pt.translate(va(addr)).unwrap();
            assert_eq!((t.phys.as_u64(), t.size, t.flags), (phys, size, f), "{arch:?} {addr:#x}");
        }
        assert!(pt.translate(va(base + 0x1000)).is_none());
        // One table per level for the 4 KiB page; the huge pages share the
        // upper ones. 5-level paging has one more.
        let levels = arch.mode().levels() as u64;
        assert_eq!(pt.table_pages(), levels, "{arch:?}");
    }
}

#[test]
fn ranges_pick_huge_pages_automatically() {
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    // 4 KiB + 2 MiB + 1 GiB + 2 MiB + 4 KiB around a 1 GiB boundary.
    let start = (1u64 << 30) - (2 << 20) - 0x1000;
    let len = 0x1000 + (2 << 20) + (1 << 30) + (2 << 20) + 0x1000;
    pt.map_range(va(start), pa(start), len, MapFlags::KERNEL_DATA, HugePages::all()).unwrap().ignore();
    let m = snapshot(&pt);
    let count = |s| m.values().filter(|x| x.1 == s).count();
    assert_eq!((count(PageSize::Size4KiB), count(PageSize::Size2MiB), count(PageSize::Size1GiB)), (2, 2, 1));
    // Without huge pages: all 4 KiB.
    let mut small = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    small.map_range(va(0x40_0000), pa(0x40_0000), 4 << 20, MapFlags::KERNEL_DATA, HugePages::empty()).unwrap().ignore();
    assert_eq!(snapshot(&small).len(), 1024);
    // Misaligned physical addresses get 4 KiB pages even when virtual ones align.
    let mut skew = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    skew.map_range(va(0x40_0000), pa(0x40_1000), 2 << 20, MapFlags::KERNEL_DATA, HugePages::all()).unwrap().ignore();
    assert_eq!(snapshot(&skew).len(), 512);
    small.destroy(|_| {});
    skew.destroy(|_| {});
    pt.destroy(|_| {});
    assert_eq!(frames.allocated_blocks(), 0, "destroy frees every table page");
}

#[test]
fn refused_operations_change_nothing() {
    // MODEL 2.
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let f = MapFlags::KERNEL_DATA;
    pt.map_range(va(0x20_0000), pa(0x20_0000), 2 << 20, f, HugePages::all()).unwrap().ignore();
    pt.map_range(va(0x80_0000), pa(0x80_0000), 0x3000, f, HugePages::all()).unwrap().ignore();
    let before = (snapshot(&pt), pt.table_pages(), frames.free_frame_count());
    let same = |pt: &Pt<'_>| (snapshot(pt), pt.table_pages(), frames.free_frame_count()) == before;

    // Overlap with a huge page, at the end of a range that needs new tables first.
    let e = pt.map_range(va(0x4000_0000 - 0x1000), pa(0), 0x1000, f, HugePages::all());
    assert!(e.is_ok());
    let e = pt.map_range(va(0x4000_0000 - 0x1000), pa(0), 0x1000, f, HugePages::all());
    assert_eq!(e, Err(PagingError::AlreadyMapped { addr: va(0x3fff_f000) }));
    pt.unmap_range(va(0x3fff_f000), 0x1000, |_| {}).unwrap().ignore();
    assert!(same(&pt), "the unmap freed the tables the map created");
    let e = pt.map_range(va(0x1000), pa(0x1000), 0x30_0000, f, HugePages::all());
    assert_eq!(e, Err(PagingError::AlreadyMapped { addr: va(0x20_0000) }));
    assert!(same(&pt));
    let e = pt.map_range(va(0x80_2000), pa(0), 0x2000, f, HugePages::all());
    assert_eq!(e, Err(PagingError::AlreadyMapped { addr: va(0x80_2000) }));
    assert!(same(&pt));
    // Bad input.
    assert_eq!(
        pt.map_range(va(0x1001), pa(0), 0x1000, f, HugePages::all()),
        Err(PagingError::Misaligned { value: 0x1001, align: 0x1000 })
    );
    assert_eq!(
        pt.map_range(va(0x1000), pa(0x10), 0x1000, f, HugePages::all()),
        Err(PagingError::Misaligned { value: 0x10, align: 0x1000 })
    );
    assert_eq!(
        pt.map_range(va(0x1000), pa(0), 0x10, f, HugePages::all()),
        Err(PagingError::Misaligned { value: 0x10, align: 0x1000 })
    );
    assert_eq!(pt.map_range(va(0x1000), pa(0), 0, f, HugePages::all()), Err(PagingError::EmptyRange));
    assert_eq!(
        pt.map_range(va(0x1000), pa(0), 0x1000, MapFlags::WRITE, HugePages::all()),
        Err(PagingError::InvalidFlags)
    );
    assert_eq!(
        pt.map(va(0x4000_0000), pa(0x1000), PageSize::Size2MiB, f),
        Err(PagingError::HugeFrameMisaligned { phys: 0x1000, size: PageSize::Size2MiB })
    );
    let non48 = 0x0000_8000_0000_0000;
    assert_eq!(
        pt.map_range(va(non48), pa(0), 0x1000, f, HugePages::all()),
        Err(PagingError::BadAddress(AddrError::NotCanonical { addr: non48, mode: PagingMode::FourLevel }))
    );
    // A range running off the top of the lower half: its last byte is the
    // first non-canonical address checked.
    assert_eq!(
        pt.map_range(va(0x7fff_ffff_f000), pa(0), 0x2000, f, HugePages::all()),
        Err(PagingError::BadAddress(AddrError::NotCanonical { addr: 0x8000_0000_0fff, mode: PagingMode::FourLevel }))
    );
    assert_eq!(pt.unmap_range(va(0x20_0000), 0x40_0000, |_| {}), Err(PagingError::NotMapped { addr: va(0x40_0000) }));
    assert_eq!(pt.protect_range(va(0x7f_f000), 0x2000, f), Err(PagingError::NotMapped { addr: va(0x7f_f000) }));
    assert_eq!(pt.split(va(0x80_0000)), Err(PagingError::NotMapped { addr: va(0x80_0000) }));
    assert!(same(&pt));
    // No memory for tables: the map needs 3 new tables; the 2nd allocation fails.
    frames.fail_nth_allocation(2);
    let e = pt.map_range(va(0x7000_0000_0000), pa(0), 0x1000, f, HugePages::all());
    assert_eq!(e, Err(PagingError::OutOfFrames(FrameError::OutOfMemory { order: Order::ZERO })));
    assert!(same(&pt), "preallocated tables were given back");
    // A split needs a table too.
    frames.fail_nth_allocation(1);
    assert!(matches!(pt.unmap_range(va(0x20_0000), 0x1000, |_| {}), Err(PagingError::OutOfFrames(_))));
    assert!(same(&pt));

    // The same refusals through `map` of one 4 KiB page (its own descent).
    let page = |pt: &mut Pt<'_>, at: u64, frame: u64, flags| pt.map(va(at), pa(frame), PageSize::Size4KiB, flags);
    assert_eq!(page(&mut pt, 0x30_1000, 0, f), Err(PagingError::AlreadyMapped { addr: va(0x30_1000) }));
    assert_eq!(page(&mut pt, 0x80_1000, 0, f), Err(PagingError::AlreadyMapped { addr: va(0x80_1000) }));
    assert_eq!(page(&mut pt, 0x1001, 0, f), Err(PagingError::Misaligned { value: 0x1001, align: 0x1000 }));
    assert_eq!(
        page(&mut pt, 0x1000, 0x10, f),
        Err(PagingError::HugeFrameMisaligned { phys: 0x10, size: PageSize::Size4KiB })
    );
    assert_eq!(page(&mut pt, 0x1000, 0, MapFlags::WRITE), Err(PagingError::InvalidFlags));
    assert_eq!(
        page(&mut pt, non48, 0, f),
        Err(PagingError::BadAddress(AddrError::NotCanonical { addr: non48, mode: PagingMode::FourLevel }))
    );
    assert!(same(&pt));
    // Three tables missing: the second allocation fails, the first goes back.
    frames.fail_nth_allocation(2);
    let e = page(&mut pt, 0x7000_0000_0000, 0, f);
    assert_eq!(e, Err(PagingError::OutOfFrames(FrameError::OutOfMemory { order: Order::ZERO })));
    assert!(same(&pt), "preallocated tables were given back");
    // One table missing (a level-1 table under the existing 2 MiB slot
    // 0x60_0000's level-2 table), then none: the page lands where asked.
    page(&mut pt, 0x60_0000, 0x9000, f).unwrap().ignore();
    page(&mut pt, 0x60_1000, 0xa000, f).unwrap().ignore();
    assert_eq!(pt.translate(va(0x60_1234)).map(|t| t.phys), Some(pa(0xa234)));
    assert_eq!(pt.table_pages(), before.1 + 1, "one level-1 table was added");
}

#[test]
fn unmap_returns_frames_and_frees_empty_tables() {
    // MODEL 3.
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let baseline = frames.free_frame_count();
    let start = 0xffff_8000_0000_0000u64 + (1 << 30) - 0x3000;
    let len = (1 << 30) + (4 << 20) + 0x5000;
    pt.map_range(va(start), pa(0x1000_0000 - 0x3000), len, MapFlags::KERNEL_DATA, HugePages::all()).unwrap().ignore();
    let mapped = snapshot(&pt);
    assert!(pt.table_pages() > 4);
    let mut got = BTreeMap::new();
    let flush = pt
        .unmap_range(va(start), len, |u| {
            if let Unmapped::Page { va, frame, size, flags } = u {
                got.insert(va.as_u64(), (frame.as_u64(), size, flags));
            }
        })
        .unwrap();
    assert_eq!(got, mapped, "every mapping is reported with its frame");
    assert_eq!(flush.pages(), len / 4096);
    flush.ignore();
    assert_eq!(pt.table_pages(), 1, "only the root is left");
    assert_eq!(frames.free_frame_count(), baseline);
}

#[test]
fn partial_unmap_and_protect_split_huge_pages() {
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let f = MapFlags::KERNEL_DATA;
    pt.map(va(1 << 30), pa(1 << 30), PageSize::Size1GiB, f).unwrap().ignore();
    // Protect one 4 KiB page in the middle: 1 GiB -> 2 MiB pages -> 4 KiB pages.
    let target = (1u64 << 30) + (6 << 20) + 0x5000;
    let flush = pt.protect_range(va(target), 0x1000, MapFlags::READ).unwrap();
    assert_eq!(flush.pages(), 1);
    flush.ignore();
    let t = pt.translate(va(target)).unwrap();
    assert_eq!((t.size, t.flags, t.phys.as_u64()), (PageSize::Size4KiB, MapFlags::READ, target));
    let n = pt.translate(va(target + 0x1000)).unwrap();
    assert_eq!((n.size, n.flags), (PageSize::Size4KiB, f));
    let far = pt.translate(va((1 << 30) + (100 << 20))).unwrap();
    assert_eq!((far.size, far.flags), (PageSize::Size2MiB, f));
    let m = snapshot(&pt);
    assert_eq!(m.len(), 511 + 512);
    // Every byte still maps to the same physical address (MODEL 4).
    for (v, (frame, size, _)) in &m {
        assert_eq!(v, frame, "identity preserved across splits at {v:#x} ({size})");
    }
    // Explicit split of a 2 MiB page.
    pt.split(va((1 << 30) + (100 << 20))).unwrap().ignore();
    assert_eq!(pt.translate(va((1 << 30) + (100 << 20))).unwrap().size, PageSize::Size4KiB);
    // Unmapping part of a 2 MiB page splits it and keeps the rest.
    pt.unmap_range(va((1 << 30) + (200 << 20) + 0x1000), 0x1000, |_| {}).unwrap().ignore();
    assert!(pt.translate(va((1 << 30) + (200 << 20) + 0x1000)).is_none());
    assert!(pt.translate(va((1 << 30) + (200 << 20))).is_some());
    assert!(pt.translate(va((1 << 30) + (200 << 20) + 0x2000)).is_some());
}

#[test]
fn harvest_accessed_and_dirty_bits() {
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let hot = MapFlags::KERNEL_DATA | MapFlags::ACCESSED | MapFlags::DIRTY;
    pt.map_range(va(0x10_0000), pa(0x10_0000), 0x4000, hot, HugePages::all()).unwrap().ignore();
    pt.map_range(va(0x20_0000), pa(0x20_0000), 2 << 20, MapFlags::KERNEL_DATA | MapFlags::ACCESSED, HugePages::all())
        .unwrap()
        .ignore();
    let mut seen = Vec::new();
    let flush = pt
        .harvest(va(0x10_0000), 0x30_0000, AccessBits::ACCESSED, |v, size, bits| seen.push((v.as_u64(), size, bits)))
        .unwrap();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.2 == AccessBits::ACCESSED));
    assert_eq!(seen[4], (0x20_0000, PageSize::Size2MiB, AccessBits::ACCESSED));
    assert!(flush.pages() > 0);
    flush.ignore();
    // Accessed bits are clear now; dirty bits were left alone.
    let mut again = 0;
    pt.harvest(va(0x10_0000), 0x30_0000, AccessBits::ACCESSED, |_, _, _| again += 1).unwrap().ignore();
    assert_eq!(again, 0);
    let mut dirty = 0;
    pt.harvest(va(0x10_0000), 0x30_0000, AccessBits::all(), |_, _, b| {
        assert_eq!(b, AccessBits::DIRTY);
        dirty += 1;
    })
    .unwrap()
    .ignore();
    assert_eq!(dirty, 4);
    assert!(!pt.translate(va(0x10_0000)).unwrap().flags.contains(MapFlags::DIRTY));
}

#[test]
fn swap_entries() {
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FIVE_LEVEL, ram.clone(), &frames).unwrap();
    let f = MapFlags::READ | MapFlags::WRITE | MapFlags::USER;
    pt.map_range(va(0x40_0000), pa(0x9000_0000), 2 << 20, f, HugePages::all()).unwrap().ignore();
    let s = SwapSlot::new(3, 12345).unwrap();
    // Swap out one page of a 2 MiB mapping: split, replace, report the frame.
    let (old, flush) = pt.set_swap(va(0x40_1000), s).unwrap();
    let old = old.unwrap();
    assert_eq!((old.frame.as_u64(), old.flags), (0x9000_1000, f));
    assert_eq!(flush.pages(), 1);
    flush.ignore();
    assert_eq!(pt.lookup(va(0x40_1000)).unwrap(), Lookup::Swapped(s));
    assert!(pt.translate(va(0x40_1000)).is_none());
    assert_eq!(pt.set_swap(va(0x40_1000), s), Err(PagingError::AlreadyMapped { addr: va(0x40_1000) }));
    assert_eq!(
        pt.map_range(va(0x40_1000), pa(0), 0x1000, f, HugePages::all()),
        Err(PagingError::AlreadyMapped { addr: va(0x40_1000) })
    );
    // Swap entries are left alone by protect and reported by unmap.
    pt.protect_range(va(0x40_0000), 0x3000, MapFlags::READ).unwrap().ignore();
    assert_eq!(pt.lookup(va(0x40_1000)).unwrap(), Lookup::Swapped(s));
    // Swap in.
    assert_eq!(pt.replace_swap(va(0x40_1000), pa(0x7000), f), Ok(s));
    assert_eq!(pt.translate(va(0x40_1000)).unwrap().phys.as_u64(), 0x7000);
    assert_eq!(pt.replace_swap(va(0x40_1000), pa(0x7000), f), Err(PagingError::NotMapped { addr: va(0x40_1000) }));
    // A swap entry in an empty area creates tables; unmap reports it.
    let t = SwapSlot::new(0, 7).unwrap();
    assert_eq!(pt.set_swap(va(0x7000_0000), t).unwrap().0, None);
    let mut reported = Vec::new();
    pt.unmap_range(va(0x7000_0000), 0x1000, |u| reported.push(u)).unwrap().ignore();
    assert_eq!(reported, [Unmapped::Swap { va: va(0x7000_0000), slot: t }]);
    assert_eq!(pt.lookup(va(0x7000_0000)).unwrap(), Lookup::Unmapped);
    assert_eq!(SwapSlot::new(32, 0), None);
}

#[test]
fn flush_records_batch() {
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    pt.map_range(va(0x10_0000), pa(0), 0x40_0000, MapFlags::KERNEL_DATA, HugePages::empty()).unwrap().ignore();
    let mut batch = FlushBatch::new();
    pt.protect_range(va(0x10_0000), 0x2000, MapFlags::READ).unwrap().batch(&mut batch);
    pt.protect_range(va(0x20_0000), 0x1000, MapFlags::READ).unwrap().batch(&mut batch);
    let mut tlb = RecordingTlb::default();
    batch.finish(&mut tlb, &NoShootdown);
    assert_eq!((tlb.pages.total(), tlb.full_flushes), (3, 0));
    let mut batch = FlushBatch::new();
    pt.unmap_range(va(0x10_0000), 0x40_0000, |_| {}).unwrap().batch(&mut batch);
    assert!(batch.is_full_flush());
    batch.finish(&mut tlb, &NoShootdown);
    assert_eq!(tlb.full_flushes, 1);
}

#[test]
fn interoperates_with_the_x86_64_crate() {
    use x86_64::structures::paging::{
        FrameAllocator, Mapper, OffsetPageTable, Page, PageTable as XTable, PageTableFlags, PhysFrame, Size4KiB,
        Translate,
    };
    let (ram, frames) = setup();
    let mut alloc = mm_types::x86::X86FrameAllocator::new(&frames, mm_types::AllocFlags::ZERO);
    let root: PhysFrame<Size4KiB> = alloc.allocate_frame().unwrap();
    let offset = ram.translate_offset();
    // The simulated RAM is reachable at `phys + offset`.
    // SAFETY: `root` is a zeroed table page that only this test uses.
    let mut xpt = unsafe {
        let table = &mut *((root.start_address().as_u64() + offset) as *mut XTable);
        OffsetPageTable::new(table, x86_64::VirtAddr::new(offset))
    };
    let page = Page::<Size4KiB>::containing_address(x86_64::VirtAddr::new(0x5555_0000));
    let frame = PhysFrame::containing_address(x86_64::PhysAddr::new(0x123_4000));
    let xflags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    // SAFETY: the frame is a number nobody dereferences.
    unsafe { xpt.map_to(page, frame, xflags, &mut alloc).unwrap().ignore() };
    // The hierarchy came from `frames`, is reachable through `ram`.
    // SAFETY: the x86_64 mapper is not used while `pt` changes it.
    let mut pt = unsafe { PageTable::from_root(X86_64::FOUR_LEVEL, ram.clone(), &frames, root.start_address().into()) };
    let t = pt.translate(va(0x5555_0abc)).unwrap();
    assert_eq!(t.phys.as_u64(), 0x123_4abc);
    assert_eq!(PageTableFlags::from(t.flags) & xflags, xflags);
    pt.map(va(0x6666_0000), pa(0x99_9000), PageSize::Size4KiB, MapFlags::READ | MapFlags::EXECUTE).unwrap().ignore();
    assert_eq!(xpt.translate_addr(x86_64::VirtAddr::new(0x6666_0123)), Some(x86_64::PhysAddr::new(0x99_9123)));
}

#[test]
fn map_frames_maps_scattered_frames_in_one_call() {
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    // 600 pages crossing a level-1 table boundary, frames in a scattered order.
    let base = 0xffff_c900_0000_0000 + (2 << 20) - 100 * 4096;
    let list: Vec<PhysAddr> = (0..600u64).map(|i| pa(0x4000_0000 + ((i * 7919) % 600) * 4096)).collect();
    pt.map_frames(va(base), &list, MapFlags::KERNEL_DATA).unwrap().ignore();
    for (i, f) in list.iter().enumerate() {
        let t = pt.translate(va(base + i as u64 * 4096 + 8)).unwrap();
        assert_eq!((t.phys, t.size), (pa(f.as_u64() + 8), PageSize::Size4KiB));
    }
    assert!(pt.translate(va(base + 600 * 4096)).is_none());
    // Refusals change nothing: one page already mapped, a misaligned frame.
    let before = snapshot(&pt);
    let tables = pt.table_pages();
    let err = pt.map_frames(va(base + 599 * 4096), &list[..2], MapFlags::KERNEL_DATA).unwrap_err();
    assert_eq!(err, PagingError::AlreadyMapped { addr: va(base + 599 * 4096) });
    let err = pt.map_frames(va(0x1000_0000), &[pa(0x5000), pa(0x6001)], MapFlags::KERNEL_DATA).unwrap_err();
    assert_eq!(err, PagingError::Misaligned { value: 0x6001, align: 4096 });
    assert_eq!(pt.map_frames(va(0x1000_0000), &[], MapFlags::KERNEL_DATA).unwrap_err(), PagingError::EmptyRange);
    assert_eq!(snapshot(&pt), before);
    assert_eq!(pt.table_pages(), tables);
}

#[test]
fn unmap_keep_tables_leaves_table_pages_for_the_next_mapping() {
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let base = 0xffff_c900_0000_0000;
    pt.map_range(va(base), pa(0x10_0000), 16 * 4096, MapFlags::KERNEL_DATA, HugePages::empty()).unwrap().ignore();
    let tables = pt.table_pages();
    assert_eq!(tables, 4);
    let mut seen = Vec::new();
    let flush = pt
        .unmap_range_keep_tables(va(base), 16 * 4096, |u| {
            if let Unmapped::Page { frame, .. } = u {
                seen.push(frame.as_u64())
            }
        })
        .unwrap();
    assert_eq!(flush.pages(), 16);
    flush.ignore();
    assert_eq!(seen, (0..16).map(|i| 0x10_0000 + i * 4096).collect::<Vec<_>>());
    assert!(snapshot(&pt).is_empty());
    assert_eq!(pt.table_pages(), tables, "no table page freed");
    let free = frames.free_frame_count();
    // Mapping the range again needs no new table page.
    pt.map_range(va(base), pa(0x20_0000), 16 * 4096, MapFlags::KERNEL_DATA, HugePages::empty()).unwrap().ignore();
    assert_eq!(frames.free_frame_count(), free);
    // The ordinary unmap then frees the emptied tables (all but the root).
    pt.unmap_range(va(base), 16 * 4096, |_| {}).unwrap().ignore();
    assert_eq!(pt.table_pages(), 1);
}

/// MODEL 3: a sparse unmap removes what is there, skips holes, and frees the
/// tables it empties; the entry visitor sees pages and swap entries.
#[test]
fn sparse_unmap_visit_update_and_replace() {
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let empty_tables = pt.table_pages();
    let base = 0x4000_0000u64;
    let rw = MapFlags::READ | MapFlags::WRITE | MapFlags::USER;
    // Pages 0, 2, 5 mapped; page 7 swapped; the rest of the 16 empty.
    for i in [0u64, 2, 5] {
        pt.map(va(base + i * 4096), pa(0x10_0000 + i * 4096), PageSize::Size4KiB, rw).unwrap().ignore();
    }
    let swap = SwapSlot::new(1, 77).unwrap();
    pt.set_swap(va(base + 7 * 4096), swap).unwrap().1.ignore();
    // An emulated write sets accessed and dirty on its page only.
    assert!(pt.set_access_bits(va(base + 2 * 4096 + 5), true));
    assert!(!pt.set_access_bits(va(base + 4096), false), "nothing mapped there");
    let mut bits = Vec::new();
    pt.harvest(va(base), 16 * 4096, AccessBits::ACCESSED | AccessBits::DIRTY, |v, _, b| bits.push((v, b)))
        .unwrap()
        .ignore();
    assert_eq!(bits, [(va(base + 2 * 4096), AccessBits::ACCESSED | AccessBits::DIRTY)]);
    // The strict unmap refuses the holes; the sparse one does not.
    assert!(matches!(pt.unmap_range(va(base), 16 * 4096, |_| {}), Err(PagingError::NotMapped { .. })));
    let mut seen = Vec::new();
    pt.for_each_entry(va(base), 16 * 4096, |e| seen.push(e)).unwrap();
    assert_eq!(seen.len(), 4);
    assert!(matches!(seen[3], mm_paging::Entry::Swap { slot, .. } if slot == swap));
    // Write-protect every even page; only changed leaves are flushed.
    let flush = pt
        .update_flags(va(base), 16 * 4096, |m| {
            if (m.va.as_u64() - base) / 4096 % 2 == 0 {
                m.flags - MapFlags::WRITE
            } else {
                m.flags
            }
        })
        .unwrap();
    assert_eq!(flush.pages(), 3, "pages 0..=2 span the changed leaves 0 and 2");
    assert!(!pt.translate(va(base)).unwrap().flags.contains(MapFlags::WRITE));
    assert!(pt.translate(va(base + 5 * 4096)).unwrap().flags.contains(MapFlags::WRITE));
    assert!(matches!(pt.update_flags(va(base), 4096, |_| MapFlags::WRITE), Err(PagingError::InvalidFlags)));
    // Replace keeps the slot and returns the old leaf.
    let (old, _) = pt.replace(va(base + 2 * 4096), pa(0x20_0000), rw).unwrap();
    assert_eq!(old.frame, pa(0x10_2000));
    assert_eq!(pt.translate(va(base + 2 * 4096)).unwrap().frame, pa(0x20_0000));
    assert!(matches!(pt.replace(va(base + 4096), pa(0x20_0000), rw), Err(PagingError::NotMapped { .. })));
    assert!(matches!(pt.replace(va(base + 7 * 4096), pa(0x20_0000), rw), Err(PagingError::NotMapped { .. })));
    let mut removed = Vec::new();
    pt.unmap_present(va(base), 16 * 4096, |u| removed.push(u)).unwrap().ignore();
    assert_eq!(removed.len(), 4);
    assert!(removed.iter().any(|u| matches!(u, Unmapped::Swap { slot, .. } if *slot == swap)));
    assert_eq!(pt.table_pages(), empty_tables, "emptied tables are freed");
    // Nothing left: a second sparse unmap is a no-op, not an error.
    pt.unmap_present(va(base), 1 << 30, |_| panic!("nothing to remove")).unwrap().ignore();
    pt.destroy(|_| {});
}

/// A hierarchy sharing another's root entries sees its mappings, owns only
/// its own tables, and leaves the shared ones alone when destroyed.
#[test]
fn shared_root_entries_are_borrowed_not_owned() {
    let (ram, frames) = setup();
    let mut kernel = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let kva = 0xffff_8000_0000_0000u64;
    kernel.map(va(kva), pa(0x30_0000), PageSize::Size4KiB, MapFlags::KERNEL_DATA).unwrap().ignore();
    let kernel_tables = kernel.table_pages();
    let free = frames.free_frame_count();
    let arch = X86_64::FOUR_LEVEL;
    // SAFETY: `kernel` is a live hierarchy in the same RAM and outlives `user`.
    let user = unsafe { PageTable::new_sharing(arch, ram.clone(), &frames, kernel.root(), 256..512) };
    let mut user = user.unwrap();
    assert_eq!(user.translate(va(kva)).unwrap().frame, pa(0x30_0000));
    user.map(va(0x4000_0000), pa(0x31_0000), PageSize::Size4KiB, MapFlags::READ).unwrap().ignore();
    assert_eq!(user.table_pages(), 4, "root + 3 levels for the user page; the kernel's are not counted");
    assert!(kernel.translate(va(0x4000_0000)).is_none());
    let mut removed = 0;
    user.destroy(|_| removed += 1);
    assert_eq!(removed, 1, "only the user mapping");
    assert_eq!(frames.free_frame_count(), free);
    assert_eq!(kernel.table_pages(), kernel_tables);
    assert_eq!(kernel.translate(va(kva)).unwrap().frame, pa(0x30_0000));
    kernel.destroy(|_| {});
}

/// MODEL 9: a hierarchy made with `new_sharing` refuses every change that
/// reaches a borrowed root entry (`KernelRange`, naming the first address
/// under one), changes nothing (neither its own tables nor the kernel's),
/// and never frees a kernel table page, at teardown included.
#[test]
fn shared_root_entries_cannot_be_changed() {
    let (ram, frames) = setup();
    let mut kernel = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let f = MapFlags::KERNEL_DATA;
    // A 4 KiB and a 2 MiB page in the upper half, and a 4 KiB page under
    // root entry 1 (as a kernel's identity map below 1 TiB might).
    let (k4, k2m, low) = (0xffff_8000_0000_0000u64, 0xffff_8000_0020_0000u64, 0x80_0000_0000u64);
    kernel.map(va(k4), pa(0x30_0000), PageSize::Size4KiB, f).unwrap().ignore();
    kernel.map(va(k2m), pa(0x40_0000), PageSize::Size2MiB, f).unwrap().ignore();
    kernel.map(va(low), pa(0x31_0000), PageSize::Size4KiB, f).unwrap().ignore();
    let kernel_before = (snapshot(&kernel), kernel.table_pages());
    let arch = X86_64::FOUR_LEVEL;
    // SAFETY: `kernel` is a live hierarchy in the same RAM and outlives `user`.
    let user = unsafe { PageTable::new_sharing(arch, ram.clone(), &frames, kernel.root(), (1..2).chain(256..512)) };
    let mut user = user.unwrap();
    let free = frames.free_frame_count();
    let user_before = snapshot(&user);
    assert_eq!(user_before.len(), 3, "the user sees the kernel's mappings");
    fn refused<T>(addr: u64) -> Result<T, PagingError> {
        Err(PagingError::KernelRange { addr: va(addr) })
    }
    let swap = SwapSlot::new(1, 5).unwrap();
    // Every changing operation, on a kernel page, on an empty borrowed entry
    // (index 300) and on a range that starts in the user's entry 0 and ends
    // in the borrowed entry 1.
    let empty = 0xffff_9600_0000_0000u64;
    let straddle = low - 0x1000;
    assert_eq!(user.map(va(k4 + 0x1000), pa(0x50_0000), PageSize::Size4KiB, f), refused(k4 + 0x1000));
    assert_eq!(user.map(va(empty), pa(0x50_0000), PageSize::Size4KiB, f), refused(empty));
    assert_eq!(user.map_range(va(straddle), pa(0x50_0000), 0x2000, f, HugePages::all()), refused(low));
    assert_eq!(user.map_frames(va(straddle), &[pa(0x50_0000), pa(0x51_0000)], f), refused(low));
    assert_eq!(user.unmap_range(va(k4), 0x1000, |_| panic!("removed a kernel page")), refused(k4));
    assert_eq!(user.unmap_range(va(straddle), 0x2000, |_| panic!("removed a kernel page")), refused(low));
    assert_eq!(user.unmap_present(va(k4), 1 << 30, |_| panic!("removed a kernel page")), refused(k4));
    assert_eq!(user.unmap_range_keep_tables(va(low), 0x1000, |_| panic!("removed a kernel page")), refused(low));
    assert_eq!(user.protect_range(va(k4), 0x1000, MapFlags::READ), refused(k4));
    assert_eq!(user.update_flags(va(k4), 4 << 20, |_| panic!("asked about a kernel page")), refused(k4));
    assert_eq!(
        user.harvest(va(k4), 0x1000, AccessBits::all(), |_, _, _| panic!("harvested a kernel page")),
        refused(k4)
    );
    assert_eq!(user.split(va(k2m + 0x1000)), refused(k2m));
    assert_eq!(user.set_swap(va(k4), swap), refused(k4));
    assert_eq!(user.set_swap(va(empty), swap), refused(empty));
    assert_eq!(user.replace(va(k4), pa(0x50_0000), f), refused(k4));
    assert_eq!(user.replace_swap(va(low), pa(0x50_0000), f), refused(low));
    assert!(!user.set_access_bits(va(k4), true), "no access bits set in the kernel's leaves");
    let e = PagingError::KernelRange { addr: va(k4) };
    assert!(e.to_string().contains("0xffff800000000000") && e.to_string().contains("kernel"), "{e}");
    // Nothing changed anywhere, and no table page came or went.
    assert_eq!(snapshot(&user), user_before);
    assert_eq!((snapshot(&kernel), kernel.table_pages()), kernel_before);
    assert_eq!(user.table_pages(), 1);
    assert_eq!(frames.free_frame_count(), free);
    // The user's own entry 0 still works, right up to the borrowed entry.
    user.map(va(straddle), pa(0x50_0000), PageSize::Size4KiB, f).unwrap().ignore();
    user.unmap_range(va(straddle), 0x1000, |_| {}).unwrap().ignore();
    assert_eq!(frames.free_frame_count(), free, "the user's emptied tables are freed");
    // Teardown frees the user's root only; the kernel's tables stay.
    user.destroy(|u| panic!("destroy reported {u:?}, a kernel mapping"));
    assert_eq!(frames.free_frame_count(), free + 1);
    assert_eq!((snapshot(&kernel), kernel.table_pages()), kernel_before);
    kernel.destroy(|_| {});
    assert_eq!(frames.allocated_blocks(), 0);
}

/// MODEL 2: `update_flags` refusing one leaf changes no other leaf (the
/// closure is asked about every leaf first).
#[test]
fn update_flags_is_all_or_nothing() {
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let rw = MapFlags::READ | MapFlags::WRITE | MapFlags::USER;
    let base = 0x4000_0000u64;
    // Eight 4 KiB pages, then a 2 MiB page.
    pt.map_range(va(base), pa(0x10_0000), 8 * 4096, rw, HugePages::empty()).unwrap().ignore();
    pt.map(va(base + (2 << 20)), pa(0x20_0000), PageSize::Size2MiB, rw).unwrap().ignore();
    let before = snapshot(&pt);
    let len = 4 << 20;
    // Write-protect everything, but page 5's answer cannot be expressed;
    // so can't the huge page's, the last leaf.
    for bad in [base + 5 * 4096, base + (2 << 20)] {
        let r = pt.update_flags(va(base), len, |m| {
            if m.va.as_u64() == bad {
                MapFlags::WRITE
            } else {
                m.flags - MapFlags::WRITE
            }
        });
        assert_eq!(r, Err(PagingError::InvalidFlags));
        assert_eq!(snapshot(&pt), before, "a refused update changed a leaf (bad leaf {bad:#x})");
    }
    // Accepted: every leaf changes, the flush covers them all.
    let flush = pt.update_flags(va(base), len, |m| m.flags - MapFlags::WRITE).unwrap();
    assert_eq!(flush.pages(), 1024, "from the first page to the end of the huge page");
    assert!(snapshot(&pt).values().all(|x| !x.2.contains(MapFlags::WRITE)));
    // A closure that breaks its contract (answers READ when checked, not
    // when applied) leaves that leaf alone, and the others' flush is kept.
    let mut calls = 0;
    let flush = pt
        .update_flags(va(base), 8 * 4096, |m| {
            calls += 1;
            if calls > 8 && m.va.as_u64() == base + 7 * 4096 {
                MapFlags::WRITE
            } else {
                m.flags | MapFlags::WRITE
            }
        })
        .unwrap();
    assert_eq!(calls, 16, "asked twice per leaf");
    assert_eq!(flush.pages(), 7);
    assert!(!pt.translate(va(base + 7 * 4096)).unwrap().flags.contains(MapFlags::WRITE));
    assert!(pt.translate(va(base + 6 * 4096)).unwrap().flags.contains(MapFlags::WRITE));
    pt.destroy(|_| {});
    assert_eq!(frames.allocated_blocks(), 0);
}

#[test]
fn single_page_unmaps_free_tables_as_they_empty() {
    // MODEL 3: one-page unmaps (their own descent) free exactly the tables
    // that empty, in whatever order the pages go; the dirty bit the MMU set
    // is reported; a hole is refused or skipped as the variant says.
    let (ram, frames) = setup();
    let f = MapFlags::KERNEL_DATA;
    // Two pages in one level-1 table, one in another level-1 table under
    // the same level-2 table, one under another level-3 entry.
    let pages = [0x40_0000u64, 0x40_5000, 0x60_0000, 0x80_0000_0000];
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]] {
        let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
        for &p in &pages {
            pt.map(va(p), pa(p), PageSize::Size4KiB, f).unwrap().ignore();
        }
        assert!(pt.set_access_bits(va(pages[1]), true));
        let tables = |pt: &Pt<'_>| pt.table_pages();
        let full = tables(&pt);
        assert_eq!(full, 1 + 2 + 2 + 3, "root, two level-3, two level-2 (one per level-3), three level-1");
        assert_eq!(pt.unmap_range(va(0x40_1000), 0x1000, |_| {}), Err(PagingError::NotMapped { addr: va(0x40_1000) }));
        pt.unmap_present(va(0x40_1000), 0x1000, |_| panic!("nothing there")).unwrap().ignore();
        pt.unmap_present(va(0x7000_0000_0000), 0x1000, |_| panic!("nothing there")).unwrap().ignore();
        assert_eq!(tables(&pt), full, "refused and empty unmaps change nothing");
        let mut left: Vec<u64> = pages.to_vec();
        for i in order {
            let mut got = Vec::new();
            pt.unmap_range(va(pages[i]), 0x1000, |u| got.push(u)).unwrap().ignore();
            let [Unmapped::Page { va: v, frame, size: PageSize::Size4KiB, flags }] = got[..] else {
                panic!("one page removed, got {got:?}")
            };
            assert_eq!((v, frame), (va(pages[i]), pa(pages[i])));
            assert_eq!(flags.contains(MapFlags::DIRTY), i == 1, "the dirty bit of page {i}");
            left.retain(|&p| p != pages[i]);
            // The tables the remaining pages need, and no more.
            let l1: std::collections::BTreeSet<u64> = left.iter().map(|p| p >> 21).collect();
            let l2: std::collections::BTreeSet<u64> = left.iter().map(|p| p >> 30).collect();
            let l3: std::collections::BTreeSet<u64> = left.iter().map(|p| p >> 39).collect();
            assert_eq!(tables(&pt), 1 + (l3.len() + l2.len() + l1.len()) as u64, "after unmapping page {i}");
            assert!(pt.translate(va(pages[i])).is_none());
            for &p in &left {
                assert_eq!(pt.translate(va(p)).map(|t| t.phys), Some(pa(p)));
            }
        }
        // Keeping tables: the tables stay when the page goes.
        pt.map(va(pages[0]), pa(pages[0]), PageSize::Size4KiB, f).unwrap().ignore();
        pt.unmap_range_keep_tables(va(pages[0]), 0x1000, |_| {}).unwrap().ignore();
        assert_eq!(tables(&pt), 4);
        pt.destroy(|_| {});
    }
    assert_eq!(frames.allocated_blocks(), 0, "every table page went back");
}

#[test]
fn live_entry_counts_follow_every_change_and_free_sparse_tables() {
    // MODEL 3: the count each table entry keeps for the table below
    // matches that table after maps (one page and ranges), swap entries,
    // splits, protects and unmaps; a table whose live entries sit far
    // apart is freed when its last one goes.
    let (ram, frames) = setup();
    let f = MapFlags::KERNEL_DATA;
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    let check = |pt: &Pt<'_>, what: &str| assert_eq!(pt.check_table_counts(), Ok(()), "after {what}");
    // The first and last page of one level-1 table.
    let (lo, hi) = (0x4000_0000u64, 0x4000_0000 + 511 * 0x1000);
    pt.map(va(lo), pa(lo), PageSize::Size4KiB, f).unwrap().ignore();
    pt.map(va(hi), pa(hi), PageSize::Size4KiB, f).unwrap().ignore();
    check(&pt, "two single-page maps");
    pt.map_range(va(0x4020_0000), pa(0x4020_0000), 0x40_0000 + 0x3000, f, HugePages::all()).unwrap().ignore();
    check(&pt, "a range with a 2 MiB page");
    pt.set_swap(va(0x5000_0000), SwapSlot::new(0, 9).unwrap()).unwrap().1.ignore();
    pt.set_swap(va(0x4060_1000), SwapSlot::new(0, 10).unwrap()).unwrap().1.ignore();
    check(&pt, "swap entries in a new table and over a mapping");
    pt.split(va(0x4020_0000)).unwrap().ignore();
    pt.protect_range(va(0x4020_0000), 0x2000, MapFlags::READ).unwrap().ignore();
    check(&pt, "a split and a protect");
    pt.unmap_range(va(0x4020_0000), 0x40_0000 + 0x3000, |_| {}).unwrap().ignore();
    pt.unmap_range(va(0x5000_0000), 0x1000, |_| {}).unwrap().ignore();
    check(&pt, "range and swap-entry unmaps");
    let tables = pt.table_pages();
    pt.unmap_range(va(lo), 0x1000, |_| {}).unwrap().ignore();
    assert_eq!(pt.table_pages(), tables, "the last page still needs its table");
    check(&pt, "the first page's unmap");
    pt.unmap_range(va(hi), 0x1000, |_| {}).unwrap().ignore();
    assert_eq!(pt.table_pages(), 1, "the last unmap frees every table but the root");
    pt.destroy(|_| {});
    assert_eq!(frames.allocated_blocks(), 0);
}

#[test]
fn a_count_changed_behind_the_tables_back_is_reported() {
    // The checker itself: an entry written by other code (here the `x86_64`
    // crate, against `from_root`'s contract) leaves the count stale.
    use x86_64::structures::paging::{
        Mapper, OffsetPageTable, Page, PageTable as XTable, PageTableFlags, PhysFrame, Size4KiB,
    };
    let (ram, frames) = setup();
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    pt.map(va(0x7000_0000), pa(0x1000), PageSize::Size4KiB, MapFlags::KERNEL_DATA).unwrap().ignore();
    assert_eq!(pt.check_table_counts(), Ok(()));
    let offset = ram.translate_offset();
    let mut alloc = mm_types::x86::X86FrameAllocator::new(&frames, mm_types::AllocFlags::ZERO);
    // SAFETY: the root is a live table page of `pt`, which is not used while `xpt` writes it.
    let mut xpt = unsafe {
        let table = &mut *((pt.root().as_u64() + offset) as *mut XTable);
        OffsetPageTable::new(table, x86_64::VirtAddr::new(offset))
    };
    let page = Page::<Size4KiB>::containing_address(x86_64::VirtAddr::new(0x7000_1000));
    let frame = PhysFrame::containing_address(x86_64::PhysAddr::new(0x2000));
    // SAFETY: the frame is a number nobody dereferences.
    unsafe { xpt.map_to(page, frame, PageTableFlags::PRESENT, &mut alloc).unwrap().ignore() };
    assert_eq!(pt.check_table_counts(), Err((va(0x7000_0000), 1)));
    pt.destroy(|_| {});
}

/// A deferring unmap unlinks the tables it empties but gives none back
/// until `free_unlinked_tables` (after the TLB flush): the one-page path
/// and the range walk alike, a huge page split on the way included; and
/// `destroy` frees tables still held.
#[test]
fn deferred_unmap_holds_emptied_tables_until_freed() {
    let (ram, frames) = setup();
    let start = frames.free_frame_count();
    let mut pt = Pt::new(X86_64::FOUR_LEVEL, ram, &frames).unwrap();
    let rw = MapFlags::READ | MapFlags::WRITE | MapFlags::USER;
    // Two pages in one table, far from anything else: the root plus three.
    let a = 0x7f00_0000_0000;
    pt.map(va(a), pa(0x10_0000), PageSize::Size4KiB, rw).unwrap().ignore();
    pt.map(va(a + 4096), pa(0x10_1000), PageSize::Size4KiB, rw).unwrap().ignore();
    assert_eq!(pt.table_pages(), 4);
    let held = frames.free_frame_count();

    // One page: the table stays in use, nothing is unlinked.
    let f = pt.unmap_present_deferred(va(a), 4096, |_| {}).unwrap();
    assert_eq!((f.pages(), pt.unlinked(), pt.table_pages()), (1, 0, 4));
    // The last page: its three tables are unlinked and still allocated.
    let f = pt.unmap_present_deferred(va(a + 4096), 4096, |_| {}).unwrap();
    assert_eq!(f.pages(), 1, "the flush covers the page whose tables went");
    assert_eq!((pt.unlinked(), pt.table_pages()), (3, 1));
    assert_eq!(frames.free_frame_count(), held, "no table given back before the flush");
    assert_eq!(pt.translate(va(a + 4096)), None);

    // The range walk, splitting a 2 MiB page: the split table and the
    // tables above it are unlinked too, after the three already held.
    let b = 0x7e00_0000_0000;
    pt.map_range(va(b), pa(0x40_0000), 2 << 20, rw, HugePages::all()).unwrap().ignore();
    assert_eq!(pt.translate(va(b)).unwrap().size, PageSize::Size2MiB);
    let held = frames.free_frame_count();
    let mut removed = 0;
    let f = pt.unmap_present_deferred(va(b), 2 << 20, |_| removed += 1).unwrap();
    assert_eq!((removed, f.pages()), (1, 512));
    assert_eq!((pt.unlinked(), pt.table_pages()), (5, 1), "two more: the level-2 and level-3 tables");
    assert_eq!(frames.free_frame_count(), held);

    assert_eq!(pt.free_unlinked_tables(), 5);
    assert_eq!(pt.unlinked(), 0);
    assert_eq!(pt.free_unlinked_tables(), 0, "each table is freed once");
    assert_eq!(frames.free_frame_count(), held + 5);

    // Held tables at teardown are freed with the rest.
    pt.map(va(a), pa(0x10_0000), PageSize::Size4KiB, rw).unwrap().ignore();
    pt.unmap_present_deferred(va(a), 4096, |_| {}).unwrap().ignore();
    assert_eq!(pt.unlinked(), 3);
    pt.destroy(|_| {});
    assert_eq!(frames.free_frame_count(), start, "every table page back");
}
