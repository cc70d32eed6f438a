//! [`GenClock`] (documented on the type).

use alloc::vec;
use alloc::vec::Vec;

use crate::list::Lists;
use crate::{PageId, Policy, PolicyError, Scan, Shadow};

/// Generations kept at once.
pub const GENS: usize = 4;

/// A generational CLOCK (named `MgLru` until this release: it borrows the
/// generations of Linux's multi-generation LRU, not its tiers, refault
/// controller or page-table aging, so it is a CLOCK with a few hands):
/// pages live in generations numbered by a sequence; the oldest generation is
/// evicted from, the youngest receives pages found referenced. Eviction
/// takes the oldest generation's tail: a page referenced since it was last
/// looked at (software flag or accessed bits) moves to the youngest
/// generation, an unreferenced evictable one is the victim. When the oldest
/// generation empties, the window moves up; when only one generation is
/// left, aging opens a new youngest one, so referenced pages are always set
/// apart from the ones that were not.
///
/// New pages enter the oldest generation, so a page must be seen referenced
/// once to outlive the next sweep (entering a younger one makes this
/// CLOCK); a page whose shadow says it was evicted within the last `GENS`
/// generations (a refault of the working set) enters the youngest.
#[derive(Clone, Debug)]
pub struct GenClock {
    gens: Lists<GENS>,
    referenced: Vec<bool>,
    /// Sequence of the oldest and youngest generations.
    min_seq: u64,
    max_seq: u64,
}

impl GenClock {
    /// Generations for page ids below `ids`.
    pub fn new(ids: usize) -> Self {
        GenClock { gens: Lists::new(ids), referenced: vec![false; ids], min_seq: 0, max_seq: 1 }
    }

    fn list(seq: u64) -> usize {
        (seq % GENS as u64) as usize
    }

    /// Moves the window past empty old generations, and opens a new
    /// youngest one when fewer than two remain.
    fn settle(&mut self) {
        while self.min_seq < self.max_seq && self.gens.len(Self::list(self.min_seq)) == 0 {
            self.min_seq += 1;
        }
        if self.max_seq - self.min_seq + 1 < 2 {
            self.max_seq += 1;
        }
    }
}

impl Policy for GenClock {
    fn name(&self) -> &'static str {
        "genclock"
    }

    fn len(&self) -> usize {
        (0..GENS).map(|g| self.gens.len(g)).sum()
    }

    fn insert(&mut self, page: PageId, shadow: Option<Shadow>) -> Result<(), PolicyError> {
        self.gens.can_insert(page)?;
        self.referenced[page as usize] = false;
        let recent = shadow.is_some_and(|Shadow(seq)| self.max_seq.wrapping_sub(seq) < GENS as u64);
        let seq = if recent { self.max_seq } else { self.min_seq };
        self.gens.push_head(Self::list(seq), page);
        Ok(())
    }

    fn access(&mut self, page: PageId) {
        if let Some(r) = self.referenced.get_mut(page as usize) {
            *r = true;
        }
    }

    fn remove(&mut self, page: PageId) -> Result<(), PolicyError> {
        self.gens.can_remove(page)?;
        self.gens.unlink(page);
        self.settle();
        Ok(())
    }

    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        // Pages moved to the youngest generation go behind every page not
        // yet looked at, so the first `len` looks see each page once: they
        // honour references (and consume them). Unevictable pages move up
        // too, so the next `len` looks find any evictable page, judged on
        // evictability alone: when accessed bits stay cleared once tested
        // nothing is referenced by then anyway; when they do not (a page
        // hammered by another CPU), this still ends with a victim if there
        // is one.
        let n = self.len();
        for look in 0..2 * n {
            self.settle();
            let old = Self::list(self.min_seq);
            let p = self.gens.tail(old).expect("the oldest generation of a non-empty window has pages");
            let referenced = look < n && {
                let hw = scan.test_and_clear_referenced(p);
                core::mem::take(&mut self.referenced[p as usize]) || hw
            };
            if referenced || !scan.is_evictable(p) {
                if self.max_seq == self.min_seq + 1 && self.gens.len(old) == 1 {
                    // Promoting the last old page would leave one generation.
                    self.max_seq += 1;
                }
                self.gens.unlink(p);
                self.gens.push_head(Self::list(self.max_seq), p);
                continue;
            }
            self.gens.unlink(p);
            let seq = self.min_seq;
            self.settle();
            return Some((p, Shadow(seq)));
        }
        None
    }

    fn check(&self) -> Result<(), &'static str> {
        self.gens.check()?;
        if self.max_seq < self.min_seq || self.max_seq - self.min_seq >= GENS as u64 {
            return Err("the generation window is wrong");
        }
        for seq in 0..GENS as u64 {
            let in_window = (self.min_seq..=self.max_seq).any(|s| Self::list(s) == Self::list(seq));
            if !in_window && self.gens.len(Self::list(seq)) != 0 {
                return Err("pages in a generation outside the window");
            }
        }
        Ok(())
    }
}
