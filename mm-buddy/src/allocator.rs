//! The allocator: zones, regions and per-CPU caches put together.
//!
//! Its `unsafe` is limited to the contracts of adding memory (the caller
//! vouches for the RAM), zeroing blocks it just allocated, and the
//! `FrameProvider` implementation; pointer work lives in `free_list` and
//! `meta`.

use core::sync::atomic::{AtomicU8, Ordering};

use mm_types::percpu::{PerCpu, PerCpuGuard};
use mm_types::sync::Mutex;
use mm_types::{
    AllocFlags, CpuLocal, FrameBlock, FrameError, FrameNumber, FrameRange, Order, PhysMemory, PhysRange, Zone as ZoneId,
};

use crate::error::BuddyError;
use crate::pcp::{batch_and_high, PcpSet, PcpStats, PCP_MAX_ORDER};
use crate::region::{self, Region, RegionTable, MAX_FRAMES};
use crate::state::{self, FrameState};
use crate::stats::{Fragmentation, WatermarkState, Watermarks, ZoneStats};
use crate::zone::{
    aligned_blocks, Ctx, FreeArea, Zone, MAX_ORDER_LIMIT, MOBILITIES, MOVABLE, ORDERS, WMARK_HIGH, WMARK_LOW, WMARK_MIN,
};

/// Tunables of a [`BuddyAllocator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuddyConfig {
    /// Largest block order (default 10: 4 MiB blocks); at most
    /// [`MAX_ORDER_LIMIT`].
    pub max_order: u8,
    /// Order-0 blocks moved between a per-CPU cache and the zone at once
    /// (default 64; higher orders move `batch >> order`, at least 1). The
    /// default refills a cache with a whole 64-frame run when the zone has
    /// one, which is one cache line of state bytes (eight of links): two
    /// CPUs' cached frames then never share a metadata line, which they
    /// would write on every allocation and free.
    pub pcp_batch: u32,
    /// A per-CPU cache above this many order-0 blocks drains one batch
    /// (default 256; `high >> order` for higher orders).
    pub pcp_high: u32,
    /// Group allocations by mobility per pageblock (default on).
    pub mobility_grouping: bool,
    /// Reserve below which ordinary allocations fail, in KiB over all zones;
    /// `None` computes it as Linux does: `sqrt(16 * managed KiB)`, clamped to
    /// 128 KiB .. 64 MiB.
    pub min_free_kib: Option<u64>,
}

impl Default for BuddyConfig {
    fn default() -> Self {
        BuddyConfig { max_order: 10, pcp_batch: 64, pcp_high: 256, mobility_grouping: true, min_free_kib: None }
    }
}

/// What adding memory did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddReport {
    /// Regions created.
    pub regions: usize,
    /// Frames now free for allocation.
    pub frames: u64,
    /// Frames used for the allocator's own metadata.
    pub metadata_frames: u64,
    /// Frames left out: pieces too small to hold their own metadata, or
    /// partial frames at unaligned range edges.
    pub skipped_frames: u64,
}

impl core::ops::AddAssign for AddReport {
    fn add_assign(&mut self, o: AddReport) {
        self.regions += o.regions;
        self.frames += o.frames;
        self.metadata_frames += o.metadata_frames;
        self.skipped_frames += o.skipped_frames;
    }
}

/// A zoned binary buddy allocator with per-CPU caches.
///
/// - `M`: how the allocator reaches physical memory (its metadata and the
///   list links it keeps inside free blocks).
/// - `C`: the per-CPU hook.
/// - `CPUS`: per-CPU cache slots; CPUs beyond it share slots (correct, only
///   slower).
///
/// The metadata is one byte per frame plus one per 2 MiB pageblock, taken
/// from the first frames of each region added, so no heap is needed.
///
/// # Example
///
/// ```
/// use mm_buddy::{BuddyAllocator, BuddyConfig};
/// use mm_types::percpu::SingleCpu;
/// use mm_types::testkit::SimPhysMemory;
/// use mm_types::{AllocFlags, FrameError, FrameProvider, Order, PhysAddr, PhysRange};
///
/// // 64 MiB of simulated RAM at 1 MiB, with the first 256 KiB reserved.
/// let ram = SimPhysMemory::new(PhysAddr::new(1 << 20)?, 64 << 20);
/// let buddy: BuddyAllocator<_, _> = BuddyAllocator::new(ram.clone(), SingleCpu, BuddyConfig::default())?;
/// let reserved = PhysRange::new(PhysAddr::new(1 << 20)?, 256 << 10)?;
/// // SAFETY: the simulated RAM is ours and outlives the allocator.
/// let report = unsafe { buddy.add_boot_memory(&ram.ram_ranges(), &[reserved])? };
/// assert!(report.frames > 16_000);
///
/// let dma = buddy.allocate(Order::new(2).unwrap(), AllocFlags::DMA | AllocFlags::ZERO)?;
/// assert!(dma.start_address().as_u64() + dma.bytes() <= 16 << 20);
/// buddy.free(dma)?;
/// assert_eq!(buddy.free(dma), Err(FrameError::DoubleFree(dma)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BuddyAllocator<'a, M: PhysMemory, C: CpuLocal, const CPUS: usize = 8> {
    mem: M,
    cpus: C,
    config: BuddyConfig,
    pb_order: u8,
    regions: RegionTable<'a>,
    zones: [Zone; 3],
    pcp: PerCpu<PcpSet, CPUS>,
    /// Per-CPU (batch, high) by order.
    pcp_limits: [(u32, u32); PCP_MAX_ORDER as usize + 1],
    /// For each highest allowed zone, the highest zone at or below it that
    /// has memory (3: none), so the fast path needs no zone loop.
    preferred_zone: [AtomicU8; 3],
    add_lock: Mutex<()>,
}

impl<'a, M: PhysMemory, C: CpuLocal, const CPUS: usize> BuddyAllocator<'a, M, C, CPUS> {
    /// An allocator managing no memory yet.
    pub fn new(mem: M, cpus: C, config: BuddyConfig) -> Result<Self, BuddyError> {
        if config.max_order > MAX_ORDER_LIMIT {
            return Err(BuddyError::BadConfig("max_order is above MAX_ORDER_LIMIT"));
        }
        if config.pcp_batch == 0 || config.pcp_high < config.pcp_batch {
            return Err(BuddyError::BadConfig("pcp_batch must be positive and at most pcp_high"));
        }
        if CPUS == 0 {
            return Err(BuddyError::BadConfig("CPUS must be positive"));
        }
        Ok(BuddyAllocator {
            mem,
            cpus,
            config,
            pb_order: config.max_order.min(9),
            regions: RegionTable::new(),
            zones: [Zone::new(), Zone::new(), Zone::new()],
            pcp: PerCpu::with_pinning(C::PINNING, |_| PcpSet::new()),
            pcp_limits: core::array::from_fn(|o| batch_and_high(o as u8, config.pcp_batch, config.pcp_high)),
            preferred_zone: [const { AtomicU8::new(3) }; 3],
            add_lock: Mutex::new(()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BuddyConfig {
        &self.config
    }

    fn ctx(&self) -> Ctx<'_, 'a> {
        Ctx { regions: &self.regions, max_order: self.config.max_order, pb_order: self.pb_order }
    }

    /// Hands the usable RAM of a boot memory map to the allocator, minus the
    /// `reserved` ranges (kernel image, boot data, firmware tables).
    ///
    /// # Safety
    ///
    /// Every byte of `usable` outside `reserved` is RAM that nothing else uses
    /// now or later, reachable through the accessor `M` for the lifetime
    /// `'a`: the allocator writes its metadata and list links into it.
    pub unsafe fn add_boot_memory(
        &self,
        usable: &[PhysRange],
        reserved: &[PhysRange],
    ) -> Result<AddReport, BuddyError> {
        let mut report = AddReport::default();
        for u in usable {
            let mut pieces = [*u; 1 + 2 * MAX_RESERVED];
            let mut n = 1;
            for r in reserved.iter().take(MAX_RESERVED) {
                let mut next = [PhysRange::empty(u.start()); 1 + 2 * MAX_RESERVED];
                let mut m = 0;
                for p in &pieces[..n] {
                    let (a, b) = p.subtract(r);
                    for x in [a, b] {
                        if !x.is_empty() {
                            next[m] = x;
                            m += 1;
                        }
                    }
                }
                pieces = next;
                n = m;
            }
            if reserved.len() > MAX_RESERVED {
                return Err(BuddyError::BadConfig("more than MAX_RESERVED reserved ranges"));
            }
            for p in &pieces[..n] {
                // SAFETY: the piece is part of `usable` outside `reserved`, which the caller vouches for.
                report += unsafe { self.add_memory(*p)? };
            }
        }
        Ok(report)
    }

    /// Adds a range of RAM (at boot or hot-added later). The range is split
    /// at zone boundaries; each piece keeps its metadata in its own first
    /// frames. Partial frames at unaligned edges are left out.
    ///
    /// # Safety
    ///
    /// The range is RAM that nothing else uses now or later, reachable through
    /// the accessor `M` for the lifetime `'a`.
    pub unsafe fn add_memory(&self, range: PhysRange) -> Result<AddReport, BuddyError> {
        let _serialise = self.add_lock.lock();
        let frames = range.frames_inward();
        let mut report =
            AddReport { skipped_frames: range.frames_outward().len() - frames.len(), ..Default::default() };
        if frames.is_empty() {
            return Ok(report);
        }
        let (start, end) = (frames.start().as_u64(), frames.start().as_u64() + frames.len());
        if self.regions.iter().any(|r| r.start < end && start < r.end) {
            return Err(BuddyError::Overlap(range));
        }
        if end > MAX_FRAMES {
            return Err(BuddyError::BeyondLimit(range));
        }
        if self.mem.translate(frames.start().start_address(), (frames.len() << 12) as usize).is_err() {
            return Err(BuddyError::Unreachable(range));
        }
        let bounds = [0, ZONE_DMA_END, ZONE_DMA32_END, u64::MAX];
        for z in 0..3 {
            let (s, e) = (start.max(bounds[z]), end.min(bounds[z + 1]));
            if s < e {
                // SAFETY: a sub-range of the caller's range.
                report += unsafe { self.add_piece(s, e, z)? };
            }
        }
        self.recompute_watermarks();
        for top in 0..3 {
            let best = (0..=top).rev().find(|&z| self.zones[z].managed.load(Ordering::Relaxed) > 0);
            self.preferred_zone[top].store(best.map_or(3, |z| z as u8), Ordering::Relaxed);
        }
        Ok(report)
    }

    /// # Safety
    ///
    /// As [`add_memory`](Self::add_memory), for frames `[start, end)` in zone `z`.
    unsafe fn add_piece(&self, start: u64, end: u64, z: usize) -> Result<AddReport, BuddyError> {
        let pb = self.pb_order as u32;
        let meta_frames = region::metadata_bytes(start, end - start, pb).div_ceil(4096);
        if end - start <= meta_frames {
            return Ok(AddReport { skipped_frames: end - start, ..Default::default() });
        }
        let first = start + meta_frames;
        // The caller gives us `[start, end)`.
        // SAFETY: its first `meta_frames` frames become metadata, reachable through `M` for `'a`; they hold
        // `metadata_bytes` bytes, which count 8 link bytes for every frame of the range, so the
        // `2 * (end - first)` link words fit.
        let (links, meta) = unsafe { crate::meta::carve(&self.mem, start, meta_frames, 2 * (end - first) as usize) };
        let r = Region::new(first, end, z, pb, links, meta);
        let mut pb_frame = first;
        while pb_frame < end {
            r.set_pageblock_mobility(pb_frame, MOVABLE);
            pb_frame = (pb_frame | ((1 << pb) - 1)) + 1;
        }
        let r = self.regions.push(r).map_err(|_| BuddyError::TooManyRegions)?;
        let zone = &self.zones[z];
        let mut area = zone.area.lock();
        area.add_range(&self.ctx(), r, first, end);
        zone.free.fetch_add(end - first, Ordering::Relaxed);
        zone.managed.fetch_add(end - first, Ordering::Relaxed);
        Ok(AddReport { regions: 1, frames: end - first, metadata_frames: meta_frames, skipped_frames: 0 })
    }

    /// Recomputes min/low/high watermarks and lower-zone reserves from the
    /// managed sizes, with Linux's formulas.
    fn recompute_watermarks(&self) {
        let managed: [u64; 3] = core::array::from_fn(|z| self.zones[z].managed.load(Ordering::Relaxed));
        let total: u64 = managed.iter().sum();
        if total == 0 {
            return;
        }
        let min_kib = self.config.min_free_kib.unwrap_or_else(|| isqrt(total * 4 * 16).clamp(128, 65536));
        let min_total = min_kib / 4;
        for (z, zone) in self.zones.iter().enumerate() {
            let min = (min_total as u128 * managed[z] as u128 / total as u128) as u64;
            // Linux's watermark_scale_factor 10 = 0.1 % of the zone.
            let step = (managed[z] / 1000).max(min / 4);
            zone.watermarks[WMARK_MIN].store(min, Ordering::Relaxed);
            zone.watermarks[WMARK_LOW].store(min + step, Ordering::Relaxed);
            zone.watermarks[WMARK_HIGH].store(min + 2 * step, Ordering::Relaxed);
            // Keep 1/256 of the higher zones' size free here against
            // allocations that could have used those zones.
            for top in 0..3 {
                let above: u64 = if top > z { managed[z + 1..=top].iter().sum() } else { 0 };
                zone.reserve[top].store(above / 256, Ordering::Relaxed);
            }
        }
    }

    #[inline]
    fn threshold(&self, z: usize, top: usize, flags: AllocFlags) -> u64 {
        let zone = &self.zones[z];
        let min = zone.watermarks[WMARK_MIN].load(Ordering::Relaxed);
        let min = if flags.contains(AllocFlags::ATOMIC) { min / 2 } else { min };
        min + zone.reserve[top].load(Ordering::Relaxed)
    }

    #[inline]
    fn mobility_index(&self, flags: AllocFlags) -> usize {
        if !self.config.mobility_grouping {
            return MOVABLE;
        }
        match flags.mobility() {
            mm_types::Mobility::Unmovable => crate::zone::UNMOVABLE,
            mm_types::Mobility::Reclaimable => crate::zone::RECLAIMABLE,
            mm_types::Mobility::Movable => MOVABLE,
        }
    }

    #[inline]
    fn region(&self, frame: u64) -> &Region<'a> {
        self.regions.find(frame).expect("allocated frames belong to a region")
    }

    /// Allocation from one zone through the per-CPU cache.
    #[inline]
    fn alloc_pcp(&self, z: usize, top: usize, order: u8, mob: usize, flags: AllocFlags) -> Option<u64> {
        let mut guard = self.own_pcp();
        let pcp = &mut *guard;
        let list = &mut pcp.lists[z][order as usize][mob];
        let (frame, r) = match list.pop(&self.regions) {
            Some(x) => {
                pcp.counters.alloc_hits = pcp.counters.alloc_hits.wrapping_add(1);
                x
            }
            None => {
                let (batch, _) = self.pcp_limits[order as usize];
                let zone = &self.zones[z];
                let mut area = zone.area.lock();
                let room = zone.headroom(self.threshold(z, top, flags)) >> order;
                let want = (batch as u64).min(room);
                let ctx = self.ctx();
                let mut got = 0;
                while got < want {
                    // A run of up to the remaining want, split straight into
                    // the list: pushed in reverse so the lowest block is
                    // handed out first.
                    let cap = order + (63 - (want - got).leading_zeros()) as u8;
                    let Some((head, run)) = area.take_run(&ctx, order, cap, mob) else { break };
                    let r = self.region(head);
                    let pieces = 1u64 << (run - order);
                    for i in (0..pieces).rev() {
                        let f = head + (i << order);
                        r.set_state(f, state::cached(order));
                        list.push(r, f);
                    }
                    got += pieces;
                }
                zone.free.fetch_sub(got << order, Ordering::Relaxed);
                drop(area);
                let x = list.pop(&self.regions)?;
                pcp.counters.alloc_misses = pcp.counters.alloc_misses.wrapping_add(1);
                x
            }
        };
        r.set_state(frame, state::allocated(order));
        Some(frame)
    }

    /// Allocation from one zone's buddy lists.
    fn alloc_direct(&self, z: usize, top: usize, order: u8, mob: usize, flags: AllocFlags) -> Option<u64> {
        let zone = &self.zones[z];
        let mut area = zone.area.lock();
        if zone.headroom(self.threshold(z, top, flags)) < 1 << order {
            return None;
        }
        let f = area.take(&self.ctx(), order, mob)?;
        zone.free.fetch_sub(1 << order, Ordering::Relaxed);
        self.region(f).set_state(f, state::allocated(order));
        Some(f)
    }

    #[inline]
    fn try_zones(&self, order: u8, top: usize, mob: usize, flags: AllocFlags) -> Option<u64> {
        for z in (0..=top).rev() {
            if self.zones[z].managed.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let got = if order <= PCP_MAX_ORDER {
                self.alloc_pcp(z, top, order, mob, flags)
            } else {
                self.alloc_direct(z, top, order, mob, flags)
            };
            if got.is_some() {
                return got;
            }
        }
        None
    }

    fn failure(&self, order: u8, top: usize) -> FrameError {
        let order_t = Order::new(order).expect("checked");
        let above_free = self.zones[top + 1..].iter().any(|z| z.free.load(Ordering::Relaxed) >= 1 << order);
        if top < 2 && above_free {
            FrameError::ZoneExhausted { zone: ZoneId::ALL[top], order: order_t }
        } else {
            FrameError::OutOfMemory { order: order_t }
        }
    }

    /// This CPU's caches. With a pinned CPU source this takes no lock, and
    /// honours a drain request another CPU posted first.
    #[inline(always)]
    fn own_pcp(&self) -> PerCpuGuard<'_, PcpSet> {
        let mut pcp = self.pcp.current(&self.cpus);
        // `C::PINNING` is a constant: the locked mode (where nobody posts requests) pays nothing.
        if C::PINNING.is_pinned() && pcp.take_drain_request() {
            self.drain_requested(&mut pcp);
        }
        pcp
    }

    #[cold]
    #[inline(never)]
    fn drain_requested(&self, set: &mut PcpSet) {
        self.drain_set(set, u32::MAX);
    }

    /// Returns every block held in per-CPU caches to the buddy lists (done
    /// before an allocation reports out-of-memory, and by reclaim).
    ///
    /// With a pinned CPU source ([`CpuLocal::PINNING`]) other CPUs' caches
    /// are out of reach: this drains the calling CPU's caches and asks every
    /// other CPU to drain its own, which it does at its next allocation or
    /// free, or when the kernel runs [`drain_local`](Self::drain_local) there
    /// (from an IPI or a per-CPU work item, as Linux's `drain_all_pages`
    /// does). A kernel that needs the frames now runs `drain_local` on every
    /// CPU and waits for them.
    pub fn drain_all(&self) {
        self.pcp.for_each_reachable(&self.cpus, |_, set| self.drain_set(set, u32::MAX));
        self.pcp.request_drain_others(&self.cpus);
    }

    /// Returns every block held in the calling CPU's caches to the buddy
    /// lists: what a kernel runs on each CPU when [`drain_all`](Self::drain_all)
    /// has to reach the others with a pinned CPU source.
    pub fn drain_local(&self) {
        let mut pcp = self.pcp.current(&self.cpus);
        let _ = pcp.take_drain_request();
        self.drain_set(&mut pcp, u32::MAX);
    }

    /// Returns every block held in CPU `cpu`'s caches to the buddy lists
    /// from another CPU: for a CPU going offline (hot-unplug) with a pinned
    /// CPU source. With a locked one, this takes the slot lock as usual.
    ///
    /// # Safety
    ///
    /// With a pinned CPU source, CPU `cpu` runs no operation on this
    /// allocator during the call (it is offline, parked, or known idle).
    pub unsafe fn drain_cpu_quiescent(&self, cpu: usize) {
        // SAFETY: forwarded: the owner of slot `cpu` is stopped for the whole call (pinned mode), or
        // the slot is locked (locked mode).
        let mut pcp = unsafe { self.pcp.cpu_quiescent(cpu) };
        let _ = pcp.take_drain_request();
        self.drain_set(&mut pcp, u32::MAX);
    }

    fn drain_set(&self, set: &mut PcpSet, limit: u32) {
        for (z, zone_lists) in set.lists.iter_mut().enumerate() {
            for (order, by_mob) in zone_lists.iter_mut().enumerate() {
                for list in by_mob.iter_mut().filter(|l| l.len() > 0) {
                    self.return_to_zone(list, z, order as u8, limit);
                }
            }
        }
    }

    #[inline]
    fn check_free(&self, block: FrameBlock) -> Result<(&Region<'a>, u64, u8), FrameError> {
        let f = block.start().as_u64();
        let order = block.order().as_u8();
        if order > self.config.max_order {
            // No block of that order was ever handed out, and its state byte
            // would not be representable (it could read as another state).
            let max = Order::new(self.config.max_order).expect("at most MAX_ORDER_LIMIT");
            return Err(FrameError::OrderTooLarge { order: block.order(), max });
        }
        let r = self.regions.find(f).ok_or(FrameError::NotOwned(block))?;
        let transient = state::cached(order);
        match r.swap_state(f, state::allocated(order), transient) {
            Ok(()) => Ok((r, f, order)),
            Err(b) => Err(self.bad_free(r, block, b)),
        }
    }

    /// Why freeing `block`, whose head byte is `b` (not "allocated with the
    /// block's order"), is refused. (Error path only.)
    fn bad_free(&self, r: &Region<'a>, block: FrameBlock, b: u8) -> FrameError {
        match state::decode(b) {
            FrameState::Allocated { order } => {
                FrameError::WrongOrder { block, allocated: Order::new(order).expect("small") }
            }
            FrameState::Free { .. } | FrameState::Cached { .. } => FrameError::DoubleFree(block),
            FrameState::Tail => self.classify_tail(r, block),
        }
    }

    /// A free named a tail frame: inside a free or per-CPU cached block it is
    /// a double free, inside an allocated one a misaligned free. (Error path
    /// only.)
    fn classify_tail(&self, r: &Region<'a>, block: FrameBlock) -> FrameError {
        let f = block.start().as_u64();
        for o in 1..=self.config.max_order {
            let head = f & !((1u64 << o) - 1);
            if !r.contains(head) {
                break;
            }
            match state::decode(r.state(head)) {
                FrameState::Tail => continue,
                FrameState::Free { order, .. } | FrameState::Cached { order } if order >= o => {
                    return FrameError::DoubleFree(block)
                }
                _ => break,
            }
        }
        FrameError::Misaligned(block)
    }

    /// Allocates a run of `frames` contiguous frames whose first frame
    /// number is a multiple of `align` (in frames), optionally inside
    /// `within`, from the zones `flags` allow. The run is recorded as
    /// allocated blocks (its aligned decomposition), freed with
    /// [`free_contiguous`](Self::free_contiguous) or block by block.
    ///
    /// This walks the zone's blocks (linear in their number): it is meant for
    /// rare requests such as DMA buffers and huge pages, like Linux's
    /// `alloc_contig_range`.
    pub fn allocate_contiguous(
        &self,
        frames: u64,
        align: u64,
        within: Option<PhysRange>,
        flags: AllocFlags,
    ) -> Result<FrameRange, BuddyError> {
        let flags = flags.validate()?;
        if frames == 0 {
            return Err(BuddyError::ZeroLength);
        }
        if !align.is_power_of_two() {
            return Err(BuddyError::BadAlignment(align));
        }
        let (lo, hi) = match within {
            Some(w) => {
                let f = w.frames_inward();
                (f.start().as_u64(), f.start().as_u64() + f.len())
            }
            None => (0, u64::MAX),
        };
        let top = flags.highest_zone().index();
        for attempt in 0..2 {
            for z in (0..=top).rev() {
                if let Some(start) = self.contiguous_in_zone(z, top, frames, align, lo, hi, flags) {
                    let range = FrameRange::new(FrameNumber::new(start).expect("managed"), frames).expect("managed");
                    if flags.contains(AllocFlags::ZERO) {
                        for (head, order) in aligned_blocks(start, start + frames, self.config.max_order) {
                            self.zero(head, order);
                        }
                    }
                    return Ok(range);
                }
            }
            if attempt == 0 && !flags.contains(AllocFlags::NO_WAIT) {
                self.drain_all();
            }
        }
        Err(BuddyError::NoContiguousRange { frames })
    }

    #[allow(clippy::too_many_arguments)]
    fn contiguous_in_zone(
        &self,
        z: usize,
        top: usize,
        frames: u64,
        align: u64,
        lo: u64,
        hi: u64,
        flags: AllocFlags,
    ) -> Option<u64> {
        let zone = &self.zones[z];
        let mut area = zone.area.lock();
        if zone.headroom(self.threshold(z, top, flags)) < frames {
            return None;
        }
        let ctx = self.ctx();
        for r in self.regions.iter().filter(|r| r.zone == z && r.start < hi && lo < r.end) {
            let mut run: Option<(u64, u64)> = None;
            let mut found = None;
            r.for_each_block(r.start, r.end, |head, b| {
                if found.is_some() {
                    return;
                }
                let FrameState::Free { order, .. } = state::decode(b) else {
                    run = None;
                    return;
                };
                let end = head + (1 << order);
                run = Some(match run {
                    Some((s, e)) if e == head => (s, end),
                    _ => (head, end),
                });
                let (s, e) = run.expect("just set");
                let cand = s.max(lo).next_multiple_of(align);
                if cand + frames <= e.min(hi) {
                    found = Some((s, cand));
                }
            });
            if let Some((run_start, start)) = found {
                self.carve(&mut area, &ctx, r, run_start, start, start + frames);
                zone.free.fetch_sub(frames, Ordering::Relaxed);
                return Some(start);
            }
        }
        None
    }

    /// Takes `[start, end)` out of the free run that begins at `run_start`:
    /// unlinks the free blocks overlapping it, gives back the parts outside,
    /// and marks the taken part as allocated blocks.
    fn carve(&self, area: &mut FreeArea, ctx: &Ctx<'_, 'a>, r: &Region<'a>, run_start: u64, start: u64, end: u64) {
        let mut head = run_start;
        while head < end {
            let order = area.unlink(ctx, r, head);
            let block_end = head + (1 << order);
            if head < start {
                area.add_range(ctx, r, head, start.min(block_end));
            }
            if block_end > end {
                area.add_range(ctx, r, end.max(head), block_end);
            }
            head = block_end;
        }
        for (h, o) in aligned_blocks(start, end, self.config.max_order) {
            r.set_state(h, state::allocated(o));
        }
    }

    /// Frees a run from [`allocate_contiguous`](Self::allocate_contiguous).
    /// Every block of the run is checked before any is freed.
    pub fn free_contiguous(&self, range: FrameRange) -> Result<(), FrameError> {
        let start = range.start().as_u64();
        let blocks = || aligned_blocks(start, start + range.len(), self.config.max_order);
        // The caller's range, not yet known to be ours: blocks built with the checks.
        let checked = |head, order| {
            FrameBlock::new(FrameNumber::new(head).expect("inside the range"), Order::new(order).expect("small"))
                .expect("aligned inside the range")
        };
        for (head, order) in blocks() {
            let block = checked(head, order);
            let r = self.regions.find(head).ok_or(FrameError::NotOwned(block))?;
            let b = r.state(head);
            if b != state::allocated(order) {
                return Err(self.bad_free(r, block, b));
            }
        }
        for (head, order) in blocks() {
            mm_types::FrameProvider::free(self, checked(head, order))?;
        }
        Ok(())
    }

    /// Allocates a block of `order` lying entirely inside `within`.
    pub fn allocate_in_range(
        &self,
        order: Order,
        within: PhysRange,
        flags: AllocFlags,
    ) -> Result<FrameBlock, BuddyError> {
        if order.as_u8() > self.config.max_order {
            return Err(
                FrameError::OrderTooLarge { order, max: Order::new(self.config.max_order).expect("small") }.into()
            );
        }
        let r = self.allocate_contiguous(order.frames(), order.frames(), Some(within), flags)?;
        Ok(FrameBlock::new(r.start(), order).expect("aligned by construction"))
    }

    fn zero(&self, head: u64, order: u8) {
        // SAFETY: the block was just allocated: nothing else uses it.
        unsafe { self.mem.zero_block(block_of(head, order)) }.expect("managed memory is reachable");
    }

    // ----- statistics -----

    /// Frames managed, all zones.
    pub fn managed_frames(&self) -> u64 {
        self.zones.iter().map(|z| z.managed.load(Ordering::Relaxed)).sum()
    }

    /// Frames on the buddy lists, all zones (per-CPU caches not included).
    pub fn free_frame_count(&self) -> u64 {
        self.zones.iter().map(|z| z.free.load(Ordering::Relaxed)).sum()
    }

    /// Frames held in per-CPU caches, all CPUs; with a pinned CPU source,
    /// the calling CPU's caches only (the others are out of reach without
    /// their owners; [`drain_all`](Self::drain_all) asks them to drain).
    pub fn cached_frames(&self) -> u64 {
        let mut n = 0;
        self.pcp.for_each_reachable(&self.cpus, |_, s| n += s.frames());
        n
    }

    /// Frames held in one CPU slot's caches.
    ///
    /// # Panics
    ///
    /// With a pinned CPU source, if `cpu` is not the calling CPU (another
    /// CPU's caches are out of reach).
    pub fn cpu_cached_frames(&self, cpu: usize) -> u64 {
        if self.pcp.is_pinned() {
            assert_eq!(cpu, self.cpus.current_cpu(), "another CPU's caches are out of reach when pinned");
            return self.pcp.current(&self.cpus).frames();
        }
        self.pcp.cpu(cpu).frames()
    }

    /// How one CPU slot's caches served allocations and frees of orders 0
    /// to [`PCP_MAX_ORDER`] (hits, refills, drains) since the allocator was
    /// made; see [`PcpStats`]. CPUs beyond the `CPUS` slots share a slot,
    /// as they share its caches.
    ///
    /// ```
    /// use mm_buddy::{BuddyAllocator, BuddyConfig};
    /// use mm_types::percpu::SingleCpu;
    /// use mm_types::testkit::SimPhysMemory;
    /// use mm_types::{AllocFlags, FrameProvider, Order, PhysAddr};
    ///
    /// let mem = SimPhysMemory::new(PhysAddr::new(16 << 20)?, 4 << 20);
    /// let buddy: BuddyAllocator<_, _> = BuddyAllocator::new(mem.clone(), SingleCpu, BuddyConfig::default())?;
    /// // SAFETY: this RAM is used by nothing else and outlives the allocator.
    /// unsafe { buddy.add_memory(mem.span())? };
    /// let a = buddy.allocate(Order::ZERO, AllocFlags::empty())?; // refills the empty cache
    /// let b = buddy.allocate(Order::ZERO, AllocFlags::empty())?; // from the cache
    /// buddy.free(a)?;
    /// buddy.free(b)?;
    /// let s = buddy.cpu_pcp_stats(0);
    /// assert_eq!((s.alloc_hits, s.alloc_misses, s.free_hits, s.free_drains), (1, 1, 2, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    ///
    /// With a pinned CPU source, if `cpu` is not the calling CPU (another
    /// CPU's caches are out of reach), as
    /// [`cpu_cached_frames`](Self::cpu_cached_frames).
    pub fn cpu_pcp_stats(&self, cpu: usize) -> PcpStats {
        if self.pcp.is_pinned() {
            assert_eq!(cpu, self.cpus.current_cpu(), "another CPU's caches are out of reach when pinned");
            return self.pcp.current(&self.cpus).counters.stats();
        }
        self.pcp.cpu(cpu).counters.stats()
    }

    /// [`cpu_pcp_stats`](Self::cpu_pcp_stats) summed over all CPU slots;
    /// with a pinned CPU source, the calling CPU's only (the others are out
    /// of reach; each CPU can report its own), as
    /// [`cached_frames`](Self::cached_frames).
    ///
    /// ```
    /// use mm_buddy::{BuddyAllocator, BuddyConfig};
    /// use mm_types::percpu::FixedCpu;
    /// use mm_types::testkit::SimPhysMemory;
    /// use mm_types::{AllocFlags, FrameProvider, Order, PhysAddr};
    ///
    /// let mem = SimPhysMemory::new(PhysAddr::new(16 << 20)?, 4 << 20);
    /// // Two CPU slots; all the work runs on CPU 1.
    /// let cpus = FixedCpu { cpu: 1, count: 2 };
    /// let buddy: BuddyAllocator<_, _, 2> = BuddyAllocator::new(mem.clone(), cpus, BuddyConfig::default())?;
    /// // SAFETY: this RAM is used by nothing else and outlives the allocator.
    /// unsafe { buddy.add_memory(mem.span())? };
    /// let a = buddy.allocate(Order::ZERO, AllocFlags::empty())?;
    /// buddy.free(a)?;
    /// assert_eq!(buddy.cpu_pcp_stats(0).allocations(), 0);
    /// assert_eq!(buddy.cpu_pcp_stats(1).allocations(), 1);
    /// assert_eq!(buddy.pcp_stats(), buddy.cpu_pcp_stats(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pcp_stats(&self) -> PcpStats {
        let mut total = PcpStats::default();
        self.pcp.for_each_reachable(&self.cpus, |_, s| total += s.counters.stats());
        total
    }

    /// Number of regions.
    pub fn regions(&self) -> usize {
        self.regions.len()
    }

    /// A zone's watermarks.
    pub fn watermarks(&self, zone: ZoneId) -> Watermarks {
        let w = &self.zones[zone.index()].watermarks;
        Watermarks {
            min: w[WMARK_MIN].load(Ordering::Relaxed),
            low: w[WMARK_LOW].load(Ordering::Relaxed),
            high: w[WMARK_HIGH].load(Ordering::Relaxed),
        }
    }

    /// Where a zone's free memory stands against its watermarks (what a
    /// reclaim driver asks: below low? how many frames to reach high?).
    pub fn watermark_state(&self, zone: ZoneId) -> WatermarkState {
        let z = &self.zones[zone.index()];
        let free = z.free.load(Ordering::Relaxed);
        WatermarkState::new(free, self.watermarks(zone), z.managed.load(Ordering::Relaxed))
    }

    /// Free blocks per order in a zone (like `/proc/buddyinfo`).
    pub fn buddyinfo(&self, zone: ZoneId) -> [u64; ORDERS] {
        self.zones[zone.index()].area.lock().counts()
    }

    /// Everything about one zone.
    pub fn zone_stats(&self, zone: ZoneId) -> ZoneStats {
        let z = &self.zones[zone.index()];
        let (free_blocks, claimed) = {
            let a = z.area.lock();
            (a.counts(), a.claimed_pageblocks)
        };
        let mut cached = 0;
        self.pcp.for_each_reachable(&self.cpus, |_, s| cached += s.zone_frames(zone.index()));
        ZoneStats {
            zone,
            managed_frames: z.managed.load(Ordering::Relaxed),
            free_frames: z.free.load(Ordering::Relaxed),
            cached_frames: cached,
            free_blocks,
            max_order: self.config.max_order,
            watermarks: self.watermarks(zone),
            claimed_pageblocks: claimed,
        }
    }

    /// Fragmentation of a zone for allocations of `order`.
    pub fn fragmentation(&self, zone: ZoneId, order: Order) -> Fragmentation {
        Fragmentation::from_counts(&self.buddyinfo(zone), order.as_u8())
    }

    /// Checks every invariant of `MODEL.md` that can be observed from the
    /// metadata (1, 3, 4 and 9), under all locks; for tests and fuzzing. It
    /// walks all memory: linear in the number of blocks. With a pinned CPU
    /// source only the calling CPU's per-CPU lists are in reach, so
    /// invariant 1 is checked as "they hold at most the cached frames".
    pub fn check(&self) -> Result<(), &'static str> {
        let mut guards: [Option<mm_types::sync::MutexGuard<'_, FreeArea>>; 3] = [None, None, None];
        for (z, g) in guards.iter_mut().enumerate() {
            *g = Some(self.zones[z].area.lock());
        }
        let mut heads = [[[0u64; MOBILITIES]; ORDERS]; 3];
        let mut free = [0u64; 3];
        let mut cached = [0u64; 3];
        for r in self.regions.iter() {
            let mut at = r.start;
            while at < r.end {
                let b = r.state(at);
                let order = state::head_order(b);
                if order > self.config.max_order || at % (1 << order) != 0 || !r.contains_block(at, order) {
                    return Err("1: a block is misaligned, too large or crosses its region");
                }
                match state::decode(b) {
                    FrameState::Tail => return Err("1: a region walk met a tail where a head belongs"),
                    FrameState::Free { order, mobility } => {
                        heads[r.zone][order as usize][mobility] += 1;
                        free[r.zone] += 1 << order;
                        if order < self.config.max_order {
                            let buddy = at ^ (1 << order);
                            if r.contains_block(buddy, order)
                                && matches!(state::decode(r.state(buddy)), FrameState::Free { order: o, .. } if o == order)
                            {
                                return Err("4: two free buddies of one order were not merged");
                            }
                        }
                    }
                    FrameState::Cached { order } => cached[r.zone] += 1 << order,
                    FrameState::Allocated { .. } => {}
                }
                for t in at + 1..at + (1 << order) {
                    if r.state(t) != state::TAIL {
                        return Err("1: a frame inside a block is marked as a head");
                    }
                }
                at += 1 << order;
            }
        }
        for z in 0..3 {
            let area = guards[z].as_ref().expect("locked");
            for (o, by_mob) in heads[z].iter().enumerate() {
                for (m, &n) in by_mob.iter().enumerate() {
                    if area.lists[o][m].len() != n {
                        return Err("3: a free list's length differs from the free heads of its order and mobility");
                    }
                    let mut walked = 0;
                    let mut bad = false;
                    area.lists[o][m].for_each(&self.regions, |f| {
                        walked += 1;
                        let ok = self.regions.find(f).is_some_and(|r| {
                            r.zone == z && state::decode(r.state(f)) == FrameState::Free { order: o as u8, mobility: m }
                        });
                        bad |= !ok;
                    });
                    if bad || walked != n {
                        return Err("3: a free list holds a block whose byte disagrees");
                    }
                }
            }
            if self.zones[z].free.load(Ordering::Relaxed) != free[z] {
                return Err("3: a zone's free counter differs from its free blocks");
            }
        }
        let mut pcp_frames = [0u64; 3];
        let mut over_high = false;
        let all = self.pcp.for_each_reachable(&self.cpus, |_, s| {
            for (z, frames) in pcp_frames.iter_mut().enumerate() {
                *frames += s.zone_frames(z);
                for (o, by_mob) in s.lists[z].iter().enumerate() {
                    let (_, high) = self.pcp_limits[o];
                    over_high |= by_mob.iter().any(|l| l.len() > high);
                }
            }
        });
        // With a pinned CPU source only this CPU's lists are in reach: they hold at most the cached
        // frames.
        if if all { pcp_frames != cached } else { pcp_frames.iter().zip(&cached).any(|(p, c)| p > c) } {
            return Err("1: per-CPU lists and cached heads disagree");
        }
        if over_high {
            return Err("9: a per-CPU list is above its high mark");
        }
        Ok(())
    }
}

/// Most reserved ranges [`BuddyAllocator::add_boot_memory`] accepts.
pub const MAX_RESERVED: usize = 16;

const ZONE_DMA_END: u64 = (16 << 20) >> 12;
const ZONE_DMA32_END: u64 = (1 << 32) >> 12;

fn block_of(head: u64, order: u8) -> FrameBlock {
    // SAFETY: every block the allocator names is one of its managed frames (below `MAX_FRAMES`, so far
    // inside the physical address space), of an order at most `max_order`, and naturally aligned: the
    // buddy lists hold only such blocks, and splits and merges keep them so.
    unsafe { FrameBlock::new_unchecked(head, order) }
}

fn isqrt(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    // Newton's iteration from above converges to floor(sqrt(n)).
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

// SAFETY: blocks come off the buddy or per-CPU lists, which hold only free frames of managed regions,
// and are marked allocated before return, so no frame is handed out twice until freed (MODEL 1, 2);
// zones are searched only up to the highest zone the flags allow (MODEL 5); ZERO blocks are zeroed;
// the allocator writes only its links into free blocks and never touches an allocated block.
unsafe impl<M: PhysMemory, C: CpuLocal, const CPUS: usize> mm_types::FrameProvider for BuddyAllocator<'_, M, C, CPUS> {
    #[inline]
    fn allocate(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        let flags = flags.validate()?;
        let o = order.as_u8();
        // Fast path: a hit in this CPU's cache of the preferred zone.
        if o <= PCP_MAX_ORDER {
            let z = self.preferred_zone[flags.highest_zone().index()].load(Ordering::Relaxed) as usize;
            if z < 3 {
                let mob = self.mobility_index(flags);
                // A pending drain request (pinned mode) is honoured out of line, so the hit path
                // keeps its registers.
                let Some(mut pcp) = self.pcp.current_fast(&self.cpus) else {
                    return self.allocate_after_drain(order, flags);
                };
                if let Some((f, r)) = pcp.lists[z][o as usize][mob].pop(&self.regions) {
                    r.set_state(f, state::allocated(o));
                    pcp.counters.alloc_hits = pcp.counters.alloc_hits.wrapping_add(1);
                    drop(pcp);
                    if flags.contains(AllocFlags::ZERO) {
                        self.zero(f, o);
                    }
                    return Ok(block_of(f, o));
                }
            }
        }
        self.allocate_slow(order, flags)
    }

    #[inline]
    fn free(&self, block: FrameBlock) -> Result<(), FrameError> {
        let (r, f, order) = self.check_free(block)?;
        if order <= PCP_MAX_ORDER {
            let mob = if self.config.mobility_grouping { r.pageblock_mobility(f) } else { MOVABLE };
            let Some(mut pcp) = self.pcp.current_fast(&self.cpus) else {
                self.free_after_drain(r, f, order, mob);
                return Ok(());
            };
            self.push_pcp(&mut pcp, r, f, order, mob);
            Ok(())
        } else {
            let zone = &self.zones[r.zone];
            let mut area = zone.area.lock();
            area.free(&self.ctx(), r, f, order);
            zone.free.fetch_add(1 << order, Ordering::Relaxed);
            Ok(())
        }
    }
}

impl<M: PhysMemory, C: CpuLocal, const CPUS: usize> BuddyAllocator<'_, M, C, CPUS> {
    /// Everything but a per-CPU cache hit: refills, larger orders, zone
    /// fallback, draining before reporting failure.
    #[inline(never)]
    fn allocate_slow(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        let o = order.as_u8();
        if o > self.config.max_order {
            return Err(FrameError::OrderTooLarge { order, max: Order::new(self.config.max_order).expect("small") });
        }
        let top = flags.highest_zone().index();
        let mob = self.mobility_index(flags);
        let frame = match self.try_zones(o, top, mob, flags) {
            Some(f) => f,
            None if flags.contains(AllocFlags::NO_WAIT) => return Err(self.failure(o, top)),
            None => {
                self.drain_all();
                self.try_zones(o, top, mob, flags).ok_or_else(|| self.failure(o, top))?
            }
        };
        if flags.contains(AllocFlags::ZERO) {
            self.zero(frame, o);
        }
        Ok(block_of(frame, o))
    }

    /// A drain request was pending (pinned mode): honour it, then allocate.
    #[cold]
    #[inline(never)]
    fn allocate_after_drain(&self, order: Order, flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        self.drain_local();
        mm_types::FrameProvider::allocate(self, order, flags)
    }

    /// A drain request was pending (pinned mode) when freeing a block that
    /// `check_free` already took: honour it, then cache the block.
    #[cold]
    #[inline(never)]
    fn free_after_drain(&self, r: &Region<'_>, f: u64, order: u8, mob: usize) {
        let mut pcp = self.own_pcp();
        self.push_pcp(&mut pcp, r, f, order, mob);
    }

    /// Pushes a freed block (already marked cached) on this CPU's list,
    /// draining a batch past the high mark.
    #[inline(always)]
    fn push_pcp(&self, pcp: &mut PcpSet, r: &Region<'_>, f: u64, order: u8, mob: usize) {
        // One add on the fast path; the drains are counted out of line and the hits derived.
        pcp.counters.frees = pcp.counters.frees.wrapping_add(1);
        let list = &mut pcp.lists[r.zone][order as usize][mob];
        list.push(r, f);
        if list.len() > self.pcp_limits[order as usize].1 {
            pcp.counters.free_drains = pcp.counters.free_drains.wrapping_add(1);
            self.drain_batch(list, r.zone, order);
        }
    }

    /// Returns one batch from a per-CPU list above its high mark to the zone.
    #[inline(never)]
    fn drain_batch(&self, list: &mut crate::free_list::Stack, z: usize, order: u8) {
        self.return_to_zone(list, z, order, self.pcp_limits[order as usize].0);
    }

    /// Frees up to `limit` blocks of `order` from a per-CPU list into zone
    /// `z`'s buddy lists (coalescing), under the zone lock.
    fn return_to_zone(&self, list: &mut crate::free_list::Stack, z: usize, order: u8, limit: u32) {
        let zone = &self.zones[z];
        let ctx = self.ctx();
        let mut area = zone.area.lock();
        let mut n = 0u64;
        while n < limit as u64 {
            let Some((x, r)) = list.pop(&self.regions) else { break };
            area.free(&ctx, r, x, order);
            n += 1;
        }
        zone.free.fetch_add(n << order, Ordering::Relaxed);
    }
}
