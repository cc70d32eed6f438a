//! Object caches: the SLUB-style per-CPU fast path, the node lists behind
//! it, slab growth and hand-back, the debug path, validation and statistics.
//!
//! # Locking (MODEL.md 4)
//!
//! - Each CPU slot ([`CpuSlab`], inside [`PerCpu`]) has its own lock. It
//!   protects the CPU freelist (free objects of the CPU's current slab,
//!   served without touching any shared state), the current slab pointer
//!   and the CPU partial list.
//! - The node lock protects every slab header (its own freelist, its
//!   in-use count, its state and links) and the shared partial, full and
//!   empty lists.
//! - Order: a CPU lock, then the node lock; never the reverse. Frames go
//!   back to the provider with no node lock held.

use core::ptr::{self, NonNull};

use mm_types::percpu::PerCpu;
use mm_types::sync::Mutex;
use mm_types::{AllocFlags, CpuLocal, FrameBlock, FrameProvider, Order, PhysAddr, PhysMemory};

use crate::config::{CacheConfig, CacheFlags, Geometry};
use crate::error::{Corruption, CorruptionKind, SlabError};
use crate::slab::{self, Fill, Keys, SlabHeader, SlabList, SlabState, RED_ACTIVE, RED_INACTIVE};
use crate::stats::CacheStats;

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

/// One CPU's share of a cache.
pub(crate) struct CpuSlab {
    /// First object of the CPU freelist (0 if empty); all of them belong to
    /// `slab`.
    freelist: usize,
    /// Start of the current slab (frozen to this CPU), or [`NO_SLAB`].
    slab: *mut u8,
    /// Slabs frozen to this CPU, linked through `next`.
    partial: *mut SlabHeader,
    partial_len: usize,
}

// SAFETY: the raw pointers name slab memory owned by the cache, not by the thread that stored them;
// the CPU slot's lock serialises every use.
unsafe impl Send for CpuSlab {}

impl CpuSlab {
    const fn new() -> Self {
        CpuSlab { freelist: 0, slab: ptr::without_provenance_mut(NO_SLAB), partial: ptr::null_mut(), partial_len: 0 }
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
}

// SAFETY: as for `CpuSlab`: the headers belong to the cache; the node lock serialises every use.
unsafe impl Send for Node {}

/// The engine of one object cache; [`crate::Cache`] and [`crate::Kmalloc`]
/// wrap it with their environment.
pub(crate) struct CacheCore<const N: usize> {
    /// `!(slab bytes - 1)`: masks an object address to its slab start.
    slab_mask: usize,
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
    /// keys of caches built from one secret differ.
    pub fn new(config: &CacheConfig, salt: u64) -> Result<Self, SlabError> {
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
            cpus: PerCpu::new(|_| CpuSlab::new()),
            node: Mutex::new(Node {
                partial: SlabList::new(),
                full: SlabList::new(),
                empty: SlabList::new(),
                slabs: 0,
                inuse: 0,
                grown: 0,
                released: 0,
            }),
        })
    }

    // ----- fast path -------------------------------------------------------

    /// Allocates one object (MODEL.md 2).
    #[inline]
    pub fn alloc<P, M, C>(&self, env: &Env<'_, P, M, C>) -> Result<NonNull<u8>, SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
        C: CpuLocal,
    {
        if self.debug {
            return self.alloc_locked(env);
        }
        let mut cpu = self.cpus.current(&env.cpus);
        match self.pop_cpu(&mut cpu) {
            Some(result) => result,
            None => self.refill(env, &mut cpu),
        }
    }

    /// Pops the CPU freelist: `None` when it is empty.
    #[inline(always)]
    fn pop_cpu(&self, cpu: &mut CpuSlab) -> Option<Result<NonNull<u8>, SlabError>> {
        let head = cpu.freelist;
        if head == 0 {
            return None;
        }
        let obj = cpu.slab.with_addr(head);
        // SAFETY: `head` is the start of a free object of the CPU's current slab: frees push only
        // object starts of that slab (MODEL.md 3; checked on the fast path when hardened), and a
        // decoded link becomes the head only after the check below. The CPU lock gives us the list.
        let next = unsafe { slab::read_link(obj, self.keys.link) };
        // MODEL.md 6: trust a link only if it is an object start of this
        // slab. A range check alone lets a flipped low bit (a stale
        // `refcount++` on a freed object) through, and the next pop would
        // read, and hand out, the middle of an object.
        if self.hardened && next != 0 && !self.is_object_offset(next.wrapping_sub(cpu.slab.addr())) {
            return Some(Err(self.cut_cpu_freelist(cpu, head, next)));
        }
        cpu.freelist = next;
        // SAFETY: `obj` lies inside a mapped slab, so it is not null.
        Some(Ok(unsafe { NonNull::new_unchecked(obj) }))
    }

    /// A CPU freelist link is not an object start of its slab: drop the
    /// rest of the list (those objects and the one holding the bad link
    /// leak; nothing is handed out twice or off an object start) and
    /// report.
    #[cold]
    fn cut_cpu_freelist(&self, cpu: &mut CpuSlab, object: usize, decoded: usize) -> SlabError {
        cpu.freelist = 0;
        SlabError::Corrupted(Corruption { cache: self.name, object, kind: CorruptionKind::FreePointer { decoded } })
    }

    /// Frees one object (MODEL.md 3).
    ///
    /// # Safety
    ///
    /// `ptr` is not used by the caller after this call, and the
    /// slab-size-aligned block containing it is readable memory (true for
    /// every object of any slab cache and every address of the direct map).
    #[inline]
    pub unsafe fn free<P, M, C>(&self, env: &Env<'_, P, M, C>, ptr: NonNull<u8>) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
        C: CpuLocal,
    {
        if self.debug {
            // SAFETY: forwarded contract.
            return unsafe { self.free_locked(env, ptr.as_ptr()) };
        }
        let obj = ptr.as_ptr();
        let mut cpu = self.cpus.current(&env.cpus);
        if obj.addr() & self.slab_mask == cpu.slab.addr() {
            if self.hardened && !self.is_object_offset(obj.addr() - cpu.slab.addr()) {
                let _node = self.node.lock();
                // SAFETY: forwarded contract; the header is read under the node lock. An offset that
                // is not an object start always yields an error here.
                return unsafe { self.check_object(obj) }.map(|_| ());
            }
            if obj.addr() == cpu.freelist {
                return Err(SlabError::DoubleFree { addr: obj.addr() });
            }
            // SAFETY: `obj` is in the CPU's current slab and the caller gave it up; the CPU lock gives us the list.
            unsafe { slab::write_link(obj, cpu.freelist, self.keys.link) };
            cpu.freelist = obj.addr();
            return Ok(());
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_slow(env, &mut cpu, obj) }
    }

    // ----- slow paths ------------------------------------------------------

    /// The CPU freelist is empty: take remote frees of the current slab, or
    /// the next CPU partial slab, or a batch from the shared partial list,
    /// or an empty slab, or a new one.
    #[cold]
    #[inline(never)]
    fn refill<P, M, C>(&self, env: &Env<'_, P, M, C>, cpu: &mut CpuSlab) -> Result<NonNull<u8>, SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
        C: CpuLocal,
    {
        let mut node = self.node.lock();
        if cpu.slab.addr() != NO_SLAB {
            let hdr = slab::header_of(cpu.slab, &self.geo);
            // SAFETY: the current slab is ours and frozen to this CPU; the node lock protects its header.
            let h = unsafe { &mut *hdr };
            if h.freelist != 0 {
                self.freeze(&mut node, cpu, hdr);
                return self.pop_cpu(cpu).expect("a slab freelist is never empty here");
            }
            h.state = SlabState::Full;
            // SAFETY: a frozen slab is on no list; node lock held.
            unsafe { node.full.push(hdr) };
            cpu.slab = ptr::without_provenance_mut(NO_SLAB);
        }
        let next = if !cpu.partial.is_null() {
            let hdr = cpu.partial;
            // SAFETY: CPU partial slabs are ours; `next` links them.
            cpu.partial = unsafe { (*hdr).next };
            cpu.partial_len -= 1;
            Some(hdr)
        } else if !node.partial.head.is_null() {
            // SAFETY: node lock held for every pop and header write below.
            let first = unsafe { node.partial.pop() }.expect("non-empty");
            while cpu.partial_len + 1 < self.cpu_partial {
                // SAFETY: as above.
                let Some(hdr) = (unsafe { node.partial.pop() }) else { break };
                // SAFETY: as above.
                unsafe {
                    (*hdr).state = SlabState::Frozen;
                    (*hdr).next = cpu.partial;
                }
                cpu.partial = hdr;
                cpu.partial_len += 1;
            }
            Some(first)
        } else {
            // SAFETY: node lock held.
            unsafe { node.empty.pop() }
        };
        let hdr = match next {
            Some(hdr) => hdr,
            None => {
                drop(node);
                let hdr = self.grow(env)?;
                node = self.node.lock();
                node.slabs += 1;
                node.grown += 1;
                hdr
            }
        };
        self.freeze(&mut node, cpu, hdr);
        drop(node);
        self.pop_cpu(cpu).expect("a fresh CPU slab has free objects")
    }

    /// Makes `hdr` the CPU's current slab, moving its freelist to the CPU.
    fn freeze(&self, node: &mut Node, cpu: &mut CpuSlab, hdr: *mut SlabHeader) {
        // SAFETY: `hdr` is a slab of ours taken off every list (or the current slab); the node lock is
        // held by the caller.
        let h = unsafe { &mut *hdr };
        h.state = SlabState::Frozen;
        cpu.slab = hdr.map_addr(|a| slab::slab_base(a, &self.geo)).cast();
        cpu.freelist = core::mem::take(&mut h.freelist);
        node.inuse += self.geo.objects - h.inuse as usize;
        h.inuse = self.geo.objects as u16;
    }

    /// Frees an object that is not in the CPU's current slab: push it on
    /// its slab's own freelist under the node lock and move the slab
    /// between lists.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    #[cold]
    #[inline(never)]
    unsafe fn free_slow<P, M, C>(
        &self,
        env: &Env<'_, P, M, C>,
        cpu: &mut CpuSlab,
        obj: *mut u8,
    ) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
        C: CpuLocal,
    {
        // The header is read under the node lock: other CPUs write headers
        // under it.
        let mut node = self.node.lock();
        // SAFETY: forwarded contract: the slab-aligned block is readable.
        let hdr = unsafe { self.check_object(obj)? };
        let (inuse, state) = {
            // SAFETY: `check_object` proved `hdr` is a slab header of ours; the node lock protects it.
            // The borrow ends before the list operations below touch the header through `hdr`.
            let h = unsafe { &mut *hdr };
            if h.freelist == obj.addr() || h.inuse == 0 {
                return Err(SlabError::DoubleFree { addr: obj.addr() });
            }
            // SAFETY: the caller gave the object up; node lock held.
            unsafe { slab::write_link(obj, h.freelist, self.keys.link) };
            h.freelist = obj.addr();
            h.inuse -= 1;
            (h.inuse, h.state)
        };
        node.inuse -= 1;
        let mut release = ptr::null_mut();
        match state {
            SlabState::Frozen => {}
            SlabState::Full => {
                // SAFETY: a full slab is on the full list; node lock held.
                unsafe { node.full.remove(hdr) };
                if inuse == 0 {
                    release = self.park_empty(&mut node, hdr);
                } else if cpu.partial_len < self.cpu_partial {
                    // SAFETY: as above; the slab is on no list now.
                    unsafe {
                        (*hdr).state = SlabState::Frozen;
                        (*hdr).next = cpu.partial;
                    }
                    cpu.partial = hdr;
                    cpu.partial_len += 1;
                } else {
                    // SAFETY: as above.
                    unsafe {
                        (*hdr).state = SlabState::Partial;
                        node.partial.push(hdr);
                    }
                }
            }
            SlabState::Partial => {
                if inuse == 0 {
                    // SAFETY: as above.
                    unsafe { node.partial.remove(hdr) };
                    release = self.park_empty(&mut node, hdr);
                }
            }
            SlabState::Empty => unreachable!("an empty slab has no object to free"),
        }
        drop(node);
        self.release(env, release)
    }

    /// Checks that `obj` is the start of an object in a slab of this cache
    /// and returns that slab's header.
    ///
    /// # Safety
    ///
    /// The slab-size-aligned block containing `obj` is readable, and the
    /// caller holds the node lock (headers are written under it).
    unsafe fn check_object(&self, obj: *mut u8) -> Result<*mut SlabHeader, SlabError> {
        let hdr = slab::header_of(obj, &self.geo);
        // SAFETY: forwarded contract; the header is inside that block.
        if !unsafe { slab::magic_ok(hdr, self.keys.magic) } {
            return Err(SlabError::ForeignPointer { addr: obj.addr() });
        }
        let offset = obj.addr() - slab::slab_base(obj.addr(), &self.geo);
        if offset >= self.geo.objects_bytes() {
            return Err(SlabError::ForeignPointer { addr: obj.addr() });
        }
        if !self.is_object_offset(offset) {
            return Err(SlabError::Misaligned { addr: obj.addr(), object: obj.addr() - offset % self.geo.stride });
        }
        Ok(hdr)
    }

    /// An empty slab left its list: keep it on the empty list if fewer than
    /// the minimum are kept, else return it for release.
    fn park_empty(&self, node: &mut Node, hdr: *mut SlabHeader) -> *mut SlabHeader {
        if node.empty.len < self.min_empty {
            // SAFETY: `hdr` is on no list; node lock held by the caller.
            unsafe {
                (*hdr).state = SlabState::Empty;
                node.empty.push(hdr);
            }
            ptr::null_mut()
        } else {
            node.slabs -= 1;
            node.released += 1;
            // SAFETY: as above; the chain of slabs to release uses `next`.
            unsafe { (*hdr).next = ptr::null_mut() };
            hdr
        }
    }

    /// Gives a chain of slabs (linked by `next`) back to the frame provider.
    /// Returns the first error, after trying every slab.
    fn release<P, M, C>(&self, env: &Env<'_, P, M, C>, mut hdr: *mut SlabHeader) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        let mut result = Ok(());
        let order = Order::new(self.geo.order).expect("slab orders are small");
        while !hdr.is_null() {
            // SAFETY: the chain holds slabs that left every list and every CPU; nobody else can reach
            // them. Read before the frames go.
            let (next, phys) = unsafe { ((*hdr).next, (*hdr).phys) };
            // SAFETY: as above; clear the magic so that a stale pointer into the old slab is recognised as foreign.
            unsafe { (*hdr).magic = 0 };
            let block = PhysAddr::new(phys).ok().and_then(|a| FrameBlock::from_addr(a, order).ok());
            let freed = match block {
                Some(block) => env.frames.free(block).map_err(SlabError::Frames),
                None => Err(SlabError::Corrupted(Corruption {
                    cache: self.name,
                    object: hdr.addr(),
                    kind: CorruptionKind::Header,
                })),
            };
            if result.is_ok() {
                result = freed;
            }
            hdr = next;
        }
        result
    }

    /// Takes a slab from the frame provider and formats it.
    fn grow<P, M, C>(&self, env: &Env<'_, P, M, C>) -> Result<*mut SlabHeader, SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
    {
        let order = Order::new(self.geo.order).expect("slab orders are small");
        // Until formatted, the block is `owned`: an error return gives it back.
        let owned = env.frames.allocate_owned(order, self.frame_flags).map_err(SlabError::OutOfMemory)?;
        let phys = owned.block().start_address();
        let base = match env.mem.translate(phys, self.geo.slab_bytes()) {
            Ok(p) if p.as_ptr().addr() % self.geo.slab_bytes() == 0 => p.as_ptr(),
            Ok(p) => return Err(SlabError::MappingNotAligned { phys, virt: p.as_ptr().addr() }),
            Err(e) => return Err(SlabError::Unmapped(e)),
        };
        // The formatted slab owns the block from here.
        owned.into_raw();
        let fill = Fill { poison: self.flags.contains(CacheFlags::POISON), ctor: self.ctor };
        // SAFETY: the block was just allocated to us, is mapped at `base` for its whole size, and
        // `base` is aligned to that size.
        Ok(unsafe { slab::format(base, &self.geo, self.keys, fill, phys.as_u64()) })
    }

    // ----- debug path ------------------------------------------------------

    /// Allocation for debug caches: everything under the node lock, with the
    /// poison, red-zone and bitmap checks (MODEL.md 6).
    fn alloc_locked<P, M, C>(&self, env: &Env<'_, P, M, C>) -> Result<NonNull<u8>, SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
    {
        let mut node = self.node.lock();
        let hdr = if !node.partial.head.is_null() {
            node.partial.head
        } else {
            // SAFETY: node lock held.
            let hdr = match unsafe { node.empty.pop() } {
                Some(hdr) => hdr,
                None => {
                    drop(node);
                    let hdr = self.grow(env)?;
                    node = self.node.lock();
                    node.slabs += 1;
                    node.grown += 1;
                    hdr
                }
            };
            // SAFETY: `hdr` is on no list; node lock held.
            unsafe {
                (*hdr).state = SlabState::Partial;
                node.partial.push(hdr);
            }
            hdr
        };
        // SAFETY: a slab of ours on the partial list; node lock held.
        let h = unsafe { &mut *hdr };
        let base: *mut u8 = hdr.map_addr(|a| slab::slab_base(a, &self.geo)).cast();
        let obj = base.with_addr(h.freelist);
        let index = self.index_of(h.freelist - base.addr());
        // SAFETY: `obj` is the head of the slab's freelist (checked when it was linked in) and the
        // node lock gives us that list.
        let next = unsafe { slab::read_link(obj, self.keys.link) };
        let corrupt = |kind| SlabError::Corrupted(Corruption { cache: self.name, object: obj.addr(), kind });
        let result = if next != 0 && self.index_in(base, next).is_none() {
            // Containment: the rest of this freelist cannot be trusted; the
            // slab is treated as full so nothing on it is handed out.
            Err(corrupt(CorruptionKind::FreePointer { decoded: next }))
        } else if let Some((offset, found)) = self.poisoned(obj) {
            Err(corrupt(CorruptionKind::Poison { offset, expected: slab::POISON_FREE, found }))
        } else {
            Ok(())
        };
        let next =
            if matches!(result, Err(SlabError::Corrupted(Corruption { kind: CorruptionKind::FreePointer { .. }, .. })))
            {
                0
            } else {
                next
            };
        // The object leaves the freelist either way: a corrupted object is
        // not handed out, it stays allocated (quarantined).
        h.freelist = next;
        h.inuse += 1;
        node.inuse += 1;
        if self.flags.contains(CacheFlags::CHECK_FREE) {
            // SAFETY: debug slab with a bitmap; node lock held.
            unsafe { slab::bitmap_bit(base, &self.geo, index, Some(true)) };
        }
        if self.geo.red_zone > 0 {
            // SAFETY: the object is ours now; node lock held.
            unsafe { slab::paint_red_zone(obj, &self.geo, RED_ACTIVE) };
        }
        if h.freelist == 0 {
            // SAFETY: on the partial list; node lock held. (`h` is not used after the list operations
            // write the header through `hdr`.)
            unsafe {
                node.partial.remove(hdr);
                (*hdr).state = SlabState::Full;
                node.full.push(hdr);
            }
        }
        result?;
        // SAFETY: inside a mapped slab.
        Ok(unsafe { NonNull::new_unchecked(obj) })
    }

    /// First poisoned byte overwritten in the free object `obj`, if the
    /// cache poisons.
    fn poisoned(&self, obj: *mut u8) -> Option<(usize, u8)> {
        if !self.flags.contains(CacheFlags::POISON) {
            return None;
        }
        // SAFETY: callers pass a free object under the node lock.
        unsafe { slab::check_poison(obj, &self.geo) }
    }

    /// Free for debug caches.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    unsafe fn free_locked<P, M, C>(&self, env: &Env<'_, P, M, C>, obj: *mut u8) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
        C: CpuLocal,
    {
        let mut node = self.node.lock();
        // SAFETY: forwarded contract; the header is read under the node lock.
        let hdr = unsafe { self.check_object(obj)? };
        let base: *mut u8 = hdr.map_addr(|a| slab::slab_base(a, &self.geo)).cast();
        let index = self.index_of(obj.addr() - base.addr());
        // SAFETY: a header of ours; node lock held.
        let h = unsafe { &mut *hdr };
        let allocated = if self.flags.contains(CacheFlags::CHECK_FREE) {
            // SAFETY: debug slab with a bitmap; node lock held.
            unsafe { slab::bitmap_bit(base, &self.geo, index, None) }
        } else {
            h.freelist != obj.addr() && h.inuse > 0
        };
        if !allocated {
            return Err(SlabError::DoubleFree { addr: obj.addr() });
        }
        if self.geo.red_zone > 0 {
            // SAFETY: the object is allocated and being freed by its owner.
            if let Some((offset, found)) = unsafe { slab::check_red_zone(obj, &self.geo, RED_ACTIVE) } {
                return Err(SlabError::Corrupted(Corruption {
                    cache: self.name,
                    object: obj.addr(),
                    kind: CorruptionKind::RedZone { offset, expected: RED_ACTIVE, found },
                }));
            }
            // SAFETY: as above.
            unsafe { slab::paint_red_zone(obj, &self.geo, RED_INACTIVE) };
        }
        if self.flags.contains(CacheFlags::POISON) {
            // SAFETY: as above.
            unsafe { slab::poison(obj, &self.geo) };
        }
        if self.flags.contains(CacheFlags::CHECK_FREE) {
            // SAFETY: as above.
            unsafe { slab::bitmap_bit(base, &self.geo, index, Some(false)) };
        }
        // SAFETY: as above.
        unsafe { slab::write_link(obj, h.freelist, self.keys.link) };
        h.freelist = obj.addr();
        h.inuse -= 1;
        let (inuse, state) = (h.inuse, h.state);
        node.inuse -= 1;
        let mut release = ptr::null_mut();
        // Debug caches keep their slabs on node lists only.
        if state == SlabState::Full {
            // SAFETY: on the full list; node lock held.
            unsafe {
                node.full.remove(hdr);
                (*hdr).state = SlabState::Partial;
                node.partial.push(hdr);
            }
        }
        if inuse == 0 {
            // SAFETY: on the partial list; node lock held.
            unsafe { node.partial.remove(hdr) };
            release = self.park_empty(&mut node, hdr);
        }
        drop(node);
        self.release(env, release)
    }

    /// Index of the object starting at `offset` from a slab start, or
    /// `None` if no object starts there (not a multiple of the stride, or
    /// past the objects area; an `offset` computed with `wrapping_sub` from
    /// an address below the slab is one of those). A multiplication, a
    /// rotation and one comparison: see `stride_inverse`.
    #[inline(always)]
    fn object_index(&self, offset: usize) -> Option<usize> {
        let quotient = (offset as u64).wrapping_mul(self.stride_inverse).rotate_right(self.stride_shift);
        (quotient < self.geo.objects as u64).then_some(quotient as usize)
    }

    /// Whether `offset` from a slab start is the start of an object.
    #[inline(always)]
    fn is_object_offset(&self, offset: usize) -> bool {
        self.object_index(offset).is_some()
    }

    /// Index of the object at `offset` from the slab start.
    fn index_of(&self, offset: usize) -> usize {
        offset / self.geo.stride
    }

    /// Index of the object at address `addr` in the slab at `base`, if
    /// `addr` is an object start there.
    fn index_in(&self, base: *mut u8, addr: usize) -> Option<usize> {
        let offset = addr.wrapping_sub(base.addr());
        self.object_index(offset)
    }

    // ----- flush, shrink, destroy ------------------------------------------

    /// Returns a CPU's current and partial slabs to the node lists (merging
    /// the CPU freelist back into its slab). Empty slabs beyond the kept
    /// minimum are added to the `release` chain.
    fn unfreeze_cpu(&self, node: &mut Node, cpu: &mut CpuSlab, release: &mut *mut SlabHeader) {
        if cpu.slab.addr() != NO_SLAB {
            let hdr = slab::header_of(cpu.slab, &self.geo);
            let freelist = core::mem::take(&mut cpu.freelist);
            self.merge_cpu_freelist(node, cpu.slab, hdr, freelist);
            self.place(node, hdr, release);
            cpu.slab = ptr::without_provenance_mut(NO_SLAB);
        }
        while !cpu.partial.is_null() {
            let hdr = cpu.partial;
            // SAFETY: CPU partial slabs are ours; node lock held.
            cpu.partial = unsafe { (*hdr).next };
            self.place(node, hdr, release);
        }
        cpu.partial_len = 0;
    }

    /// Appends a CPU freelist (objects of `base`'s slab) to the slab's own.
    fn merge_cpu_freelist(&self, node: &mut Node, base: *mut u8, hdr: *mut SlabHeader, freelist: usize) {
        if freelist == 0 {
            return;
        }
        let mut last = freelist;
        let mut count = 1;
        loop {
            // SAFETY: CPU freelist objects are free objects of this slab; the CPU lock and node lock
            // are held by the caller.
            let next = unsafe { slab::read_link(base.with_addr(last), self.keys.link) };
            if next == 0 {
                break;
            }
            if self.index_in(base, next).is_none() || count >= self.geo.objects {
                // A corrupted link: keep what was walked, leak the rest.
                break;
            }
            last = next;
            count += 1;
        }
        // SAFETY: as above; the header is ours.
        let h = unsafe { &mut *hdr };
        // SAFETY: as above.
        unsafe { slab::write_link(base.with_addr(last), h.freelist, self.keys.link) };
        h.freelist = freelist;
        h.inuse -= count as u16;
        node.inuse -= count;
    }

    /// Puts a slab that left its CPU on the list its counts say.
    fn place(&self, node: &mut Node, hdr: *mut SlabHeader, release: &mut *mut SlabHeader) {
        // SAFETY: a slab of ours on no list; node lock held.
        let (inuse, freelist) = unsafe { ((*hdr).inuse, (*hdr).freelist) };
        if inuse == 0 {
            let r = self.park_empty(node, hdr);
            if !r.is_null() {
                // SAFETY: as above; `r` is `hdr`, now off every list.
                unsafe { (*r).next = *release };
                *release = r;
            }
        } else if freelist == 0 {
            // SAFETY: as above.
            unsafe {
                (*hdr).state = SlabState::Full;
                node.full.push(hdr);
            }
        } else {
            // SAFETY: as above.
            unsafe {
                (*hdr).state = SlabState::Partial;
                node.partial.push(hdr);
            }
        }
    }

    /// Returns every CPU's slabs to the node lists; with `all_empty`, also
    /// releases every empty slab (reclaim's shrinker). Returns the number
    /// of slabs given back to the frame provider.
    pub fn shrink<P, M, C>(&self, env: &Env<'_, P, M, C>, all_empty: bool) -> Result<usize, SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        let mut release = ptr::null_mut();
        self.cpus.for_each(|_, cpu| {
            let mut node = self.node.lock();
            self.unfreeze_cpu(&mut node, cpu, &mut release);
        });
        let mut node = self.node.lock();
        if all_empty {
            // SAFETY: node lock held.
            while let Some(hdr) = unsafe { node.empty.pop() } {
                node.slabs -= 1;
                node.released += 1;
                // SAFETY: as above; `hdr` left every list.
                unsafe { (*hdr).next = release };
                release = hdr;
            }
        }
        drop(node);
        let mut count = 0;
        let mut p = release;
        while !p.is_null() {
            count += 1;
            // SAFETY: chain of slabs we own, not yet released.
            p = unsafe { (*p).next };
        }
        self.release(env, release).map(|()| count)
    }

    /// Objects allocated and not freed.
    pub fn live(&self) -> usize {
        self.stats().active_objects
    }

    // ----- validation and statistics ---------------------------------------

    /// Walks every slab and reports each inconsistency (MODEL.md 7).
    pub fn validate(&self, report: &mut dyn FnMut(Corruption)) -> usize {
        let mut found = 0;
        let mut emit = |c: Corruption| {
            found += 1;
            report(c);
        };
        self.cpus.for_each(|_, cpu| {
            let _node = self.node.lock();
            if cpu.slab.addr() != NO_SLAB {
                let hdr = slab::header_of(cpu.slab, &self.geo);
                self.check_slab(hdr, SlabState::Frozen, cpu.freelist, &mut emit);
            }
            let mut p = cpu.partial;
            while !p.is_null() {
                self.check_slab(p, SlabState::Frozen, 0, &mut emit);
                // SAFETY: CPU partial slabs are ours; locks held.
                p = unsafe { (*p).next };
            }
        });
        let node = self.node.lock();
        for (list, state) in
            [(&node.partial, SlabState::Partial), (&node.full, SlabState::Full), (&node.empty, SlabState::Empty)]
        {
            let mut p = list.head;
            let mut n = 0;
            while !p.is_null() && n <= list.len {
                self.check_slab(p, state, 0, &mut emit);
                // SAFETY: node list members are ours; node lock held.
                p = unsafe { (*p).next };
                n += 1;
            }
        }
        found
    }

    /// Checks one slab: header magic and state, every freelist link, the
    /// free count, and (debug caches) poison, red zones and the bitmap.
    fn check_slab(
        &self,
        hdr: *mut SlabHeader,
        state: SlabState,
        cpu_freelist: usize,
        emit: &mut dyn FnMut(Corruption),
    ) {
        let base: *mut u8 = hdr.map_addr(|a| slab::slab_base(a, &self.geo)).cast();
        let corruption = |object: usize, kind| Corruption { cache: self.name, object, kind };
        // SAFETY: slabs on our lists and CPUs are mapped and ours.
        if !unsafe { slab::magic_ok(hdr, self.keys.magic) } || unsafe { (*hdr).state } != state {
            emit(corruption(base.addr(), CorruptionKind::Header));
            return;
        }
        // SAFETY: as above; callers hold the node lock.
        let h = unsafe { &*hdr };
        let bitmap = self.flags.contains(CacheFlags::CHECK_FREE);
        let mut free = 0;
        let mut cpu_free = 0;
        for (head, counter) in [(h.freelist, &mut free), (cpu_freelist, &mut cpu_free)] {
            let mut p = head;
            while p != 0 {
                let Some(index) = self.index_in(base, p) else {
                    emit(corruption(p, CorruptionKind::FreePointer { decoded: p }));
                    break;
                };
                *counter += 1;
                if *counter > self.geo.objects {
                    emit(corruption(p, CorruptionKind::FreeCount { recorded: self.geo.objects, found: *counter }));
                    break;
                }
                let obj = base.with_addr(p);
                if let Some((offset, found)) = self.poisoned(obj) {
                    emit(corruption(p, CorruptionKind::Poison { offset, expected: slab::POISON_FREE, found }));
                }
                if self.geo.red_zone > 0 {
                    // SAFETY: a free object of this slab; locks held.
                    if let Some((offset, found)) = unsafe { slab::check_red_zone(obj, &self.geo, RED_INACTIVE) } {
                        emit(corruption(p, CorruptionKind::RedZone { offset, expected: RED_INACTIVE, found }));
                    }
                }
                // SAFETY: as above.
                if bitmap && unsafe { slab::bitmap_bit(base, &self.geo, index, None) } {
                    emit(corruption(p, CorruptionKind::Bitmap));
                }
                // SAFETY: as above.
                p = unsafe { slab::read_link(obj, self.keys.link) };
            }
        }
        let recorded = self.geo.objects - h.inuse as usize;
        if free != recorded {
            emit(corruption(base.addr(), CorruptionKind::FreeCount { recorded, found: free }));
        }
        if self.geo.red_zone > 0 && bitmap {
            for index in 0..self.geo.objects {
                // SAFETY: as above.
                if unsafe { slab::bitmap_bit(base, &self.geo, index, None) } {
                    // SAFETY: an allocated object's red zone is ours to read under the node lock (its
                    // owner may write the object, never the red zone, unless it overflows: the bug
                    // this check reports).
                    let obj = unsafe { base.add(index * self.geo.stride) };
                    // SAFETY: as above.
                    if let Some((offset, found)) = unsafe { slab::check_red_zone(obj, &self.geo, RED_ACTIVE) } {
                        emit(corruption(obj.addr(), CorruptionKind::RedZone { offset, expected: RED_ACTIVE, found }));
                    }
                }
            }
        }
    }

    /// A snapshot of the cache's counters (like a /proc/slabinfo line).
    pub fn stats(&self) -> CacheStats {
        let mut cpu_free = 0;
        let mut cpu_partial = 0;
        self.cpus.for_each(|_, cpu| {
            let mut p = cpu.freelist;
            let mut n = 0;
            while p != 0 && n < self.geo.objects {
                n += 1;
                // SAFETY: CPU freelist objects are free objects of the CPU slab; the CPU lock is held.
                p = unsafe { slab::read_link(cpu.slab.with_addr(p), self.keys.link) };
                if self.index_in(cpu.slab, p).is_none() {
                    break;
                }
            }
            cpu_free += n;
            cpu_partial += cpu.partial_len;
        });
        let node = self.node.lock();
        CacheStats {
            name: self.name,
            object_size: self.geo.size,
            stride: self.geo.stride,
            objects_per_slab: self.geo.objects,
            order: self.geo.order,
            active_objects: node.inuse.saturating_sub(cpu_free),
            total_objects: node.slabs * self.geo.objects,
            slabs: node.slabs,
            partial_slabs: node.partial.len,
            full_slabs: node.full.len,
            empty_slabs: node.empty.len,
            cpu_slabs: node.slabs - node.partial.len - node.full.len - node.empty.len,
            cpu_partial_slabs: cpu_partial,
            cpu_free_objects: cpu_free,
            slabs_grown: node.grown,
            slabs_released: node.released,
        }
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
                let core = CacheCore::<1>::new(&config, i as u64).unwrap();
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
