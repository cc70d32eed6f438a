//! CLOCK (second chance): one reference bit per page, a hand sweeping the
//! pages in insertion order. A referenced page under the hand loses its bit
//! and goes round again; an unreferenced one is the victim. (Corbató's
//! 1968 algorithm; Linux 2.4's kswapd swept page tables this way.)

use alloc::vec;
use alloc::vec::Vec;

use crate::list::Lists;
use crate::{PageId, Policy, Scan, Shadow};

/// See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct Clock {
    /// One list: head = newest, tail = the hand.
    ring: Lists<1>,
    referenced: Vec<bool>,
}

impl Clock {
    /// A clock for page ids below `ids`.
    pub fn new(ids: usize) -> Self {
        Clock { ring: Lists::new(ids), referenced: vec![false; ids] }
    }
}

impl Policy for Clock {
    fn name(&self) -> &'static str {
        "clock"
    }

    fn len(&self) -> usize {
        self.ring.len(0)
    }

    fn insert(&mut self, page: PageId, _shadow: Option<Shadow>) {
        self.referenced[page as usize] = false;
        self.ring.push_head(0, page);
    }

    fn access(&mut self, page: PageId) {
        self.referenced[page as usize] = true;
    }

    fn remove(&mut self, page: PageId) {
        self.ring.unlink(page);
    }

    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        // Every page is passed at most twice (once to clear its bit) before
        // an unreferenced evictable one turns up, unless none is evictable.
        let mut budget = 2 * self.len() + 1;
        while let Some(p) = self.ring.tail(0) {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            let hw = scan.test_and_clear_referenced(p);
            let r = &mut self.referenced[p as usize];
            if *r || hw || !scan.is_evictable(p) {
                *r = false;
                self.ring.move_to_head(0, p);
                continue;
            }
            self.ring.unlink(p);
            return Some((p, Shadow(0)));
        }
        None
    }

    fn check(&self) -> Result<(), &'static str> {
        self.ring.check()
    }
}
