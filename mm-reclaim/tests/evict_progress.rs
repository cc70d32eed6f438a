//! `evict` returns `None` only when no tracked page is evictable, after work
//! linear in the pages tracked (MODEL 3), for every policy: locked pages
//! filling the queue a policy looks at first must not hide evictable pages
//! behind them, and references that never stay cleared (a page hammered by
//! another CPU) must not keep every page.

use std::collections::BTreeSet;

use mm_reclaim::{default_policy, Clock, GenClock, Mode, PageId, Policy, S3Fifo, Scan, Shadow, TwoList, WTinyLfu};

/// Locked pages, pages whose accessed bits are set (once, or for ever),
/// and a count of every question asked.
#[derive(Default)]
struct Host {
    locked: BTreeSet<PageId>,
    bits: BTreeSet<PageId>,
    hammered: bool,
    looks: u64,
}

impl Scan for Host {
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool {
        self.looks += 1;
        self.bits.remove(&page) || self.hammered
    }
    fn is_evictable(&mut self, page: PageId) -> bool {
        self.looks += 1;
        !self.locked.contains(&page)
    }
}

fn insert(p: &mut dyn Policy, page: PageId, shadow: Option<Shadow>) {
    p.insert(page, shadow).unwrap();
}

/// `pages` pages with ids `0..pages`, every one referenced for ever but
/// `free`, which alone is unlocked: the policy must find `free` (and then
/// nothing), within a linear number of looks.
fn hammered_with_one_evictable(p: &mut dyn Policy, pages: PageId, free: PageId) {
    for page in 0..pages {
        insert(p, page, None);
        p.access(page);
    }
    let mut host = Host { locked: (0..pages).filter(|&x| x != free).collect(), hammered: true, ..Host::default() };
    assert_eq!(p.evict(&mut host).map(|v| v.0), Some(free), "{}: the unlocked page is the victim", p.name());
    assert!(host.looks <= 10 * u64::from(pages), "{}: {} looks for {pages} pages", p.name(), host.looks);
    host.looks = 0;
    assert_eq!(p.evict(&mut host), None, "{}: nothing evictable is left", p.name());
    assert!(host.looks <= 10 * u64::from(pages), "{}: {} looks for {pages} pages", p.name(), host.looks);
    p.check().unwrap();
}

/// S3-FIFO (both parameter sets): the small queue holds only locked pages
/// and is at its share, the main queue holds pages with references to
/// spend. Each spent reference used to send the scan round the whole small
/// queue again, so the step budget ran out and `evict` gave up with 90
/// evictable pages (the `reclaim_model` crashes: "s3fifo: gave up").
#[test]
#[cfg_attr(miri, ignore = "safe code only (the crate forbids unsafe): slow interpreted")]
fn s3fifo_finds_the_main_queue_behind_a_locked_small_queue() {
    for mut p in [S3Fifo::new(256, 100), S3Fifo::with_params(256, 100, 10, 300, 1)] {
        // 90 pages through the small queue and out: their shadows are ghost
        // hits, so they come back into the main queue.
        for page in 0..90 {
            insert(&mut p, page, None);
        }
        let mut host = Host::default();
        let shadows: Vec<(PageId, Shadow)> = (0..90).map(|_| p.evict(&mut host).unwrap()).collect();
        for (page, shadow) in shadows {
            insert(&mut p, page, Some(shadow));
            for _ in 0..3 {
                p.access(page);
            }
        }
        // 30 locked pages in the small queue (a tenth of 100 is its share).
        for page in 100..130 {
            insert(&mut p, page, None);
        }
        let mut host = Host { locked: (100..130).collect(), ..Host::default() };
        let (victim, _) = p.evict(&mut host).expect("90 pages of the main queue are evictable");
        assert!(victim < 90, "victim {victim} is from the main queue");
        // 30 looks at the small queue, 3 references spent by each of 90
        // pages, the victim: linear, not one round of the small queue per
        // reference.
        assert!(host.looks <= 2 * (30 + 270 + 2), "{} looks", host.looks);
        assert_eq!(p.len(), 119);
        p.check().unwrap();
    }
    hammered_with_one_evictable(&mut S3Fifo::new(256, 100), 100, 40);
}

/// W-TinyLFU: the window holds only locked pages, above its target, that
/// lose their duels, and the main region's pages have references to spend.
/// Each losing candidate is held until the window is all held; the main
/// region's victim must still be found, after work linear in the pages.
#[test]
#[cfg_attr(miri, ignore = "safe code only (the crate forbids unsafe): slow interpreted")]
fn wtinylfu_finds_the_main_region_behind_a_locked_window() {
    for mut p in [WTinyLfu::new(256, 100), default_policy(256, 100, Mode::AccessedBits)] {
        // 100 pages, then one eviction: the window shrinks to its target
        // and the rest fill the main region.
        for page in 0..100 {
            insert(&mut p, page, None);
        }
        let mut host = Host::default();
        let (first, _) = p.evict(&mut host).unwrap();
        // 30 locked newcomers, each losing its duel (seen once, against
        // main pages seen twice) and so held, one after the other.
        for page in 100..130 {
            insert(&mut p, page, None);
        }
        for page in (0..100).filter(|&x| x != first) {
            p.access(page);
        }
        let mut host = Host { locked: (100..130).collect(), ..Host::default() };
        let (victim, _) = p.evict(&mut host).expect("the main region's pages are evictable");
        assert!(victim < 100, "victim {victim} is from the main region");
        assert!(host.looks <= 2 * (30 + 3 * 130 + 130), "{} looks", host.looks);
        assert_eq!(p.len(), 128);
        p.check().unwrap();
    }
    hammered_with_one_evictable(&mut WTinyLfu::new(256, 100), 100, 40);
    hammered_with_one_evictable(&mut WTinyLfu::new(256, 10), 100, 40);
}

/// Two lists: the inactive list is all locked, and so is the active list
/// but for its youngest page. Every deactivation used to cost a round of
/// the inactive list, so the step budget ran out before the evictable page
/// was deactivated.
#[test]
#[cfg_attr(miri, ignore = "safe code only (the crate forbids unsafe): slow interpreted")]
fn twolist_deactivates_through_a_locked_inactive_list() {
    let mut p = TwoList::new(256);
    for page in 0..100 {
        insert(&mut p, page, None);
        p.access(page);
        p.access(page); // active; page 99 ends at the active head
    }
    for page in 100..200 {
        insert(&mut p, page, None);
    }
    let mut host = Host { locked: (0..200).filter(|&x| x != 99).collect(), ..Host::default() };
    assert_eq!(p.evict(&mut host).map(|v| v.0), Some(99));
    // 100 inactive pages looked at once, 100 deactivated and looked at.
    assert!(host.looks <= 3 * 200 + 4, "{} looks", host.looks);
    host.looks = 0;
    assert_eq!(p.evict(&mut host), None, "nothing evictable is left");
    assert!(host.looks <= 3 * 200 + 4, "{} looks", host.looks);
    p.check().unwrap();
    hammered_with_one_evictable(&mut TwoList::new(256), 100, 40);
}

/// CLOCK: one unlocked page among locked ones is found whether or not its
/// references stay cleared (they used to keep every page going round).
#[test]
#[cfg_attr(miri, ignore = "safe code only (the crate forbids unsafe): slow interpreted")]
fn clock_finds_the_one_evictable_page() {
    let mut p = Clock::new(256);
    for page in 0..100 {
        insert(&mut p, page, None);
        p.access(page);
    }
    let mut host =
        Host { locked: (0..100).filter(|&x| x != 70).collect(), bits: (0..100).collect(), ..Host::default() };
    assert_eq!(p.evict(&mut host).map(|v| v.0), Some(70));
    assert!(host.looks <= 4 * 100, "{} looks", host.looks);
    p.check().unwrap();
    hammered_with_one_evictable(&mut Clock::new(256), 100, 40);
}

/// Generations: the same, with the pages spread over several generations.
#[test]
#[cfg_attr(miri, ignore = "safe code only (the crate forbids unsafe): slow interpreted")]
fn genclock_finds_the_one_evictable_page() {
    let mut p = GenClock::new(256);
    for page in 0..100 {
        insert(&mut p, page, None);
        if page % 10 == 0 {
            // Age: referenced pages move to younger generations.
            p.access(page);
            let _ = p.evict(&mut Host { locked: (0..256).collect(), ..Host::default() });
        }
    }
    let mut host =
        Host { locked: (0..100).filter(|&x| x != 70).collect(), bits: (0..100).collect(), ..Host::default() };
    assert_eq!(p.evict(&mut host).map(|v| v.0), Some(70));
    assert!(host.looks <= 4 * 100, "{} looks", host.looks);
    p.check().unwrap();
    hammered_with_one_evictable(&mut GenClock::new(256), 100, 40);
}
