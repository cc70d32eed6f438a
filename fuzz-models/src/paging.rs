//! mm-paging's model-based fuzz body.
//!
//! Random map/unmap/protect/split/translate/swap sequences, with injected
//! allocation failures, run against a model: a map from 4 KiB page to
//! (frame, flags) or swap entry. Huge pages are expanded to 4 KiB pages when
//! compared. Checked: every operation's result and error (MODEL 1, 2, 4, 5),
//! the whole table against the model at least every eighth step and at the
//! end, refused operations change nothing (2), unmap reports exactly what was
//! mapped (3), every live-entry count kept in a table entry matches the
//! table below it (3, at each whole-table check), and at the end every
//! table page is freed (3). Single-page maps take `map` (the fault path's
//! one descent), single-page unmaps `unmap_range`'s one-descent path.

use std::collections::BTreeMap;
use std::vec::Vec;

use arbitrary::Arbitrary;
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{Order, PageSize, PhysAddr, SwapSlot, VirtAddr, PAGE_BYTES};

use mm_paging::{HugePages, Lookup, MapFlags, PageTable, PagingError, Unmapped, X86_64};

/// One step; page numbers are inside an 8 MiB window.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Map `pages` pages at `page`; `skew` shifts the physical address off
    /// huge-page alignment.
    Map {
        /// First page.
        page: u16,
        /// Page count (1 + value % 640).
        pages: u16,
        /// Physical offset in pages from the identity-like default.
        skew: u8,
        /// Writable, user, executable bits.
        rights: u8,
        /// Allow huge pages.
        huge: bool,
    },
    /// Unmap a range.
    Unmap {
        /// First page.
        page: u16,
        /// Page count (1 + value % 640).
        pages: u16,
        /// `unmap_present_deferred` (holes skipped, emptied tables held
        /// until the next whole-table check) instead of `unmap_range`.
        deferred: bool,
    },
    /// Change protection.
    Protect {
        /// First page.
        page: u16,
        /// Page count (1 + value % 640).
        pages: u16,
        /// Writable, user, executable bits.
        rights: u8,
    },
    /// Split the huge page holding a page.
    Split {
        /// The page.
        page: u16,
    },
    /// Swap a page out.
    SetSwap {
        /// The page.
        page: u16,
        /// Swap slot.
        slot: u16,
    },
    /// Swap a page back in.
    ReplaceSwap {
        /// The page.
        page: u16,
    },
    /// Translate a byte.
    Translate {
        /// The page.
        page: u16,
        /// Offset in the page.
        offset: u16,
    },
    /// Make the Nth table allocation from now fail.
    FailAllocation {
        /// N (1 + value % 4).
        nth: u8,
    },
    /// Compare the whole table with the model.
    Check,
}

/// 8 MiB: four 2 MiB huge-page slots and four level-1 tables, enough for
/// every shape (huge and small pages, splits, runs across table boundaries)
/// while keeping each whole-table comparison short (the comparison walks
/// every entry of every table in the window).
const WINDOW_PAGES: u64 = 2048;
/// Longest range of one operation: more than a huge page, so that runs
/// span level-1 tables and mix huge and small pages.
const MAX_RUN: u64 = 640;
const PHYS_BASE: u64 = 0x1_0000_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Page(u64, MapFlags),
    Swap(SwapSlot),
}

fn rights(r: u8) -> MapFlags {
    let mut f = MapFlags::READ;
    f.set(MapFlags::WRITE, r & 1 != 0);
    f.set(MapFlags::USER, r & 2 != 0);
    f.set(MapFlags::EXECUTE, r & 4 != 0);
    f
}

struct Harness<'f> {
    pt: PageTable<X86_64, SimPhysMemory, &'f RefFrameProvider>,
    frames: &'f RefFrameProvider,
    model: BTreeMap<u64, Slot>,
    base: u64,
    /// What the last unmap reported, reused so that steps do not allocate.
    removed: Vec<(u64, Slot)>,
    /// Steps since the last whole-table comparison.
    unchecked: u32,
}

impl Harness<'_> {
    fn va(&self, page: u64) -> VirtAddr {
        VirtAddr::new(self.base + page * PAGE_BYTES).expect("window is canonical")
    }

    fn clip(page: u16, pages: u16) -> Option<(u64, u64)> {
        let p = page as u64 % WINDOW_PAGES;
        let n = (1 + pages as u64 % MAX_RUN).min(WINDOW_PAGES - p);
        (n > 0).then_some((p, n))
    }

    /// Compares the whole table with the model, 4 KiB page by 4 KiB page
    /// (huge pages expanded), without building a copy of either: every
    /// present leaf in the window must be the model's next mapped page, no
    /// model page may be left over, and every swapped-out page must hold the
    /// model's swap entry.
    fn check(&mut self) {
        self.unchecked = 0;
        // The flush of deferring unmaps is done: their tables go now, each
        // once, and none of them was reachable meanwhile.
        let (held, free) = (self.pt.unlinked(), self.frames.free_frame_count());
        assert_eq!(self.pt.free_unlinked_tables(), held, "MODEL 3");
        assert_eq!(self.frames.free_frame_count(), free + held, "every held table page given back once (MODEL 3)");
        let mut want = self.model.iter().filter(|(_, s)| matches!(s, Slot::Page(..)));
        self.pt
            .for_each_mapping(self.va(0), WINDOW_PAGES * PAGE_BYTES, |x| {
                let first = (x.va.as_u64() - self.base) / PAGE_BYTES;
                for i in 0..x.size.bytes() / PAGE_BYTES {
                    let got = (first + i, Slot::Page(x.frame.as_u64() + i * PAGE_BYTES, x.flags));
                    assert_eq!(Some(got), want.next().map(|(&p, &s)| (p, s)), "page table differs from the model");
                }
            })
            .expect("valid range");
        assert_eq!(want.next(), None, "page table lacks a page of the model");
        assert_eq!(self.pt.check_table_counts(), Ok(()), "a table's live-entry count is wrong (MODEL 3)");
        for (&p, s) in &self.model {
            if let Slot::Swap(e) = *s {
                assert_eq!(self.pt.lookup(self.va(p)), Ok(Lookup::Swapped(e)), "swap entry differs from the model");
            }
        }
    }

    fn first_where(&self, p: u64, n: u64, want_present: bool) -> Option<u64> {
        let mut keys = self.model.range(p..p + n).map(|(&q, _)| q);
        if want_present {
            keys.next()
        } else {
            // The first page where the run of model keys from `p` breaks.
            let mut next = p;
            for q in keys {
                if q != next {
                    break;
                }
                next += 1;
            }
            (next < p + n).then_some(next)
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Map { page, pages, skew, rights: r, huge } => {
                let Some((p, n)) = Self::clip(page, pages) else { return };
                let phys = PHYS_BASE + (p + skew as u64 % 4) * PAGE_BYTES;
                let flags = rights(r);
                let h = if huge { HugePages::all() } else { HugePages::empty() };
                let frame = PhysAddr::new(phys).expect("small");
                // One 4 KiB page takes the fault path's one descent; the rest the range walk.
                let res = if n == 1 && !huge {
                    self.pt.map(self.va(p), frame, PageSize::Size4KiB, flags)
                } else {
                    self.pt.map_range(self.va(p), frame, n * PAGE_BYTES, flags, h)
                };
                match self.first_where(p, n, true) {
                    Some(q) => assert_eq!(res, Err(PagingError::AlreadyMapped { addr: self.va(q) }), "MODEL 2"),
                    None => match res {
                        Ok(f) => {
                            f.ignore();
                            for i in 0..n {
                                self.model.insert(p + i, Slot::Page(phys + i * PAGE_BYTES, flags));
                            }
                        }
                        Err(PagingError::OutOfFrames(_)) => self.check(),
                        Err(e) => panic!("unexpected map error {e:?}"),
                    },
                }
            }
            Op::Unmap { page, pages, deferred } => {
                let Some((p, n)) = Self::clip(page, pages) else { return };
                let base = self.base;
                let va = self.va(p);
                let removed = &mut self.removed;
                removed.clear();
                let free_before = self.frames.free_frame_count();
                let unmap = if deferred { PageTable::unmap_present_deferred } else { PageTable::unmap_range };
                let res = unmap(&mut self.pt, va, n * PAGE_BYTES, |u| match u {
                    Unmapped::Page { va, frame, size, flags } => {
                        for i in 0..size.bytes() / PAGE_BYTES {
                            removed.push((
                                (va.as_u64() - base) / PAGE_BYTES + i,
                                Slot::Page(frame.as_u64() + i * PAGE_BYTES, flags),
                            ));
                        }
                    }
                    Unmapped::Swap { va, slot: entry } => {
                        removed.push(((va.as_u64() - base) / PAGE_BYTES, Slot::Swap(entry)));
                    }
                });
                if deferred {
                    assert!(
                        self.frames.free_frame_count() <= free_before,
                        "a deferring unmap gave a table page back before the flush (MODEL 3)"
                    );
                }
                match self.first_where(p, n, false).filter(|_| !deferred) {
                    Some(q) => assert_eq!(res, Err(PagingError::NotMapped { addr: self.va(q) }), "MODEL 2"),
                    None => match res {
                        Ok(f) => {
                            f.ignore();
                            // Each page once, in any order.
                            self.removed.sort_unstable_by_key(|&(q, _)| q);
                            assert!(
                                self.removed.iter().copied().eq(self.model.range(p..p + n).map(|(&q, &s)| (q, s))),
                                "unmap reports exactly what was mapped (MODEL 3): {:?}",
                                self.removed
                            );
                            for q in p..p + n {
                                self.model.remove(&q);
                            }
                        }
                        Err(PagingError::OutOfFrames(_)) => self.check(),
                        Err(e) => panic!("unexpected unmap error {e:?}"),
                    },
                }
            }
            Op::Protect { page, pages, rights: r } => {
                let Some((p, n)) = Self::clip(page, pages) else { return };
                let flags = rights(r);
                let res = self.pt.protect_range(self.va(p), n * PAGE_BYTES, flags);
                match self.first_where(p, n, false) {
                    Some(q) => assert_eq!(res, Err(PagingError::NotMapped { addr: self.va(q) })),
                    None => match res {
                        Ok(f) => {
                            f.ignore();
                            for (_, s) in self.model.range_mut(p..p + n) {
                                if let Slot::Page(_, f) = s {
                                    *f = flags;
                                }
                            }
                        }
                        Err(PagingError::OutOfFrames(_)) => self.check(),
                        Err(e) => panic!("unexpected protect error {e:?}"),
                    },
                }
            }
            Op::Split { page } => {
                let p = page as u64 % WINDOW_PAGES;
                let huge = matches!(self.pt.lookup(self.va(p)), Ok(Lookup::Mapped(t)) if t.size != PageSize::Size4KiB);
                match self.pt.split(self.va(p)) {
                    Ok(f) => {
                        assert!(huge);
                        f.ignore();
                    }
                    Err(PagingError::NotMapped { .. }) => assert!(!huge),
                    Err(PagingError::OutOfFrames(_)) => {}
                    Err(e) => panic!("unexpected split error {e:?}"),
                }
            }
            Op::SetSwap { page, slot } => {
                let p = page as u64 % WINDOW_PAGES;
                let entry = SwapSlot::new((slot % 4) as u8, slot as u64).expect("small");
                let res = self.pt.set_swap(self.va(p), entry);
                match (self.model.get(&p).copied(), res) {
                    (Some(Slot::Swap(_)), r) => assert_eq!(r, Err(PagingError::AlreadyMapped { addr: self.va(p) })),
                    (_, Err(PagingError::OutOfFrames(_))) => self.check(),
                    (before, Ok((old, f))) => {
                        f.ignore();
                        let old = old.map(|m| Slot::Page(m.frame.as_u64(), m.flags));
                        assert_eq!(old, before, "set_swap returns what was mapped");
                        self.model.insert(p, Slot::Swap(entry));
                    }
                    (_, Err(e)) => panic!("unexpected set_swap error {e:?}"),
                }
            }
            Op::ReplaceSwap { page } => {
                let p = page as u64 % WINDOW_PAGES;
                let frame = PHYS_BASE + 0x1000_0000 + p * PAGE_BYTES;
                let res = self.pt.replace_swap(self.va(p), PhysAddr::new(frame).expect("small"), MapFlags::READ);
                match self.model.get(&p).copied() {
                    Some(Slot::Swap(e)) => {
                        assert_eq!(res, Ok(e));
                        self.model.insert(p, Slot::Page(frame, MapFlags::READ));
                    }
                    _ => assert_eq!(res, Err(PagingError::NotMapped { addr: self.va(p) })),
                }
            }
            Op::Translate { page, offset } => {
                let p = page as u64 % WINDOW_PAGES;
                let off = offset as u64 % PAGE_BYTES;
                let got = self.pt.translate(VirtAddr::new(self.va(p).as_u64() + off).expect("window"));
                match self.model.get(&p) {
                    Some(Slot::Page(frame, flags)) => {
                        let t = got.expect("mapped page translates (MODEL 1)");
                        assert_eq!((t.phys.as_u64(), t.flags), (frame + off, *flags));
                    }
                    _ => assert!(got.is_none()),
                }
            }
            Op::FailAllocation { nth } => self.frames.fail_nth_allocation(1 + nth as u64 % 4),
            Op::Check => self.check(),
        }
    }
}

/// Decodes `data` into operations and runs them against the model.
pub fn run(data: &[u8]) {
    let five = data.first().is_some_and(|b| b & 1 == 1);
    let ops: Vec<Op> = crate::decode_ops(data.get(1..).unwrap_or_default(), 200);
    // Only page-table pages come from here: an 8 MiB window needs a handful.
    let ram = SimPhysMemory::new(PhysAddr::new(0).expect("zero"), 512 << 10);
    let frames = RefFrameProvider::new(&ram).with_max_order(Order::ZERO);
    let (arch, base) =
        if five { (X86_64::FIVE_LEVEL, 0xff00_0000_0000_0000) } else { (X86_64::FOUR_LEVEL, 0x0000_7f00_0000_0000) };
    let pt = PageTable::new(arch, ram.clone(), &frames).expect("root");
    let mut h = Harness { pt, frames: &frames, model: BTreeMap::new(), base, removed: Vec::new(), unchecked: 0 };
    for op in &ops {
        h.step(op);
        // Every step's results are checked in `step`; the whole table at
        // least every eighth step (and on `Check`, after a refused
        // operation, and at the end): a corruption persists until then.
        h.unchecked += 1;
        if h.unchecked >= 8 {
            h.check();
        }
    }
    frames.fail_nth_allocation(u64::MAX);
    h.check();
    // Tear down: unmap every mapped run, then only the root is left (MODEL 3).
    let pages: Vec<u64> = h.model.keys().copied().collect();
    for p in pages {
        if h.model.contains_key(&p) {
            let mut n = 1;
            while h.model.contains_key(&(p + n)) {
                n += 1;
            }
            h.pt.unmap_range(h.va(p), n * PAGE_BYTES, |_| {}).expect("mapped run").ignore();
            for q in p..p + n {
                h.model.remove(&q);
            }
        }
    }
    assert_eq!(h.pt.table_pages(), 1, "empty tables are freed (MODEL 3)");
    h.pt.destroy(|_| panic!("nothing left to remove"));
    assert_eq!(frames.allocated_blocks(), 0);
}
