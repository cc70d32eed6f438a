//! Lists of free blocks, linked through the allocator's metadata.
//!
//! A free block's head frame has two link words in its region's metadata
//! (`next`, `prev`: frame numbers, [`NIL`] for none), beside its state byte;
//! the frames themselves are never touched, so list operations stay within
//! the metadata (about 9 bytes per frame) instead of reaching a random frame
//! of memory each. The buddy lists are doubly linked (a buddy is unlinked
//! from the middle when it merges); per-CPU lists use only `next`.
//!
//! A frame's links are read or written only while the frame is on a list
//! whose owner (the zone lock or the per-CPU slot) the caller holds, which
//! `&mut self` on the list types expresses; the words are atomics only so
//! that the metadata can be shared, and every access is a relaxed load or
//! store (a plain move).

use crate::region::{Region, RegionTable};

/// "No frame".
pub(crate) const NIL: u64 = u64::MAX;

/// The link words' "no frame".
pub(crate) const NIL32: u32 = u32::MAX;

const NEXT: usize = 0;
const PREV: usize = 1;

#[inline]
fn get(r: &Region<'_>, frame: u64, slot: usize) -> u64 {
    match r.link(frame, slot) {
        NIL32 => NIL,
        f => u64::from(f),
    }
}

#[inline]
fn set(r: &Region<'_>, frame: u64, slot: usize, value: u64) {
    // Managed frame numbers are below `MAX_FRAMES` (checked when memory is
    // added), so `NIL` is the only value that does not fit.
    r.set_link(frame, slot, if value == NIL { NIL32 } else { value as u32 });
}

/// One doubly linked list of free blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FreeList {
    head: u64,
    tail: u64,
    len: u64,
}

impl FreeList {
    pub const EMPTY: FreeList = FreeList { head: NIL, tail: NIL, len: 0 };

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn first(&self) -> Option<u64> {
        (self.head != NIL).then_some(self.head)
    }

    /// Links `frame` (of region `r`) at the front.
    pub fn push_front(&mut self, links: &RegionTable<'_>, r: &Region<'_>, frame: u64) {
        set(r, frame, NEXT, self.head);
        set(r, frame, PREV, NIL);
        if self.head == NIL {
            self.tail = frame;
        } else {
            set(links.near(r, self.head), self.head, PREV, frame);
        }
        self.head = frame;
        self.len += 1;
    }

    /// Links `frame` (of region `r`) at the back.
    pub fn push_back(&mut self, links: &RegionTable<'_>, r: &Region<'_>, frame: u64) {
        set(r, frame, NEXT, NIL);
        set(r, frame, PREV, self.tail);
        if self.tail == NIL {
            self.head = frame;
        } else {
            set(links.near(r, self.tail), self.tail, NEXT, frame);
        }
        self.tail = frame;
        self.len += 1;
    }

    /// Unlinks `frame` (of region `r`), which must be on this list.
    pub fn remove(&mut self, links: &RegionTable<'_>, r: &Region<'_>, frame: u64) {
        let (next, prev) = (get(r, frame, NEXT), get(r, frame, PREV));
        if prev == NIL {
            self.head = next;
        } else {
            set(links.near(r, prev), prev, NEXT, next);
        }
        if next == NIL {
            self.tail = prev;
        } else {
            set(links.near(r, next), next, PREV, prev);
        }
        self.len -= 1;
    }

    /// Calls `f` on every frame, front to back (for checks and statistics).
    pub fn for_each(&self, links: &RegionTable<'_>, mut f: impl FnMut(u64)) {
        let mut at = self.head;
        while at != NIL {
            f(at);
            at = get(links.of(at), at, NEXT);
        }
    }
}

/// A singly linked stack of blocks (a per-CPU list).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stack {
    head: u64,
    len: u32,
}

impl Stack {
    pub const EMPTY: Stack = Stack { head: NIL, len: 0 };

    pub fn len(&self) -> u32 {
        self.len
    }

    /// Pushes `frame` (of region `r`).
    #[inline]
    pub fn push(&mut self, r: &Region<'_>, frame: u64) {
        set(r, frame, NEXT, self.head);
        self.head = frame;
        self.len += 1;
    }

    /// Pops the top block, with its region.
    #[inline]
    pub fn pop<'t, 'a>(&mut self, links: &'t RegionTable<'a>) -> Option<(u64, &'t Region<'a>)> {
        if self.head == NIL {
            return None;
        }
        let frame = self.head;
        let r = links.of(frame);
        self.head = get(r, frame, NEXT);
        self.len -= 1;
        Some((frame, r))
    }
}
