//! The engine is generic: a RISC-V Sv39-style format (3 levels, 39-bit
//! addresses, leaves marked by R/W/X bits, physical page number at bit 10)
//! runs through the same `PageTable` code as x86-64.

use mm_paging::{HugePages, MapFlags, PageTable, PagingArch, PagingError};
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{AddrError, Order, PageSize, PagingMode, PhysAddr, SwapSlot, VirtAddr};

#[derive(Clone, Copy)]
struct Sv39;

const V: u64 = 1 << 0;
const R: u64 = 1 << 1;
const W: u64 = 1 << 2;
const X: u64 = 1 << 3;
const U: u64 = 1 << 4;
const G: u64 = 1 << 5;
const A: u64 = 1 << 6;
const D: u64 = 1 << 7;
const SWAP: u64 = 1 << 8;
const PPN_SHIFT: u32 = 10;

/// Which entry bit carries which flag.
const FLAG_BITS: [(MapFlags, u64); 7] = [
    (MapFlags::READ, R),
    (MapFlags::WRITE, W),
    (MapFlags::EXECUTE, X),
    (MapFlags::USER, U),
    (MapFlags::GLOBAL, G),
    (MapFlags::ACCESSED, A),
    (MapFlags::DIRTY, D),
];

impl PagingArch for Sv39 {
    fn levels(&self) -> u8 {
        3
    }
    fn check_va(&self, va: VirtAddr) -> Result<(), AddrError> {
        let v = va.as_u64();
        if (((v << 25) as i64) >> 25) as u64 == v {
            Ok(())
        } else {
            Err(AddrError::NotCanonical { addr: v, mode: PagingMode::FourLevel })
        }
    }
    fn leaf_level(&self, level: u8) -> bool {
        level <= 3
    }
    fn is_present(&self, e: u64) -> bool {
        e & V != 0
    }
    fn is_leaf(&self, e: u64, _level: u8) -> bool {
        e & (R | W | X) != 0
    }
    fn leaf(&self, phys: PhysAddr, flags: MapFlags, _level: u8) -> u64 {
        let bits = FLAG_BITS.iter().filter(|(f, _)| flags.contains(*f)).fold(0, |e, (_, b)| e | b);
        V | (phys.as_u64() >> 12) << PPN_SHIFT | bits
    }
    fn leaf_phys(&self, e: u64, _level: u8) -> PhysAddr {
        PhysAddr::new((e >> PPN_SHIFT) << 12).unwrap()
    }
    fn leaf_flags(&self, e: u64, _level: u8) -> MapFlags {
        FLAG_BITS.iter().filter(|(_, b)| e & b != 0).fold(MapFlags::empty(), |f, (flag, _)| f | *flag)
    }
    fn table(&self, phys: PhysAddr) -> u64 {
        V | (phys.as_u64() >> 12) << PPN_SHIFT
    }
    fn table_phys(&self, e: u64) -> PhysAddr {
        PhysAddr::new((e >> PPN_SHIFT) << 12).unwrap()
    }
    fn access_bits(&self) -> (u64, u64) {
        (A, D)
    }
    fn swap_entry(&self, s: SwapSlot) -> u64 {
        SWAP | (s.area() as u64) << 9 | s.offset() << 14
    }
    fn swap_of(&self, e: u64) -> Option<SwapSlot> {
        (e & V == 0 && e & SWAP != 0).then(|| SwapSlot::new(((e >> 9) & 31) as u8, e >> 14)).flatten()
    }
}

#[test]
fn sv39_through_the_same_engine() {
    let ram = SimPhysMemory::new(PhysAddr::new(0).unwrap(), 4 << 20);
    let frames = RefFrameProvider::new(&ram).with_max_order(Order::ZERO);
    let mut pt = PageTable::new(Sv39, ram.clone(), &frames).unwrap();
    let f = MapFlags::READ | MapFlags::WRITE;
    // 1 GiB + 2 MiB + 4 KiB: one page of each size (level 3 is the root here).
    let va = VirtAddr::new(0x1_0000_0000 - 0x1000 - (2 << 20)).unwrap();
    let len = 0x1000 + (2 << 20) + (1 << 30);
    pt.map_range(va, PhysAddr::new(0x8000_0000 - 0x1000 - (2 << 20)).unwrap(), len, f, HugePages::all())
        .unwrap()
        .ignore();
    let mut sizes = Vec::new();
    pt.for_each_mapping(va, len, |m| sizes.push(m.size)).unwrap();
    assert_eq!(sizes, [PageSize::Size4KiB, PageSize::Size2MiB, PageSize::Size1GiB]);
    let t = pt.translate(VirtAddr::new(0x1_1234_5678).unwrap()).unwrap();
    assert_eq!((t.phys.as_u64(), t.size, t.flags), (0x9234_5678, PageSize::Size1GiB, f));
    // Split by protect, then unmap everything: only the root is left.
    pt.protect_range(VirtAddr::new(0x1_0020_0000).unwrap(), 0x1000, MapFlags::READ).unwrap().ignore();
    assert_eq!(pt.translate(VirtAddr::new(0x1_0020_0000).unwrap()).unwrap().flags, MapFlags::READ);
    assert_eq!(pt.translate(VirtAddr::new(0x1_0020_1000).unwrap()).unwrap().flags, f);
    let mut n = 0;
    pt.unmap_range(va, len, |_| n += 1).unwrap().ignore();
    assert_eq!(n, 1 + 1 + 511 + 512);
    assert_eq!(pt.table_pages(), 1);
    // Sv39 addresses stop at 39 bits (bit 38 is the sign bit).
    let e =
        pt.map_range(VirtAddr::new(0x40_0000_0000).unwrap(), PhysAddr::new(0).unwrap(), 0x1000, f, HugePages::all());
    assert!(matches!(e, Err(PagingError::BadAddress(_))));
}
