//! Contracts of the public API at its edges (MODEL 1, 4, 6, 7): slots
//! waiting in a per-CPU slot cache are not allocated to anyone, bad slots
//! and misuse are refused with their own errors, one frame is never cached
//! for two slots, a failed write in the compressed tier leaves the slot
//! its last good page, absurd sizes are refused, and only a lack of frames
//! is `OutOfMemory`. Small enough for miri.

use std::sync::Arc;

use mm_swap::{Swap, SwapConfig, SwapError, SwappedIn, BAD_AFTER, MAX_SLOTS};
use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
use mm_types::{
    AllocFlags, BackingStore, FrameBlock, FrameError, FrameProvider, Order, PhysAddr, PhysMemory, StoreError, SwapSlot,
    SLOT_SIZE,
};

struct Env {
    mem: SimPhysMemory,
    frames: RefFrameProvider,
}

fn env() -> Env {
    let mem = SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), 64 << 12);
    let frames = RefFrameProvider::new(&mem);
    Env { mem, frames }
}

fn page_of(fill: u8) -> [u8; SLOT_SIZE] {
    let mut p = [fill; SLOT_SIZE];
    p[0] = !fill;
    p
}

impl Env {
    fn page(&self, fill: u8) -> PhysAddr {
        let f = self.frames.allocate_frame(AllocFlags::empty()).unwrap();
        // SAFETY: the frame was just allocated: nobody else uses it.
        unsafe { self.mem.write_bytes(f, &page_of(fill)) }.unwrap();
        f
    }

    fn holds(&self, f: PhysAddr, fill: u8) -> bool {
        let mut b = [0u8; SLOT_SIZE];
        // SAFETY: test frames are only read here.
        unsafe { self.mem.read_bytes(f, &mut b) }.unwrap();
        b == page_of(fill)
    }

    fn release(&self, f: PhysAddr) {
        self.frames.free_frame(f).unwrap();
    }
}

fn swap_with(slots: u64, cpus: usize) -> (Swap, Arc<MemStore>) {
    let store = Arc::new(MemStore::new(slots));
    let swap = Swap::new(SwapConfig { cpus, readahead: 0 });
    swap.add_area(Box::new(store.clone()), 0).unwrap();
    (swap, store)
}

/// MODEL 1, 2: CPU 0's first allocation leaves the rest of the area in its
/// slot cache. Those slots belong to nobody: every use of them is refused,
/// and once handed out each has one use and goes to one page only.
#[test]
fn slots_waiting_in_a_slot_cache_are_not_allocated() {
    let e = env();
    let (swap, _) = swap_with(4, 2);
    let first = swap.alloc(0).unwrap();
    let waiting = SwapSlot::new(0, first.offset() + 1).unwrap();
    assert_eq!(swap.free(waiting), Err(SwapError::NotAllocated(waiting)));
    assert_eq!(swap.dup(waiting), Err(SwapError::NotAllocated(waiting)));
    assert_eq!(swap.count(waiting), Ok(0));
    let f = e.page(1);
    assert_eq!(swap.cache(waiting, f), Err(SwapError::NotAllocated(waiting)));
    // SAFETY: the test owns the frame and does not write it.
    assert_eq!(unsafe { swap.write(waiting, f, &e.mem) }, Err(SwapError::NotAllocated(waiting)));
    assert_eq!(swap.swap_in(waiting, &e.frames, &e.mem), Err(SwapError::NotAllocated(waiting)));
    assert_eq!(swap.used_slots(), 1);
    swap.check().unwrap();
    swap.free(first).unwrap();

    // Two CPUs swap out three pages between them (CPU 1 takes from CPU 0's
    // cache): three slots, one use each, each reading back its own page.
    let fills = [(0, 10), (1, 11), (1, 12)];
    let slots: Vec<SwapSlot> = fills
        .iter()
        .map(|&(cpu, fill)| {
            let f = e.page(fill);
            // SAFETY: the test owns the frame and does not write it.
            let s = unsafe { swap.swap_out(cpu, f, 1, &e.mem) }.unwrap();
            e.release(f);
            s
        })
        .collect();
    for (s, (_, fill)) in slots.iter().zip(fills) {
        assert_eq!(swap.count(*s), Ok(1), "{s:?}");
        let SwappedIn { frame: g, read: io } = swap.swap_in(*s, &e.frames, &e.mem).unwrap();
        assert!(io && e.holds(g, fill), "{s:?} read back another page");
        assert_eq!(swap.free(*s), Ok(Some(g)));
        e.release(g);
    }
    e.release(f);
    assert_eq!(swap.used_slots(), 0);
    swap.check().unwrap();
}

/// MODEL 1: a double free and a dup of a free slot are `NotAllocated`; a
/// bad slot is `Bad` to every call, `count` included.
#[test]
fn misuse_and_bad_slots_are_refused_by_name() {
    let e = env();
    let (swap, store) = swap_with(1, 1);
    let s = swap.alloc(0).unwrap();
    swap.free(s).unwrap();
    assert_eq!(swap.free(s), Err(SwapError::NotAllocated(s)), "double free");
    assert_eq!(swap.dup(s), Err(SwapError::NotAllocated(s)), "dup of a free slot");
    assert_eq!(swap.count(s), Ok(0));

    let f = e.page(3);
    store.fail_writes(true);
    for _ in 0..BAD_AFTER {
        // SAFETY: the test owns the frame and does not write it.
        assert!(matches!(unsafe { swap.swap_out(0, f, 1, &e.mem) }, Err(SwapError::Store(_))));
    }
    store.fail_writes(false);
    assert_eq!(swap.bad_slots(0), Ok(1));
    assert_eq!(swap.count(s), Err(SwapError::Bad(s)));
    assert_eq!(swap.free(s), Err(SwapError::Bad(s)));
    assert_eq!(swap.dup(s), Err(SwapError::Bad(s)));
    assert_eq!(swap.cache(s, f), Err(SwapError::Bad(s)));
    // SAFETY: as above.
    assert_eq!(unsafe { swap.write(s, f, &e.mem) }, Err(SwapError::Bad(s)));
    assert_eq!(swap.swap_in(s, &e.frames, &e.mem), Err(SwapError::Bad(s)));
    assert_eq!(swap.alloc(0), Err(SwapError::Full));
    e.release(f);
    swap.check().unwrap();
}

/// MODEL 4: one frame is one page: `cache` refuses a frame cached for
/// another slot, and a slot cached already; `free` hands the frame back
/// once. `check` reports a frame under two slots (a caller that freed a
/// cached frame, which a swap-in then got again).
#[test]
fn one_frame_is_never_cached_for_two_slots() {
    let e = env();
    let (swap, _) = swap_with(8, 1);
    let (a, b) = (swap.alloc(0).unwrap(), swap.alloc(0).unwrap());
    let f = e.page(7);
    swap.cache(a, f).unwrap();
    assert_eq!(swap.cache(b, f), Err(SwapError::FrameCached { frame: f, slot: a }));
    assert_eq!(swap.cache(a, f), Err(SwapError::AlreadyCached(a)));
    swap.check().unwrap();
    assert_eq!(swap.free(b), Ok(None));
    assert_eq!(swap.free(a), Ok(Some(f)));
    swap.check().unwrap();
    e.release(f);

    // The caller's bug: a cached frame goes back to the provider, and the
    // next swap-in gets it (the provider hands out its lowest free frame).
    let a = e.page(1);
    // SAFETY: the test owns the frame and does not write it.
    let s = unsafe { swap.swap_out(0, a, 1, &e.mem) }.unwrap();
    swap.cache(s, a).unwrap();
    let b = e.page(2);
    // SAFETY: as above.
    let t = unsafe { swap.swap_out(0, b, 1, &e.mem) }.unwrap();
    e.release(b);
    e.release(a);
    let g = swap.swap_in(t, &e.frames, &e.mem).unwrap().frame;
    assert_eq!(g, a);
    assert_eq!(swap.check(), Err("one frame is cached for two slots"));
}

/// MODEL 1: a store claiming more slots than an area can address is
/// refused before any metadata is allocated.
#[test]
fn absurd_slot_counts_are_refused() {
    struct Claims(u64);
    impl BackingStore for Claims {
        fn slot_count(&self) -> u64 {
            self.0
        }
        fn read_slot(&self, _: u64, _: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
            unreachable!("never added")
        }
        fn write_slot(&self, _: u64, _: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
            unreachable!("never added")
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }
    let swap = Swap::new(SwapConfig::default());
    for slots in [u64::MAX, MAX_SLOTS + 1] {
        assert_eq!(swap.add_area(Box::new(Claims(slots)), 0), Err(SwapError::TooLarge { slots, max: MAX_SLOTS }));
    }
    assert_eq!(swap.capacity(), 0);
}

/// `FileStore::create` with a size no file has: an error, nothing created.
#[cfg(all(unix, feature = "std"))]
#[test]
fn a_file_store_too_large_for_a_file_is_refused() {
    let path = std::env::temp_dir().join(format!("mm-swap-too-large-{}", std::process::id()));
    for slots in [u64::MAX, u64::MAX / SLOT_SIZE as u64] {
        let e = mm_swap::file::FileStore::create(&path, slots).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("do not fit a file"), "{e}");
    }
    // (miri's isolation has no file system to ask.)
    if !cfg!(miri) {
        assert!(!path.exists(), "a file was created");
    }
}

/// A frame provider that refuses for a reason other than memory.
struct Refusing;

// SAFETY: it never hands out a block.
unsafe impl FrameProvider for Refusing {
    fn allocate(&self, _: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        Err(FrameError::InvalidFlags(flags))
    }
    fn free(&self, block: FrameBlock) -> Result<(), FrameError> {
        Err(FrameError::NotOwned(block))
    }
}

/// MODEL 6: only a provider out of frames is `OutOfMemory`; a provider
/// refusing otherwise, or a frame the accessor cannot reach, is said so.
/// The slot keeps its use and page each time.
#[test]
fn only_a_lack_of_frames_is_out_of_memory() {
    let e = env();
    let (swap, _) = swap_with(4, 1);
    let f = e.page(5);
    // SAFETY: the test owns the frame and does not write it.
    let s = unsafe { swap.swap_out(0, f, 1, &e.mem) }.unwrap();
    e.release(f);

    e.frames.fail_nth_allocation(1);
    assert_eq!(swap.swap_in(s, &e.frames, &e.mem), Err(SwapError::OutOfMemory));
    assert_eq!(
        swap.swap_in(s, &Refusing, &e.mem),
        Err(SwapError::Frames(FrameError::InvalidFlags(AllocFlags::MOVABLE)))
    );
    // Frames from memory the accessor does not cover.
    let elsewhere = SimPhysMemory::new(PhysAddr::new(0x800_0000).unwrap(), 4 << 12);
    let far = RefFrameProvider::new(&elsewhere);
    let got = swap.swap_in(s, &far, &e.mem).unwrap_err();
    assert!(matches!(got, SwapError::Unreachable(_)), "{got}");
    assert_eq!(far.allocated_blocks(), 0, "the unreachable frame went back");
    // SAFETY: as above (the page is unmapped: the accessor refuses it).
    let w = unsafe { swap.write(s, PhysAddr::new(0x800_0000).unwrap(), &e.mem) };
    assert_eq!(w, Err(SwapError::Unreachable(PhysAddr::new(0x800_0000).unwrap())));

    assert_eq!(swap.count(s), Ok(1));
    let g = swap.swap_in(s, &e.frames, &e.mem).unwrap().frame;
    assert!(e.holds(g, 5));
    assert_eq!(swap.free(s), Ok(Some(g)));
    e.release(g);
    assert_eq!(swap.stats().read_errors, 3);
    swap.check().unwrap();
}

/// MODEL 7: a failed write through leaves the slot reading its last
/// successful write, never an older page (the one below the pool).
#[cfg(feature = "zswap")]
#[test]
fn a_failed_write_through_keeps_the_last_good_page() {
    use mm_swap::zswap::{Compressed, ZswapConfig};
    use mm_types::testkit::PageSample;

    let z = Compressed::new(MemStore::new(4), ZswapConfig::default());
    let (old, good, new) = (PageSample::Random.page(1), PageSample::Text.page(2), PageSample::Random.page(3));
    z.write_slot(0, &old).unwrap(); // incompressible: below
    z.write_slot(0, &good).unwrap(); // pooled, over the old page below
    assert!(z.is_pooled(0));
    z.below().fail_writes(true);
    assert!(z.write_slot(0, &new).is_err(), "the new page must go through, and fails");
    let mut back = [0u8; SLOT_SIZE];
    z.read_slot(0, &mut back).unwrap();
    assert!(back == good, "a failed write brought back an older page");
    z.check().unwrap();
    // The kept page is the oldest again for write-back, and a later good
    // write through replaces it.
    z.below().fail_writes(false);
    assert_eq!(z.write_back(1), 1);
    z.read_slot(0, &mut back).unwrap();
    assert!(back == good, "written back");
    z.write_slot(0, &new).unwrap();
    assert!(!z.is_pooled(0));
    z.read_slot(0, &mut back).unwrap();
    assert!(back == new);
    z.check().unwrap();
    assert_eq!(z.stats().pages, 0);
}
