//! The slow paths: refilling a CPU slab from the node's partial list or
//! a new slab, and frees that land in another CPU's or no CPU's slab.

use core::ptr;
use core::ptr::NonNull;

use mm_types::{CpuLocal, FrameBlock, FrameProvider, Order, PhysAddr, PhysMemory};

use super::{CacheCore, CpuSlab, Env, Node, NO_SLAB};
use crate::config::CacheFlags;
use crate::error::{Corruption, CorruptionKind, SlabError};
use crate::slab;
use crate::slab::{Fill, SlabHeader, SlabState};

impl<const N: usize> CacheCore<N> {
    /// The CPU freelist is empty: take remote frees of the current slab, or
    /// the next CPU partial slab, or a batch from the shared partial list,
    /// or an empty slab, or a new one.
    #[cold]
    #[inline(never)]
    pub(super) fn refill<P, M, C>(&self, env: &Env<'_, P, M, C>, cpu: &mut CpuSlab) -> Result<NonNull<u8>, SlabError>
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
    pub(super) unsafe fn free_slow<P, M, C>(
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
    pub(super) unsafe fn check_object(&self, obj: *mut u8) -> Result<*mut SlabHeader, SlabError> {
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
    pub(super) fn park_empty(&self, node: &mut Node, hdr: *mut SlabHeader) -> *mut SlabHeader {
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
    pub(super) fn release<P, M, C>(&self, env: &Env<'_, P, M, C>, mut hdr: *mut SlabHeader) -> Result<(), SlabError>
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
    pub(super) fn grow<P, M, C>(&self, env: &Env<'_, P, M, C>) -> Result<*mut SlabHeader, SlabError>
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
}
