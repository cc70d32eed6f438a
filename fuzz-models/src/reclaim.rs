//! mm-reclaim's model-based fuzz body.
//!
//! Random insert / access / hardware-reference / remove / evict / lock /
//! unlock sequences against each policy (CLOCK, S3-FIFO, W-TinyLFU as the
//! default and with its window adapting at its quickest or fixed, the two
//! lists, the generational CLOCK), with a set model of the tracked
//! pages: after every step the count matches, and every eighth step and
//! at the end the policy's lists check themselves (MODEL 1); victims were tracked and evictable, and `None`
//! comes only when nothing tracked is evictable (3); a refault with the
//! victim's shadow is accepted; a double insert and a removal of a page not
//! tracked are refused with their errors and change nothing (1). Then the
//! reclaim driver over two of them (W-TinyLFU for anonymous pages, the two
//! lists for file pages),
//! with an evictor that races removals and reuse against its batches.

use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

use arbitrary::Arbitrary;

use mm_reclaim::{Clock, PageId, Policy, PolicyError, S3Fifo, Scan, Shadow, TwoList};

const IDS: u32 = 48;

/// One step; `page` is taken modulo 48.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Make a page resident (with its shadow if it was evicted).
    Insert(u8),
    /// A software reference.
    Access(u8),
    /// A hardware reference (sets the page's accessed bit).
    Touch(u8),
    /// The page goes away unchosen.
    Remove(u8),
    /// Evict one page.
    Evict,
    /// Lock a page (unevictable) or unlock it.
    Lock(u8),
}

struct Hw {
    bits: BTreeSet<PageId>,
    locked: BTreeSet<PageId>,
}

impl Scan for Hw {
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool {
        self.bits.remove(&page)
    }
    fn is_evictable(&mut self, page: PageId) -> bool {
        !self.locked.contains(&page)
    }
}

fn drive(p: &mut dyn Policy, ops: &[Op]) {
    let mut tracked = BTreeSet::new();
    let mut shadows: BTreeMap<PageId, Shadow> = BTreeMap::new();
    let mut hw = Hw { bits: BTreeSet::new(), locked: BTreeSet::new() };
    for (step, op) in (1..).zip(ops) {
        match *op {
            Op::Insert(x) => {
                let page = u32::from(x) % IDS;
                if tracked.insert(page) {
                    p.insert(page, shadows.remove(&page)).unwrap();
                } else {
                    // Refused, the lists untouched (checked below).
                    assert_eq!(p.insert(page, None), Err(PolicyError::AlreadyTracked(page)), "{}", p.name());
                }
            }
            Op::Access(x) if tracked.contains(&(u32::from(x) % IDS)) => p.access(u32::from(x) % IDS),
            Op::Touch(x) => {
                hw.bits.insert(u32::from(x) % IDS);
            }
            Op::Remove(x) => {
                let page = u32::from(x) % IDS;
                let res = p.remove(page);
                if tracked.remove(&page) {
                    res.unwrap();
                } else {
                    assert_eq!(res, Err(PolicyError::NotTracked(page)), "{}", p.name());
                }
            }
            Op::Evict => match p.evict(&mut hw) {
                Some((v, shadow)) => {
                    assert!(tracked.remove(&v), "{}: victim {v} was not tracked", p.name());
                    assert!(!hw.locked.contains(&v), "{}: victim {v} is locked", p.name());
                    shadows.insert(v, shadow);
                }
                None => assert!(tracked.iter().all(|t| hw.locked.contains(t)), "{}: gave up", p.name()),
            },
            Op::Lock(x) => {
                let page = u32::from(x) % IDS;
                if !hw.locked.remove(&page) {
                    hw.locked.insert(page);
                }
            }
            Op::Access(_) => {}
        }
        assert_eq!(p.len(), tracked.len(), "{}", p.name());
        // The lists' walk every eighth step and at the end: a broken link
        // stays broken until it is walked.
        if step % 8 == 0 || step == ops.len() {
            p.check().unwrap();
        }
    }
}

/// One step of the driver model; pages are taken modulo 48.
#[derive(Arbitrary, Debug, Clone)]
pub enum DriverOp {
    /// Make a page resident as anonymous (`false`) or file (`true`).
    Insert(u8, bool),
    /// A software reference.
    Access(u8),
    /// A hardware reference.
    Touch(u8),
    /// The page's owner frees it.
    Remove(u8),
    /// Lock or unlock a page.
    Lock(u8),
    /// Reclaim `target % 64` frames. Victim `i` of each batch is freed if
    /// bit `i % 8` of `freed` is set, else kept (or failed if that bit of
    /// `failed` is set); while the batch is out, victim `i` is removed if
    /// bit `i % 8` of `race` is set, and then reinserted as anonymous if
    /// that bit of `reuse` is set.
    Reclaim {
        /// Frames wanted (`% 64`).
        target: u8,
        /// Victims freed, by position in the batch.
        freed: u8,
        /// Victims failed (if not freed).
        failed: u8,
        /// Victims removed by their owner while isolated.
        race: u8,
        /// Removed victims reused as anonymous pages.
        reuse: u8,
        /// Anonymous pages cannot be evicted.
        no_swap: bool,
    },
    /// Change swappiness (`% 201`).
    Swappiness(u8),
}

struct DriverHw<'a, P: Policy> {
    driver: &'a mm_reclaim::Reclaim<P>,
    model: &'a std::cell::RefCell<BTreeMap<PageId, mm_types::PageKind>>,
    bits: BTreeSet<PageId>,
    locked: &'a BTreeSet<PageId>,
    op: (u8, u8, u8, u8, bool),
    evicted: u64,
}

impl<P: Policy> mm_reclaim::Evictor for DriverHw<'_, P> {
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool {
        self.bits.remove(&page)
    }
    fn is_evictable(&mut self, page: PageId) -> bool {
        !self.locked.contains(&page)
    }
    fn can_evict(&self, kind: mm_types::PageKind) -> bool {
        !(self.op.4 && kind == mm_types::PageKind::Anon)
    }
    fn evict(&mut self, batch: &[mm_reclaim::Victim], outcomes: &mut [mm_reclaim::Outcome]) {
        use mm_reclaim::Outcome;
        use mm_types::PageKind;
        let (freed, failed, race, reuse, no_swap) = self.op;
        let mut model = self.model.borrow_mut();
        for (i, v) in batch.iter().enumerate() {
            let bit = 1u8 << (i % 8);
            assert_eq!(model.get(&v.page), Some(&v.kind), "victim {} not tracked as {:?}", v.page, v.kind);
            assert!(!self.locked.contains(&v.page), "locked victim {}", v.page);
            assert!(!(no_swap && v.kind == PageKind::Anon), "anonymous victim without swap");
            if race & bit != 0 {
                self.driver.remove(v.page).unwrap();
                model.remove(&v.page);
                if reuse & bit != 0 {
                    self.driver.insert(v.page, PageKind::Anon, None).unwrap();
                    model.insert(v.page, PageKind::Anon);
                }
            }
            outcomes[i] = if freed & bit != 0 {
                Outcome::Freed
            } else if failed & bit != 0 {
                Outcome::Failed
            } else {
                Outcome::Keep
            };
        }
        for (v, o) in batch.iter().zip(outcomes.iter()) {
            if *o == Outcome::Freed {
                // Whatever owns the frame now, the evictor freed it.
                model.remove(&v.page);
                self.evicted += 1;
            }
        }
    }
}

/// Drives the reclaim driver over two S3-FIFO lists against a map model
/// of tracked pages and their kinds (MODEL 10-12): victims are tracked,
/// unlocked and evictable by kind; pages removed or reused while isolated
/// end up as the model says; progress counts exactly the frees.
pub fn drive_driver(ops: &[DriverOp]) {
    use mm_reclaim::Reclaim;
    use mm_types::PageKind;
    // Different policies per kind, through the run-time choice.
    let r: Reclaim<std::boxed::Box<dyn Policy + Send>> = Reclaim::new(
        std::boxed::Box::new(mm_reclaim::WTinyLfu::new(IDS as usize, 16)),
        std::boxed::Box::new(TwoList::new(IDS as usize)),
        IDS as usize,
    );
    let model = std::cell::RefCell::new(BTreeMap::new());
    let mut locked = BTreeSet::new();
    let mut bits = BTreeSet::new();
    for (step, op) in (1..).zip(ops) {
        match *op {
            DriverOp::Insert(x, file) => {
                let page = u32::from(x) % IDS;
                let kind = if file { PageKind::File } else { PageKind::Anon };
                let res = r.insert(page, kind, None);
                if model.borrow().contains_key(&page) {
                    assert!(res.is_err());
                } else {
                    res.unwrap();
                    model.borrow_mut().insert(page, kind);
                }
            }
            DriverOp::Access(x) => r.access(u32::from(x) % IDS),
            DriverOp::Touch(x) => {
                bits.insert(u32::from(x) % IDS);
            }
            DriverOp::Remove(x) => {
                let page = u32::from(x) % IDS;
                assert_eq!(r.remove(page).is_ok(), model.borrow_mut().remove(&page).is_some());
            }
            DriverOp::Lock(x) => {
                let page = u32::from(x) % IDS;
                if !locked.remove(&page) {
                    locked.insert(page);
                }
            }
            DriverOp::Reclaim { target, freed, failed, race, reuse, no_swap } => {
                let mut hw = DriverHw {
                    driver: &r,
                    model: &model,
                    bits: core::mem::take(&mut bits),
                    locked: &locked,
                    op: (freed, failed, race, reuse, no_swap),
                    evicted: 0,
                };
                let p = r.reclaim(u64::from(target % 64), &mut hw);
                assert_eq!(p.evicted, hw.evicted);
                assert_eq!(p.reclaimed(), p.evicted);
                bits = hw.bits;
            }
            DriverOp::Swappiness(s) => r.set_swappiness(s % 201).unwrap(),
        }
        if step % 8 == 0 || step == ops.len() {
            r.check().unwrap();
        }
        let m = model.borrow();
        let anon = m.values().filter(|k| **k == PageKind::Anon).count();
        assert_eq!((r.len(PageKind::Anon), r.len(PageKind::File)), (anon, m.len() - anon));
    }
}

/// Runs one fuzz input against every policy.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = crate::decode_ops(data, 1000);
    let capacity = data.first().map_or(8, |&b| 1 + usize::from(b) % 40);
    drive(&mut Clock::new(IDS as usize), &ops);
    drive(&mut S3Fifo::new(IDS as usize, capacity), &ops);
    drive(&mut mm_reclaim::default_policy(IDS as usize, capacity, mm_reclaim::Mode::AccessedBits), &ops);
    // The adaptation at its quickest (every refault within half the
    // capacity moves the window) and fixed.
    drive(&mut mm_reclaim::WTinyLfu::with_reach(IDS as usize, capacity, 2), &ops);
    drive(&mut mm_reclaim::WTinyLfu::with_reach(IDS as usize, capacity, 0), &ops);
    drive(&mut TwoList::new(IDS as usize), &ops);
    drive(&mut mm_reclaim::GenClock::new(IDS as usize), &ops);
    drive_driver(&crate::decode_ops::<DriverOp>(data, 1000));
}
