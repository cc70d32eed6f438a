//! [`TwoList`] (documented on the type).

use alloc::vec;
use alloc::vec::Vec;

use crate::list::Lists;
use crate::{PageId, Policy, PolicyError, Scan, Shadow};

const INACTIVE: usize = 0;
const ACTIVE: usize = 1;
/// Inactive pages found unevictable during one [`evict`](Policy::evict)
/// call: set aside so that the call does not look at them again, and put
/// back at the inactive head (where going round would have left them) when
/// it returns.
const HELD: usize = 2;

/// Linux-style active/inactive lists with refault-distance activation
/// (after `mm/vmscan.c` and `mm/workingset.c`).
///
/// New pages enter the inactive list. A page needs two references to be
/// activated: software references follow `mark_page_accessed` (the first
/// sets the page's referenced flag, the second activates), and a page found
/// with its accessed bits set at the inactive tail is kept once (flag set)
/// and activated if seen referenced again. Unreferenced pages at the
/// inactive tail are evicted. When the inactive list is smaller than the
/// active one, the active tail is deactivated (its flag cleared).
///
/// Refaults: each eviction and activation advances a counter (Linux's
/// non-resident age); a page's shadow records it at eviction. A page that
/// comes back within a distance no larger than the active list was part of
/// the working set and is activated at once.
#[derive(Clone, Debug)]
pub struct TwoList {
    lists: Lists<3>,
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

    /// The eviction loop; pages it holds are put back by the caller.
    fn find_victim(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        let mut chances = 2 * self.len();
        loop {
            let (looking, active) = (self.lists.len(INACTIVE), self.lists.len(ACTIVE));
            let inactive = looking + self.lists.len(HELD);
            if inactive < active || looking == 0 {
                if active == 0 {
                    return None;
                }
                self.deactivate_one(scan);
                continue;
            }
            let p = self.lists.tail(INACTIVE).expect("not empty");
            if chances > 0 {
                let hw = scan.test_and_clear_referenced(p);
                if hw {
                    chances -= 1;
                    if self.referenced[p as usize] {
                        self.activate(p);
                    } else {
                        self.referenced[p as usize] = true;
                        self.lists.move_to_head(INACTIVE, p);
                    }
                    continue;
                }
            }
            if !scan.is_evictable(p) {
                self.lists.move_to_head(HELD, p);
                continue;
            }
            self.lists.unlink(p);
            self.age += 1;
            return Some((p, Shadow(self.age)));
        }
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
        // The held list is empty outside `evict`.
        self.lists.len(INACTIVE) + self.lists.len(ACTIVE) + self.lists.len(HELD)
    }

    fn insert(&mut self, page: PageId, shadow: Option<Shadow>) -> Result<(), PolicyError> {
        self.lists.can_insert(page)?;
        self.referenced[page as usize] = false;
        self.lists.push_head(INACTIVE, page);
        if let Some(Shadow(at)) = shadow {
            if self.age.wrapping_sub(at) <= self.lists.len(ACTIVE) as u64 {
                self.activate(page);
            }
        }
        Ok(())
    }

    fn access(&mut self, page: PageId) {
        let Some(r) = self.referenced.get_mut(page as usize) else { return };
        if self.lists.tag(page) as usize == INACTIVE && *r {
            self.activate(page);
        } else {
            *r = true;
        }
    }

    fn remove(&mut self, page: PageId) -> Result<(), PolicyError> {
        self.lists.can_remove(page)?;
        self.lists.unlink(page);
        Ok(())
    }

    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        // Unevictable, unreferenced inactive pages are held aside for the
        // rest of the call; once every inactive page is held, the active
        // tail is deactivated to give the scan something new (the held
        // pages count towards the inactive list's length, as they are on
        // it). No page is looked at twice unless a reference kept it, and
        // references are honoured at most twice per page tracked: when
        // accessed bits stay cleared once tested a page is kept or
        // activated at most once per call, so the cap is never reached; when
        // they do not (a page hammered by another CPU), pages past it are
        // judged on evictability alone. So the work is linear, and `None`
        // means nothing is evictable.
        let victim = self.find_victim(scan);
        self.lists.move_all_to_head(HELD, INACTIVE);
        victim
    }

    fn check(&self) -> Result<(), &'static str> {
        self.lists.check()?;
        if self.lists.len(HELD) != 0 {
            return Err("pages still held after an eviction");
        }
        Ok(())
    }
}
