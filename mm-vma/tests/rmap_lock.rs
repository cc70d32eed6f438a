//! The reverse map's lock is a leaf (MODEL.md, Concurrency): the frame
//! provider is never called under it. A kernel's provider may talk to
//! reclaim, whose holders ask the reverse map about pages; when a page's
//! last mapping or pin went, the anonymous frame used to be freed with
//! the reverse map's lock held, and such a provider deadlocked on it (the
//! spin lock taken again by the thread that held it, or across CPUs with
//! reclaim's lock in between).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::Duration;

use mm_paging::X86_64;
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, FrameBlock, FrameError, FrameProvider, Order, PageKind, PhysAddr, VirtAddr};
use mm_vma::sim::SimFrames;
use mm_vma::{Access, AddressSpace, Hooks, Layout, MapRequest, MmContext, Protection};

const P: u64 = 4096;
const RW: Protection = Protection::READ.union(Protection::WRITE);

/// How long the operations may take before the test calls them hung (they
/// take milliseconds).
const DEADLINE: Duration = Duration::from_secs(10);

type Mm = MmContext<X86_64, SimPhysMemory, AskingFrames>;

/// What the model of reclaim heard, under its own lock.
#[derive(Default)]
struct Reclaim {
    /// Frames given back while the context was alive.
    freed: Vec<PhysAddr>,
    /// Allocations it was told of.
    allocated: usize,
}

/// The test kit's frames behind a provider that tells reclaim of every
/// allocation and free; reclaim, holding its lock, asks the reverse map
/// (how much it tracks; whether the frame given back is still mapped or
/// tracked, which it must not be).
#[derive(Clone)]
struct AskingFrames {
    inner: SimFrames,
    /// Set once the context exists (it owns a clone of this provider).
    mm: Arc<OnceLock<Weak<Mm>>>,
    reclaim: Arc<Mutex<Reclaim>>,
}

impl AskingFrames {
    /// The context, unless it is not made yet or is being dropped (its
    /// zero page is freed then).
    fn mm(&self) -> Option<Arc<Mm>> {
        self.mm.get().and_then(Weak::upgrade)
    }
}

// SAFETY: every allocation and free is the test kit's provider's, which upholds the contract; the calls into the
// reverse map only read it.
unsafe impl FrameProvider for AskingFrames {
    fn allocate(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        if let Some(mm) = self.mm() {
            let mut reclaim = self.reclaim.lock().unwrap();
            let _ = mm.tracked_frames();
            reclaim.allocated += 1;
        }
        self.inner.allocate(order, flags)
    }

    fn free(&self, block: FrameBlock) -> Result<(), FrameError> {
        if let Some(mm) = self.mm() {
            let frame = block.start_address();
            let mut reclaim = self.reclaim.lock().unwrap();
            assert_eq!(mm.mappings(frame), [], "a frame given back while mapped");
            assert_eq!(mm.kind_of(frame), None, "a frame given back while the reverse map tracks it");
            let _ = mm.tracked_frames();
            reclaim.freed.push(frame);
        }
        self.inner.free(block)
    }
}

fn world() -> (Arc<Mm>, AskingFrames) {
    let ram = SimPhysMemory::new(PhysAddr::new(0x10_0000).unwrap(), 64 * P);
    let frames = AskingFrames {
        inner: Arc::new(RefFrameProvider::new(&ram).with_max_order(Order::ZERO)),
        mm: Arc::new(OnceLock::new()),
        reclaim: Arc::new(Mutex::new(Reclaim::default())),
    };
    let mm = MmContext::new(X86_64::FOUR_LEVEL, ram, frames.clone(), Hooks::default()).unwrap();
    assert!(frames.mm.set(Arc::downgrade(&mm)).is_ok(), "set once");
    (mm, frames)
}

/// Runs `body` on a thread of its own and fails if it has not finished by
/// [`DEADLINE`]: a thread spinning on the reverse map's lock never returns,
/// so waiting for it would hang the test run instead of failing it (the
/// spinning thread is left behind; the test process ends with the run).
/// `what` names the operation for the message.
///
/// Under miri the body runs on the calling thread, with no deadline: miri's
/// clock (isolated from the host's) advances by a fixed step for each basic
/// block it interprets, so a deadline there measures the interpreter's work,
/// not a hang (these bodies took 0.6-1 s of its time in December 2026, a
/// margin that would shrink as they grow or as tests share the clock). The
/// native runs catch the deadlock; miri checks the same paths for undefined
/// behaviour.
fn within_deadline(what: &str, body: impl FnOnce() + Send + 'static) {
    if cfg!(miri) {
        body();
        return;
    }
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || {
        body();
        let _ = done.send(());
    });
    match finished.recv_timeout(DEADLINE) {
        Ok(()) => worker.join().unwrap(),
        // The body panicked (dropping the sender): report its panic.
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body sends before it returns"),
        },
        Err(RecvTimeoutError::Timeout) => panic!(
            "the frame provider was called under the reverse-map lock: {what} did not finish in {DEADLINE:?} \
             (the provider, asking the reverse map from `free`, deadlocked on its lock)"
        ),
    }
}

type Space = AddressSpace<X86_64, SimPhysMemory, AskingFrames>;

/// Maps `pages` anonymous pages and writes each (one frame each); returns
/// the address and the frames.
fn touched(space: &mut Space, pages: u64) -> (VirtAddr, Vec<PhysAddr>) {
    let a = space.mmap(MapRequest::anonymous(pages * P, RW)).unwrap();
    let frames = (0..pages)
        .map(|i| {
            space.write_user(a + i * P, &[i as u8 + 1]).unwrap();
            space.resolve(a + i * P, Access::Read).unwrap()
        })
        .collect();
    (a, frames)
}

fn freed(frames: &AskingFrames, frame: PhysAddr) -> bool {
    frames.reclaim.lock().unwrap().freed.contains(&frame)
}

/// After the last space goes, every frame is back with the provider.
fn all_back(mm: &Mm, frames: &AskingFrames, free_at_start: u64) {
    assert_eq!(mm.tracked_frames(), 0, "reverse map empty");
    assert_eq!(frames.inner.free_frame_count(), free_at_start, "every frame is back");
}

/// munmap of a page's last mapping frees its frame after the reverse map's
/// lock is released: a provider that asks the reverse map from `free`
/// neither deadlocks nor finds the frame still recorded.
#[test]
fn munmap_of_the_last_mapping_frees_outside_the_reverse_map_lock() {
    within_deadline("munmap of a page's last mapping", || {
        let (mm, frames) = world();
        let free_at_start = frames.inner.free_frame_count();
        let mut space = AddressSpace::new(&mm, Layout::X86_64).unwrap();
        let (a, pages) = touched(&mut space, 2);
        assert!(frames.reclaim.lock().unwrap().allocated >= 2, "reclaim heard of the allocations");
        space.munmap(a, 2 * P).unwrap();
        assert!(pages.iter().all(|&f| freed(&frames, f)));
        drop(space);
        all_back(&mm, &frames, free_at_start);
    });
}

/// The unpin that drops the last reference of a page whose mappings are
/// gone (a swap cache letting it go; reclaim done writing it) frees the
/// frame after the reverse map's lock is released.
#[test]
fn unpin_after_the_mappings_went_frees_outside_the_reverse_map_lock() {
    within_deadline("the unpin of a page whose mappings are gone", || {
        let (mm, frames) = world();
        let free_at_start = frames.inner.free_frame_count();
        let mut space = AddressSpace::new(&mm, Layout::X86_64).unwrap();
        let (a, pages) = touched(&mut space, 1);
        mm.pin(pages[0]).unwrap();
        space.munmap(a, P).unwrap();
        assert!(!freed(&frames, pages[0]), "the pin keeps it");
        assert_eq!(mm.kind_of(pages[0]), Some(PageKind::Anon));
        assert!(mm.unpin(pages[0]), "the last reference went");
        assert!(freed(&frames, pages[0]));
        drop(space);
        all_back(&mm, &frames, free_at_start);
    });
}

/// A space torn down (exit) frees its pages after the reverse map's lock
/// is released, each as its last mapping goes.
#[test]
fn a_space_torn_down_frees_outside_the_reverse_map_lock() {
    within_deadline("the teardown of a space", || {
        let (mm, frames) = world();
        let free_at_start = frames.inner.free_frame_count();
        let mut space = AddressSpace::new(&mm, Layout::X86_64).unwrap();
        let (_, pages) = touched(&mut space, 3);
        drop(space);
        assert!(pages.iter().all(|&f| freed(&frames, f)));
        all_back(&mm, &frames, free_at_start);
    });
}
