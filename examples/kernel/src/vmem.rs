//! Kernel virtual memory: mm-vmalloc over the kernel page table, in Linux's
//! vmalloc window, backed by mm-buddy frames. Kernel stacks come from here,
//! so an overflow runs into an unmapped page instead of a neighbour.

use mm_paging::MapFlags;
use mm_types::{DirectMap, FrameProvider, Order, PageSize, PhysAddr, VirtAddr, VirtRange};
use mm_vmalloc::{AreaOptions, CacheMode, KernelMapper, Vmalloc, VmallocConfig, VmallocError};

use crate::frames::{self, Frames};
use crate::kprintln;
use crate::paging::{self, KernelPt};

/// Start of the window (Linux x86-64's `VMALLOC_START`).
pub const VMALLOC_START: u64 = 0xffff_c900_0000_0000;
/// Its size: 1 TiB.
pub const VMALLOC_SIZE: u64 = 1 << 40;
/// Kernel stack size.
pub const STACK_SIZE: u64 = 64 << 10;

/// The kernel's vmalloc.
pub type Vm = Vmalloc<&'static KernelPt, &'static Frames, DirectMap>;

static VM: spin::Once<Vm> = spin::Once::new();

/// Sets vmalloc up over the kernel page table (after paging::build_and_switch).
pub fn init(frames: &'static Frames) -> Result<&'static Vm, VmallocError> {
    let pt = paging::tables().ok_or(VmallocError::BadConfig("no kernel page table yet"))?;
    let window = VirtRange::new(VirtAddr::new(VMALLOC_START).expect("canonical"), VMALLOC_SIZE).expect("window");
    let vm = Vmalloc::new(pt, frames, frames::identity_map(), VmallocConfig::new(window))?;
    Ok(VM.call_once(|| vm))
}

/// The kernel's vmalloc, once set up.
pub fn vm() -> Option<&'static Vm> {
    VM.get()
}

/// Frames vmalloc holds for its own index.
pub fn index_frames() -> u64 {
    vm().map_or(0, |v| v.stats().index_frames)
}

/// A kernel stack: its lowest and one-past-highest address.
pub fn alloc_stack(vm: &Vm) -> Result<(u64, u64), VmallocError> {
    let start = vm.vmalloc_with(STACK_SIZE, AreaOptions::new().caller("kernel stack"))?.as_u64();
    Ok((start, start + STACK_SIZE))
}

/// What the vmalloc window says about a faulting address: in which area's
/// guard it lies, or which area it is just below (a stack overflow).
pub fn explain(addr: u64) {
    let Some(vm) = vm() else { return };
    let Ok(va) = VirtAddr::new(addr) else { return };
    if let Some(a) = vm.find_area(va) {
        let place = if a.in_guard(va) { "the guard page of" } else { "" };
        kprintln!(
            "vmalloc: {:#x} is in {} the area {:#x}+{:#x} of {:?}",
            addr,
            place,
            a.start.as_u64(),
            a.size,
            a.caller
        );
        return;
    }
    let above = VirtAddr::new((addr | 0xfff) + 1).ok().and_then(|v| vm.find_area(v));
    if let Some(a) = above.filter(|a| a.start.as_u64() == (addr | 0xfff) + 1) {
        kprintln!(
            "vmalloc: {:#x} is in the unmapped page below the area {:#x}+{:#x} of {:?}: a {} overflow",
            addr,
            a.start.as_u64(),
            a.size,
            a.caller,
            if a.caller == "kernel stack" { "stack" } else { "downward" }
        );
    }
}

fn fill(addr: u64, len: u64, seed: u64) {
    for i in (0..len).step_by(8) {
        // SAFETY: `addr..addr + len` is a live vmalloc area of the caller, mapped read-write.
        unsafe { core::ptr::write_volatile((addr + i) as *mut u64, seed ^ i) };
    }
}

fn holds(addr: u64, len: u64, seed: u64) -> bool {
    // SAFETY: as in `fill`.
    (0..len).step_by(8).all(|i| unsafe { core::ptr::read_volatile((addr + i) as *const u64) } == seed ^ i)
}

/// Exercises vmalloc on the real page tables: areas written and read back
/// through their mappings, guard pages, a zeroed area, a huge-page area, a
/// vmap of scattered frames, an ioremap of the local APIC, vmallocinfo,
/// frees (and a double free), and at the end every frame back.
pub fn smoke(buddy: &'static Frames) -> bool {
    let Some(vm) = vm() else { return false };
    let pt = vm.mapper();
    let free_before = buddy.free_frame_count() + buddy.cached_frames();
    let tables_before = pt.lock().table_pages();
    // Areas made at boot (the other CPUs' stacks, the local APIC) stay.
    let before = vm.stats();
    let mut info = InfoLines { buf: [0; 160], len: 0, lines: 0 };
    let _ = vm.write_info(&mut info);
    let lines_before = info.lines;
    let mut ok = true;
    let at = |a: u64| pt.translate(VirtAddr::new(a).expect("canonical"));

    let a = vm.vmalloc_with(5 * 4096 + 100, AreaOptions::new().caller("smoke")).expect("vmalloc");
    let a = a.as_u64();
    fill(a, 6 * 4096, 0xa5a5);
    let guard_unmapped = at(a + 6 * 4096).is_none();
    let guard_named =
        vm.find_area(VirtAddr::new(a + 6 * 4096 + 8).expect("canonical")).is_some_and(|i| i.caller == "smoke");
    ok &= holds(a, 6 * 4096, 0xa5a5) && guard_unmapped && guard_named;
    kprintln!(
        "vmalloc: 6 pages at {:#x} written and read back; guard page unmapped: {}; named: {}",
        a,
        guard_unmapped,
        guard_named
    );

    let z = vm.vzalloc(64 << 10).expect("vzalloc").as_u64();
    // SAFETY: a live 64 KiB vmalloc area.
    let zeroed = (0..64 << 10).step_by(8).all(|i| unsafe { core::ptr::read_volatile((z + i) as *const u64) } == 0);
    ok &= zeroed;

    let h = vm.vmalloc_huge(4 << 20).expect("vmalloc_huge").as_u64();
    let huge = at(h).is_some_and(|t| t.size == PageSize::Size2MiB) && h % (2 << 20) == 0;
    fill(h, 4 << 20, 0x4242);
    ok &= huge && holds(h, 4 << 20, 0x4242);
    kprintln!("vmalloc: zeroed 64 KiB: {}; 4 MiB on 2 MiB pages at {:#x}: {}", zeroed, h, huge);

    // vmap: three frames in reverse order, written through the direct map.
    let mut mine = [PhysAddr::ZERO; 3];
    for (i, f) in mine.iter_mut().enumerate() {
        *f = buddy.allocate_frame(Default::default()).expect("frame");
        // SAFETY: the frame was just allocated to us; the identity map reaches it.
        unsafe { core::ptr::write_volatile(f.as_u64() as *mut u64, 0x1000 + i as u64) };
    }
    mine.reverse();
    let v = vm.vmap(&mine, AreaOptions::new().caller("smoke vmap")).expect("vmap").as_u64();
    let word = |page: u64| {
        // SAFETY: a live vmap area of three pages; `page` is below 3.
        unsafe { core::ptr::read_volatile((v + page * 4096) as *const u64) }
    };
    let seen = [word(0), word(1), word(2)];
    let vmap_ok = seen == [0x1002, 0x1001, 0x1000];
    ok &= vmap_ok;

    // ioremap: the local APIC's registers, uncached; the version register.
    let apic = vm.ioremap(PhysAddr::new(0xfee0_0030).expect("low"), 4, CacheMode::Uncached).expect("ioremap");
    let uncached = at(apic.as_u64()).is_some_and(|t| t.flags.contains(MapFlags::NO_CACHE));
    // SAFETY: an uncached mapping of the local APIC's version register (read-only, no side effects).
    let version = unsafe { core::ptr::read_volatile(apic.as_u64() as *const u32) };
    let apic_ok = uncached && version & 0xff != 0 && version != u32::MAX;
    ok &= apic_ok;
    kprintln!(
        "vmalloc: vmap of 3 frames in reverse order: {}; ioremap local APIC version {:#x}, uncached: {}",
        vmap_ok,
        version,
        apic_ok
    );

    // Through a line buffer on the stack: the heap's frames would blur the
    // frame count checked at the end.
    let mut info = InfoLines { buf: [0; 160], len: 0, lines: 0 };
    let _ = vm.write_info(&mut info);
    ok &= info.lines == lines_before + 5;

    for (addr, r) in [
        (a, vm.vfree(VirtAddr::new(a).expect("canonical"))),
        (z, vm.vfree(VirtAddr::new(z).expect("canonical"))),
        (h, vm.vfree(VirtAddr::new(h).expect("canonical"))),
        (v, vm.vunmap(VirtAddr::new(v).expect("canonical"))),
        (apic.as_u64(), vm.iounmap(apic)),
    ] {
        if let Err(e) = r {
            kprintln!("vmalloc: freeing {:#x} failed: {}", addr, e);
            ok = false;
        }
    }
    for f in mine {
        ok &= buddy.free(mm_types::FrameBlock::from_addr(f, Order::ZERO).expect("frame")).is_ok();
    }
    let va = VirtAddr::new(a).expect("canonical");
    let double = vm.vfree(va);
    ok &= double == Err(VmallocError::DoubleFree(va)) && at(a).is_none();
    let purged = vm.purge();
    let s = vm.stats();
    // Page tables created for the window stay (MODEL 11); every other frame is back.
    let held = free_before - (buddy.free_frame_count() + buddy.cached_frames());
    let back = s.areas == before.areas && s.frames == before.frames && held == pt.lock().table_pages() - tables_before;
    ok &= back;
    kprintln!(
        "vmalloc: double free -> {:?}; purge made {} pages reusable with one TLB flush; frames back: {} ({} kept as window page tables)",
        double,
        purged,
        back,
        held
    );
    kprintln!("vmalloc: {}", if ok { "ok" } else { "FAILED" });
    ok
}

/// Prints `write_info`'s output line by line, buffering on the stack.
struct InfoLines {
    buf: [u8; 160],
    len: usize,
    lines: usize,
}

impl core::fmt::Write for InfoLines {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                kprintln!("vmallocinfo: {}", core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?"));
                self.len = 0;
                self.lines += 1;
            } else if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}
