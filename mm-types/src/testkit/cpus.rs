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

#[cfg(test)]
mod tests {
    use super::*;

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
