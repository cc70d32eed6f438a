//! The per-CPU hook: how a crate learns which CPU it runs on, and a
//! container of per-CPU values built on it.

use core::ops::{Deref, DerefMut};

use crate::sync::{Mutex, MutexGuard};

/// Tells a crate the current CPU and how many CPUs there are. Supplied by the
/// kernel (from its per-CPU area or the APIC id), by threads on the host, or
/// by a loom model.
///
/// The answer is a hint for picking a per-CPU structure: the task may migrate
/// right after asking, so crates keep each per-CPU structure correct even when
/// two contexts use the same one (see [`PerCpu`]).
pub trait CpuLocal: Sync {
    /// The current CPU, below [`cpu_count`](CpuLocal::cpu_count).
    fn current_cpu(&self) -> usize;
    /// Number of CPUs.
    fn cpu_count(&self) -> usize;
}

/// A shared reference answers as the value does, so one CPU source can
/// serve several allocators.
impl<T: CpuLocal + ?Sized> CpuLocal for &T {
    fn current_cpu(&self) -> usize {
        (**self).current_cpu()
    }
    fn cpu_count(&self) -> usize {
        (**self).cpu_count()
    }
}

/// A uniprocessor: always CPU 0 of 1.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleCpu;

impl CpuLocal for SingleCpu {
    fn current_cpu(&self) -> usize {
        0
    }
    fn cpu_count(&self) -> usize {
        1
    }
}

/// Always the same CPU: for tests and models that pin each thread to a CPU.
#[derive(Clone, Copy, Debug)]
pub struct FixedCpu {
    /// The CPU reported as current.
    pub cpu: usize,
    /// The CPU count reported.
    pub count: usize,
}

impl CpuLocal for FixedCpu {
    fn current_cpu(&self) -> usize {
        self.cpu
    }
    fn cpu_count(&self) -> usize {
        self.count
    }
}

/// Padding that keeps each per-CPU value on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct CacheLine<T>(T);

/// One value per CPU, for up to `N` CPUs, each behind its own lock.
///
/// The lock is what keeps a value consistent when a task migrates between
/// asking for its CPU and using the value, or when another CPU drains it; in
/// a kernel that disables preemption around the access it is never
/// contended, and costs one atomic exchange and one store.
///
/// ```
/// use mm_types::percpu::{FixedCpu, PerCpu};
/// let counters: PerCpu<u64, 4> = PerCpu::new(|_| 0);
/// let cpu1 = FixedCpu { cpu: 1, count: 4 };
/// *counters.current(&cpu1) += 5;
/// let mut total = 0;
/// counters.for_each(|_, c| total += *c);
/// assert_eq!(total, 5);
/// ```
#[derive(Debug)]
pub struct PerCpu<T, const N: usize> {
    slots: [CacheLine<Mutex<T>>; N],
}

impl<T, const N: usize> PerCpu<T, N> {
    /// Makes one value per CPU slot with `init(cpu)`.
    pub fn new(mut init: impl FnMut(usize) -> T) -> Self {
        PerCpu { slots: core::array::from_fn(|i| CacheLine(Mutex::new(init(i)))) }
    }

    /// The current CPU's value, locked. CPU ids at or above `N` share slots
    /// (modulo `N`), which stays correct, only slower.
    pub fn current(&self, cpus: &impl CpuLocal) -> PerCpuGuard<'_, T> {
        self.cpu(cpus.current_cpu())
    }

    /// A given CPU's value, locked.
    pub fn cpu(&self, cpu: usize) -> PerCpuGuard<'_, T> {
        PerCpuGuard { guard: self.slots[cpu % N].0.lock() }
    }

    /// Visits every CPU's value in turn, each under its lock (the drain-all
    /// path).
    pub fn for_each(&self, mut f: impl FnMut(usize, &mut T)) {
        for (i, slot) in self.slots.iter().enumerate() {
            f(i, &mut slot.0.lock());
        }
    }

    /// Number of slots, `N`.
    pub const fn slots(&self) -> usize {
        N
    }
}

/// A locked per-CPU value; see [`PerCpu`].
pub struct PerCpuGuard<'a, T> {
    guard: MutexGuard<'a, T>,
}

impl<T> Deref for PerCpuGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for PerCpuGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn slots_wrap_and_drain() {
        let p: PerCpu<u32, 2> = PerCpu::new(|i| i as u32 * 10);
        assert_eq!(*p.cpu(0), 0);
        assert_eq!(*p.cpu(3), 10);
        *p.current(&FixedCpu { cpu: 2, count: 3 }) += 1;
        let mut seen = [0u32; 2];
        p.for_each(|i, v| seen[i] = *v);
        assert_eq!(seen, [1, 10]);
        assert_eq!(p.slots(), 2);
        assert_eq!((SingleCpu.current_cpu(), SingleCpu.cpu_count()), (0, 1));
    }
}
