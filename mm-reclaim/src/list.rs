//! Intrusive doubly linked lists over page ids: one `next`/`prev` pair and
//! a list tag per page, allocated once for the largest id, so moving a page
//! between lists never allocates.

use alloc::vec;
use alloc::vec::Vec;

use crate::PageId;

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

    /// Number of ids the lists can hold.
    pub fn ids(&self) -> usize {
        self.tag.len()
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

    /// Puts `page` (on no list) at the head of list `l`.
    #[inline]
    pub fn push_head(&mut self, l: usize, page: PageId) {
        let p = page as usize;
        debug_assert_eq!(self.tag[p], NONE, "page {page} is already listed");
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

    /// Takes `page` off its list (it must be on one).
    #[inline]
    pub fn unlink(&mut self, page: PageId) {
        let p = page as usize;
        let l = self.tag[p] as usize;
        debug_assert!(l < N, "page {page} is not listed");
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
