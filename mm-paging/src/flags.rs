//! Architecture-neutral mapping flags.

use bitflags::bitflags;
use mm_types::Protection;

bitflags! {
    /// What a mapping allows and how it is cached, independent of the
    /// architecture's entry format ([`PagingArch`](crate::PagingArch)
    /// translates them to entry bits).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct MapFlags: u16 {
        /// Readable. Every mapping must have it (x86-64 cannot express a
        /// mapping that is writable or executable but not readable).
        const READ = 1 << 0;
        /// Writable.
        const WRITE = 1 << 1;
        /// Executable.
        const EXECUTE = 1 << 2;
        /// Accessible from user mode.
        const USER = 1 << 3;
        /// Global: kept in the TLB across address-space switches.
        const GLOBAL = 1 << 4;
        /// Uncached (device memory).
        const NO_CACHE = 1 << 5;
        /// Write-through caching.
        const WRITE_THROUGH = 1 << 6;
        /// Accessed (set by the hardware on use).
        const ACCESSED = 1 << 7;
        /// Dirty (set by the hardware on write).
        const DIRTY = 1 << 8;
    }
}

impl MapFlags {
    /// Flags of a kernel read-write data mapping.
    pub const KERNEL_DATA: MapFlags = MapFlags::READ.union(MapFlags::WRITE);
    /// Flags of a kernel code mapping.
    pub const KERNEL_CODE: MapFlags = MapFlags::READ.union(MapFlags::EXECUTE);

    /// The flags that grant access (as opposed to caching and status bits).
    pub const fn protection(self) -> Protection {
        let mut p = Protection::empty();
        if self.contains(MapFlags::READ) {
            p = p.union(Protection::READ);
        }
        if self.contains(MapFlags::WRITE) {
            p = p.union(Protection::WRITE);
        }
        if self.contains(MapFlags::EXECUTE) {
            p = p.union(Protection::EXEC);
        }
        if self.contains(MapFlags::USER) {
            p = p.union(Protection::USER);
        }
        p
    }

    /// Mapping flags granting `p` (plus READ, which every mapping has).
    pub const fn from_protection(p: Protection) -> MapFlags {
        let mut f = MapFlags::READ;
        if p.contains(Protection::WRITE) {
            f = f.union(MapFlags::WRITE);
        }
        if p.contains(Protection::EXEC) {
            f = f.union(MapFlags::EXECUTE);
        }
        if p.contains(Protection::USER) {
            f = f.union(MapFlags::USER);
        }
        f
    }
}

bitflags! {
    /// Which page sizes a range operation may use, besides 4 KiB.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct HugePages: u8 {
        /// 2 MiB pages where alignment allows.
        const SIZE_2M = 1 << 0;
        /// 1 GiB pages where alignment allows.
        const SIZE_1G = 1 << 1;
    }
}

impl HugePages {
    /// Whether a leaf at `level` (1 = 4 KiB) is allowed.
    pub(crate) fn allows_level(self, level: u8) -> bool {
        match level {
            1 => true,
            2 => self.contains(HugePages::SIZE_2M),
            3 => self.contains(HugePages::SIZE_1G),
            _ => false,
        }
    }
}

bitflags! {
    /// The hardware-maintained status bits that reclaim harvests.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct AccessBits: u8 {
        /// The page was accessed.
        const ACCESSED = 1 << 0;
        /// The page was written.
        const DIRTY = 1 << 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_round_trip() {
        let f = MapFlags::READ | MapFlags::WRITE | MapFlags::USER;
        assert_eq!(f.protection(), Protection::READ | Protection::WRITE | Protection::USER);
        assert_eq!(MapFlags::from_protection(f.protection()), f);
        assert!(HugePages::empty().allows_level(1) && !HugePages::empty().allows_level(2));
        assert!(HugePages::all().allows_level(3) && !HugePages::all().allows_level(4));
    }
}
