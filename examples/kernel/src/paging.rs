//! The kernel's own page tables, built with mm-paging from frames of
//! mm-buddy, replacing the boot identity map:
//!
//! - an identity map of RAM except page 0, with the kernel image at per-section
//!   permissions (text read+execute, rodata read-only, data and bss
//!   read+write, no-execute) and everything else read+write, no-execute,
//!   using 2 MiB pages wherever alignment allows;
//! - a direct map of all RAM at [`DIRECT_MAP`] (Linux's `PAGE_OFFSET`),
//!   using the largest pages alignment allows.

use mm_paging::{HardwareTlb, HugePages, MapFlags, PageTable, PagingError, X86_64};
use mm_types::{DirectMap, PageSize, PhysAddr, PhysRange, VirtAddr};
use mm_vmalloc::SharedPageTable;

use crate::frames::Frames;
use crate::shootdown::KernelShootdown;
use crate::vmem::{VMALLOC_SIZE, VMALLOC_START};

/// Where the direct map of physical memory starts.
pub const DIRECT_MAP: u64 = 0xffff_8880_0000_0000;

/// The kernel's page table type.
pub type KernelTables = PageTable<X86_64, DirectMap, &'static Frames>;

/// The kernel page table behind its lock, with the TLB of the CPU that
/// changes it and a shootdown of every other CPU's. vmalloc maps through
/// it; everyone else locks it.
pub type KernelPt = SharedPageTable<X86_64, DirectMap, &'static Frames, HardwareTlb, KernelShootdown>;

static TABLES: spin::Once<KernelPt> = spin::Once::new();

/// The kernel image's sections.
pub struct Image {
    /// Text (and the PVH note).
    pub text: PhysRange,
    /// Read-only data.
    pub rodata: PhysRange,
    /// Data and bss (with the boot stack and boot page tables).
    pub data: PhysRange,
}

/// What was built.
pub struct Summary {
    /// Pages of each size (4 KiB, 2 MiB, 1 GiB) in the whole hierarchy.
    pub pages: [u64; 3],
    /// Table pages.
    pub tables: u64,
    /// End of the RAM mapped.
    pub ram_end: u64,
}

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange::from_bounds(PhysAddr::new(start).expect("low"), PhysAddr::new(end).expect("low")).expect("ordered")
}

fn identity(pt: &mut KernelTables, r: PhysRange, flags: MapFlags) -> Result<(), PagingError> {
    if r.is_empty() {
        return Ok(());
    }
    let va = VirtAddr::new(r.start().as_u64()).expect("low addresses are canonical");
    // The boot tables are live but these are new tables: nothing to flush.
    pt.map_range(va, r.start(), r.len(), flags, HugePages::all()).map(|f| f.ignore())
}

/// Builds the tables and loads them into CR3.
pub fn build_and_switch(frames: &'static Frames, image: &Image, ram_end: u64) -> Result<Summary, PagingError> {
    let ram_end = ram_end.next_multiple_of(2 << 20);
    // Boot.rs identity-maps the first 4 GiB for as long as the boot tables are live.
    // SAFETY: the new tables map all RAM at the same place.
    let mem = unsafe { DirectMap::new(VirtAddr::ZERO, PhysAddr::new(4 << 30).expect("4 GiB")) };
    // SAFETY: this kernel runs at CPL 0.
    let arch = unsafe { X86_64::current() };
    let mut pt = PageTable::new(arch, mem, frames)?;
    let data = MapFlags::KERNEL_DATA | MapFlags::GLOBAL;
    // Page 0 stays unmapped, so null dereferences fault.
    identity(&mut pt, range(0x1000, image.text.start().as_u64()), data)?;
    identity(&mut pt, image.text, MapFlags::KERNEL_CODE | MapFlags::GLOBAL)?;
    identity(&mut pt, image.rodata, MapFlags::READ | MapFlags::GLOBAL)?;
    identity(&mut pt, image.data, data)?;
    let after = image.data.end().expect("low").as_u64();
    identity(&mut pt, range(after, ram_end), data)?;
    let direct = VirtAddr::new(DIRECT_MAP).expect("canonical");
    pt.map_range(direct, PhysAddr::ZERO, ram_end, data, HugePages::all())?.ignore();
    // Task spaces copy the kernel's root entries when they are created, so
    // the vmalloc window's root entries must exist before any space does,
    // or later vmalloc mappings (thread stacks) would be missing from it.
    // Mapping a 1 GiB page and unmapping it with its tables kept leaves a
    // table under each (as Linux preallocates its vmalloc top-level entries).
    // The tables are not loaded yet: nothing to flush.
    for start in (VMALLOC_START..VMALLOC_START + VMALLOC_SIZE).step_by(1 << 39) {
        let va = VirtAddr::new(start).expect("canonical");
        pt.map(va, PhysAddr::ZERO, PageSize::Size1GiB, data)?.ignore();
        pt.unmap_range_keep_tables(va, 1 << 30, |_| {})?.ignore();
    }

    let mut pages = [0u64; 3];
    for start in [0, DIRECT_MAP] {
        pt.for_each_mapping(VirtAddr::new(start).expect("canonical"), ram_end, |m| {
            pages[m.size.level() as usize - 1] += 1;
        })?;
    }
    let tables = pt.table_pages();
    // SAFETY: this kernel runs at CPL 0.
    let tlb = unsafe { HardwareTlb::new() };
    let pt = TABLES.call_once(|| SharedPageTable::new(pt, tlb, KernelShootdown));
    // SAFETY: CPL 0; the tables map everything in use at its current address (image, stack, boot data, RAM).
    unsafe { pt.lock().activate() };
    Ok(Summary { pages, tables, ram_end })
}

/// The active kernel tables, once built.
pub fn tables() -> Option<&'static KernelPt> {
    TABLES.get()
}

/// Checks the switch took: the permissions the hardware sees and the direct
/// map alias of a frame.
pub fn check(image: &Image, frames: &Frames) -> bool {
    let Some(shared) = tables() else { return false };
    let pt = shared.lock();
    let at = |a: u64| pt.translate(VirtAddr::new(a).expect("canonical"));
    let text = at(image.text.start().as_u64() + 0x1000);
    let rodata = at(image.rodata.start().as_u64());
    let data = at(image.data.start().as_u64());
    let ok_perms = text.is_some_and(|t| t.flags.contains(MapFlags::EXECUTE) && !t.flags.contains(MapFlags::WRITE))
        && rodata.is_some_and(|t| !t.flags.intersects(MapFlags::EXECUTE | MapFlags::WRITE))
        && data.is_some_and(|t| t.flags.contains(MapFlags::WRITE) && !t.flags.contains(MapFlags::EXECUTE));
    let cr3 = x86_64::registers::control::Cr3::read().0.start_address().as_u64();
    // Write through the identity map, read back through the direct map.
    use mm_types::FrameProvider;
    let Ok(block) = frames.allocate(mm_types::Order::ZERO, mm_types::AllocFlags::ZERO) else { return false };
    let phys = block.start_address().as_u64();
    let big = at(DIRECT_MAP + phys).is_some_and(|t| t.size != PageSize::Size4KiB && t.phys.as_u64() == phys);
    // SAFETY: the frame was just allocated to us; both addresses map it.
    let alias = unsafe {
        core::ptr::write_volatile(phys as *mut u64, 0x1234_5678_9abc_def0);
        core::ptr::read_volatile((DIRECT_MAP + phys) as *const u64) == 0x1234_5678_9abc_def0
    };
    let freed = frames.free(block).is_ok();
    crate::kprintln!(
        "paging: CR3 = {:#x} (ours: {}); text RX, rodata R, data RW+NX: {}; direct map alias with huge page: {}",
        cr3,
        cr3 == pt.root().as_u64(),
        ok_perms,
        alias && big
    );
    cr3 == pt.root().as_u64() && ok_perms && alias && big && freed
}
