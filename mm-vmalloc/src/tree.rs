//! The range index: treaps of address ranges whose nodes live in frames
//! taken from the frame provider (no heap).
//!
//! One node type serves three trees keyed by start address: free gaps
//! (augmented with the largest gap length in each subtree, so the lowest gap
//! that fits is found in one descent), busy areas, and lazily freed areas
//! awaiting the TLB purge. A treap keeps the expected depth logarithmic
//! whatever the order of the operations, because node priorities come from a
//! generator the callers do not control.

use core::ptr::NonNull;

use mm_types::{AllocFlags, FrameProvider, Order, PhysAddr, PhysMemory, PAGE_SIZE};

use crate::error::VmallocError;

/// What an area in the busy or lazy tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AreaKind {
    /// Frames allocated by vmalloc, in blocks of `2^order` frames.
    Vmalloc {
        /// The order of every backing block.
        order: u8,
        /// Whether the area is mapped with 2 MiB pages.
        huge: bool,
    },
    /// Frames the caller owns, mapped by `vmap`.
    Vmap,
    /// Device memory mapped by `ioremap`.
    Ioremap {
        /// The physical address of the area's first page.
        phys: PhysAddr,
        /// Its cache mode.
        mode: crate::CacheMode,
    },
}

/// A tree node: a free gap or an area.
#[derive(Clone, Copy)]
pub(crate) struct Node {
    /// First address.
    pub start: u64,
    /// Length in bytes: of the gap, or of the area's whole reservation
    /// (mapped bytes plus guard).
    pub len: u64,
    /// Mapped bytes of an area (`len` minus the guard).
    pub mapped: u64,
    left: Link,
    right: Link,
    /// Largest `len` in this subtree (free tree only).
    max: u64,
    prio: u32,
    /// Map flags of an area (bits of `mm_paging::MapFlags`).
    pub flags: u16,
    /// Whether the area is built and published (busy tree only).
    pub ready: bool,
    pub kind: AreaKind,
    /// Who asked for the area.
    pub caller: &'static str,
}

/// A node handle. Only [`Pool`] makes them, so each points at a node of its
/// pool.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeRef(NonNull<Node>);

pub(crate) type Link = Option<NodeRef>;

// SAFETY: a NodeRef is only dereferenced through its pool, whose owner serialises access (the pool sits in a mutex).
unsafe impl Send for NodeRef {}

/// Node storage: frames carved into nodes, with a free list through `left`.
/// Frames are kept once taken (their number is the peak node count divided
/// by [`NODES_PER_FRAME`]); the first node of each frame links the frames.
pub(crate) struct Pool {
    free: Link,
    /// First node of the newest frame; its `right` links the older ones.
    frames: Link,
    pub frame_count: u64,
    pub nodes_in_use: u64,
    free_count: u64,
    rng: u64,
}

/// Nodes per frame (one of them links the frames).
pub(crate) const NODES_PER_FRAME: usize = PAGE_SIZE / core::mem::size_of::<Node>();

static_assertions::const_assert!(NODES_PER_FRAME >= 32);

impl Pool {
    pub const fn new(seed: u64) -> Self {
        Pool { free: None, frames: None, frame_count: 0, nodes_in_use: 0, free_count: 0, rng: seed | 1 }
    }

    #[inline]
    pub fn get(&self, n: NodeRef) -> &Node {
        // SAFETY: `n` came from this pool (only the pool makes handles), whose frames stay allocated
        // and reachable for the pool's life; `&self` excludes `get_mut` meanwhile.
        unsafe { n.0.as_ref() }
    }

    #[inline]
    pub fn get_mut(&mut self, n: NodeRef) -> &mut Node {
        // SAFETY: as in `get`; `&mut self` makes this the only reference to any node of the pool.
        unsafe { &mut *n.0.as_ptr() }
    }

    fn next_prio(&mut self) -> u32 {
        // xorshift64*: priorities independent of the addresses callers choose.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// A node for `[start, start + len)`, with a fresh priority.
    pub fn alloc(
        &mut self,
        frames: &impl FrameProvider,
        mem: &impl PhysMemory,
        start: u64,
        len: u64,
    ) -> Result<NodeRef, VmallocError> {
        if self.free.is_none() {
            self.grow(frames, mem)?;
        }
        let n = self.free.expect("grown");
        let prio = self.next_prio();
        let node = self.get_mut(n);
        let next = node.left;
        *node = Node { start, len, prio, ..Node::EMPTY };
        node.max = len;
        self.free = next;
        self.nodes_in_use += 1;
        self.free_count -= 1;
        Ok(n)
    }

    /// Makes sure `count` nodes can be allocated without failing.
    pub fn reserve(
        &mut self,
        frames: &impl FrameProvider,
        mem: &impl PhysMemory,
        count: u64,
    ) -> Result<(), VmallocError> {
        while self.free_count < count {
            self.grow(frames, mem)?;
        }
        Ok(())
    }

    pub fn free(&mut self, n: NodeRef) {
        let head = self.free;
        let node = self.get_mut(n);
        *node = Node { left: head, ..Node::EMPTY };
        self.free = Some(n);
        self.nodes_in_use -= 1;
        self.free_count += 1;
    }

    fn grow(&mut self, frames: &impl FrameProvider, mem: &impl PhysMemory) -> Result<(), VmallocError> {
        // An error return drops `owned`, which gives the frame back.
        let owned = frames.allocate_owned(Order::ZERO, AllocFlags::empty()).map_err(VmallocError::Metadata)?;
        let at = owned.block().start_address();
        let ptr = mem.translate(at, PAGE_SIZE).map_err(|_| VmallocError::MetadataUnreachable(at))?.cast::<Node>();
        // The pool owns the frame from here.
        let block = owned.into_raw();
        static_assertions::const_assert!(PAGE_SIZE % core::mem::align_of::<Node>() == 0);
        for i in 0..NODES_PER_FRAME {
            // SAFETY: the frame was just allocated to us and `translate` made it valid for PAGE_SIZE
            // bytes, 4 KiB aligned (so aligned for Node), holding NODES_PER_FRAME nodes.
            unsafe { ptr.as_ptr().add(i).write(Node::EMPTY) };
        }
        // Node 0 links the frames and records the frame's address; the others join the free list.
        let first = NodeRef(ptr);
        let older = self.frames;
        let head = self.get_mut(first);
        head.right = older;
        head.start = block.start_address().as_u64();
        self.frames = Some(first);
        for i in 1..NODES_PER_FRAME {
            // SAFETY: `i` is inside the frame (see above).
            let n = NodeRef(unsafe { ptr.add(i) });
            let head = self.free;
            self.get_mut(n).left = head;
            self.free = Some(n);
        }
        self.free_count += NODES_PER_FRAME as u64 - 1;
        self.frame_count += 1;
        Ok(())
    }

    /// Physical addresses of the frames the pool took, newest first.
    pub fn frame_addresses(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        let mut f = self.frames;
        core::iter::from_fn(move || {
            let n = f?;
            let node = self.get(n);
            f = node.right;
            Some(PhysAddr::new(node.start).expect("recorded from an allocated block"))
        })
    }

    // ----- treap operations (all take and return subtree roots) -----

    #[inline]
    fn max_of(&self, l: Link) -> u64 {
        l.map_or(0, |n| self.get(n).max)
    }

    /// Largest gap length in the subtree.
    #[inline]
    pub fn subtree_max(&self, l: Link) -> u64 {
        self.max_of(l)
    }

    #[inline]
    fn pull(&mut self, n: NodeRef) {
        let node = self.get(n);
        let m = node.len.max(self.max_of(node.left)).max(self.max_of(node.right));
        self.get_mut(n).max = m;
    }

    /// Splits into (start < key, start >= key).
    fn split(&mut self, t: Link, key: u64) -> (Link, Link) {
        let Some(n) = t else { return (None, None) };
        let node = self.get(n);
        if node.start < key {
            let (a, b) = self.split(node.right, key);
            self.get_mut(n).right = a;
            self.pull(n);
            (Some(n), b)
        } else {
            let (a, b) = self.split(node.left, key);
            self.get_mut(n).left = b;
            self.pull(n);
            (a, Some(n))
        }
    }

    /// Joins two treaps, every key of `a` below every key of `b`.
    fn merge(&mut self, a: Link, b: Link) -> Link {
        match (a, b) {
            (None, x) | (x, None) => x,
            (Some(x), Some(y)) => {
                if self.get(x).prio > self.get(y).prio {
                    let r = self.get(x).right;
                    let m = self.merge(r, Some(y));
                    self.get_mut(x).right = m;
                    self.pull(x);
                    Some(x)
                } else {
                    let l = self.get(y).left;
                    let m = self.merge(Some(x), l);
                    self.get_mut(y).left = m;
                    self.pull(y);
                    Some(y)
                }
            }
        }
    }

    /// Inserts `n` (whose start is not in the tree).
    pub fn insert(&mut self, root: &mut Link, n: NodeRef) {
        let key = self.get(n).start;
        {
            let node = self.get_mut(n);
            node.left = None;
            node.right = None;
            node.max = node.len;
        }
        let (a, b) = self.split(*root, key);
        let left = self.merge(a, Some(n));
        *root = self.merge(left, b);
    }

    /// Removes and returns the node starting at `key`.
    pub fn remove(&mut self, root: &mut Link, key: u64) -> Link {
        let (a, b) = self.split(*root, key);
        let (m, c) = self.split(b, key.saturating_add(1));
        *root = self.merge(a, c);
        if let Some(n) = m {
            debug_assert!(self.get(n).left.is_none() && self.get(n).right.is_none(), "keys are unique");
        }
        m
    }

    /// The node with the largest start `<= key`.
    pub fn floor(&self, mut t: Link, key: u64) -> Link {
        let mut best = None;
        while let Some(n) = t {
            let node = self.get(n);
            if node.start <= key {
                best = Some(n);
                t = node.right;
            } else {
                t = node.left;
            }
        }
        best
    }

    /// The node with the smallest start `>= key`.
    pub fn ceil(&self, mut t: Link, key: u64) -> Link {
        let mut best = None;
        while let Some(n) = t {
            let node = self.get(n);
            if node.start >= key {
                best = Some(n);
                t = node.left;
            } else {
                t = node.right;
            }
        }
        best
    }

    /// Calls `f` for every node in address order.
    pub fn for_each(&self, t: Link, f: &mut impl FnMut(&Node)) {
        if let Some(n) = t {
            let node = self.get(n);
            self.for_each(node.left, f);
            f(node);
            self.for_each(node.right, f);
        }
    }

    /// Number of nodes and height of the tree (for checks and statistics).
    pub fn shape(&self, t: Link) -> (u64, u32) {
        match t {
            None => (0, 0),
            Some(n) => {
                let node = self.get(n);
                let (a, ha) = self.shape(node.left);
                let (b, hb) = self.shape(node.right);
                (a + b + 1, ha.max(hb) + 1)
            }
        }
    }

    /// Checks the treap invariants of a subtree with keys in `[lo, hi)`:
    /// order, heap order of priorities, and the gap-length augmentation.
    pub fn check(&self, t: Link, lo: u64, hi: u64) -> Result<u64, &'static str> {
        let Some(n) = t else { return Ok(0) };
        let node = self.get(n);
        if node.start < lo || node.start >= hi {
            return Err("key out of order");
        }
        for c in [node.left, node.right].into_iter().flatten() {
            if self.get(c).prio > node.prio {
                return Err("child priority above its parent's");
            }
        }
        let l = self.check(node.left, lo, node.start)?;
        let r = self.check(node.right, node.start.saturating_add(1), hi)?;
        let m = node.len.max(l).max(r);
        if m != node.max {
            return Err("stale subtree maximum");
        }
        Ok(m)
    }

    // ----- free-gap search -----

    /// Finds the lowest gap of at least `need` bytes (`need >= size`) that
    /// holds `size` bytes at an `align`-aligned start inside `[lo, hi)`, and
    /// carves the range out of it in
    /// place (the tree stays valid: a carved gap keeps its place in the
    /// order). Returns the range's start and what the caller still has to
    /// do: insert the gap's tail as a new node, or remove the emptied node.
    pub fn carve(&mut self, t: Link, req: &Request) -> Option<Carved> {
        let n = t?;
        if self.get(n).max < req.need {
            return None;
        }
        let (l, r) = (self.get(n).left, self.get(n).right);
        let mut res = None;
        if self.max_of(l) >= req.need {
            res = self.carve(l, req);
        }
        if res.is_none() {
            res = self.carve_node(n, req);
        }
        if res.is_none() && self.max_of(r) >= req.need {
            res = self.carve(r, req);
        }
        if res.is_some() {
            self.pull(n);
        }
        res
    }

    fn carve_node(&mut self, n: NodeRef, req: &Request) -> Option<Carved> {
        let node = self.get_mut(n);
        if node.len < req.need {
            // In a search that only takes gaps of `need` bytes, a smaller gap
            // is not taken even if it happens to fit: that keeps the result
            // "the lowest gap of at least `need` bytes", whatever the tree's
            // shape.
            return None;
        }
        let gap_end = node.start + node.len;
        let lo = node.start.max(req.lo);
        let addr = lo.checked_next_multiple_of(req.align)?;
        let end = addr.checked_add(req.size)?;
        if end > gap_end.min(req.hi) {
            return None;
        }
        let lead = addr - node.start;
        let tail = gap_end - end;
        let follow = match (lead, tail) {
            (0, 0) => {
                node.len = 0;
                Follow::Remove(node.start)
            }
            (0, _) => {
                node.start = end;
                node.len = tail;
                Follow::Nothing
            }
            (_, 0) => {
                node.len = lead;
                Follow::Nothing
            }
            _ => {
                node.len = lead;
                Follow::InsertTail { start: end, len: tail }
            }
        };
        Some(Carved { addr, follow })
    }
}

impl Node {
    const EMPTY: Node = Node {
        start: 0,
        len: 0,
        mapped: 0,
        left: None,
        right: None,
        max: 0,
        prio: 0,
        flags: 0,
        ready: false,
        kind: AreaKind::Vmap,
        caller: "",
    };

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// A gap search.
pub(crate) struct Request {
    pub size: u64,
    pub align: u64,
    /// Only subtrees whose largest gap is at least this are searched.
    pub need: u64,
    /// The range must lie inside `[lo, hi)`.
    pub lo: u64,
    pub hi: u64,
}

/// A carved range and the tree change it still needs.
pub(crate) struct Carved {
    pub addr: u64,
    pub follow: Follow,
}

pub(crate) enum Follow {
    Nothing,
    /// The gap's tail becomes a new gap node.
    InsertTail {
        start: u64,
        len: u64,
    },
    /// The gap was used up: remove its (now empty) node.
    Remove(u64),
}
