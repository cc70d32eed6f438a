//! The slow paths: refilling a CPU slab from the node's partial list or
//! a new slab, and frees that land in another CPU's or no CPU's slab.

use core::ptr;
use core::ptr::NonNull;

use mm_types::{CpuLocal, FrameBlock, FrameProvider, Order, PhysAddr, PhysMemory};

use super::{CacheCore, CpuSlab, Env, Node, DEFERRED_FREES, NO_SLAB};
use crate::config::CacheFlags;
use crate::error::{Corruption, CorruptionKind, SlabError};
use crate::slab;
use crate::slab::{Fill, SlabRef, SlabState};

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
                return self.pop_refilled(cpu, "a slab freelist is never empty here");
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
        self.pop_refilled(cpu, "a fresh CPU slab has free objects")
    }

    /// Pops the CPU freelist a refill just filled, and counts the miss
    /// (MODEL.md 9). `nonempty` is why the freelist cannot be empty.
    #[inline(always)]
    fn pop_refilled(&self, cpu: &mut CpuSlab, nonempty: &str) -> Result<NonNull<u8>, SlabError> {
        let popped = self.pop_cpu(cpu).expect(nonempty);
        if popped.is_ok() {
            cpu.counters.alloc_misses = cpu.counters.alloc_misses.wrapping_add(1);
        }
        popped
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

    /// Frees an object outside the CPU's current slab (MODEL.md 3 and 5):
    /// checks it against its slab header at once, then queues it in the
    /// CPU slot; a full queue first goes to its slabs under one node lock.
    /// A repeat of the CPU's last queued free is `DoubleFree`; other double
    /// frees are found when the queue goes to the slabs.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    #[inline(never)]
    pub(super) unsafe fn free_deferred<P, M, C>(
        &self,
        env: &Env<'_, P, M, C>,
        cpu: &mut CpuSlab,
        obj: *mut u8,
    ) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        // SAFETY: forwarded contract: the slab-aligned block is readable.
        unsafe { self.check_object(obj) }?;
        let n = cpu.deferred_len;
        if n > 0 && cpu.deferred[n - 1] == obj {
            return Err(SlabError::DoubleFree { addr: obj.addr() });
        }
        if n == DEFERRED_FREES {
            // SAFETY: forwarded contract.
            return unsafe { self.flush_deferred_and_push(env, cpu, obj) };
        }
        cpu.deferred[n] = obj;
        cpu.deferred_len = n + 1;
        cpu.counters.free_hits = cpu.counters.free_hits.wrapping_add(1);
        Ok(())
    }

    /// The CPU's deferred frees are a full batch: give them to their slabs,
    /// then queue `obj`. An error of the batch (a double free found under
    /// the node lock) is returned; `obj` is queued all the same.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    #[cold]
    #[inline(never)]
    unsafe fn flush_deferred_and_push<P, M, C>(
        &self,
        env: &Env<'_, P, M, C>,
        cpu: &mut CpuSlab,
        obj: *mut u8,
    ) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        let result = self.flush_deferred(env, cpu);
        cpu.deferred[0] = obj;
        cpu.deferred_len = 1;
        cpu.counters.free_flushes = cpu.counters.free_flushes.wrapping_add(1);
        result
    }

    /// Gives the calling CPU's deferred frees to their slabs now (see
    /// [`flush_deferred`](Self::flush_deferred)).
    pub fn flush_deferred_local<P, M, C>(&self, env: &Env<'_, P, M, C>) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
        C: CpuLocal,
    {
        let mut cpu = self.cpus.current(&env.cpus);
        self.flush_deferred(env, &mut cpu)
    }

    /// Gives the CPU's deferred frees to their slabs under one node lock,
    /// then returns the slabs that emptied beyond the kept minimum to the
    /// frame provider. Returns the first error; the other frees are done.
    pub(super) fn flush_deferred<P, M, C>(&self, env: &Env<'_, P, M, C>, cpu: &mut CpuSlab) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        let mut release = None;
        let result = self.drain_deferred(&mut self.node.lock(), cpu, &mut release);
        // SAFETY: the chain holds slabs `free_to_slab` took off every list (never a CPU's: a frozen
        // slab is never parked).
        let released = unsafe { self.release(env, release) };
        result.and(released)
    }

    /// Gives the CPU's deferred frees to their slabs (the node lock is
    /// held); slabs to release are added to `release`. Returns the first
    /// error; the other frees are done.
    pub(super) fn drain_deferred(
        &self,
        node: &mut Node,
        cpu: &mut CpuSlab,
        release: &mut Option<SlabRef>,
    ) -> Result<(), SlabError> {
        let mut result = Ok(());
        for i in 0..core::mem::take(&mut cpu.deferred_len) {
            let obj = cpu.deferred[i];
            // SAFETY: `free` queued `obj` under its contract: the caller gave it up, and its
            // slab-aligned block is readable memory (slab memory or the direct map, which stay
            // mapped), even if a double free let its slab go meanwhile.
            if let Err(e) = unsafe { self.free_to_slab(node, cpu, obj, release) } {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Pushes an object on its own slab's freelist (the node lock is held)
    /// and moves the slab between lists; a slab that empties beyond the
    /// kept minimum is added to `release`.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free), and `obj`'s offset in its slab passed
    /// [`check_object`](Self::check_object).
    unsafe fn free_to_slab(
        &self,
        node: &mut Node,
        cpu: &mut CpuSlab,
        obj: *mut u8,
        release: &mut Option<SlabRef>,
    ) -> Result<(), SlabError> {
        // The magic is checked again under the lock: a double free may have let the slab go since
        // `obj` was queued (its offset was checked then, and cannot change).
        let hdr = self.header_block(obj);
        // SAFETY: forwarded contract: the slab-aligned block is readable.
        if !unsafe { slab::magic_ok(hdr, self.keys.magic) } {
            return Err(SlabError::ForeignPointer { addr: obj.addr() });
        }
        // SAFETY: the header carries this cache's magic for its own address: a live slab of ours.
        let slab = unsafe { SlabRef::from_raw(hdr) };
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
        let mut parked = None;
        match state {
            SlabState::Frozen => {}
            SlabState::Full => {
                node.full.remove(slab, &mut node.headers);
                if inuse == 0 {
                    parked = self.park_empty(node, slab);
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
                    parked = self.park_empty(node, slab);
                }
            }
            SlabState::Empty => unreachable!("an empty slab has no object to free"),
        }
        if let Some(r) = parked {
            r.get(&mut node.headers).next = *release;
            *release = Some(r);
        }
        Ok(())
    }

    /// Checks that `obj` is the start of an object in a slab of this cache
    /// and returns that slab.
    ///
    /// Needs no lock: it reads the header's magic word only, which no
    /// reference to the header fields covers and which changes only when a
    /// slab is formatted or released (never while an object of it is live).
    ///
    /// # Safety
    ///
    /// The slab-size-aligned block containing `obj` is readable.
    #[inline(always)]
    pub(super) unsafe fn check_object(&self, obj: *mut u8) -> Result<SlabRef, SlabError> {
        let hdr = self.header_block(obj);
        let offset = obj.addr() & !self.slab_mask;
        // SAFETY: forwarded contract; the header is inside that block.
        if !unsafe { slab::magic_ok(hdr, self.keys.magic) } || !self.is_object_offset(offset) {
            // SAFETY: forwarded contract.
            return Err(unsafe { self.bad_object(obj, hdr) });
        }
        // SAFETY: the header carries this cache's magic for its own address: a slab of ours that is
        // live (`release` clears the magic before the frames go back).
        Ok(unsafe { SlabRef::from_raw(hdr) })
    }

    /// The header block of the slab-size-aligned block holding `obj`
    /// (`slab::header_of` with the cache's precomputed mask and offset).
    #[inline(always)]
    fn header_block(&self, obj: *mut u8) -> *mut slab::HeaderBlock {
        obj.map_addr(|a| (a & self.slab_mask) + self.header_offset).cast()
    }

    /// Why `check_object` refused `obj`.
    ///
    /// # Safety
    ///
    /// As for `check_object`.
    #[cold]
    unsafe fn bad_object(&self, obj: *mut u8, hdr: *mut slab::HeaderBlock) -> SlabError {
        let offset = obj.addr() & !self.slab_mask;
        // SAFETY: forwarded contract.
        if !unsafe { slab::magic_ok(hdr, self.keys.magic) } || offset >= self.geo.objects_bytes() {
            SlabError::ForeignPointer { addr: obj.addr() }
        } else {
            SlabError::Misaligned { addr: obj.addr(), object: obj.addr() - offset % self.geo.stride }
        }
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
                h.phys
            };
            // A stale pointer into the old slab is recognised as foreign.
            slab.clear_magic();
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
