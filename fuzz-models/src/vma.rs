//! mm-vma's model-based fuzz body.
//!
//! Random mmap / munmap / mprotect / mremap / brk / fork / exit / read /
//! write / swap-out sequences over up to four address spaces, run against a
//! model that knows, for every page of a 128-page window in each space,
//! whether it is mapped, its rights, whether it is shared, what backs it and
//! where its data lives (a cell of its own, a cell shared with other spaces,
//! an object's page, or zeros). Checked after every step: each result and
//! error is the model's (the address an `mmap` without a fixed address
//! returns is the model's highest fit, MODEL 21); every read returns the
//! last value written to that page in that address space (or by a sharer),
//! or zero, or the object's byte; every illegal access faults with the
//! model's reason; what every space would read from every page, seen
//! without a fault, is the model's, and a page the model has unmapped has
//! no entry. Every eighth step and at the end: every page's VMA and rights
//! agree with the model, and each space and the reverse map check
//! themselves. At the end every frame is back with the provider.

use std::collections::BTreeMap;
use std::vec::Vec;

use arbitrary::Arbitrary;
use mm_types::testkit::SimPhysMemory;
use mm_types::{PhysAddr, Protection, VirtAddr};

use mm_vma::sim::{SimPager, SimSpace, SimWorld};
use mm_vma::{FaultError, Layout, MapRequest, Placement, Remap, SpaceError};

const P: u64 = 4096;
const PAGES: u64 = 128;
const W: u64 = 0x1000_0000;
const MMAP_BASE: u64 = W + 96 * P;
const HIGH: u64 = W + PAGES * P;
const BRK_BASE: u64 = W + 100 * P;
const MAX_SPACES: usize = 4;

/// One step. Pages are window indices (modulo 128); `space` picks a live
/// address space (modulo their number).
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// mmap of `1 + pages % 16` pages.
    Mmap {
        /// Which space.
        space: u8,
        /// 0: anywhere, 1: fixed, 2: fixed-no-replace, 3: hint.
        placement: u8,
        /// Window page for the address.
        page: u8,
        /// Length.
        pages: u8,
        /// Rights: none, r, rw, rx.
        prot: u8,
        /// Shared mapping.
        shared: bool,
        /// 0: anonymous; else object `object % 3` at page `offset % 8`.
        object: u8,
        /// Object page offset.
        offset: u8,
    },
    /// munmap.
    Munmap {
        /// Which space.
        space: u8,
        /// Start page.
        page: u8,
        /// `1 + pages % 24`.
        pages: u8,
    },
    /// mprotect.
    Mprotect {
        /// Which space.
        space: u8,
        /// Start page.
        page: u8,
        /// `1 + pages % 24`.
        pages: u8,
        /// Rights.
        prot: u8,
    },
    /// mremap.
    Mremap {
        /// Which space.
        space: u8,
        /// Start page.
        page: u8,
        /// `1 + old % 8`.
        old: u8,
        /// `1 + new % 16`.
        new: u8,
        /// 0: in place, 1: may move, 2: fixed at `to`.
        mode: u8,
        /// Fixed target page.
        to: u8,
    },
    /// brk to `BRK_BASE + bytes * 97`.
    Brk {
        /// Which space.
        space: u8,
        /// Offset unit.
        bytes: u8,
    },
    /// fork.
    Fork {
        /// Which space.
        space: u8,
    },
    /// The space exits (one always stays).
    Exit {
        /// Which space.
        space: u8,
    },
    /// Write a value into a page.
    Write {
        /// Which space.
        space: u8,
        /// Page.
        page: u8,
        /// Value.
        value: u32,
    },
    /// Read a page.
    Read {
        /// Which space.
        space: u8,
        /// Page.
        page: u8,
    },
    /// Swap the page's frame out of every space mapping it.
    SwapOut {
        /// Which space.
        space: u8,
        /// Page.
        page: u8,
    },
    /// Drop the swap cache's pages that nobody maps (their slots must then
    /// hold their last writes).
    DropCache,
    /// Every mapped page of a space: swap it out (`0`), read it (`1`), or
    /// write `value` plus its index to it (else): sweeps that make
    /// sequences over the same pages (fork, swap-out, swap-in, write,
    /// swap-out again) likely.
    Sweep {
        /// Which space.
        space: u8,
        /// What to do.
        what: u8,
        /// Value base for writes.
        value: u32,
    },
}

/// Where a page's data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    /// Never written: zeros.
    Zero,
    /// An object's page (a private mapping reads it until it writes).
    Object(u32, u64),
    /// A cell (shared by spaces that share the page).
    Cell(usize),
}

#[derive(Clone, Copy, Debug)]
struct Page {
    prot: Protection,
    shared: bool,
    object: Option<(u32, u64)>,
    data: Data,
}

struct Model {
    /// Per space: window page index -> page.
    spaces: Vec<BTreeMap<u64, Page>>,
    brk: Vec<u64>,
    cells: Vec<u32>,
    /// Values written through shared object mappings.
    objects: BTreeMap<(u32, u64), u32>,
}

fn prot_of(p: u8) -> Protection {
    match p % 4 {
        0 => Protection::empty(),
        1 => Protection::READ,
        2 => Protection::READ | Protection::WRITE,
        _ => Protection::READ | Protection::EXEC,
    }
}

/// Where in a page the model's value lives (the same offset in every page,
/// as mremap moves pages to other addresses).
const SLOT: u64 = 100;

fn object_value(object: u32, offset: u64, at: u64) -> u32 {
    u32::from_le_bytes(core::array::from_fn(|i| SimPager::byte(object, offset + at + i as u64)))
}

impl Model {
    fn value(&self, p: &Page) -> u32 {
        match p.data {
            Data::Zero => 0,
            Data::Object(o, off) => self.objects.get(&(o, off)).copied().unwrap_or_else(|| object_value(o, off, SLOT)),
            Data::Cell(c) => self.cells[c],
        }
    }

    fn new_cell(&mut self, v: u32) -> usize {
        self.cells.push(v);
        self.cells.len() - 1
    }

    /// A fresh page of a mapping.
    fn fresh(&mut self, prot: Protection, shared: bool, object: Option<(u32, u64)>) -> Page {
        let data = match object {
            Some((o, off)) => Data::Object(o, off),
            // Shared anonymous memory is populated at once.
            None if shared => Data::Cell(self.new_cell(0)),
            None => Data::Zero,
        };
        Page { prot, shared, object, data }
    }

    fn free_range(&self, s: usize, first: u64, n: u64) -> bool {
        self.spaces[s].range(first..first + n).next().is_none()
    }

    /// The highest free run of `n` pages ending at or below `top`.
    fn highest_fit(&self, s: usize, n: u64, top: u64) -> Option<u64> {
        (0..=top.checked_sub(n)?).rev().find(|&f| self.free_range(s, f, n))
    }

    fn place_anywhere(&self, s: usize, n: u64) -> Option<u64> {
        self.highest_fit(s, n, (MMAP_BASE - W) / P).or_else(|| self.highest_fit(s, n, PAGES))
    }
}

/// The address of window page `idx`. The model's indices are window pages
/// plus a length (each a byte taken modulo a small number), so the address
/// lies far below the top of the canonical lower half whatever the input.
fn addr(idx: u64) -> VirtAddr {
    VirtAddr::new(W + idx * P).expect("a window address is canonical")
}

/// The window page of `a`, an address in the window.
fn index(a: VirtAddr) -> u64 {
    (a - addr(0)) / P
}

struct Harness {
    world: SimWorld,
    spaces: Vec<SimSpace>,
    model: Model,
}

impl Harness {
    fn pick(&self, space: u8) -> usize {
        space as usize % self.spaces.len()
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Mmap { space, placement, page, pages, prot, shared, object, offset } => {
                let s = self.pick(space);
                let (idx, n) = (u64::from(page) % PAGES, 1 + u64::from(pages) % 16);
                let prot = prot_of(prot);
                let obj = (object % 3 != 0).then(|| (u32::from(object % 3), u64::from(offset % 8) * P));
                let mut req = match obj {
                    Some((o, off)) => MapRequest::object(n * P, prot, o, off),
                    None => MapRequest::anonymous(n * P, prot),
                };
                if shared {
                    req = req.shared();
                }
                let in_window = idx + n <= PAGES;
                let expected = match placement % 4 {
                    0 => self.model.place_anywhere(s, n).ok_or(SpaceError::NoSpace),
                    1 if in_window => Ok(idx),
                    2 if in_window && self.model.free_range(s, idx, n) => Ok(idx),
                    2 if in_window => {
                        let (&first, _) = self.model.spaces[s].range(idx..idx + n).next().expect("not free");
                        Err(SpaceError::Vma(mm_vma::VmaError::Overlap { start: addr(first), end: VirtAddr::ZERO }))
                    }
                    3 if in_window && self.model.free_range(s, idx, n) => Ok(idx),
                    3 => self.model.place_anywhere(s, n).ok_or(SpaceError::NoSpace),
                    _ => Err(SpaceError::OutOfRange),
                };
                req = req.at(match placement % 4 {
                    0 => Placement::Anywhere,
                    1 => Placement::Fixed(addr(idx)),
                    2 => Placement::FixedNoReplace(addr(idx)),
                    _ => Placement::Hint(addr(idx)),
                });
                let got = self.spaces[s].mmap(req);
                match (got, expected) {
                    (Ok(a), Ok(i)) => {
                        assert_eq!(a, addr(i), "{op:?}");
                        for k in 0..n {
                            let object = obj.map(|(o, off)| (o, off + k * P));
                            let p = self.model.fresh(prot, shared, object);
                            self.model.spaces[s].insert(i + k, p);
                        }
                    }
                    (
                        Err(SpaceError::Vma(mm_vma::VmaError::Overlap { start, .. })),
                        Err(SpaceError::Vma(mm_vma::VmaError::Overlap { .. })),
                    ) => {
                        // The first VMA overlapping: at or before the first
                        // model page in the range.
                        assert!(start <= addr(idx + n), "{op:?}");
                    }
                    (got, expected) => assert_eq!(got.map(index), expected, "{op:?}"),
                }
            }
            Op::Munmap { space, page, pages } => {
                let s = self.pick(space);
                let (idx, n) = (u64::from(page) % PAGES, 1 + u64::from(pages) % 24);
                let r = self.spaces[s].munmap(addr(idx), n * P);
                if idx + n <= PAGES {
                    r.unwrap();
                    self.remove(s, idx, n);
                } else {
                    assert_eq!(r, Err(SpaceError::OutOfRange));
                }
            }
            Op::Mprotect { space, page, pages, prot } => {
                let s = self.pick(space);
                let (idx, n) = (u64::from(page) % PAGES, 1 + u64::from(pages) % 24);
                let prot = prot_of(prot);
                let r = self.spaces[s].mprotect(addr(idx), n * P, prot);
                let hole = (idx..idx + n).find(|i| !self.model.spaces[s].contains_key(i));
                match (r, idx + n <= PAGES, hole) {
                    (Ok(()), true, None) => {
                        for i in idx..idx + n {
                            self.model.spaces[s].get_mut(&i).expect("mapped").prot = prot;
                        }
                    }
                    (Err(SpaceError::Vma(mm_vma::VmaError::NotMapped(a))), true, Some(h)) => assert_eq!(a, addr(h)),
                    (Err(SpaceError::OutOfRange), false, _) => {}
                    (r, _, hole) => panic!("{op:?}: {r:?}, hole {hole:?}"),
                }
            }
            Op::Mremap { space, page, old, new, mode, to } => self.mremap(space, page, old, new, mode, to),
            Op::Brk { space, bytes } => {
                let s = self.pick(space);
                let new = BRK_BASE + u64::from(bytes) * 97;
                let old_end = self.model.brk[s].next_multiple_of(P);
                let new_end = new.next_multiple_of(P);
                let (oi, ni) = ((old_end - W) / P, (new_end - W) / P);
                // At most 255 * 97 bytes above the window's heap: canonical.
                let new = VirtAddr::new(new).expect("a break near the window is canonical");
                let r = self.spaces[s].brk(new);
                if new_end > HIGH {
                    assert_eq!(r, Err(SpaceError::OutOfRange));
                } else if ni > oi && !self.model.free_range(s, oi, ni - oi) {
                    assert_eq!(r, Err(SpaceError::NoSpace));
                } else {
                    assert_eq!(r, Ok(new));
                    if ni > oi {
                        for i in oi..ni {
                            let p = self.model.fresh(Protection::READ | Protection::WRITE, false, None);
                            self.model.spaces[s].insert(i, p);
                        }
                    } else {
                        self.remove(s, ni, oi - ni);
                    }
                    self.model.brk[s] = new.as_u64();
                }
            }
            Op::Fork { space } => {
                if self.spaces.len() < MAX_SPACES {
                    let s = self.pick(space);
                    let child = self.spaces[s].fork().expect("memory for a fork");
                    self.spaces.push(child);
                    self.model.spaces.push(self.model.spaces[s].clone());
                    self.model.brk.push(self.model.brk[s]);
                }
            }
            Op::Exit { space } => {
                if self.spaces.len() > 1 {
                    let s = self.pick(space);
                    self.spaces.swap_remove(s);
                    self.model.spaces.swap_remove(s);
                    self.model.brk.swap_remove(s);
                }
            }
            Op::Write { space, page, value } => {
                let s = self.pick(space);
                let idx = u64::from(page) % PAGES;
                let a = addr(idx) + SLOT;
                let r = self.spaces[s].write_user(a, &value.to_le_bytes());
                match self.model.spaces[s].get(&idx).copied() {
                    None => assert_eq!(r, Err(FaultError::NoMapping { addr: a })),
                    Some(p) if !p.prot.contains(Protection::WRITE) => {
                        assert!(matches!(r, Err(FaultError::Protection { .. })), "{op:?}: {r:?}")
                    }
                    Some(p) => {
                        r.unwrap();
                        let data = match (p.shared, p.data) {
                            (true, Data::Object(o, off)) => {
                                self.model.objects.insert((o, off), value);
                                p.data
                            }
                            (true, Data::Cell(c)) => {
                                self.model.cells[c] = value;
                                p.data
                            }
                            // Private: a write always lands in a page of
                            // its own.
                            _ => Data::Cell(self.model.new_cell(value)),
                        };
                        self.model.spaces[s].get_mut(&idx).expect("mapped").data = data;
                    }
                }
            }
            Op::Read { space, page } => {
                let s = self.pick(space);
                let idx = u64::from(page) % PAGES;
                self.check_read(s, idx);
            }
            Op::Sweep { space, what, value } => {
                let s = self.pick(space);
                let pages: Vec<u64> = self.model.spaces[s].keys().copied().collect();
                for idx in pages {
                    let page = u8::try_from(idx).expect("PAGES fits a byte");
                    let op = match what % 3 {
                        0 => Op::SwapOut { space, page },
                        1 => Op::Read { space, page },
                        _ => Op::Write { space, page, value: value.wrapping_add(idx as u32) },
                    };
                    self.step(&op);
                }
            }
            Op::DropCache => {
                self.world.swap.drop_cached();
            }
            Op::SwapOut { space, page } => {
                let s = self.pick(space);
                let idx = u64::from(page) % PAGES;
                let Some(p) = self.model.spaces[s].get(&idx).copied() else { return };
                // Anonymous pages only (a pager's pages are dropped, not
                // swapped); present ones only.
                if !matches!(p.data, Data::Cell(_)) || p.object.is_some() && p.shared {
                    return;
                }
                let Some(t) = self.spaces[s].page_table().translate(addr(idx)) else { return };
                let mut all: Vec<&mut SimSpace> = self.spaces.iter_mut().collect();
                self.world.swap.swap_out(t.frame, &mut all).expect("nothing is locked");
            }
        }
    }

    fn remove(&mut self, s: usize, idx: u64, n: u64) {
        for i in idx..idx + n {
            self.model.spaces[s].remove(&i);
        }
    }

    fn mremap(&mut self, space: u8, page: u8, old: u8, new: u8, mode: u8, to: u8) {
        let s = self.pick(space);
        let idx = u64::from(page) % PAGES;
        let (on, nn) = (1 + u64::from(old) % 8, 1 + u64::from(new) % 16);
        let to = u64::from(to) % PAGES;
        let mode = match mode % 3 {
            0 => Remap::InPlace,
            1 => Remap::MayMove,
            _ => Remap::Fixed(addr(to)),
        };
        let before: Vec<Page> = (idx..idx + on).filter_map(|i| self.model.spaces[s].get(&i).copied()).collect();
        let r = self.spaces[s].mremap(addr(idx), on * P, nn * P, mode);
        let Ok(dest) = r else {
            // Refused: nothing changed (checked after the step).
            return;
        };
        assert_eq!(before.len() as u64, on, "mremap of a range that is not all mapped");
        let di = index(dest);
        if let Remap::Fixed(t) = mode {
            assert_eq!(dest, t);
        }
        let moved = on.min(nn);
        let first = before[0];
        // Remove the source, then the target range (fixed), then place.
        self.remove(s, idx, on);
        if matches!(mode, Remap::Fixed(_)) {
            self.remove(s, di, nn);
        }
        for (k, p) in before.iter().take(moved as usize).enumerate() {
            self.model.spaces[s].insert(di + k as u64, *p);
        }
        for k in moved..nn {
            let object = first.object.map(|(o, off)| (o, off + k * P));
            let p = self.model.fresh(first.prot, first.shared, object);
            self.model.spaces[s].insert(di + k, p);
        }
    }

    fn check_read(&mut self, s: usize, idx: u64) {
        let a = addr(idx) + SLOT;
        let mut buf = [0u8; 4];
        let r = self.spaces[s].read_user(a, &mut buf);
        match self.model.spaces[s].get(&idx).copied() {
            None => assert_eq!(r, Err(FaultError::NoMapping { addr: a })),
            Some(p) if p.prot.is_empty() => assert!(matches!(r, Err(FaultError::Protection { .. }))),
            Some(p) => {
                r.unwrap();
                assert_eq!(u32::from_le_bytes(buf), self.model.value(&p), "space {s} page {idx}: {p:?}");
            }
        }
    }

    /// What every space would read from every page, without a fault, found
    /// with one walk of each page table; and when `whole`, every page's
    /// VMA against the model, each space's own check and the reverse map.
    fn check(&self, whole: bool) {
        let mut seen = [None; PAGES as usize];
        for (s, space) in self.spaces.iter().enumerate() {
            seen.fill(None);
            space
                .page_table()
                .for_each_entry(addr(0), PAGES * P, |e| {
                    let (va, v) = match e {
                        mm_paging::Entry::Page(m) => (m.va, self.read_frame(m.frame)),
                        mm_paging::Entry::Swap { va, slot } => (va, self.read_slot(slot)),
                    };
                    // Pages of this window are 4 KiB (the model maps no huge pages).
                    seen[((va.as_u64() - W) / P) as usize] = Some(v);
                })
                .expect("the window is a user range");
            // The model's pages in order beside the window's: one pass, no look-ups.
            let mut model = self.model.spaces[s].iter().peekable();
            for (idx, got) in (0..).zip(seen) {
                match (model.next_if(|&(&i, _)| i == idx).map(|(_, p)| p), got) {
                    (Some(p), Some(v)) => {
                        assert_eq!(v, self.model.value(p), "space {s} page {idx}: {p:?}, seen without a fault")
                    }
                    (Some(p), None) => {
                        assert!(!matches!(p.data, Data::Cell(_)), "space {s} page {idx}: written, now nowhere")
                    }
                    (None, got) => assert_eq!(got, None, "space {s} page {idx}: unmapped, yet in the page table"),
                }
            }
            assert!(model.next().is_none(), "the model has pages outside the window");
        }
        if !whole {
            return;
        }
        for (s, space) in self.spaces.iter().enumerate() {
            space.check().unwrap();
            for idx in 0..PAGES {
                let v = space.vmas().find(addr(idx));
                match self.model.spaces[s].get(&idx) {
                    None => assert!(v.is_none(), "space {s} page {idx} should be unmapped"),
                    Some(p) => {
                        let v = v.expect("mapped");
                        assert_eq!((v.prot, v.flags.contains(mm_vma::VmaFlags::SHARED)), (p.prot, p.shared));
                        let backing = match v.backing {
                            mm_vma::Backing::Anonymous => None,
                            mm_vma::Backing::Object { object, offset } => {
                                Some((object, offset + (addr(idx) - v.start)))
                            }
                        };
                        assert_eq!(backing, p.object, "space {s} page {idx}");
                    }
                }
            }
        }
        let all: Vec<&SimSpace> = self.spaces.iter().collect();
        self.world.mm.check_rmap(&all).unwrap();
    }

    /// The value at [`SLOT`] of a mapped frame.
    fn read_frame(&self, frame: PhysAddr) -> u32 {
        let mut b = [0u8; 4];
        let at = PhysAddr::new(frame.as_u64() + SLOT).expect("valid");
        // SAFETY: simulated RAM; nothing runs concurrently with the model.
        unsafe { mm_types::PhysMemory::read_bytes(&self.world.ram, at, &mut b) }.expect("simulated RAM");
        u32::from_le_bytes(b)
    }

    /// The value at [`SLOT`] of a swapped page: in its cached frame or slot.
    fn read_slot(&self, slot: mm_types::SwapSlot) -> u32 {
        let mut b = [0u8; 4];
        self.world.swap.peek(slot, SLOT as usize, &mut b);
        u32::from_le_bytes(b)
    }
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = crate::decode_ops(data, 200);
    std::thread_local! {
        static RAM: SimPhysMemory = SimPhysMemory::new(PhysAddr::new(0x10_0000).expect("valid"), 8 << 20);
    }
    let world = SimWorld::with_ram(RAM.with(SimPhysMemory::clone));
    let free = world.free_frame_count();
    let va = |a| VirtAddr::new(a).expect("the window is canonical");
    let layout =
        Layout { low: va(W), high: va(HIGH), mmap_base: va(MMAP_BASE), brk_base: va(BRK_BASE), ..Layout::X86_64 };
    let first = world.space_with(layout);
    let mut h = Harness {
        world,
        spaces: std::vec![first],
        model: Model {
            spaces: std::vec![BTreeMap::new()],
            brk: std::vec![BRK_BASE],
            cells: Vec::new(),
            objects: BTreeMap::new(),
        },
    };
    // Contents after every step; the structures' whole-state checks (every
    // page's VMA, each space's own walk, the reverse map) every eighth step
    // and at the end, where a broken structure still shows.
    for (step, op) in (1..).zip(&ops) {
        h.step(op);
        h.check(step % 8 == 0);
    }
    // Every page reads back as the model says.
    for s in 0..h.spaces.len() {
        for idx in 0..PAGES {
            h.check_read(s, idx);
        }
    }
    h.check(true);
    let Harness { world, spaces, .. } = h;
    drop(spaces);
    assert_eq!(world.mm.tracked_frames(), 0);
    assert_eq!(world.swap.slots_used(), 0);
    assert_eq!(world.free_frame_count() + world.pager.cached() as u64, free, "every frame back");
}
