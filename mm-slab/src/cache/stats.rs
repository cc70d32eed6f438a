//! Validation of every slab and the cache's statistics.

use mm_types::CpuLocal;

use super::CacheCore;
use crate::config::CacheFlags;
use crate::error::{Corruption, CorruptionKind};
use crate::slab;
use crate::slab::{Headers, SlabRef, SlabState, RED_ACTIVE, RED_INACTIVE};
use crate::stats::{CacheStats, CpuSlabStats};

impl<const N: usize> CacheCore<N> {
    /// Walks every slab and reports each inconsistency (MODEL.md 7).
    ///
    /// With a pinned CPU source only the calling CPU's slabs are in reach:
    /// other CPUs' current and partial slabs are not walked.
    pub fn validate(&self, cpus: &impl CpuLocal, report: &mut dyn FnMut(Corruption)) -> usize {
        let mut found = 0;
        let mut emit = |c: Corruption| {
            found += 1;
            report(c);
        };
        self.cpus.for_each_reachable(cpus, |_, cpu| {
            let node = self.node.lock();
            if let Some(current) = cpu.current(&self.geo) {
                self.check_slab(current, SlabState::Frozen, cpu.freelist, &node.headers, &mut emit);
            }
            let mut p = cpu.partial;
            let mut n = 0;
            while let Some(slab) = p {
                if n > cpu.partial_len || !self.check_slab(slab, SlabState::Frozen, 0, &node.headers, &mut emit) {
                    break;
                }
                p = slab.get_ref(&node.headers).next;
                n += 1;
            }
        });
        let node = self.node.lock();
        for (list, state) in
            [(&node.partial, SlabState::Partial), (&node.full, SlabState::Full), (&node.empty, SlabState::Empty)]
        {
            let mut p = list.head;
            let mut n = 0;
            while let Some(slab) = p {
                if n > list.len || !self.check_slab(slab, state, 0, &node.headers, &mut emit) {
                    break;
                }
                p = slab.get_ref(&node.headers).next;
                n += 1;
            }
        }
        found
    }

    /// Checks one slab: header magic and state, every freelist link, the
    /// free count, and (debug caches) poison, red zones and the bitmap.
    /// Returns whether the header was sound enough to follow its links.
    fn check_slab(
        &self,
        slab: SlabRef,
        state: SlabState,
        cpu_freelist: usize,
        headers: &Headers,
        emit: &mut dyn FnMut(Corruption),
    ) -> bool {
        let base = slab.base(&self.geo);
        let corruption = |object: usize, kind| Corruption { cache: self.name, object, kind };
        if !slab.magic_ok(self.keys.magic) || slab.get_ref(headers).state != state {
            emit(corruption(base.addr(), CorruptionKind::Header));
            return false;
        }
        let h = slab.get_ref(headers);
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
        true
    }

    /// CPU `cpu`'s hit and miss counters (MODEL.md 9).
    ///
    /// # Panics
    ///
    /// With a pinned CPU source, if `cpu` is not the calling CPU (another
    /// CPU's slot is out of reach).
    pub fn cpu_stats(&self, cpus: &impl CpuLocal, cpu: usize) -> CpuSlabStats {
        if self.cpus.is_pinned() {
            assert_eq!(cpu, cpus.current_cpu(), "another CPU's slot is out of reach when pinned");
            return self.cpus.current(cpus).counters.stats();
        }
        self.cpus.cpu(cpu).counters.stats()
    }

    /// Slabs held, and how many of them are empty: read under the node
    /// lock alone, without the walk of CPU freelists that
    /// [`stats`](Self::stats) makes (a shrinker counts them at every
    /// reclaim pass).
    pub fn slab_counts(&self) -> (usize, usize) {
        let node = self.node.lock();
        (node.slabs, node.empty.len)
    }

    /// A snapshot of the cache's counters (like a /proc/slabinfo line).
    ///
    /// Objects waiting in CPU slots' deferred frees count as freed. With a
    /// pinned CPU source other CPUs' freelists and deferred frees are out
    /// of reach: their objects count as active (as SLUB's slabinfo counts
    /// CPU slabs), until those CPUs flush.
    pub fn stats(&self, cpus: &impl CpuLocal) -> CacheStats {
        let mut cpu_free = 0;
        let mut cpu_partial = 0;
        let mut deferred = 0;
        self.cpus.for_each_reachable(cpus, |_, cpu| {
            deferred += cpu.deferred_len;
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
            active_objects: node.inuse.saturating_sub(cpu_free + deferred),
            total_objects: node.slabs * self.geo.objects,
            slabs: node.slabs,
            partial_slabs: node.partial.len,
            full_slabs: node.full.len,
            empty_slabs: node.empty.len,
            cpu_slabs: node.slabs - node.partial.len - node.full.len - node.empty.len,
            cpu_partial_slabs: cpu_partial,
            cpu_free_objects: cpu_free,
            cpu_deferred_frees: deferred,
            slabs_grown: node.grown,
            slabs_released: node.released,
        }
    }
}
