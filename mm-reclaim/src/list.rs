//! Intrusive doubly linked lists over page ids: one `next`/`prev` pair and
//! a list tag per page, allocated once for the largest id, so moving a page
//! between lists never allocates.

use alloc::vec;
use alloc::vec::Vec;

use crate::{PageId, PolicyError};

const NIL: u32 = u32::MAX;
/// The tag of a page on no list.
pub const NONE: u8 = u8::MAX;

/// Up to `N` lists sharing one set of links. Pages enter at the head and
/// age towards the tail.
#[derive(Clone, Debug)]
pub struct Lists<const N: usize> {
    next: Vec<u32>,
    prev: Vec<u32>,
    tag: Vec<u8>,
    head: [u32; N],
    tail: [u32; N],
    len: [usize; N],
}

impl<const N: usize> Lists<N> {
    /// Lists for page ids below `ids`.
    pub fn new(ids: usize) -> Self {
        assert!(N < NONE as usize && ids <= NIL as usize, "too many lists or ids");
        Lists {
            next: vec![NIL; ids],
            prev: vec![NIL; ids],
            tag: vec![NONE; ids],
            head: [NIL; N],
            tail: [NIL; N],
            len: [0; N],
        }
    }

    /// The list `page` is on, or [`NONE`].
    #[inline]
    pub fn tag(&self, page: PageId) -> u8 {
        self.tag[page as usize]
    }

    /// Pages on list `l`.
    #[inline]
    pub fn len(&self, l: usize) -> usize {
        self.len[l]
    }

    /// The oldest page of list `l`.
    #[inline]
    pub fn tail(&self, l: usize) -> Option<PageId> {
        (self.tail[l] != NIL).then_some(self.tail[l])
    }

    /// Whether `page` may be put on a list: within the ids and on none.
    pub fn can_insert(&self, page: PageId) -> Result<(), PolicyError> {
        match self.tag.get(page as usize) {
            None => Err(PolicyError::OutOfRange(page)),
            Some(&NONE) => Ok(()),
            Some(_) => Err(PolicyError::AlreadyTracked(page)),
        }
    }

    /// Whether `page` may be taken off its list: within the ids and on one.
    pub fn can_remove(&self, page: PageId) -> Result<(), PolicyError> {
        match self.tag.get(page as usize) {
            None => Err(PolicyError::OutOfRange(page)),
            Some(&NONE) => Err(PolicyError::NotTracked(page)),
            Some(_) => Ok(()),
        }
    }

    /// Puts `page` (on no list) at the head of list `l`.
    ///
    /// # Panics
    /// If `page` is already on a list (linking it twice would corrupt both
    /// lists; [`can_insert`](Self::can_insert) says beforehand).
    #[inline]
    pub fn push_head(&mut self, l: usize, page: PageId) {
        let p = page as usize;
        assert_eq!(self.tag[p], NONE, "page {page} is already listed");
        self.tag[p] = l as u8;
        self.prev[p] = NIL;
        self.next[p] = self.head[l];
        if self.head[l] != NIL {
            self.prev[self.head[l] as usize] = page;
        } else {
            self.tail[l] = page;
        }
        self.head[l] = page;
        self.len[l] += 1;
    }

    /// Takes `page` off its list.
    ///
    /// # Panics
    /// If `page` is on no list ([`can_remove`](Self::can_remove) says
    /// beforehand).
    #[inline]
    pub fn unlink(&mut self, page: PageId) {
        let p = page as usize;
        let l = self.tag[p] as usize;
        assert!(l < N, "page {page} is not listed");
        let (prev, next) = (self.prev[p], self.next[p]);
        if prev != NIL {
            self.next[prev as usize] = next;
        } else {
            self.head[l] = next;
        }
        if next != NIL {
            self.prev[next as usize] = prev;
        } else {
            self.tail[l] = prev;
        }
        self.tag[p] = NONE;
        self.len[l] -= 1;
    }

    /// Moves `page` to the head of list `l`.
    #[inline]
    pub fn move_to_head(&mut self, l: usize, page: PageId) {
        self.unlink(page);
        self.push_head(l, page);
    }

    /// Moves every page of list `from` to the head of list `to`, oldest
    /// first: `from`'s newest page ends at `to`'s head, as if each page had
    /// been moved to `to`'s head instead of `from`'s. `O(len(from))`.
    pub fn move_all_to_head(&mut self, from: usize, to: usize) {
        while let Some(p) = self.tail(from) {
            self.move_to_head(to, p);
        }
    }

    /// Walks list `l` from head to tail (for checks).
    pub fn iter(&self, l: usize) -> impl Iterator<Item = PageId> + '_ {
        let mut at = self.head[l];
        core::iter::from_fn(move || {
            (at != NIL).then(|| {
                let p = at;
                at = self.next[p as usize];
                p
            })
        })
    }

    /// Checks the links: every list walks to its recorded tail in `len`
    /// steps with consistent back links and tags, and the lists together
    /// hold exactly the pages tagged.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut total = 0;
        for l in 0..N {
            let mut prev = NIL;
            let mut n = 0;
            for p in self.iter(l) {
                if self.tag[p as usize] as usize != l || self.prev[p as usize] != prev {
                    return Err("a list link or tag is inconsistent");
                }
                prev = p;
                n += 1;
                if n > self.len[l] {
                    return Err("a list is longer than its count (or cyclic)");
                }
            }
            if n != self.len[l] || self.tail[l] != prev {
                return Err("a list count or tail is wrong");
            }
            total += n;
        }
        if total != self.tag.iter().filter(|&&t| t != NONE).count() {
            return Err("a page is tagged but on no list");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "page 1 is already listed")]
    fn linking_a_listed_page_panics() {
        let mut l = Lists::<2>::new(4);
        l.push_head(0, 1);
        l.push_head(1, 1);
    }

    #[test]
    #[should_panic(expected = "page 2 is not listed")]
    fn unlinking_an_unlisted_page_panics() {
        let mut l = Lists::<2>::new(4);
        l.unlink(2);
    }

    #[test]
    fn move_all_keeps_the_order() {
        let mut l = Lists::<2>::new(8);
        for p in [1, 2, 3] {
            l.push_head(0, p);
        }
        for p in [5, 6] {
            l.push_head(1, p);
        }
        l.move_all_to_head(1, 0);
        assert_eq!(l.iter(0).collect::<Vec<_>>(), [6, 5, 3, 2, 1]);
        assert_eq!(
            (l.len(1), l.can_insert(5), l.can_remove(7)),
            (0, Err(PolicyError::AlreadyTracked(5)), Err(PolicyError::NotTracked(7)))
        );
        assert_eq!(l.can_insert(8), Err(PolicyError::OutOfRange(8)));
        l.check().unwrap();
    }
}
