//! The shootdown protocol (`mm_paging::smp`) with host threads as CPUs:
//! each "CPU" polls `handle` in a loop, as its interrupt, and records what
//! it applied in a `RecordingTlb`. Small counts under miri.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use mm_paging::smp::ShootdownState;
use mm_paging::{Flush, FlushBatch, MapFlags, PageTable, RecordingTlb, X86_64};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{Order, PageSize, PhysAddr, VirtAddr};

const BASE: u64 = 0x4000_0000;

/// One-page flush records for pages `0..n` above [`BASE`], as a real unmap
/// makes them (`Flush` has no public constructor).
fn page_flushes(n: u64) -> Vec<Flush> {
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 1 << 20);
    let frames = RefFrameProvider::new(&ram).with_max_order(Order::new(0).unwrap());
    let mut pt = PageTable::new(X86_64::FOUR_LEVEL, ram.clone(), &frames).unwrap();
    (0..n)
        .map(|i| {
            let va = page(i);
            pt.map(va, PhysAddr::new(0x10_0000).unwrap(), PageSize::Size4KiB, MapFlags::KERNEL_DATA).unwrap().ignore();
            pt.unmap_range(va, 0x1000, |_| {}).unwrap()
        })
        .collect()
}

fn page(i: u64) -> VirtAddr {
    VirtAddr::new(BASE + i * 0x1000).unwrap()
}

fn batch_of(flushes: &[Flush]) -> FlushBatch {
    let mut b = FlushBatch::new();
    for f in flushes {
        f.batch(&mut b);
    }
    b
}

/// `n` CPUs polling `handle` until `stop`; each CPU's TLB behind a mutex
/// held while it handles, so the test can look at it once `send` returned.
struct Cpus<const N: usize> {
    state: Arc<ShootdownState<N>>,
    tlbs: Arc<Vec<Mutex<RecordingTlb>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl<const N: usize> Cpus<N> {
    /// Starts a polling thread for each CPU in `polling`.
    fn start(polling: &[usize]) -> Self {
        let state = Arc::new(ShootdownState::<N>::new());
        let tlbs = Arc::new((0..N).map(|_| Mutex::new(RecordingTlb::default())).collect::<Vec<_>>());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = polling
            .iter()
            .map(|&cpu| {
                let (state, tlbs, stop) = (state.clone(), tlbs.clone(), stop.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        state.handle(cpu, &mut *tlbs[cpu].lock().unwrap());
                        thread::yield_now();
                    }
                })
            })
            .collect();
        Cpus { state, tlbs, stop, threads }
    }

    fn tlb(&self, cpu: usize) -> RecordingTlb {
        self.tlbs[cpu].lock().unwrap().clone()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

#[test]
fn targets_apply_the_batch_and_others_nothing() {
    let f = page_flushes(3);
    let cpus = Cpus::<4>::start(&[1, 2, 3]);
    let sent = cpus.state.send(0, 0b1010, &batch_of(&f[..2]), |_| {}, || {});
    assert_eq!(sent, 0b1010);
    // `send` returned: both targets have applied it already.
    for cpu in [1, 3] {
        let t = cpus.tlb(cpu);
        assert_eq!((t.pages.total(), t.full_flushes), (2, 0), "CPU {cpu}");
        assert!(t.pages.contains(page(0)) && t.pages.contains(page(1)), "CPU {cpu}");
    }
    assert_eq!(cpus.tlb(2), RecordingTlb::default(), "not a target");

    // A batch past its threshold arrives as a full flush.
    let mut full = FlushBatch::with_threshold(1);
    f[0].batch(&mut full);
    f[2].batch(&mut full);
    assert!(full.is_full_flush());
    assert_eq!(cpus.state.send(3, 0b0110, &full, |_| {}, || {}), 0b0110);
    for (cpu, flushes) in [(1, 1), (2, 1), (3, 0)] {
        let t = cpus.tlb(cpu);
        assert_eq!(t.full_flushes, flushes, "CPU {cpu}");
        assert!(!t.pages.contains(page(2)), "CPU {cpu}");
    }
    cpus.stop();
    assert_eq!(
        format!("{:?}", ShootdownState::<4>::new()),
        "ShootdownState { cpus: 4, locked: false, pending: 0, .. }"
    );
}

#[test]
fn ipi_is_called_once_per_target_after_publishing() {
    let f = page_flushes(1);
    let state = ShootdownState::<8>::new();
    let mut tlbs: Vec<RecordingTlb> = vec![RecordingTlb::default(); 8];
    let mut called = Vec::new();
    // The "interrupt" is taken at once, on the sender's thread: the request must be in place.
    let sent = state.send(
        2,
        0b1001_0110,
        &batch_of(&f),
        |cpu| {
            called.push(cpu);
            assert!(state.handle(cpu, &mut tlbs[cpu]));
            assert!(!state.handle(cpu, &mut tlbs[cpu]), "applied once");
        },
        // The lock is free, but a weak compare-exchange may fail spuriously (it does under miri).
        || {},
    );
    assert_eq!(sent, 0b1001_0010, "the sender is left out");
    assert_eq!(called, [1, 4, 7]);
    for (cpu, t) in tlbs.iter().enumerate() {
        assert_eq!(t.pages.total(), u64::from(called.contains(&cpu)), "CPU {cpu}");
    }
}

#[test]
fn nothing_to_send_returns_at_once() {
    let f = page_flushes(1);
    let state = ShootdownState::<4>::new();
    let never = |_| panic!("no interrupt to send");
    // No CPU polls: `send` would wait for ever if it waited.
    assert_eq!(state.send(1, 0, &batch_of(&f), never, || {}), 0, "empty mask");
    assert_eq!(state.send(1, 0b10, &batch_of(&f), never, || {}), 0, "only the sender");
    assert_eq!(state.send(1, !0b1111, &batch_of(&f), never, || {}), 0, "CPUs beyond the state's");
    assert_eq!(state.send(1, 0b1111, &FlushBatch::new(), never, || {}), 0, "empty batch");
    assert!(!state.handle(0, &mut RecordingTlb::default()));
    assert!(!state.handle(9, &mut RecordingTlb::default()), "out of range: never a target");
}

#[test]
fn cpus_with_reflects_set_loaded() {
    let state = ShootdownState::<5>::new();
    assert_eq!(state.cpus_with(0), 0b11111, "every CPU starts with id 0");
    assert_eq!(state.cpus_with(7), 0);
    state.set_loaded(1, 7);
    state.set_loaded(4, 7);
    state.set_loaded(2, 9);
    assert_eq!((state.cpus_with(7), state.cpus_with(9), state.cpus_with(0)), (0b10010, 0b00100, 0b01001));
    state.set_loaded(4, 9);
    assert_eq!((state.cpus_with(7), state.cpus_with(9)), (0b00010, 0b10100));
    assert_eq!((state.loaded(4), state.loaded(3)), (9, 0));
    // The full 64 CPUs.
    let big = ShootdownState::<64>::new();
    big.set_loaded(63, 3);
    assert_eq!(big.cpus_with(3), 1 << 63);
    assert_eq!(big.cpus_with(0), !(1 << 63));
}

/// Every CPU is an initiator and a target: while one waits for the lock it
/// serves requests to itself (`serve`), and after its last send it keeps
/// serving until all are done. Each applies every batch of the others,
/// once, and none of its own.
#[test]
fn concurrent_initiators_each_reach_every_other_cpu() {
    const N: usize = 3;
    let rounds: u64 = if cfg!(miri) { 2 } else { 20 };
    let f = page_flushes(N as u64 * rounds);
    let state = Arc::new(ShootdownState::<N>::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..N)
        .map(|me| {
            let (state, finished) = (state.clone(), finished.clone());
            let mine: Vec<Flush> = (0..rounds).map(|r| f[(r * N as u64) as usize + me]).collect();
            thread::spawn(move || {
                let mut tlb = RecordingTlb::default();
                for fl in &mine {
                    let batch = batch_of(std::slice::from_ref(fl));
                    let serve = || {
                        state.handle(me, &mut tlb);
                    };
                    let sent = state.send(me, u64::MAX, &batch, |_| {}, serve);
                    assert_eq!(sent, 0b111 & !(1 << me));
                    state.handle(me, &mut tlb);
                }
                finished.fetch_add(1, Ordering::AcqRel);
                while finished.load(Ordering::Acquire) < N {
                    state.handle(me, &mut tlb);
                    thread::yield_now();
                }
                tlb
            })
        })
        .collect();
    let tlbs: Vec<RecordingTlb> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (me, t) in tlbs.iter().enumerate() {
        assert_eq!(t.pages.total(), (N as u64 - 1) * rounds, "CPU {me} applied each other batch once");
        for i in 0..N as u64 * rounds {
            let theirs = i % N as u64 != me as u64;
            assert_eq!(t.pages.contains(page(i)), theirs, "CPU {me}, page {i}");
        }
    }
}
