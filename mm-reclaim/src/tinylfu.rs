//! [`WTinyLfu`] (documented on the type).

use alloc::vec;
use alloc::vec::Vec;

use crate::list::Lists;
use crate::sketch::Sketch;
use crate::{PageId, Policy, PolicyError, Scan, Shadow};

/// The window: every page enters here.
const WIN: usize = 0;
/// The main region's probation list: pages admitted from the window, and
/// pages demoted from `PROT`; main-region victims are taken here.
const PROB: usize = 1;
/// The main region's protected list: pages referenced while on `PROB`.
const PROT: usize = 2;
/// Pages of `WIN`, `PROB` and `PROT` found unevictable during one
/// [`evict`](Policy::evict) call, set aside for the rest of it.
const HELD: [usize; 3] = [3, 4, 5];

/// The cap of `refs`: references seen since the page was last looked at.
const COUNT: u8 = 3;

/// Shadow flag: evicted from the window (the rest of the shadow is the
/// departure clock of the side the page left, at that moment).
const FROM_WINDOW: u64 = 1 << 63;

/// W-TinyLFU (Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient
/// Cache Admission Policy", ACM Transactions on Storage 13(4), 2017), kept
/// as CLOCK lists so that a reference costs a counter increment and
/// accessed bits can drive it, with the window sized as the workload runs
/// by refaults, as ARC sizes its recency list by ghost hits (Megiddo and
/// Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST 2003).
///
/// Pages enter a small window (`WIN`). A page that leaves the window's
/// tail unreferenced is a candidate for the main region, whose victim is
/// the unreferenced tail of its probation list (`PROB`; a page referenced
/// there moves to the protected list `PROT`, at most four fifths of the
/// main region, whose overflow goes back to `PROB`). The two meet in a
/// duel judged by a [`Sketch`] of reference counts that remembers evicted
/// pages too: the candidate is admitted to `PROB` and the victim evicted
/// only if the candidate was referenced more often, else the candidate is
/// evicted. The faulting page itself always becomes resident (it enters
/// the window), so demand paging holds; what is filtered is which of two
/// resident pages stays. A loop larger than the cache therefore keeps a
/// stable part of it resident, and a scan passes through the window
/// without displacing the main region.
///
/// How much of the cache the window gets decides between recency (a large
/// window is CLOCK) and frequency (a small one trusts the sketch), and no
/// fixed share suits every workload, so the target moves as the workload
/// runs, driven by refaults in the manner of ARC's ghost lists. Each side
/// keeps a clock of its departures (pages leaving the window, admitted or
/// evicted; pages evicted from the main region), and a victim's shadow
/// records its side and that side's clock. A page that faults back in
/// within `reach` departures of its side (an eighth of the capacity)
/// would have been a hit had that side been `reach` pages larger: the
/// window target moves one page towards that side. Both sides are judged
/// by the same reach, so each vote estimates the same thing (the hits the
/// next `reach` pages of that side would bring), and as a side grows its
/// marginal hits, and so its votes, fall: the target settles where the two
/// balance instead of running to an end (thresholds that grow with a
/// side's size would reward the larger side and lock the target there).
/// A loop larger than the cache by more than the reach sends its pages
/// back too late to vote, so the window stays small and the admission
/// duel keeps part of the loop resident. The window starts at 1 % of the
/// capacity (the paper's choice).
///
/// Cost: [`access`](Policy::access) adds to a per-page counter capped at
/// 3; the sketch is updated on a miss and when a page's references are
/// harvested at eviction, and consulted twice per duel. The sketch takes
/// four bytes per page of capacity (rounded up to a power of two); per
/// page id the policy keeps one byte besides the list links.
#[derive(Clone, Debug)]
pub struct WTinyLfu {
    lists: Lists<6>,
    refs: Vec<u8>,
    sketch: Sketch,
    capacity: usize,
    /// Window target in pages, within `1..=max(1, capacity - 1)`.
    window: usize,
    /// How recent a refault must be to move the target, in departures of
    /// the side it left; `u64::MAX`: never.
    reach: u64,
    /// Pages that left the window (admitted or evicted), and pages evicted
    /// from the main region, so far: the clocks of the two sides.
    departures: [u64; 2],
}

impl WTinyLfu {
    /// W-TinyLFU for page ids below `ids` and a cache of `capacity` pages,
    /// with the adaptation's reach at an eighth of the capacity.
    pub fn new(ids: usize, capacity: usize) -> Self {
        WTinyLfu::with_reach(ids, capacity, 8)
    }

    /// W-TinyLFU whose window target moves on refaults within
    /// `capacity / reach_div` departures (at least one) of the side the
    /// page left; `0`: the window stays at 1 % of the capacity.
    pub fn with_reach(ids: usize, capacity: usize, reach_div: u64) -> Self {
        let capacity = capacity.max(1);
        WTinyLfu {
            lists: Lists::new(ids),
            refs: vec![0; ids],
            sketch: Sketch::new(capacity),
            capacity,
            window: (capacity / 100).clamp(1, capacity.saturating_sub(1).max(1)),
            reach: (capacity as u64).checked_div(reach_div).map_or(u64::MAX, |r| r.max(1)),
            departures: [0; 2],
        }
    }

    /// The window's target size in pages (at least one page, at most the
    /// capacity less one).
    pub fn window_target(&self) -> usize {
        self.window
    }

    /// Bytes of the frequency sketch.
    pub fn sketch_bytes(&self) -> usize {
        self.sketch.bytes()
    }

    /// Moves the window target by what the refault of a page with `shadow`
    /// says: one page towards the side it left, if it left recently.
    fn adapt(&mut self, Shadow(s): Shadow) {
        if self.reach == u64::MAX {
            return;
        }
        let side = usize::from(s & FROM_WINDOW == 0);
        if self.departures[side].wrapping_sub(s & !FROM_WINDOW) > self.reach {
            return;
        }
        self.window = if side == 0 {
            (self.window + 1).min(self.capacity.saturating_sub(1).max(1))
        } else {
            self.window.saturating_sub(1).max(1)
        };
    }

    /// Looks at `p`: takes its references (software ones counted by
    /// [`access`](Policy::access), and its accessed bit) into the sketch,
    /// and says whether it had any.
    fn harvest(&mut self, p: PageId, scan: &mut dyn Scan) -> bool {
        let mut n = self.refs[p as usize];
        if scan.test_and_clear_referenced(p) {
            n = (n + 1).min(COUNT);
        }
        self.refs[p as usize] = 0;
        if n > 0 {
            self.sketch.add(p, n);
        }
        n > 0
    }

    /// The window's unreferenced tail; referenced pages go round (while
    /// `spend` lasts).
    fn window_tail(&mut self, scan: &mut dyn Scan, spend: &mut usize) -> Option<PageId> {
        loop {
            let p = self.lists.tail(WIN)?;
            if *spend > 0 && self.harvest(p, scan) {
                *spend -= 1;
                self.lists.move_to_head(WIN, p);
                continue;
            }
            return Some(p);
        }
    }

    /// The main region's unreferenced tail: probation's, or protected's when
    /// probation has none. A referenced probation page is promoted (and the
    /// protected list's overflow demoted), a referenced protected one goes
    /// round (while `spend` lasts).
    fn main_tail(&mut self, scan: &mut dyn Scan, spend: &mut usize) -> Option<PageId> {
        loop {
            let (l, p) = match self.lists.tail(PROB) {
                Some(p) => (PROB, p),
                None => (PROT, self.lists.tail(PROT)?),
            };
            if *spend > 0 && self.harvest(p, scan) {
                *spend -= 1;
                self.lists.move_to_head(PROT, p);
                let main = self.len().saturating_sub(self.window);
                if l == PROB && self.lists.len(PROT) + self.lists.len(HELD[PROT]) > main * 4 / 5 {
                    let demoted = self.lists.tail(PROT).expect("not empty");
                    self.lists.move_to_head(PROB, demoted);
                }
                continue;
            }
            return Some(p);
        }
    }

    /// Pages of the main region, held ones included.
    fn main_len(&self) -> usize {
        [PROB, PROT, HELD[PROB], HELD[PROT]].iter().map(|&l| self.lists.len(l)).sum()
    }

    /// The eviction loop; pages it holds are put back by the caller.
    fn find_victim(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        // Every step spends a reference (at most three per page tracked),
        // holds a page for the rest of the call, moves a window page to a
        // main region below its share (at most once per page), or returns;
        // so the work is linear in the pages tracked. Past the references'
        // budget, pages are judged on evictability alone.
        let mut spend = 3 * self.len();
        loop {
            // The page about to be inserted will enter the window too.
            let over = self.lists.len(WIN) + self.lists.len(HELD[WIN]) >= self.window;
            let candidate = if over { self.window_tail(scan, &mut spend) } else { None };
            if let Some(c) = candidate {
                // The window is above its target (the cache filled through
                // it, the target shrank, or evictions the integrator asked
                // for emptied the main region): the candidate moves to the
                // main region without a duel. Sizes are shares of the pages
                // tracked, so that a cache below its capacity still duels.
                if self.main_len() + self.window < self.len() {
                    self.departures[0] += 1;
                    self.lists.move_to_head(PROB, c);
                    continue;
                }
            }
            let victim = self.main_tail(scan, &mut spend);
            let (loser, admit) = match (candidate, victim) {
                (Some(c), Some(v)) => {
                    if self.sketch.estimate(c) > self.sketch.estimate(v) {
                        (v, Some(c))
                    } else {
                        (c, None)
                    }
                }
                (Some(c), None) => (c, None),
                (None, Some(v)) => (v, None),
                // The window was within its target but the main region has
                // nothing left to look at: take from the window.
                (None, None) if !over => (self.window_tail(scan, &mut spend)?, None),
                (None, None) => return None,
            };
            if !scan.is_evictable(loser) {
                let l = self.lists.tag(loser) as usize;
                self.lists.move_to_head(HELD[l], loser);
                continue;
            }
            if let Some(c) = admit {
                self.lists.move_to_head(PROB, c);
            }
            let from_window = self.lists.tag(loser) as usize == WIN;
            self.lists.unlink(loser);
            // A duel (whoever lost) or a window eviction is a departure
            // from the window; a main-region loss is one from the main.
            if candidate.is_some() || from_window {
                self.departures[0] += 1;
            }
            if !from_window {
                self.departures[1] += 1;
            }
            let side = usize::from(!from_window);
            let flag = if from_window { FROM_WINDOW } else { 0 };
            return Some((loser, Shadow(flag | (self.departures[side] & !FROM_WINDOW))));
        }
    }
}

impl Policy for WTinyLfu {
    fn name(&self) -> &'static str {
        "wtinylfu"
    }

    fn len(&self) -> usize {
        // The held lists are empty outside `evict`.
        (0..6).map(|l| self.lists.len(l)).sum()
    }

    fn insert(&mut self, page: PageId, shadow: Option<Shadow>) -> Result<(), PolicyError> {
        self.lists.can_insert(page)?;
        if let Some(shadow) = shadow {
            self.adapt(shadow);
        }
        self.refs[page as usize] = 0;
        self.sketch.add(page, 1);
        self.lists.push_head(WIN, page);
        Ok(())
    }

    #[inline]
    fn access(&mut self, page: PageId) {
        if let Some(r) = self.refs.get_mut(page as usize) {
            if *r < COUNT {
                *r += 1;
            }
        }
    }

    fn remove(&mut self, page: PageId) -> Result<(), PolicyError> {
        self.lists.can_remove(page)?;
        self.lists.unlink(page);
        Ok(())
    }

    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        let victim = self.find_victim(scan);
        for l in [WIN, PROB, PROT] {
            self.lists.move_all_to_head(HELD[l], l);
        }
        victim
    }

    fn check(&self) -> Result<(), &'static str> {
        self.lists.check()?;
        if HELD.iter().any(|&l| self.lists.len(l) != 0) {
            return Err("pages still held after an eviction");
        }
        if self.refs.iter().any(|&r| r > COUNT) {
            return Err("a reference count out of range");
        }
        Ok(())
    }
}
