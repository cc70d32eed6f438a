//! Loom models of the reverse map's reference protocol (MODEL 17, 23): a
//! frame shared by several address spaces and pinned by a swap cache is
//! freed exactly once, by whoever drops the last reference, whatever the
//! interleaving; concurrent copy-on-write faults keep every space's data.
#![cfg(loom)]

use mm_types::testkit::loom_model::{model, spawn};
use mm_types::VirtAddr;
use mm_vma::sim::{SimSpace, SimWorld};
use mm_vma::{Access, MapRequest, Protection};

const P: u64 = 4096;

fn shared_page(w: &SimWorld) -> (SimSpace, SimSpace, VirtAddr) {
    let mut p = w.space();
    let a = p.mmap(MapRequest::anonymous(P, Protection::READ | Protection::WRITE)).unwrap();
    p.write_user(a, &[7]).unwrap();
    let c = p.fork().unwrap();
    (p, c, a)
}

fn byte(s: &mut SimSpace, a: VirtAddr) -> u8 {
    let mut b = [0u8];
    s.read_user(a, &mut b).unwrap();
    b[0]
}

/// The parent copies the page, the child exits and the swap cache unpins
/// it, all at once: one of them frees it, once.
#[test]
fn last_reference_frees_the_shared_page_once() {
    model(|| {
        let w = SimWorld::new(256 << 10);
        let free = w.free_frame_count();
        let (mut p, c, a) = shared_page(&w);
        let frame = p.resolve(a, Access::Read).unwrap();
        w.mm.pin(frame).unwrap();
        let mm = w.mm.clone();
        let t1 = spawn(move || {
            p.write_user(a, &[8]).unwrap();
            p
        });
        let t2 = spawn(move || drop(c));
        let t3 = spawn(move || {
            // What a swap cache holding the page sees before letting go: a
            // pinned page is never written in place.
            let mut seen = [0u8];
            // SAFETY: the frame is pinned, so no mapping writes it (the property under test).
            unsafe { mm_types::PhysMemory::read_bytes(mm.mem(), frame, &mut seen) }.unwrap();
            (seen[0], mm.unpin(frame))
        });
        let mut p = t1.join().unwrap();
        t2.join().unwrap();
        let (seen, unpin_freed) = t3.join().unwrap();
        assert_eq!(seen, 7, "a pinned page was written in place");
        assert_eq!(byte(&mut p, a), 8);
        let s = w.mm.fault_stats();
        if s.cow_reused == 1 {
            // The child and the pin were gone when the parent looked: it
            // wrote in place, and nobody freed the page.
            assert_eq!(p.resolve(a, Access::Read).unwrap(), frame);
            assert!(!unpin_freed);
        } else {
            // It copied; the last of the child's exit and the unpin freed
            // the old page.
            assert_eq!(s.cow_copied, 1);
            assert_eq!(w.mm.map_count(frame), 0);
        }
        drop(p);
        assert_eq!(w.mm.tracked_frames(), 0);
        assert_eq!(w.free_frame_count(), free);
    });
}

/// Parent and child write the shared page at once: both copy, or one copies
/// and the other then reuses the page; each sees its own write.
#[test]
fn concurrent_copy_on_write_keeps_both_views() {
    model(|| {
        let w = SimWorld::new(256 << 10);
        let free = w.free_frame_count();
        let (p, c, a) = shared_page(&w);
        let t1 = spawn(move || {
            let mut p = p;
            p.write_user(a, &[8]).unwrap();
            p
        });
        let t2 = spawn(move || {
            let mut c = c;
            c.write_user(a, &[9]).unwrap();
            c
        });
        let (mut p, mut c) = (t1.join().unwrap(), t2.join().unwrap());
        assert_eq!((byte(&mut p, a), byte(&mut c, a)), (8, 9));
        let s = w.mm.fault_stats();
        assert_eq!(s.cow_copied + s.cow_reused, 2);
        assert!(s.cow_copied >= 1);
        w.mm.check_rmap(&[&p, &c]).unwrap();
        drop((p, c));
        assert_eq!(w.mm.tracked_frames(), 0);
        assert_eq!(w.free_frame_count(), free);
    });
}
