//! The debug path for caches with poisoning, red zones or tracking:
//! everything under the node lock, with the checks of MODEL.md 6.

use core::ptr::NonNull;

use mm_types::{CpuLocal, FrameProvider, PhysMemory};

use super::{CacheCore, Env};
use crate::config::CacheFlags;
use crate::error::{Corruption, CorruptionKind, SlabError};
use crate::slab;
use crate::slab::{SlabState, RED_ACTIVE, RED_INACTIVE};

impl<const N: usize> CacheCore<N> {
    /// Allocation for debug caches: everything under the node lock, with the
    /// poison, red-zone and bitmap checks (MODEL.md 6).
    pub(super) fn alloc_locked<P, M, C>(&self, env: &Env<'_, P, M, C>) -> Result<NonNull<u8>, SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
    {
        let mut guard = self.node.lock();
        let slab = match guard.partial.head {
            Some(slab) => slab,
            None => {
                let empty = {
                    let node = &mut *guard;
                    node.empty.pop(&mut node.headers)
                };
                let slab = match empty {
                    Some(slab) => slab,
                    None => {
                        drop(guard);
                        let slab = self.grow(env)?;
                        guard = self.node.lock();
                        guard.slabs += 1;
                        guard.grown += 1;
                        slab
                    }
                };
                let node = &mut *guard;
                slab.get(&mut node.headers).state = SlabState::Partial;
                node.partial.push(slab, &mut node.headers);
                slab
            }
        };
        let node = &mut *guard;
        let base = slab.base(&self.geo);
        let h = slab.get(&mut node.headers);
        let obj = base.with_addr(h.freelist);
        let index = self.index_of(h.freelist - base.addr());
        // SAFETY: `obj` is the head of the slab's freelist (checked when it was linked in) and the
        // node lock gives us that list.
        let next = unsafe { slab::read_link(obj, self.keys.link) };
        let corrupt = |kind| SlabError::Corrupted(Corruption { cache: self.name, object: obj.addr(), kind });
        // SAFETY: debug slab with a bitmap; node lock held.
        let live =
            self.flags.contains(CacheFlags::CHECK_FREE) && unsafe { slab::bitmap_bit(base, &self.geo, index, None) };
        let result = if live {
            // A link led to an object that is allocated (a replayed or
            // forged link naming another object start of the slab): it is
            // not handed out a second time, and the freelist that led here
            // cannot be trusted.
            Err(corrupt(CorruptionKind::Bitmap))
        } else if next != 0 && self.index_in(base, next).is_none() {
            // Containment: the rest of this freelist cannot be trusted; the
            // slab is treated as full so nothing on it is handed out.
            Err(corrupt(CorruptionKind::FreePointer { decoded: next }))
        } else if let Some((offset, found)) = self.poisoned(obj) {
            Err(corrupt(CorruptionKind::Poison { offset, expected: slab::POISON_FREE, found }))
        } else {
            Ok(())
        };
        let untrusted = matches!(
            result,
            Err(SlabError::Corrupted(Corruption {
                kind: CorruptionKind::FreePointer { .. } | CorruptionKind::Bitmap,
                ..
            }))
        );
        // The object leaves the freelist either way: a corrupted free object
        // is not handed out, it stays allocated (quarantined); a live one
        // stays its owner's (and is counted once).
        h.freelist = if untrusted { 0 } else { next };
        if !live {
            h.inuse += 1;
            node.inuse += 1;
            if self.flags.contains(CacheFlags::CHECK_FREE) {
                // SAFETY: debug slab with a bitmap; node lock held.
                unsafe { slab::bitmap_bit(base, &self.geo, index, Some(true)) };
            }
            if self.geo.red_zone > 0 {
                // SAFETY: the object is ours now; node lock held. (A live
                // object keeps its red zone as its owner left it, so an
                // overflow there is still found on its free.)
                unsafe { slab::paint_red_zone(obj, &self.geo, RED_ACTIVE) };
            }
        }
        if h.freelist == 0 {
            node.partial.remove(slab, &mut node.headers);
            slab.get(&mut node.headers).state = SlabState::Full;
            node.full.push(slab, &mut node.headers);
        }
        result?;
        // SAFETY: inside a mapped slab.
        Ok(unsafe { NonNull::new_unchecked(obj) })
    }

    /// First poisoned byte overwritten in the free object `obj`, if the
    /// cache poisons.
    pub(super) fn poisoned(&self, obj: *mut u8) -> Option<(usize, u8)> {
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
    pub(super) unsafe fn free_locked<P, M, C>(&self, env: &Env<'_, P, M, C>, obj: *mut u8) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
        M: PhysMemory,
        C: CpuLocal,
    {
        let mut guard = self.node.lock();
        let node = &mut *guard;
        // SAFETY: forwarded contract; the header is read under the node lock.
        let slab = unsafe { self.check_object(obj)? };
        let base = slab.base(&self.geo);
        let index = self.index_of(obj.addr() - base.addr());
        let h = slab.get(&mut node.headers);
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
        let mut release = None;
        // Debug caches keep their slabs on node lists only.
        if state == SlabState::Full {
            node.full.remove(slab, &mut node.headers);
            slab.get(&mut node.headers).state = SlabState::Partial;
            node.partial.push(slab, &mut node.headers);
        }
        if inuse == 0 {
            node.partial.remove(slab, &mut node.headers);
            release = self.park_empty(node, slab);
        }
        drop(guard);
        match release {
            None => Ok(()),
            // SAFETY: `park_empty` returns only a slab it took off every list; debug caches freeze
            // no slab to a CPU.
            Some(_) => unsafe { self.release(env, release) },
        }
    }

    /// Index of the object starting at `offset` from a slab start, or
    /// `None` if no object starts there (not a multiple of the stride, or
    /// past the objects area; an `offset` computed with `wrapping_sub` from
    /// an address below the slab is one of those). A multiplication, a
    /// rotation and one comparison: see `stride_inverse`.
    #[inline(always)]
    pub(super) fn object_index(&self, offset: usize) -> Option<usize> {
        let quotient = (offset as u64).wrapping_mul(self.stride_inverse).rotate_right(self.stride_shift);
        (quotient < self.geo.objects as u64).then_some(quotient as usize)
    }

    /// Whether `offset` from a slab start is the start of an object.
    #[inline(always)]
    pub(super) fn is_object_offset(&self, offset: usize) -> bool {
        self.object_index(offset).is_some()
    }

    /// Index of the object at `offset` from the slab start.
    fn index_of(&self, offset: usize) -> usize {
        offset / self.geo.stride
    }

    /// Index of the object at address `addr` in the slab at `base`, if
    /// `addr` is an object start there.
    pub(super) fn index_in(&self, base: *mut u8, addr: usize) -> Option<usize> {
        let offset = addr.wrapping_sub(base.addr());
        self.object_index(offset)
    }
}
