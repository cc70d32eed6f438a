//! The reclaim driver: watermarks, direct reclaim, honest progress,
//! unevictable pages, shrinker proportions, the anon/file balance, pages
//! removed or reused while isolated, and contract errors.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mm_reclaim::{
    choose_victim, Clock, Evictor, Level, Outcome, PageId, PerKind, Policy, Progress, Reclaim, ReclaimError, S3Fifo,
    Shrinker, Shrunk, TaskMemory, TwoList, Victim, BATCH, SHRINK_BATCH,
};
use mm_types::PageKind;

/// A host stand-in for the integrator: a free-frame counter, locked pages,
/// accessed bits, and what to answer per victim.
#[derive(Default)]
struct Host {
    free: Cell<u64>,
    locked: BTreeSet<PageId>,
    bits: RefCell<BTreeSet<PageId>>,
    no_swap: bool,
    fail: bool,
    evicted: Vec<Victim>,
}

impl Evictor for Host {
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool {
        self.bits.borrow_mut().remove(&page)
    }
    fn is_evictable(&mut self, page: PageId) -> bool {
        !self.locked.contains(&page)
    }
    fn can_evict(&self, kind: PageKind) -> bool {
        !(self.no_swap && kind == PageKind::Anon)
    }
    fn evict(&mut self, batch: &[Victim], outcomes: &mut [Outcome]) {
        assert!(batch.len() <= BATCH);
        for (v, o) in batch.iter().zip(outcomes.iter_mut()) {
            assert!(!self.locked.contains(&v.page), "locked page {} given to evict", v.page);
            assert!(!(self.no_swap && v.kind == PageKind::Anon), "anonymous page evicted without swap");
            if self.fail {
                *o = Outcome::Failed;
            } else {
                *o = Outcome::Freed;
                self.free.set(self.free.get() + 1);
                self.evicted.push(*v);
            }
        }
    }
}

fn clocks(ids: usize) -> Reclaim<Clock> {
    Reclaim::new(Clock::new(ids), Clock::new(ids), ids)
}

fn fill(r: &Reclaim<impl Policy>, pages: std::ops::Range<PageId>, kind: PageKind) {
    for p in pages {
        r.insert(p, kind, None).unwrap();
    }
}

#[test]
fn background_runs_from_below_low_to_high_and_not_above_low() {
    let r = clocks(1024);
    fill(&r, 0..1024, PageKind::File);
    let mut host = Host::default();
    let marks = |free: u64| Level { free, min: 64, low: 128, high: 192 };
    // Above low: nothing happens.
    let p = r.background(&mut || marks(130), &mut host);
    assert!(host.evicted.is_empty());
    assert_eq!(p, Progress { priority: 12, ..Progress::default() });
    assert_eq!(r.stats().background_runs, 0);
    // Below low: up to high, exactly (Clock with no bits evicts in order).
    let freed = Cell::new(120);
    let mut host2 = Host::default();
    let p = r.background(&mut || marks(freed.get()), &mut Probe { host: &mut host2, freed: &freed });
    assert!(freed.get() >= 192, "free {} after background reclaim", freed.get());
    assert_eq!(p.reclaimed(), freed.get() - 120);
    assert_eq!(p.evicted as usize, host2.evicted.len());
    assert_eq!(r.len(PageKind::File), 1024 - host2.evicted.len());
    // The oldest pages went first.
    let order: Vec<PageId> = host2.evicted.iter().map(|v| v.page).collect();
    assert_eq!(order, (0..order.len() as PageId).collect::<Vec<_>>());
    assert_eq!(r.stats().background_runs, 1);
    r.check().unwrap();
}

/// Forwards to a [`Host`] and adds its frees to a shared counter the
/// watermark closure reads.
struct Probe<'a> {
    host: &'a mut Host,
    freed: &'a Cell<u64>,
}

impl Evictor for Probe<'_> {
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool {
        self.host.test_and_clear_referenced(page)
    }
    fn is_evictable(&mut self, page: PageId) -> bool {
        self.host.is_evictable(page)
    }
    fn can_evict(&self, kind: PageKind) -> bool {
        self.host.can_evict(kind)
    }
    fn evict(&mut self, batch: &[Victim], outcomes: &mut [Outcome]) {
        let before = self.host.evicted.len();
        self.host.evict(batch, outcomes);
        self.freed.set(self.freed.get() + (self.host.evicted.len() - before) as u64);
    }
}

/// The symptom of the `reclaim_model` crashes at the driver: with the
/// (then default) long-ghost S3-FIFO, locked pages filling the small queue
/// in front of main-queue pages that still hold references made every
/// `evict` give up, so direct reclaim reported no progress (the OOM path)
/// with 90 evictable pages on the list. The same shape for the default
/// W-TinyLFU: locked newcomers fill its window above its share.
#[test]
#[cfg_attr(miri, ignore = "safe code only (the crate forbids unsafe): slow interpreted")]
fn direct_reclaim_gets_past_locked_pages() {
    use mm_reclaim::{default_policy, Mode};
    let policies: [fn() -> Box<dyn Policy + Send>; 2] =
        [|| Box::new(S3Fifo::with_params(256, 100, 10, 300, 1)), || Box::new(default_policy(256, 100, Mode::Callback))];
    for make in policies {
        let r = Reclaim::new(make(), make(), 256);
        // 90 pages through the small queue (window) and out; back with
        // their shadows, each referenced three times.
        fill(&r, 0..90, PageKind::File);
        let mut host = Host::default();
        assert_eq!(r.reclaim(90, &mut host).evicted, 90);
        for v in core::mem::take(&mut host.evicted) {
            r.insert(v.page, v.kind, Some(v.shadow)).unwrap();
            for _ in 0..3 {
                r.access(v.page);
            }
        }
        // 30 locked pages fill the small queue (its share is 10) or the
        // window (its share is 1).
        fill(&r, 100..130, PageKind::File);
        let mut host = Host { locked: (100..130).collect(), ..Host::default() };
        let p = r.direct(&mut host);
        assert!(p.reclaimed() >= BATCH as u64, "{p:?}");
        assert!(host.evicted.iter().all(|v| v.page < 90));
        assert_eq!(r.stats().no_progress, 0);
        r.check().unwrap();
    }
}

#[test]
fn direct_reclaim_frees_a_batch_and_progress_is_honest() {
    let r = clocks(256);
    fill(&r, 0..256, PageKind::Anon);
    let mut host = Host::default();
    let p = r.direct(&mut host);
    assert!(p.reclaimed() >= BATCH as u64 && p.reclaimed() < 2 * BATCH as u64, "{p:?}");
    assert_eq!(p.reclaimed(), host.free.get());
    assert_eq!(r.len(PageKind::Anon), 256 - host.evicted.len());
    // A failing evictor: nothing reclaimed, every victim back, failures
    // counted, and the run is recorded as having made no progress.
    let mut failing = Host { fail: true, ..Host::default() };
    let before = r.len(PageKind::Anon);
    let p = r.direct(&mut failing);
    assert_eq!(p.reclaimed(), 0);
    assert!(p.failed > 0);
    assert_eq!(p.priority, 0, "a run without progress goes down to priority 0");
    assert_eq!(r.len(PageKind::Anon), before);
    let s = r.stats();
    assert_eq!((s.direct_runs, s.no_progress), (2, 1));
    assert_eq!(s.failed, p.failed);
    r.check().unwrap();
}

#[test]
fn locked_pages_are_never_evicted_and_reported_as_unevictable() {
    let r = Reclaim::new(S3Fifo::new(64, 64), S3Fifo::new(64, 64), 64);
    fill(&r, 0..64, PageKind::File);
    let mut host = Host { locked: (0..64).filter(|p| p % 2 == 0).collect(), ..Host::default() };
    let p = r.reclaim(64, &mut host);
    // Every unlocked page goes (the Host asserts no locked one is given).
    assert_eq!(p.evicted, 32);
    assert!(p.unevictable > 0);
    assert_eq!(r.len(PageKind::File), 32);
    // Only locked pages left: no progress, nothing evicted.
    let p = r.reclaim(8, &mut host);
    assert_eq!(p.reclaimed(), 0);
    assert_eq!(r.len(PageKind::File), 32);
    r.check().unwrap();
}

struct CountingShrinker {
    objects: u64,
    scanned: AtomicU64,
    frames_per_call: u64,
}

impl Shrinker for CountingShrinker {
    fn name(&self) -> &'static str {
        "test"
    }
    fn count(&self) -> u64 {
        self.objects
    }
    fn scan(&self, nr: u64) -> Shrunk {
        self.scanned.fetch_add(nr, Ordering::Relaxed);
        Shrunk { objects: nr, frames: self.frames_per_call }
    }
}

#[test]
#[cfg_attr(miri, ignore = "safe code only (the crate forbids unsafe): slow interpreted")]
fn shrinkers_are_called_in_proportion_to_their_size() {
    let r = clocks(4096);
    fill(&r, 0..4096, PageKind::File);
    let small = Arc::new(CountingShrinker { objects: 1 << 14, scanned: AtomicU64::new(0), frames_per_call: 0 });
    let big = Arc::new(CountingShrinker { objects: 1 << 16, scanned: AtomicU64::new(0), frames_per_call: 0 });
    let a = r.register_shrinker(small.clone());
    r.register_shrinker(big.clone());
    let mut host = Host::default();
    let p = r.reclaim(16, &mut host);
    let (s, b) = (small.scanned.load(Ordering::Relaxed), big.scanned.load(Ordering::Relaxed));
    assert!(s > 0, "the small shrinker was not called");
    assert_eq!(b, 4 * s, "a shrinker four times bigger scans four times more");
    assert_eq!(p.shrunk_objects, s + b);
    // Pressure per pass: (freeable >> priority) * 4 / seeks; the first
    // pass at priority 12 scans 8 of 2^14.
    assert!(s >= 8);
    // Frames a shrinker gives back count as progress; unregistered ones
    // are no longer called.
    r.unregister_shrinker(a).unwrap();
    assert_eq!(r.unregister_shrinker(a).err(), Some(ReclaimError::NoShrinker));
    let giving = Arc::new(CountingShrinker { objects: 1 << 12, scanned: AtomicU64::new(0), frames_per_call: 4 });
    r.register_shrinker(giving.clone());
    let before = small.scanned.load(Ordering::Relaxed);
    let p = r.reclaim(1, &mut host);
    assert_eq!(small.scanned.load(Ordering::Relaxed), before);
    assert!(p.shrunk_frames >= 4 && p.reclaimed() == p.evicted + p.shrunk_frames);
}

/// A shrinker that claims `count` objects and, on each of its first
/// `calls` scans, frees what it is asked and says `frames` frames came
/// back; nothing after that.
struct Liar {
    count: u64,
    frames: u64,
    calls: u64,
    scans: AtomicU64,
}

impl Shrinker for Liar {
    fn name(&self) -> &'static str {
        "liar"
    }
    fn count(&self) -> u64 {
        self.count
    }
    fn scan(&self, nr: u64) -> Shrunk {
        if self.scans.fetch_add(1, Ordering::Relaxed) < self.calls {
            Shrunk { objects: nr, frames: self.frames }
        } else {
            Shrunk::default()
        }
    }
}

/// Huge counts and frame reports from shrinkers saturate instead of
/// overflowing (a count of `u64::MAX` used to overflow the pressure at
/// priority 1, two reports of `u64::MAX` frames the progress).
#[test]
fn shrinkers_reporting_huge_numbers_saturate() {
    // Nothing on the lists, a shrinker whose count is u64::MAX but that
    // frees nothing: every pass down to priority 0 asks it once.
    let r = clocks(8);
    let broken = Arc::new(Liar { count: u64::MAX, frames: 0, calls: 0, scans: AtomicU64::new(0) });
    r.register_shrinker(broken.clone());
    let p = r.reclaim(32, &mut Host::default());
    assert_eq!((p.reclaimed(), p.priority, p.passes), (0, 0, 13));
    assert_eq!(broken.scans.load(Ordering::Relaxed), 13);
    assert_eq!(r.stats().no_progress, 1);
    // Two shrinkers each reporting u64::MAX frames, with pages evicted too.
    let r = clocks(64);
    fill(&r, 0..64, PageKind::File);
    for _ in 0..2 {
        r.register_shrinker(Arc::new(Liar { count: u64::MAX, frames: u64::MAX, calls: 1, scans: AtomicU64::new(0) }));
    }
    let p = r.reclaim(u64::MAX, &mut Host::default());
    assert_eq!((p.shrunk_frames, p.reclaimed()), (u64::MAX, u64::MAX));
    assert_eq!(p.shrunk_objects, 2 * SHRINK_BATCH);
    assert_eq!(p.passes, 1, "the target is met after the first pass");
    r.register_shrinker(Arc::new(Liar { count: 1, frames: u64::MAX, calls: 1, scans: AtomicU64::new(0) }));
    let p = r.reclaim(u64::MAX, &mut Host::default());
    assert_eq!(p.reclaimed(), u64::MAX);
    assert_eq!(r.stats().shrunk_frames, u64::MAX);
    r.check().unwrap();
}

/// A policy refusing an insert or removal the driver's own state allowed
/// (here: a policy sized for fewer ids than the driver) is reported as the
/// specific error, and nothing is counted.
#[test]
fn policy_refusals_reach_the_caller() {
    let r = Reclaim::new(Clock::new(4), Clock::new(4), 8);
    assert_eq!(r.insert(6, PageKind::File, Some(mm_reclaim::Shadow(1))), Err(ReclaimError::OutOfRange(6)));
    assert_eq!(r.stats().refaults, PerKind { anon: 0, file: 0 });
    assert_eq!(r.remove(6), Err(ReclaimError::NotTracked(6)));
    r.insert(2, PageKind::Anon, None).unwrap();
    r.check().unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "safe code only (the crate forbids unsafe): slow interpreted")]
fn anon_and_file_balance() {
    // No swap: anonymous pages are never scanned, even at priority 0.
    let r = clocks(512);
    fill(&r, 0..256, PageKind::Anon);
    fill(&r, 256..512, PageKind::File);
    let mut host = Host { no_swap: true, ..Host::default() };
    let p = r.reclaim(1000, &mut host);
    assert_eq!(p.evicted, 256);
    assert_eq!((r.len(PageKind::Anon), r.len(PageKind::File)), (256, 0));
    let p = r.reclaim(10, &mut host);
    assert_eq!(p.reclaimed(), 0, "nothing evictable without swap");

    // Swappiness 0: file pages only, as long as passes above priority 0
    // find enough of them.
    let r = clocks(512);
    fill(&r, 0..256, PageKind::Anon);
    fill(&r, 256..512, PageKind::File);
    r.set_swappiness(0).unwrap();
    let mut host = Host::default();
    r.reclaim(100, &mut host);
    assert!(host.evicted.iter().all(|v| v.kind == PageKind::File));

    // Swappiness 100 and no history: both kinds in proportion to size.
    let r = clocks(4096);
    fill(&r, 0..2048, PageKind::Anon);
    fill(&r, 2048..4096, PageKind::File);
    r.set_swappiness(100).unwrap();
    let mut host = Host::default();
    r.reclaim(512, &mut host);
    let anon = host.evicted.iter().filter(|v| v.kind == PageKind::Anon).count();
    let file = host.evicted.len() - anon;
    assert!(anon.abs_diff(file) <= 2, "anon {anon} file {file}");

    // File pages that keep refaulting make file eviction costly: the next
    // reclaim leans to anonymous pages.
    let evicted_files: Vec<Victim> = host.evicted.iter().filter(|v| v.kind == PageKind::File).copied().collect();
    for v in &evicted_files {
        r.insert(v.page, PageKind::File, Some(v.shadow)).unwrap();
    }
    assert_eq!(r.stats().refaults, PerKind { anon: 0, file: evicted_files.len() as u64 });
    let mut host = Host::default();
    r.reclaim(256, &mut host);
    let anon = host.evicted.iter().filter(|v| v.kind == PageKind::Anon).count();
    assert!(anon * 4 > host.evicted.len() * 3, "anon {anon} of {}", host.evicted.len());
    assert_eq!(r.set_swappiness(201), Err(ReclaimError::BadSwappiness(201)));
    r.check().unwrap();
}

/// An evictor that, while it holds a batch, lets "another CPU" act on the
/// driver (the lock is dropped during eviction).
struct Racing<'a, F: FnMut(&[Victim], &mut [Outcome])> {
    during: F,
    _r: std::marker::PhantomData<&'a ()>,
}

impl<F: FnMut(&[Victim], &mut [Outcome])> Evictor for Racing<'_, F> {
    fn test_and_clear_referenced(&mut self, _page: PageId) -> bool {
        false
    }
    fn evict(&mut self, batch: &[Victim], outcomes: &mut [Outcome]) {
        (self.during)(batch, outcomes)
    }
}

#[test]
#[cfg_attr(miri, ignore = "safe code only (the crate forbids unsafe): slow interpreted")]
fn pages_removed_reused_or_accessed_while_isolated() {
    // Fewer pages under miri: the batches are the same.
    let n: u32 = if cfg!(miri) { 1024 } else { 4096 };
    let r = Reclaim::new(TwoList::new(n as usize), TwoList::new(n as usize), n as usize);
    fill(&r, 0..n, PageKind::File);
    // In the first batch of at least five pages (the lock is dropped while
    // the evictor works): b0 is freed by its owner; b1 freed and reused as
    // an anonymous page, and its eviction fails; b2 accessed; b3 freed but
    // its eviction reports it freed too; b4 evicted. Everything else kept.
    let mut special: Option<Vec<PageId>> = None;
    let mut ev = Racing {
        during: |batch: &[Victim], outcomes: &mut [Outcome]| {
            outcomes.fill(Outcome::Keep);
            if special.is_some() || batch.len() < 5 {
                return;
            }
            let b: Vec<PageId> = batch.iter().map(|v| v.page).collect();
            assert_eq!(r.insert(b[2], PageKind::File, None), Err(ReclaimError::AlreadyTracked(b[2])));
            r.remove(b[0]).unwrap();
            assert_eq!(r.remove(b[0]), Err(ReclaimError::NotTracked(b[0])));
            r.remove(b[1]).unwrap();
            r.insert(b[1], PageKind::Anon, None).unwrap();
            r.access(b[2]);
            r.remove(b[3]).unwrap();
            outcomes[1] = Outcome::Failed;
            outcomes[3] = Outcome::Freed;
            outcomes[4] = Outcome::Freed;
            special = Some(b);
        },
        _r: std::marker::PhantomData,
    };
    let p = r.reclaim(1000, &mut ev);
    assert_eq!((p.evicted, p.failed), (2, 1));
    r.check().unwrap();
    let b = special.expect("no batch of five");
    // Removed and evicted pages are gone; the reused one is anonymous; the
    // accessed one is back on the file list.
    for gone in [b[0], b[3], b[4]] {
        assert_eq!(r.remove(gone), Err(ReclaimError::NotTracked(gone)));
    }
    assert_eq!(r.len(PageKind::Anon), 1);
    r.remove(b[1]).unwrap();
    r.remove(b[2]).unwrap();
    assert_eq!(r.len(PageKind::File), n as usize - 5);
    r.check().unwrap();
}

#[test]
fn contract_errors() {
    let r = clocks(4);
    assert_eq!(r.insert(4, PageKind::Anon, None), Err(ReclaimError::OutOfRange(4)));
    assert_eq!(r.remove(9), Err(ReclaimError::OutOfRange(9)));
    r.insert(1, PageKind::Anon, None).unwrap();
    assert_eq!(r.insert(1, PageKind::File, None), Err(ReclaimError::AlreadyTracked(1)));
    assert_eq!(r.remove(2), Err(ReclaimError::NotTracked(2)));
    r.access(3); // untracked: ignored
    r.access(100); // out of range: ignored
    assert_eq!(ReclaimError::NotTracked(2).to_string(), "page 2 is not on a reclaim list");
    r.check().unwrap();
}

#[test]
fn no_progress_leads_to_the_oom_choice() {
    // Three tasks' pages, no swap, nothing file-backed: reclaim cannot
    // help, so the biggest task (adjustments aside) is the victim.
    let r = clocks(96);
    let mut owner = BTreeMap::new();
    for (task, pages) in [(1u32, 0..16), (2, 16..80), (3, 80..96)] {
        for p in pages {
            owner.insert(p, task);
            r.insert(p, PageKind::Anon, None).unwrap();
        }
    }
    let mut host = Host { no_swap: true, ..Host::default() };
    let p = r.direct(&mut host);
    assert_eq!(p.reclaimed(), 0);
    let tasks = [1u32, 2, 3].map(|t| TaskMemory {
        task: t,
        resident: owner.values().filter(|&&o| o == t).count() as u64,
        swapped: 0,
        page_tables: 1,
        adjust: if t == 3 { 500 } else { 0 },
    });
    // Task 2: 64 + 1 = 65 points; task 3: 16 + 1 + 500/1000 of 96 = 65; a
    // tie goes to the first.
    let (victim, score) = choose_victim(tasks, 96).unwrap().unwrap();
    assert_eq!((victim, score), (2, 65));
}
