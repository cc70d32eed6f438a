//! Loom model of `SharedPageTable::flush_unmapped` on several CPUs: two
//! threads each unmap a page and flush. Whichever flush sends the covering
//! range, a thread's `flush_unmapped` must not return before its own page
//! has been shot down on the other CPUs: the caller frees the page's frame
//! (or hands its range out again) right after.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p mm-vmalloc --test loom_flush`.
#![cfg(loom)]

use std::sync::OnceLock;

use loom::sync::{Arc, Mutex};
use mm_paging::{FlushBatch, MapFlags, PageTable, RecordingTlb, Shootdown, X86_64};
use mm_types::testkit::loom_model::{model, spawn};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{PhysAddr, VirtAddr, PAGE_BYTES};
use mm_vmalloc::{KernelMapper, SharedPageTable};

const BASE: u64 = 0xffff_c900_0000_0000;

/// The pages other CPUs have flushed (`None`: everything).
#[derive(Clone, Default)]
struct Done(Arc<Mutex<Vec<Option<u64>>>>);

impl Done {
    fn covers(&self, page: u64) -> bool {
        self.0.lock().unwrap().iter().any(|d| d.is_none_or(|p| p == page))
    }
}

impl Shootdown for Done {
    fn shootdown(&self, batch: &FlushBatch) {
        let mut d = self.0.lock().unwrap();
        if batch.is_full_flush() {
            d.push(None);
        } else {
            d.extend(batch.pages().map(|p| Some(p.as_u64())));
        }
    }
}

/// Simulated RAM shared by every execution (each builds its tables afresh
/// from its own frame provider).
fn ram() -> &'static SimPhysMemory {
    static RAM: OnceLock<SimPhysMemory> = OnceLock::new();
    RAM.get_or_init(|| SimPhysMemory::new(PhysAddr::new(0).unwrap(), 64 << 10))
}

#[test]
fn flush_unmapped_returns_after_its_own_page_is_shot_down() {
    model(|| {
        let ram = ram();
        let frames: &'static RefFrameProvider = Box::leak(Box::new(RefFrameProvider::new(ram)));
        let table = PageTable::new(X86_64::FOUR_LEVEL, ram, frames).unwrap();
        let done = Done::default();
        let k = Arc::new(SharedPageTable::new(table, RecordingTlb::default(), done.clone()));
        let pages = [BASE, BASE + PAGE_BYTES];
        for (i, &p) in pages.iter().enumerate() {
            let frame = PhysAddr::new(0x8000 + i as u64 * PAGE_BYTES).unwrap();
            k.map_frames(VirtAddr::new(p).unwrap(), &[frame], MapFlags::KERNEL_DATA).unwrap();
        }
        // The mappings are new: nothing to shoot down yet.
        done.0.lock().unwrap().clear();
        let threads: Vec<_> = pages
            .iter()
            .map(|&p| {
                let (k, done) = (k.clone(), done.clone());
                spawn(move || {
                    k.unmap(VirtAddr::new(p).unwrap(), PAGE_BYTES, &mut |_| {}).unwrap();
                    k.flush_unmapped();
                    assert!(done.covers(p), "flush_unmapped returned before {p:#x} was shot down");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}
