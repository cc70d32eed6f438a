//! The per-CPU hook: how a crate learns which CPU it runs on, and a
//! container of per-CPU values built on it.
//!
//! Two contracts are on offer. By default the current CPU is a hint and every
//! per-CPU value sits behind its own lock ([`PerCpu`]'s locked mode: one
//! atomic exchange and one store per access). A kernel that runs each
//! allocator call pinned to its CPU and never re-enters it there (Linux's
//! per-CPU lists rely on the same: preemption or interrupts are off) can say
//! so with [`Pinned`] (or its own [`CpuLocal::PINNING`]); per-CPU values are
//! then used by their own CPU with plain loads and stores, no locked
//! instruction, and other CPUs reach them only by asking (a drain request the
//! owner honours at its next access, or the kernel runs on that CPU).

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

#[cfg(not(loom))]
use crate::sync::atomic::AtomicBool;
use crate::sync::atomic::{AtomicU8, Ordering};
#[cfg(loom)]
use crate::sync::cell::MutPtr;
use crate::sync::cell::UnsafeCell;

/// Tells a crate the current CPU and how many CPUs there are. Supplied by the
/// kernel (from its per-CPU area or the APIC id), by threads on the host, or
/// by a loom model.
///
/// By default ([`Pinning::HINT`]) the answer is a hint for picking a per-CPU
/// structure: the task may migrate right after asking, so crates keep each
/// per-CPU structure correct even when two contexts use the same one (see
/// [`PerCpu`]). A source whose [`PINNING`](CpuLocal::PINNING) is a promise
/// ([`Pinning::promise`]) lets per-CPU structures built for it skip the lock.
pub trait CpuLocal: Sync {
    /// Whether structures built for this source may trust its answer as a
    /// pinned, non-re-entered CPU ([`Pinning::promise`], whose `# Safety`
    /// section is the contract) or only as a hint ([`Pinning::HINT`], the
    /// default).
    const PINNING: Pinning = Pinning::HINT;
    /// The current CPU, below [`cpu_count`](CpuLocal::cpu_count).
    fn current_cpu(&self) -> usize;
    /// Number of CPUs.
    fn cpu_count(&self) -> usize;
}

/// What a [`CpuLocal`] source's answer can be trusted for: a hint (the
/// default) or a promise of pinned, non-re-entered use, which only an
/// `unsafe` call ([`Pinning::promise`]) can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pinning {
    pinned: bool,
}

impl Pinning {
    /// The current CPU is a hint: per-CPU values are locked.
    pub const HINT: Pinning = Pinning { pinned: false };

    /// The promise of pinned use: per-CPU values built with it are used by
    /// their own CPU without a lock.
    ///
    /// # Safety
    ///
    /// For every per-CPU structure built with this value (a [`PerCpu`] made
    /// by [`PerCpu::with_pinning`], or an allocator whose CPU source's
    /// [`CpuLocal::PINNING`] is this value), the kernel guarantees, for each
    /// operation on it (an allocator call, or the life of a
    /// [`PerCpuGuard`] from [`PerCpu::current`]):
    ///
    /// 1. *Pinned*: from the moment the CPU source is asked until the
    ///    operation returns, the caller runs on the CPU the source answered
    ///    and is not migrated (preemption is off, or the task is bound to
    ///    that CPU and nothing else of the same structure runs there).
    /// 2. *Not re-entered*: no other operation on the same structure starts
    ///    on that CPU before this one ends. An interrupt or NMI handler that
    ///    could run during the operation must not use the structure, or the
    ///    kernel disables interrupts around every operation.
    /// 3. *Distinct*: two CPUs running at once never get the same answer,
    ///    and every answer is below the structure's slot count (`N`; a
    ///    larger answer panics rather than share a slot).
    ///
    /// Operations that reach other CPUs' values (draining all caches,
    /// statistics) also come from pinned contexts; they then touch only the
    /// calling CPU's value and ask the others to drain
    /// ([`PerCpu::request_drain_others`]).
    pub const unsafe fn promise() -> Pinning {
        Pinning { pinned: true }
    }

    /// Whether this is the promise of pinned use.
    pub const fn is_pinned(self) -> bool {
        self.pinned
    }
}

/// A CPU source its user promises to use pinned: answers as `C` does, with
/// [`CpuLocal::PINNING`] a promise, so per-CPU structures built for it take
/// no lock on their own CPU.
///
/// ```
/// use mm_types::percpu::{CpuLocal, Pinned, SingleCpu};
/// // SAFETY: this doctest is one thread, with no interrupt handlers, and
/// // the only CPU id is 0.
/// let cpus = unsafe { Pinned::new(SingleCpu) };
/// assert!(<Pinned<SingleCpu> as CpuLocal>::PINNING.is_pinned());
/// assert_eq!(cpus.current_cpu(), 0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Pinned<C> {
    inner: C,
}

impl<C: CpuLocal> Pinned<C> {
    /// Wraps `inner` with the promise of pinned use.
    ///
    /// # Safety
    ///
    /// Every structure that uses this source (or a copy of it) is used as
    /// [`Pinning::promise`]'s `# Safety` section requires, with `inner`'s
    /// answer the CPU the caller runs on.
    pub const unsafe fn new(inner: C) -> Self {
        Pinned { inner }
    }

    /// The wrapped source.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

impl<C: CpuLocal> CpuLocal for Pinned<C> {
    // SAFETY: the only way to a `Pinned` value is `Pinned::new`, whose caller made the promise for
    // every use of this source.
    const PINNING: Pinning = unsafe { Pinning::promise() };
    #[inline]
    fn current_cpu(&self) -> usize {
        self.inner.current_cpu()
    }
    #[inline]
    fn cpu_count(&self) -> usize {
        self.inner.cpu_count()
    }
}

/// A shared reference answers as the value does, so one CPU source can
/// serve several allocators.
impl<T: CpuLocal + ?Sized> CpuLocal for &T {
    const PINNING: Pinning = T::PINNING;
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

/// One CPU's slot: its value, the lock of the locked mode, and the mode
/// word of the pinned mode, alone on its cache line(s).
#[repr(align(64))]
struct Slot<T> {
    /// Locked mode: held while a guard lives. Pinned mode: unused.
    lock: SlotLock,
    /// [`PINNED`] in the pinned mode (0 in the locked mode), plus [`DRAIN`]
    /// while another context asks the owner to drain. Requests are plain
    /// release stores of `PINNED | DRAIN`; the owner reads the word with one
    /// plain acquire load per access (checking the mode and the request at
    /// once) and clears a request with a plain store of `PINNED`: no locked
    /// instruction anywhere.
    mode: AtomicU8,
    value: UnsafeCell<T>,
}

/// [`Slot::mode`]: the container is pinned.
const PINNED: u8 = 1;
/// [`Slot::mode`]: a drain is requested.
const DRAIN: u8 = 2;

/// One value per CPU, for up to `N` CPUs.
///
/// In the *locked* mode ([`PerCpu::new`], or [`PerCpu::with_pinning`] with
/// [`Pinning::HINT`]) each value has its own lock. The lock is what keeps a
/// value consistent when a task migrates between asking for its CPU and using
/// the value, or when another CPU drains it; in a kernel that disables
/// preemption around the access it is never contended, and costs one atomic
/// exchange and one store.
///
/// In the *pinned* mode ([`PerCpu::with_pinning`] with [`Pinning::promise`])
/// the kernel has promised that each CPU's value is used only by that CPU,
/// one operation at a time, so [`current`](PerCpu::current) hands it out
/// with no lock and no locked instruction. Other CPUs' values are then out
/// of reach: [`for_each`](PerCpu::for_each) and [`cpu`](PerCpu::cpu) panic,
/// [`for_each_reachable`](PerCpu::for_each_reachable) visits only the
/// caller's own value, and drain-all becomes a request
/// ([`request_drain_others`](PerCpu::request_drain_others)) that each owner
/// takes at its next access ([`PerCpuGuard::take_drain_request`]) or when the
/// kernel runs a drain on that CPU (from an IPI or a per-CPU work item). A CPU
/// that is offline or parked can be reached with
/// [`cpu_quiescent`](PerCpu::cpu_quiescent).
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
pub struct PerCpu<T, const N: usize> {
    slots: [Slot<T>; N],
    pinned: bool,
}

// SAFETY: a value moves with the container only when it is owned (T: Send).
unsafe impl<T: Send, const N: usize> Send for PerCpu<T, N> {}
// SAFETY: each value is reached by one context at a time: under its slot lock (locked mode), or
// (pinned mode) only by its own CPU, one operation at a time, as `Pinning::promise` requires, or by
// `cpu_quiescent`'s caller while the owner is stopped. So sharing the container hands each value to
// one thread at a time, which needs T: Send only.
unsafe impl<T: Send, const N: usize> Sync for PerCpu<T, N> {}

impl<T, const N: usize> PerCpu<T, N> {
    /// Makes one value per CPU slot with `init(cpu)`, in the locked mode.
    pub fn new(init: impl FnMut(usize) -> T) -> Self {
        PerCpu::with_pinning(Pinning::HINT, init)
    }

    /// Makes one value per CPU slot with `init(cpu)`, in the pinned mode if
    /// `pinning` is the promise (an allocator passes its CPU source's
    /// [`CpuLocal::PINNING`]), else in the locked mode.
    pub fn with_pinning(pinning: Pinning, mut init: impl FnMut(usize) -> T) -> Self {
        PerCpu {
            slots: core::array::from_fn(|i| Slot {
                lock: SlotLock::new(),
                mode: AtomicU8::new(if pinning.is_pinned() { PINNED } else { 0 }),
                value: UnsafeCell::new(init(i)),
            }),
            pinned: pinning.is_pinned(),
        }
    }

    /// Whether the values are used pinned, without locks.
    #[inline]
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The current CPU's value: locked in the locked mode (CPU ids at or
    /// above `N` then share slots modulo `N`, which stays correct, only
    /// slower); handed out with no lock in the pinned mode when `cpus` is a
    /// pinned source too (otherwise locked: still exclusive, only slower).
    ///
    /// # Panics
    ///
    /// With a pinned source, if the CPU id is at or above `N` (sharing a
    /// slot would break the promise), or if the container is in the locked
    /// mode (build it with `PerCpu::with_pinning(C::PINNING, ..)`).
    #[inline]
    pub fn current(&self, cpus: &impl CpuLocal) -> PerCpuGuard<'_, T> {
        let cpu = cpus.current_cpu();
        // With a source that promises nothing (`C::PINNING` is a constant) this folds to the lock.
        // A locked source on a pinned container locks too, which is sound: the container's promise
        // covers every access through `current`, so the slot has no other user anyway.
        if pinned_source(cpus) {
            assert!(cpu < N, "pinned per-CPU access from CPU {cpu}, above the {N} slots");
            let slot = &self.slots[cpu];
            // Acquire: pairs with a requester's release store (`request_drain_others`), so what
            // it did before asking happens before the drain that follows.
            let mode = slot.mode.load(Ordering::Acquire);
            let pending = mode != PINNED && unusual(mode);
            // Under the promise (`Pinning::promise`, made when this container was built pinned),
            // this CPU's context is the only one using the slot until the guard drops.
            PerCpuGuard::new(slot, Held::NONE, pending)
        } else {
            self.lock(cpu % N)
        }
    }

    /// [`current`](Self::current) for a fast path: `None` when the current
    /// CPU's slot is not plainly ready, that is, with a pinned source, when
    /// a drain request is pending (or the container is in the locked mode).
    /// The caller then leaves for an out-of-line path that uses `current`
    /// and [`PerCpuGuard::take_drain_request`]; the fast path itself keeps
    /// to one plain load and one compare. With a locked source this is
    /// always `Some` (the locked guard).
    ///
    /// # Panics
    ///
    /// With a pinned source, if the CPU id is at or above `N`.
    #[inline(always)]
    pub fn current_fast(&self, cpus: &impl CpuLocal) -> Option<PerCpuGuard<'_, T>> {
        let cpu = cpus.current_cpu();
        if pinned_source(cpus) {
            assert!(cpu < N, "pinned per-CPU access from CPU {cpu}, above the {N} slots");
            let slot = &self.slots[cpu];
            // Acquire: as in `current`.
            if slot.mode.load(Ordering::Acquire) != PINNED {
                return None;
            }
            // Under the promise, as in `current`.
            Some(PerCpuGuard::new(slot, Held::NONE, false))
        } else {
            Some(self.lock(cpu % N))
        }
    }

    #[inline]
    fn lock(&self, index: usize) -> PerCpuGuard<'_, T> {
        let slot = &self.slots[index];
        PerCpuGuard::new(slot, slot.lock.lock(), false)
    }

    /// A given CPU's value, locked.
    ///
    /// # Panics
    ///
    /// In the pinned mode: another CPU's value is out of reach (see
    /// [`cpu_quiescent`](PerCpu::cpu_quiescent)).
    pub fn cpu(&self, cpu: usize) -> PerCpuGuard<'_, T> {
        assert!(!self.pinned, "PerCpu::cpu on a pinned PerCpu");
        self.lock(cpu % N)
    }

    /// A given CPU's value, reached from another CPU while its owner is
    /// stopped: locked in the locked mode, direct in the pinned mode (CPU
    /// hot-unplug, or statistics of a stopped machine).
    ///
    /// # Safety
    ///
    /// In the pinned mode, no operation on this container's slot `cpu % N`
    /// runs while the guard lives, nor starts before it drops: the CPU is
    /// offline, parked, or otherwise known idle (in host tests: its thread
    /// was joined). In the locked mode this is safe.
    pub unsafe fn cpu_quiescent(&self, cpu: usize) -> PerCpuGuard<'_, T> {
        if self.pinned {
            let slot = &self.slots[cpu % N];
            let pending = slot.mode.load(Ordering::Acquire) & DRAIN != 0;
            // The caller's promise: the owner is stopped, so this context alone uses the slot.
            PerCpuGuard::new(slot, Held::NONE, pending)
        } else {
            self.lock(cpu % N)
        }
    }

    /// Visits every CPU's value in turn, each under its lock (the drain-all
    /// path of the locked mode).
    ///
    /// # Panics
    ///
    /// In the pinned mode (use
    /// [`for_each_reachable`](PerCpu::for_each_reachable) and
    /// [`request_drain_others`](PerCpu::request_drain_others)).
    pub fn for_each(&self, mut f: impl FnMut(usize, &mut T)) {
        assert!(!self.pinned, "PerCpu::for_each on a pinned PerCpu");
        for i in 0..N {
            f(i, &mut self.lock(i));
        }
    }

    /// Visits every CPU's value through exclusive access to the container
    /// (teardown): no lock and no request needed, in either mode.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(usize, &mut T)) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            // SAFETY: `&mut self` excludes every guard and every other access to the slots.
            f(i, unsafe { slot.value.get_mut().deref() });
        }
    }

    /// Visits every value the caller may reach now: all of them, each under
    /// its lock, in the locked mode; only the calling CPU's own in the
    /// pinned mode. Returns whether every value was visited.
    pub fn for_each_reachable(&self, cpus: &impl CpuLocal, mut f: impl FnMut(usize, &mut T)) -> bool {
        if self.pinned {
            let mut own = self.current(cpus);
            f(cpus.current_cpu(), &mut own);
            false
        } else {
            self.for_each(f);
            true
        }
    }

    /// Pinned mode: asks every CPU but the caller's to drain its value (the
    /// owner sees it through [`PerCpuGuard::take_drain_request`]); returns
    /// how many requests were posted. A plain store per CPU, no locked
    /// instruction. Locked mode: does nothing and returns 0, since
    /// [`for_each`](PerCpu::for_each) reaches every value.
    pub fn request_drain_others(&self, cpus: &impl CpuLocal) -> usize {
        if !self.pinned {
            return 0;
        }
        let me = cpus.current_cpu();
        let mut posted = 0;
        for (_, slot) in self.slots.iter().enumerate().filter(|&(i, _)| i != me) {
            // Release: what the requester did before asking (for example, what made it short of
            // memory) happens before the owner's drain, which acquires the flag.
            slot.mode.store(PINNED | DRAIN, Ordering::Release);
            posted += 1;
        }
        posted
    }

    /// Asks one CPU to drain its value (pinned mode; a no-op in the locked
    /// mode). A plain store.
    pub fn request_drain(&self, cpu: usize) {
        if self.pinned {
            self.slots[cpu % N].mode.store(PINNED | DRAIN, Ordering::Release);
        }
    }

    /// Number of slots, `N`.
    pub const fn slots(&self) -> usize {
        N
    }
}

impl<T, const N: usize> fmt::Debug for PerCpu<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpu").field("slots", &N).field("pinned", &self.pinned).finish_non_exhaustive()
    }
}

/// Access to one CPU's value; see [`PerCpu`]. Locked mode: holds the slot's
/// lock. Pinned mode: holds nothing, and is neither `Send` nor `Sync`, so it
/// stays in the context (and on the CPU) that got it.
pub struct PerCpuGuard<'a, T> {
    slot: &'a Slot<T>,
    /// Under loom, the tracked access to the value (dropped before `held`,
    /// so it ends inside the lock).
    #[cfg(loom)]
    value: MutPtr<T>,
    /// Whether this guard holds the slot lock (locked mode); under loom, the
    /// lock's guard itself, released when dropped.
    #[cfg_attr(loom, allow(dead_code))]
    held: Held<'a>,
    /// A drain request was seen when the guard was made (pinned mode).
    pending: bool,
    _pinned: PhantomData<*mut T>,
}

impl<'a, T> PerCpuGuard<'a, T> {
    #[inline(always)]
    fn new(slot: &'a Slot<T>, held: Held<'a>, pending: bool) -> Self {
        PerCpuGuard {
            slot,
            #[cfg(loom)]
            value: slot.value.get_mut(),
            held,
            pending,
            _pinned: PhantomData,
        }
    }

    /// The value, for `Deref`: the caller is the one context using it.
    ///
    /// # Safety
    ///
    /// The returned reference is the only one to the value while it lives.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn value(&self) -> &mut T {
        #[cfg(not(loom))]
        // SAFETY: forwarded contract.
        return unsafe { &mut *self.slot.value.get() };
        #[cfg(loom)]
        // SAFETY: forwarded contract.
        return unsafe { self.value.deref() };
    }

    /// Whether a drain request was seen when the guard was made (pinned
    /// mode; always false in the locked mode), without taking it: a fast
    /// path can test this, drop the guard and leave the drain to an
    /// out-of-line path that calls [`take_drain_request`](Self::take_drain_request).
    #[inline(always)]
    pub fn drain_pending(&self) -> bool {
        self.pending
    }

    /// Whether another CPU asked this value's owner to drain it (pinned mode,
    /// as seen when the guard was made; always false in the locked mode),
    /// clearing the request. The owner then drains before going on. The
    /// request was read with the guard's one plain load; clearing it is a
    /// plain store: no locked instruction.
    ///
    /// A request posted between that load and the clearing store is folded
    /// into this one: the drain that follows comes after both.
    #[inline(always)]
    pub fn take_drain_request(&mut self) -> bool {
        if self.pending {
            self.pending = false;
            self.slot.mode.store(PINNED, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

impl<T> Deref for PerCpuGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        #[cfg(not(loom))]
        // SAFETY: the guard is the one context using the slot's value while it lives: it holds the
        // slot lock (locked mode), or the pinned promise (or `cpu_quiescent`'s caller) excludes
        // every other user of the slot until it drops. A shared reference only: several may live
        // at once through `&self`, and no `&mut` can be made meanwhile (`deref_mut` takes
        // `&mut self`).
        return unsafe { &*self.slot.value.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom tracks the access through the guard's pointer.
        return unsafe { self.value() };
    }
}

impl<T> DerefMut for PerCpuGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` keeps this the only reference made through the guard.
        unsafe { self.value() }
    }
}

#[cfg(not(loom))]
impl<T> Drop for PerCpuGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.held {
            self.slot.lock.unlock();
        }
    }
}

/// A pinned source met a slot whose mode word is not plain [`PINNED`]:
/// whether a drain is requested (panics on a locked container).
#[cold]
#[inline(never)]
fn unusual(mode: u8) -> bool {
    assert!(mode & PINNED != 0, "a pinned CPU source on a locked PerCpu");
    mode & DRAIN != 0
}

/// Whether `cpus`'s type promises pinned use (a constant per type).
#[inline(always)]
fn pinned_source<C: CpuLocal>(_: &C) -> bool {
    C::PINNING.is_pinned()
}

/// The slot lock of the locked mode: a test-and-test-and-set spin lock
/// (`lock cmpxchg` to take, a plain release store to give back), or loom's
/// mutex under loom, which needs its own lock to explore the schedules.
#[cfg(not(loom))]
struct SlotLock(AtomicBool);

/// What a guard keeps of the slot lock: whether it holds it.
#[cfg(not(loom))]
type Held<'a> = bool;

#[cfg(not(loom))]
impl SlotLock {
    fn new() -> Self {
        SlotLock(AtomicBool::new(false))
    }

    #[inline(always)]
    fn lock(&self) -> Held<'_> {
        while self.0.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while self.0.load(Ordering::Relaxed) {
                crate::sync::spin_loop();
            }
        }
        true
    }

    #[inline(always)]
    fn unlock(&self) {
        // Release: the guard's writes to the value happen before the next holder's reads.
        self.0.store(false, Ordering::Release);
    }
}

trait NoLock {
    const NONE: Self;
}

#[cfg(not(loom))]
impl NoLock for bool {
    const NONE: bool = false;
}

#[cfg(loom)]
struct SlotLock(crate::sync::Mutex<()>);

#[cfg(loom)]
type Held<'a> = Option<crate::sync::MutexGuard<'a, ()>>;

#[cfg(loom)]
impl<'a> NoLock for Held<'a> {
    const NONE: Self = None;
}

#[cfg(loom)]
impl SlotLock {
    fn new() -> Self {
        SlotLock(crate::sync::Mutex::new(()))
    }

    fn lock(&self) -> Held<'_> {
        Some(self.0.lock())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Two shared borrows through one guard at once, locked and pinned (a
    /// `&mut` made for each `deref` would alias the first; miri checks).
    #[test]
    fn shared_borrows_through_one_guard() {
        let locked: PerCpu<u64, 2> = PerCpu::new(|i| i as u64);
        let g = locked.current(&FixedCpu { cpu: 1, count: 2 });
        let (a, b) = (&*g, &*g);
        assert_eq!(*a + *b, 2);
        drop(g);
        // SAFETY: one thread, no interrupt handlers, CPU ids below 2.
        let cpus = unsafe { Pinned::new(FixedCpu { cpu: 1, count: 2 }) };
        let pinned: PerCpu<u64, 2> = PerCpu::with_pinning(<Pinned<FixedCpu> as CpuLocal>::PINNING, |i| i as u64 + 5);
        let g = pinned.current(&cpus);
        let (a, b) = (&*g, &*g);
        assert_eq!(*a + *b, 12);
    }

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
        assert!(!p.is_pinned());
        assert_eq!(p.request_drain_others(&SingleCpu), 0);
        assert!(!p.cpu(1).take_drain_request());
        assert!(p.for_each_reachable(&SingleCpu, |_, _| {}));
    }

    #[test]
    fn pinned_owner_and_requests() {
        // SAFETY: one thread, no interrupt handlers; CPU ids 0 and 1 are each used by this thread
        // only while the other's guards are gone.
        let pin = unsafe { Pinning::promise() };
        let p: PerCpu<u32, 2> = PerCpu::with_pinning(pin, |i| i as u32);
        assert!(p.is_pinned());
        // SAFETY: as above.
        let (cpu0, cpu1) =
            unsafe { (Pinned::new(FixedCpu { cpu: 0, count: 2 }), Pinned::new(FixedCpu { cpu: 1, count: 2 })) };
        *p.current(&cpu0) += 10;
        assert_eq!(p.request_drain_others(&cpu0), 1);
        assert!(!p.current(&cpu0).take_drain_request());
        {
            assert!(p.current_fast(&cpu1).is_none(), "a pending request leaves the fast path");
            let mut g = p.current(&cpu1);
            assert!(g.drain_pending());
            assert!(g.take_drain_request());
            assert!(!g.drain_pending());
            assert!(!g.take_drain_request());
        }
        let mut seen = std::vec::Vec::new();
        assert!(!p.for_each_reachable(&cpu1, |i, v| seen.push((i, *v))));
        assert_eq!(seen, [(1, 1)]);
        p.request_drain(0);
        assert!(p.current(&cpu0).take_drain_request());
        // SAFETY: nothing else uses slot 0 while this guard lives.
        assert_eq!(*unsafe { p.cpu_quiescent(0) }, 10);
        // SAFETY: in the locked mode this is a plain lock.
        assert_eq!(*unsafe { PerCpu::<u8, 1>::new(|_| 3).cpu_quiescent(0) }, 3);
        let mut p = p;
        let mut sum = 0;
        p.for_each_mut(|_, v| sum += *v);
        assert_eq!(sum, 11);
        assert!(std::format!("{p:?}").contains("pinned: true"));
        // SAFETY: this test is one thread with no interrupt handlers, and the only CPU id is 0.
        let wrapped = unsafe { Pinned::new(SingleCpu) };
        assert!(<Pinned<SingleCpu> as CpuLocal>::PINNING.is_pinned());
        assert!(<&Pinned<SingleCpu> as CpuLocal>::PINNING.is_pinned());
        assert!(!<SingleCpu as CpuLocal>::PINNING.is_pinned());
        assert_eq!((wrapped.current_cpu(), wrapped.cpu_count(), wrapped.inner().cpu_count()), (0, 1, 1));
    }

    #[test]
    #[should_panic(expected = "above the 2 slots")]
    fn pinned_cpu_id_past_the_slots_panics() {
        // SAFETY: one thread; the access panics before touching a slot.
        let p: PerCpu<u32, 2> = PerCpu::with_pinning(unsafe { Pinning::promise() }, |_| 0);
        // SAFETY: as above.
        let _ = p.current(&unsafe { Pinned::new(FixedCpu { cpu: 2, count: 3 }) });
    }

    #[test]
    #[should_panic(expected = "for_each on a pinned")]
    fn pinned_for_each_panics() {
        // SAFETY: one thread; the call panics before touching a slot.
        let p: PerCpu<u32, 2> = PerCpu::with_pinning(unsafe { Pinning::promise() }, |_| 0);
        p.for_each(|_, _| {});
    }
}
