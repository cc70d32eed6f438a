//! x86-64 paging: 4-level (48-bit) and 5-level (LA57, 57-bit), chosen at run
//! time, and interop with the `x86_64` crate.

use bitflags::bitflags;
use mm_types::{AddrError, PagingMode, PhysAddr, SwapSlot, VirtAddr};
use x86_64::structures::paging::PageTableFlags;

use crate::arch::PagingArch;
use crate::flags::MapFlags;

bitflags! {
    /// The bits of an x86-64 page-table entry.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct EntryBits: u64 {
        /// Present.
        const PRESENT = 1 << 0;
        /// Writable.
        const WRITABLE = 1 << 1;
        /// User accessible.
        const USER = 1 << 2;
        /// Write-through.
        const WRITE_THROUGH = 1 << 3;
        /// Cache disabled.
        const NO_CACHE = 1 << 4;
        /// Accessed.
        const ACCESSED = 1 << 5;
        /// Dirty (leaves only).
        const DIRTY = 1 << 6;
        /// Huge page (levels 2 and 3).
        const HUGE = 1 << 7;
        /// Global (leaves only).
        const GLOBAL = 1 << 8;
        /// Software bit: in a non-present entry, marks a swap entry.
        const SWAP = 1 << 9;
        /// No execute (requires EFER.NXE).
        const NO_EXECUTE = 1 << 63;
    }
}

/// Physical address bits of an entry (4 KiB-aligned, up to 52 bits).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bits 52-61 of a table entry, which the MMU ignores in non-leaf entries:
/// the live-entry count of the table below plus one (0: not known, as in
/// tables built by other code).
const COUNT_SHIFT: u32 = 52;
const SWAP_AREA_SHIFT: u32 = 1;
const SWAP_OFFSET_SHIFT: u32 = 12;

/// The x86-64 paging format in a given mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X86_64 {
    mode: PagingMode,
    gigantic: bool,
}

impl X86_64 {
    /// 4-level paging (48-bit virtual addresses).
    pub const FOUR_LEVEL: X86_64 = X86_64 { mode: PagingMode::FourLevel, gigantic: true };
    /// 5-level paging (57-bit virtual addresses).
    pub const FIVE_LEVEL: X86_64 = X86_64 { mode: PagingMode::FiveLevel, gigantic: true };

    /// The format for `mode`.
    pub const fn new(mode: PagingMode) -> Self {
        X86_64 { mode, gigantic: true }
    }

    /// Whether 1 GiB pages may be used (CPUID `pdpe1gb`; default yes).
    pub const fn with_1g_pages(mut self, supported: bool) -> Self {
        self.gigantic = supported;
        self
    }

    /// The paging mode.
    pub const fn mode(&self) -> PagingMode {
        self.mode
    }

    /// The mode the CPU is running in (CR4.LA57). Bare metal only.
    ///
    /// # Safety
    ///
    /// Must run at CPL 0 (reading CR4 faults in user mode).
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    pub unsafe fn current() -> Self {
        use x86_64::registers::control::{Cr4, Cr4Flags};
        if Cr4::read().contains(Cr4Flags::L5_PAGING) {
            X86_64::FIVE_LEVEL
        } else {
            X86_64::FOUR_LEVEL
        }
    }
}

impl PagingArch for X86_64 {
    #[inline]
    fn levels(&self) -> u8 {
        self.mode.levels()
    }

    #[inline]
    fn check_va(&self, va: VirtAddr) -> Result<(), AddrError> {
        if va.is_canonical_in(self.mode) {
            Ok(())
        } else {
            Err(AddrError::NotCanonical { addr: va.as_u64(), mode: self.mode })
        }
    }

    #[inline]
    fn leaf_level(&self, level: u8) -> bool {
        level == 1 || level == 2 || (level == 3 && self.gigantic)
    }

    #[inline]
    fn is_present(&self, entry: u64) -> bool {
        entry & EntryBits::PRESENT.bits() != 0
    }

    #[inline]
    fn is_leaf(&self, entry: u64, level: u8) -> bool {
        level == 1 || entry & EntryBits::HUGE.bits() != 0
    }

    #[inline(always)]
    fn leaf(&self, phys: PhysAddr, flags: MapFlags, level: u8) -> u64 {
        let mut e = phys.as_u64() | EntryBits::PRESENT.bits();
        if level > 1 {
            e |= EntryBits::HUGE.bits();
        }
        e | entry_bits(flags).bits()
    }

    #[inline]
    fn leaf_phys(&self, entry: u64, level: u8) -> PhysAddr {
        let mask = ADDR_MASK & !(crate::arch::level_span(level) - 1);
        PhysAddr::new_truncate(entry & mask)
    }

    #[inline]
    fn leaf_flags(&self, entry: u64, _level: u8) -> MapFlags {
        map_flags(EntryBits::from_bits_truncate(entry))
    }

    #[inline]
    fn table(&self, phys: PhysAddr) -> u64 {
        phys.as_u64() | (EntryBits::PRESENT | EntryBits::WRITABLE | EntryBits::USER).bits()
    }

    #[inline]
    fn table_phys(&self, entry: u64) -> PhysAddr {
        PhysAddr::new_truncate(entry & ADDR_MASK)
    }

    #[inline]
    fn table_count_shift(&self) -> Option<u32> {
        Some(COUNT_SHIFT)
    }

    #[inline]
    fn access_bits(&self) -> (u64, u64) {
        (EntryBits::ACCESSED.bits(), EntryBits::DIRTY.bits())
    }

    fn swap_entry(&self, swap: SwapSlot) -> u64 {
        EntryBits::SWAP.bits() | (swap.area() as u64) << SWAP_AREA_SHIFT | swap.offset() << SWAP_OFFSET_SHIFT
    }

    fn swap_of(&self, entry: u64) -> Option<SwapSlot> {
        if entry & EntryBits::PRESENT.bits() != 0 || entry & EntryBits::SWAP.bits() == 0 {
            return None;
        }
        SwapSlot::new(((entry >> SWAP_AREA_SHIFT) & 0xff) as u8, entry >> SWAP_OFFSET_SHIFT)
    }
}

/// Entry bits for architecture-neutral flags (leaf entries), by moving
/// each flag to its entry bit with masks and shifts (no branch, no per-flag
/// test). `entry_bits_agree_with_the_flag_by_flag_table` checks it against
/// the table flag by flag, for every combination.
#[inline(always)]
pub fn entry_bits(flags: MapFlags) -> EntryBits {
    const _: () = assert!(
        MapFlags::WRITE.bits() == 1 << 1
            && MapFlags::EXECUTE.bits() == 1 << 2
            && MapFlags::USER.bits() == 1 << 3
            && MapFlags::GLOBAL.bits() == 1 << 4
            && MapFlags::NO_CACHE.bits() == 1 << 5
            && MapFlags::WRITE_THROUGH.bits() == 1 << 6
            && MapFlags::ACCESSED.bits() == 1 << 7
            && MapFlags::DIRTY.bits() == 1 << 8,
        "the shifts below assume these flag bits"
    );
    let f = flags.bits() as u64;
    let m = |flag: MapFlags| flag.bits() as u64;
    EntryBits::from_bits_retain(
        (f & m(MapFlags::WRITE)) // bit 1 -> WRITABLE (1)
            | ((f & (m(MapFlags::USER) | m(MapFlags::NO_CACHE))) >> 1) // 3 -> USER (2), 5 -> NO_CACHE (4)
            | ((f & m(MapFlags::WRITE_THROUGH)) >> 3) // 6 -> WRITE_THROUGH (3)
            | ((f & (m(MapFlags::ACCESSED) | m(MapFlags::DIRTY))) >> 2) // 7 -> ACCESSED (5), 8 -> DIRTY (6)
            | ((f & m(MapFlags::GLOBAL)) << 4) // 4 -> GLOBAL (8)
            | ((!f & m(MapFlags::EXECUTE)) << 61), // not 2 -> NO_EXECUTE (63)
    )
}

/// Architecture-neutral flags of leaf entry bits (present entries are
/// readable).
#[inline]
pub fn map_flags(b: EntryBits) -> MapFlags {
    let e = b.bits();
    let bit = |entry_bit: EntryBits, flag: MapFlags| if e & entry_bit.bits() != 0 { flag.bits() } else { 0 };
    let f = MapFlags::READ.bits()
        | bit(EntryBits::WRITABLE, MapFlags::WRITE)
        | bit(EntryBits::USER, MapFlags::USER)
        | bit(EntryBits::WRITE_THROUGH, MapFlags::WRITE_THROUGH)
        | bit(EntryBits::NO_CACHE, MapFlags::NO_CACHE)
        | bit(EntryBits::ACCESSED, MapFlags::ACCESSED)
        | bit(EntryBits::DIRTY, MapFlags::DIRTY)
        | bit(EntryBits::GLOBAL, MapFlags::GLOBAL)
        | if e & EntryBits::NO_EXECUTE.bits() == 0 { MapFlags::EXECUTE.bits() } else { 0 };
    MapFlags::from_bits_retain(f)
}

impl From<MapFlags> for PageTableFlags {
    /// The `x86_64` crate's flags for a present leaf with these rights.
    fn from(f: MapFlags) -> Self {
        PageTableFlags::from_bits_truncate((entry_bits(f) | EntryBits::PRESENT).bits())
    }
}

impl From<PageTableFlags> for MapFlags {
    fn from(f: PageTableFlags) -> Self {
        map_flags(EntryBits::from_bits_truncate(f.bits()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_bits_agree_with_the_flag_by_flag_table() {
        let table = [
            (MapFlags::WRITE, EntryBits::WRITABLE),
            (MapFlags::USER, EntryBits::USER),
            (MapFlags::WRITE_THROUGH, EntryBits::WRITE_THROUGH),
            (MapFlags::NO_CACHE, EntryBits::NO_CACHE),
            (MapFlags::ACCESSED, EntryBits::ACCESSED),
            (MapFlags::DIRTY, EntryBits::DIRTY),
            (MapFlags::GLOBAL, EntryBits::GLOBAL),
        ];
        for bits in 0..1u16 << 9 {
            let flags = MapFlags::from_bits_truncate(bits);
            let mut want = EntryBits::empty();
            for (flag, entry_bit) in table {
                want.set(entry_bit, flags.contains(flag));
            }
            want.set(EntryBits::NO_EXECUTE, !flags.contains(MapFlags::EXECUTE));
            assert_eq!(entry_bits(flags), want, "{flags:?}");
            assert_eq!(map_flags(want) | (flags & MapFlags::READ), flags | MapFlags::READ, "round trip of {flags:?}");
        }
    }

    #[test]
    fn entry_encoding() {
        let a = X86_64::FOUR_LEVEL;
        let pa = PhysAddr::new(0x20_0000).unwrap();
        let e = a.leaf(pa, MapFlags::READ | MapFlags::WRITE, 2);
        assert!(a.is_present(e) && a.is_leaf(e, 2));
        assert_eq!(a.leaf_phys(e, 2), pa);
        assert_eq!(a.leaf_flags(e, 2), MapFlags::READ | MapFlags::WRITE);
        assert_ne!(e & EntryBits::NO_EXECUTE.bits(), 0);
        let t = a.table(pa);
        assert!(!a.is_leaf(t, 2) && a.table_phys(t) == pa);
        let s = SwapSlot::new(31, (1 << 50) - 1).unwrap();
        let se = a.swap_entry(s);
        assert!(!a.is_present(se));
        assert_eq!(a.swap_of(se), Some(s));
        assert_eq!(a.swap_of(0), None);
        assert_eq!(a.swap_of(e), None);
        assert!(a.check_va(VirtAddr::new(0x0000_8000_0000_0000).unwrap()).is_err());
        assert!(X86_64::FIVE_LEVEL.check_va(VirtAddr::new(0x0000_8000_0000_0000).unwrap()).is_ok());
        assert!(!a.with_1g_pages(false).leaf_level(3));
    }

    #[test]
    fn x86_64_crate_flags() {
        let f = MapFlags::READ | MapFlags::WRITE | MapFlags::USER;
        let x: PageTableFlags = f.into();
        assert!(x.contains(PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::USER_ACCESSIBLE));
        assert!(x.contains(PageTableFlags::NO_EXECUTE));
        assert_eq!(MapFlags::from(x), f);
    }
}
