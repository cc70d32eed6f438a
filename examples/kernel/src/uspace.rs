//! User address spaces (mm-vma) on the kernel's frames and page tables.
//!
//! Each space's root table shares the kernel's root entries 0 (the identity
//! map of RAM this kernel runs in) and 256-511 (direct map, vmalloc), so the
//! kernel keeps running after CR3 switches to a space; user mappings live
//! above entry 0 (`LAYOUT`). The smoke test touches a space's memory from
//! the kernel, so the CPU's own page faults go through [`handle_fault`]
//! into mm-vma's fault handler and the access is retried. (The tasks of the
//! other scenarios run on mm-wiring's `Machine`, in `tasks.rs`.)

extern crate alloc;

use alloc::sync::Arc;

use mm_paging::{FlushBatch, HardwareTlb, NoShootdown, X86_64};
use mm_types::{DirectMap, VirtAddr};
use mm_vma::{
    Access, AddressSpace, FaultError, FaultKind, Hooks, Layout, MapRequest, MmContext, Protection, SpaceId, SpaceTlb,
};

use crate::frames::{self, Frames};
use crate::kprintln;
use crate::paging;
use crate::shootdown;

/// What user address spaces share.
pub type UserMm = MmContext<X86_64, DirectMap, &'static Frames>;
/// A user address space.
pub type UserSpace = AddressSpace<X86_64, DirectMap, &'static Frames>;

/// User memory: from root entry 1 (512 GiB) to the top of the lower half.
pub const LAYOUT: Layout = Layout {
    low: layout_addr(1 << 39),
    high: layout_addr(0x7fff_ffff_f000),
    mmap_base: layout_addr(0x7f00_0000_0000),
    brk_base: layout_addr(0x1000_0000_0000),
    ..Layout::X86_64
};

/// An address of [`LAYOUT`] (a constant: one that is not canonical stops
/// the build).
const fn layout_addr(addr: u64) -> VirtAddr {
    match VirtAddr::new(addr) {
        Ok(a) => a,
        Err(_) => panic!("a layout address that is not canonical"),
    }
}

/// The space the smoke test loaded in CR3, if any (the fault handler's).
static CURRENT: spin::Mutex<Option<UserSpace>> = spin::Mutex::new(None);

/// TLB invalidation for user spaces: this CPU's TLB if it has the space
/// loaded, and a shootdown of the other CPUs that have it loaded
/// (`shootdown.rs`). Kernel entries are global and never change here.
pub struct Tlb;

/// Records that this CPU is about to load space `id`'s tables into CR3
/// (0: the kernel's): called before the CR3 load, so that a shootdown for
/// the space either reaches this CPU or happened before its first walk of
/// the tables (`shootdown.rs`).
pub fn set_loaded(id: u32) {
    shootdown::set_loaded(id);
}

/// The id of the space this CPU has loaded (0: the kernel's tables).
pub fn loaded() -> u32 {
    shootdown::loaded()
}

impl SpaceTlb for Tlb {
    fn flush(&self, space: SpaceId, batch: FlushBatch) {
        let others = shootdown::cpus_with(space);
        if loaded() == space.0 {
            // SAFETY: this kernel runs at CPL 0.
            let mut tlb = unsafe { HardwareTlb::new() };
            batch.clone().finish(&mut tlb, &NoShootdown);
        }
        shootdown::send(others, &batch);
    }
}

/// Loads `space` into CR3 and makes it current; returns the one it replaces.
pub fn switch_to(space: UserSpace) -> Option<UserSpace> {
    let mut cur = CURRENT.lock();
    set_loaded(space.id().0);
    // SAFETY: CPL 0; the space shares the kernel's entries for everything the kernel touches.
    unsafe { space.page_table().activate() };
    cur.replace(space)
}

/// Goes back to the kernel's own tables; returns the space that was loaded.
pub fn switch_to_kernel() -> Option<UserSpace> {
    let mut cur = CURRENT.lock();
    let tables = paging::tables().expect("built at boot");
    set_loaded(0);
    // SAFETY: CPL 0; these are the tables the kernel booted on.
    unsafe { tables.lock().activate() };
    cur.take()
}

/// Called by the page-fault handler: resolves a fault at `addr` in the
/// current space's user range. `None` if the address is not user memory or
/// no space is loaded (the handler reports it as a kernel fault).
pub fn handle_fault(addr: u64, error_code: u64) -> Option<Result<FaultKind, FaultError>> {
    // CR2 holds a canonical address (a non-canonical access is a general
    // protection fault, not a page fault).
    let addr = VirtAddr::new(addr).ok().filter(|a| (LAYOUT.low..LAYOUT.high).contains(a))?;
    // A fault while the space is locked would be a kernel bug: report it.
    let mut cur = CURRENT.try_lock()?;
    Some(cur.as_mut()?.fault(addr, access_of(error_code)))
}

/// The access a page fault's error code describes.
pub fn access_of(error_code: u64) -> Access {
    if error_code & 16 != 0 {
        Access::Execute
    } else if error_code & 2 != 0 {
        Access::Write
    } else {
        Access::Read
    }
}

/// The shared state for user spaces over the kernel's frames, with the
/// kernel's root entries 0 and 256-511 in every space.
fn new_mm(buddy: &'static Frames) -> Option<Arc<UserMm>> {
    let root = paging::tables()?.lock().root();
    let hooks = Hooks { tlb: Some(Arc::new(Tlb)), ..Hooks::default() };
    // SAFETY: CPL 0 (reading the paging mode); the kernel's tables live for the whole run and their
    // entries 0 and 256-511 never change.
    let mm = unsafe {
        UserMm::with_kernel_entries(
            X86_64::current(),
            frames::identity_map(),
            buddy,
            hooks,
            root,
            (0..1).chain(256..512),
        )
    };
    mm.ok()
}

fn touch_read(addr: VirtAddr) -> u64 {
    // SAFETY: `addr` is in the loaded space's user range, 8-aligned; a fault maps it (or ends the run).
    unsafe { core::ptr::read_volatile(addr.as_ptr::<u64>()) }
}

fn touch_write(addr: VirtAddr, v: u64) {
    // SAFETY: as in `touch_read`; the page is private to this space after the write fault.
    unsafe { core::ptr::write_volatile(addr.as_mut_ptr::<u64>(), v) }
}

/// A space, real page faults (zero page, demand zero, copy-on-write after a
/// fork in parent and child, reuse after the child exits), and every frame
/// back at the end.
pub fn smoke(buddy: &'static Frames) -> bool {
    // Frames in the per-CPU caches are free too.
    let free = buddy.free_frame_count() + buddy.cached_frames();
    let mm = new_mm(buddy);
    let Some(mm) = mm else {
        kprintln!("user spaces: no memory for the zero page");
        return false;
    };
    let Ok(mut parent) = AddressSpace::new(&mm, LAYOUT) else { return false };
    const PAGES: u64 = 16;
    let Ok(a) = parent.mmap(MapRequest::anonymous(PAGES * 4096, Protection::READ | Protection::WRITE)) else {
        return false;
    };
    kprintln!("user spaces: {:?} mapped {} pages at {:#x}", parent.id(), PAGES, a);
    switch_to(parent);
    let page = |i: u64| a + i * 4096;
    let mut ok = touch_read(page(0)) == 0;
    for i in 0..PAGES {
        touch_write(page(i), 0x1000 + i);
    }
    let child = CURRENT.lock().as_mut().expect("loaded").fork();
    let Ok(child) = child else {
        kprintln!("user spaces: fork failed");
        return false;
    };
    touch_write(page(0), 0xaaaa); // parent: copy
    let parent = switch_to(child).expect("the parent was loaded");
    ok &= touch_read(page(0)) == 0x1000; // child: the old data, no fault
    touch_write(page(1), 0xbbbb); // child: copy
    let child = switch_to(parent).expect("the child was loaded");
    ok &= touch_read(page(1)) == 0x1001;
    let child_id = child.id();
    drop(child); // not loaded: its tables can go
    touch_write(page(2), 0xcccc); // parent, last user: reuse
    ok &= touch_read(page(0)) == 0xaaaa && touch_read(page(2)) == 0xcccc;
    ok &= (3..PAGES).all(|i| touch_read(page(i)) == 0x1000 + i);
    let s = mm.fault_stats();
    kprintln!(
        "user spaces: faults: zero page {}, demand zero {}, copy-on-write copied {} reused {}, spurious {}, refused {}",
        s.zero_page,
        s.demand_zero,
        s.cow_copied,
        s.cow_reused,
        s.spurious,
        s.refused
    );
    // Zero page read, then its copy on the first write; 15 fresh pages; a
    // copy in the parent and one in the child; the reuse after the child.
    ok &= (s.zero_page, s.demand_zero, s.cow_copied, s.cow_reused, s.refused) == (1, 15, 3, 1, 0);
    let Some(parent) = switch_to_kernel() else { return false };
    ok &= parent.check().is_ok() && mm.check_rmap(&[&parent]).is_ok();
    kprintln!(
        "user spaces: fork child {:?} exited; parent {:?} resident {}",
        child_id,
        parent.id(),
        parent.counts().resident
    );
    drop(parent);
    drop(mm);
    // VMAs, reverse-map entries and the shared state came from the heap.
    let live: usize = crate::heap::heap().stats().map(|s| s.active_objects).sum();
    let _ = crate::heap::heap().shrink();
    let after = buddy.free_frame_count() + buddy.cached_frames();
    let back = live == 0 && after == free;
    kprintln!(
        "user spaces: heap objects left {}; every page, page table and heap slab back: {} ({} free before, {} after)",
        live,
        back,
        free,
        after
    );
    ok &= back;
    kprintln!("user spaces: {}", if ok { "ok" } else { "FAILED" });
    ok
}
