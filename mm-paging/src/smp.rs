//! TLB shootdown between CPUs: the protocol behind a kernel's
//! [`Shootdown`](crate::Shootdown), with the interrupt left to the kernel,
//! so that it runs (and is model-checked) on the host.
//!
//! # Protocol
//!
//! One request is in flight at a time. A [`ShootdownState`] holds a lock
//! flag, one request slot (a [`FlushBatch`]), a *pending* mask (bit `i`:
//! CPU `i` has not applied the request yet) and, per CPU, the id of the
//! address space it has loaded.
//!
//! - The initiator ([`send`](ShootdownState::send)) takes the lock,
//!   spinning, and serves requests sent to itself meanwhile (the `serve`
//!   argument; on bare metal they arrive as interrupts, NMIs in the
//!   reference kernel). It writes the request, stores the targets into the
//!   pending mask (release), sends each target an interrupt (the `ipi`
//!   argument), waits until the mask is 0 (acquire) and releases the lock.
//!   The next holder writes the slot only after every target of this
//!   request has read it.
//! - Each target's interrupt handler ([`handle`](ShootdownState::handle))
//!   checks its bit (acquire); if it is set, it copies the request,
//!   applies it to its own TLB, then clears the bit (release). Extra or
//!   late interrupts find the bit clear and do nothing, so one handler run
//!   may serve a request whose own interrupt arrives later.
//!
//! # Who is a target
//!
//! For a user address space, the CPUs that may cache its translations:
//! those whose loaded id names it (Linux's `mm_cpumask`).
//! [`set_loaded`](ShootdownState::set_loaded) records a CPU's id, then
//! issues a sequentially consistent fence; the CPU must call it *before*
//! it loads the space's root into CR3 (and must not touch the old space's
//! memory between the two). An initiator changes the page table, then
//! calls [`cpus_with`](ShootdownState::cpus_with), which issues a
//! sequentially consistent fence before it reads the ids. Of the two
//! fences, one comes first in the single order of all such fences: either
//! the initiator's read sees the new id (and the CPU is a target), or the
//! CPU's first walk of the tables, after its fence, sees the change. A
//! CPU that left the space flushed its non-global entries with the CR3
//! load, so skipping it is safe.
//!
//! The fence after the store matters: a store, even a sequentially
//! consistent one, does not keep a later load (the page walk) from being
//! ordered before it in the language's memory model. (On x86-64 the
//! serializing CR3 write orders it too, but the model checker checks the
//! language's rules.)
//!
//! # Deadlock freedom
//!
//! An initiator waits for its targets while holding the lock, and waits
//! for the lock while other initiators wait for it. Both waits end only if
//! every target runs its handler while it waits itself: for a lock or for
//! anything else the lock holder may hold. The reference kernel therefore
//! sends NMIs, taken even with interrupts disabled. A kernel that uses
//! maskable interrupts must keep them enabled wherever a CPU can wait for
//! another CPU that may be shooting down. The handler takes no lock and
//! allocates nothing.
//!
//! `tests/smp.rs` runs the protocol with host threads as CPUs;
//! `tests/loom_shootdown.rs` model-checks it under loom (two initiators
//! and their targets; a CPU switching address spaces against an initiator)
//! and shows that the models catch the caller's steps in the wrong order.

use crate::tlb::{FlushBatch, NoShootdown, TlbFlush};
use mm_types::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use mm_types::sync::cell::UnsafeCell;
use mm_types::sync::spin_loop;

/// Most CPUs a [`ShootdownState`] can serve: the pending mask has one bit
/// per CPU.
pub const MAX_CPUS: usize = 64;

/// The shared state of TLB shootdowns for up to `CPUS` CPUs (at most
/// [`MAX_CPUS`]), numbered `0..CPUS`. One static instance per kernel;
/// every method takes `&self`.
pub struct ShootdownState<const CPUS: usize = MAX_CPUS> {
    /// Held by the one initiator whose request is in flight.
    lock: AtomicBool,
    /// The CPUs (bit = number) that have not applied the request yet.
    pending: AtomicU64,
    /// The request. Written only by the lock holder while `pending` is 0;
    /// read only by a handler whose bit in `pending` is set.
    request: UnsafeCell<FlushBatch>,
    /// The id of the address space each CPU has loaded (0 at start).
    loaded: [AtomicU32; CPUS],
}

// SAFETY: the only field that is not `Sync` is `request`, and its accesses never overlap: the lock
// holder writes it while `pending` is 0, and then publishes it with the release store of
// `pending`; a handler reads it only after an acquire load of `pending` shows its bit, and clears
// the bit (release) after reading; the writer waits (acquire) for `pending` to be 0, and the next
// writer takes the lock (acquire) after this one released it (release). So every read happens
// after the write it reads and before the next write; concurrent reads are fine, `FlushBatch` being
// plain data (`Send` and `Sync`).
unsafe impl<const CPUS: usize> Sync for ShootdownState<CPUS> {}

impl<const CPUS: usize> core::fmt::Debug for ShootdownState<CPUS> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShootdownState")
            .field("cpus", &CPUS)
            .field("locked", &self.lock.load(Ordering::Relaxed))
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<const CPUS: usize> Default for ShootdownState<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize> ShootdownState<CPUS> {
    /// No request in flight, every CPU with id 0 loaded. `CPUS` above
    /// [`MAX_CPUS`] stops the build.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        const { assert!(CPUS <= MAX_CPUS, "a ShootdownState serves at most 64 CPUs") };
        ShootdownState {
            lock: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            request: UnsafeCell::new(FlushBatch::new()),
            loaded: [const { AtomicU32::new(0) }; CPUS],
        }
    }

    /// No request in flight, every CPU with id 0 loaded (loom's atomics
    /// are not `const`).
    #[cfg(loom)]
    pub fn new() -> Self {
        const { assert!(CPUS <= MAX_CPUS, "a ShootdownState serves at most 64 CPUs") };
        ShootdownState {
            lock: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            request: UnsafeCell::new(FlushBatch::new()),
            loaded: core::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// The mask of every CPU this state serves.
    const ALL: u64 = if CPUS >= 64 { u64::MAX } else { (1 << CPUS) - 1 };

    /// Records that CPU `cpu` is about to load address space `space`
    /// (an id of the kernel's choosing; 0 at start): a store, then a
    /// sequentially consistent fence. Call it before loading the space's
    /// root into CR3, and touch the previous space's memory no more after
    /// it (see the module documentation).
    ///
    /// # Panics
    ///
    /// If `cpu` is not below `CPUS`.
    pub fn set_loaded(&self, cpu: usize, space: u32) {
        self.loaded[cpu].store(space, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The id CPU `cpu` last recorded with [`set_loaded`](Self::set_loaded).
    ///
    /// # Panics
    ///
    /// If `cpu` is not below `CPUS`.
    pub fn loaded(&self, cpu: usize) -> u32 {
        self.loaded[cpu].load(Ordering::Relaxed)
    }

    /// The CPUs (bit = number) that have address space `space` loaded,
    /// read after a sequentially consistent fence. Call it after changing
    /// the space's page table: the result then includes every CPU that may
    /// cache the old translations (see the module documentation). It may
    /// include the caller, which [`send`](Self::send) leaves out.
    pub fn cpus_with(&self, space: u32) -> u64 {
        fence(Ordering::SeqCst);
        // Relaxed loads: the fence orders them after the page-table change, and the fence in
        // `set_loaded` pairs with it.
        self.loaded
            .iter()
            .enumerate()
            .filter(|(_, id)| id.load(Ordering::Relaxed) == space)
            .fold(0, |mask, (i, _)| mask | 1 << i)
    }

    /// Makes the CPUs in `targets` (bit = number) apply `batch`, and
    /// returns once every one of them has; the caller is CPU `me`. Returns
    /// the CPUs that applied it: `targets` without `me` and without
    /// numbers from `CPUS` on, or 0 when that leaves none or `batch` is
    /// empty (then nothing was sent and `send` returned at once).
    ///
    /// `ipi(cpu)` must make CPU `cpu` call [`handle`](Self::handle) soon
    /// (send it an interrupt); it is called once per target, after the
    /// request is published. While `send` waits for another initiator to
    /// finish, it calls `serve()` between attempts to take the lock (also
    /// after a spurious failure of a free lock's weak compare-exchange, so
    /// `serve` must not assume the lock is held): on bare metal a no-op
    /// if requests to `me` arrive as interrupts anyway, in a model (loom,
    /// threads) a call of `handle(me, ..)`, since a request to `me` must
    /// be served for the other initiator to finish.
    ///
    /// `send` does not flush `me`'s own TLB: [`FlushBatch::finish`] does
    /// that before it calls the `Shootdown` hook.
    ///
    /// # Panics
    ///
    /// If `me` is not below `CPUS`.
    pub fn send(
        &self,
        me: usize,
        targets: u64,
        batch: &FlushBatch,
        mut ipi: impl FnMut(usize),
        mut serve: impl FnMut(),
    ) -> u64 {
        assert!(me < CPUS, "CPU {me} out of range");
        let targets = targets & Self::ALL & !(1 << me);
        if targets == 0 || batch.is_empty() {
            return 0;
        }
        while self.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            // Another request may name this CPU: its sender waits for us.
            serve();
            spin_loop();
        }
        // SAFETY: the lock is held, and `pending` is 0 (the last holder waited for it before
        // releasing the lock, and only holders set bits): no handler reads the request now.
        self.request.with_mut(|r| unsafe { *r = batch.clone() });
        self.pending.store(targets, Ordering::Release);
        for cpu in (0..CPUS).filter(|&i| targets & (1 << i) != 0) {
            ipi(cpu);
        }
        while self.pending.load(Ordering::Acquire) != 0 {
            spin_loop();
        }
        self.lock.store(false, Ordering::Release);
        targets
    }

    /// CPU `me`'s interrupt handler: if a request is pending for `me`,
    /// applies it to `tlb` (`me`'s own TLB), tells the initiator, and
    /// returns `true`; otherwise returns `false`. Takes no lock and
    /// allocates nothing. A number from `CPUS` on is never a target.
    pub fn handle(&self, me: usize, tlb: &mut impl TlbFlush) -> bool {
        if me >= CPUS {
            return false;
        }
        let bit = 1 << me;
        if self.pending.load(Ordering::Acquire) & bit == 0 {
            return false;
        }
        // SAFETY: this CPU's bit is set (acquire): the initiator wrote the request before it set
        // the bit (release), and writes the slot again only after every bit is clear, ours after
        // this copy.
        let batch = self.request.with(|r| unsafe { (*r).clone() });
        batch.finish(tlb, &NoShootdown);
        self.pending.fetch_and(!bit, Ordering::Release);
        true
    }
}
