//! CPU ids for host threads.

extern crate std;

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::CpuLocal;

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// Treats host threads as CPUs: each thread gets a fixed index the first time
/// it asks, and its CPU is that index modulo the CPU count. Several threads
/// may share a CPU, which per-CPU structures must tolerate anyway.
#[derive(Clone, Copy, Debug)]
pub struct HostCpus {
    count: usize,
}

impl HostCpus {
    /// `count` simulated CPUs (at least 1).
    pub fn new(count: usize) -> Self {
        HostCpus { count: count.max(1) }
    }
}

impl CpuLocal for HostCpus {
    fn current_cpu(&self) -> usize {
        THREAD_INDEX.with(|i| *i) % self.count
    }
    fn cpu_count(&self) -> usize {
        self.count
    }
}

std::thread_local! {
    static CHOSEN: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// CPU ids that each host thread sets for itself
/// ([`ThreadCpus::set_current`]; 0 until it does): for tests and benchmarks
/// that give every thread a CPU of its own, as a kernel runs one thread per
/// CPU with preemption off, or that switch one thread between CPUs between
/// calls. Unlike [`HostCpus`], two threads never share an id by accident.
///
/// ```
/// use mm_types::percpu::CpuLocal;
/// use mm_types::testkit::ThreadCpus;
///
/// let cpus = ThreadCpus::new(2);
/// assert_eq!(cpus.current_cpu(), 0);
/// std::thread::spawn(move || {
///     ThreadCpus::set_current(1);
///     assert_eq!(cpus.current_cpu(), 1);
/// })
/// .join()
/// .unwrap();
/// assert_eq!(cpus.current_cpu(), 0, "each thread has its own");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ThreadCpus {
    count: usize,
}

impl ThreadCpus {
    /// `count` CPUs (at least 1).
    pub fn new(count: usize) -> Self {
        ThreadCpus { count: count.max(1) }
    }

    /// From now on the calling thread runs on `cpu` (for every
    /// `ThreadCpus`, whatever its count: keep it below the count of the
    /// ones the thread uses).
    pub fn set_current(cpu: usize) {
        CHOSEN.with(|c| c.set(cpu));
    }
}

impl CpuLocal for ThreadCpus {
    /// # Panics
    ///
    /// If the thread set an id at or above the count.
    fn current_cpu(&self) -> usize {
        let cpu = CHOSEN.with(core::cell::Cell::get);
        assert!(cpu < self.count, "this thread set CPU {cpu}, beyond the {} CPUs", self.count);
        cpu
    }
    fn cpu_count(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_ids_are_per_thread() {
        let cpus = ThreadCpus::new(4);
        ThreadCpus::set_current(3);
        assert_eq!(cpus.current_cpu(), 3);
        let other = std::thread::spawn(move || {
            let before = cpus.current_cpu();
            ThreadCpus::set_current(2);
            (before, cpus.current_cpu())
        });
        assert_eq!(other.join().unwrap(), (0, 2));
        assert_eq!(cpus.current_cpu(), 3);
        ThreadCpus::set_current(0);
    }

    #[test]
    #[should_panic(expected = "beyond the 2 CPUs")]
    fn an_id_beyond_the_count_is_a_bug() {
        ThreadCpus::set_current(2);
        ThreadCpus::new(2).current_cpu();
    }

    #[test]
    fn ids_are_stable_per_thread_and_in_range() {
        let cpus = HostCpus::new(3);
        let mine = cpus.current_cpu();
        assert_eq!(mine, cpus.current_cpu());
        let ids: std::vec::Vec<usize> =
            (0..4).map(|_| std::thread::spawn(move || cpus.current_cpu()).join().unwrap()).collect();
        assert!(ids.iter().all(|&i| i < 3));
        assert_eq!(HostCpus::new(0).cpu_count(), 1);
    }
}
