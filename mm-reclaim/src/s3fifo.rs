//! S3-FIFO (Yang, Zhang, Qiu, Yue and Vinayak, "FIFO queues are all you
//! need for cache eviction", SOSP 2023): a small FIFO `S` (a tenth of the
//! capacity) that new pages enter, a main FIFO `M`, and a ghost FIFO `G` of
//! pages recently evicted from `S`. A page leaving `S` goes to `M` if it was
//! referenced at least `promote` times while in `S` (else it is evicted and
//! remembered in `G`); a page leaving `M` goes round again while its 2-bit
//! frequency is not zero (decremented each time). A page faulted in while in
//! `G` goes straight to `M`. One-time scans therefore pass through `S`
//! without disturbing `M`.
//!
//! `G` is not stored: the shadow of a page evicted from `S` is the count of
//! `S` evictions at that moment, and a refault is a ghost hit if fewer than
//! the ghost size `S` evictions happened since (the same window a FIFO of
//! that many entries holds).

use alloc::vec;
use alloc::vec::Vec;

use crate::list::Lists;
use crate::{PageId, Policy, Scan, Shadow};

const S: usize = 0;
const M: usize = 1;
/// Shadow flag: evicted from `S` (only those are ghosts).
const FROM_SMALL: u64 = 1 << 63;

/// See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct S3Fifo {
    lists: Lists<2>,
    freq: Vec<u8>,
    small_target: usize,
    ghost: u64,
    small_evictions: u64,
    promote: u8,
}

impl S3Fifo {
    /// S3-FIFO for ids below `ids` and a cache of `capacity` pages, with the
    /// paper's sizes (`S` a tenth, `G` as large as `M`) and promotion after
    /// one reference in `S`.
    pub fn new(ids: usize, capacity: usize) -> Self {
        S3Fifo::with_params(ids, capacity, 10, 90, 1)
    }

    /// S3-FIFO with `S` at `small_pct` % of `capacity`, a ghost of
    /// `ghost_pct` % of it, and promotion from `S` after `promote`
    /// references.
    pub fn with_params(ids: usize, capacity: usize, small_pct: usize, ghost_pct: usize, promote: u8) -> Self {
        let capacity = capacity.max(1);
        S3Fifo {
            lists: Lists::new(ids),
            freq: vec![0; ids],
            small_target: (capacity * small_pct / 100).max(1),
            ghost: (capacity * ghost_pct / 100).max(1) as u64,
            small_evictions: 0,
            promote: promote.max(1),
        }
    }

    fn seen(&mut self, p: PageId, scan: &mut dyn Scan) -> u8 {
        if scan.test_and_clear_referenced(p) {
            let f = &mut self.freq[p as usize];
            *f = (*f + 1).min(3);
        }
        self.freq[p as usize]
    }

    /// One step of eviction from `S`: the tail is promoted, evicted, or (if
    /// unevictable) sent round again.
    fn evict_small(&mut self, scan: &mut dyn Scan) -> Step {
        let Some(p) = self.lists.tail(S) else { return Step::Stuck };
        if self.seen(p, scan) >= self.promote {
            self.freq[p as usize] = 0;
            self.lists.move_to_head(M, p);
            return Step::Progress;
        }
        if !scan.is_evictable(p) {
            self.lists.move_to_head(S, p);
            return Step::Stuck;
        }
        self.lists.unlink(p);
        self.small_evictions += 1;
        Step::Evicted(p, Shadow(FROM_SMALL | self.small_evictions))
    }

    /// One step of eviction from `M`: the tail goes round (spending one
    /// unit of frequency), or is evicted.
    fn evict_main(&mut self, scan: &mut dyn Scan) -> Step {
        let Some(p) = self.lists.tail(M) else { return Step::Stuck };
        let f = self.seen(p, scan);
        if f > 0 {
            self.freq[p as usize] = f - 1;
            self.lists.move_to_head(M, p);
            return Step::Progress;
        }
        if !scan.is_evictable(p) {
            self.lists.move_to_head(M, p);
            return Step::Stuck;
        }
        self.lists.unlink(p);
        Step::Evicted(p, Shadow(0))
    }
}

/// What one eviction step did.
enum Step {
    Evicted(PageId, Shadow),
    /// A promotion or a spent reference: the queues changed.
    Progress,
    /// An unevictable page went round unchanged.
    Stuck,
}

impl Policy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3fifo"
    }

    fn len(&self) -> usize {
        self.lists.len(S) + self.lists.len(M)
    }

    fn insert(&mut self, page: PageId, shadow: Option<Shadow>) {
        self.freq[page as usize] = 0;
        let ghost_hit = shadow.is_some_and(|Shadow(s)| {
            s & FROM_SMALL != 0 && self.small_evictions.wrapping_sub(s & !FROM_SMALL) < self.ghost
        });
        self.lists.push_head(if ghost_hit { M } else { S }, page);
    }

    fn access(&mut self, page: PageId) {
        let f = &mut self.freq[page as usize];
        *f = (*f + 1).min(3);
    }

    fn remove(&mut self, page: PageId) {
        self.lists.unlink(page);
    }

    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        // A queue is given up on once every page in it went round unchanged
        // (all unevictable and unreferenced); any change resets that. Each
        // page can make progress at most 4 times (a promotion, three spent
        // references), so this ends.
        // References that never stay cleared (a page hammered by another
        // CPU, a scanner that cannot clear them) would go round forever:
        // the steps are capped as well (4 of progress and one stuck round
        // per page), and `None` returned past them.
        let (mut stuck_small, mut stuck_main) = (0usize, 0usize);
        let mut budget = 5 * self.len() + 1;
        loop {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            let small_done = self.lists.len(S) == 0 || stuck_small >= self.lists.len(S);
            let main_done = self.lists.len(M) == 0 || stuck_main >= self.lists.len(M);
            if small_done && main_done {
                return None;
            }
            let prefer_small = self.lists.len(S) >= self.small_target || self.lists.len(M) == 0;
            let use_small = !small_done && (prefer_small || main_done);
            let step = if use_small { self.evict_small(scan) } else { self.evict_main(scan) };
            match step {
                Step::Evicted(p, shadow) => return Some((p, shadow)),
                Step::Progress => (stuck_small, stuck_main) = (0, 0),
                Step::Stuck if use_small => stuck_small += 1,
                Step::Stuck => stuck_main += 1,
            }
        }
    }

    fn check(&self) -> Result<(), &'static str> {
        self.lists.check()?;
        if self.freq.iter().any(|&f| f > 3) {
            return Err("a frequency above 3");
        }
        Ok(())
    }
}
