//! Flushing the CPU slabs, shrinking empty slabs back to the frame
//! provider, and destroying a cache.

use core::ptr;

use mm_types::FrameProvider;

use super::{CacheCore, CpuSlab, Env, Node, NO_SLAB};
use crate::error::SlabError;
use crate::slab;
use crate::slab::{SlabRef, SlabState};

impl<const N: usize> CacheCore<N> {
    /// Gives a CPU's deferred frees to their slabs and returns its current
    /// and partial slabs to the node lists (merging the CPU freelist back
    /// into its slab). Empty slabs beyond the kept minimum are added to the
    /// `release` chain. Returns the first error of the deferred frees (a
    /// double free); everything else is done regardless.
    fn unfreeze_cpu(&self, node: &mut Node, cpu: &mut CpuSlab, release: &mut Option<SlabRef>) -> Result<(), SlabError> {
        let deferred = self.drain_deferred(node, cpu, release);
        if let Some(current) = cpu.current(&self.geo) {
            let freelist = core::mem::take(&mut cpu.freelist);
            self.merge_cpu_freelist(node, current, freelist);
            self.place(node, current, release);
            cpu.slab = ptr::without_provenance_mut(NO_SLAB);
        }
        while let Some(slab) = cpu.partial {
            cpu.partial = slab.get(&mut node.headers).next.take();
            self.place(node, slab, release);
        }
        cpu.partial_len = 0;
        deferred
    }

    /// Appends a CPU freelist (objects of `slab`) to the slab's own.
    fn merge_cpu_freelist(&self, node: &mut Node, slab: SlabRef, freelist: usize) {
        if freelist == 0 {
            return;
        }
        let base = slab.base(&self.geo);
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
        let h = slab.get(&mut node.headers);
        // SAFETY: as above.
        unsafe { slab::write_link(base.with_addr(last), h.freelist, self.keys.link) };
        h.freelist = freelist;
        h.inuse -= count as u16;
        node.inuse -= count;
    }

    /// Puts a slab that left its CPU on the list its counts say.
    fn place(&self, node: &mut Node, slab: SlabRef, release: &mut Option<SlabRef>) {
        let h = slab.get(&mut node.headers);
        let (inuse, freelist) = (h.inuse, h.freelist);
        if inuse == 0 {
            if let Some(r) = self.park_empty(node, slab) {
                r.get(&mut node.headers).next = *release;
                *release = Some(r);
            }
        } else {
            h.state = if freelist == 0 { SlabState::Full } else { SlabState::Partial };
            let list = if freelist == 0 { &mut node.full } else { &mut node.partial };
            list.push(slab, &mut node.headers);
        }
    }

    /// Returns every CPU's slabs to the node lists; with `all_empty`, also
    /// releases every empty slab (reclaim's shrinker). Returns the number
    /// of slabs given back to the frame provider.
    ///
    /// With a pinned CPU source only the calling CPU's slabs are in reach:
    /// every other CPU is asked to flush, which it does at its next
    /// allocation or free from this cache (or when the kernel runs
    /// [`flush_local`](crate::Cache::flush_local) there).
    pub fn shrink<P, M, C>(&self, env: &Env<'_, P, M, C>, all_empty: bool) -> Result<usize, SlabError>
    where
        P: FrameProvider + ?Sized,
        C: mm_types::CpuLocal,
    {
        let mut release = None;
        let mut deferred = Ok(());
        self.cpus.for_each_reachable(&env.cpus, |_, cpu| {
            let mut node = self.node.lock();
            let r = self.unfreeze_cpu(&mut node, cpu, &mut release);
            if deferred.is_ok() {
                deferred = r;
            }
        });
        self.cpus.request_drain_others(&env.cpus);
        let shrunk = self.shrink_node(env, all_empty, release);
        deferred.and(shrunk)
    }

    /// [`shrink`](Self::shrink) with exclusive access (teardown): reaches
    /// every CPU's slabs in either mode.
    pub fn shrink_exclusive<P, M, C>(&mut self, env: &Env<'_, P, M, C>) -> Result<usize, SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        let (release, deferred) = self.flush_exclusive();
        let shrunk = self.shrink_node(env, true, release);
        deferred.and(shrunk)
    }

    /// Returns every CPU's slabs to the node lists through exclusive access;
    /// returns the chain of slabs to release and the first error of the
    /// deferred frees.
    fn flush_exclusive(&mut self) -> (Option<SlabRef>, Result<(), SlabError>) {
        // The CPU slabs are moved out first: `unfreeze_cpu` needs `&self`.
        let mut taken: [CpuSlab; N] = core::array::from_fn(|_| CpuSlab::new());
        self.cpus.for_each_mut(|i, cpu| core::mem::swap(&mut taken[i], cpu));
        let mut release = None;
        let mut deferred = Ok(());
        let mut node = self.node.lock();
        for cpu in &mut taken {
            let r = self.unfreeze_cpu(&mut node, cpu, &mut release);
            if deferred.is_ok() {
                deferred = r;
            }
        }
        (release, deferred)
    }

    /// Returns the calling CPU's slabs to the node lists (and takes a flush
    /// request posted for it).
    pub fn flush_local<P, M, C>(&self, env: &Env<'_, P, M, C>) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
        C: mm_types::CpuLocal,
    {
        let mut cpu = self.cpus.current(&env.cpus);
        let _ = cpu.take_drain_request();
        self.flush_requested(env, &mut cpu)
    }

    /// Returns CPU `cpu`'s slabs to the node lists from another CPU.
    ///
    /// # Safety
    ///
    /// With a pinned CPU source, CPU `cpu` runs no operation on this cache
    /// during the call (it is offline, parked or known idle).
    pub unsafe fn flush_cpu_quiescent<P, M, C>(&self, env: &Env<'_, P, M, C>, cpu: usize) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        // SAFETY: forwarded: slot `cpu`'s owner is stopped (pinned mode), or the slot is locked.
        let mut slot = unsafe { self.cpus.cpu_quiescent(cpu) };
        let _ = slot.take_drain_request();
        self.flush_requested(env, &mut slot)
    }

    /// The calling CPU honours a flush request (pinned mode): its slabs go
    /// back to the node lists, and slabs left empty beyond the kept minimum
    /// to the frame provider.
    #[cold]
    #[inline(never)]
    pub(super) fn flush_requested<P, M, C>(&self, env: &Env<'_, P, M, C>, cpu: &mut CpuSlab) -> Result<(), SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        let mut release = None;
        let deferred = self.unfreeze_cpu(&mut self.node.lock(), cpu, &mut release);
        // SAFETY: the chain holds slabs `unfreeze_cpu` took off every list and this CPU.
        let released = unsafe { self.release(env, release) };
        deferred.and(released)
    }

    /// Gives back the `release` chain and, with `all_empty`, every empty
    /// slab; returns how many slabs went back.
    fn shrink_node<P, M, C>(
        &self,
        env: &Env<'_, P, M, C>,
        all_empty: bool,
        mut release: Option<SlabRef>,
    ) -> Result<usize, SlabError>
    where
        P: FrameProvider + ?Sized,
    {
        let mut guard = self.node.lock();
        let node = &mut *guard;
        if all_empty {
            while let Some(slab) = node.empty.pop(&mut node.headers) {
                node.slabs -= 1;
                node.released += 1;
                slab.get(&mut node.headers).next = release;
                release = Some(slab);
            }
        }
        let mut count = 0;
        let mut p = release;
        while let Some(slab) = p {
            count += 1;
            p = slab.get_ref(&node.headers).next;
        }
        drop(guard);
        // SAFETY: the chain holds slabs `unfreeze_cpu` (through the callers) and the loop above took
        // off every list and CPU.
        unsafe { self.release(env, release) }.map(|()| count)
    }

    /// Objects allocated and not freed (with a pinned CPU source, objects
    /// free in other CPUs' freelists count too; see [`stats`](Self::stats)).
    pub fn live(&self, cpus: &impl mm_types::CpuLocal) -> usize {
        self.stats(cpus).active_objects
    }
}
