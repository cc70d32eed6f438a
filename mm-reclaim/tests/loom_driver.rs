//! Loom models of the driver's isolation protocol (MODEL 10): victims are
//! taken off their lists under the lock and evicted without it, while
//! other CPUs access and remove pages or reclaim too.
#![cfg(loom)]

use std::sync::{Arc, Mutex};

use mm_reclaim::{Clock, Evictor, Outcome, PageId, Reclaim, Victim};
use mm_types::testkit::loom_model::{model, spawn};
use mm_types::PageKind;

/// Frees every victim but `keep` (in use: kept) and records the freed.
struct Freeing(Arc<Mutex<Vec<Victim>>>, Option<PageId>);

impl Evictor for Freeing {
    fn test_and_clear_referenced(&mut self, _page: PageId) -> bool {
        false
    }
    fn evict(&mut self, batch: &[Victim], outcomes: &mut [Outcome]) {
        for (v, o) in batch.iter().zip(outcomes.iter_mut()) {
            if Some(v.page) != self.1 {
                self.0.lock().unwrap().push(*v);
                *o = Outcome::Freed;
            }
        }
    }
}

/// The pages freed, checked to be distinct.
fn freed_once(victims: &Mutex<Vec<Victim>>) -> Vec<PageId> {
    let v: Vec<PageId> = victims.lock().unwrap().iter().map(|v| v.page).collect();
    let mut sorted = v.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), v.len(), "a page evicted twice: {v:?}");
    v
}

fn four_file_pages() -> Arc<Reclaim<Clock>> {
    let r = Arc::new(Reclaim::new(Clock::new(4), Clock::new(4), 4));
    for p in 0..4 {
        r.insert(p, PageKind::File, None).unwrap();
    }
    r
}

/// A page removed by its owner while reclaim may hold it (and keeps it,
/// in use) is never put back; every other page is either evicted or still
/// on its list.
#[test]
fn remove_during_reclaim() {
    model(|| {
        let r = four_file_pages();
        let victims = Arc::new(Mutex::new(Vec::new()));
        let (r2, v2) = (r.clone(), victims.clone());
        let t = spawn(move || {
            let p = r2.reclaim(2, &mut Freeing(v2, Some(1)));
            assert!(p.reclaimed() >= 2);
        });
        r.access(0);
        r.remove(1).unwrap();
        t.join().unwrap();
        r.check().unwrap();
        let v = freed_once(&victims);
        assert!(!v.contains(&1));
        assert_eq!(r.remove(1).err(), Some(mm_reclaim::ReclaimError::NotTracked(1)));
        assert_eq!(r.len(PageKind::File), 3 - v.len());
    });
}

/// Background and direct reclaim at once: each page is evicted at most
/// once and the lists account for the rest.
#[test]
fn two_reclaimers() {
    model(|| {
        let r = four_file_pages();
        let victims = Arc::new(Mutex::new(Vec::new()));
        let (r2, v2) = (r.clone(), victims.clone());
        let t = spawn(move || r2.reclaim(1, &mut Freeing(v2, None)).evicted);
        let mine = r.reclaim(1, &mut Freeing(victims.clone(), None)).evicted;
        let theirs = t.join().unwrap();
        r.check().unwrap();
        let v = freed_once(&victims);
        assert_eq!(mine + theirs, v.len() as u64);
        assert_eq!(r.len(PageKind::File) + v.len(), 4);
    });
}
