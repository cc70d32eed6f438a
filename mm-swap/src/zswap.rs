//! A compressed in-memory tier in front of any [`BackingStore`] (after
//! Linux's zswap), behind the `zswap` feature.
//!
//! [`Compressed`] is itself a [`BackingStore`]: put it in front of a disk
//! and give it to [`Swap::add_area`](crate::Swap::add_area), and swap-outs
//! land in memory, compressed, instead of on the disk:
//!
//! - a page that is one 64-bit word repeated (zero pages above all) is kept
//!   as that word, charged nothing;
//! - any other page is compressed with LZ4 (the `lz4_flex` crate, `no_std`,
//!   safe code only); if it does not shrink to [`ZswapConfig::max_stored`]
//!   bytes it is written through to the store below;
//! - the pool holds at most [`ZswapConfig::pool_limit`] compressed bytes.
//!   A page that does not fit makes room by writing the oldest compressed
//!   pages back to the store below (decompressed, at their own slot). If that
//!   fails the new page is written through instead, and nothing pooled is
//!   dropped: a write-back that failed keeps its page in the pool;
//! - a slot reads back its last successful write: a rewrite drops the
//!   slot's old pooled page only once the new page is stored, so a failed
//!   write through leaves the old page readable (MODEL 7).
//!
//! Reads come from the pool when the slot is there, else from the store
//! below. [`BackingStore::discard`] (called by [`Swap`](crate::Swap) when a
//! slot is freed) drops a slot's pooled page. A kernel can also shrink the
//! pool under memory pressure with [`Compressed::write_back`], for example
//! from a reclaim shrinker.
//!
//! Write-back runs under the pool's lock, so a read of a page being written
//! back waits for it and then finds it below; readers of other pooled pages
//! wait too. Compression and decompression of new pages run outside it.
//!
//! ```
//! use mm_swap::zswap::{Compressed, ZswapConfig};
//! use mm_types::testkit::MemStore;
//! use mm_types::BackingStore;
//!
//! let disk = MemStore::new(64);
//! let z = Compressed::new(&disk, ZswapConfig { pool_limit: 16 << 10, ..ZswapConfig::default() });
//! let zero = [0u8; 4096];
//! let mut text = [0u8; 4096];
//! for (i, b) in text.iter_mut().enumerate() {
//!     *b = b"the quick brown fox "[i % 20];
//! }
//! z.write_slot(0, &zero).unwrap();
//! z.write_slot(1, &text).unwrap();
//! assert_eq!(disk.writes(), 0, "both pages are in memory");
//! let s = z.stats();
//! assert_eq!((s.pages, s.same_filled), (2, 1));
//! assert!(s.pool_bytes < 200, "a repeating page compresses very well");
//!
//! let mut back = [1u8; 4096];
//! z.read_slot(1, &mut back).unwrap();
//! assert_eq!(back, text);
//! z.discard(1);
//! assert_eq!(z.stats().pages, 1);
//! ```

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::sync::atomic::AtomicU64;

use mm_types::sync::atomic::Ordering;
use mm_types::sync::Mutex;
use mm_types::{BackingStore, StoreError, StoreErrorKind, StoreOp, SLOT_SIZE};

/// Settings of a [`Compressed`] tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZswapConfig {
    /// Compressed bytes the pool may hold.
    pub pool_limit: usize,
    /// The largest compressed page kept (at most [`MAX_STORED`]); a page
    /// that does not compress to this is written through.
    pub max_stored: usize,
}

/// The upper bound of [`ZswapConfig::max_stored`]: three quarters of a
/// page. A page that saves less is not worth the CPU time to decompress.
pub const MAX_STORED: usize = SLOT_SIZE * 3 / 4;

impl Default for ZswapConfig {
    /// A 16 MiB pool, pages compressed to 3/4 or better.
    fn default() -> Self {
        ZswapConfig { pool_limit: 16 << 20, max_stored: MAX_STORED }
    }
}

/// What the tier holds and has done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ZswapStats {
    /// Pages in the pool now.
    pub pages: u64,
    /// Of those, pages kept as one repeated word.
    pub same_filled: u64,
    /// Compressed bytes in the pool now.
    pub pool_bytes: u64,
    /// Pages put in the pool, ever.
    pub stored: u64,
    /// Pages written through because they did not compress enough.
    pub incompressible: u64,
    /// Pages written through because the pool had no room.
    pub pool_full: u64,
    /// Pooled pages written back to the store below.
    pub written_back: u64,
    /// Write-backs that failed (the page stayed in the pool).
    pub writeback_errors: u64,
    /// Reads served from the pool.
    pub loads: u64,
}

impl ZswapStats {
    /// Uncompressed bytes per pooled byte over the LZ4-compressed pages in
    /// the pool (the compression ratio). Same-filled pages take no pool
    /// bytes and are left out (count them with
    /// [`same_filled`](Self::same_filled)). `None` without compressed pages.
    pub fn ratio(&self) -> Option<f64> {
        let compressed = self.pages - self.same_filled;
        (compressed > 0 && self.pool_bytes > 0).then(|| compressed as f64 * SLOT_SIZE as f64 / self.pool_bytes as f64)
    }
}

enum Data {
    /// A page of one word repeated.
    Same(u64),
    /// LZ4 block.
    Lz4(Box<[u8]>),
}

impl Data {
    fn cost(&self) -> usize {
        match self {
            Data::Same(_) => 0,
            Data::Lz4(b) => b.len(),
        }
    }

    fn expand(&self, buf: &mut [u8; SLOT_SIZE]) -> bool {
        match self {
            Data::Same(w) => {
                for c in buf.chunks_exact_mut(8) {
                    c.copy_from_slice(&w.to_ne_bytes());
                }
                true
            }
            Data::Lz4(b) => matches!(lz4_flex::block::decompress_into(b, buf), Ok(SLOT_SIZE)),
        }
    }
}

struct Entry {
    /// Insertion order (the oldest is written back first).
    seq: u64,
    data: Data,
    /// The slot's new page is being written through to the store below:
    /// this (its last successful write) stays readable until that write
    /// succeeds, and is out of the write-back order meanwhile (writing it
    /// back would overwrite the new page below).
    pinned: bool,
}

struct Pool {
    entries: BTreeMap<u64, Entry>,
    /// seq -> slot of the compressed (not same-filled) pages, oldest
    /// first: the write-back order.
    order: BTreeMap<u64, u64>,
    next_seq: u64,
    bytes: usize,
    same: u64,
}

impl Pool {
    fn remove(&mut self, slot: u64) -> Option<Entry> {
        let e = self.entries.remove(&slot)?;
        self.bytes -= e.data.cost();
        if matches!(e.data, Data::Same(_)) {
            self.same -= 1;
        } else if !e.pinned {
            self.order.remove(&e.seq);
        }
        Some(e)
    }

    fn insert(&mut self, slot: u64, data: Data) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += data.cost();
        if matches!(data, Data::Same(_)) {
            // Free to keep: never written back to make room.
            self.same += 1;
        } else {
            self.order.insert(seq, slot);
        }
        self.entries.insert(slot, Entry { seq, data, pinned: false });
    }

    /// Puts `e`, just removed, back as `slot`'s page, pinned (out of the
    /// write-back order) while its overwrite goes to the store below.
    /// Returns its sequence number.
    fn put_back_pinned(&mut self, slot: u64, e: Entry) -> u64 {
        let seq = e.seq;
        self.bytes += e.data.cost();
        if matches!(e.data, Data::Same(_)) {
            self.same += 1;
        }
        self.entries.insert(slot, Entry { pinned: true, ..e });
        seq
    }

    /// The overwrite of `slot` failed: its pinned page `seq` (if still
    /// there) is its page again, back in the write-back order.
    fn unpin(&mut self, slot: u64, seq: u64) {
        if let Some(e) = self.entries.get_mut(&slot) {
            if e.seq == seq && e.pinned {
                e.pinned = false;
                if !matches!(e.data, Data::Same(_)) {
                    self.order.insert(seq, slot);
                }
            }
        }
    }

    /// The overwrite of `slot` succeeded: its pinned page `seq` (if still
    /// there) goes.
    fn drop_pinned(&mut self, slot: u64, seq: u64) {
        if self.entries.get(&slot).is_some_and(|e| e.seq == seq && e.pinned) {
            self.remove(slot);
        }
    }
}

const ST_STORED: usize = 0;
const ST_INCOMPRESSIBLE: usize = 1;
const ST_POOL_FULL: usize = 2;
const ST_WRITTEN_BACK: usize = 3;
const ST_WRITEBACK_ERRORS: usize = 4;
const ST_LOADS: usize = 5;

/// A compressed pool in front of the store `S`; see the
/// [module documentation](self).
pub struct Compressed<S> {
    below: S,
    config: ZswapConfig,
    pool: Mutex<Pool>,
    /// Plain counters (statistics, not synchronisation: never modelled).
    stats: [AtomicU64; 6],
}

impl<S: BackingStore> Compressed<S> {
    /// An empty pool in front of `below`. `max_stored` is capped at
    /// [`MAX_STORED`].
    pub fn new(below: S, config: ZswapConfig) -> Compressed<S> {
        let config = ZswapConfig { max_stored: config.max_stored.min(MAX_STORED), ..config };
        Compressed {
            below,
            config,
            pool: Mutex::new(Pool { entries: BTreeMap::new(), order: BTreeMap::new(), next_seq: 0, bytes: 0, same: 0 }),
            stats: [const { AtomicU64::new(0) }; 6],
        }
    }

    /// The store below.
    pub fn below(&self) -> &S {
        &self.below
    }

    fn bump(&self, i: usize) {
        self.stats[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters.
    pub fn stats(&self) -> ZswapStats {
        let (pages, same, bytes) = {
            let p = self.pool.lock();
            (p.entries.len() as u64, p.same, p.bytes as u64)
        };
        let g = |i: usize| self.stats[i].load(Ordering::Relaxed);
        ZswapStats {
            pages,
            same_filled: same,
            pool_bytes: bytes,
            stored: g(ST_STORED),
            incompressible: g(ST_INCOMPRESSIBLE),
            pool_full: g(ST_POOL_FULL),
            written_back: g(ST_WRITTEN_BACK),
            writeback_errors: g(ST_WRITEBACK_ERRORS),
            loads: g(ST_LOADS),
        }
    }

    /// Whether `slot`'s page is in the pool.
    pub fn is_pooled(&self, slot: u64) -> bool {
        self.pool.lock().entries.contains_key(&slot)
    }

    /// Writes back up to `pages` of the oldest compressed pages to the
    /// store below (a shrinker's scan; same-filled pages cost no pool
    /// memory and stay). Returns how many went; stops at the
    /// first failure, which keeps that page pooled.
    pub fn write_back(&self, pages: usize) -> usize {
        let mut pool = self.pool.lock();
        let mut done = 0;
        while done < pages {
            if self.write_back_oldest(&mut pool).is_err() {
                break;
            }
            done += 1;
        }
        done
    }

    /// Writes the oldest pooled page back and drops it from the pool;
    /// `Err(())` if the pool is empty or the write failed (the page stays).
    fn write_back_oldest(&self, pool: &mut Pool) -> Result<(), ()> {
        let (&seq, &slot) = pool.order.first_key_value().ok_or(())?;
        let mut page = [0u8; SLOT_SIZE];
        let ok = pool.entries.get(&slot).is_some_and(|e| e.seq == seq && e.data.expand(&mut page));
        if !ok {
            // Cannot happen: entries and order change together, and the
            // pool only holds blocks it compressed itself.
            return Err(());
        }
        if self.below.write_slot(slot, &page).is_err() {
            self.bump(ST_WRITEBACK_ERRORS);
            return Err(());
        }
        pool.remove(slot);
        self.bump(ST_WRITTEN_BACK);
        Ok(())
    }

    /// The page in pooled form, or `None` if it is to be written through.
    fn shrink(&self, page: &[u8; SLOT_SIZE]) -> Option<Data> {
        let first = u64::from_ne_bytes(page[..8].try_into().expect("8 bytes"));
        if page.chunks_exact(8).all(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")) == first) {
            return Some(Data::Same(first));
        }
        let mut out = [0u8; lz4_flex::block::get_maximum_output_size(SLOT_SIZE)];
        let n = lz4_flex::block::compress_into(page, &mut out).ok()?;
        (n <= self.config.max_stored).then(|| Data::Lz4(Box::from(&out[..n])))
    }

    /// Checks the pool's bookkeeping: order and entries agree (pages
    /// pinned while their slot is written through are out of the order),
    /// the byte and same-filled counts match, and the limit holds.
    pub fn check(&self) -> Result<(), &'static str> {
        let p = self.pool.lock();
        let pinned = p.entries.values().filter(|e| e.pinned && !matches!(e.data, Data::Same(_))).count() as u64;
        if p.order.len() as u64 + p.same + pinned != p.entries.len() as u64 {
            return Err("order and compressed entries differ in size");
        }
        for (seq, slot) in &p.order {
            if p.entries.get(slot).map(|e| (e.seq, e.pinned)) != Some((*seq, false)) {
                return Err("an order entry names no pooled page, or a pinned one");
            }
        }
        let bytes: usize = p.entries.values().map(|e| e.data.cost()).sum();
        let same = p.entries.values().filter(|e| matches!(e.data, Data::Same(_))).count() as u64;
        if bytes != p.bytes || same != p.same {
            return Err("pool byte or same-filled count is off");
        }
        if p.bytes > self.config.pool_limit {
            return Err("pool holds more than its limit");
        }
        Ok(())
    }
}

impl<S: BackingStore> BackingStore for Compressed<S> {
    fn slot_count(&self) -> u64 {
        self.below.slot_count()
    }

    fn read_slot(&self, slot: u64, buf: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.check_slot(StoreOp::Read, slot)?;
        {
            let pool = self.pool.lock();
            if let Some(e) = pool.entries.get(&slot) {
                // Decompression of a block this pool made cannot fail
                // unless memory was corrupted: report it, never guess.
                if !e.data.expand(buf) {
                    return Err(StoreError::slot(StoreOp::Read, slot, StoreErrorKind::Io));
                }
                drop(pool);
                self.bump(ST_LOADS);
                return Ok(());
            }
        }
        self.below.read_slot(slot, buf)
    }

    /// Pools the page, or writes it through to the store below (MODEL 7).
    /// The slot's old pooled page, if any, goes only once the new page is
    /// stored: if the write through fails, the slot still reads back its
    /// last successful write.
    fn write_slot(&self, slot: u64, buf: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.check_slot(StoreOp::Write, slot)?;
        let data = self.shrink(buf);
        let mut pool = self.pool.lock();
        // Out of the pool while room is made (its bytes do not count, and
        // it is not written back: the new page replaces it).
        let old = pool.remove(slot);
        let through = match data {
            None => ST_INCOMPRESSIBLE,
            Some(data) => {
                let need = data.cost();
                let mut room = true;
                while pool.bytes + need > self.config.pool_limit {
                    if self.write_back_oldest(&mut pool).is_err() {
                        room = false;
                        break;
                    }
                }
                if room {
                    pool.insert(slot, data);
                    drop(pool);
                    self.bump(ST_STORED);
                    return Ok(());
                }
                ST_POOL_FULL
            }
        };
        // Written through: the old page stays readable (pinned) until the
        // store below has the new one. It takes no more room than before.
        let pinned = old.map(|e| pool.put_back_pinned(slot, e));
        drop(pool);
        self.bump(through);
        let r = self.below.write_slot(slot, buf);
        if let Some(seq) = pinned {
            let mut pool = self.pool.lock();
            if r.is_ok() {
                pool.drop_pinned(slot, seq);
            } else {
                pool.unpin(slot, seq);
            }
        }
        r
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Pooled pages live in memory (as swap does): only the store below
        // has writes to make durable.
        self.below.flush()
    }

    fn discard(&self, slot: u64) {
        self.pool.lock().remove(slot);
        self.below.discard(slot);
    }
}

impl<S> core::fmt::Debug for Compressed<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Compressed").field("config", &self.config).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_types::testkit::{MemStore, PageSample};

    fn text_page(seed: u64) -> [u8; SLOT_SIZE] {
        PageSample::Text.page(seed)
    }

    fn random_page(seed: u64) -> [u8; SLOT_SIZE] {
        PageSample::Random.page(seed)
    }

    #[test]
    fn kinds_of_page() {
        let z = Compressed::new(MemStore::new(8), ZswapConfig::default());
        let mut pattern = [0u8; SLOT_SIZE];
        for c in pattern.chunks_exact_mut(8) {
            c.copy_from_slice(&0xdead_beef_u64.to_ne_bytes());
        }
        let pages = [[0u8; SLOT_SIZE], pattern, text_page(3), random_page(4)];
        for (i, p) in pages.iter().enumerate() {
            z.write_slot(i as u64, p).unwrap();
        }
        let s = z.stats();
        assert_eq!((s.pages, s.same_filled, s.stored, s.incompressible), (3, 2, 3, 1));
        assert!(s.pool_bytes > 0 && s.pool_bytes <= MAX_STORED as u64, "text compressed to {}", s.pool_bytes);
        assert_eq!(z.below().writes(), 1, "only the random page went below");
        let r = s.ratio().unwrap();
        assert!(r >= (SLOT_SIZE / MAX_STORED) as f64 && r == SLOT_SIZE as f64 / s.pool_bytes as f64);
        for (i, p) in pages.iter().enumerate() {
            let mut back = [0x55u8; SLOT_SIZE];
            z.read_slot(i as u64, &mut back).unwrap();
            assert_eq!(&back, p, "page {i}");
        }
        assert_eq!(z.stats().loads, 3);
        z.check().unwrap();
    }

    #[test]
    fn full_pool_writes_back_oldest_first() {
        let one = {
            let z = Compressed::new(MemStore::new(1), ZswapConfig::default());
            z.write_slot(0, &text_page(1)).unwrap();
            z.stats().pool_bytes as usize
        };
        // Room for about two text pages.
        let z = Compressed::new(MemStore::new(8), ZswapConfig { pool_limit: one * 2 + one / 2, ..Default::default() });
        for s in 0..4 {
            z.write_slot(s, &text_page(1)).unwrap();
        }
        assert!(!z.is_pooled(0) && !z.is_pooled(1) && z.is_pooled(2) && z.is_pooled(3));
        assert_eq!(z.stats().written_back, 2);
        for s in 0..4 {
            let mut back = [0u8; SLOT_SIZE];
            z.read_slot(s, &mut back).unwrap();
            assert_eq!(back, text_page(1), "slot {s}");
        }
        // The store below refuses: the pooled pages stay, the new one goes
        // through (and fails, as the caller must hear).
        z.below().fail_writes(true);
        assert!(z.write_slot(4, &text_page(1)).is_err());
        assert!(z.is_pooled(2) && z.is_pooled(3));
        assert_eq!(z.stats().writeback_errors, 1);
        z.below().fail_writes(false);
        assert_eq!(z.write_back(8), 2);
        assert_eq!(z.stats().pages, 0);
        z.check().unwrap();
    }

    #[test]
    fn rewrite_and_discard_drop_the_old_page() {
        let z = Compressed::new(MemStore::new(2), ZswapConfig::default());
        z.write_slot(1, &text_page(7)).unwrap();
        z.write_slot(1, &random_page(7)).unwrap();
        assert!(!z.is_pooled(1), "the incompressible rewrite replaced the pooled page");
        let mut back = [0u8; SLOT_SIZE];
        z.read_slot(1, &mut back).unwrap();
        assert_eq!(back, random_page(7));
        z.write_slot(1, &text_page(8)).unwrap();
        z.discard(1);
        assert_eq!(z.stats().pool_bytes, 0);
        assert_eq!(z.below().discards(), 1);
        assert!(z.read_slot(2, &mut back).is_err(), "range checked");
        z.check().unwrap();
    }
}
