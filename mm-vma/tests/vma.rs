//! VMA tree cases modelled on the ones Linux's userspace VMA harness checks
//! (merges with each neighbour, merges blocked by incompatible VMAs, splits
//! at the start, middle and end, the map-count limit), plus a per-page model
//! over random sequences.

use std::collections::BTreeMap;

use mm_types::testkit::fuzzing::XorShift;
use mm_types::{Protection, VirtAddr};
use mm_vma::{Backing, Vma, VmaError, VmaFlags, VmaTree};

const P: u64 = 4096;
const RW: Protection = Protection::READ.union(Protection::WRITE);
const R: Protection = Protection::READ;

/// The address of page `n`.
fn pg(n: u64) -> VirtAddr {
    VirtAddr::new(n * P).unwrap()
}

/// The page number of `a`.
fn page_no(a: VirtAddr) -> u64 {
    a.as_u64() / P
}

fn anon(start: u64, end: u64, prot: Protection) -> Vma {
    Vma::anonymous(pg(start), pg(end), prot)
}

fn file(start: u64, end: u64, offset_pages: u64) -> Vma {
    Vma { backing: Backing::Object { object: 7, offset: offset_pages * P }, ..anon(start, end, RW) }
}

fn ranges(t: &VmaTree) -> Vec<(u64, u64)> {
    t.iter().map(|v| (page_no(v.start), page_no(v.end))).collect()
}

#[test]
fn new_mappings_merge_with_each_compatible_neighbour() {
    let mut t = VmaTree::default();
    t.insert(anon(10, 20, RW)).unwrap();
    // Merge with the previous one.
    assert_eq!(t.insert(anon(20, 25, RW)).unwrap(), anon(10, 25, RW));
    // With the next one.
    t.insert(anon(30, 40, RW)).unwrap();
    assert_eq!(t.insert(anon(28, 30, RW)).unwrap(), anon(28, 40, RW));
    assert_eq!(ranges(&t), [(10, 25), (28, 40)]);
    // With both: the hole is filled and three become one.
    assert_eq!(t.insert(anon(25, 28, RW)).unwrap(), anon(10, 40, RW));
    assert_eq!(ranges(&t), [(10, 40)]);
    t.check().unwrap();
}

#[test]
fn incompatible_neighbours_never_merge() {
    let mut t = VmaTree::default();
    t.insert(anon(10, 20, RW)).unwrap();
    t.insert(anon(20, 30, R)).unwrap(); // other protection
    t.insert(Vma { flags: VmaFlags::SHARED, ..anon(30, 40, R) }).unwrap(); // other flags
    t.insert(Vma { flags: VmaFlags::NO_MERGE, ..anon(40, 50, R) }).unwrap();
    t.insert(anon(50, 60, R)).unwrap(); // next to a NO_MERGE one
    t.insert(file(60, 70, 0)).unwrap(); // other backing
    t.insert(file(70, 80, 100)).unwrap(); // same object, discontiguous offset
    t.insert(file(80, 90, 110)).unwrap(); // contiguous with the previous: merges
    assert_eq!(ranges(&t), [(10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 90)]);
    // Offsets that do not line up keep file mappings apart.
    t.insert(file(100, 110, 0)).unwrap();
    t.insert(file(95, 100, 0)).unwrap();
    assert_eq!(t.find(pg(97)).unwrap(), file(95, 100, 0));
    assert_eq!(t.count(), 9);
    t.check().unwrap();
}

#[test]
fn object_offsets_follow_splits_and_merges() {
    let mut t = VmaTree::default();
    t.insert(file(100, 110, 50)).unwrap();
    // Merging in front: the merged VMA starts at the new offset.
    let m = t.insert(file(95, 100, 45)).unwrap();
    assert_eq!(m, file(95, 110, 45));
    assert_eq!(t.find(pg(96)).unwrap().backing, Backing::Object { object: 7, offset: 45 * P });
    // A hole in the middle: the right part's offset advances.
    t.remove_range(pg(100), 2 * P, |_| {}).unwrap();
    assert_eq!(t.find(pg(103)).unwrap(), file(102, 110, 52));
    // Filling the hole with the right offsets merges all three back.
    assert_eq!(t.insert(file(100, 102, 50)).unwrap(), file(95, 110, 45));
    t.check().unwrap();
}

#[test]
fn partial_unmaps_split_at_the_start_middle_and_end() {
    let mut t = VmaTree::default();
    t.insert(anon(10, 40, RW)).unwrap();
    let mut gone = Vec::new();
    // Start.
    t.remove_range(pg(10), 5 * P, |v| gone.push(v)).unwrap();
    assert_eq!(ranges(&t), [(15, 40)]);
    // End.
    t.remove_range(pg(35), 5 * P, |v| gone.push(v)).unwrap();
    assert_eq!(ranges(&t), [(15, 35)]);
    // Middle.
    t.remove_range(pg(20), 5 * P, |v| gone.push(v)).unwrap();
    assert_eq!(ranges(&t), [(15, 20), (25, 35)]);
    assert_eq!(gone, [anon(10, 15, RW), anon(35, 40, RW), anon(20, 25, RW)]);
    // Across a hole and two VMAs, with unmapped parts: fine.
    gone.clear();
    t.remove_range(pg(17), 13 * P, |v| gone.push(v)).unwrap();
    assert_eq!(ranges(&t), [(15, 17), (30, 35)]);
    assert_eq!(gone, [anon(17, 20, RW), anon(25, 30, RW)]);
    // Nothing there: nothing happens.
    t.remove_range(pg(100), P, |_| panic!("nothing to remove")).unwrap();
    assert_eq!(t.remove_range(VirtAddr::new(3).unwrap(), P, |_| {}), Err(VmaError::Unaligned(3)));
    assert_eq!(t.remove_range(pg(1), 0, |_| {}), Err(VmaError::BadRange));
    // A range that would run past the end of the lower half.
    let top = VirtAddr::new(0x00ff_ffff_ffff_f000).unwrap();
    assert_eq!(t.remove_range(top, 2 * P, |_| {}), Err(VmaError::BadRange));
    t.check().unwrap();
}

#[test]
fn malformed_vmas_are_refused() {
    let mut t = VmaTree::default();
    assert_eq!(t.insert(anon(20, 10, RW)), Err(VmaError::BadRange), "reversed");
    assert_eq!(t.insert(anon(10, 10, RW)), Err(VmaError::BadRange), "empty");
    let odd = VirtAddr::new(11 * P + 1).unwrap();
    assert_eq!(t.insert(Vma::anonymous(pg(10), odd, RW)), Err(VmaError::Unaligned(odd.as_u64())));
    // From the lower half across the non-canonical hole into the upper one.
    let upper = VirtAddr::new(0xffff_8000_0000_0000).unwrap();
    assert_eq!(t.insert(Vma::anonymous(pg(10), upper, RW)), Err(VmaError::BadRange));
    assert_eq!(t.count(), 0);
    t.insert(anon(10, 20, RW)).unwrap();
    assert_eq!(t.expand(pg(10), pg(10), upper), Err(VmaError::BadRange));
    assert_eq!(t.expand(pg(11), pg(10), pg(30)), Err(VmaError::NotMapped(pg(11))));
    assert_eq!(ranges(&t), [(10, 20)]);
    t.check().unwrap();
}

#[test]
fn protection_changes_split_then_merge_back() {
    let mut t = VmaTree::default();
    t.insert(anon(10, 40, RW)).unwrap();
    // Middle to read-only: three VMAs.
    t.protect(pg(20), 5 * P, R).unwrap();
    assert_eq!(ranges(&t), [(10, 20), (20, 25), (25, 40)]);
    assert_eq!(t.find(pg(22)).unwrap().prot, R);
    // Start and end.
    t.protect(pg(10), 2 * P, R).unwrap();
    t.protect(pg(38), 2 * P, R).unwrap();
    assert_eq!(ranges(&t), [(10, 12), (12, 20), (20, 25), (25, 38), (38, 40)]);
    // Back to read-write everywhere: one VMA again.
    t.protect(pg(10), 30 * P, RW).unwrap();
    assert_eq!(ranges(&t), [(10, 40)]);
    // Extending a neighbour's protection merges with it.
    t.insert(anon(40, 50, R)).unwrap();
    t.protect(pg(30), 10 * P, R).unwrap();
    assert_eq!(ranges(&t), [(10, 30), (30, 50)]);
    // A hole in the range: refused, nothing changed.
    t.insert(anon(60, 70, RW)).unwrap();
    let before: Vec<_> = t.iter().collect();
    assert_eq!(t.protect(pg(45), 20 * P, RW), Err(VmaError::NotMapped(pg(50))));
    assert_eq!(t.protect(pg(5), 10 * P, RW), Err(VmaError::NotMapped(pg(5))));
    assert_eq!(t.iter().collect::<Vec<_>>(), before);
    t.check().unwrap();
}

#[test]
fn the_map_count_limit_is_checked_before_any_split() {
    let mut t = VmaTree::new(3);
    t.insert(anon(10, 20, RW)).unwrap();
    t.insert(anon(30, 40, RW)).unwrap();
    t.insert(anon(50, 60, RW)).unwrap();
    assert_eq!(t.insert(anon(70, 80, RW)), Err(VmaError::TooManyMappings { limit: 3 }));
    // Merging adds no VMA: allowed at the limit.
    t.insert(anon(60, 65, RW)).unwrap();
    let before: Vec<_> = t.iter().collect();
    // A hole in the middle of one VMA needs a fourth.
    assert_eq!(t.remove_range(pg(12), 2 * P, |_| {}), Err(VmaError::TooManyMappings { limit: 3 }));
    assert_eq!(t.protect(pg(12), 2 * P, R), Err(VmaError::TooManyMappings { limit: 3 }));
    assert_eq!(t.iter().collect::<Vec<_>>(), before);
    // Unmapping a whole VMA or an end is fine.
    t.remove_range(pg(10), 2 * P, |_| {}).unwrap();
    t.remove_range(pg(30), 10 * P, |_| {}).unwrap();
    assert_eq!(t.count(), 2);
    t.check().unwrap();
}

#[test]
fn unmapped_area_searches_top_down_and_bottom_up() {
    let mut t = VmaTree::default();
    t.insert(anon(0x100, 0x200, RW)).unwrap();
    t.insert(anon(0x300, 0x400, RW)).unwrap();
    // Top down below 0x400 pages: the hole [0x200, 0x300) from its top.
    assert_eq!(t.unmapped_area(0x10 * P, P, pg(0), pg(0x400), true), Some(pg(0x2f0)));
    assert_eq!(t.unmapped_area(0x10 * P, P, pg(0), pg(0x400), false), Some(pg(0)));
    assert_eq!(t.unmapped_area(0x10 * P, P, pg(0x100), pg(0x400), false), Some(pg(0x200)));
    assert_eq!(t.unmapped_area(0x101 * P, P, pg(0x100), pg(0x400), false), None);
    assert_eq!(t.find_from(pg(0x250)).unwrap().start, pg(0x300));
    // Bounds in different halves hold no range of addresses.
    let upper = VirtAddr::new(0xffff_8000_0000_0000).unwrap();
    assert_eq!(t.unmapped_area(0x10 * P, P, pg(0), upper, true), None);
    // The upper half on its own is searched as the lower one.
    assert_eq!(t.unmapped_area(0x10 * P, P, upper, upper + 0x20 * P, true), Some(upper + 0x10 * P));
}

/// Per-page model: page -> (prot bits, flags bits, object or u64::MAX, offset in pages).
type Model = BTreeMap<u64, (u8, u16, u64, u64)>;

fn expand(t: &VmaTree) -> Model {
    let mut m = Model::new();
    for v in t.iter() {
        for p in page_no(v.start)..page_no(v.end) {
            let (obj, off) = match v.backing {
                Backing::Anonymous => (u64::MAX, 0),
                Backing::Object { object, offset } => (object as u64, offset / P + (p - page_no(v.start))),
            };
            m.insert(p, (v.prot.bits(), v.flags.bits(), obj, off));
        }
    }
    m
}

#[test]
#[cfg_attr(miri, ignore = "safe code only (the VMA tree has no unsafe): slow interpreted")]
fn random_sequences_match_a_page_model() {
    let rounds = 30;
    for seed in 1..=rounds {
        let mut rng = XorShift(seed);
        let mut t = VmaTree::new(40);
        let mut model = Model::new();
        for step in 0..400 {
            let start = rng.next() % 200;
            let len = 1 + rng.next() % 24;
            let prot = [R, RW, Protection::READ | Protection::EXEC][(rng.next() % 3) as usize];
            let before = model.clone();
            match rng.next() % 3 {
                0 => {
                    let flags = if rng.next() % 8 == 0 { VmaFlags::SHARED } else { VmaFlags::empty() };
                    let backing = if rng.next() % 2 == 0 {
                        Backing::Anonymous
                    } else {
                        Backing::Object { object: (rng.next() % 2) as u32, offset: (start + rng.next() % 2) * P }
                    };
                    let v = Vma { start: pg(start), end: pg(start + len), prot, flags, backing };
                    match t.insert(v) {
                        Ok(_) => {
                            for p in start..start + len {
                                assert!(!model.contains_key(&p), "step {step}: inserted over a mapping");
                                let (obj, off) = match backing {
                                    Backing::Anonymous => (u64::MAX, 0),
                                    Backing::Object { object, offset } => (object as u64, offset / P + p - start),
                                };
                                model.insert(p, (prot.bits(), flags.bits(), obj, off));
                            }
                        }
                        Err(VmaError::Overlap { .. }) => {
                            assert!((start..start + len).any(|p| model.contains_key(&p)), "step {step}")
                        }
                        Err(VmaError::TooManyMappings { .. }) => assert_eq!(t.count(), 40),
                        Err(e) => panic!("step {step}: {e}"),
                    }
                }
                1 => match t.remove_range(pg(start), len * P, |_| {}) {
                    Ok(()) => {
                        for p in start..start + len {
                            model.remove(&p);
                        }
                    }
                    Err(VmaError::TooManyMappings { .. }) => {}
                    Err(e) => panic!("step {step}: {e}"),
                },
                _ => match t.protect(pg(start), len * P, prot) {
                    Ok(()) => {
                        for p in start..start + len {
                            model.get_mut(&p).expect("mapped").0 = prot.bits();
                        }
                    }
                    Err(VmaError::NotMapped(a)) => {
                        assert!(!model.contains_key(&page_no(a)), "step {step}");
                    }
                    Err(VmaError::TooManyMappings { .. }) => {}
                    Err(e) => panic!("step {step}: {e}"),
                },
            }
            let now = expand(&t);
            if now != model {
                panic!("step {step}: the tree differs from the model (before: {} pages)", before.len());
            }
            t.check().unwrap_or_else(|e| panic!("step {step}: {e}"));
        }
    }
}
