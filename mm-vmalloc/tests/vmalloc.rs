//! mm-vmalloc on the host test kit: areas are mapped through mm-paging
//! tables in simulated RAM, and read and written through those mappings.
//! Comments name MODEL.md invariants.

use mm_buddy::{BuddyAllocator, BuddyConfig};
use mm_paging::{MapFlags, NoShootdown, PageTable, PagingError, RecordingTlb, X86_64};
use mm_types::percpu::SingleCpu;
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{FrameError, FrameProvider, Order, PageSize, PhysAddr, PhysMemory, VirtAddr, VirtRange, PAGE_BYTES};
use mm_vmalloc::{
    AreaKind, AreaOptions, CacheMode, KernelMapper, SharedPageTable, Vmalloc, VmallocConfig, VmallocError,
};

const BASE: u64 = 0xffff_c900_0000_0000;

type Kernel<'a, F> = SharedPageTable<X86_64, &'a SimPhysMemory, &'a F, RecordingTlb, NoShootdown>;

fn va(a: u64) -> VirtAddr {
    VirtAddr::new(a).unwrap()
}

fn window(len: u64) -> VirtRange {
    VirtRange::new(va(BASE), len).unwrap()
}

fn kernel<'a, F: FrameProvider>(ram: &'a SimPhysMemory, frames: &'a F) -> Kernel<'a, F> {
    let table = PageTable::new(X86_64::FOUR_LEVEL, ram, frames).unwrap();
    SharedPageTable::new(table, RecordingTlb::default(), NoShootdown)
}

/// Calls `f(phys, range)` for each piece of `[at, at + len)` that lies in
/// one page: the piece's physical address and its offsets in the buffer.
fn for_each_piece(k: &impl KernelMapper, at: u64, len: usize, mut f: impl FnMut(PhysAddr, core::ops::Range<usize>)) {
    let mut done = 0;
    while done < len {
        let addr = at + done as u64;
        let n = ((PAGE_BYTES - addr % PAGE_BYTES) as usize).min(len - done);
        f(k.translate(va(addr)).expect("mapped").phys, done..done + n);
        done += n;
    }
}

/// Writes `bytes` at virtual address `at` through the kernel page table,
/// one translation per page touched.
fn write_virt(k: &impl KernelMapper, ram: &SimPhysMemory, at: u64, bytes: &[u8]) {
    for_each_piece(k, at, bytes.len(), |phys, r| {
        // SAFETY: the piece lies in one page of a live area of the test, and
        // nothing else touches that page meanwhile.
        unsafe { ram.write_bytes(phys, &bytes[r]).unwrap() };
    });
}

/// Reads `len` bytes at virtual address `at` through the kernel page table,
/// one translation per page touched.
fn read_virt(k: &impl KernelMapper, ram: &SimPhysMemory, at: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    for_each_piece(k, at, len, |phys, r| {
        // SAFETY: the piece lies in one page of a live area of the test, and
        // nobody writes that page meanwhile.
        unsafe { ram.read_bytes(phys, &mut out[r]).unwrap() };
    });
    out
}

fn buddy(ram: &SimPhysMemory) -> BuddyAllocator<'static, SimPhysMemory, SingleCpu> {
    let b = BuddyAllocator::new(ram.clone(), SingleCpu, BuddyConfig::default()).unwrap();
    // SAFETY: the simulated RAM belongs to this allocator alone.
    unsafe { b.add_memory(ram.span()).unwrap() };
    b
}

#[test]
fn areas_are_mapped_readable_writable_and_guarded() {
    // MODEL.md 1, 2, 3.
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 30))).unwrap();
    let a = vm.vmalloc_with(5 * PAGE_BYTES - 10, AreaOptions::new().caller("test")).unwrap();
    let b = vm.vmalloc(PAGE_BYTES).unwrap();
    assert_eq!(a, va(BASE), "lowest fit: the window's start");
    assert_eq!(b.as_u64(), BASE + 6 * PAGE_BYTES, "after a's 5 pages and its guard page");
    // Data written through the area's addresses reads back, across pages.
    let data: Vec<u8> = (0..5 * PAGE_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    write_virt(&k, &ram, a.as_u64() + 100, &data[..9000]);
    assert_eq!(read_virt(&k, &ram, a.as_u64() + 100, 9000), data[..9000]);
    // The guard page is unmapped.
    assert!(k.translate(va(BASE + 5 * PAGE_BYTES)).is_none());
    let info = vm.find_area(va(BASE + 3 * PAGE_BYTES + 5)).unwrap();
    assert_eq!((info.start, info.size, info.guard, info.caller), (a, 5 * PAGE_BYTES, PAGE_BYTES, "test"));
    assert!(info.in_guard(va(BASE + 5 * PAGE_BYTES + 8)));
    assert_eq!(vm.find_area(va(BASE + 5 * PAGE_BYTES)).unwrap().start, a, "the guard belongs to its area");
    assert_eq!(info.kind, AreaKind::Vmalloc { order: 0, huge: false });
    // The backing frames: five distinct 4 KiB frames, as the page table says.
    let mut pages = Vec::new();
    vm.area_frames(a, |v, f, size| pages.push((v, f, size))).unwrap();
    for &(v, f, size) in &pages {
        assert_eq!(size, PageSize::Size4KiB);
        assert_eq!(k.translate(v).unwrap().frame, f);
    }
    let mut listed: Vec<u64> = pages.iter().map(|p| p.1.as_u64()).collect();
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), 5);
    let s = vm.stats();
    assert_eq!((s.areas, s.mapped_bytes, s.frames), (2, 6 * PAGE_BYTES, 6));
    vm.check().unwrap();
    vm.vfree(a).unwrap();
    vm.vfree(b).unwrap();
    assert!(k.translate(a).is_none());
    vm.check().unwrap();
}

#[test]
fn frees_are_lazy_until_a_purge_flushes_the_tlb_once() {
    // MODEL.md 4, 5.
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let config = VmallocConfig { lazy_max_pages: 20, ..VmallocConfig::new(window(1 << 30)) };
    let vm = Vmalloc::new(&k, &frames, &ram, config).unwrap();
    let a = vm.vmalloc(4 * PAGE_BYTES).unwrap();
    let free_frames = frames.free_frame_count();
    vm.vfree(a).unwrap();
    assert_eq!(frames.free_frame_count(), free_frames + 4, "frames go back at once");
    assert!(k.translate(a).is_none(), "unmapped at once");
    assert_eq!(vm.stats().lazy_bytes, 5 * PAGE_BYTES);
    let flushes = |k: &Kernel<'_, RefFrameProvider>| {
        let t = k.tlb();
        t.full_flushes + t.pages.total()
    };
    assert_eq!(flushes(&k), 0, "no flush yet");
    // Not reused before the purge: the next area goes elsewhere.
    let b = vm.vmalloc(4 * PAGE_BYTES).unwrap();
    assert_ne!(a, b);
    // An explicit purge flushes once and makes the range allocatable.
    assert_eq!(vm.purge(), 5);
    assert_eq!(vm.stats().purges, 1);
    assert!(flushes(&k) > 0);
    assert_eq!(vm.vmalloc(4 * PAGE_BYTES).unwrap(), a, "the purged range is the lowest fit again");
    assert_eq!(vm.purge(), 0, "nothing lazy");
    // Past the threshold (20 pages), a free purges by itself.
    let many: Vec<_> = (0..5).map(|_| vm.vmalloc(4 * PAGE_BYTES).unwrap()).collect();
    for (i, m) in many.into_iter().enumerate() {
        vm.vfree(m).unwrap();
        assert_eq!(vm.stats().purges, if i < 4 { 1 } else { 2 }, "free {i}: 5 pages each, purge above 20");
    }
    vm.check().unwrap();
}

#[test]
fn free_ranges_coalesce_and_the_lowest_fit_wins() {
    // MODEL.md 6, 7.
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 30))).unwrap();
    let o = AreaOptions::new().no_guard();
    let areas: Vec<_> = (0..8).map(|_| vm.vmalloc_with(PAGE_BYTES, o).unwrap()).collect();
    for (i, a) in areas.iter().enumerate() {
        assert_eq!(a.as_u64(), BASE + i as u64 * PAGE_BYTES, "no guard: adjacent");
    }
    // Free 1, 2 (adjacent: one range) and 5.
    for i in [1, 2, 5] {
        vm.vfree(areas[i]).unwrap();
    }
    vm.purge();
    let s = vm.stats();
    assert_eq!(s.free_ranges, 3, "[1,3), [5,6) and the rest of the window");
    // A 2-page area takes the lowest hole that fits: [1, 3).
    assert_eq!(vm.vmalloc_with(2 * PAGE_BYTES, o).unwrap(), areas[1]);
    // A 1-page area takes the next lowest: page 5.
    assert_eq!(vm.vmalloc_with(PAGE_BYTES, o).unwrap(), areas[5]);
    assert_eq!(vm.stats().free_ranges, 1);
    // An aligned request skips unaligned holes.
    let al = vm.vmalloc_with(PAGE_BYTES, o.align(64 << 10)).unwrap();
    assert_eq!(al.as_u64(), BASE + (64 << 10));
    vm.check().unwrap();
    // Freeing everything leaves one free range: the whole window.
    let mut live = Vec::new();
    vm.for_each_area(|a| live.push(a.start));
    assert_eq!(live.len(), 8);
    for a in live {
        vm.vfree(a).unwrap();
    }
    vm.purge();
    let s = vm.stats();
    assert_eq!((s.free_ranges, s.free_bytes, s.largest_free), (1, 1 << 30, 1 << 30));
    vm.check().unwrap();
}

#[test]
fn large_alignments_find_holes_the_guaranteed_search_misses() {
    // A 1 MiB window: 16 KiB aligned areas. After frees, the only hole that
    // fits a 16 KiB-aligned 16 KiB area is exactly 16 KiB long: the
    // guaranteed search (needs 28 KiB) misses it, the exact one finds it.
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 20))).unwrap();
    let o = AreaOptions::new().no_guard();
    let all: Vec<_> = (0..64).map(|_| vm.vmalloc_with(4 * PAGE_BYTES, o).unwrap()).collect();
    assert_eq!(vm.vmalloc_with(PAGE_BYTES, o), Err(VmallocError::NoSpace { size: PAGE_BYTES, align: PAGE_BYTES }));
    vm.vfree(all[9]).unwrap();
    vm.purge();
    let a = vm.vmalloc_with(4 * PAGE_BYTES, o.align(16 << 10)).unwrap();
    assert_eq!(a, all[9]);
    vm.check().unwrap();
}

#[test]
fn bad_input_gets_specific_errors() {
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 24))).unwrap();
    assert_eq!(vm.vmalloc(0), Err(VmallocError::ZeroSize));
    assert_eq!(
        vm.vmalloc_with(PAGE_BYTES, AreaOptions::new().align(3 * PAGE_BYTES)),
        Err(VmallocError::BadAlignment(3 * PAGE_BYTES))
    );
    assert_eq!(vm.vmalloc_with(PAGE_BYTES, AreaOptions::new().align(512)), Err(VmallocError::BadAlignment(512)));
    // The guard page is what does not fit.
    assert_eq!(vm.vmalloc(1 << 24), Err(VmallocError::TooLarge { size: (1 << 24) + PAGE_BYTES, window: 1 << 24 }));
    assert!(matches!(vm.vmalloc((1 << 24) + 1), Err(VmallocError::TooLarge { .. })));
    assert!(matches!(vm.vmalloc(u64::MAX), Err(VmallocError::TooLarge { .. })));
    let a = vm.vmalloc(3 * PAGE_BYTES).unwrap();
    assert_eq!(
        vm.vfree(va(a.as_u64() + PAGE_BYTES)),
        Err(VmallocError::NotAreaStart { addr: va(a.as_u64() + PAGE_BYTES), area: a })
    );
    assert_eq!(vm.vfree(va(BASE + (1 << 23))), Err(VmallocError::NotAnArea(va(BASE + (1 << 23)))));
    assert_eq!(vm.vfree(va(0x1000)), Err(VmallocError::NotAnArea(va(0x1000))));
    assert_eq!(
        vm.vunmap(a),
        Err(VmallocError::WrongKind { addr: a, kind: AreaKind::Vmalloc { order: 0, huge: false } })
    );
    assert_eq!(
        vm.iounmap(a).unwrap_err(),
        VmallocError::WrongKind { addr: a, kind: AreaKind::Vmalloc { order: 0, huge: false } }
    );
    vm.vfree(a).unwrap();
    assert_eq!(vm.vfree(a), Err(VmallocError::DoubleFree(a)));
    vm.purge();
    assert_eq!(vm.vfree(a), Err(VmallocError::NotAnArea(a)), "after the purge the range is just free");
    let bad = PhysAddr::new(0x5008).unwrap();
    assert_eq!(vm.vmap(&[PhysAddr::new(0x4000).unwrap(), bad], AreaOptions::new()), Err(VmallocError::BadPhys(bad)));
    assert_eq!(vm.vmap(&[], AreaOptions::new()), Err(VmallocError::ZeroSize));
    assert_eq!(vm.ioremap(PhysAddr::new(0xfee0_0000).unwrap(), 0, CacheMode::Uncached), Err(VmallocError::ZeroSize));
    // A window that is not page aligned, or wraps.
    let w = VirtRange::new(va(BASE + 12), 1 << 20).unwrap();
    assert!(matches!(Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(w)), Err(VmallocError::BadConfig(_))));
    let top = VirtRange::new(va(0xffff_ffff_ffe0_0000), 2 << 20).unwrap();
    assert!(matches!(Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(top)), Err(VmallocError::BadConfig(_))));
    // Exhaustion: a 64 KiB window holds 8 one-page areas with guards.
    let small =
        Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(VirtRange::new(va(BASE + (1 << 30)), 1 << 16).unwrap()))
            .unwrap();
    let got: Vec<_> = (0..8).map(|_| small.vmalloc(PAGE_BYTES).unwrap()).collect();
    assert_eq!(small.vmalloc(PAGE_BYTES), Err(VmallocError::NoSpace { size: 2 * PAGE_BYTES, align: PAGE_BYTES }));
    // A lazily freed area is purged when space runs out.
    small.vfree(got[3]).unwrap();
    assert_eq!(small.vmalloc(PAGE_BYTES).unwrap(), got[3]);
    vm.check().unwrap();
    small.check().unwrap();
}

#[test]
fn a_failure_midway_gives_everything_back() {
    // MODEL.md 8.
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 16 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 30))).unwrap();
    // Warm up so the page tables for the window's start exist.
    let w = vm.vmalloc(PAGE_BYTES).unwrap();
    vm.vfree(w).unwrap();
    vm.purge();
    let before = frames.free_frame_count();
    // The 150th frame of a 200-page area is refused: the 149 taken go back.
    frames.fail_nth_allocation(150);
    let err = vm.vmalloc(200 * PAGE_BYTES).unwrap_err();
    assert_eq!(err, VmallocError::OutOfFrames(FrameError::OutOfMemory { order: Order::ZERO }));
    assert_eq!(frames.free_frame_count(), before, "every frame came back");
    assert_eq!(vm.stats().areas, 0);
    vm.purge();
    let s = vm.stats();
    assert_eq!((s.free_ranges, s.free_bytes), (1, 1 << 30), "and the range");
    // The page table refuses (someone else mapped a page of the window):
    // the frames mapped so far are unmapped and freed.
    {
        let mut t = k.lock();
        let f = frames.allocate_frame(Default::default()).unwrap();
        t.map(va(BASE + 100 * PAGE_BYTES), f, PageSize::Size4KiB, MapFlags::KERNEL_DATA).unwrap().ignore();
    }
    let before = frames.free_frame_count();
    let err = vm.vmalloc(200 * PAGE_BYTES).unwrap_err();
    assert_eq!(err, VmallocError::Paging(PagingError::AlreadyMapped { addr: va(BASE + 100 * PAGE_BYTES) }));
    // Mapping may have created page-table pages; they stay with the table.
    let tables = k.lock().table_pages();
    assert!(frames.free_frame_count() + 4 >= before && frames.free_frame_count() <= before);
    assert!(k.translate(va(BASE)).is_none(), "the mapped part was unmapped");
    assert_eq!(k.lock().table_pages(), tables);
    vm.check().unwrap();
}

#[test]
fn huge_areas_use_2mib_pages_and_fall_back_to_frames() {
    // MODEL.md 9.
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 30))).unwrap();
    let before = frames.free_frame_count();
    let h = vm.vmalloc_huge(3 << 20).unwrap();
    assert_eq!(h.as_u64() % (2 << 20), 0);
    let info = vm.find_area(h).unwrap();
    assert_eq!((info.size, info.kind), (4 << 20, AreaKind::Vmalloc { order: 9, huge: true }));
    let t = k.translate(va(h.as_u64() + (3 << 20) + 5)).unwrap();
    assert_eq!(t.size, PageSize::Size2MiB);
    write_virt(&k, &ram, h.as_u64() + (2 << 20) - 2, b"span");
    assert_eq!(read_virt(&k, &ram, h.as_u64() + (2 << 20) - 2, 4), b"span");
    // Smaller than 2 MiB: ordinary pages.
    let s = vm.vmalloc_huge(PAGE_BYTES).unwrap();
    assert_eq!(vm.find_area(s).unwrap().kind, AreaKind::Vmalloc { order: 0, huge: false });
    vm.vfree(h).unwrap();
    vm.vfree(s).unwrap();
    vm.purge();
    // Page tables may keep some frames; the 2 MiB blocks all came back.
    assert!(before - frames.free_frame_count() < 16, "{} frames missing", before - frames.free_frame_count());
    // No 2 MiB block: the area is built from single frames.
    let small = RefFrameProvider::new(&ram).with_max_order(Order::new(3).unwrap());
    let k2 = kernel(&ram, &small);
    let vm2 = Vmalloc::new(&k2, &small, &ram, VmallocConfig::new(window(1 << 30))).unwrap();
    let h = vm2.vmalloc_huge(2 << 20).unwrap();
    assert_eq!(vm2.find_area(h).unwrap().kind, AreaKind::Vmalloc { order: 0, huge: false });
    assert_eq!(k2.translate(h).unwrap().size, PageSize::Size4KiB);
    assert_eq!(vm2.stats().frames, 512);
    vm2.vfree(h).unwrap();
    assert_eq!(vm2.stats().frames, 0);
}

#[test]
fn block_orders_are_freed_as_blocks() {
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 16 << 20);
    let frames = buddy(&ram);
    let k = kernel(&ram, &frames);
    let config = VmallocConfig { page_order: 2, ..VmallocConfig::new(window(1 << 30)) };
    let vm = Vmalloc::new(&k, &frames, &ram, config).unwrap();
    let free = || frames.free_frame_count() + frames.cached_frames();
    let before = free();
    let a = vm.vmalloc(64 * PAGE_BYTES).unwrap();
    assert_eq!(vm.find_area(a).unwrap().kind, AreaKind::Vmalloc { order: 2, huge: false });
    // 6 pages: blocks of 2 (the largest order dividing the size, up to 2).
    let b = vm.vmalloc(6 * PAGE_BYTES).unwrap();
    assert_eq!(vm.find_area(b).unwrap().kind, AreaKind::Vmalloc { order: 1, huge: false });
    let mut frames_of_a = Vec::new();
    vm.area_frames(a, |_, f, _| frames_of_a.push(f.as_u64())).unwrap();
    for blk in frames_of_a.chunks(4) {
        assert_eq!(blk[0] % (4 * PAGE_BYTES), 0, "each block is aligned");
        assert!(blk.windows(2).all(|w| w[1] == w[0] + PAGE_BYTES), "and contiguous");
    }
    vm.vfree(a).unwrap();
    vm.vfree(b).unwrap();
    // mm-buddy refuses frees of the wrong order: all were accepted.
    let tables = k.lock().table_pages();
    assert_eq!(free() + tables - 1, before);
}

#[test]
fn vmap_maps_caller_frames_and_leaves_them_to_the_caller() {
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 30))).unwrap();
    let mine: Vec<PhysAddr> = (0..5).map(|_| frames.allocate_frame(Default::default()).unwrap()).rev().collect();
    for (i, f) in mine.iter().enumerate() {
        // SAFETY: the test owns these frames.
        unsafe { ram.write_bytes(*f, &[i as u8 + 1; 8]).unwrap() };
    }
    let v = vm.vmap(&mine, AreaOptions::new().caller("vmap-test")).unwrap();
    for i in 0..5 {
        assert_eq!(read_virt(&k, &ram, v.as_u64() + i * PAGE_BYTES, 8), vec![i as u8 + 1; 8]);
    }
    assert_eq!(vm.find_area(v).unwrap().kind, AreaKind::Vmap);
    assert_eq!(vm.vfree(v), Err(VmallocError::WrongKind { addr: v, kind: AreaKind::Vmap }));
    let allocated = frames.allocated_blocks();
    vm.vunmap(v).unwrap();
    assert_eq!(frames.allocated_blocks(), allocated, "vunmap frees no frame");
    assert!(k.translate(v).is_none());
}

#[test]
fn ioremap_maps_device_memory_with_its_cache_mode() {
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 30))).unwrap();
    let regs = vm.ioremap(PhysAddr::new(0xfee0_0020).unwrap(), 0x1000, CacheMode::Uncached).unwrap();
    assert_eq!(regs.as_u64() % PAGE_BYTES, 0x20, "the offset inside the page is kept");
    let t = k.translate(regs).unwrap();
    assert_eq!(t.phys.as_u64(), 0xfee0_0020);
    assert!(t.flags.contains(MapFlags::NO_CACHE | MapFlags::WRITE_THROUGH));
    let info = vm.find_area(regs).unwrap();
    assert_eq!(info.size, 2 * PAGE_BYTES, "0x20 + 0x1000 bytes cross a page boundary");
    // A 4 MiB frame buffer at a 2 MiB aligned address: 2 MiB pages.
    let fb = vm.ioremap(PhysAddr::new(0xe000_0000).unwrap(), 4 << 20, CacheMode::WriteThrough).unwrap();
    let t = k.translate(va(fb.as_u64() + (3 << 20))).unwrap();
    assert_eq!((t.size, t.phys.as_u64()), (PageSize::Size2MiB, 0xe030_0000));
    assert!(t.flags.contains(MapFlags::WRITE_THROUGH) && !t.flags.contains(MapFlags::NO_CACHE));
    let mut info = String::new();
    vm.write_info(&mut info).unwrap();
    assert_eq!(info.lines().count(), 2);
    assert!(info.contains("phys=0xfee00000 ioremap Uncached"), "{info}");
    vm.iounmap(regs).unwrap();
    vm.iounmap(fb).unwrap();
    assert!(k.translate(regs).is_none() && k.translate(fb).is_none());
    assert_eq!(vm.stats().areas, 0);
}

#[test]
fn vmallocinfo_lists_areas_in_address_order() {
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 8 << 20);
    let frames = RefFrameProvider::new(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 30))).unwrap();
    let _a = vm.vmalloc_with(2 * PAGE_BYTES, AreaOptions::new().caller("alpha")).unwrap();
    let _b = vm.vmalloc_with(PAGE_BYTES, AreaOptions::new().caller("beta").no_guard()).unwrap();
    let mut s = String::new();
    vm.write_info(&mut s).unwrap();
    let lines: Vec<_> = s.lines().collect();
    assert_eq!(lines[0], "0xffffc90000000000-0xffffc90000003000      12288 alpha pages=2 vmalloc");
    assert_eq!(lines[1], "0xffffc90000003000-0xffffc90000004000       4096 beta pages=1 vmalloc");
}

#[test]
fn many_live_areas_keep_the_index_shallow_and_consistent() {
    // MODEL.md 6, 10.
    // Interpreted, fewer areas over less RAM (the buddy allocator's set-up
    // is per frame).
    let (n, mib) = if cfg!(miri) { (120, 8) } else { (3000, 64) };
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), mib << 20);
    let frames = buddy(&ram);
    let k = kernel(&ram, &frames);
    let vm = Vmalloc::new(&k, &frames, &ram, VmallocConfig::new(window(1 << 36))).unwrap();
    let mut rng = mm_types::testkit::fuzzing::XorShift(7);
    let mut live: Vec<VirtAddr> = (0..n).map(|i| vm.vmalloc((1 + i % 3) * PAGE_BYTES).unwrap()).collect();
    // Free every other area: n/2 free ranges between the live ones.
    let mut kept = Vec::new();
    for (i, a) in live.drain(..).enumerate() {
        if i % 2 == 0 {
            vm.vfree(a).unwrap();
        } else {
            kept.push(a);
        }
    }
    vm.purge();
    vm.check().unwrap();
    let s = vm.stats();
    assert_eq!(s.free_ranges, n / 2 + 1);
    let log2 = 64 - s.free_ranges.leading_zeros();
    assert!(s.free_tree_height <= 4 * log2, "free tree height {} for {} ranges", s.free_tree_height, s.free_ranges);
    assert!(s.area_tree_height <= 4 * log2, "area tree height {}", s.area_tree_height);
    // Random frees and allocations.
    for _ in 0..n {
        if rng.next() % 2 == 0 && !kept.is_empty() {
            let i = (rng.next() % kept.len() as u64) as usize;
            vm.vfree(kept.swap_remove(i)).unwrap();
        } else {
            kept.push(vm.vmalloc((1 + rng.next() % 4) * PAGE_BYTES).unwrap());
        }
    }
    vm.check().unwrap();
    for a in kept {
        vm.vfree(a).unwrap();
    }
    vm.purge();
    vm.check().unwrap();
    assert_eq!(vm.stats().free_ranges, 1);
}

#[test]
fn threads_allocate_and_free_concurrently() {
    let mib = if cfg!(miri) { 8 } else { 32 };
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), mib << 20);
    let frames = buddy(&ram);
    let k = kernel(&ram, &frames);
    let config = VmallocConfig { lazy_max_pages: 64, ..VmallocConfig::new(window(1 << 32)) };
    let vm = Vmalloc::new(&k, &frames, &ram, config).unwrap();
    let rounds = if cfg!(miri) { 10 } else { 300 };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let vm = &vm;
            let k = &k;
            let ram = &ram;
            s.spawn(move || {
                let mut mine = Vec::new();
                for i in 0..rounds {
                    let a = vm.vmalloc((1 + (i + t) % 3) * PAGE_BYTES).unwrap();
                    write_virt(k, ram, a.as_u64(), &[t as u8; 16]);
                    mine.push(a);
                    if i % 3 == 2 {
                        let a = mine.remove(0);
                        assert_eq!(read_virt(k, ram, a.as_u64(), 16), vec![t as u8; 16], "nobody else wrote here");
                        vm.vfree(a).unwrap();
                    }
                }
                for a in mine {
                    vm.vfree(a).unwrap();
                }
            });
        }
    });
    vm.purge();
    vm.check().unwrap();
    let s = vm.stats();
    assert_eq!((s.areas, s.frames, s.free_ranges), (0, 0, 1));
}
