//! mm-pagecache's model-based fuzz body.
//!
//! Random inserts, evictions to shadows, removals, tag changes, searches
//! and truncations of one file's page index, against a map from page index
//! to entry and tags (MODEL.md): every result and refusal is the map's
//! (2-5); after every step the entry at the index touched and the counts
//! agree, every eighth step and at the end the whole index is walked
//! against the map in order and checks itself (1, 6). Indices are drawn
//! from a dense run, a sparse spread and the far end of the `u64` range, so
//! the tree grows and shrinks through every height.

use std::collections::BTreeMap;
use std::vec::Vec;

use arbitrary::Arbitrary;
use mm_pagecache::{Entry, IndexError, PageIndex, Tag};
use mm_types::FrameNumber;

/// Where a page index is drawn from.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum At {
    /// `n % 256`: a dense run (one or two leaves).
    Near(u8),
    /// `n << (shift % 52)`: spread over every height.
    Far(u16, u8),
    /// `u64::MAX - n`: the top of the range (the tallest tree).
    Top(u8),
}

impl At {
    fn index(self) -> u64 {
        match self {
            At::Near(n) => u64::from(n),
            At::Far(n, shift) => u64::from(n) << (shift % 52),
            At::Top(n) => u64::MAX - u64::from(n),
        }
    }
}

/// One step.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Cache a page (its frame number is the step's).
    Insert(At),
    /// Evict the page, leaving a shadow.
    Evict(At, u64),
    /// Remove whatever is there.
    Remove(At),
    /// Put a tag on the page (`tag % 5`).
    SetTag(At, u8),
    /// Take a tag off.
    ClearTag(At, u8),
    /// The next page with a tag, and the next entry.
    Next(At, u8),
    /// Truncate from an index.
    Truncate(At),
}

type Model = BTreeMap<u64, (Entry, [bool; TAGS])>;

const TAGS: usize = Tag::ALL.len();

fn tag(t: u8) -> Tag {
    Tag::ALL[usize::from(t) % Tag::ALL.len()]
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = crate::decode_ops(data, 400);
    let mut index = PageIndex::new();
    let mut model = Model::new();
    for (step, op) in (1..).zip(&ops) {
        let touched = match *op {
            Op::Insert(at) => {
                let at = at.index();
                let frame = FrameNumber::new(step).expect("small");
                let want = match model.get(&at) {
                    Some((Entry::Page(_), _)) => Err(IndexError::Occupied { index: at }),
                    Some(&(Entry::Shadow(s), _)) => Ok(Some(s)),
                    None => Ok(None),
                };
                assert_eq!(index.insert(at, frame), want, "insert at {at}");
                if want.is_ok() {
                    model.insert(at, (Entry::Page(frame), [false; TAGS]));
                }
                at
            }
            Op::Evict(at, shadow) => {
                let at = at.index();
                match model.get(&at) {
                    Some(&(Entry::Page(f), _)) => {
                        assert_eq!(index.evict(at, shadow), Ok(f));
                        model.insert(at, (Entry::Shadow(shadow), [false; TAGS]));
                    }
                    _ => assert_eq!(index.evict(at, shadow), Err(IndexError::NotCached { index: at })),
                }
                at
            }
            Op::Remove(at) => {
                let at = at.index();
                assert_eq!(index.remove(at), model.remove(&at).map(|e| e.0), "remove at {at}");
                at
            }
            Op::SetTag(at, t) | Op::ClearTag(at, t) => {
                let (at, set) = (at.index(), matches!(op, Op::SetTag(..)));
                let r = if set { index.set_tag(at, tag(t)) } else { index.clear_tag(at, tag(t)) };
                match model.get_mut(&at) {
                    Some((Entry::Page(_), tags)) => {
                        r.expect("a page takes tags");
                        tags[tag(t) as usize] = set;
                    }
                    _ => assert_eq!(r, Err(IndexError::NotCached { index: at })),
                }
                for t in Tag::ALL {
                    let want = model.get(&at).is_some_and(|(_, tags)| tags[t as usize]);
                    assert_eq!(index.has_tag(at, t), want, "tag {t:?} at {at}");
                }
                at
            }
            Op::Next(at, t) => {
                let (at, t) = (at.index(), tag(t));
                let want = model.range(at..).find_map(|(&k, (e, tags))| match e {
                    Entry::Page(f) if tags[t as usize] => Some((k, *f)),
                    _ => None,
                });
                assert_eq!(index.next_tagged(at, t), want, "next {t:?} from {at}");
                assert_eq!(index.next_entry(at), model.range(at..).next().map(|(&k, &(e, _))| (k, e)));
                at
            }
            Op::Truncate(at) => {
                let at = at.index();
                let mut gone = Vec::new();
                index.truncate(at, |k, e| gone.push((k, e)));
                let want: Vec<(u64, Entry)> = model.range(at..).map(|(&k, &(e, _))| (k, e)).collect();
                assert_eq!(gone, want, "truncate from {at}");
                model.retain(|&k, _| k < at);
                at
            }
        };
        assert_eq!(index.get(touched), model.get(&touched).map(|e| e.0));
        let pages = model.values().filter(|e| matches!(e.0, Entry::Page(_))).count() as u64;
        assert_eq!((index.pages(), index.shadows()), (pages, model.len() as u64 - pages));
        if step % 8 == 0 || step as usize == ops.len() {
            whole(&index, &model);
        }
    }
    whole(&index, &model);
}

/// The whole index against the model, in order, tags included.
fn whole(index: &PageIndex, model: &Model) {
    index.check().expect("index structure");
    let all: Vec<(u64, Entry)> = index.entries_from(0).collect();
    assert_eq!(all, model.iter().map(|(&k, &(e, _))| (k, e)).collect::<Vec<_>>());
    for t in Tag::ALL {
        let got: Vec<u64> = index.tagged_from(0, t).map(|(k, _)| k).collect();
        let want: Vec<u64> = model.iter().filter(|(_, (_, tags))| tags[t as usize]).map(|(&k, _)| k).collect();
        assert_eq!(got, want, "pages tagged {t:?}");
    }
}
