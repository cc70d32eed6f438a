//! [`Clock`] (documented on the type).

use alloc::vec;
use alloc::vec::Vec;

use crate::list::Lists;
use crate::{PageId, Policy, PolicyError, Scan, Shadow};

/// CLOCK (second chance): one reference bit per page, a hand sweeping the
/// pages in insertion order. A referenced page under the hand loses its bit
/// and goes round again; an unreferenced one is the victim. (Corbató's
/// 1968 algorithm; Linux 2.4's kswapd swept page tables this way.)
///
/// # Example
///
/// ```
/// use mm_reclaim::{Clock, NoBits, Policy};
///
/// let mut clock = Clock::new(16);
/// for page in 0..4 {
///     clock.insert(page, None).unwrap();
/// }
/// clock.access(0); // page 0 gets a second chance
/// assert_eq!(clock.evict(&mut NoBits).map(|(p, _)| p), Some(1));
/// ```
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

    fn insert(&mut self, page: PageId, _shadow: Option<Shadow>) -> Result<(), PolicyError> {
        self.ring.can_insert(page)?;
        self.referenced[page as usize] = false;
        self.ring.push_head(0, page);
        Ok(())
    }

    fn access(&mut self, page: PageId) {
        if let Some(r) = self.referenced.get_mut(page as usize) {
            *r = true;
        }
    }

    fn remove(&mut self, page: PageId) -> Result<(), PolicyError> {
        self.ring.can_remove(page)?;
        self.ring.unlink(page);
        Ok(())
    }

    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        // The first revolution (each page passes the hand once) honours
        // references and clears them: the second chance. The second one
        // takes the first evictable page. When accessed bits stay cleared
        // once tested that is CLOCK exactly (no page is referenced any more
        // by then); when they do not (a page hammered by another CPU), the
        // hand still stops, and `None` means nothing is evictable.
        let n = self.len();
        for look in 0..2 * n {
            let p = self.ring.tail(0).expect("pages are only taken off by returning");
            let referenced = look < n && {
                let hw = scan.test_and_clear_referenced(p);
                core::mem::take(&mut self.referenced[p as usize]) || hw
            };
            if referenced || !scan.is_evictable(p) {
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
