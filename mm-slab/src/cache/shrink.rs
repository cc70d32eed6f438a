//! Flushing the CPU slabs, shrinking empty slabs back to the frame
//! provider, and destroying a cache.

use core::ptr;

use mm_types::FrameProvider;

use super::{CacheCore, CpuSlab, Env, Node, NO_SLAB};
use crate::error::SlabError;
use crate::slab;
use crate::slab::{SlabHeader, SlabState};

impl<const N: usize> CacheCore<N> {
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
}
