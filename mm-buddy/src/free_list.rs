//! Intrusive lists threaded through the free frames themselves.
//!
//! A free block's head frame holds its list links in its first 16 bytes
//! (`next`, `prev` frame numbers), reached through [`PhysMemory`]. The buddy
//! lists are doubly linked (a buddy is unlinked from the middle when it
//! merges); per-CPU lists use only `next`.
//!
//! This is the only module of the crate that dereferences raw pointers. Its
//! rule: a frame's links are read or written only while the frame is on a
//! list whose owner (the zone lock or the per-CPU slot lock) the caller
//! holds, which `&mut self` on the list types expresses.

use mm_types::{PhysAddr, PhysMemory};

/// "No frame".
pub(crate) const NIL: u64 = u64::MAX;

#[inline]
fn links<M: PhysMemory>(mem: &M, frame: u64) -> *mut u64 {
    // Every managed frame was checked reachable through `translate` when its
    // memory was added, so a linear accessor's offset gives the same pointer.
    if let Some(offset) = mem.linear_offset() {
        return core::ptr::with_exposed_provenance_mut((frame << mm_types::PAGE_SHIFT).wrapping_add(offset) as usize);
    }
    let addr = match PhysAddr::new(frame << mm_types::PAGE_SHIFT) {
        Ok(a) => a,
        Err(_) => unreachable_frame(frame),
    };
    match mem.translate(addr, 16) {
        Ok(p) => p.as_ptr().cast(),
        Err(_) => unreachable_frame(frame),
    }
}

/// Managed frames are in the physical range and reachable (checked when
/// memory is added); kept out of line so the hot paths stay small.
#[cold]
#[inline(never)]
fn unreachable_frame(frame: u64) -> ! {
    panic!("managed frame {frame:#x} is not reachable through the physical memory accessor")
}

/// The links of a free frame: `[next, prev]`.
#[derive(Clone, Copy)]
struct Node(*mut u64);

impl Node {
    #[inline]
    fn of<M: PhysMemory>(mem: &M, frame: u64) -> Node {
        Node(links(mem, frame))
    }

    #[inline]
    fn get(self, slot: usize) -> u64 {
        // The pointer is valid and 8-byte aligned for 16 bytes (a frame-aligned `translate`, or the linear offset that
        // `PhysMemory` promises gives the same pointer for memory checked reachable when it was added) and `slot` < 2.
        // SAFETY: the frame is free and on a list the caller owns (module rule), so nobody else accesses these bytes.
        unsafe { self.0.add(slot).read() }
    }

    #[inline]
    fn set(self, slot: usize, value: u64) {
        // SAFETY: as in `get`; the frame is free and ours to link.
        unsafe { self.0.add(slot).write(value) }
    }
}

const NEXT: usize = 0;
const PREV: usize = 1;

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

    pub fn push_front<M: PhysMemory>(&mut self, mem: &M, frame: u64) {
        let n = Node::of(mem, frame);
        n.set(NEXT, self.head);
        n.set(PREV, NIL);
        if self.head == NIL {
            self.tail = frame;
        } else {
            Node::of(mem, self.head).set(PREV, frame);
        }
        self.head = frame;
        self.len += 1;
    }

    pub fn push_back<M: PhysMemory>(&mut self, mem: &M, frame: u64) {
        let n = Node::of(mem, frame);
        n.set(NEXT, NIL);
        n.set(PREV, self.tail);
        if self.tail == NIL {
            self.head = frame;
        } else {
            Node::of(mem, self.tail).set(NEXT, frame);
        }
        self.tail = frame;
        self.len += 1;
    }

    /// Unlinks `frame`, which must be on this list.
    pub fn remove<M: PhysMemory>(&mut self, mem: &M, frame: u64) {
        let n = Node::of(mem, frame);
        let (next, prev) = (n.get(NEXT), n.get(PREV));
        if prev == NIL {
            self.head = next;
        } else {
            Node::of(mem, prev).set(NEXT, next);
        }
        if next == NIL {
            self.tail = prev;
        } else {
            Node::of(mem, next).set(PREV, prev);
        }
        self.len -= 1;
    }

    /// Calls `f` on every frame, front to back (for checks and statistics).
    pub fn for_each<M: PhysMemory>(&self, mem: &M, mut f: impl FnMut(u64)) {
        let mut at = self.head;
        while at != NIL {
            f(at);
            at = Node::of(mem, at).get(NEXT);
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

    #[inline]
    pub fn push<M: PhysMemory>(&mut self, mem: &M, frame: u64) {
        Node::of(mem, frame).set(NEXT, self.head);
        self.head = frame;
        self.len += 1;
    }

    #[inline]
    pub fn pop<M: PhysMemory>(&mut self, mem: &M) -> Option<u64> {
        if self.head == NIL {
            return None;
        }
        let frame = self.head;
        self.head = Node::of(mem, frame).get(NEXT);
        self.len -= 1;
        Some(frame)
    }
}
