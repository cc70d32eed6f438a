//! [`S3Fifo`] (documented on the type).

use alloc::vec;
use alloc::vec::Vec;

use crate::list::Lists;
use crate::{PageId, Policy, PolicyError, Scan, Shadow};

const S: usize = 0;
const M: usize = 1;
/// Pages of `S`, then of `M`, found unevictable during one
/// [`evict`](Policy::evict) call: set aside so that the call does not look
/// at them again, and put back at the head of their queue when it returns
/// (where going round would have left them).
const HELD_S: usize = 2;
const HELD_M: usize = 3;
/// Shadow flag: evicted from `S` (only those are ghosts).
const FROM_SMALL: u64 = 1 << 63;

/// S3-FIFO (Yang, Zhang, Qiu, Yue and Vinayak, "FIFO queues are all you
/// need for cache eviction", SOSP 2023): a small FIFO `S` (a tenth of the
/// capacity) that new pages enter, a main FIFO `M`, and a ghost FIFO `G` of
/// pages recently evicted from `S`. A page leaving `S` goes to `M` if it was
/// referenced at least `promote` times while in `S` (else it is evicted and
/// remembered in `G`); a page leaving `M` goes round again while its 2-bit
/// frequency is not zero (decremented each time). A page faulted in while in
/// `G` goes straight to `M`. One-time scans therefore pass through `S`
/// without disturbing `M`.
///
/// `G` is not stored: the shadow of a page evicted from `S` is the count of
/// `S` evictions at that moment, and a refault is a ghost hit if fewer than
/// the ghost size `S` evictions happened since (the same window a FIFO of
/// that many entries holds).
#[derive(Clone, Debug)]
pub struct S3Fifo {
    lists: Lists<4>,
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
            small_target: (capacity.saturating_mul(small_pct) / 100).max(1),
            ghost: (capacity.saturating_mul(ghost_pct) / 100).max(1) as u64,
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

    /// The eviction loop; pages it holds are put back by the caller.
    fn find_victim(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        // Every step takes a page off `S` or `M` for good (promoted from
        // `S`, held, evicted) or spends one of `M`'s references, and the
        // references spent are capped: at most `len(S) + 4 * len` steps.
        // The cap, three per page (the most a page holds), is never reached
        // while accessed bits stay cleared once tested; it only matters
        // when they do not (a page hammered by another CPU, a scanner that
        // cannot clear them), and then the pages past it are judged on
        // evictability alone, so `None` still means nothing is evictable.
        let mut spend = 3 * self.len();
        loop {
            // `S` counts its held pages towards its share: they are in it.
            let small = self.lists.len(S) + self.lists.len(HELD_S);
            let use_small = self.lists.len(S) > 0 && (small >= self.small_target || self.lists.len(M) == 0);
            if use_small {
                let p = self.lists.tail(S).expect("not empty");
                if self.seen(p, scan) >= self.promote {
                    self.freq[p as usize] = 0;
                    self.lists.move_to_head(M, p);
                } else if !scan.is_evictable(p) {
                    self.lists.move_to_head(HELD_S, p);
                } else {
                    self.lists.unlink(p);
                    self.small_evictions += 1;
                    return Some((p, Shadow(FROM_SMALL | self.small_evictions)));
                }
                continue;
            }
            // `S` has nothing left to look at or is below its share.
            let p = self.lists.tail(M)?;
            if spend > 0 {
                let f = self.seen(p, scan);
                if f > 0 {
                    spend -= 1;
                    self.freq[p as usize] = f - 1;
                    self.lists.move_to_head(M, p);
                    continue;
                }
            }
            if !scan.is_evictable(p) {
                self.lists.move_to_head(HELD_M, p);
                continue;
            }
            self.lists.unlink(p);
            return Some((p, Shadow(0)));
        }
    }
}

impl Policy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3fifo"
    }

    fn len(&self) -> usize {
        // The held lists are empty outside `evict`.
        (0..4).map(|l| self.lists.len(l)).sum()
    }

    fn insert(&mut self, page: PageId, shadow: Option<Shadow>) -> Result<(), PolicyError> {
        self.lists.can_insert(page)?;
        self.freq[page as usize] = 0;
        let ghost_hit = shadow.is_some_and(|Shadow(s)| {
            s & FROM_SMALL != 0 && self.small_evictions.wrapping_sub(s & !FROM_SMALL) < self.ghost
        });
        self.lists.push_head(if ghost_hit { M } else { S }, page);
        Ok(())
    }

    fn access(&mut self, page: PageId) {
        if let Some(f) = self.freq.get_mut(page as usize) {
            *f = (*f + 1).min(3);
        }
    }

    fn remove(&mut self, page: PageId) -> Result<(), PolicyError> {
        self.lists.can_remove(page)?;
        self.lists.unlink(page);
        Ok(())
    }

    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        // Pages found unevictable are held aside for the rest of the call,
        // so no page is looked at again unless it spent a reference: a
        // queue is given up on only once every page in it was held, and
        // work in one queue never makes the other be looked at afresh.
        let victim = self.find_victim(scan);
        self.lists.move_all_to_head(HELD_S, S);
        self.lists.move_all_to_head(HELD_M, M);
        victim
    }

    fn check(&self) -> Result<(), &'static str> {
        self.lists.check()?;
        if self.lists.len(HELD_S) + self.lists.len(HELD_M) != 0 {
            return Err("pages still held after an eviction");
        }
        if self.freq.iter().any(|&f| f > 3) {
            return Err("a frequency above 3");
        }
        Ok(())
    }
}
