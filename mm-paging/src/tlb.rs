//! TLB maintenance: every operation that changes a live mapping returns a
//! [`Flush`] that must be dealt with; a [`FlushBatch`] collects several and
//! flushes per page up to a threshold, then everything; a [`Shootdown`]
//! hook sends a batch to the other CPUs of an SMP kernel.

use mm_types::VirtAddr;
use mm_types::PAGE_BYTES;

/// Something that invalidates TLB entries on the current CPU.
pub trait TlbFlush {
    /// Invalidates the translation of one page.
    fn flush_page(&mut self, va: VirtAddr);
    /// Invalidates all non-global translations.
    fn flush_all(&mut self);
}

/// Sends a batch of invalidations to the other CPUs that may cache the
/// address space (implemented by the kernel with IPIs).
pub trait Shootdown {
    /// Makes every other CPU apply `batch`; returns when they have.
    fn shootdown(&self, batch: &FlushBatch);
}

/// Single-CPU kernels: nothing to send.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoShootdown;

impl Shootdown for NoShootdown {
    fn shootdown(&self, _batch: &FlushBatch) {}
}

/// The TLB invalidations one operation needs.
#[must_use = "the TLB may still hold the old translation: flush, batch or explicitly ignore it"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    start: u64,
    pages: u64,
}

impl Flush {
    /// No invalidation needed (nothing that was live changed).
    pub const NONE: Flush = Flush { start: 0, pages: 0 };

    pub(crate) fn range(start: VirtAddr, pages: u64) -> Flush {
        Flush { start: start.as_u64(), pages }
    }

    /// Number of 4 KiB pages whose translation changed.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Whether nothing needs flushing.
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// Merges two records (the covering range of both).
    pub fn merge(self, other: Flush) -> Flush {
        if self.pages == 0 {
            return other;
        }
        if other.pages == 0 {
            return self;
        }
        let start = self.start.min(other.start);
        let end = (self.start + self.pages * PAGE_BYTES).max(other.start + other.pages * PAGE_BYTES);
        Flush { start, pages: (end - start) / PAGE_BYTES }
    }

    /// Flushes now, page by page up to the default threshold, else all.
    pub fn flush(self, tlb: &mut impl TlbFlush) {
        let mut b = FlushBatch::new();
        b.add(self);
        b.finish(tlb, &NoShootdown);
    }

    /// Adds this record to a batch.
    pub fn batch(self, batch: &mut FlushBatch) {
        batch.add(self);
    }

    /// Drops the record: correct only when the address space is not live on
    /// any CPU (being built, or torn down and followed by a full flush).
    pub fn ignore(self) {}
}

/// Most page addresses a batch records before it switches to a full flush.
pub const BATCH_PAGES: usize = 32;

/// Invalidations collected over several operations.
#[must_use = "a batch must be finished to flush the TLB"]
#[derive(Clone, Debug)]
pub struct FlushBatch {
    pages: [u64; BATCH_PAGES],
    count: usize,
    threshold: usize,
    all: bool,
}

impl Default for FlushBatch {
    fn default() -> Self {
        FlushBatch::new()
    }
}

impl FlushBatch {
    /// An empty batch with the default threshold ([`BATCH_PAGES`]).
    pub const fn new() -> Self {
        FlushBatch { pages: [0; BATCH_PAGES], count: 0, threshold: BATCH_PAGES, all: false }
    }

    /// An empty batch that flushes everything once more than `threshold`
    /// pages (at most [`BATCH_PAGES`]) are recorded.
    pub fn with_threshold(threshold: usize) -> Self {
        FlushBatch { threshold: threshold.min(BATCH_PAGES), ..FlushBatch::new() }
    }

    /// Records an operation's invalidations.
    pub fn add(&mut self, f: Flush) {
        if self.all || f.pages == 0 {
            return;
        }
        if self.count as u64 + f.pages > self.threshold as u64 {
            self.all = true;
            return;
        }
        for i in 0..f.pages {
            self.pages[self.count] = f.start + i * PAGE_BYTES;
            self.count += 1;
        }
    }

    /// Whether the batch will flush everything.
    pub fn is_full_flush(&self) -> bool {
        self.all
    }

    /// The pages recorded (empty after switching to a full flush).
    pub fn pages(&self) -> impl Iterator<Item = VirtAddr> + '_ {
        let n = if self.all { 0 } else { self.count };
        self.pages[..n].iter().map(|&p| VirtAddr::new(p).expect("recorded from valid addresses"))
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        !self.all && self.count == 0
    }

    /// Flushes the local TLB, then has `shootdown` flush the others.
    pub fn finish(self, tlb: &mut impl TlbFlush, shootdown: &impl Shootdown) {
        if self.is_empty() {
            return;
        }
        if self.all {
            tlb.flush_all();
        } else {
            for p in self.pages() {
                tlb.flush_page(p);
            }
        }
        shootdown.shootdown(&self);
    }
}

/// The TLB of the CPU this code runs on, through `invlpg` and CR3 reloads
/// (the `x86_64` crate). Bare metal only.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[derive(Debug)]
pub struct HardwareTlb(());

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
impl HardwareTlb {
    /// # Safety
    ///
    /// Must run at CPL 0 (`invlpg` and CR3 writes fault in user mode).
    pub unsafe fn new() -> Self {
        HardwareTlb(())
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
impl TlbFlush for HardwareTlb {
    fn flush_page(&mut self, va: VirtAddr) {
        if let Ok(v) = x86_64::VirtAddr::try_from(va) {
            x86_64::instructions::tlb::flush(v);
        } else {
            x86_64::instructions::tlb::flush_all();
        }
    }
    fn flush_all(&mut self) {
        x86_64::instructions::tlb::flush_all();
    }
}

/// A TLB that records what it was asked to do, for tests and for kernels that
/// defer flushing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordingTlb {
    /// Single-page invalidations, in order.
    pub pages: heapless_pages::Pages,
    /// Number of full flushes.
    pub full_flushes: u64,
}

impl TlbFlush for RecordingTlb {
    fn flush_page(&mut self, va: VirtAddr) {
        self.pages.push(va);
    }
    fn flush_all(&mut self) {
        self.full_flushes += 1;
    }
}

/// A fixed-capacity list of page addresses (no heap).
pub mod heapless_pages {
    use mm_types::VirtAddr;

    /// Up to 256 page addresses; more are counted but not kept.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Pages {
        items: [u64; 256],
        len: usize,
        total: u64,
    }

    impl Default for Pages {
        fn default() -> Self {
            Pages { items: [0; 256], len: 0, total: 0 }
        }
    }

    impl Pages {
        /// Records `va`.
        pub fn push(&mut self, va: VirtAddr) {
            if self.len < self.items.len() {
                self.items[self.len] = va.as_u64();
                self.len += 1;
            }
            self.total += 1;
        }

        /// How many were pushed.
        pub fn total(&self) -> u64 {
            self.total
        }

        /// Whether `va` was recorded.
        pub fn contains(&self, va: VirtAddr) -> bool {
            self.items[..self.len].contains(&va.as_u64())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn va(a: u64) -> VirtAddr {
        VirtAddr::new(a).unwrap()
    }

    #[test]
    fn batches_switch_to_full_flush_past_the_threshold() {
        let mut tlb = RecordingTlb::default();
        let mut b = FlushBatch::with_threshold(4);
        b.add(Flush::range(va(0x1000), 2));
        b.add(Flush::NONE);
        b.add(Flush::range(va(0x8000), 2));
        assert!(!b.is_full_flush());
        b.clone().finish(&mut tlb, &NoShootdown);
        assert_eq!((tlb.pages.total(), tlb.full_flushes), (4, 0));
        assert!(tlb.pages.contains(va(0x2000)) && tlb.pages.contains(va(0x9000)));
        b.add(Flush::range(va(0x10000), 1));
        assert!(b.is_full_flush());
        b.finish(&mut tlb, &NoShootdown);
        assert_eq!(tlb.full_flushes, 1);
    }

    #[test]
    fn merge_and_shootdown() {
        let f = Flush::range(va(0x3000), 1).merge(Flush::range(va(0x1000), 1));
        assert_eq!(f.pages(), 3);
        assert_eq!(Flush::NONE.merge(f), f);
        struct Count(core::cell::Cell<u32>);
        impl Shootdown for Count {
            fn shootdown(&self, _: &FlushBatch) {
                self.0.set(self.0.get() + 1);
            }
        }
        let c = Count(core::cell::Cell::new(0));
        let mut b = FlushBatch::new();
        b.add(f);
        b.finish(&mut RecordingTlb::default(), &c);
        assert_eq!(c.0.get(), 1);
        FlushBatch::new().finish(&mut RecordingTlb::default(), &c);
        assert_eq!(c.0.get(), 1, "empty batches send nothing");
    }
}
