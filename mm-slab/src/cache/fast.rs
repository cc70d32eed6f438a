//! The fast path: allocation from and frees to the CPU's slab without
//! the node lock, through the hardened freelist.

use core::ptr::NonNull;

use mm_types::{CpuLocal, FrameProvider, PhysMemory};

use super::{CacheCore, CpuSlab, Env};
use crate::error::{Corruption, CorruptionKind, SlabError};
use crate::slab;

impl<const N: usize> CacheCore<N> {
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
        // A pending flush request (pinned mode) is honoured out of line, so the hit path keeps its
        // registers.
        let Some(mut cpu) = self.cpus.current_fast(&env.cpus) else {
            return self.alloc_after_flush(env);
        };
        match self.pop_cpu(&mut cpu) {
            Some(Ok(obj)) => {
                cpu.counters.alloc_hits = cpu.counters.alloc_hits.wrapping_add(1);
                Ok(obj)
            }
            Some(Err(e)) => Err(e),
            None => self.refill(env, &mut cpu),
        }
    }

    /// A flush request was pending (pinned mode): honour it, then allocate.
    #[cold]
    #[inline(never)]
    fn alloc_after_flush<P, M, C>(&self, env: &Env<'_, P, M, C>) -> Result<NonNull<u8>, SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
        C: CpuLocal,
    {
        self.flush_local(env)?;
        self.alloc(env)
    }

    /// A flush request was pending (pinned mode): honour it, then free.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    #[cold]
    #[inline(never)]
    unsafe fn free_after_flush<P, M, C>(&self, env: &Env<'_, P, M, C>, ptr: NonNull<u8>) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
        C: CpuLocal,
    {
        self.flush_local(env)?;
        // SAFETY: forwarded contract.
        unsafe { self.free(env, ptr) }
    }

    /// Pops the CPU freelist: `None` when it is empty.
    #[inline(always)]
    pub(super) fn pop_cpu(&self, cpu: &mut CpuSlab) -> Option<Result<NonNull<u8>, SlabError>> {
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

    /// The error for a free of `obj`, which is not an object start of the
    /// CPU's current slab.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    #[cold]
    #[inline(never)]
    unsafe fn misplaced(&self, obj: *mut u8) -> SlabError {
        // SAFETY: forwarded contract. An offset that is not an object start always yields an error.
        match unsafe { self.check_object(obj) } {
            Err(e) => e,
            Ok(_) => unreachable!("{obj:p} is not an object start"),
        }
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
        let Some(mut cpu) = self.cpus.current_fast(&env.cpus) else {
            // SAFETY: forwarded contract.
            return unsafe { self.free_after_flush(env, ptr) };
        };
        if obj.addr() & self.slab_mask == cpu.slab.addr() {
            if self.hardened && !self.is_object_offset(obj.addr() - cpu.slab.addr()) {
                // SAFETY: forwarded contract.
                return Err(unsafe { self.misplaced(obj) });
            }
            if obj.addr() == cpu.freelist {
                return Err(SlabError::DoubleFree { addr: obj.addr() });
            }
            // SAFETY: `obj` is in the CPU's current slab and the caller gave it up; the CPU lock gives us the list.
            unsafe { slab::write_link(obj, cpu.freelist, self.keys.link) };
            cpu.freelist = obj.addr();
            cpu.counters.free_hits = cpu.counters.free_hits.wrapping_add(1);
            return Ok(());
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_deferred(env, &mut cpu, obj) }
    }
}
