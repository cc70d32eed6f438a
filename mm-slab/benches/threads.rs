//! 64-byte alloc+free pairs from 1 and 2 threads at once, each thread on its
//! own CPU id: mm-slab's kmalloc shared as it is (per-CPU slabs, locked or
//! pinned) against each peer behind a spin lock, as a kernel would share a
//! heap whose API takes `&mut self`. One iteration is one pair on every
//! thread, so a design that scales keeps the same time per iteration with 2
//! threads as with 1.
//!
//! A second group hands objects from one CPU to the other, which frees
//! them: every free is remote (MODEL.md 3), the case the CPU's deferred
//! frees serve.
//!
//! `cargo bench -p mm-slab --bench threads`

mod common;

use std::alloc::Layout;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mm_types::percpu::{CpuLocal, Pinned};
use mm_types::sync::Mutex;
use mm_types::testkit::ThreadCpus;

const LAYOUT: Layout = match Layout::from_size_align(64, 8) {
    Ok(l) => l,
    Err(_) => panic!("a valid layout"),
};

/// A heap the threads share.
trait Shared: Sync {
    fn pair(&self);
}

impl<C: CpuLocal + 'static> Shared for OursWith<C> {
    #[inline]
    fn pair(&self) {
        self.pair_shared(LAYOUT);
    }
}

/// A peer behind a spin lock, taken once per call as a kernel would.
struct Locked<H>(Mutex<H>);

impl<H: Heap + Send> Shared for Locked<H> {
    #[inline]
    fn pair(&self) {
        let p = self.0.lock().alloc(LAYOUT);
        self.0.lock().free(std::hint::black_box(p), LAYOUT);
    }
}

/// `iters` pairs on each of `threads` threads (CPU ids 0..threads), timed
/// from a common start to the last thread's end.
fn run<S: Shared>(s: &S, threads: usize, iters: u64) -> Duration {
    let start = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for cpu in 0..threads {
            let (start, end) = (&start, &end);
            scope.spawn(move || {
                ThreadCpus::set_current(cpu);
                s.pair();
                start.wait();
                for _ in 0..iters {
                    s.pair();
                }
                end.wait();
            });
        }
        start.wait();
        let t = Instant::now();
        end.wait();
        t.elapsed()
    })
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair_64B_threads");
    for n in [1, 2] {
        g.throughput(Throughput::Elements(n as u64));
        macro_rules! bench {
            ($name:expr, $make:expr) => {{
                let h = $make;
                g.bench_with_input(BenchmarkId::new($name, n), &n, |b, &n| b.iter_custom(|iters| run(&h, n, iters)));
            }};
        }
        bench!("mm-slab", OursWith::with_cpus(ThreadCpus::new(2)));
        // SAFETY: each benchmark thread sets a CPU id of its own before its first call and makes
        // one call at a time; no signal handler allocates.
        bench!("mm-slab-pinned", OursWith::with_cpus(unsafe { Pinned::new(ThreadCpus::new(2)) }));
        bench!("axallocator-slab+spin", Locked(Mutex::new(AxSlab::new())));
        bench!("talc+spin", Locked(Mutex::new(Talc::new())));
        bench!("linked_list_allocator+spin", Locked(Mutex::new(LinkedList::new())));
    }
    g.finish();
}

/// Objects per hand-over in the remote-free benchmark.
const BATCH: usize = 64;

/// `iters` rounds of: CPU 0 allocates `BATCH` objects and hands them to
/// CPU 1, which frees them (every free is remote: the objects belong to
/// CPU 0's slabs). Both run at once, a bounded queue between them.
fn producer_consumer<C: CpuLocal + 'static>(h: &OursWith<C>, iters: u64) -> Duration {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<usize>>(4);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<usize>>();
    std::thread::scope(|scope| {
        let t = Instant::now();
        scope.spawn(move || {
            ThreadCpus::set_current(1);
            for mut batch in rx {
                for p in batch.drain(..) {
                    // SAFETY: each object of a batch came from `alloc_shared(LAYOUT)` on `h` and is
                    // freed here once.
                    unsafe { h.free_shared(std::ptr::with_exposed_provenance_mut(p), LAYOUT) };
                }
                let _ = back_tx.send(batch);
            }
        });
        ThreadCpus::set_current(0);
        for _ in 0..iters {
            let mut batch = back_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH));
            batch.extend((0..BATCH).map(|_| h.alloc_shared(LAYOUT).expose_provenance()));
            tx.send(batch).unwrap();
        }
        drop(tx);
        t
    })
    .elapsed()
}

fn remote_frees(c: &mut Criterion) {
    let mut g = c.benchmark_group("remote_free_64B");
    g.throughput(Throughput::Elements(BATCH as u64));
    let h = OursWith::with_cpus(ThreadCpus::new(2));
    g.bench_function("mm-slab", |b| b.iter_custom(|iters| producer_consumer(&h, iters)));
    // SAFETY: each thread sets a CPU id of its own before its first call and makes one call at a
    // time; no signal handler allocates.
    let h = OursWith::with_cpus(unsafe { Pinned::new(ThreadCpus::new(2)) });
    g.bench_function("mm-slab-pinned", |b| b.iter_custom(|iters| producer_consumer(&h, iters)));
    g.finish();
}

criterion_group!(benches, threads, remote_frees);
criterion_main!(benches);
