//! The per-file page index: a radix tree from page index to cached frame
//! or shadow entry, with tag bitmaps at every level.
//!
//! Each node has 64 slots, so a level consumes six bits of the page index
//! and a file of `n` pages needs `ceil(log64(n))` levels (four for a million
//! pages). Leaves hold entries; inner nodes hold children. Every node keeps
//! a bitmap of its occupied slots and, per [`Tag`], a bitmap of the slots
//! whose page (leaf) or subtree (inner node) carries the tag, so a search
//! for the next dirty page skips untagged subtrees whole, as Linux's XArray
//! marks do. A node that empties is freed and the root shrinks when only
//! its first slot is left, so the tree is as tall as its largest index
//! needs.

use alloc::boxed::Box;
use core::fmt;

use mm_types::{FrameNumber, PhysAddr};

use crate::IndexError;

/// Index bits one level consumes.
const BITS: u32 = 6;
/// Slots per node.
const FANOUT: usize = 1 << BITS;
/// Levels that cover every `u64` index (`6 * 11 >= 64`).
const MAX_HEIGHT: u32 = u64::BITS.div_ceil(BITS);

/// A mark on a cached page, searchable in index order
/// ([`PageIndex::next_tagged`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    /// Written since it was last written back.
    Dirty = 0,
    /// Being written back now.
    Writeback = 1,
    /// Locked by its owner (being read in, truncated or migrated).
    Locked = 2,
    /// Its contents are valid (read in completely, or written whole).
    Uptodate = 3,
    /// The readahead marker: reading this page starts the next window
    /// (Linux's `PG_readahead`).
    Readahead = 4,
}

impl Tag {
    /// Every tag.
    pub const ALL: [Tag; TAGS] = [Tag::Dirty, Tag::Writeback, Tag::Locked, Tag::Uptodate, Tag::Readahead];
}

/// Number of tags.
const TAGS: usize = 5;

/// What an index holds at one page index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A cached page in this frame.
    Page(FrameNumber),
    /// The shadow an evicted page left (what the reclaim policy returned
    /// for it: for example its eviction clock, from which the refault
    /// distance follows when the page is read in again).
    Shadow(u64),
}

/// One node: 64 slots of entries (a leaf) or children (inner).
struct Node {
    /// Occupied slots.
    present: u64,
    /// Leaf: the occupied slots that hold a shadow rather than a page.
    shadows: u64,
    /// Per tag: leaf, the pages with the tag; inner, the children whose
    /// subtree has a page with it.
    tags: [u64; TAGS],
    slots: Slots,
}

enum Slots {
    /// Frame numbers of pages, or shadows (`Node::shadows` tells which).
    Leaf([u64; FANOUT]),
    /// Children, each covering `64^level` indices.
    Inner([Option<Box<Node>>; FANOUT]),
}

impl Node {
    fn leaf() -> Box<Node> {
        Box::new(Node { present: 0, shadows: 0, tags: [0; TAGS], slots: Slots::Leaf([0; FANOUT]) })
    }

    fn inner() -> Box<Node> {
        Box::new(Node { present: 0, shadows: 0, tags: [0; TAGS], slots: Slots::Inner([const { None }; FANOUT]) })
    }

    /// Whether any page below carries `tag`.
    fn has(&self, tag: usize) -> bool {
        self.tags[tag] != 0
    }
}

/// The frame number a leaf stores for a page (stored from a `FrameNumber`,
/// so in range: the conversion checks nothing).
#[inline(always)]
fn frame_of(v: u64) -> FrameNumber {
    FrameNumber::containing(PhysAddr::new_truncate(v << 12))
}

/// The slot of `index` in a node whose slots each cover `1 << shift` indices.
#[inline(always)]
fn slot(index: u64, shift: u32) -> usize {
    ((index >> shift) as usize) & (FANOUT - 1)
}

/// The page index of one file (or of a block device, or of a shmem file):
/// page index to cached frame or shadow entry, with [`Tag`]s.
///
/// The index is a plain data structure (`&self` to look up, `&mut self` to
/// change): a kernel keeps one per file behind that file's own lock (a
/// reader-writer lock lets look-ups of one file run in parallel), so no
/// look-up ever takes a lock shared by all files.
///
/// ```
/// use mm_pagecache::{Entry, PageIndex, Tag};
/// use mm_types::FrameNumber;
///
/// let f = |n| FrameNumber::new(n).unwrap();
/// let mut file = PageIndex::new();
/// file.insert(0, f(0x100))?;
/// file.insert(7, f(0x107))?;
/// file.insert(1 << 40, f(0x200))?; // a sparse file: the tree grows upwards
/// assert_eq!(file.get(7), Some(Entry::Page(f(0x107))));
/// assert_eq!(file.get(8), None);
///
/// // Writeback finds dirty pages in index order, skipping clean subtrees.
/// file.set_tag(7, Tag::Dirty)?;
/// file.set_tag(1 << 40, Tag::Dirty)?;
/// assert_eq!(file.next_tagged(0, Tag::Dirty), Some((7, f(0x107))));
/// assert_eq!(file.next_tagged(8, Tag::Dirty), Some((1 << 40, f(0x200))));
///
/// // Reclaim evicts a clean page, leaving the policy's shadow behind; the
/// // refault finds it and gets it back when the page is cached again.
/// assert_eq!(file.evict(0, 42)?, f(0x100));
/// assert_eq!(file.get(0), Some(Entry::Shadow(42)));
/// assert_eq!(file.insert(0, f(0x300))?, Some(42));
/// assert_eq!((file.pages(), file.shadows()), (3, 0));
/// # Ok::<(), mm_pagecache::IndexError>(())
/// ```
#[derive(Default)]
pub struct PageIndex {
    root: Option<Box<Node>>,
    /// Levels below and including the root (0: empty).
    height: u32,
    /// `(height - 1) * BITS`: the shift of the root's slots (0 when empty).
    top_shift: u32,
    pages: u64,
    shadows: u64,
}

impl fmt::Debug for PageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageIndex")
            .field("pages", &self.pages)
            .field("shadows", &self.shadows)
            .field("height", &self.height)
            .finish()
    }
}

impl PageIndex {
    /// An empty index.
    pub const fn new() -> Self {
        PageIndex { root: None, height: 0, top_shift: 0, pages: 0, shadows: 0 }
    }

    /// Cached pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Shadow entries.
    pub fn shadows(&self) -> u64 {
        self.shadows
    }

    /// Whether the index holds nothing (no page, no shadow).
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    fn set_height(&mut self, height: u32) {
        self.height = height;
        self.top_shift = height.saturating_sub(1) * BITS;
    }

    /// Whether `index` lies below what a tree of `height` levels covers.
    fn covers(height: u32, index: u64) -> bool {
        height >= MAX_HEIGHT || index >> (height * BITS) == 0
    }

    /// The leaf holding `index` and the slot in it, if the tree has one.
    #[inline(always)]
    fn leaf_of(&self, index: u64) -> Option<(&Node, usize)> {
        let mut node = self.root.as_deref()?;
        // Two shifts: `top_shift + BITS` reaches 66 for the tallest tree.
        if index >> self.top_shift >> BITS != 0 {
            return None;
        }
        let mut shift = self.top_shift;
        loop {
            let i = slot(index, shift);
            match &node.slots {
                Slots::Inner(children) => {
                    node = children[i].as_deref()?;
                    shift -= BITS;
                }
                Slots::Leaf(_) => return Some((node, i)),
            }
        }
    }

    /// What is cached at `index`.
    #[inline]
    pub fn get(&self, index: u64) -> Option<Entry> {
        let (node, i) = self.leaf_of(index)?;
        let Slots::Leaf(entries) = &node.slots else { unreachable!("leaf_of returns leaves") };
        if node.present >> i & 1 == 0 {
            return None;
        }
        let v = entries[i];
        Some(if node.shadows >> i & 1 != 0 { Entry::Shadow(v) } else { Entry::Page(frame_of(v)) })
    }

    /// The frame cached at `index`, if a page is (a shadow is not): the
    /// look-up a read or a fault makes.
    #[inline]
    pub fn page(&self, index: u64) -> Option<FrameNumber> {
        let (node, i) = self.leaf_of(index)?;
        let Slots::Leaf(entries) = &node.slots else { unreachable!("leaf_of returns leaves") };
        // A page: occupied and not a shadow.
        ((node.present & !node.shadows) >> i & 1 != 0).then(|| frame_of(entries[i]))
    }

    /// Whether the page at `index` carries `tag` (`false` without a page).
    pub fn has_tag(&self, index: u64, tag: Tag) -> bool {
        let (t, mut node) = (
            tag as usize,
            match self.root.as_deref() {
                Some(n) if Self::covers(self.height, index) => n,
                _ => return false,
            },
        );
        let mut shift = (self.height - 1) * BITS;
        loop {
            let i = slot(index, shift);
            if node.tags[t] >> i & 1 == 0 {
                return false;
            }
            match &node.slots {
                Slots::Inner(children) => {
                    node = children[i].as_deref().expect("a tagged slot has a child");
                    shift -= BITS;
                }
                Slots::Leaf(_) => return true,
            }
        }
    }

    /// Caches the page in `frame` at `index`. Returns the shadow it
    /// replaces, if the page was evicted from here before (for the refault
    /// distance); the new page carries no tag.
    ///
    /// # Errors
    ///
    /// [`IndexError::Occupied`] if a page is cached there already.
    pub fn insert(&mut self, index: u64, frame: FrameNumber) -> Result<Option<u64>, IndexError> {
        // One descent: `store` refuses a page over a page before changing anything (the path to a
        // cached page exists, so it grows and makes nothing on the way).
        let old = self.store(index, frame.as_u64(), false).map_err(|()| IndexError::Occupied { index })?;
        self.pages += 1;
        if old.is_some() {
            self.shadows -= 1;
        }
        Ok(old)
    }

    /// Replaces the page at `index` by the shadow `shadow` (reclaim evicts
    /// it): returns the page's frame, which the caller frees. Its tags go
    /// with it.
    ///
    /// # Errors
    ///
    /// [`IndexError::NotCached`] if no page is cached there.
    pub fn evict(&mut self, index: u64, shadow: u64) -> Result<FrameNumber, IndexError> {
        let frame = self.page(index).ok_or(IndexError::NotCached { index })?;
        self.store(index, shadow, true).expect("a shadow may replace a page");
        self.pages -= 1;
        self.shadows += 1;
        Ok(frame)
    }

    /// Writes `value` at `index` (a shadow if `shadow`, else a frame
    /// number), growing the tree and making nodes as needed, and clears the
    /// slot's tags. Returns the shadow it replaced, if any; refuses (`Err`,
    /// nothing changed) a page where a page is cached.
    fn store(&mut self, index: u64, value: u64, shadow: bool) -> Result<Option<u64>, ()> {
        if self.root.is_none() {
            // As tall as `index` needs, no taller (no empty first children).
            self.set_height((1..MAX_HEIGHT).find(|&h| Self::covers(h, index)).unwrap_or(MAX_HEIGHT));
            self.root = Some(if self.height == 1 { Node::leaf() } else { Node::inner() });
        }
        while !Self::covers(self.height, index) {
            // A new root above the old one, which becomes its first child.
            let old = self.root.take().expect("grown from a root");
            let mut root = Node::inner();
            for t in 0..TAGS {
                root.tags[t] = u64::from(old.has(t));
            }
            root.present = 1;
            if let Slots::Inner(children) = &mut root.slots {
                children[0] = Some(old);
            }
            self.root = Some(root);
            self.set_height(self.height + 1);
        }
        let mut node = self.root.as_deref_mut().expect("made above");
        let mut level = self.height;
        loop {
            let i = slot(index, (level - 1) * BITS);
            let bit = 1u64 << i;
            match &mut node.slots {
                Slots::Inner(children) => {
                    node.present |= bit;
                    node = children[i].get_or_insert_with(|| if level == 2 { Node::leaf() } else { Node::inner() });
                    level -= 1;
                }
                Slots::Leaf(entries) => {
                    if !shadow && node.present & !node.shadows & bit != 0 {
                        return Err(());
                    }
                    let old = (node.present & node.shadows & bit != 0).then_some(entries[i]);
                    entries[i] = value;
                    node.present |= bit;
                    if shadow {
                        node.shadows |= bit;
                    } else {
                        node.shadows &= !bit;
                    }
                    let had: [bool; TAGS] = core::array::from_fn(|t| node.tags[t] & bit != 0);
                    for t in &mut node.tags {
                        *t &= !bit;
                    }
                    if had.iter().any(|&h| h) {
                        // Only a page that was there (now a shadow) can have had tags.
                        self.refresh_tags(index);
                    }
                    return Ok(old);
                }
            }
        }
    }

    /// Recomputes the inner tag bits on the path to `index` from below.
    fn refresh_tags(&mut self, index: u64) {
        fn fix(node: &mut Node, index: u64, level: u32) {
            let i = slot(index, (level - 1) * BITS);
            if let Slots::Inner(children) = &mut node.slots {
                if let Some(child) = children[i].as_deref_mut() {
                    fix(child, index, level - 1);
                    for t in 0..TAGS {
                        if child.has(t) {
                            node.tags[t] |= 1 << i;
                        } else {
                            node.tags[t] &= !(1 << i);
                        }
                    }
                }
            }
        }
        let height = self.height;
        if let Some(root) = self.root.as_deref_mut() {
            fix(root, index, height);
        }
    }

    /// Removes whatever is at `index` (a page or a shadow) and returns it;
    /// the tree gives back nodes that empty.
    pub fn remove(&mut self, index: u64) -> Option<Entry> {
        let entry = self.get(index)?;
        fn take(node: &mut Node, index: u64, level: u32) {
            let i = slot(index, (level - 1) * BITS);
            let bit = 1u64 << i;
            match &mut node.slots {
                Slots::Leaf(entries) => {
                    entries[i] = 0;
                    node.present &= !bit;
                    node.shadows &= !bit;
                    for t in &mut node.tags {
                        *t &= !bit;
                    }
                }
                Slots::Inner(children) => {
                    let child = children[i].as_deref_mut().expect("an entry below");
                    take(child, index, level - 1);
                    let (empty, tags) = (child.present == 0, child.tags);
                    if empty {
                        children[i] = None;
                        node.present &= !bit;
                    }
                    for (t, &child_tags) in node.tags.iter_mut().zip(&tags) {
                        if empty || child_tags == 0 {
                            *t &= !bit;
                        }
                    }
                }
            }
        }
        let height = self.height;
        take(self.root.as_deref_mut().expect("an entry was found"), index, height);
        match entry {
            Entry::Page(_) => self.pages -= 1,
            Entry::Shadow(_) => self.shadows -= 1,
        }
        self.shrink();
        Some(entry)
    }

    /// Drops an empty root, and roots whose only child is their first.
    fn shrink(&mut self) {
        loop {
            match self.root.as_deref_mut() {
                Some(root) if root.present == 0 => {
                    self.root = None;
                    self.set_height(0);
                    return;
                }
                Some(Node { present: 1, slots: Slots::Inner(children), .. }) => {
                    let child = children[0].take();
                    self.root = child;
                    self.set_height(self.height - 1);
                }
                _ => return,
            }
        }
    }

    /// Puts `tag` on the page at `index`.
    ///
    /// # Errors
    ///
    /// [`IndexError::NotCached`] if no page is cached there.
    pub fn set_tag(&mut self, index: u64, tag: Tag) -> Result<(), IndexError> {
        self.page(index).ok_or(IndexError::NotCached { index })?;
        let (t, mut level) = (tag as usize, self.height);
        let mut node = self.root.as_deref_mut().expect("a page was found");
        loop {
            let i = slot(index, (level - 1) * BITS);
            node.tags[t] |= 1 << i;
            match &mut node.slots {
                Slots::Inner(children) => {
                    node = children[i].as_deref_mut().expect("a page below");
                    level -= 1;
                }
                Slots::Leaf(_) => return Ok(()),
            }
        }
    }

    /// Takes `tag` off the page at `index` (nothing happens if it had
    /// none).
    ///
    /// # Errors
    ///
    /// [`IndexError::NotCached`] if no page is cached there.
    pub fn clear_tag(&mut self, index: u64, tag: Tag) -> Result<(), IndexError> {
        self.page(index).ok_or(IndexError::NotCached { index })?;
        if !self.has_tag(index, tag) {
            return Ok(());
        }
        fn clear(node: &mut Node, index: u64, level: u32, t: usize) {
            let i = slot(index, (level - 1) * BITS);
            if let Slots::Inner(children) = &mut node.slots {
                let child = children[i].as_deref_mut().expect("a page below");
                clear(child, index, level - 1, t);
                if child.has(t) {
                    return;
                }
            }
            node.tags[t] &= !(1 << i);
        }
        let height = self.height;
        clear(self.root.as_deref_mut().expect("a page was found"), index, height, tag as usize);
        Ok(())
    }

    /// The first page at or after `from` that carries `tag`, with its
    /// index, in index order; untagged subtrees are skipped whole.
    pub fn next_tagged(&self, from: u64, tag: Tag) -> Option<(u64, FrameNumber)> {
        let t = tag as usize;
        let (index, v) = self.next_where(from, |n| n.tags[t])?;
        Some((index, frame_of(v)))
    }

    /// The first entry (page or shadow) at or after `from`, with its index.
    pub fn next_entry(&self, from: u64) -> Option<(u64, Entry)> {
        let (index, _) = self.next_where(from, |n| n.present)?;
        Some((index, self.get(index).expect("found")))
    }

    /// The first leaf slot at or after `from` whose bit is set in
    /// `bits(node)` at every level on its path, as (index, raw value).
    fn next_where(&self, from: u64, bits: impl Fn(&Node) -> u64) -> Option<(u64, u64)> {
        fn search(node: &Node, base: u64, from: u64, level: u32, bits: &impl Fn(&Node) -> u64) -> Option<(u64, u64)> {
            let shift = (level - 1) * BITS;
            // Slots wholly below `from` are out; the one holding it is searched from `from`.
            let first = if from > base { slot(from, shift) } else { 0 };
            let mut mask = bits(node) & (u64::MAX << first);
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let start = base + ((i as u64) << shift);
                match &node.slots {
                    Slots::Leaf(entries) => return Some((start, entries[i])),
                    Slots::Inner(children) => {
                        let child = children[i].as_deref().expect("a set bit has a child");
                        if let Some(found) = search(child, start, from, level - 1, bits) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        let root = self.root.as_deref()?;
        if !Self::covers(self.height, from) {
            return None;
        }
        search(root, 0, from, self.height, &bits)
    }

    /// Every entry from `from` on, in index order.
    pub fn entries_from(&self, from: u64) -> impl Iterator<Item = (u64, Entry)> + '_ {
        let mut next = Some(from);
        core::iter::from_fn(move || {
            let (index, entry) = self.next_entry(next?)?;
            next = index.checked_add(1);
            Some((index, entry))
        })
    }

    /// Every page from `from` on that carries `tag`, in index order
    /// (writeback's walk over dirty pages).
    pub fn tagged_from(&self, from: u64, tag: Tag) -> impl Iterator<Item = (u64, FrameNumber)> + '_ {
        let mut next = Some(from);
        core::iter::from_fn(move || {
            let (index, frame) = self.next_tagged(next?, tag)?;
            next = index.checked_add(1);
            Some((index, frame))
        })
    }

    /// Removes every entry at or after `from` (truncation to `from`
    /// pages), calling `removed` with each in index order: the caller frees
    /// the frames (after unmapping them).
    pub fn truncate(&mut self, from: u64, mut removed: impl FnMut(u64, Entry)) {
        while let Some((index, _)) = self.next_entry(from) {
            let entry = self.remove(index).expect("just found");
            removed(index, entry);
        }
    }

    /// Checks the structure: occupied bits match entries and children, no
    /// node below the root is empty, leaf tags sit on pages only, inner
    /// tags say exactly which subtrees have the tag, the counts match, and
    /// the root is no taller than needed.
    pub fn check(&self) -> Result<(), &'static str> {
        fn walk(node: &Node, level: u32, root: bool, counts: &mut (u64, u64)) -> Result<(), &'static str> {
            if node.present == 0 && !root {
                return Err("an empty node is kept");
            }
            match &node.slots {
                Slots::Leaf(_) if level != 1 => Err("a leaf above level 1"),
                Slots::Inner(_) if level == 1 => Err("an inner node at level 1"),
                Slots::Leaf(_) => {
                    if node.shadows & !node.present != 0 {
                        return Err("a shadow bit on an empty slot");
                    }
                    if node.tags.iter().any(|&t| t & !(node.present & !node.shadows) != 0) {
                        return Err("a tag on a slot without a page");
                    }
                    counts.0 += u64::from((node.present & !node.shadows).count_ones());
                    counts.1 += u64::from(node.shadows.count_ones());
                    Ok(())
                }
                Slots::Inner(children) => {
                    if node.shadows != 0 {
                        return Err("a shadow bit in an inner node");
                    }
                    for (i, child) in children.iter().enumerate() {
                        let bit = 1u64 << i;
                        match child {
                            None if node.present & bit != 0 => return Err("an occupied slot without a child"),
                            None if node.tags.iter().any(|&t| t & bit != 0) => return Err("a tag without a child"),
                            None => {}
                            Some(_) if node.present & bit == 0 => return Err("a child in an empty slot"),
                            Some(c) => {
                                for t in 0..TAGS {
                                    if (node.tags[t] & bit != 0) != c.has(t) {
                                        return Err("an inner tag disagrees with its subtree");
                                    }
                                }
                                walk(c, level - 1, false, counts)?;
                            }
                        }
                    }
                    Ok(())
                }
            }
        }
        if self.top_shift != self.height.saturating_sub(1) * BITS {
            return Err("the root's shift disagrees with the height");
        }
        let mut counts = (0, 0);
        match self.root.as_deref() {
            None if self.height != 0 => return Err("no root but a height"),
            None => {}
            Some(root) => {
                if self.height == 0 || self.height > MAX_HEIGHT {
                    return Err("a root with a height out of range");
                }
                if root.present == 0 {
                    return Err("an empty root is kept");
                }
                if matches!(root.slots, Slots::Inner(_)) && root.present == 1 {
                    return Err("a root whose only child is its first (taller than needed)");
                }
                walk(root, self.height, true, &mut counts)?;
            }
        }
        if counts != (self.pages, self.shadows) {
            return Err("page or shadow counts disagree with the tree");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    fn f(n: u64) -> FrameNumber {
        FrameNumber::new(n).unwrap()
    }

    #[test]
    fn empty_index() {
        let i = PageIndex::new();
        assert_eq!((i.get(0), i.get(u64::MAX), i.next_entry(0)), (None, None, None));
        assert!(i.is_empty() && !i.has_tag(0, Tag::Dirty));
        i.check().unwrap();
    }

    #[test]
    fn far_indices_grow_and_shrink_the_tree() {
        let mut i = PageIndex::new();
        for (n, at) in [0, 63, 64, 4095, 1 << 30, u64::MAX].into_iter().enumerate() {
            assert_eq!(i.insert(at, f(n as u64 + 1)), Ok(None));
            i.check().unwrap();
        }
        assert_eq!(i.height, MAX_HEIGHT);
        assert_eq!(i.get(u64::MAX), Some(Entry::Page(f(6))));
        assert_eq!(i.get(1 << 31), None);
        assert_eq!(i.remove(u64::MAX), Some(Entry::Page(f(6))));
        assert_eq!(i.remove(1 << 30), Some(Entry::Page(f(5))));
        i.check().unwrap();
        assert_eq!(i.height, 2, "the root shrinks back to what index 4095 needs");
        for at in [0, 63, 64, 4095] {
            i.remove(at).unwrap();
        }
        assert!(i.is_empty());
        i.check().unwrap();
    }

    #[test]
    fn refusals_change_nothing() {
        let mut i = PageIndex::new();
        i.insert(5, f(1)).unwrap();
        assert_eq!(i.insert(5, f(2)), Err(IndexError::Occupied { index: 5 }));
        assert_eq!(i.page(5), Some(f(1)));
        assert_eq!(i.evict(6, 0), Err(IndexError::NotCached { index: 6 }));
        assert_eq!(i.set_tag(6, Tag::Dirty), Err(IndexError::NotCached { index: 6 }));
        i.evict(5, 9).unwrap();
        assert_eq!(i.set_tag(5, Tag::Dirty), Err(IndexError::NotCached { index: 5 }), "a shadow takes no tag");
        assert_eq!(i.clear_tag(5, Tag::Dirty), Err(IndexError::NotCached { index: 5 }));
        assert_eq!(i.evict(5, 1), Err(IndexError::NotCached { index: 5 }));
        assert_eq!(i.get(5), Some(Entry::Shadow(9)));
        assert_eq!(std::format!("{}", IndexError::Occupied { index: 5 }), "page 5 is already cached");
        assert_eq!(std::format!("{}", IndexError::NotCached { index: 6 }), "no page is cached at index 6");
        i.check().unwrap();
    }

    #[test]
    fn tags_follow_pages_and_skip_clean_subtrees() {
        // Three levels (fewer pages under miri: still three levels).
        let n: u64 = if cfg!(miri) { 5_000 } else { 20_000 };
        let last = (n - 1) - (n - 1) % 7;
        let mut i = PageIndex::new();
        for at in (0..n).step_by(7) {
            i.insert(at, f(at + 1)).unwrap();
        }
        for at in [14, 4095, 4102, last] {
            i.set_tag(at, Tag::Dirty).unwrap();
        }
        let dirty: Vec<u64> = i.tagged_from(0, Tag::Dirty).map(|(at, _)| at).collect();
        assert_eq!(dirty, [14, 4095, 4102, last]);
        assert_eq!(i.next_tagged(4096, Tag::Dirty), Some((4102, f(4103))));
        assert_eq!(i.next_tagged(0, Tag::Writeback), None);
        i.clear_tag(4095, Tag::Dirty).unwrap();
        i.clear_tag(4095, Tag::Dirty).unwrap();
        assert!(!i.has_tag(4095, Tag::Dirty) && i.has_tag(4102, Tag::Dirty));
        // Eviction and removal take the tags with the page.
        i.evict(4102, 3).unwrap();
        i.remove(14).unwrap();
        assert_eq!(i.next_tagged(0, Tag::Dirty).map(|x| x.0), Some(last));
        i.check().unwrap();
    }

    #[test]
    fn truncate_removes_everything_from_an_index_in_order() {
        let mut i = PageIndex::new();
        for at in 0..300 {
            i.insert(at * 3, f(at + 1)).unwrap();
        }
        i.evict(600, 77).unwrap();
        let mut gone = Vec::new();
        i.truncate(599, |at, e| gone.push((at, e)));
        assert_eq!(gone.len(), 100);
        assert_eq!(gone[0], (600, Entry::Shadow(77)));
        assert!(gone.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!((i.pages(), i.shadows()), (200, 0));
        assert_eq!(i.entries_from(0).last().map(|x| x.0), Some(597));
        i.check().unwrap();
    }

    #[test]
    fn random_operations_agree_with_a_map() {
        let mut rng = mm_types::testkit::XorShift(11);
        let mut i = PageIndex::new();
        let mut model: BTreeMap<u64, (Entry, [bool; TAGS])> = BTreeMap::new();
        let steps = if cfg!(miri) { 120 } else { 6_000 };
        for step in 0..steps {
            let r = rng.next();
            // Clustered indices, with some far ones.
            let at = if r & 0x100 != 0 { (r >> 20) % 300 } else { (r >> 20) % (1 << (r % 40)) };
            match r % 7 {
                0 | 1 => {
                    let want = match model.get(&at) {
                        Some((Entry::Page(_), _)) => Err(IndexError::Occupied { index: at }),
                        Some((Entry::Shadow(s), _)) => Ok(Some(*s)),
                        None => Ok(None),
                    };
                    assert_eq!(i.insert(at, f(step)), want);
                    if want.is_ok() {
                        model.insert(at, (Entry::Page(f(step)), [false; TAGS]));
                    }
                }
                2 => {
                    let r = i.evict(at, step);
                    match model.get(&at) {
                        Some((Entry::Page(p), _)) => {
                            assert_eq!(r, Ok(*p));
                            model.insert(at, (Entry::Shadow(step), [false; TAGS]));
                        }
                        _ => assert_eq!(r, Err(IndexError::NotCached { index: at })),
                    }
                }
                3 => assert_eq!(i.remove(at), model.remove(&at).map(|e| e.0)),
                4 | 5 => {
                    let t = Tag::ALL[(r >> 8) as usize % TAGS];
                    let set = r % 7 == 4;
                    let res = if set { i.set_tag(at, t) } else { i.clear_tag(at, t) };
                    match model.get_mut(&at) {
                        Some((Entry::Page(_), tags)) => {
                            res.unwrap();
                            tags[t as usize] = set;
                        }
                        _ => assert_eq!(res, Err(IndexError::NotCached { index: at })),
                    }
                }
                _ => {
                    let t = Tag::ALL[(r >> 8) as usize % TAGS];
                    let want = model.range(at..).find(|(_, (e, tags))| matches!(e, Entry::Page(_)) && tags[t as usize]);
                    let want = want.map(|(&k, (e, _))| (k, if let Entry::Page(p) = e { *p } else { unreachable!() }));
                    assert_eq!(i.next_tagged(at, t), want);
                    assert_eq!(i.next_entry(at), model.range(at..).next().map(|(&k, &(e, _))| (k, e)));
                }
            }
            assert_eq!(i.get(at), model.get(&at).map(|e| e.0));
            if step % 64 == 0 {
                i.check().unwrap_or_else(|e| panic!("step {step}, operation {}, index {at}: {e}", r % 7));
                let pages = model.values().filter(|e| matches!(e.0, Entry::Page(_))).count() as u64;
                assert_eq!((i.pages(), i.shadows()), (pages, model.len() as u64 - pages));
            }
        }
        i.check().unwrap();
        let all: Vec<(u64, Entry)> = i.entries_from(0).collect();
        assert_eq!(all, model.iter().map(|(&k, &(e, _))| (k, e)).collect::<Vec<_>>());
    }
}
