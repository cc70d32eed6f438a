//! mm-vmalloc's model-based fuzz body.
//!
//! Random vmalloc / vfree / vmap / vunmap / ioremap / iounmap / purge
//! sequences, with injected frame-allocation failures, run against a model
//! that keeps the window's live and lazily freed ranges in ordered maps and
//! computes where each allocation must land (MODEL.md 6, 7). After every
//! step the returned addresses and errors match the model; every fourth
//! step and at the end the whole state is checked: the index checks
//! itself (MODEL 10); every live area's pages are mapped and its guard page
//! is not (MODEL 2, 3); each area still holds the tag written into it (no two
//! areas share a frame); the statistics agree. At the end every frame is
//! back with its provider except the page tables and the index's own.

use std::collections::BTreeMap;
use std::vec::Vec;

use arbitrary::Arbitrary;
use mm_paging::{NoShootdown, PageTable, RecordingTlb, X86_64};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{FrameBlock, FrameProvider, Order, PhysAddr, PhysMemory, VirtAddr, VirtRange, PAGE_BYTES};

use mm_vmalloc::{
    AreaKind, AreaOptions, CacheMode, KernelMapper, SharedPageTable, Vmalloc, VmallocConfig, VmallocError,
};

const BASE: u64 = 0xffff_c900_0000_0000;
/// The window: 64 MiB, so it fills up and fragments.
const WINDOW: u64 = 64 << 20;
const LAZY_MAX: u64 = 48;

/// One step.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// vmalloc of `1 + pages % 64` pages (`huge`: 2-4 MiB, huge pages).
    Alloc {
        /// Page count.
        pages: u8,
        /// Alignment: `4 KiB << (align % 8)`.
        align: u8,
        /// Leave out the guard page.
        no_guard: bool,
        /// Ask for 2 MiB pages.
        huge: bool,
    },
    /// vfree of the `n`th live area (by index, modulo).
    Free {
        /// Which.
        n: u8,
    },
    /// A bad free: inside an area, or a freed one.
    BadFree {
        /// Which area.
        n: u8,
        /// Page offset (0: a lazily freed area's start).
        offset: u8,
    },
    /// vmap of `1 + frames % 16` frames allocated for the purpose.
    Vmap {
        /// Frame count.
        frames: u8,
    },
    /// ioremap of a device range.
    Ioremap {
        /// Physical page (times 4 KiB, above 4 GiB).
        page: u16,
        /// Offset in the first page.
        offset: u16,
        /// Length in bytes.
        len: u32,
    },
    /// Purge now.
    Purge,
    /// Make the `n`th frame allocation from now fail.
    FailNth {
        /// Which.
        n: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Vmalloc,
    Vmap,
    Io,
}

#[derive(Clone, Debug)]
struct Area {
    /// Reserved bytes (mapped + guard).
    total: u64,
    mapped: u64,
    kind: Kind,
    tag: u64,
    /// The frames of a vmap area (ours to free after vunmap).
    owned: Vec<PhysAddr>,
}

type Kernel<'a> = SharedPageTable<X86_64, &'a SimPhysMemory, &'a RefFrameProvider, RecordingTlb, NoShootdown>;

struct Harness<'a> {
    ram: &'a SimPhysMemory,
    frames: &'a RefFrameProvider,
    vm: Vmalloc<&'a Kernel<'a>, &'a RefFrameProvider, &'a SimPhysMemory>,
    kernel: &'a Kernel<'a>,
    live: BTreeMap<u64, Area>,
    /// Lazily freed ranges: start -> bytes.
    lazy: BTreeMap<u64, u64>,
    next_tag: u64,
}

impl Harness<'_> {
    /// Calls `f(start, len)` for each gap of the window, in address order,
    /// counting lazily freed ranges as used when `lazy`, until `f` returns
    /// a value. Merges the two ordered maps without allocating.
    fn find_gap<T>(&self, lazy: bool, mut f: impl FnMut(u64, u64) -> Option<T>) -> Option<T> {
        let mut live = self.live.iter().map(|(s, a)| (*s, a.total)).peekable();
        let mut lazy_ranges = self.lazy.iter().filter(|_| lazy).map(|(s, l)| (*s, *l)).peekable();
        let mut at = BASE;
        loop {
            let next = match (live.peek(), lazy_ranges.peek()) {
                (Some(a), Some(b)) if a.0 <= b.0 => live.next(),
                (Some(_), Some(_)) | (None, Some(_)) => lazy_ranges.next(),
                (Some(_), None) => live.next(),
                (None, None) => None,
            };
            let Some((s, l)) = next else { break };
            assert!(s >= at, "model ranges overlap");
            if s > at {
                if let Some(t) = f(at, s - at) {
                    return Some(t);
                }
            }
            at = s + l;
        }
        if at < BASE + WINDOW {
            return f(at, BASE + WINDOW - at);
        }
        None
    }

    fn predict_once(&self, total: u64, align: u64, lazy: bool) -> Option<u64> {
        let need = total + align - PAGE_BYTES;
        if let Some(s) = self.find_gap(lazy, |s, l| (l >= need).then_some(s)) {
            return Some(s.next_multiple_of(align));
        }
        if align > PAGE_BYTES {
            return self.find_gap(lazy, |s, l| {
                let a = s.next_multiple_of(align);
                (a + total <= s + l).then_some(a)
            });
        }
        None
    }

    fn predict(&self, total: u64, align: u64) -> (Option<u64>, bool) {
        if let Some(a) = self.predict_once(total, align, true) {
            return (Some(a), false);
        }
        if self.lazy.is_empty() {
            return (None, false);
        }
        (self.predict_once(total, align, false), true)
    }

    /// Runs an allocation the model predicted; returns its address or error.
    fn expect_alloc(
        &mut self,
        total: u64,
        align: u64,
        call: impl FnOnce(&Self) -> Result<u64, VmallocError>,
    ) -> Option<u64> {
        let (predicted, purge) = self.predict(total, align);
        let r = call(self);
        if purge && !matches!(r, Err(VmallocError::Metadata(_))) {
            self.lazy.clear();
        }
        match r {
            Ok(a) => {
                assert_eq!(Some(a), predicted, "lowest fit (MODEL 7)");
                Some(a)
            }
            Err(VmallocError::NoSpace { .. }) => {
                assert_eq!(predicted, None, "space was left (MODEL 7)");
                None
            }
            // The index could not grow: nothing was reserved.
            Err(VmallocError::Metadata(_)) => None,
            // Frames or table pages ran out after the range was reserved:
            // the range went to the lazy list.
            Err(VmallocError::OutOfFrames(_) | VmallocError::Paging(_)) => {
                self.lazy.insert(predicted.expect("a reservation was made"), total);
                None
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }

    fn write_tag(&self, start: u64, mapped: u64, tag: u64) {
        for at in [start, start + mapped - 8] {
            let t = self.kernel.translate(VirtAddr::new(at).expect("in window")).expect("mapped (MODEL 2)");
            // SAFETY: the frame belongs to a live area of this harness; nothing else touches it.
            unsafe { self.ram.write_bytes(t.phys, &tag.to_le_bytes()).expect("RAM") };
        }
    }

    fn read_tag(&self, start: u64, mapped: u64) -> [u64; 2] {
        [start, start + mapped - 8].map(|at| {
            let t = self.kernel.translate(VirtAddr::new(at).expect("in window")).expect("mapped (MODEL 2)");
            let mut b = [0u8; 8];
            // SAFETY: as in `write_tag`.
            unsafe { self.ram.read_bytes(t.phys, &mut b).expect("RAM") };
            u64::from_le_bytes(b)
        })
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Alloc { pages, align, no_guard, huge } => {
                let huge = huge && pages % 8 == 0;
                let (size, align) = if huge {
                    ((2 + u64::from(pages % 3)) << 20, 2 << 20)
                } else {
                    ((1 + u64::from(pages % 64)) * PAGE_BYTES, PAGE_BYTES << (align % 8))
                };
                let mut opts = AreaOptions::new().align(align).caller("fuzz");
                if no_guard {
                    opts = opts.no_guard();
                }
                if huge {
                    opts = opts.huge();
                }
                let mapped = if huge { size.next_multiple_of(2 << 20) } else { size };
                let total = mapped + if no_guard { 0 } else { PAGE_BYTES };
                if let Some(a) = self.expect_alloc(total, align, |h| h.vm.vmalloc_with(size, opts).map(|a| a.as_u64()))
                {
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    self.write_tag(a, mapped, tag);
                    self.live.insert(a, Area { total, mapped, kind: Kind::Vmalloc, tag, owned: Vec::new() });
                }
            }
            Op::Free { n } => {
                let Some((&start, _)) = self.live.iter().nth(usize::from(n) % self.live.len().max(1)) else {
                    return;
                };
                let area = self.live.remove(&start).expect("live");
                if area.kind != Kind::Io {
                    assert_eq!(self.read_tag(start, area.mapped), [area.tag; 2], "the area kept its contents");
                }
                let va = VirtAddr::new(start).expect("in window");
                match area.kind {
                    Kind::Vmalloc => {
                        assert!(matches!(
                            self.vm.vunmap(va),
                            Err(VmallocError::WrongKind { kind: AreaKind::Vmalloc { .. }, .. })
                        ));
                        self.vm.vfree(va).expect("live area");
                    }
                    Kind::Vmap => {
                        self.vm.vunmap(va).expect("live area");
                        for f in area.owned {
                            self.frames.free(FrameBlock::from_addr(f, Order::ZERO).expect("frame")).expect("ours");
                        }
                    }
                    Kind::Io => self.vm.iounmap(va).expect("live area"),
                }
                self.lazy.insert(start, area.total);
                if self.lazy.values().sum::<u64>() / PAGE_BYTES > LAZY_MAX {
                    self.lazy.clear();
                }
            }
            Op::BadFree { n, offset } => {
                if offset == 0 {
                    if let Some((&start, _)) = self.lazy.iter().nth(usize::from(n) % self.lazy.len().max(1)) {
                        let va = VirtAddr::new(start).expect("in window");
                        assert_eq!(self.vm.vfree(va), Err(VmallocError::DoubleFree(va)));
                    }
                    return;
                }
                let Some((&start, area)) = self.live.iter().nth(usize::from(n) % self.live.len().max(1)) else {
                    return;
                };
                let off = u64::from(offset) * PAGE_BYTES % area.total;
                let va = VirtAddr::new(start + off).expect("in window");
                let want = if off == 0 {
                    return;
                } else {
                    VmallocError::NotAreaStart { addr: va, area: VirtAddr::new(start).expect("in window") }
                };
                assert_eq!(self.vm.vfree(va), Err(want));
            }
            Op::Vmap { frames } => {
                let n = 1 + usize::from(frames % 16);
                let mut owned = Vec::new();
                for _ in 0..n {
                    match self.frames.allocate_frame(Default::default()) {
                        Ok(f) => owned.push(f),
                        Err(_) => break,
                    }
                }
                if owned.len() < n {
                    for f in owned {
                        self.frames.free(FrameBlock::from_addr(f, Order::ZERO).expect("frame")).expect("ours");
                    }
                    return;
                }
                let total = n as u64 * PAGE_BYTES + PAGE_BYTES;
                let got =
                    self.expect_alloc(total, PAGE_BYTES, |h| h.vm.vmap(&owned, AreaOptions::new()).map(|a| a.as_u64()));
                match got {
                    Some(a) => {
                        let t = self.kernel.translate(VirtAddr::new(a).expect("in window")).expect("mapped");
                        assert_eq!(t.frame, owned[0], "vmap maps the caller's frames in order");
                        let tag = self.next_tag;
                        self.next_tag += 1;
                        self.write_tag(a, n as u64 * PAGE_BYTES, tag);
                        self.live
                            .insert(a, Area { total, mapped: n as u64 * PAGE_BYTES, kind: Kind::Vmap, tag, owned });
                    }
                    None => {
                        for f in owned {
                            self.frames.free(FrameBlock::from_addr(f, Order::ZERO).expect("frame")).expect("ours");
                        }
                    }
                }
            }
            Op::Ioremap { page, offset, len } => {
                let phys = (1u64 << 32) + u64::from(page) * PAGE_BYTES + u64::from(offset % 4096);
                let len = 1 + u64::from(len % (5 << 20));
                let base = phys - phys % PAGE_BYTES;
                let mapped = (phys + len).next_multiple_of(PAGE_BYTES) - base;
                let align = if mapped >= 2 << 20 && base % (2 << 20) == 0 { 2 << 20 } else { PAGE_BYTES };
                let total = mapped + PAGE_BYTES;
                let pa = PhysAddr::new(phys).expect("small");
                let call =
                    |h: &Self| h.vm.ioremap(pa, len, CacheMode::Uncached).map(|a| a.as_u64() - phys % PAGE_BYTES);
                if let Some(start) = self.expect_alloc(total, align, call) {
                    let first = VirtAddr::new(start + phys % PAGE_BYTES).expect("in window");
                    assert_eq!(self.kernel.translate(first).expect("mapped").phys, pa);
                    let last = VirtAddr::new(start + mapped - 1).expect("in window");
                    assert_eq!(self.kernel.translate(last).expect("mapped").phys.as_u64(), base + mapped - 1);
                    // Device memory: no tag written.
                    self.live.insert(start, Area { total, mapped, kind: Kind::Io, tag: 0, owned: Vec::new() });
                }
            }
            Op::Purge => {
                let pages: u64 = self.lazy.values().sum::<u64>() / PAGE_BYTES;
                assert_eq!(self.vm.purge(), pages);
                self.lazy.clear();
            }
            Op::FailNth { n } => self.frames.fail_nth_allocation(1 + u64::from(n % 32)),
        }
    }

    fn check(&self) {
        self.vm.check().expect("index invariants (MODEL 10)");
        let s = self.vm.stats();
        assert_eq!(s.areas, self.live.len() as u64);
        assert_eq!(s.mapped_bytes, self.live.values().map(|a| a.mapped).sum::<u64>());
        let vmalloc_pages: u64 =
            self.live.values().filter(|a| a.kind == Kind::Vmalloc).map(|a| a.mapped / PAGE_BYTES).sum();
        assert_eq!(s.frames, vmalloc_pages);
        assert_eq!(s.lazy_bytes, self.lazy.values().sum::<u64>());
        for (&start, a) in &self.live {
            let info = self.vm.find_area(VirtAddr::new(start).expect("in window")).expect("live area");
            assert_eq!((info.size, info.guard), (a.mapped, a.total - a.mapped));
            for at in [start, start + a.mapped - PAGE_BYTES] {
                assert!(self.kernel.translate(VirtAddr::new(at).expect("in")).is_some(), "mapped (MODEL 2)");
            }
            if a.total > a.mapped {
                let guard = VirtAddr::new(start + a.mapped).expect("in window");
                assert!(self.kernel.translate(guard).is_none(), "the guard page is unmapped (MODEL 3)");
            }
            if a.kind != Kind::Io {
                assert_eq!(self.read_tag(start, a.mapped), [a.tag; 2], "no two areas share a frame (MODEL 1)");
            }
        }
    }
}

/// Decodes `data` into operations and runs them against the model.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = crate::decode_ops(data, 300);
    // Fresh host memory costs more than a whole run (page faults), so each
    // thread keeps its simulated RAM; nothing relies on its old contents
    // (table pages are allocated zeroed, index nodes written before use).
    std::thread_local! {
        static RAM: SimPhysMemory = SimPhysMemory::new(PhysAddr::new(0).expect("zero"), 16 << 20);
    }
    let ram = RAM.with(SimPhysMemory::clone);
    let frames = RefFrameProvider::new(&ram);
    let table = PageTable::new(X86_64::FOUR_LEVEL, &ram, &frames).expect("root");
    let kernel = SharedPageTable::new(table, RecordingTlb::default(), NoShootdown);
    let window = VirtRange::new(VirtAddr::new(BASE).expect("canonical"), WINDOW).expect("window");
    let config = VmallocConfig { lazy_max_pages: LAZY_MAX, ..VmallocConfig::new(window) };
    let vm = Vmalloc::new(&kernel, &frames, &ram, config).expect("index frame");
    let mut h = Harness {
        ram: &ram,
        frames: &frames,
        vm,
        kernel: &kernel,
        live: BTreeMap::new(),
        lazy: BTreeMap::new(),
        next_tag: 1,
    };
    for (i, op) in ops.iter().enumerate() {
        h.step(op);
        // Every step's results are checked in `step`; the whole state every
        // fourth step and at the end (a corruption persists until then).
        if i % 4 == 3 {
            h.check();
        }
    }
    h.check();
    frames.fail_nth_allocation(u64::MAX);
    // Tear down: every area freed, one purge, then only the page tables and
    // the index hold frames.
    while let Some((&start, _)) = h.live.iter().next() {
        h.step(&Op::Free { n: 0 });
        assert!(!h.live.contains_key(&start));
    }
    h.vm.purge();
    h.lazy.clear();
    h.check();
    let s = h.vm.stats();
    assert_eq!((s.free_ranges, s.free_bytes), (1, WINDOW), "the whole window is free again");
    let held = kernel.lock().table_pages() + s.index_frames;
    assert_eq!(frames.allocated_blocks() as u64, held, "every area frame is back");
}
