//! The public object caches: [`Cache`] for raw objects of one size, and
//! [`TypedCache`] handing out owning [`SlabBox`]es.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use mm_types::{CpuLocal, FrameProvider, PhysMemory};

use crate::cache::{CacheCore, Env};
use crate::config::{CacheConfig, Geometry};
use crate::error::{Corruption, SlabError};
use crate::stats::{CacheStats, CpuSlabStats};

/// A cache of objects of one size and alignment, built from slabs of
/// `2^order` frames taken from any [`FrameProvider`] and reached through any
/// [`PhysMemory`].
///
/// `N` is the number of per-CPU slots (CPU ids wrap around it).
///
/// ```
/// use mm_slab::{Cache, CacheConfig, CacheFlags};
/// use mm_types::percpu::SingleCpu;
/// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
/// use mm_types::PhysAddr;
///
/// let ram = SimPhysMemory::new(PhysAddr::new(0x100_0000)?, 4 << 20);
/// let frames = RefFrameProvider::new(&ram);
/// let config = CacheConfig { flags: CacheFlags::HARDENED_FREELIST | CacheFlags::DEBUG, ..CacheConfig::new("inode", 200) };
/// let cache: Cache<_, _, _> = Cache::new(&frames, ram.clone(), SingleCpu, config)?;
///
/// let a = cache.alloc()?;
/// // SAFETY: `a` is a fresh 200-byte object.
/// unsafe { a.as_ptr().write_bytes(7, 200) };
/// // SAFETY: `a` came from this cache and is not used afterwards.
/// unsafe { cache.free(a)? };
/// // A second free is caught (the debug bitmap knows `a` is free).
/// // SAFETY: the double free is refused; the slab stays mapped.
/// assert!(unsafe { cache.free(a) }.is_err());
/// assert_eq!(cache.stats().active_objects, 0);
/// assert_eq!(cache.validate(|c| panic!("{c}")), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Cache<'a, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize = 8> {
    core: CacheCore<N>,
    env: Env<'a, P, M, C>,
}

impl<'a, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Cache<'a, P, M, C, N> {
    /// Creates an empty cache; slabs are taken on first use.
    pub fn new(frames: &'a P, mem: M, cpus: C, config: CacheConfig) -> Result<Self, SlabError> {
        Ok(Cache { core: CacheCore::new(&config, 0, C::PINNING)?, env: Env { frames, mem, cpus } })
    }

    /// Allocates one object. Its contents are whatever the last user (or the
    /// constructor, or the poison pattern) left.
    #[inline]
    pub fn alloc(&self) -> Result<NonNull<u8>, SlabError> {
        self.core.alloc(&self.env)
    }

    /// Frees an object. Foreign pointers, pointers into the middle of an
    /// object and (with [`CacheFlags::CHECK_FREE`](crate::CacheFlags::CHECK_FREE),
    /// exactly; otherwise when the object was the last one freed) double
    /// frees are reported and change nothing.
    ///
    /// Without `CHECK_FREE`, a free outside the CPU's current slab is
    /// queued (see [`flush_deferred`](Self::flush_deferred)): a repeat of
    /// the CPU's last queued free is reported at once, a double free of the
    /// last object on its slab's freelist by the call that flushes its
    /// batch (an `Err` naming that object; the rest of the batch is freed).
    ///
    /// # Safety
    ///
    /// `ptr` is not used after this call, and the slab-size-aligned block of
    /// memory containing it is readable: true of every object of every slab
    /// cache, and of every direct-map address. (The check reads the slab
    /// header there.)
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<(), SlabError> {
        // SAFETY: forwarded contract.
        unsafe { self.core.free(&self.env, ptr) }
    }

    /// Returns every CPU's slabs to the shared lists and gives **all** empty
    /// slabs back to the frame provider (what a reclaim shrinker calls).
    /// Returns the number of slabs released.
    pub fn shrink(&self) -> Result<usize, SlabError> {
        self.core.shrink(&self.env, true)
    }

    /// Returns every CPU's slabs to the shared lists (before CPU hot-unplug,
    /// or to get exact statistics), keeping up to the configured number of
    /// empty slabs. Returns the number of slabs released.
    ///
    /// With a pinned CPU source ([`CpuLocal::PINNING`]) only the calling
    /// CPU's slabs are in reach: every other CPU is asked to flush, and does
    /// at its next allocation or free from this cache, or when the kernel
    /// runs [`flush_local`](Self::flush_local) there (from an IPI or a
    /// per-CPU work item). The same holds for [`shrink`](Self::shrink).
    pub fn flush_cpus(&self) -> Result<usize, SlabError> {
        self.core.shrink(&self.env, false)
    }

    /// Returns the calling CPU's slabs to the shared lists: what a kernel
    /// with a pinned CPU source runs on each CPU to honour
    /// [`flush_cpus`](Self::flush_cpus) at once.
    pub fn flush_local(&self) -> Result<(), SlabError> {
        self.core.flush_local(&self.env)
    }

    /// Gives the calling CPU's deferred frees to their slabs now. A free of
    /// an object outside the CPU's current slab waits in the CPU slot until
    /// 16 have gathered, which then go to their slabs under one node lock;
    /// until then their slabs count those objects as in use (and cannot be
    /// released). [`flush_cpus`](Self::flush_cpus), [`shrink`](Self::shrink)
    /// and [`flush_local`](Self::flush_local) flush them too. Returns the
    /// first error found among them (a double free found under the lock).
    pub fn flush_deferred(&self) -> Result<(), SlabError> {
        self.core.flush_deferred_local(&self.env)
    }

    /// Returns CPU `cpu`'s slabs to the shared lists from another CPU (CPU
    /// hot-unplug with a pinned CPU source; with a locked one this takes
    /// the slot lock as usual).
    ///
    /// # Safety
    ///
    /// With a pinned CPU source, CPU `cpu` runs no operation on this cache
    /// during the call: it is offline, parked, or known idle.
    pub unsafe fn flush_cpu_quiescent(&self, cpu: usize) -> Result<(), SlabError> {
        // SAFETY: forwarded contract.
        unsafe { self.core.flush_cpu_quiescent(&self.env, cpu) }
    }

    /// Walks every slab and calls `report` for each corruption found (a
    /// broken freelist link, a wrong free count, an overwritten header, and
    /// in debug caches overwritten poison or red zones). Returns how many
    /// were found.
    pub fn validate(&self, mut report: impl FnMut(Corruption)) -> usize {
        self.core.validate(&self.env.cpus, &mut report)
    }

    /// Current statistics.
    pub fn stats(&self) -> CacheStats {
        self.core.stats(&self.env.cpus)
    }

    /// How CPU `cpu`'s slot served this cache's allocations and frees
    /// (hits, refills, kept frees, flushes) since the cache was made; see
    /// [`CpuSlabStats`]. CPU ids wrap around the `N` slots, as they do for
    /// the slots themselves.
    ///
    /// ```
    /// use mm_slab::{Cache, CacheConfig};
    /// use mm_types::percpu::FixedCpu;
    /// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
    /// use mm_types::PhysAddr;
    ///
    /// let ram = SimPhysMemory::new(PhysAddr::new(0x100_0000)?, 1 << 20);
    /// let frames = RefFrameProvider::new(&ram);
    /// // Two CPU slots; all the work runs on CPU 1.
    /// let cpus = FixedCpu { cpu: 1, count: 2 };
    /// let cache: Cache<_, _, _, 2> = Cache::new(&frames, ram.clone(), cpus, CacheConfig::new("obj", 64))?;
    /// let a = cache.alloc()?;
    /// // SAFETY: `a` came from `cache` and is freed once.
    /// unsafe { cache.free(a)? };
    /// assert_eq!((cache.cpu_stats(1).alloc_misses, cache.cpu_stats(1).free_hits), (1, 1));
    /// assert_eq!(cache.cpu_stats(0).allocations(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    ///
    /// With a pinned CPU source, if `cpu` is not the calling CPU (another
    /// CPU's slot is out of reach).
    pub fn cpu_stats(&self, cpu: usize) -> CpuSlabStats {
        self.core.cpu_stats(&self.env.cpus, cpu)
    }

    /// How objects are laid out.
    pub fn geometry(&self) -> Geometry {
        self.core.geo
    }

    /// Releases every slab and drops the cache (Linux's
    /// `kmem_cache_destroy`). With objects still allocated it reports
    /// [`SlabError::CacheBusy`]; the cache is dropped all the same and the
    /// slabs holding those objects are leaked, never freed under their
    /// users.
    pub fn destroy(self) -> Result<(), SlabError> {
        // Exclusive access reaches every CPU's slabs, in either mode.
        let mut this = self;
        let shrunk = this.core.shrink_exclusive(&this.env);
        match this.core.live(&this.env.cpus) {
            0 => shrunk.map(|_| ()),
            live => Err(SlabError::CacheBusy { live }),
        }
    }
}

impl<P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Drop for Cache<'_, P, M, C, N> {
    /// Gives empty slabs back. Slabs that still hold objects are leaked
    /// rather than freed under their users.
    fn drop(&mut self) {
        let _ = self.core.shrink_exclusive(&self.env);
    }
}

impl<P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> fmt::Debug for Cache<'_, P, M, C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("name", &self.core.name).field("geometry", &self.core.geo).finish()
    }
}

/// A cache of `T` values handing out owning boxes.
///
/// ```
/// use mm_slab::TypedCache;
/// use mm_types::percpu::SingleCpu;
/// use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
/// use mm_types::PhysAddr;
///
/// #[derive(Debug, PartialEq)]
/// struct Task { pid: u32, name: [u8; 16] }
///
/// let ram = SimPhysMemory::new(PhysAddr::new(0x100_0000)?, 1 << 20);
/// let frames = RefFrameProvider::new(&ram);
/// let tasks: TypedCache<Task, _, _, _> = TypedCache::new(&frames, ram.clone(), SingleCpu, "task")?;
/// let t = tasks.alloc(Task { pid: 1, name: *b"init\0\0\0\0\0\0\0\0\0\0\0\0" }).map_err(|(e, _)| e)?;
/// assert_eq!(t.pid, 1);
/// drop(t); // back to the cache
/// assert_eq!(tasks.stats().active_objects, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TypedCache<'a, T, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize = 8> {
    cache: Cache<'a, P, M, C, N>,
    /// The cache holds no `T` itself; values live in the boxes.
    _values: PhantomData<fn(T) -> T>,
}

impl<'a, T, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> TypedCache<'a, T, P, M, C, N> {
    /// A cache sized and aligned for `T`, with the default options.
    pub fn new(frames: &'a P, mem: M, cpus: C, name: &'static str) -> Result<Self, SlabError> {
        let config = CacheConfig { align: align_of::<T>(), ..CacheConfig::new(name, size_of::<T>().max(1)) };
        Self::with_config(frames, mem, cpus, config)
    }

    /// A cache with explicit options; size and alignment are taken from `T`.
    pub fn with_config(frames: &'a P, mem: M, cpus: C, config: CacheConfig) -> Result<Self, SlabError> {
        let config = CacheConfig { size: size_of::<T>().max(1), align: align_of::<T>(), ..config };
        Ok(TypedCache { cache: Cache::new(frames, mem, cpus, config)?, _values: PhantomData })
    }

    /// Moves `value` into a new object. On failure the value is handed back.
    pub fn alloc(&self, value: T) -> Result<SlabBox<'_, 'a, T, P, M, C, N>, (SlabError, T)> {
        match self.cache.alloc() {
            Ok(ptr) => {
                let ptr = ptr.cast::<T>();
                // SAFETY: a fresh object of `T`'s size and alignment.
                unsafe { ptr.as_ptr().write(value) };
                Ok(SlabBox { ptr, cache: self })
            }
            Err(e) => Err((e, value)),
        }
    }

    /// The untyped cache underneath (statistics, shrink, validate).
    pub fn cache(&self) -> &Cache<'a, P, M, C, N> {
        &self.cache
    }

    /// Current statistics.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

/// An owning pointer to a `T` in a [`TypedCache`]; dropping it drops the
/// value and frees the object.
pub struct SlabBox<'c, 'a, T, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> {
    ptr: NonNull<T>,
    cache: &'c TypedCache<'a, T, P, M, C, N>,
}

impl<T, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Deref
    for SlabBox<'_, '_, T, P, M, C, N>
{
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns an initialised `T` until dropped.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> DerefMut
    for SlabBox<'_, '_, T, P, M, C, N>
{
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Drop for SlabBox<'_, '_, T, P, M, C, N> {
    fn drop(&mut self) {
        // SAFETY: the box owns the value; it is dropped exactly once here.
        unsafe { self.ptr.as_ptr().drop_in_place() };
        // SAFETY: the object came from this cache and the box is going away.
        let freed = unsafe { self.cache.cache.free(self.ptr.cast()) };
        debug_assert!(freed.is_ok(), "a SlabBox's own object failed to free: {freed:?}");
    }
}

impl<T: fmt::Debug, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> fmt::Debug
    for SlabBox<'_, '_, T, P, M, C, N>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// SAFETY: a SlabBox owns its `T` like a Box does; sending it sends the `T` and a shared reference to
// the cache, which is `Sync` (all its state is behind locks).
unsafe impl<T: Send, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Send
    for SlabBox<'_, '_, T, P, M, C, N>
{
}

// SAFETY: sharing a SlabBox shares only `&T`.
unsafe impl<T: Sync, P: FrameProvider + ?Sized, M: PhysMemory, C: CpuLocal, const N: usize> Sync
    for SlabBox<'_, '_, T, P, M, C, N>
{
}
