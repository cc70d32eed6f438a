//! The evictor writes a batch of victims together: the consecutive slots
//! of a CPU's cluster go to the store as one request each run, and a page
//! whose write fails (its run, then itself alone) stays resident, dirty,
//! in the swap cache, where the next eviction finds and writes it.

use mm_wiring::scenario::Touch;
use mm_wiring::sim::{Sim, SimConfig};

/// Pages of the task: enough for several batches of victims (fewer under
/// miri, where every page is checksummed and copied at interpreter speed).
const PAGES: u64 = if cfg!(miri) { 20 } else { 48 };

fn value(i: u64) -> u64 {
    0x5eed_0000 + i * 0x1_0001
}

/// A task with `PAGES` pages, each written with its own value.
fn written() -> (Sim, mm_vma::SpaceId, mm_types::VirtAddr) {
    let mut sim = Sim::new(SimConfig {
        ram: if cfg!(miri) { 256 << 10 } else { 512 << 10 },
        swap_slots: 256,
        second_area: 0,
        zswap: None,
    });
    let t = sim.spawn(1)[0];
    let base = sim.map(t, PAGES * 4096).unwrap();
    for i in 0..PAGES {
        sim.write(t, base + i * 4096, value(i)).unwrap();
    }
    (sim, t, base)
}

fn swapped(sim: &Sim, t: mm_vma::SpaceId, a: mm_types::VirtAddr) -> bool {
    let s = sim.machine.tasks.get(t).unwrap();
    let l = s.lock().page_table().lookup(a).unwrap();
    matches!(l, mm_paging::Lookup::Swapped(_))
}

#[test]
#[cfg_attr(miri, ignore = "the failed-request test below runs the same paths under miri")]
fn a_batch_of_victims_goes_to_the_store_in_runs() {
    let (mut sim, t, base) = written();
    let store = sim.store.clone().unwrap();
    let (requests, pages) = (store.writes(), sim.machine.device.swap().stats().writes);
    sim.machine.reclaim_now(u64::MAX);
    sim.machine.reclaim_now(u64::MAX);
    let pages = sim.machine.device.swap().stats().writes - pages;
    let requests = store.writes() - requests;
    let out = (0..PAGES).filter(|i| swapped(&sim, t, base + i * 4096)).count() as u64;
    assert!(out >= PAGES / 2, "most pages went to swap: {out}");
    assert!(pages >= out, "{pages} pages written for {out} swapped");
    // Runs of up to 8 (the simulated disk's limit): far fewer requests
    // than pages.
    assert!(requests * 3 <= pages, "{requests} requests for {pages} pages");
    for i in 0..PAGES {
        assert_eq!(sim.read(t, base + i * 4096), Ok(value(i)), "page {i}");
    }
    sim.machine.device.swap().check().unwrap();
    sim.machine.check_clean_cache().unwrap();
}

#[test]
fn a_failed_request_keeps_its_pages_resident_and_dirty() {
    let (mut sim, t, base) = written();
    let store = sim.store.clone().unwrap();
    // Every request fails, runs and the single-slot retries after them:
    // no page is written.
    store.fail_writes(true);
    let failed = sim.machine.device.swap().stats().write_errors;
    sim.machine.reclaim_now(u64::MAX);
    let failed = sim.machine.device.swap().stats().write_errors - failed;
    assert!(failed >= 4, "{failed} pages failed");
    // Every failed page is still in memory, in the swap cache and dirty:
    // the only copy of its data.
    let cached = sim.machine.device.swap().cached();
    let dirty = cached.iter().filter(|(_, f)| sim.machine.mm.is_dirty(*f)).count() as u64;
    assert_eq!((cached.len() as u64, dirty), (PAGES, PAGES), "every page cached and dirty");
    sim.machine.device.swap().check().unwrap();
    sim.machine.check_clean_cache().unwrap();
    // The next evictions write them.
    store.fail_writes(false);
    for _ in 0..4 {
        sim.machine.reclaim_now(u64::MAX);
    }
    for i in 0..PAGES {
        assert_eq!(sim.read(t, base + i * 4096), Ok(value(i)), "page {i}");
    }
    sim.machine.device.swap().check().unwrap();
    sim.machine.check_clean_cache().unwrap();
}
