//! Order-0 alloc+free pairs from 1 and 2 threads at once, each thread on its
//! own CPU id: mm-buddy shared as it is (its per-CPU caches, locked or
//! pinned) against each peer behind a spin lock, as a kernel would share an
//! allocator whose API takes `&mut self`. One iteration is one pair on every
//! thread, so a design that scales keeps the same time per iteration with 2
//! threads as with 1.
//!
//! `cargo bench -p mm-buddy --bench threads`

mod common;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mm_types::percpu::{CpuLocal, Pinned};
use mm_types::sync::Mutex;
use mm_types::testkit::ThreadCpus;

/// An allocator the threads share: one order-0 frame at a time.
trait Shared: Sync {
    fn alloc(&self) -> usize;
    fn free(&self, frame: usize);
}

impl<C: CpuLocal> Shared for OursWith<C, 2> {
    #[inline]
    fn alloc(&self) -> usize {
        self.alloc_shared()
    }
    #[inline]
    fn free(&self, frame: usize) {
        self.free_shared(frame);
    }
}

/// A peer behind a spin lock, taken once per call as a kernel would.
struct Locked<A>(Mutex<A>);

impl<A: Frames + Send> Shared for Locked<A> {
    #[inline]
    fn alloc(&self) -> usize {
        self.0.lock().alloc(0).unwrap()
    }
    #[inline]
    fn free(&self, frame: usize) {
        self.0.lock().free(frame, 0);
    }
}

/// `iters` pairs on each of `threads` threads (CPU ids 0..threads), each
/// holding one frame throughout (the warm case of the one-thread pair
/// bench), timed from a common start to the last thread's end.
fn run<S: Shared>(s: &S, threads: usize, iters: u64) -> Duration {
    let start = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for cpu in 0..threads {
            let (start, end) = (&start, &end);
            scope.spawn(move || {
                ThreadCpus::set_current(cpu);
                let held = s.alloc();
                start.wait();
                for _ in 0..iters {
                    let f = s.alloc();
                    s.free(std::hint::black_box(f));
                }
                end.wait();
                s.free(held);
            });
        }
        start.wait();
        let t = Instant::now();
        end.wait();
        t.elapsed()
    })
}

fn threads(c: &mut Criterion) {
    let mem = ours_memory();
    let mut g = c.benchmark_group("order0_pair_threads");
    for n in [1, 2] {
        g.throughput(Throughput::Elements(n as u64));
        macro_rules! bench {
            ($name:expr, $make:expr) => {{
                let a = $make;
                g.bench_with_input(BenchmarkId::new($name, n), &n, |b, &n| b.iter_custom(|iters| run(&a, n, iters)));
            }};
        }
        bench!("mm-buddy", OursWith::<ThreadCpus, 2>::with_cpus(&mem, ThreadCpus::new(2)));
        // SAFETY: each benchmark thread sets a CPU id of its own before its first call and makes
        // one call at a time; no signal handler allocates.
        let pinned = unsafe { Pinned::new(ThreadCpus::new(2)) };
        bench!("mm-buddy-pinned", OursWith::<Pinned<ThreadCpus>, 2>::with_cpus(&mem, pinned));
        bench!("buddy_system_allocator+spin", Locked(Mutex::new(Bsa::new())));
        bench!("bitmap-allocator+spin", Locked(Mutex::new(Bitmap::new())));
        bench!("frame-alloc+spin", Locked(Mutex::new(FrameAlloc::new())));
        bench!("free-list+spin", Locked(Mutex::new(FreeListPeer::new())));
    }
    g.finish();
}

criterion_group!(benches, threads);
criterion_main!(benches);
