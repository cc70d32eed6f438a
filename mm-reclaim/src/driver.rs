//! [`Reclaim`] (documented on the type).

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use mm_types::sync::Mutex;
use mm_types::PageKind;

use crate::{PageId, Policy, PolicyError, Scan, Shadow};

/// Victims isolated per lock hold (Linux's `SWAP_CLUSTER_MAX`); also the
/// target of one direct reclaim.
pub const BATCH: usize = 32;

/// The priority reclaim starts at (Linux's `DEF_PRIORITY`): a pass at
/// priority `p` scans `1 / 2^p` of each list.
pub const START_PRIORITY: u8 = 12;

/// Objects a shrinker is asked to scan per call (Linux's `SHRINK_BATCH`).
pub const SHRINK_BATCH: u64 = 128;

/// The two kinds, in list order (`kind as usize` indexes per-kind arrays).
const KINDS: [PageKind; 2] = [PageKind::Anon, PageKind::File];

/// A zone's free frames against its watermarks (the integrator fills it
/// from its frame allocator: mm-buddy's `watermark_state` has these four
/// figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Level {
    /// Free frames.
    pub free: u64,
    /// Below this only atomic allocations succeed.
    pub min: u64,
    /// Below this background reclaim should run.
    pub low: u64,
    /// Background reclaim stops once free memory is back here.
    pub high: u64,
}

impl Level {
    /// Whether background reclaim should be woken.
    pub fn below_low(&self) -> bool {
        self.free < self.low
    }

    /// Frames to free to reach the high watermark.
    pub fn to_high(&self) -> u64 {
        self.high.saturating_sub(self.free)
    }
}

/// A page picked for eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Victim {
    /// The page.
    pub page: PageId,
    /// Its kind.
    pub kind: PageKind,
    /// What to keep with the page's identity (next to its swap entry or in
    /// its page-cache slot) and hand back to [`Reclaim::insert`] when it is
    /// faulted in again.
    pub shadow: Shadow,
}

/// What became of a victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Unmapped everywhere and written out (or clean and dropped); its
    /// frame is free. Only this counts as progress.
    Freed,
    /// Still in use (referenced again, locked, pinned, dirty with I/O
    /// under way): back to its list.
    Keep,
    /// Could not be evicted (swap full, write error): back to its list,
    /// counted as a failure.
    Failed,
}

/// What the integrator does for reclaim: harvests accessed bits, says
/// which pages may go, and evicts them (unmap through the reverse map,
/// write to swap or drop a clean file page).
pub trait Evictor {
    /// Tests and clears the accessed bits of every mapping of `page`.
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool;

    /// Whether `page` may be evicted now; locked, pinned and writeback
    /// pages must answer `false` (they are never given to
    /// [`evict`](Self::evict)).
    fn is_evictable(&mut self, _page: PageId) -> bool {
        true
    }

    /// Whether pages of `kind` can be evicted at all now (anonymous pages
    /// need free swap space); lists that cannot are not scanned.
    fn can_evict(&self, _kind: PageKind) -> bool {
        true
    }

    /// Evicts a batch, writing one [`Outcome`] per victim (the slots start
    /// as [`Outcome::Keep`]). Called without the driver's lock.
    fn evict(&mut self, batch: &[Victim], outcomes: &mut [Outcome]);
}

/// A cache outside the page lists that gives memory back on request
/// (Linux's shrinker): slab caches, dentry-like caches, pools.
pub trait Shrinker: Send + Sync {
    /// A name for statistics.
    fn name(&self) -> &'static str;

    /// Objects that could be freed now (0: nothing to do).
    fn count(&self) -> u64;

    /// Tries to free up to `nr` objects.
    fn scan(&self, nr: u64) -> Shrunk;

    /// How costly an object is to recreate (Linux's `seeks`, default 2):
    /// pressure is divided by it.
    fn seeks(&self) -> u32 {
        2
    }
}

/// What a [`Shrinker::scan`] freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Shrunk {
    /// Objects freed.
    pub objects: u64,
    /// Frames given back to the frame allocator as a result.
    pub frames: u64,
}

/// A registered shrinker's handle, for [`Reclaim::unregister_shrinker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkerId(u64);

/// Contract violations, reported instead of corrupting the lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReclaimError {
    /// A page id at or above the bound given to [`Reclaim::new`].
    OutOfRange(PageId),
    /// [`Reclaim::insert`] of a page already tracked.
    AlreadyTracked(PageId),
    /// [`Reclaim::remove`] of a page not tracked.
    NotTracked(PageId),
    /// Swappiness above 200.
    BadSwappiness(u8),
    /// No shrinker with this handle.
    NoShrinker,
}

impl From<PolicyError> for ReclaimError {
    /// A policy refusing what the driver's own state allowed: the policy
    /// was given pages behind the driver's back, or is sized for fewer ids.
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::OutOfRange(p) => ReclaimError::OutOfRange(p),
            PolicyError::AlreadyTracked(p) => ReclaimError::AlreadyTracked(p),
            PolicyError::NotTracked(p) => ReclaimError::NotTracked(p),
        }
    }
}

impl core::fmt::Display for ReclaimError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReclaimError::OutOfRange(p) => write!(f, "page {p} is beyond the driver's page ids"),
            ReclaimError::AlreadyTracked(p) => write!(f, "page {p} is already on a reclaim list"),
            ReclaimError::NotTracked(p) => write!(f, "page {p} is not on a reclaim list"),
            ReclaimError::BadSwappiness(s) => write!(f, "swappiness {s} is above 200"),
            ReclaimError::NoShrinker => write!(f, "no such shrinker"),
        }
    }
}

/// What one call of [`Reclaim::reclaim`], [`Reclaim::direct`] or
/// [`Reclaim::background`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Progress {
    /// Pages whose accessed bits a policy looked at, plus victims.
    pub scanned: u64,
    /// Victims the evictor freed.
    pub evicted: u64,
    /// Victims kept (in use again): back on their lists.
    pub kept: u64,
    /// Victims the evictor failed to evict.
    pub failed: u64,
    /// Pages a policy passed over because they were locked or pinned.
    pub unevictable: u64,
    /// Objects shrinkers freed.
    pub shrunk_objects: u64,
    /// Frames shrinkers gave back.
    pub shrunk_frames: u64,
    /// Priority passes run.
    pub passes: u32,
    /// The lowest priority reached (12 if no pass ran beyond the first).
    pub priority: u8,
}

impl Progress {
    /// Frames freed: evicted pages and frames shrinkers gave back. Zero
    /// after a reclaim down to priority 0 means reclaim cannot help: the
    /// caller's next step is the OOM killer ([`crate::choose_victim`]).
    pub fn reclaimed(&self) -> u64 {
        // Saturating: a shrinker may report any number of frames.
        self.evicted.saturating_add(self.shrunk_frames)
    }

    fn add(&mut self, o: &Progress) {
        self.scanned = self.scanned.saturating_add(o.scanned);
        self.evicted = self.evicted.saturating_add(o.evicted);
        self.kept = self.kept.saturating_add(o.kept);
        self.failed = self.failed.saturating_add(o.failed);
        self.unevictable = self.unevictable.saturating_add(o.unevictable);
        self.shrunk_objects = self.shrunk_objects.saturating_add(o.shrunk_objects);
        self.shrunk_frames = self.shrunk_frames.saturating_add(o.shrunk_frames);
        self.passes = self.passes.saturating_add(o.passes);
        self.priority = self.priority.min(o.priority);
    }
}

/// One value for each kind of page, indexed by [`PageKind`].
///
/// ```
/// use mm_reclaim::mm_types::PageKind;
/// use mm_reclaim::PerKind;
///
/// let mut evicted = PerKind::<u64>::default();
/// evicted[PageKind::File] += 3;
/// assert_eq!((evicted.anon, evicted.file), (0, 3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PerKind<T> {
    /// Anonymous pages'.
    pub anon: T,
    /// File pages'.
    pub file: T,
}

impl<T> core::ops::Index<PageKind> for PerKind<T> {
    type Output = T;

    fn index(&self, kind: PageKind) -> &T {
        match kind {
            PageKind::Anon => &self.anon,
            PageKind::File => &self.file,
        }
    }
}

impl<T> core::ops::IndexMut<PageKind> for PerKind<T> {
    fn index_mut(&mut self, kind: PageKind) -> &mut T {
        match kind {
            PageKind::Anon => &mut self.anon,
            PageKind::File => &mut self.file,
        }
    }
}

/// Counters since the driver was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReclaimStats {
    /// Background reclaim runs that had work to do.
    pub background_runs: u64,
    /// Direct reclaim runs.
    pub direct_runs: u64,
    /// Pages evicted, by kind.
    pub evicted: PerKind<u64>,
    /// Pages inserted with a shadow (refaults), by kind.
    pub refaults: PerKind<u64>,
    /// Victims the evictor failed to evict.
    pub failed: u64,
    /// Frames shrinkers gave back.
    pub shrunk_frames: u64,
    /// Reclaim runs that freed nothing at priority 0.
    pub no_progress: u64,
}

/// Where a page is, one byte per page: untracked, on its kind's list, or
/// isolated (taken off its list by a reclaim batch that is evicting it).
/// An isolated page also records whether it was removed meanwhile (its
/// batch forgets it on return) or referenced (the reference is reported
/// when it goes back on its list).
#[derive(Clone, Copy, PartialEq, Eq)]
struct PageState(u8);

impl PageState {
    const UNTRACKED: PageState = PageState(0);
    /// Removed while isolated.
    const GONE: PageState = PageState(Self::ISOLATED | Self::GONE_BIT);

    const ON_LIST: u8 = 1;
    const ISOLATED: u8 = 2;
    const GONE_BIT: u8 = 4;
    const REFERENCED: u8 = 8;
    /// The page's kind is file (else anonymous).
    const FILE: u8 = 16;

    fn kind_bit(kind: PageKind) -> u8 {
        if kind == PageKind::File {
            Self::FILE
        } else {
            0
        }
    }

    fn on_list(kind: PageKind) -> PageState {
        PageState(Self::ON_LIST | Self::kind_bit(kind))
    }

    fn isolated(kind: PageKind) -> PageState {
        PageState(Self::ISOLATED | Self::kind_bit(kind))
    }

    fn is_on_list(self) -> bool {
        self.0 & Self::ON_LIST != 0
    }

    fn is_isolated(self) -> bool {
        self.0 & Self::ISOLATED != 0
    }

    /// Isolated and not removed since: its batch still speaks for it.
    fn is_held(self) -> bool {
        self.is_isolated() && !self.is_gone()
    }

    fn is_gone(self) -> bool {
        self.0 & Self::GONE_BIT != 0
    }

    fn is_referenced(self) -> bool {
        self.0 & Self::REFERENCED != 0
    }

    fn referenced(self) -> PageState {
        PageState(self.0 | Self::REFERENCED)
    }

    fn kind(self) -> PageKind {
        if self.0 & Self::FILE != 0 {
            PageKind::File
        } else {
            PageKind::Anon
        }
    }
}

struct Inner<P> {
    lists: [P; 2],
    state: Vec<PageState>,
    /// Recent cost of evicting each kind (refaults and rotations), decayed.
    cost: PerKind<u64>,
    swappiness: u8,
    stats: ReclaimStats,
    isolated: usize,
}

impl<P: Policy> Inner<P> {
    fn note_cost(&mut self, kind: PageKind, n: u64) {
        self.cost[kind] += n;
        // Decay: older history counts half once the costs reach a quarter
        // of the lists (as Linux's lru_note_cost does).
        let size = (self.lists[0].len() + self.lists[1].len()) as u64;
        if self.cost.anon + self.cost.file > size / 4 + 1 {
            self.cost.anon /= 2;
            self.cost.file /= 2;
        }
    }

    /// How many pages of each list to scan at `priority`.
    fn scan_targets(&self, priority: u8, can: [bool; 2]) -> [u64; 2] {
        let size = |k: usize| (self.lists[k].len() as u64) >> priority;
        match can {
            [false, false] => [0, 0],
            [true, false] => [size(0), 0],
            [false, true] => [0, size(1)],
            [true, true] if priority == 0 => [size(0), size(1)],
            [true, true] if self.swappiness == 0 => [0, size(1)],
            [true, true] => {
                let total = self.cost.anon + self.cost.file + 1;
                let ap = u64::from(self.swappiness) * total / (self.cost.anon + 1);
                let fp = (200 - u64::from(self.swappiness)) * total / (self.cost.file + 1);
                let sum = (ap + fp).max(1);
                // Round up so a list with pages always gets at least one
                // look once its share is due.
                [(size(0) * ap).div_ceil(sum), (size(1) * fp).div_ceil(sum)]
            }
        }
    }
}

/// Adapts an [`Evictor`] to a policy's [`Scan`], counting what it is asked.
struct Counting<'a, E: ?Sized> {
    ev: &'a mut E,
    looked: u64,
    unevictable: u64,
}

impl<E: Evictor + ?Sized> Scan for Counting<'_, E> {
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool {
        self.looked += 1;
        self.ev.test_and_clear_referenced(page)
    }

    fn is_evictable(&mut self, page: PageId) -> bool {
        let ok = self.ev.is_evictable(page);
        if !ok {
            self.unevictable += 1;
        }
        ok
    }
}

/// Registered shrinkers: the last handle given, and (handle, shrinker).
type Registered = (u64, Vec<(u64, Arc<dyn Shrinker>)>);

/// The reclaim driver over two policies (anonymous and file pages).
///
/// The reclaim driver: anonymous and file pages on separate policies,
/// background reclaim between the low and high watermarks, direct reclaim
/// for an allocating task, shrinkers, and an honest account of progress.
///
/// The shape follows Linux's `shrink_node`: reclaim runs at a *priority*
/// from 12 down to 0; at priority `p` it asks each list for `size >> p`
/// victims (split between anonymous and file pages by swappiness and by
/// what evicting each kind has recently cost), and every registered
/// [`Shrinker`] scans `(freeable >> p) * 4 / seeks` objects. It stops as
/// soon as the target is met; a pass that misses it goes on at the next
/// lower priority, so priority 0 has looked at everything.
///
/// Victims are *isolated* in batches of [`BATCH`] under the driver's lock
/// and evicted by the integrator's [`Evictor`] with the lock dropped (the
/// write to swap can sleep); pages kept or failed go back to their list.
/// Meanwhile other CPUs may insert, access and remove pages: a page removed
/// while isolated is forgotten when its batch comes back, one inserted
/// again (freed and reused) is tracked anew (MODEL 10).
///
/// Lock order: the driver's lock is taken before anything the evictor's
/// [`Evictor::test_and_clear_referenced`] and [`Evictor::is_evictable`]
/// take (they run while a policy scans). Call [`Reclaim::insert`],
/// [`Reclaim::access`] and [`Reclaim::remove`] without holding those.
///
/// ```
/// use core::cell::Cell;
/// use mm_reclaim::{Evictor, Level, Outcome, Reclaim, Victim};
/// use mm_reclaim::mm_types::PageKind;
/// use mm_reclaim::Clock;
///
/// // Frees every victim; the frames land in a counter standing in for the
/// // frame allocator.
/// struct Drop<'a>(&'a Cell<u64>);
/// impl Evictor for Drop<'_> {
///     fn test_and_clear_referenced(&mut self, _page: u32) -> bool {
///         false
///     }
///     fn evict(&mut self, batch: &[Victim], outcomes: &mut [Outcome]) {
///         self.0.set(self.0.get() + batch.len() as u64);
///         outcomes.fill(Outcome::Freed);
///     }
/// }
///
/// let reclaim = Reclaim::new(Clock::new(64), Clock::new(64), 64);
/// for page in 0..64 {
///     reclaim.insert(page, PageKind::File, None).unwrap();
/// }
/// // 10 frames free, watermarks min 8, low 12, high 16: background reclaim
/// // brings free memory back to 16.
/// let free = Cell::new(10);
/// let p = reclaim.background(&mut || Level { free: free.get(), min: 8, low: 12, high: 16 }, &mut Drop(&free));
/// assert_eq!((p.reclaimed(), free.get()), (6, 16));
/// assert_eq!(reclaim.len(PageKind::File), 58);
/// ```
pub struct Reclaim<P> {
    inner: Mutex<Inner<P>>,
    shrinkers: Mutex<Registered>,
}

impl<P: Policy> Reclaim<P> {
    /// A driver for page ids below `ids`, with `anon` and `file` (empty
    /// policies sized for the same ids). Swappiness starts at 60.
    pub fn new(anon: P, file: P, ids: usize) -> Self {
        Reclaim {
            inner: Mutex::new(Inner {
                lists: [anon, file],
                state: vec![PageState::UNTRACKED; ids],
                cost: PerKind::default(),
                swappiness: 60,
                stats: ReclaimStats::default(),
                isolated: 0,
            }),
            shrinkers: Mutex::new((0, Vec::new())),
        }
    }

    /// Sets swappiness, 0 to 200 (Linux's `vm.swappiness`): the relative
    /// weight of anonymous against file pages when both can be evicted (0:
    /// file pages only while there are any; 100: equal; 200: anonymous
    /// only, bar cost).
    pub fn set_swappiness(&self, swappiness: u8) -> Result<(), ReclaimError> {
        if swappiness > 200 {
            return Err(ReclaimError::BadSwappiness(swappiness));
        }
        self.inner.lock().swappiness = swappiness;
        Ok(())
    }

    /// `page` became resident as `kind`; `shadow` is what its last
    /// eviction left (a refault), if the integrator kept it.
    pub fn insert(&self, page: PageId, kind: PageKind, shadow: Option<Shadow>) -> Result<(), ReclaimError> {
        let mut g = self.inner.lock();
        let s = *g.state.get(page as usize).ok_or(ReclaimError::OutOfRange(page))?;
        if s.is_isolated() {
            if !s.is_gone() {
                return Err(ReclaimError::AlreadyTracked(page));
            }
            // Freed and reused while its old self was being evicted: it
            // goes on its list when the batch comes back (unless that
            // eviction freed it after all).
            g.state[page as usize] = PageState::isolated(kind);
        } else if s != PageState::UNTRACKED {
            return Err(ReclaimError::AlreadyTracked(page));
        } else {
            g.lists[kind as usize].insert(page, shadow)?;
            g.state[page as usize] = PageState::on_list(kind);
        }
        if shadow.is_some() {
            g.stats.refaults[kind] += 1;
            g.note_cost(kind, 1);
        }
        Ok(())
    }

    /// A reference software saw (a read through a system call); pages not
    /// tracked are ignored. Hardware references are found by scanning.
    pub fn access(&self, page: PageId) {
        let mut g = self.inner.lock();
        match g.state.get(page as usize).copied() {
            Some(s) if s.is_on_list() => g.lists[s.kind() as usize].access(page),
            Some(s) if s.is_held() => g.state[page as usize] = s.referenced(),
            _ => {}
        }
    }

    /// `page` went away by other means (freed, truncated): it is no longer
    /// tracked (if it is being evicted, it is forgotten when it comes
    /// back).
    pub fn remove(&self, page: PageId) -> Result<(), ReclaimError> {
        let mut g = self.inner.lock();
        let s = *g.state.get(page as usize).ok_or(ReclaimError::OutOfRange(page))?;
        if s.is_on_list() {
            g.lists[s.kind() as usize].remove(page)?;
            g.state[page as usize] = PageState::UNTRACKED;
            Ok(())
        } else if s.is_held() {
            g.state[page as usize] = PageState::GONE;
            Ok(())
        } else {
            Err(ReclaimError::NotTracked(page))
        }
    }

    /// Pages of `kind` on their list (isolated ones not counted).
    pub fn len(&self, kind: PageKind) -> usize {
        self.inner.lock().lists[kind as usize].len()
    }

    /// Whether no page is on either list.
    pub fn is_empty(&self) -> bool {
        let g = self.inner.lock();
        g.lists[0].is_empty() && g.lists[1].is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> ReclaimStats {
        self.inner.lock().stats
    }

    /// Registers a shrinker, called on every reclaim pass from now on.
    pub fn register_shrinker(&self, s: Arc<dyn Shrinker>) -> ShrinkerId {
        let mut g = self.shrinkers.lock();
        g.0 += 1;
        let id = g.0;
        g.1.push((id, s));
        ShrinkerId(id)
    }

    /// Unregisters a shrinker (a call already under way may finish).
    pub fn unregister_shrinker(&self, id: ShrinkerId) -> Result<Arc<dyn Shrinker>, ReclaimError> {
        let mut g = self.shrinkers.lock();
        let at = g.1.iter().position(|(i, _)| *i == id.0).ok_or(ReclaimError::NoShrinker)?;
        Ok(g.1.remove(at).1)
    }

    /// Frees at least `target` frames if it can: priority passes from 12
    /// down to 0, each scanning its share of both lists in batches and
    /// calling the shrinkers, stopping once `target` is met. The returned
    /// [`Progress`] says what actually happened.
    pub fn reclaim<E: Evictor + ?Sized>(&self, target: u64, ev: &mut E) -> Progress {
        let mut total = Progress { priority: START_PRIORITY, ..Progress::default() };
        for priority in (0..=START_PRIORITY).rev() {
            let pass = self.pass(priority, target.saturating_sub(total.reclaimed()), ev);
            total.add(&pass);
            if total.reclaimed() >= target {
                break;
            }
        }
        let mut g = self.inner.lock();
        g.stats.shrunk_frames = g.stats.shrunk_frames.saturating_add(total.shrunk_frames);
        if total.reclaimed() == 0 {
            g.stats.no_progress += 1;
        }
        total
    }

    /// Direct reclaim for a task whose allocation failed: frees up to
    /// [`BATCH`] frames (more than the allocation needs, so the next ones
    /// succeed too). If it reclaimed nothing the task should not retry
    /// forever: that is the OOM path.
    pub fn direct<E: Evictor + ?Sized>(&self, ev: &mut E) -> Progress {
        self.inner.lock().stats.direct_runs += 1;
        self.reclaim(BATCH as u64, ev)
    }

    /// Background reclaim (kswapd): if free memory is below the low
    /// watermark, reclaims until it is back at the high one or a whole run
    /// frees nothing. `level` reads the zone's state afresh each time (the
    /// evictor's frees land in the frame allocator). Returns what it did
    /// (all zero if memory was not below low).
    pub fn background<E: Evictor + ?Sized>(&self, level: &mut dyn FnMut() -> Level, ev: &mut E) -> Progress {
        let mut total = Progress { priority: START_PRIORITY, ..Progress::default() };
        let first = level();
        if !first.below_low() {
            return total;
        }
        self.inner.lock().stats.background_runs += 1;
        let mut now = first;
        while now.to_high() > 0 {
            let run = self.reclaim(now.to_high(), ev);
            total.add(&run);
            if run.reclaimed() == 0 {
                break;
            }
            now = level();
        }
        total
    }

    /// One priority pass: the lists' shares in batches, then the shrinkers.
    fn pass<E: Evictor + ?Sized>(&self, priority: u8, target: u64, ev: &mut E) -> Progress {
        let mut p = Progress { passes: 1, priority, ..Progress::default() };
        let can = [ev.can_evict(PageKind::Anon), ev.can_evict(PageKind::File)];
        let mut todo = self.inner.lock().scan_targets(priority, can);
        let mut batch = [Victim { page: 0, kind: PageKind::Anon, shadow: Shadow(0) }; BATCH];
        while todo != [0, 0] && p.evicted < target {
            // Isolate: up to BATCH victims (no more than the target still
            // wants), taken from both lists in proportion to what is left
            // of their shares.
            let want = (target - p.evicted).min(BATCH as u64) as usize;
            let mut n = 0;
            {
                let mut g = self.inner.lock();
                let mut scan = Counting { ev: &mut *ev, looked: 0, unevictable: 0 };
                let sum = todo[0] + todo[1];
                #[allow(clippy::needless_range_loop)] // k indexes todo, the lists and the kinds
                for k in 0..2 {
                    let share =
                        if sum <= want as u64 { todo[k] } else { (todo[k] * want as u64).div_ceil(sum).min(todo[k]) };
                    let mut took = 0;
                    while took < share && n < want {
                        took += 1;
                        match g.lists[k].evict(&mut scan) {
                            Some((page, shadow)) => {
                                let kind = KINDS[k];
                                g.state[page as usize] = PageState::isolated(kind);
                                batch[n] = Victim { page, kind, shadow };
                                n += 1;
                            }
                            None => {
                                // Nothing evictable left on this list.
                                took = todo[k];
                                break;
                            }
                        }
                    }
                    todo[k] -= took.min(todo[k]);
                }
                g.isolated += n;
                p.scanned += scan.looked + n as u64;
                p.unevictable += scan.unevictable;
            }
            if n == 0 {
                break;
            }
            // Evict without the lock.
            let mut outcomes = [Outcome::Keep; BATCH];
            ev.evict(&batch[..n], &mut outcomes[..n]);
            // Put back what stayed.
            let mut g = self.inner.lock();
            g.isolated -= n;
            for (v, o) in batch[..n].iter().zip(&outcomes[..n]) {
                let s = g.state[v.page as usize];
                let now_kind = s.kind();
                match o {
                    Outcome::Freed => {
                        p.evicted += 1;
                        g.stats.evicted[v.kind] += 1;
                        g.state[v.page as usize] = PageState::UNTRACKED;
                        continue;
                    }
                    Outcome::Keep => {
                        p.kept += 1;
                        g.note_cost(v.kind, 1);
                    }
                    Outcome::Failed => {
                        p.failed += 1;
                        g.stats.failed += 1;
                    }
                }
                if s.is_gone() {
                    g.state[v.page as usize] = PageState::UNTRACKED;
                } else {
                    // Back with its shadow: a policy that reads it as a
                    // quick refault activates the page, as Linux puts
                    // pages it could not reclaim on the active list.
                    let shadow = if now_kind == v.kind { Some(v.shadow) } else { None };
                    if g.lists[now_kind as usize].insert(v.page, shadow).is_ok() {
                        if s.is_referenced() {
                            g.lists[now_kind as usize].access(v.page);
                        }
                        g.state[v.page as usize] = PageState::on_list(now_kind);
                    } else {
                        // Only a page reused as the other kind, beyond that
                        // policy's ids, gets here: it cannot be tracked.
                        g.state[v.page as usize] = PageState::UNTRACKED;
                    }
                }
            }
        }
        self.shrink(priority, &mut p);
        p
    }

    /// Calls every shrinker in proportion to its size at `priority`.
    fn shrink(&self, priority: u8, p: &mut Progress) {
        let mut i = 0;
        loop {
            let s = match self.shrinkers.lock().1.get(i) {
                Some((_, s)) => s.clone(),
                None => break,
            };
            i += 1;
            let freeable = s.count();
            let seeks = u64::from(s.seeks().max(1));
            // Saturating: a shrinker may report any count (u64::MAX from a
            // broken or racing counter); the loop below still ends when a
            // chunk frees nothing.
            let mut todo = ((freeable >> priority).saturating_mul(4) / seeks).min(freeable);
            if priority == 0 {
                todo = freeable;
            }
            while todo > 0 {
                let nr = todo.min(SHRINK_BATCH);
                let r = s.scan(nr);
                p.shrunk_objects = p.shrunk_objects.saturating_add(r.objects);
                p.shrunk_frames = p.shrunk_frames.saturating_add(r.frames);
                if r.objects == 0 {
                    break;
                }
                todo -= nr;
            }
        }
    }

    /// Checks the driver: every page's state agrees with its list's count,
    /// and each policy's own invariants hold.
    pub fn check(&self) -> Result<(), &'static str> {
        let g = self.inner.lock();
        let mut on = [0usize; 2];
        let mut isolated = 0;
        for &s in &g.state {
            if s.is_on_list() {
                on[s.kind() as usize] += 1;
            } else if s.is_isolated() {
                isolated += 1;
            } else if s != PageState::UNTRACKED {
                return Err("page state with stray bits");
            }
        }
        if on[0] != g.lists[0].len() || on[1] != g.lists[1].len() {
            return Err("list length differs from the pages marked on it");
        }
        if isolated != g.isolated {
            return Err("isolated pages miscounted");
        }
        g.lists[0].check()?;
        g.lists[1].check()
    }
}
