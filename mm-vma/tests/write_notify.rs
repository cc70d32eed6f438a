//! Write-notify for shared mappings of write-tracked objects (files with a
//! backing): pages map read-only until a store, which the pager hears of
//! before the entry becomes writable; `mprotect` never makes such an entry
//! writable by itself; write-protection (writeback's `page_mkclean`) makes
//! the next store report again. Untracked objects and private mappings are
//! not reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mm_paging::{MapFlags, X86_64};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, FrameProvider, Order, PhysAddr, Protection, VirtAddr};
use mm_vma::sim::SimFrames;
use mm_vma::{FaultError, HookError, Hooks, Layout, MapRequest, MmContext, Pager};

const PS: u64 = 4096;
const RW: Protection = Protection::READ.union(Protection::WRITE);
/// Object 1 is write-tracked, object 2 is not.
const TRACKED: u32 = 1;
const UNTRACKED: u32 = 2;

/// Zeroed pages per (object, offset), the stores it heard of.
struct Recording {
    frames: SimFrames,
    pages: Mutex<BTreeMap<(u32, u64), PhysAddr>>,
    dirtied: Mutex<Vec<(u32, u64)>>,
    fail: AtomicBool,
}

impl Pager for Recording {
    fn page(&self, object: u32, offset: u64) -> Result<PhysAddr, HookError> {
        let mut pages = self.pages.lock().unwrap();
        if let Some(&f) = pages.get(&(object, offset)) {
            return Ok(f);
        }
        let f = self.frames.allocate_frame(AllocFlags::ZERO).map_err(|_| HookError::OutOfMemory)?;
        pages.insert((object, offset), f);
        Ok(f)
    }
    fn tracks_writes(&self, object: u32) -> bool {
        object == TRACKED
    }
    fn dirtied(&self, object: u32, offset: u64) -> Result<(), HookError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(HookError::Io);
        }
        self.dirtied.lock().unwrap().push((object, offset));
        Ok(())
    }
    /// Every page it holds of the object's 16-page block.
    fn cached_around(&self, object: u32, offset: u64, f: &mut dyn FnMut(u64, PhysAddr)) {
        let block = offset / (16 * PS) * 16 * PS;
        for (&(o, off), &frame) in self.pages.lock().unwrap().range((object, block)..(object, block + 16 * PS)) {
            assert_eq!(o, object);
            f(off, frame);
        }
    }
}

fn world() -> (Arc<MmContext<X86_64, SimPhysMemory, SimFrames>>, Arc<Recording>) {
    let ram = SimPhysMemory::new(PhysAddr::new(0x10_0000).unwrap(), 128 * PS);
    let frames: SimFrames = Arc::new(RefFrameProvider::new(&ram).with_max_order(Order::ZERO));
    let pager = Arc::new(Recording {
        frames: frames.clone(),
        pages: Mutex::new(BTreeMap::new()),
        dirtied: Mutex::new(Vec::new()),
        fail: AtomicBool::new(false),
    });
    let hooks = Hooks { pager: Some(pager.clone() as Arc<dyn Pager>), ..Hooks::default() };
    (MmContext::new(X86_64::FOUR_LEVEL, ram, frames, hooks).unwrap(), pager)
}

fn writable(space: &mm_vma::AddressSpace<X86_64, SimPhysMemory, SimFrames>, va: VirtAddr) -> bool {
    space.page_table().translate(va).is_some_and(|t| t.flags.contains(MapFlags::WRITE))
}

#[test]
fn stores_are_reported_before_the_page_becomes_writable_and_again_after_write_protection() {
    let (mm, pager) = world();
    let mut space = mm_vma::AddressSpace::new(&mm, Layout::X86_64).unwrap();
    let a = space.mmap(MapRequest::object(2 * PS, RW, TRACKED, 0).shared()).unwrap();
    // A read maps the page read-only: nothing reported.
    let mut b = [0u8; 4];
    space.read_user(a, &mut b).unwrap();
    assert!(!writable(&space, a));
    assert!(pager.dirtied.lock().unwrap().is_empty());
    // The first store is reported, the next ones are not.
    space.write_user(a, b"one").unwrap();
    space.write_user(a + 8, b"two").unwrap();
    assert!(writable(&space, a));
    // A store into an unmapped page: reported at its first fault.
    space.write_user(a + PS, b"new").unwrap();
    assert_eq!(pager.dirtied.lock().unwrap().as_slice(), &[(TRACKED, 0), (TRACKED, PS)]);
    // Writeback write-protects the page: the next store is reported again.
    assert!(space.write_protect_page(a + 100));
    assert!(!space.write_protect_page(a + 100), "already read-only");
    space.write_user(a, b"three").unwrap();
    assert_eq!(pager.dirtied.lock().unwrap().len(), 3);
    assert_eq!(mm.fault_stats().write_notify, 3);
    // The bytes went to the pager's page: a second mapping sees them.
    let b2 = space.mmap(MapRequest::object(PS, Protection::READ, TRACKED, 0).shared()).unwrap();
    let mut got = [0u8; 5];
    space.read_user(b2, &mut got).unwrap();
    assert_eq!(&got, b"three");
}

#[test]
fn mprotect_never_makes_a_tracked_entry_writable() {
    let (mm, pager) = world();
    let mut space = mm_vma::AddressSpace::new(&mm, Layout::X86_64).unwrap();
    let a = space.mmap(MapRequest::object(PS, RW, TRACKED, 0).shared()).unwrap();
    let mut b = [0u8; 1];
    space.read_user(a, &mut b).unwrap();
    space.mprotect(a, PS, Protection::READ).unwrap();
    space.mprotect(a, PS, RW).unwrap();
    assert!(!writable(&space, a), "still read-only: the store must be reported");
    space.write_user(a, b"x").unwrap();
    assert_eq!(pager.dirtied.lock().unwrap().as_slice(), &[(TRACKED, 0)]);
    // A writable entry keeps its write right across mprotect to RW again.
    space.mprotect(a, PS, RW).unwrap();
    assert!(writable(&space, a));
    // Down to read-only removes it, as for any mapping.
    space.mprotect(a, PS, Protection::READ).unwrap();
    assert!(!writable(&space, a));
    assert_eq!(mm.fault_stats().write_notify, 1);
}

#[test]
fn a_refused_report_fails_the_store_and_untracked_or_private_stores_are_not_reported() {
    let (mm, pager) = world();
    let mut space = mm_vma::AddressSpace::new(&mm, Layout::X86_64).unwrap();
    let a = space.mmap(MapRequest::object(PS, RW, TRACKED, 0).shared()).unwrap();
    pager.fail.store(true, Ordering::SeqCst);
    assert_eq!(space.write_user(a, b"x"), Err(FaultError::Hook(HookError::Io)));
    let mut b = [0u8; 1];
    space.read_user(a, &mut b).unwrap();
    assert_eq!(space.write_user(a, b"x"), Err(FaultError::Hook(HookError::Io)), "a mapped page too");
    assert!(!writable(&space, a), "the entry stays read-only");
    pager.fail.store(false, Ordering::SeqCst);
    space.write_user(a, b"x").unwrap();
    // Untracked: mapped writable at once, never reported.
    let u = space.mmap(MapRequest::object(PS, RW, UNTRACKED, 0).shared()).unwrap();
    space.read_user(u, &mut b).unwrap();
    assert!(writable(&space, u));
    space.write_user(u, b"y").unwrap();
    // Private mapping of a tracked object: copy on write, not reported.
    let p = space.mmap(MapRequest::object(PS, RW, TRACKED, PS)).unwrap();
    space.write_user(p, b"z").unwrap();
    assert_eq!(pager.dirtied.lock().unwrap().as_slice(), &[(TRACKED, 0)]);
    assert_eq!(mm.fault_stats().write_notify, 1);
}

#[test]
fn zapping_a_pagers_page_unmaps_it_even_in_a_locked_vma_and_the_next_access_asks_again() {
    let (mm, pager) = world();
    let mut space = mm_vma::AddressSpace::new(&mm, Layout::X86_64).unwrap();
    let mut req = MapRequest::object(2 * PS, RW, UNTRACKED, 0).shared();
    // A locked VMA keeps its pages from reclaim, not from the pager.
    req.flags |= mm_vma::VmaFlags::LOCKED;
    let a = space.mmap(req).unwrap();
    space.write_user(a, b"kept").unwrap();
    assert!(!space.is_evictable(a));
    let frame = pager.pages.lock().unwrap()[&(UNTRACKED, 0)];
    assert_eq!(mm.mappings(frame).len(), 1);
    // Only the frame named is zapped: not another one, not an empty page.
    assert!(space.zap_page(a, PhysAddr::new(frame.as_u64() + PS).unwrap()).is_none());
    assert!(space.zap_page(a + PS, frame).is_none());
    let gone = space.zap_page(a + 5, frame).expect("mapped there");
    assert_eq!(gone.frame, frame);
    assert!(gone.flags.contains(MapFlags::DIRTY), "the store set the dirty bit");
    assert!(mm.mappings(frame).is_empty(), "the reverse map forgot the mapping");
    assert_eq!(space.counts().resident, 1, "page 1 stays (populated by the lock)");
    let mut b = [0u8; 4];
    space.read_user(a, &mut b).unwrap();
    assert_eq!(&b, b"kept", "faulted in again from the pager's page");
    assert_eq!(mm.mappings(frame).len(), 1);
}

#[test]
fn a_read_fault_maps_the_pagers_pages_around_it_read_only() {
    let (mm, pager) = world();
    let mut space = mm_vma::AddressSpace::new(&mm, Layout::X86_64).unwrap();
    // The pager holds pages 0-3 and 17 of the object; a private mapping of
    // pages 1-20 (offset one page in).
    for p in [0u64, 1, 2, 3, 17] {
        pager.page(UNTRACKED, p * PS).unwrap();
    }
    let a = space.mmap(MapRequest::object(20 * PS, RW, UNTRACKED, PS)).unwrap();
    let mut b = [0u8; 1];
    space.read_user(a + PS, &mut b).unwrap();
    // Object pages 1 and 3 are mapped too (at a and a + 2 pages); page 0
    // lies before the VMA, page 17 outside the faulting page's block.
    assert_eq!(mm.fault_stats().mapped_around, 2);
    for (va, mapped) in [(a, true), (a + PS, true), (a + 2 * PS, true), (a + 16 * PS, false)] {
        assert_eq!(space.page_table().translate(va).is_some(), mapped, "{va:?}");
    }
    assert!(!writable(&space, a), "mapped read-only");
    // Reading them does not fault; writing copies (a private mapping).
    let faults = mm.fault_stats().pager;
    space.read_user(a, &mut b).unwrap();
    space.read_user(a + 2 * PS, &mut b).unwrap();
    assert_eq!(mm.fault_stats().pager, faults);
    space.write_user(a, b"mine").unwrap();
    assert_eq!(mm.fault_stats().cow_copied, 1);
    assert_ne!(space.page_table().translate(a).unwrap().frame, pager.pages.lock().unwrap()[&(UNTRACKED, PS)]);
    // In a shared mapping of a tracked object, a page mapped around is
    // read-only until its store is reported.
    let t = space.mmap(MapRequest::object(4 * PS, RW, TRACKED, 0).shared()).unwrap();
    pager.page(TRACKED, PS).unwrap();
    space.read_user(t, &mut b).unwrap();
    assert!(space.page_table().translate(t + PS).is_some() && !writable(&space, t + PS));
    space.write_user(t + PS, b"x").unwrap();
    assert_eq!(pager.dirtied.lock().unwrap().as_slice(), &[(TRACKED, PS)]);
}
