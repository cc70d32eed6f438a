//! Loom models of the compressed tier (MODEL 7): a write that must write
//! back the oldest pooled page races a read of that page, and a discard
//! of it. The read sees the page (from the pool or from below, never in
//! between); the pool's bookkeeping holds in every interleaving.
#![cfg(all(loom, feature = "zswap"))]

use std::sync::Arc;

use mm_swap::zswap::{Compressed, ZswapConfig};
use mm_types::testkit::loom_model::{model, spawn};
use mm_types::testkit::{MemStore, PageSample};
use mm_types::{BackingStore, SLOT_SIZE};

/// A pool that holds one text page: the second write must write the first
/// back.
fn one_page_pool() -> Arc<Compressed<MemStore>> {
    let probe = Compressed::new(MemStore::new(1), ZswapConfig::default());
    probe.write_slot(0, &PageSample::Text.page(1)).unwrap();
    let one = probe.stats().pool_bytes as usize;
    let z = Compressed::new(MemStore::new(4), ZswapConfig { pool_limit: one + one / 4, ..ZswapConfig::default() });
    z.write_slot(0, &PageSample::Text.page(1)).unwrap();
    Arc::new(z)
}

#[test]
fn write_back_racing_a_read() {
    model(|| {
        let z = one_page_pool();
        let z2 = z.clone();
        let t = spawn(move || z2.write_slot(1, &PageSample::Text.page(2)).unwrap());
        let mut buf = [0u8; SLOT_SIZE];
        z.read_slot(0, &mut buf).unwrap();
        assert!(buf == PageSample::Text.page(1), "the page being written back read wrong");
        t.join().unwrap();
        assert!(!z.is_pooled(0) && z.is_pooled(1));
        z.check().unwrap();
    });
}

#[test]
fn write_back_racing_a_discard() {
    model(|| {
        let z = one_page_pool();
        let z2 = z.clone();
        let t = spawn(move || z2.write_slot(1, &PageSample::Text.page(2)).unwrap());
        z.discard(0);
        t.join().unwrap();
        assert!(!z.is_pooled(0));
        let mut buf = [0u8; SLOT_SIZE];
        z.read_slot(1, &mut buf).unwrap();
        assert!(buf == PageSample::Text.page(2));
        z.check().unwrap();
    });
}
