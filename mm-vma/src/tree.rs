//! The range tree: non-overlapping half-open ranges `[start, end)` with a
//! value each, in a B+ tree whose nodes also index the free gaps.
//!
//! Leaves hold up to [`FANOUT`] ranges in address order; inner nodes hold up
//! to [`FANOUT`] children and, for each, the first start and last end of its
//! subtree and the largest gap *inside* it. The gap between two children is
//! computed from their bounds, so every gap of the address space is seen at
//! exactly one node: the lowest one that contains both of its ends. Finding
//! the range containing an address, inserting, removing and finding the
//! highest (or lowest) free range of a size and alignment all walk one path
//! from the root (the gap searches may step back only past subtrees whose
//! recorded gaps fit but whose alignment does not), so they cost
//! `O(log n)` node visits with at most `FANOUT` keys compared per node.
//!
//! Nodes live in one vector and refer to each other by index; values live
//! in a second vector, so moving entries inside a node moves 4-byte handles.
//! Freed slots are reused. No `unsafe`.

use alloc::vec::Vec;

/// Entries per leaf and children per inner node.
pub const FANOUT: usize = 32;
/// A node with fewer entries than this after a removal is merged with a
/// neighbour when the two fit in one node.
const MIN_FILL: usize = FANOUT / 4;

type Idx = u32;
const NONE: Idx = Idx::MAX;

#[derive(Clone, Debug)]
struct Node {
    leaf: bool,
    n: u8,
    /// Leaf: entry starts. Inner: each child's first start.
    lo: [u64; FANOUT],
    /// Leaf: entry ends. Inner: each child's last end.
    hi: [u64; FANOUT],
    /// Leaf: value handles. Inner: child node indices.
    item: [Idx; FANOUT],
    /// Inner: the largest gap inside each child (leaf: unused).
    gap: [u64; FANOUT],
    /// The largest gap inside this node ([`Node::inner_gap`], kept current).
    max_gap: u64,
}

impl Node {
    fn new(leaf: bool) -> Self {
        // Unused `lo` slots hold u64::MAX, so the search over all slots
        // needs no bound on `n`.
        Node { leaf, n: 0, lo: [u64::MAX; FANOUT], hi: [0; FANOUT], item: [NONE; FANOUT], gap: [0; FANOUT], max_gap: 0 }
    }

    #[inline]
    fn len(&self) -> usize {
        self.n as usize
    }

    /// The largest gap between consecutive entries or children, or inside a
    /// child.
    fn inner_gap(&self) -> u64 {
        let n = self.len();
        let mut g = 0;
        for i in 0..n {
            if i > 0 {
                g = g.max(self.lo[i] - self.hi[i - 1]);
            }
            if !self.leaf {
                g = g.max(self.gap[i]);
            }
        }
        g
    }

    /// Index of the last entry/child whose start is `<= key`, if any.
    #[inline]
    fn last_le(&self, key: u64) -> Option<usize> {
        // Branch-free binary search over all FANOUT slots (unused ones hold
        // u64::MAX): the count of starts `<= key`.
        static_assertions::const_assert_eq!(FANOUT, 32);
        let mut i = 0;
        for step in [16, 8, 4, 2, 1] {
            i += usize::from(self.lo[i + step - 1] <= key) * step;
        }
        // The steps count up to 31; the last slot decides the 32nd.
        i += usize::from(self.lo[FANOUT - 1] <= key);
        i.min(self.len()).checked_sub(1)
    }

    /// Recomputes `max_gap`.
    fn update_gap(&mut self) {
        self.max_gap = self.inner_gap();
    }

    /// The gap between entries `i - 1` and `i` (0 outside the node).
    #[inline]
    fn between(&self, i: usize) -> u64 {
        if i == 0 || i >= self.len() {
            0
        } else {
            self.lo[i] - self.hi[i - 1]
        }
    }

    /// Inserts a leaf entry at `i` and updates `max_gap` without a rescan
    /// unless the gap the entry splits was the largest.
    fn leaf_insert(&mut self, i: usize, lo: u64, hi: u64, item: Idx) {
        let split = self.between(i);
        self.insert_at(i, lo, hi, item, 0);
        if split != 0 && split == self.max_gap {
            self.update_gap();
        } else {
            // At either end a new gap appears; in the middle both new gaps
            // are smaller than the split one.
            self.max_gap = self.max_gap.max(self.between(i)).max(self.between(i + 1));
        }
    }

    /// Removes leaf entry `i`, updating `max_gap` without a rescan unless
    /// a gap that vanished at an end of the node was the largest.
    fn leaf_remove(&mut self, i: usize) {
        let n = self.len();
        let lost = if i == 0 {
            self.between(1)
        } else if i + 1 == n {
            self.between(i)
        } else {
            0
        };
        self.remove_at(i);
        if lost != 0 && lost == self.max_gap {
            self.update_gap();
        } else if i > 0 && i < self.len() {
            // Two gaps merged around the removed entry.
            self.max_gap = self.max_gap.max(self.between(i));
        }
    }

    fn insert_at(&mut self, i: usize, lo: u64, hi: u64, item: Idx, gap: u64) {
        let n = self.len();
        debug_assert!(n < FANOUT);
        self.lo.copy_within(i..n, i + 1);
        self.hi.copy_within(i..n, i + 1);
        self.item.copy_within(i..n, i + 1);
        // Leaves keep their (unused) gap slots at zero: nothing to move.
        if !self.leaf {
            self.gap.copy_within(i..n, i + 1);
            self.gap[i] = gap;
        }
        self.lo[i] = lo;
        self.hi[i] = hi;
        self.item[i] = item;
        self.n += 1;
    }

    fn remove_at(&mut self, i: usize) {
        let n = self.len();
        self.lo.copy_within(i + 1..n, i);
        self.hi.copy_within(i + 1..n, i);
        self.item.copy_within(i + 1..n, i);
        if !self.leaf {
            self.gap.copy_within(i + 1..n, i);
        }
        self.lo[n - 1] = u64::MAX;
        self.n -= 1;
    }

    /// Moves the entries from `at` on into a new node.
    fn split_off(&mut self, at: usize) -> Node {
        let n = self.len();
        let mut r = Node::new(self.leaf);
        let k = n - at;
        r.lo[..k].copy_from_slice(&self.lo[at..n]);
        r.hi[..k].copy_from_slice(&self.hi[at..n]);
        r.item[..k].copy_from_slice(&self.item[at..n]);
        r.gap[..k].copy_from_slice(&self.gap[at..n]);
        r.n = k as u8;
        self.lo[at..n].fill(u64::MAX);
        self.n = at as u8;
        r
    }

    /// Appends all of `other`'s entries.
    fn append(&mut self, other: &Node) {
        let (n, k) = (self.len(), other.len());
        self.lo[n..n + k].copy_from_slice(&other.lo[..k]);
        self.hi[n..n + k].copy_from_slice(&other.hi[..k]);
        self.item[n..n + k].copy_from_slice(&other.item[..k]);
        self.gap[n..n + k].copy_from_slice(&other.gap[..k]);
        self.n += k as u8;
    }
}

/// Why an insertion was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeError {
    /// The range is empty or reversed.
    Empty,
    /// The range overlaps the entry `[start, end)`.
    Overlap {
        /// Start of the entry in the way.
        start: u64,
        /// Its end.
        end: u64,
    },
}

/// Non-overlapping ranges with values, and an index of the gaps between
/// them.
///
/// # Example
///
/// ```
/// use mm_vma::RangeTree;
///
/// let mut t = RangeTree::new();
/// t.insert(0x1000, 0x5000, "text").unwrap();
/// t.insert(0x8000, 0x9000, "data").unwrap();
/// assert_eq!(t.find(0x4fff), Some((0x1000, 0x5000, &"text")));
/// assert_eq!(t.find(0x5000), None);
/// // The highest free 8 KiB below 0x9000: the hole [0x5000, 0x8000).
/// assert_eq!(t.gap_top_down(0x2000, 0x1000, 0, 0x9000), Some(0x6000));
/// assert!(t.insert(0x4000, 0x6000, "clash").is_err());
/// ```
#[derive(Clone, Debug)]
pub struct RangeTree<V> {
    nodes: Vec<Node>,
    free_nodes: Vec<Idx>,
    values: Vec<Option<V>>,
    free_values: Vec<Idx>,
    root: Idx,
    len: usize,
    height: u32,
}

impl<V> Default for RangeTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a split child goes in its parent.
struct Split {
    lo: u64,
    hi: u64,
    node: Idx,
    gap: u64,
}

/// A removal that must match an end exactly; on a mismatch, the entry
/// containing the start (bounds and value slot) is recorded.
type Exact<'a> = (u64, &'a mut Option<(u64, u64, Idx)>);

impl<V> RangeTree<V> {
    /// An empty tree (allocates nothing until the first insertion).
    pub const fn new() -> Self {
        RangeTree {
            nodes: Vec::new(),
            free_nodes: Vec::new(),
            values: Vec::new(),
            free_values: Vec::new(),
            root: NONE,
            len: 0,
            height: 0,
        }
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Levels of nodes (0 when empty).
    pub fn height(&self) -> u32 {
        self.height
    }

    fn alloc_node(&mut self, node: Node) -> Idx {
        match self.free_nodes.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as Idx
            }
        }
    }

    fn free_node(&mut self, i: Idx) {
        self.nodes[i as usize].n = 0;
        self.free_nodes.push(i);
    }

    fn alloc_value(&mut self, v: V) -> Idx {
        match self.free_values.pop() {
            Some(i) => {
                self.values[i as usize] = Some(v);
                i
            }
            None => {
                self.values.push(Some(v));
                (self.values.len() - 1) as Idx
            }
        }
    }

    fn take_value(&mut self, i: Idx) -> V {
        self.free_values.push(i);
        self.values[i as usize].take().expect("live value")
    }

    #[inline]
    fn node(&self, i: Idx) -> &Node {
        &self.nodes[i as usize]
    }

    /// The entry containing `addr`: its range and value.
    #[inline]
    pub fn find(&self, addr: u64) -> Option<(u64, u64, &V)> {
        let (leaf, i) = self.find_slot(addr)?;
        let n = self.node(leaf);
        (addr < n.hi[i]).then(|| (n.lo[i], n.hi[i], self.values[n.item[i] as usize].as_ref().expect("live")))
    }

    /// The entry containing `addr`, with its value mutable.
    pub fn find_mut(&mut self, addr: u64) -> Option<(u64, u64, &mut V)> {
        let (leaf, i) = self.find_slot(addr)?;
        let n = &self.nodes[leaf as usize];
        let (lo, hi, item) = (n.lo[i], n.hi[i], n.item[i]);
        (addr < hi).then(|| (lo, hi, self.values[item as usize].as_mut().expect("live")))
    }

    /// The leaf and index of the last entry starting at or before `addr`.
    #[inline]
    fn find_slot(&self, addr: u64) -> Option<(Idx, usize)> {
        let mut t = self.root;
        if t == NONE {
            return None;
        }
        loop {
            let n = self.node(t);
            let i = n.last_le(addr)?;
            if n.leaf {
                return Some((t, i));
            }
            t = n.item[i];
        }
    }

    /// The entry starting at or before `addr` closest to it (whether or not
    /// it contains `addr`).
    pub fn prev(&self, addr: u64) -> Option<(u64, u64, &V)> {
        let (leaf, i) = self.find_slot(addr)?;
        let n = self.node(leaf);
        Some((n.lo[i], n.hi[i], self.values[n.item[i] as usize].as_ref().expect("live")))
    }

    /// The first entry starting after `addr`.
    pub fn next(&self, addr: u64) -> Option<(u64, u64, &V)> {
        self.iter_from(addr.saturating_add(1)).next()
    }

    /// Every entry in address order.
    pub fn iter(&self) -> Iter<'_, V> {
        self.iter_from(0)
    }

    /// Entries starting at or after `from`, in address order.
    pub fn iter_from(&self, from: u64) -> Iter<'_, V> {
        let mut it = Iter { tree: self, stack: [(NONE, 0); 16], depth: 0 };
        let mut t = self.root;
        while t != NONE {
            let n = self.node(t);
            // The first child/entry that may hold starts >= from.
            let i = match n.last_le(from) {
                Some(i) if n.leaf && n.lo[i] < from => i + 1,
                Some(i) => i,
                None => 0,
            };
            it.stack[it.depth] = (t, i);
            it.depth += 1;
            t = if n.leaf || i >= n.len() { NONE } else { n.item[i] };
        }
        it.settle();
        it
    }

    /// Inserts `[start, end)` with `value`. Refused if it overlaps an entry.
    pub fn insert(&mut self, start: u64, end: u64, value: V) -> Result<(), TreeError> {
        if start >= end {
            return Err(TreeError::Empty);
        }
        if self.root == NONE {
            let mut leaf = Node::new(true);
            let v = self.alloc_value(value);
            leaf.insert_at(0, start, end, v, 0);
            self.root = self.alloc_node(leaf);
            self.height = 1;
            self.len = 1;
            return Ok(());
        }
        let root = self.root;
        if let Some(split) = self.insert_rec(root, start, end, value, None)? {
            let old = self.root;
            let (lo, hi, gap) = self.summary(old);
            let mut r = Node::new(false);
            r.insert_at(0, lo, hi, old, gap);
            r.insert_at(1, split.lo, split.hi, split.node, split.gap);
            r.update_gap();
            self.root = self.alloc_node(r);
            self.height += 1;
        }
        self.len += 1;
        Ok(())
    }

    /// Inserts below `t` in one descent. The overlap check happens at the
    /// leaf, before anything changes: the neighbours of `start` are in its
    /// leaf, or the next entry is the first of the nearest right sibling
    /// subtree met on the way down (`next`: a node and the index of that
    /// subtree in it). Nodes change only on the way back up, so a refusal
    /// leaves the tree as it was.
    fn insert_rec(
        &mut self,
        t: Idx,
        start: u64,
        end: u64,
        value: V,
        next: Option<(Idx, usize)>,
    ) -> Result<Option<Split>, TreeError> {
        let n = self.node(t);
        let last = n.last_le(start);
        if n.leaf {
            if let Some(i) = last {
                if n.hi[i] > start {
                    return Err(TreeError::Overlap { start: n.lo[i], end: n.hi[i] });
                }
            }
            let j = last.map_or(0, |i| i + 1);
            let after = if j < n.len() {
                Some((n.lo[j], n.hi[j]))
            } else {
                next.map(|(p, k)| {
                    let mut c = self.node(p).item[k];
                    while !self.node(c).leaf {
                        c = self.node(c).item[0];
                    }
                    (self.node(c).lo[0], self.node(c).hi[0])
                })
            };
            if let Some((s, e)) = after.filter(|&(s, _)| s < end) {
                return Err(TreeError::Overlap { start: s, end: e });
            }
            let v = self.alloc_value(value);
            return Ok(self.insert_into(t, j, start, end, v, 0));
        }
        let i = last.unwrap_or(0);
        let next = if i + 1 < n.len() { Some((t, i + 1)) } else { next };
        let child = n.item[i];
        let split = self.insert_rec(child, start, end, value, next)?;
        self.refresh_child(t, i);
        let Some(s) = split else { return Ok(None) };
        Ok(self.insert_into(t, i + 1, s.lo, s.hi, s.node, s.gap))
    }

    /// First start, last end and inner gap of a node.
    #[inline]
    fn summary(&self, t: Idx) -> (u64, u64, u64) {
        let n = self.node(t);
        (n.lo[0], n.hi[n.len() - 1], n.max_gap)
    }

    /// Copies child `i`'s summary into `parent` and updates the parent's
    /// own largest gap: incrementally unless a value that may have been the
    /// largest shrank.
    fn refresh_child(&mut self, parent: Idx, i: usize) {
        let c = self.node(parent).item[i];
        let (lo, hi, gap) = self.summary(c);
        let p = &mut self.nodes[parent as usize];
        if (p.lo[i], p.hi[i]) == (lo, hi) {
            // Most changes stay inside the child: at most its gap changed.
            let old = p.gap[i];
            p.gap[i] = gap;
            if gap >= old {
                p.max_gap = p.max_gap.max(gap);
            } else if old == p.max_gap {
                p.update_gap();
            }
            return;
        }
        let n = p.len();
        let gaps = |p: &Node| {
            let before = if i > 0 { p.lo[i] - p.hi[i - 1] } else { 0 };
            let after = if i + 1 < n { p.lo[i + 1] - p.hi[i] } else { 0 };
            [p.gap[i], before, after]
        };
        let old = gaps(p);
        p.lo[i] = lo;
        p.hi[i] = hi;
        p.gap[i] = gap;
        let new = gaps(p);
        let shrank_max = old.iter().zip(&new).any(|(o, n)| n < o && *o == p.max_gap);
        if shrank_max {
            p.update_gap();
        } else {
            p.max_gap = new.into_iter().fold(p.max_gap, u64::max);
        }
    }

    /// Inserts into node `t` at `i`, splitting it when full.
    fn insert_into(&mut self, t: Idx, i: usize, lo: u64, hi: u64, item: Idx, gap: u64) -> Option<Split> {
        let node = &mut self.nodes[t as usize];
        if node.len() < FANOUT {
            if node.leaf {
                node.leaf_insert(i, lo, hi, item);
            } else {
                node.insert_at(i, lo, hi, item, gap);
                node.update_gap();
            }
            return None;
        }
        // Appending at the end of a full node (address-ordered growth, as
        // mmap's top-down or bottom-up placement produces) keeps the left
        // node full; otherwise split in halves.
        let half = if i == FANOUT { FANOUT } else { FANOUT / 2 };
        let mut right = node.split_off(half);
        if i <= half && half < FANOUT {
            node.insert_at(i, lo, hi, item, gap);
        } else {
            right.insert_at(i - half, lo, hi, item, gap);
        }
        node.update_gap();
        right.update_gap();
        let (rlo, rhi, rgap) = (right.lo[0], right.hi[right.len() - 1], right.max_gap);
        let r = self.alloc_node(right);
        Some(Split { lo: rlo, hi: rhi, node: r, gap: rgap })
    }

    /// Removes the entry starting exactly at `start`.
    pub fn remove(&mut self, start: u64) -> Option<(u64, u64, V)> {
        self.remove_where(start, None)
    }

    /// Removes the entry `[start, end)` if there is exactly that one (a
    /// munmap of a whole range: one descent instead of a look-up and a
    /// removal). Otherwise changes nothing and returns the entry containing
    /// `start`, if any (what a partial munmap needs next).
    pub fn remove_exact(&mut self, start: u64, end: u64) -> Result<V, Option<(u64, u64, V)>>
    where
        V: Clone,
    {
        let mut miss = None;
        match self.remove_where(start, Some((end, &mut miss))) {
            Some(x) => Ok(x.2),
            None => Err(miss.map(|(s, e, v)| (s, e, self.values[v as usize].clone().expect("live")))),
        }
    }

    fn remove_where(&mut self, start: u64, end: Option<Exact<'_>>) -> Option<(u64, u64, V)> {
        if self.root == NONE {
            return None;
        }
        let root = self.root;
        let (end, v) = self.remove_rec(root, start, end)?;
        self.len -= 1;
        // Shrink the root while it has a single child (or nothing).
        loop {
            let r = self.node(self.root);
            if r.len() == 0 {
                let old = self.root;
                self.free_node(old);
                self.root = NONE;
                self.height = 0;
                break;
            }
            if r.leaf || r.len() > 1 {
                break;
            }
            let old = self.root;
            self.root = r.item[0];
            self.free_node(old);
            self.height -= 1;
        }
        Some((start, end, self.take_value(v)))
    }

    /// Removes the entry starting at `start` (ending at `end.0` if given;
    /// else the entry containing `start` is recorded in `end.1`).
    fn remove_rec(&mut self, t: Idx, start: u64, end: Option<Exact<'_>>) -> Option<(u64, Idx)> {
        let n = self.node(t);
        let i = n.last_le(start)?;
        if n.leaf {
            match end {
                Some((e, _)) if n.lo[i] == start && n.hi[i] == e => {}
                Some((_, miss)) => {
                    if start < n.hi[i] {
                        *miss = Some((n.lo[i], n.hi[i], n.item[i]));
                    }
                    return None;
                }
                None if n.lo[i] != start => return None,
                None => {}
            }
            let (end, v) = (n.hi[i], n.item[i]);
            self.nodes[t as usize].leaf_remove(i);
            return Some((end, v));
        }
        let child = n.item[i];
        let r = self.remove_rec(child, start, end)?;
        if self.node(child).len() == 0 {
            self.free_node(child);
            let node = &mut self.nodes[t as usize];
            node.remove_at(i);
            node.update_gap();
        } else {
            self.refresh_child(t, i);
            if self.node(child).len() < MIN_FILL {
                self.rebalance(t, i);
            }
        }
        Some(r)
    }

    /// Merges the underfull child `i` of `t` with a neighbour if both fit in
    /// one node.
    fn rebalance(&mut self, t: Idx, i: usize) {
        let n = self.node(t).len();
        let size = |s: &Self, j: usize| s.node(s.node(t).item[j]).len();
        let pair = if i + 1 < n && size(self, i) + size(self, i + 1) <= FANOUT {
            Some(i)
        } else if i > 0 && size(self, i - 1) + size(self, i) <= FANOUT {
            Some(i - 1)
        } else {
            None
        };
        let Some(a) = pair else { return };
        let (left, right) = (self.node(t).item[a], self.node(t).item[a + 1]);
        let moved = self.node(right).clone();
        let l = &mut self.nodes[left as usize];
        l.append(&moved);
        l.update_gap();
        self.free_node(right);
        let p = &mut self.nodes[t as usize];
        p.remove_at(a + 1);
        p.update_gap();
        self.refresh_child(t, a);
    }

    /// Changes the bounds of the entry starting at `start` to
    /// `[new_start, new_end)`, keeping its value and place. Refused (with
    /// the entry in the way) if the new bounds overlap a neighbour.
    pub fn resize(&mut self, start: u64, new_start: u64, new_end: u64) -> Result<(), TreeError> {
        if new_start >= new_end {
            return Err(TreeError::Empty);
        }
        let Some((s, e, _)) = self.find(start).filter(|x| x.0 == start) else {
            return Err(TreeError::Overlap { start, end: start });
        };
        if let Some((ps, pe, _)) = self.prev(s.saturating_sub(1)).filter(|_| s > 0) {
            if pe > new_start {
                return Err(TreeError::Overlap { start: ps, end: pe });
            }
        }
        if let Some((ns, ne, _)) = self.iter_from(e).next().filter(|x| x.0 != s) {
            if ns < new_end {
                return Err(TreeError::Overlap { start: ns, end: ne });
            }
        }
        let root = self.root;
        self.resize_rec(root, start, new_start, new_end);
        Ok(())
    }

    fn resize_rec(&mut self, t: Idx, start: u64, new_start: u64, new_end: u64) {
        let n = self.node(t);
        let i = n.last_le(start).expect("the entry exists");
        if n.leaf {
            let node = &mut self.nodes[t as usize];
            node.lo[i] = new_start;
            node.hi[i] = new_end;
            node.update_gap();
            return;
        }
        let child = n.item[i];
        self.resize_rec(child, start, new_start, new_end);
        self.refresh_child(t, i);
    }

    /// The highest `a`, aligned to `align` (a power of two), such that
    /// `[a, a + size)` lies inside `[low, high)` and overlaps no entry: the
    /// top-down search of `get_unmapped_area`.
    pub fn gap_top_down(&self, size: u64, align: u64, low: u64, high: u64) -> Option<u64> {
        debug_assert!(align.is_power_of_two());
        if size == 0 || high < low || high - low < size {
            return None;
        }
        if self.root == NONE {
            return fit_top(low, high, size, align, low, high);
        }
        let (lo, hi, _) = self.summary(self.root);
        // Above everything, inside, below everything.
        fit_top(hi, u64::MAX, size, align, low, high)
            .or_else(|| self.gap_rec_top(self.root, size, align, low, high))
            .or_else(|| fit_top(0, lo, size, align, low, high))
    }

    fn gap_rec_top(&self, t: Idx, size: u64, align: u64, low: u64, high: u64) -> Option<u64> {
        let n = self.node(t);
        for i in (0..n.len()).rev() {
            if n.hi[i] <= low {
                return None;
            }
            if !n.leaf && n.gap[i] >= size && n.lo[i] < high {
                if let Some(a) = self.gap_rec_top(n.item[i], size, align, low, high) {
                    return Some(a);
                }
            }
            if i > 0 {
                if let Some(a) = fit_top(n.hi[i - 1], n.lo[i], size, align, low, high) {
                    return Some(a);
                }
            }
        }
        None
    }

    /// The lowest aligned `a` with `[a, a + size)` free inside `[low, high)`.
    pub fn gap_bottom_up(&self, size: u64, align: u64, low: u64, high: u64) -> Option<u64> {
        debug_assert!(align.is_power_of_two());
        if size == 0 || high < low || high - low < size {
            return None;
        }
        if self.root == NONE {
            return fit_bottom(low, high, size, align, low, high);
        }
        let (lo, hi, _) = self.summary(self.root);
        fit_bottom(0, lo, size, align, low, high)
            .or_else(|| self.gap_rec_bottom(self.root, size, align, low, high))
            .or_else(|| fit_bottom(hi, u64::MAX, size, align, low, high))
    }

    fn gap_rec_bottom(&self, t: Idx, size: u64, align: u64, low: u64, high: u64) -> Option<u64> {
        let n = self.node(t);
        for i in 0..n.len() {
            // The gap below child i may reach below `high` even if the child
            // does not.
            if i > 0 {
                if let Some(a) = fit_bottom(n.hi[i - 1], n.lo[i], size, align, low, high) {
                    return Some(a);
                }
            }
            if n.lo[i] >= high {
                return None;
            }
            if !n.leaf && n.gap[i] >= size && n.hi[i] > low {
                if let Some(a) = self.gap_rec_bottom(n.item[i], size, align, low, high) {
                    return Some(a);
                }
            }
        }
        None
    }

    /// Checks the structure: order, bounds and gaps recorded in the inner
    /// nodes, uniform depth, and the entry count. For tests.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.root == NONE {
            return if self.len == 0 && self.height == 0 { Ok(()) } else { Err("empty root with entries") };
        }
        let mut count = 0;
        let mut prev_end = 0;
        let mut first = true;
        self.check_rec(self.root, 1, &mut count, &mut prev_end, &mut first)?;
        if count != self.len {
            return Err("entry count differs");
        }
        Ok(())
    }

    fn check_rec(
        &self,
        t: Idx,
        depth: u32,
        count: &mut usize,
        prev_end: &mut u64,
        first: &mut bool,
    ) -> Result<(), &'static str> {
        let n = self.node(t);
        if n.len() == 0 {
            return Err("an empty node");
        }
        if n.max_gap != n.inner_gap() {
            return Err("stale largest gap of a node");
        }
        if n.lo[n.len()..].iter().any(|&l| l != u64::MAX) {
            return Err("unused start slots not padded");
        }
        if n.leaf {
            if depth != self.height {
                return Err("leaves at different depths");
            }
            for i in 0..n.len() {
                if n.lo[i] >= n.hi[i] {
                    return Err("an empty entry");
                }
                if !*first && n.lo[i] < *prev_end {
                    return Err("entries overlap or are out of order");
                }
                *first = false;
                *prev_end = n.hi[i];
                *count += 1;
            }
            return Ok(());
        }
        for i in 0..n.len() {
            let c = n.item[i];
            self.check_rec(c, depth + 1, count, prev_end, first)?;
            let (lo, hi, gap) = self.summary(c);
            if (lo, hi, gap) != (n.lo[i], n.hi[i], n.gap[i]) {
                return Err("stale child bounds or gap");
            }
        }
        Ok(())
    }
}

/// The highest aligned start for `size` bytes in the gap `[g0, g1)` clipped
/// to `[low, high)`.
#[inline]
fn fit_top(g0: u64, g1: u64, size: u64, align: u64, low: u64, high: u64) -> Option<u64> {
    let (a, b) = (g0.max(low), g1.min(high));
    if b < a || b - a < size {
        return None;
    }
    let s = (b - size) & !(align - 1);
    (s >= a).then_some(s)
}

/// The lowest aligned start for `size` bytes in the gap `[g0, g1)` clipped to
/// `[low, high)`.
#[inline]
fn fit_bottom(g0: u64, g1: u64, size: u64, align: u64, low: u64, high: u64) -> Option<u64> {
    let (a, b) = (g0.max(low), g1.min(high));
    let s = a.checked_next_multiple_of(align)?;
    (s <= b && b - s >= size).then_some(s)
}

/// In-order iterator over `(start, end, &value)`.
pub struct Iter<'a, V> {
    tree: &'a RangeTree<V>,
    /// (node, next index) from the root down to a leaf.
    stack: [(Idx, usize); 16],
    depth: usize,
}

impl<V> Iter<'_, V> {
    /// Moves the stack to the next entry (or empties it).
    fn settle(&mut self) {
        while self.depth > 0 {
            let (t, i) = self.stack[self.depth - 1];
            let n = self.tree.node(t);
            if i < n.len() {
                if n.leaf {
                    return;
                }
                // Descend into child i at its first entry.
                self.stack[self.depth] = (n.item[i], 0);
                self.depth += 1;
                continue;
            }
            // Exhausted: pop and advance the parent.
            self.depth -= 1;
            if self.depth > 0 {
                self.stack[self.depth - 1].1 += 1;
            }
        }
    }
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (u64, u64, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        if self.depth == 0 {
            return None;
        }
        let (t, i) = self.stack[self.depth - 1];
        let n = self.tree.node(t);
        let item = (n.lo[i], n.hi[i], self.tree.values[n.item[i] as usize].as_ref().expect("live"));
        self.stack[self.depth - 1].1 += 1;
        self.settle();
        Some(item)
    }
}
