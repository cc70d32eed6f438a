//! Synchronisation shim: `spin`/`core` types normally, `loom` types under
//! `--cfg loom`.
//!
//! Crates of this workspace write their concurrent code against this module
//! only, so the same code runs in a kernel and under the loom model checker:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom_percpu
//! ```
//!
//! The [`Mutex`] is a spin lock in normal builds (no OS needed) and loom's
//! modelled mutex under loom, behind one API.

#[cfg(loom)]
pub use loom::sync::atomic;

#[cfg(not(loom))]
pub use core::sync::atomic;

/// Interior mutability whose accesses loom tracks: `core::cell::UnsafeCell`
/// normally, `loom::cell::UnsafeCell` under loom (which reports two
/// unsynchronised accesses from different threads as a failure).
pub mod cell {
    #[cfg(loom)]
    pub use loom::cell::{MutPtr, UnsafeCell};

    /// A cell handing out raw mutable access; see the module docs.
    #[cfg(not(loom))]
    #[derive(Debug, Default)]
    pub struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        /// A cell holding `value`.
        pub const fn new(value: T) -> Self {
            UnsafeCell(core::cell::UnsafeCell::new(value))
        }

        /// A pointer to the value, for access the caller synchronises.
        pub fn get_mut(&self) -> MutPtr<T> {
            MutPtr(self.0.get())
        }

        /// The raw pointer to the value (not under loom: use
        /// [`get_mut`](Self::get_mut) where loom should track the access).
        #[inline(always)]
        pub fn get(&self) -> *mut T {
            self.0.get()
        }

        /// Runs `f` with a pointer for reading the value (loom's
        /// `UnsafeCell::with`: under loom, a tracked shared access lasting
        /// as long as `f`, so several readers may overlap but no writer).
        #[inline(always)]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a pointer for writing the value (loom's
        /// `UnsafeCell::with_mut`: under loom, a tracked exclusive access
        /// lasting as long as `f`).
        #[inline(always)]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// A pointer from [`UnsafeCell::get_mut`] (under loom, a tracked one:
    /// the access lasts as long as the pointer lives).
    #[cfg(not(loom))]
    #[derive(Debug)]
    pub struct MutPtr<T>(*mut T);

    #[cfg(not(loom))]
    impl<T> MutPtr<T> {
        /// The value.
        ///
        /// # Safety
        ///
        /// No other reference to the value is used while the returned one
        /// lives (the caller holds whatever excludes other contexts).
        #[allow(clippy::mut_from_ref)]
        pub unsafe fn deref(&self) -> &mut T {
            // SAFETY: the caller excludes every other access (forwarded contract); the pointer comes
            // from a live cell.
            unsafe { &mut *self.0 }
        }
    }
}

/// Hint to the CPU that the caller spins (modelled as a yield under loom).
pub fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// A mutual-exclusion lock: `spin::Mutex` normally, `loom::sync::Mutex`
/// under loom.
#[derive(Debug, Default)]
pub struct Mutex<T> {
    #[cfg(not(loom))]
    inner: spin::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

/// Guard of a locked [`Mutex`].
#[cfg(not(loom))]
pub type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;
/// Guard of a locked [`Mutex`].
#[cfg(loom)]
pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Mutex { inner: spin::Mutex::new(value) }
    }

    /// A new unlocked mutex.
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Mutex { inner: loom::sync::Mutex::new(value) }
    }

    /// Locks, spinning until the lock is free.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        return self.inner.lock();
        #[cfg(loom)]
        return self.inner.lock().unwrap_or_else(|e| e.into_inner());
    }

    /// Locks if the lock is free right now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        #[cfg(not(loom))]
        return self.inner.try_lock();
        #[cfg(loom)]
        return self.inner.try_lock().ok();
    }

    /// Mutable access without locking, through exclusive ownership.
    pub fn get_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        return self.inner.get_mut();
        #[cfg(loom)]
        return self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
    }
}
