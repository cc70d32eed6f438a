//! Object caches: the SLUB-style per-CPU fast path, the node lists behind
//! it, slab growth and hand-back, the debug path, validation and statistics.
//!
//! # Locking (MODEL.md 4)
//!
//! - Each CPU slot ([`CpuSlab`], inside [`PerCpu`]) has its own lock. It
//!   protects the CPU freelist (free objects of the CPU's current slab,
//!   served without touching any shared state), the current slab pointer,
//!   the CPU partial list and the CPU's deferred frees (objects of other
//!   slabs, given to their slabs a batch at a time under one node lock).
//! - The node lock protects every slab header (its own freelist, its
//!   in-use count, its state and links) and the shared partial, full and
//!   empty lists.
//! - Order: a CPU lock, then the node lock; never the reverse. Frames go
//!   back to the provider with no node lock held.

use core::ptr::{self, NonNull};

use mm_types::percpu::{PerCpu, Pinning};
use mm_types::sync::Mutex;
use mm_types::AllocFlags;

use crate::config::{CacheConfig, CacheFlags, Geometry};
use crate::error::SlabError;
use crate::slab::{Headers, Keys, SlabList, SlabRef};

mod debug;
mod fast;
mod shrink;
mod slow;
mod stats;

/// Sentinel "no current slab": never equal to a slab start (those are page
/// aligned).
const NO_SLAB: usize = 1;

/// What a cache needs from its surroundings: frames, a way to reach them,
/// and the current CPU.
#[derive(Debug)]
pub(crate) struct Env<'a, P: ?Sized, M, C> {
    pub frames: &'a P,
    pub mem: M,
    pub cpus: C,
}

/// Frees of objects outside the CPU's current slab wait in the CPU slot
/// until this many are pending, then go to their slabs under one node lock
/// (MODEL.md 3). One under loom, so that the models reach the flush of a
/// full batch with two frees.
#[cfg(not(loom))]
pub(crate) const DEFERRED_FREES: usize = 16;
#[cfg(loom)]
pub(crate) const DEFERRED_FREES: usize = 1;

/// One CPU's share of a cache.
///
/// The fields the fast paths touch (freelist, current slab and counters)
/// come last, from the start of a cache line: the CPU slot holds this value
/// first and its lock and mode word right after it (`mm_types::percpu`'s
/// layout), so an allocation or free that hits touches that one line of
/// the slot. The counters take a slot from 192 to 256 bytes (per CPU and
/// cache); the padding before the hot line lies within that.
#[repr(C)]
pub(crate) struct CpuSlab {
    /// Slabs frozen to this CPU, linked through `next`.
    partial: Option<SlabRef>,
    partial_len: usize,
    /// Frees not yet given to their slabs: object starts of live slabs of
    /// this cache (checked when pushed), still counted in their slabs'
    /// `inuse`. The first `deferred_len` entries are meaningful.
    deferred: [*mut u8; DEFERRED_FREES],
    deferred_len: usize,
    /// Puts `freelist` at the start of a cache line.
    _to_line: [u8; HOT_LINE_PAD],
    /// First object of the CPU freelist (0 if empty); all of them belong to
    /// `slab`.
    freelist: usize,
    /// Start of the current slab (frozen to this CPU), or [`NO_SLAB`].
    slab: *mut u8,
    /// How the CPU's allocations and frees went (MODEL.md 9); written only
    /// under the CPU slot, so plain adds.
    counters: CpuCounters,
}

/// Bytes of [`CpuSlab`] before its padding.
const COLD_BYTES: usize =
    size_of::<Option<SlabRef>>() + size_of::<usize>() + DEFERRED_FREES * size_of::<*mut u8>() + size_of::<usize>();
/// Padding that starts [`CpuSlab::freelist`] on a cache line.
const HOT_LINE_PAD: usize = COLD_BYTES.next_multiple_of(64) - COLD_BYTES;
// The hot fields start a line, and the slot's lock and mode word that follow the value (two bytes)
// still fit in it.
static_assertions::const_assert!(core::mem::offset_of!(CpuSlab, freelist) % 64 == 0);
static_assertions::const_assert!(core::mem::offset_of!(CpuSlab, freelist) / 64 == (size_of::<CpuSlab>() + 1) / 64);

// SAFETY: the raw pointers name slab memory owned by the cache, not by the thread that stored them;
// the CPU slot serialises every use (its lock, or the pinned promise).
unsafe impl Send for CpuSlab {}

impl CpuSlab {
    /// The CPU's current slab, if it has one.
    fn current(&self, geo: &crate::config::Geometry) -> Option<SlabRef> {
        // SAFETY: a current slab is frozen to this CPU, so live (released slabs have left every CPU).
        (self.slab.addr() != NO_SLAB).then(|| unsafe { SlabRef::of_slab(self.slab, geo) })
    }

    const fn new() -> Self {
        CpuSlab {
            partial: None,
            partial_len: 0,
            deferred: [ptr::null_mut(); DEFERRED_FREES],
            deferred_len: 0,
            _to_line: [0; HOT_LINE_PAD],
            freelist: 0,
            slab: ptr::without_provenance_mut(NO_SLAB),
            counters: CpuCounters { alloc_hits: 0, free_hits: 0, alloc_misses: 0, free_flushes: 0 },
        }
    }
}

/// One CPU's counters of one cache, kept in its slot (see
/// [`CpuSlabStats`](crate::CpuSlabStats), which they become). They wrap
/// rather than panic.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct CpuCounters {
    /// Allocations served by the CPU freelist (the fast path).
    alloc_hits: u64,
    /// Frees kept in the CPU slot: onto the CPU freelist, or queued among
    /// the deferred frees.
    free_hits: u64,
    /// Allocations served after a refill under the node lock.
    alloc_misses: u64,
    /// Frees that found the deferred queue full and sent it to the slabs.
    free_flushes: u64,
}

impl CpuCounters {
    fn stats(&self) -> crate::CpuSlabStats {
        crate::CpuSlabStats {
            alloc_hits: self.alloc_hits,
            alloc_misses: self.alloc_misses,
            free_hits: self.free_hits,
            free_flushes: self.free_flushes,
        }
    }
}

/// The shared part of a cache, under the node lock.
struct Node {
    partial: SlabList,
    full: SlabList,
    empty: SlabList,
    /// Slabs owned by the cache (on any list or frozen).
    slabs: usize,
    /// Sum of `inuse` over all slabs.
    inuse: usize,
    /// Slabs ever taken from / given back to the frame provider.
    grown: u64,
    released: u64,
    /// The right to touch slab headers (see [`Headers`]).
    headers: Headers,
}

// SAFETY: as for `CpuSlab`: the headers belong to the cache; the node lock serialises every use.
unsafe impl Send for Node {}

/// The engine of one object cache; [`crate::Cache`] and [`crate::Kmalloc`]
/// wrap it with their environment.
pub(crate) struct CacheCore<const N: usize> {
    /// `!(slab bytes - 1)`: masks an object address to its slab start.
    slab_mask: usize,
    /// Offset of the header block from a slab start.
    header_offset: usize,
    pub geo: Geometry,
    pub name: &'static str,
    pub flags: CacheFlags,
    keys: Keys,
    /// Multiplicative inverse (mod 2^64) of the stride's odd factor, and
    /// the stride's power-of-two exponent: for any offset,
    /// `(offset * stride_inverse).rotate_right(stride_shift)` is
    /// `offset / stride` when the stride divides the offset, and above every
    /// possible quotient when it does not (Granlund and Montgomery,
    /// "Division by invariant integers using multiplication", 1994, section
    /// 9). One comparison with the object count then checks both that an
    /// offset is a multiple of the stride and that it lies inside the
    /// objects area, for any 64-bit offset, with no division.
    stride_inverse: u64,
    /// See `stride_inverse`.
    stride_shift: u32,
    debug: bool,
    hardened: bool,
    min_empty: usize,
    cpu_partial: usize,
    frame_flags: AllocFlags,
    ctor: Option<fn(NonNull<u8>)>,
    cpus: PerCpu<CpuSlab, N>,
    node: Mutex<Node>,
}

/// Counts caches created, so that two caches built from the same
/// configuration still get different keys (and refuse each other's
/// objects). A plain core atomic: it is not part of any protocol.
static CACHE_SERIAL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The inverse of the odd number `odd` modulo 2^64, by Newton's iteration:
/// `odd * odd == 1 (mod 8)`, and each step doubles the bits that are right
/// (3, 6, 12, 24, 48, 96).
const fn odd_inverse(odd: u64) -> u64 {
    let mut x = odd;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// splitmix64: spreads a seed into an unrelated-looking key.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<const N: usize> CacheCore<N> {
    /// Checks the configuration and computes the geometry. `salt` makes the
    /// keys of caches built from one secret differ; `pinning` is the CPU
    /// source's [`CpuLocal::PINNING`](mm_types::CpuLocal::PINNING), which
    /// picks the per-CPU slabs' mode.
    pub fn new(config: &CacheConfig, salt: u64, pinning: Pinning) -> Result<Self, SlabError> {
        if config.ctor.is_some() && config.flags.contains(CacheFlags::POISON) {
            return Err(SlabError::InvalidConfig("a constructor cannot be combined with poisoning"));
        }
        if config.frame_flags.contains(AllocFlags::ZERO) {
            return Err(SlabError::InvalidConfig("slab frames are formatted, zeroing them is wasted"));
        }
        config.frame_flags.validate().map_err(|_| SlabError::InvalidConfig("invalid frame flags"))?;
        let geo = Geometry::new(config.size, config.align, config.flags, config.max_order)?;
        let name_hash =
            config.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let serial = CACHE_SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        let base =
            mix(config.secret ^ name_hash ^ salt.rotate_left(17) ^ serial.rotate_left(29) ^ (config.size as u64) << 40);
        let hardened = config.flags.contains(CacheFlags::HARDENED_FREELIST);
        let keys = Keys { link: if hardened { mix(base) as usize } else { 0 }, magic: mix(base ^ 0x5a5a) | 1 };
        Ok(CacheCore {
            slab_mask: !(geo.slab_bytes() - 1),
            header_offset: geo.header_offset(),
            geo,
            name: config.name,
            flags: config.flags,
            keys,
            stride_inverse: odd_inverse(geo.stride as u64 >> geo.stride.trailing_zeros()),
            stride_shift: geo.stride.trailing_zeros(),
            debug: config.flags.is_debug(),
            hardened,
            min_empty: config.min_empty_slabs,
            cpu_partial: config.cpu_partial.max(1),
            frame_flags: config.frame_flags,
            ctor: config.ctor,
            cpus: PerCpu::with_pinning(pinning, |_| CpuSlab::new()),
            node: Mutex::new(Node {
                partial: SlabList::new(),
                full: SlabList::new(),
                empty: SlabList::new(),
                slabs: 0,
                inuse: 0,
                grown: 0,
                released: 0,
                // SAFETY: the cache's one token, in its node lock's data.
                headers: unsafe { Headers::new() },
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_index_agrees_with_division_on_every_offset() {
        // MODEL.md 2 and 6: the one-comparison check is exactly "a multiple
        // of the stride inside the objects area", for every offset a
        // `wrapping_sub` can produce.
        let strides = [8, 24, 56, 64, 72, 96, 100, 128, 192, 200, 520, 600, 1400, 2900, 4032, 8192];
        for (i, &size) in strides.iter().enumerate() {
            for flags in [CacheFlags::empty(), CacheFlags::DEBUG] {
                let config = CacheConfig { flags, max_order: 4, ..CacheConfig::new("index", size) };
                let core = CacheCore::<1>::new(&config, i as u64, Pinning::HINT).unwrap();
                let (stride, objects) = (core.geo.stride, core.geo.objects);
                let naive = |o: usize| (o % stride == 0 && o / stride < objects).then(|| o / stride);
                let edges = (0..64).flat_map(|k| [1usize << k, (1usize << k).wrapping_neg(), usize::MAX >> k]);
                // Every offset natively; under miri (millions of
                // interpreted steps otherwise) each stride multiple and
                // its neighbours, which is where the two can disagree.
                let end = core.geo.slab_bytes() + 2 * stride;
                let (every, near) = if cfg!(miri) { (0, end / stride + 1) } else { (end, 0) };
                let near = (0..near).flat_map(|k| [k * stride, k * stride + 1, (k * stride).wrapping_sub(1)]);
                for offset in (0..every).chain(near).chain(edges) {
                    assert_eq!(core.object_index(offset), naive(offset), "stride {stride}, offset {offset:#x}");
                }
            }
        }
    }
}
