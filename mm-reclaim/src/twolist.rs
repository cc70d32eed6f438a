//! Linux-style active/inactive lists with refault-distance activation
//! (after `mm/vmscan.c` and `mm/workingset.c`).
//!
//! New pages enter the inactive list. A page needs two references to be
//! activated: software references follow `mark_page_accessed` (the first
//! sets the page's referenced flag, the second activates), and a page found
//! with its accessed bits set at the inactive tail is kept once (flag set)
//! and activated if seen referenced again. Unreferenced pages at the
//! inactive tail are evicted. When the inactive list is smaller than the
//! active one, the active tail is deactivated (its flag cleared).
//!
//! Refaults: each eviction and activation advances a counter (Linux's
//! non-resident age); a page's shadow records it at eviction. A page that
//! comes back within a distance no larger than the active list was part of
//! the working set and is activated at once.

use alloc::vec;
use alloc::vec::Vec;

use crate::list::Lists;
use crate::{PageId, Policy, Scan, Shadow};

const INACTIVE: usize = 0;
const ACTIVE: usize = 1;

/// See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct TwoList {
    lists: Lists<2>,
    referenced: Vec<bool>,
    age: u64,
}

impl TwoList {
    /// Two lists for page ids below `ids`.
    pub fn new(ids: usize) -> Self {
        TwoList { lists: Lists::new(ids), referenced: vec![false; ids], age: 0 }
    }

    fn activate(&mut self, p: PageId) {
        self.referenced[p as usize] = false;
        self.lists.move_to_head(ACTIVE, p);
        self.age += 1;
    }

    /// Moves one page from the active tail to the inactive head.
    fn deactivate_one(&mut self, scan: &mut dyn Scan) {
        if let Some(p) = self.lists.tail(ACTIVE) {
            // Linux lets referenced active pages go too (only executable
            // file pages get another round); the bit is consumed.
            scan.test_and_clear_referenced(p);
            self.referenced[p as usize] = false;
            self.lists.move_to_head(INACTIVE, p);
        }
    }
}

impl Policy for TwoList {
    fn name(&self) -> &'static str {
        "twolist"
    }

    fn len(&self) -> usize {
        self.lists.len(INACTIVE) + self.lists.len(ACTIVE)
    }

    fn insert(&mut self, page: PageId, shadow: Option<Shadow>) {
        self.referenced[page as usize] = false;
        self.lists.push_head(INACTIVE, page);
        if let Some(Shadow(at)) = shadow {
            if self.age.wrapping_sub(at) <= self.lists.len(ACTIVE) as u64 {
                self.activate(page);
            }
        }
    }

    fn access(&mut self, page: PageId) {
        let r = &mut self.referenced[page as usize];
        if self.lists.tag(page) as usize == INACTIVE && *r {
            self.activate(page);
        } else {
            *r = true;
        }
    }

    fn remove(&mut self, page: PageId) {
        self.lists.unlink(page);
    }

    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        // `stuck` counts unevictable, unreferenced inactive pages sent round
        // since the last change; after a whole list of them the active tail
        // is deactivated to give the scan something new. Each page can be
        // kept, activated and deactivated at most once per call (their bits
        // are consumed), so this ends.
        // A cap on the steps as well, for references that never stay
        // cleared (see S3Fifo::evict).
        let mut stuck = 0;
        let mut budget = 16 * (self.lists.len(INACTIVE) + self.lists.len(ACTIVE)) + 16;
        loop {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            let (inactive, active) = (self.lists.len(INACTIVE), self.lists.len(ACTIVE));
            if inactive < active || inactive == 0 || stuck >= inactive {
                if active == 0 {
                    return None;
                }
                self.deactivate_one(scan);
                stuck = 0;
                continue;
            }
            let p = self.lists.tail(INACTIVE).expect("not empty");
            let hw = scan.test_and_clear_referenced(p);
            let flagged = self.referenced[p as usize];
            if hw && flagged {
                self.activate(p);
                stuck = 0;
            } else if hw {
                self.referenced[p as usize] = true;
                self.lists.move_to_head(INACTIVE, p);
                stuck = 0;
            } else if !scan.is_evictable(p) {
                self.lists.move_to_head(INACTIVE, p);
                stuck += 1;
            } else {
                self.lists.unlink(p);
                self.age += 1;
                return Some((p, Shadow(self.age)));
            }
        }
    }

    fn check(&self) -> Result<(), &'static str> {
        self.lists.check()
    }
}
