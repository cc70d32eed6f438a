//! Physical and virtual addresses.
//!
//! [`PhysAddr`] is any value below 2^52 (the x86-64 architectural limit).
//! [`VirtAddr`] is canonical under at least the widest paging mode, 5-level
//! (57-bit) paging; [`VirtAddr::is_canonical_in`] narrows that to 4-level
//! (48-bit) paging, which page-table code checks for the mode it runs in.
//!
//! Arithmetic is checked: it returns `None` instead of overflowing, leaving the
//! physical address space, or (for virtual addresses) stepping into or across
//! the non-canonical hole between the lower and upper halves. The operators
//! (`addr + bytes`, `addr - bytes`, `end - start`) are the same arithmetic
//! for call sites where the result is known to be valid: they panic where
//! the `checked_*` methods return `None`, as the `x86_64` crate's do.

use core::fmt;
use core::ops::{Add, AddAssign, Sub, SubAssign};

use crate::align;
use crate::error::AddrError;

/// Number of physical address bits on x86-64.
pub const PHYS_ADDR_BITS: u32 = 52;
/// The highest physical address.
pub const PHYS_ADDR_MAX: u64 = (1 << PHYS_ADDR_BITS) - 1;

/// An address type usable in [`AddrRange`](crate::range::AddrRange): byte
/// addresses and page/frame numbers alike.
///
/// The unit of `checked_add` is the type's own unit: bytes for addresses,
/// frames or pages for numbers.
pub trait Address: Copy + Ord + fmt::Debug {
    /// The raw value.
    fn to_u64(self) -> u64;
    /// `self + units`, or `None` if the result is not a valid value of this
    /// type or is not contiguous with `self`.
    fn checked_add(self, units: u64) -> Option<Self>;
    /// How many units `self` lies above `base`, or `None` if it lies below.
    fn units_from(self, base: Self) -> Option<u64> {
        self.to_u64().checked_sub(base.to_u64())
    }
}

/// A physical address (below 2^52).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// Physical address zero.
    pub const ZERO: PhysAddr = PhysAddr(0);
    /// The highest physical address.
    pub const MAX: PhysAddr = PhysAddr(PHYS_ADDR_MAX);

    /// Creates a physical address, rejecting values beyond 52 bits.
    ///
    /// ```
    /// use mm_types::PhysAddr;
    /// assert!(PhysAddr::new(0x1000).is_ok());
    /// assert!(PhysAddr::new(1 << 52).is_err());
    /// ```
    pub const fn new(addr: u64) -> Result<Self, AddrError> {
        if addr > PHYS_ADDR_MAX {
            Err(AddrError::PhysOutOfRange { value: addr })
        } else {
            Ok(PhysAddr(addr))
        }
    }

    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The address made of the low 52 bits of `addr` (for values that are
    /// already masked, such as addresses taken from page-table entries).
    #[inline]
    pub const fn new_truncate(addr: u64) -> Self {
        PhysAddr(addr & PHYS_ADDR_MAX)
    }

    /// `self + bytes`, or `None` beyond [`PhysAddr::MAX`].
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(v) if v <= PHYS_ADDR_MAX => Some(PhysAddr(v)),
            _ => None,
        }
    }

    /// `self - bytes`, or `None` below zero.
    pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
        match self.0.checked_sub(bytes) {
            Some(v) => Some(PhysAddr(v)),
            None => None,
        }
    }

    /// Rounds down to `align` (a power of two).
    pub const fn align_down(self, align: u64) -> Result<Self, AddrError> {
        match align::align_down(self.0, align) {
            Ok(v) => Ok(PhysAddr(v)),
            Err(e) => Err(e),
        }
    }

    /// Rounds up to `align` (a power of two); fails past [`PhysAddr::MAX`].
    pub const fn align_up(self, align: u64) -> Result<Self, AddrError> {
        match align::align_up(self.0, align) {
            Ok(v) => PhysAddr::new(v),
            Err(e) => Err(e),
        }
    }

    /// Whether the address is a multiple of `align` (`false` if `align` is not
    /// a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        align::is_aligned(self.0, align)
    }

    /// Offset within its 4 KiB frame.
    pub const fn page_offset(self) -> u64 {
        self.0 & (crate::PAGE_SIZE as u64 - 1)
    }
}

impl Address for PhysAddr {
    fn to_u64(self) -> u64 {
        self.0
    }
    fn checked_add(self, units: u64) -> Option<Self> {
        PhysAddr::checked_add(self, units)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl Add<u64> for PhysAddr {
    type Output = PhysAddr;

    /// `self + bytes`.
    ///
    /// # Panics
    ///
    /// If the result lies beyond [`PhysAddr::MAX`] (where
    /// [`checked_add`](PhysAddr::checked_add) returns `None`).
    ///
    /// ```
    /// use mm_types::PhysAddr;
    /// let a = PhysAddr::new(0x1000).unwrap();
    /// assert_eq!(a + 0x234, PhysAddr::new(0x1234).unwrap());
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::PhysAddr;
    /// let _ = PhysAddr::MAX + 1;
    /// ```
    #[inline]
    #[track_caller]
    fn add(self, bytes: u64) -> PhysAddr {
        match self.checked_add(bytes) {
            Some(a) => a,
            None => panic!("{self:?} + {bytes:#x} lies beyond the physical address space"),
        }
    }
}

impl AddAssign<u64> for PhysAddr {
    /// `*self = *self + bytes`.
    ///
    /// # Panics
    ///
    /// As `PhysAddr + u64`: if the result lies beyond [`PhysAddr::MAX`].
    ///
    /// ```
    /// use mm_types::PhysAddr;
    /// let mut a = PhysAddr::new(0x1000).unwrap();
    /// a += 0x1000;
    /// assert_eq!(a, PhysAddr::new(0x2000).unwrap());
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::PhysAddr;
    /// let mut a = PhysAddr::MAX;
    /// a += 1;
    /// ```
    #[inline]
    #[track_caller]
    fn add_assign(&mut self, bytes: u64) {
        *self = *self + bytes;
    }
}

impl Sub<u64> for PhysAddr {
    type Output = PhysAddr;

    /// `self - bytes`.
    ///
    /// # Panics
    ///
    /// If the result would lie below zero (where
    /// [`checked_sub`](PhysAddr::checked_sub) returns `None`).
    ///
    /// ```
    /// use mm_types::PhysAddr;
    /// let a = PhysAddr::new(0x1234).unwrap();
    /// assert_eq!(a - 0x234, PhysAddr::new(0x1000).unwrap());
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::PhysAddr;
    /// let _ = PhysAddr::ZERO - 1;
    /// ```
    #[inline]
    #[track_caller]
    fn sub(self, bytes: u64) -> PhysAddr {
        match self.checked_sub(bytes) {
            Some(a) => a,
            None => panic!("{self:?} - {bytes:#x} lies below physical address zero"),
        }
    }
}

impl SubAssign<u64> for PhysAddr {
    /// `*self = *self - bytes`.
    ///
    /// # Panics
    ///
    /// As `PhysAddr - u64`: if the result would lie below zero.
    ///
    /// ```
    /// use mm_types::PhysAddr;
    /// let mut a = PhysAddr::new(0x2000).unwrap();
    /// a -= 0x1000;
    /// assert_eq!(a, PhysAddr::new(0x1000).unwrap());
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::PhysAddr;
    /// let mut a = PhysAddr::ZERO;
    /// a -= 1;
    /// ```
    #[inline]
    #[track_caller]
    fn sub_assign(&mut self, bytes: u64) {
        *self = *self - bytes;
    }
}

impl Sub<PhysAddr> for PhysAddr {
    type Output = u64;

    /// The distance in bytes from `start` up to `self`.
    ///
    /// # Panics
    ///
    /// If `start` lies above `self`.
    ///
    /// ```
    /// use mm_types::PhysAddr;
    /// let (start, end) = (PhysAddr::new(0x1000).unwrap(), PhysAddr::new(0x3000).unwrap());
    /// assert_eq!(end - start, 0x2000);
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::PhysAddr;
    /// let _ = PhysAddr::ZERO - PhysAddr::new(0x1000).unwrap();
    /// ```
    #[inline]
    #[track_caller]
    fn sub(self, start: PhysAddr) -> u64 {
        match self.0.checked_sub(start.0) {
            Some(d) => d,
            None => panic!("{start:?} lies above {self:?}"),
        }
    }
}

/// The x86-64 paging modes, which differ in how many virtual address bits
/// are translated and therefore in which addresses are canonical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagingMode {
    /// 4-level paging: 48-bit virtual addresses (256 TiB).
    FourLevel,
    /// 5-level paging (LA57): 57-bit virtual addresses (128 PiB).
    FiveLevel,
}

impl PagingMode {
    /// Number of translated virtual address bits.
    pub const fn va_bits(self) -> u32 {
        match self {
            PagingMode::FourLevel => 48,
            PagingMode::FiveLevel => 57,
        }
    }

    /// Number of page-table levels.
    pub const fn levels(self) -> u8 {
        match self {
            PagingMode::FourLevel => 4,
            PagingMode::FiveLevel => 5,
        }
    }

    /// The highest address of the lower canonical half.
    pub const fn lower_half_end(self) -> u64 {
        (1u64 << (self.va_bits() - 1)) - 1
    }

    /// The lowest address of the upper canonical half.
    pub const fn upper_half_start(self) -> u64 {
        !self.lower_half_end()
    }
}

impl fmt::Display for PagingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingMode::FourLevel => f.write_str("4-level paging"),
            PagingMode::FiveLevel => f.write_str("5-level paging"),
        }
    }
}

/// A virtual address, canonical under 5-level paging (and so valid on every
/// x86-64 machine in some mode).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(u64);

const fn canonical_in(addr: u64, mode: PagingMode) -> bool {
    let shift = 64 - mode.va_bits();
    (((addr << shift) as i64) >> shift) as u64 == addr
}

impl VirtAddr {
    /// Virtual address zero.
    pub const ZERO: VirtAddr = VirtAddr(0);

    /// Creates a virtual address that must be canonical under 5-level paging.
    ///
    /// ```
    /// use mm_types::VirtAddr;
    /// assert!(VirtAddr::new(0xffff_8000_0000_0000).is_ok());
    /// assert!(VirtAddr::new(0x0100_0000_0000_0000).is_err());
    /// ```
    pub const fn new(addr: u64) -> Result<Self, AddrError> {
        VirtAddr::new_in(addr, PagingMode::FiveLevel)
    }

    /// Creates a virtual address that must be canonical under `mode`.
    ///
    /// ```
    /// use mm_types::{PagingMode, VirtAddr};
    /// // Canonical with 57 bits, not with 48.
    /// assert!(VirtAddr::new_in(0x0000_8000_0000_0000, PagingMode::FiveLevel).is_ok());
    /// assert!(VirtAddr::new_in(0x0000_8000_0000_0000, PagingMode::FourLevel).is_err());
    /// ```
    pub const fn new_in(addr: u64, mode: PagingMode) -> Result<Self, AddrError> {
        if canonical_in(addr, mode) {
            Ok(VirtAddr(addr))
        } else {
            Err(AddrError::NotCanonical { addr, mode })
        }
    }

    /// Makes `addr` canonical under `mode` by copying its top translated bit
    /// into the bits above it (what hardware index arithmetic needs).
    pub const fn new_sign_extended(addr: u64, mode: PagingMode) -> Self {
        let shift = 64 - mode.va_bits();
        VirtAddr((((addr << shift) as i64) >> shift) as u64)
    }

    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether this address is canonical under `mode`.
    pub const fn is_canonical_in(self, mode: PagingMode) -> bool {
        canonical_in(self.0, mode)
    }

    /// Whether the address is in the upper (kernel) half.
    pub const fn is_upper_half(self) -> bool {
        (self.0 as i64) < 0
    }

    /// `self + bytes`, or `None` if the result would overflow or leave this
    /// address's canonical half (under 5-level paging).
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(v) if canonical_in(v, PagingMode::FiveLevel) && ((v as i64) < 0) == self.is_upper_half() => {
                Some(VirtAddr(v))
            }
            _ => None,
        }
    }

    /// `self - bytes`, or `None` if the result would leave this address's
    /// canonical half.
    pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
        match self.0.checked_sub(bytes) {
            Some(v) if canonical_in(v, PagingMode::FiveLevel) && ((v as i64) < 0) == self.is_upper_half() => {
                Some(VirtAddr(v))
            }
            _ => None,
        }
    }

    /// Rounds down to `align` (a power of two). Rounding down an upper-half
    /// address by more than its half's size is reported as an overflow.
    pub const fn align_down(self, align: u64) -> Result<Self, AddrError> {
        match align::align_down(self.0, align) {
            Ok(v) if canonical_in(v, PagingMode::FiveLevel) && ((v as i64) < 0) == self.is_upper_half() => {
                Ok(VirtAddr(v))
            }
            Ok(_) => Err(AddrError::Overflow),
            Err(e) => Err(e),
        }
    }

    /// Rounds up to `align` (a power of two); fails if that leaves the half.
    pub const fn align_up(self, align: u64) -> Result<Self, AddrError> {
        match align::align_up(self.0, align) {
            Ok(v) if canonical_in(v, PagingMode::FiveLevel) && ((v as i64) < 0) == self.is_upper_half() => {
                Ok(VirtAddr(v))
            }
            Ok(_) => Err(AddrError::Overflow),
            Err(e) => Err(e),
        }
    }

    /// Whether the address is a multiple of `align` (`false` if `align` is not
    /// a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        align::is_aligned(self.0, align)
    }

    /// Offset within its 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (crate::PAGE_SIZE as u64 - 1)
    }

    /// The address as a raw pointer.
    pub const fn as_ptr<T>(self) -> *const T {
        self.0 as usize as *const T
    }

    /// The address as a raw mutable pointer.
    pub const fn as_mut_ptr<T>(self) -> *mut T {
        self.0 as usize as *mut T
    }
}

impl Address for VirtAddr {
    fn to_u64(self) -> u64 {
        self.0
    }
    fn checked_add(self, units: u64) -> Option<Self> {
        VirtAddr::checked_add(self, units)
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl Add<u64> for VirtAddr {
    type Output = VirtAddr;

    /// `self + bytes`.
    ///
    /// # Panics
    ///
    /// If the result overflows or leaves this address's canonical half
    /// (where [`checked_add`](VirtAddr::checked_add) returns `None`).
    ///
    /// ```
    /// use mm_types::VirtAddr;
    /// let a = VirtAddr::new(0x40_0000).unwrap();
    /// assert_eq!(a + 0x1234, VirtAddr::new(0x40_1234).unwrap());
    /// // The exclusive end of a 4-level user range is still an address.
    /// let top = VirtAddr::new(0x7fff_ffff_f000).unwrap();
    /// assert_eq!((top + 0x1000).as_u64(), 0x8000_0000_0000);
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::{PagingMode, VirtAddr};
    /// // One past the top of the lower half is in the non-canonical hole.
    /// let top = VirtAddr::new(PagingMode::FiveLevel.lower_half_end()).unwrap();
    /// let _ = top + 1;
    /// ```
    #[inline]
    #[track_caller]
    fn add(self, bytes: u64) -> VirtAddr {
        match self.checked_add(bytes) {
            Some(a) => a,
            None => panic!("{self:?} + {bytes:#x} overflows or leaves the address's canonical half"),
        }
    }
}

impl AddAssign<u64> for VirtAddr {
    /// `*self = *self + bytes`.
    ///
    /// # Panics
    ///
    /// As `VirtAddr + u64`: if the result overflows or leaves this
    /// address's canonical half.
    ///
    /// ```
    /// use mm_types::VirtAddr;
    /// let mut a = VirtAddr::new(0x40_0000).unwrap();
    /// a += 0x1000;
    /// assert_eq!(a, VirtAddr::new(0x40_1000).unwrap());
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::VirtAddr;
    /// let mut a = VirtAddr::new(u64::MAX).unwrap();
    /// a += 1;
    /// ```
    #[inline]
    #[track_caller]
    fn add_assign(&mut self, bytes: u64) {
        *self = *self + bytes;
    }
}

impl Sub<u64> for VirtAddr {
    type Output = VirtAddr;

    /// `self - bytes`.
    ///
    /// # Panics
    ///
    /// If the result would lie below zero or leave this address's canonical
    /// half (where [`checked_sub`](VirtAddr::checked_sub) returns `None`).
    ///
    /// ```
    /// use mm_types::VirtAddr;
    /// let a = VirtAddr::new(0x40_1234).unwrap();
    /// assert_eq!(a - 0x234, VirtAddr::new(0x40_1000).unwrap());
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::{PagingMode, VirtAddr};
    /// // One below the bottom of the upper half is in the non-canonical hole.
    /// let bottom = VirtAddr::new(PagingMode::FiveLevel.upper_half_start()).unwrap();
    /// let _ = bottom - 1;
    /// ```
    #[inline]
    #[track_caller]
    fn sub(self, bytes: u64) -> VirtAddr {
        match self.checked_sub(bytes) {
            Some(a) => a,
            None => panic!("{self:?} - {bytes:#x} lies below zero or leaves the address's canonical half"),
        }
    }
}

impl SubAssign<u64> for VirtAddr {
    /// `*self = *self - bytes`.
    ///
    /// # Panics
    ///
    /// As `VirtAddr - u64`: if the result would lie below zero or leave
    /// this address's canonical half.
    ///
    /// ```
    /// use mm_types::VirtAddr;
    /// let mut a = VirtAddr::new(0x40_1000).unwrap();
    /// a -= 0x1000;
    /// assert_eq!(a, VirtAddr::new(0x40_0000).unwrap());
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::VirtAddr;
    /// let mut a = VirtAddr::ZERO;
    /// a -= 1;
    /// ```
    #[inline]
    #[track_caller]
    fn sub_assign(&mut self, bytes: u64) {
        *self = *self - bytes;
    }
}

impl Sub<VirtAddr> for VirtAddr {
    type Output = u64;

    /// The distance in bytes from `start` up to `self` (the length of
    /// `[start, self)`).
    ///
    /// # Panics
    ///
    /// If `start` lies above `self`.
    ///
    /// ```
    /// use mm_types::VirtAddr;
    /// let (start, end) = (VirtAddr::new(0x40_0000).unwrap(), VirtAddr::new(0x40_3000).unwrap());
    /// assert_eq!(end - start, 0x3000);
    /// ```
    ///
    /// ```should_panic
    /// use mm_types::VirtAddr;
    /// let (start, end) = (VirtAddr::new(0x40_0000).unwrap(), VirtAddr::new(0x40_3000).unwrap());
    /// let _ = start - end;
    /// ```
    #[inline]
    #[track_caller]
    fn sub(self, start: VirtAddr) -> u64 {
        match self.0.checked_sub(start.0) {
            Some(d) => d,
            None => panic!("{start:?} lies above {self:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phys_bounds_and_arithmetic() {
        assert_eq!(PhysAddr::new(PHYS_ADDR_MAX), Ok(PhysAddr::MAX));
        assert_eq!(PhysAddr::new(PHYS_ADDR_MAX + 1), Err(AddrError::PhysOutOfRange { value: PHYS_ADDR_MAX + 1 }));
        let a = PhysAddr::new(0x1234).unwrap();
        assert_eq!(a.checked_add(0x10).unwrap().as_u64(), 0x1244);
        assert_eq!(PhysAddr::MAX.checked_add(1), None);
        assert_eq!(PhysAddr::ZERO.checked_sub(1), None);
        assert_eq!(a.checked_sub(0x34).unwrap().as_u64(), 0x1200);
        assert_eq!(a.align_down(0x1000).unwrap().as_u64(), 0x1000);
        assert_eq!(a.align_up(0x1000).unwrap().as_u64(), 0x2000);
        assert_eq!(PhysAddr::MAX.align_up(0x1000), Err(AddrError::PhysOutOfRange { value: 1 << 52 }));
        assert_eq!(a.align_up(3), Err(AddrError::BadAlignment { align: 3 }));
        assert_eq!(a.page_offset(), 0x234);
        assert!(!a.is_aligned(0x1000));
    }

    #[test]
    fn canonical_forms() {
        let four = PagingMode::FourLevel;
        let five = PagingMode::FiveLevel;
        assert_eq!(four.lower_half_end(), 0x0000_7fff_ffff_ffff);
        assert_eq!(four.upper_half_start(), 0xffff_8000_0000_0000);
        assert_eq!(five.lower_half_end(), 0x00ff_ffff_ffff_ffff);
        assert_eq!(five.upper_half_start(), 0xff00_0000_0000_0000);
        for mode in [four, five] {
            assert!(VirtAddr::new_in(mode.lower_half_end(), mode).is_ok());
            assert!(VirtAddr::new_in(mode.upper_half_start(), mode).is_ok());
            let hole = mode.lower_half_end() + 1;
            assert_eq!(VirtAddr::new_in(hole, mode), Err(AddrError::NotCanonical { addr: hole, mode }));
            assert_eq!(
                VirtAddr::new_in(mode.upper_half_start() - 1, mode),
                Err(AddrError::NotCanonical { addr: mode.upper_half_start() - 1, mode })
            );
        }
        // 57-bit canonical but not 48-bit canonical.
        let v = VirtAddr::new(0x00ff_0000_0000_0000).unwrap();
        assert!(v.is_canonical_in(five) && !v.is_canonical_in(four));
        assert_eq!(VirtAddr::new_sign_extended(0x0000_8000_0000_0000, four).as_u64(), 0xffff_8000_0000_0000);
    }

    #[test]
    fn virt_arithmetic_never_crosses_the_hole() {
        let top_low = VirtAddr::new(PagingMode::FiveLevel.lower_half_end()).unwrap();
        assert_eq!(top_low.checked_add(1), None);
        let bottom_high = VirtAddr::new(PagingMode::FiveLevel.upper_half_start()).unwrap();
        assert_eq!(bottom_high.checked_sub(1), None);
        // A jump from the lower half straight into the upper half is rejected
        // even though the result is canonical.
        assert_eq!(VirtAddr::new(0x1000).unwrap().checked_add(0xffff_0000_0000_0000), None);
        let last = VirtAddr::new(u64::MAX).unwrap();
        assert_eq!(last.checked_add(1), None);
        assert_eq!(last.align_up(0x1000), Err(AddrError::Overflow));
        assert_eq!(bottom_high.align_down(1 << 60), Err(AddrError::Overflow));
        assert_eq!(top_low.align_up(0x1000), Err(AddrError::Overflow));
        let v = VirtAddr::new(0xffff_8000_0000_1234).unwrap();
        assert_eq!(v.align_down(0x1000).unwrap().as_u64(), 0xffff_8000_0000_1000);
        assert_eq!(v.page_offset(), 0x234);
        assert!(v.is_upper_half());
        assert_eq!(VirtAddr::ZERO.checked_sub(1), None);
    }

    #[test]
    fn virt_operators_match_the_checked_arithmetic() {
        let a = VirtAddr::new(0x40_1234).unwrap();
        assert_eq!((a + 0x10).as_u64(), 0x40_1244);
        assert_eq!((a - 0x234).as_u64(), 0x40_1000);
        let mut b = a;
        b += 0x1000;
        assert_eq!(b.as_u64(), 0x40_2234);
        b -= 0x2000;
        assert_eq!(b.as_u64(), 0x40_0234);
        assert_eq!(a - b, 0x1000);
        assert_eq!(a - a, 0);
        // Up to the last address of each half, and the exclusive end of a
        // 4-level user range.
        let top_low = VirtAddr::new(PagingMode::FiveLevel.lower_half_end()).unwrap();
        assert_eq!(VirtAddr::ZERO + PagingMode::FiveLevel.lower_half_end(), top_low);
        assert_eq!((VirtAddr::new(0x7fff_ffff_f000).unwrap() + 0x1000).as_u64(), 0x8000_0000_0000);
        let bottom_high = VirtAddr::new(PagingMode::FiveLevel.upper_half_start()).unwrap();
        let last = VirtAddr::new(u64::MAX).unwrap();
        assert_eq!(bottom_high + (u64::MAX - bottom_high.as_u64()), last);
        assert_eq!(last - (u64::MAX - bottom_high.as_u64()), bottom_high);
        // Across halves the distance is the raw difference.
        assert_eq!(bottom_high - top_low, bottom_high.as_u64() - top_low.as_u64());
    }

    #[test]
    #[should_panic(expected = "leaves the address's canonical half")]
    fn virt_add_into_the_hole_panics() {
        let _ = VirtAddr::new(PagingMode::FiveLevel.lower_half_end()).unwrap() + 1;
    }

    #[test]
    #[should_panic(expected = "leaves the address's canonical half")]
    fn virt_add_from_the_lower_into_the_upper_half_panics() {
        // Canonical, but in the other half: checked_add refuses it.
        let _ = VirtAddr::new(0x1000).unwrap() + 0xffff_0000_0000_0000;
    }

    #[test]
    #[should_panic(expected = "overflows")]
    fn virt_add_past_u64_panics() {
        let _ = VirtAddr::new(u64::MAX).unwrap() + 1;
    }

    #[test]
    #[should_panic(expected = "leaves the address's canonical half")]
    fn virt_add_assign_into_the_hole_panics() {
        let mut a = VirtAddr::new(PagingMode::FiveLevel.lower_half_end() - 0xfff).unwrap();
        a += 0x1000;
    }

    #[test]
    #[should_panic(expected = "lies below zero")]
    fn virt_sub_below_zero_panics() {
        let _ = VirtAddr::new(0xfff).unwrap() - 0x1000;
    }

    #[test]
    #[should_panic(expected = "leaves the address's canonical half")]
    fn virt_sub_into_the_hole_panics() {
        let _ = VirtAddr::new(PagingMode::FiveLevel.upper_half_start()).unwrap() - 1;
    }

    #[test]
    #[should_panic(expected = "lies below zero")]
    fn virt_sub_assign_below_zero_panics() {
        let mut a = VirtAddr::ZERO;
        a -= 1;
    }

    #[test]
    #[should_panic(expected = "lies above")]
    fn virt_distance_to_a_higher_start_panics() {
        let _ = VirtAddr::new(0x1000).unwrap() - VirtAddr::new(0x1001).unwrap();
    }

    #[test]
    fn phys_operators_match_the_checked_arithmetic() {
        let a = PhysAddr::new(0x1234).unwrap();
        assert_eq!((a + 0x10).as_u64(), 0x1244);
        assert_eq!((a - 0x234).as_u64(), 0x1000);
        let mut b = a;
        b += 0x1000;
        assert_eq!(b.as_u64(), 0x2234);
        b -= 0x2234;
        assert_eq!(b, PhysAddr::ZERO);
        assert_eq!(a - b, 0x1234);
        assert_eq!(PhysAddr::ZERO + PHYS_ADDR_MAX, PhysAddr::MAX);
        assert_eq!(PhysAddr::MAX - PHYS_ADDR_MAX, PhysAddr::ZERO);
    }

    #[test]
    #[should_panic(expected = "beyond the physical address space")]
    fn phys_add_past_max_panics() {
        let _ = PhysAddr::MAX + 1;
    }

    #[test]
    #[should_panic(expected = "beyond the physical address space")]
    fn phys_add_assign_past_max_panics() {
        let mut a = PhysAddr::MAX;
        a += 1;
    }

    #[test]
    #[should_panic(expected = "below physical address zero")]
    fn phys_sub_below_zero_panics() {
        let _ = PhysAddr::new(0xfff).unwrap() - 0x1000;
    }

    #[test]
    #[should_panic(expected = "below physical address zero")]
    fn phys_sub_assign_below_zero_panics() {
        let mut a = PhysAddr::ZERO;
        a -= 1;
    }

    #[test]
    #[should_panic(expected = "lies above")]
    fn phys_distance_to_a_higher_start_panics() {
        let _ = PhysAddr::ZERO - PhysAddr::new(1).unwrap();
    }
}
