//! Page-table pages an unmap empties are freed only after the TLB flush
//! (MODEL.md, Concurrency): until every CPU that has the space loaded has
//! flushed, its paging-structure caches may still point at them, and a
//! table page given back and reused as data would be read as a table.

use std::sync::{Arc, Mutex};

use mm_paging::{FlushBatch, X86_64};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, FrameBlock, FrameError, FrameProvider, Order, PhysAddr, VirtAddr};
use mm_vma::sim::SimFrames;
use mm_vma::{
    Access, AddressSpace, Hooks, Layout, MapRequest, MmContext, Placement, Protection, Remap, SpaceId, SpaceTlb,
};

const P: u64 = 4096;
const RW: Protection = Protection::READ.union(Protection::WRITE);

/// What happened, in order: a TLB flush, or a frame given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Flush,
    Free(PhysAddr),
}

type Log = Arc<Mutex<Vec<Event>>>;

/// The test kit's frames, logging every free.
#[derive(Clone)]
struct LoggingFrames {
    inner: SimFrames,
    log: Log,
}

// SAFETY: every allocation and free is the test kit's provider's, which upholds the contract; the log only records.
unsafe impl FrameProvider for LoggingFrames {
    fn allocate(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        self.inner.allocate(order, flags)
    }

    fn free(&self, block: FrameBlock) -> Result<(), FrameError> {
        self.log.lock().unwrap().push(Event::Free(block.start_address()));
        self.inner.free(block)
    }
}

/// A TLB hook that logs each flush.
struct LoggingTlb(Log);

impl SpaceTlb for LoggingTlb {
    fn flush(&self, _space: SpaceId, _batch: FlushBatch) {
        self.0.lock().unwrap().push(Event::Flush);
    }
}

type Space = AddressSpace<X86_64, SimPhysMemory, LoggingFrames>;

fn world() -> (Arc<MmContext<X86_64, SimPhysMemory, LoggingFrames>>, Log) {
    let ram = SimPhysMemory::new(PhysAddr::new(0x10_0000).unwrap(), 64 * P);
    let log = Log::default();
    let frames =
        LoggingFrames { inner: Arc::new(RefFrameProvider::new(&ram).with_max_order(Order::ZERO)), log: log.clone() };
    let hooks = Hooks { tlb: Some(Arc::new(LoggingTlb(log.clone()))), ..Hooks::default() };
    (MmContext::new(X86_64::FOUR_LEVEL, ram, frames, hooks).unwrap(), log)
}

/// One written page at a fixed address no other mapping shares tables with.
fn lone_page(space: &mut Space, at: u64) -> (VirtAddr, PhysAddr) {
    let a = VirtAddr::new(at).unwrap();
    let a = space.mmap(MapRequest { placement: Placement::Fixed(a), ..MapRequest::anonymous(P, RW) }).unwrap();
    space.write_user(a, &[7]).unwrap();
    (a, space.resolve(a, Access::Read).unwrap())
}

/// Runs `op`, and checks from the log that it flushed, gave back `data`
/// and at least one table page, and gave back nothing before its flush.
fn frees_only_after_the_flush(log: &Log, data: PhysAddr, op: impl FnOnce()) {
    log.lock().unwrap().clear();
    op();
    let events = log.lock().unwrap().clone();
    let flush = events.iter().position(|&e| e == Event::Flush).expect("the unmap flushed the TLB");
    assert_eq!(&events[..flush], [], "frames given back before the TLB flush: {events:?}");
    let freed: Vec<PhysAddr> =
        events.iter().filter_map(|e| if let Event::Free(f) = e { Some(*f) } else { None }).collect();
    assert!(freed.contains(&data), "the page's frame was given back: {events:?}");
    assert!(freed.len() >= 2, "its emptied table pages were given back too: {events:?}");
}

#[test]
fn munmap_frees_emptied_tables_after_the_flush() {
    let (mm, log) = world();
    let mut space = AddressSpace::new(&mm, Layout::X86_64).unwrap();
    let (a, data) = lone_page(&mut space, 0x5000_0000_0000);
    let tables = space.page_table().table_pages();
    frees_only_after_the_flush(&log, data, || space.munmap(a, P).unwrap());
    assert!(space.page_table().table_pages() < tables);
    assert_eq!(space.page_table().unlinked(), 0, "none left held");
}

#[test]
fn mremap_frees_the_old_ranges_tables_after_the_flush() {
    let (mm, log) = world();
    let mut space = AddressSpace::new(&mm, Layout::X86_64).unwrap();
    let (a, data) = lone_page(&mut space, 0x5000_0000_0000);
    let to = VirtAddr::new(0x6000_0000_0000).unwrap();
    log.lock().unwrap().clear();
    assert_eq!(space.mremap(a, P, P, Remap::Fixed(to)).unwrap(), to);
    let events = log.lock().unwrap().clone();
    let flush = events.iter().position(|&e| e == Event::Flush).expect("the move flushed the TLB");
    assert_eq!(&events[..flush], [], "frames given back before the TLB flush: {events:?}");
    assert!(!events.contains(&Event::Free(data)), "the page moved, not freed");
    assert!(events.iter().filter(|e| matches!(e, Event::Free(_))).count() >= 1, "old tables given back: {events:?}");
    assert_eq!(space.page_table().unlinked(), 0);
    let mut b = [0u8];
    space.read_user(to, &mut b).unwrap();
    assert_eq!(b, [7]);
    frees_only_after_the_flush(&log, data, || space.munmap(to, P).unwrap());
}
