//! The slow paths: refilling a CPU slab from the node's partial list or
//! a new slab, and frees that land in another CPU's or no CPU's slab.

use core::ptr;
use core::ptr::NonNull;

use mm_types::{CpuLocal, FrameBlock, FrameProvider, Order, PhysAddr, PhysMemory};

use super::{CacheCore, CpuSlab, Env, Node, NO_SLAB};
use crate::config::CacheFlags;
use crate::error::{Corruption, CorruptionKind, SlabError};
use crate::slab;
use crate::slab::{Fill, Headers, SlabRef, SlabState};

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
        let mut guard = self.node.lock();
        let node = &mut *guard;
        if let Some(current) = cpu.current(&self.geo) {
            let h = current.get(&mut node.headers);
            if h.freelist != 0 {
                self.freeze(node, cpu, current);
                return self.pop_cpu(cpu).expect("a slab freelist is never empty here");
            }
            h.state = SlabState::Full;
            node.full.push(current, &mut node.headers);
            cpu.slab = ptr::without_provenance_mut(NO_SLAB);
        }
        let next = if let Some(slab) = cpu.partial {
            cpu.partial = slab.get(&mut node.headers).next.take();
            cpu.partial_len -= 1;
            Some(slab)
        } else if let Some(first) = node.partial.pop(&mut node.headers) {
            while cpu.partial_len + 1 < self.cpu_partial {
                let Some(slab) = node.partial.pop(&mut node.headers) else { break };
                let h = slab.get(&mut node.headers);
                h.state = SlabState::Frozen;
                h.next = cpu.partial;
                cpu.partial = Some(slab);
                cpu.partial_len += 1;
            }
            Some(first)
        } else {
            node.empty.pop(&mut node.headers)
        };
        match next {
            Some(slab) => {
                self.freeze(node, cpu, slab);
                drop(guard);
            }
            None => {
                drop(guard);
                let slab = self.grow(env)?;
                let mut node = self.node.lock();
                node.slabs += 1;
                node.grown += 1;
                self.freeze(&mut node, cpu, slab);
            }
        }
        self.pop_cpu(cpu).expect("a fresh CPU slab has free objects")
    }

    /// Makes `slab` the CPU's current slab, moving its freelist to the CPU.
    /// The slab is on no list (or is the current slab already).
    fn freeze(&self, node: &mut Node, cpu: &mut CpuSlab, slab: SlabRef) {
        let h = slab.get(&mut node.headers);
        h.state = SlabState::Frozen;
        cpu.slab = slab.base(&self.geo);
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
        let mut guard = self.node.lock();
        let node = &mut *guard;
        // SAFETY: forwarded contract: the slab-aligned block is readable.
        let slab = unsafe { self.check_object(obj, &node.headers)? };
        let h = slab.get(&mut node.headers);
        if h.freelist == obj.addr() || h.inuse == 0 {
            return Err(SlabError::DoubleFree { addr: obj.addr() });
        }
        // SAFETY: the caller gave the object up, and it is an object start of this slab
        // (`check_object`); the node lock gives us the slab's freelist.
        unsafe { slab::write_link(obj, h.freelist, self.keys.link) };
        h.freelist = obj.addr();
        h.inuse -= 1;
        let (inuse, state) = (h.inuse, h.state);
        node.inuse -= 1;
        let mut release = None;
        match state {
            SlabState::Frozen => {}
            SlabState::Full => {
                node.full.remove(slab, &mut node.headers);
                if inuse == 0 {
                    release = self.park_empty(node, slab);
                } else if cpu.partial_len < self.cpu_partial {
                    let h = slab.get(&mut node.headers);
                    h.state = SlabState::Frozen;
                    h.next = cpu.partial;
                    cpu.partial = Some(slab);
                    cpu.partial_len += 1;
                } else {
                    slab.get(&mut node.headers).state = SlabState::Partial;
                    node.partial.push(slab, &mut node.headers);
                }
            }
            SlabState::Partial => {
                if inuse == 0 {
                    node.partial.remove(slab, &mut node.headers);
                    release = self.park_empty(node, slab);
                }
            }
            SlabState::Empty => unreachable!("an empty slab has no object to free"),
        }
        drop(guard);
        match release {
            None => Ok(()),
            // SAFETY: `park_empty` returns only a slab it took off every list, and the slab was no
            // CPU's (a frozen slab is never parked).
            Some(_) => unsafe { self.release(env, release) },
        }
    }

    /// Checks that `obj` is the start of an object in a slab of this cache
    /// and returns that slab.
    ///
    /// # Safety
    ///
    /// The slab-size-aligned block containing `obj` is readable; `headers`
    /// is this cache's token (the node lock is held: headers are written
    /// under it).
    pub(super) unsafe fn check_object(&self, obj: *mut u8, _headers: &Headers) -> Result<SlabRef, SlabError> {
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
        // SAFETY: the header carries this cache's magic for its own address: a slab of ours that is
        // live (`release` clears the magic before the frames go back).
        Ok(unsafe { SlabRef::from_raw(hdr) })
    }

    /// An empty slab left its list: keep it on the empty list if fewer than
    /// the minimum are kept, else return it for release.
    pub(super) fn park_empty(&self, node: &mut Node, slab: SlabRef) -> Option<SlabRef> {
        if node.empty.len < self.min_empty {
            slab.get(&mut node.headers).state = SlabState::Empty;
            node.empty.push(slab, &mut node.headers);
            None
        } else {
            node.slabs -= 1;
            node.released += 1;
            // The chain of slabs to release uses `next`.
            slab.get(&mut node.headers).next = None;
            Some(slab)
        }
    }

    /// Gives a chain of slabs (linked by `next`) back to the frame provider.
    /// Returns the first error, after trying every slab.
    ///
    /// # Safety
    ///
    /// Every slab of the chain left every list and every CPU: nothing but
    /// the chain names it, and no handle to it is used after this call.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn release<P, M, C>(
        &self,
        env: &Env<'_, P, M, C>,
        chain: Option<SlabRef>,
    ) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        let mut result = Ok(());
        let order = Order::new(self.geo.order).expect("slab orders are small");
        let mut next = chain;
        while let Some(slab) = next {
            let phys = {
                // SAFETY: per the contract, only the chain reaches the slab; the header is read
                // before the frames go.
                let h = unsafe { slab.owned() };
                next = h.next;
                // A stale pointer into the old slab is recognised as foreign.
                h.magic = 0;
                h.phys
            };
            let block = PhysAddr::new(phys).ok().and_then(|a| FrameBlock::from_addr(a, order).ok());
            let freed = match block {
                Some(block) => env.frames.free(block).map_err(SlabError::Frames),
                None => Err(SlabError::Corrupted(Corruption {
                    cache: self.name,
                    object: slab.addr(),
                    kind: CorruptionKind::Header,
                })),
            };
            if result.is_ok() {
                result = freed;
            }
        }
        result
    }

    /// Takes a slab from the frame provider and formats it.
    pub(super) fn grow<P, M, C>(&self, env: &Env<'_, P, M, C>) -> Result<SlabRef, SlabError>
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
