//! Page sizes, frame and page numbers, orders, and blocks of frames.

use core::fmt;

use crate::addr::{Address, PhysAddr, VirtAddr, PHYS_ADDR_MAX};
use crate::error::AddrError;

/// The base page size: 4 KiB, as a `usize` (buffer lengths, slices).
pub const PAGE_SIZE: usize = 4096;
/// The base page size as a `u64`, for address arithmetic: the same value as
/// [`PAGE_SIZE`] and `PageSize::Size4KiB.bytes()`.
pub const PAGE_BYTES: u64 = PAGE_SIZE as u64;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// The page sizes of x86-64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by a level-1 entry.
    Size4KiB,
    /// 2 MiB, mapped by a level-2 entry.
    Size2MiB,
    /// 1 GiB, mapped by a level-3 entry.
    Size1GiB,
}

impl PageSize {
    /// All sizes, largest first (the order in which to try them).
    pub const LARGEST_FIRST: [PageSize; 3] = [PageSize::Size1GiB, PageSize::Size2MiB, PageSize::Size4KiB];

    /// log2 of the size in bytes.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4KiB => 12,
            PageSize::Size2MiB => 21,
            PageSize::Size1GiB => 30,
        }
    }

    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// The order (in 4 KiB frames) of one page of this size.
    pub const fn order(self) -> Order {
        Order((self.shift() - PAGE_SHIFT) as u8)
    }

    /// The page-table level whose entries map a page of this size (1 = the
    /// lowest level).
    pub const fn level(self) -> u8 {
        match self {
            PageSize::Size4KiB => 1,
            PageSize::Size2MiB => 2,
            PageSize::Size1GiB => 3,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageSize::Size4KiB => "4 KiB",
            PageSize::Size2MiB => "2 MiB",
            PageSize::Size1GiB => "1 GiB",
        })
    }
}

/// The number of a 4 KiB physical frame (physical address / 4096).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct FrameNumber(u64);

/// The highest frame number.
const MAX_FRAME: u64 = PHYS_ADDR_MAX >> PAGE_SHIFT;

impl FrameNumber {
    /// Creates a frame number; fails beyond the physical address space.
    pub const fn new(n: u64) -> Result<Self, AddrError> {
        if n > MAX_FRAME {
            Err(AddrError::PhysOutOfRange { value: n })
        } else {
            Ok(FrameNumber(n))
        }
    }

    /// The frame containing `addr`.
    pub const fn containing(addr: PhysAddr) -> Self {
        FrameNumber(addr.as_u64() >> PAGE_SHIFT)
    }

    /// The frame starting at `addr`, which must be 4 KiB aligned.
    pub const fn from_start(addr: PhysAddr) -> Result<Self, AddrError> {
        if addr.is_aligned(PAGE_SIZE as u64) {
            Ok(FrameNumber(addr.as_u64() >> PAGE_SHIFT))
        } else {
            Err(AddrError::Misaligned { value: addr.as_u64(), align: PAGE_SIZE as u64 })
        }
    }

    /// The raw number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The physical address of the frame's first byte.
    pub const fn start_address(self) -> PhysAddr {
        match PhysAddr::new(self.0 << PAGE_SHIFT) {
            Ok(a) => a,
            // Unreachable: the constructor bounds the number to 40 bits.
            Err(_) => PhysAddr::MAX,
        }
    }

    /// `self + frames`, or `None` beyond the physical address space.
    pub const fn checked_add(self, frames: u64) -> Option<Self> {
        match self.0.checked_add(frames) {
            Some(v) if v <= MAX_FRAME => Some(FrameNumber(v)),
            _ => None,
        }
    }

    /// `self - frames`, or `None` below zero.
    pub const fn checked_sub(self, frames: u64) -> Option<Self> {
        match self.0.checked_sub(frames) {
            Some(v) => Some(FrameNumber(v)),
            None => None,
        }
    }
}

impl Address for FrameNumber {
    fn to_u64(self) -> u64 {
        self.0
    }
    fn checked_add(self, units: u64) -> Option<Self> {
        FrameNumber::checked_add(self, units)
    }
}

impl fmt::Debug for FrameNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameNumber({:#x})", self.0)
    }
}

/// The number of a 4 KiB virtual page (virtual address >> 12, so upper-half
/// pages have large numbers).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PageNumber(u64);

impl PageNumber {
    /// The page containing `addr`.
    pub const fn containing(addr: VirtAddr) -> Self {
        PageNumber(addr.as_u64() >> PAGE_SHIFT)
    }

    /// The page starting at `addr`, which must be 4 KiB aligned.
    pub const fn from_start(addr: VirtAddr) -> Result<Self, AddrError> {
        if addr.is_aligned(PAGE_SIZE as u64) {
            Ok(PageNumber(addr.as_u64() >> PAGE_SHIFT))
        } else {
            Err(AddrError::Misaligned { value: addr.as_u64(), align: PAGE_SIZE as u64 })
        }
    }

    /// The raw number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The virtual address of the page's first byte.
    pub const fn start_address(self) -> VirtAddr {
        // Shifting back restores a canonical address: the number was made
        // from one, and `checked_add` keeps it within its canonical half.
        VirtAddr::new_sign_extended(self.0 << PAGE_SHIFT, crate::PagingMode::FiveLevel)
    }

    /// `self + pages`, or `None` if that leaves the page's canonical half.
    pub fn checked_add(self, pages: u64) -> Option<Self> {
        let bytes = pages.checked_mul(PAGE_SIZE as u64)?;
        self.start_address().checked_add(bytes).map(PageNumber::containing)
    }

    /// `self - pages`, or `None` if that leaves the page's canonical half.
    pub fn checked_sub(self, pages: u64) -> Option<Self> {
        let bytes = pages.checked_mul(PAGE_SIZE as u64)?;
        self.start_address().checked_sub(bytes).map(PageNumber::containing)
    }
}

impl Address for PageNumber {
    fn to_u64(self) -> u64 {
        self.0
    }
    fn checked_add(self, units: u64) -> Option<Self> {
        PageNumber::checked_add(self, units)
    }
}

impl fmt::Debug for PageNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageNumber({:#x})", self.0)
    }
}

/// A power-of-two count of frames: a block of order `n` is `2^n` frames,
/// naturally aligned.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Order(u8);

impl Order {
    /// Order 0: one frame.
    pub const ZERO: Order = Order(0);
    /// The largest order any block can have: `2^40` frames span the whole
    /// 52-bit physical address space.
    pub const MAX: Order = Order((crate::addr::PHYS_ADDR_BITS - PAGE_SHIFT) as u8);

    /// Creates an order, or `None` above [`Order::MAX`].
    pub const fn new(order: u8) -> Option<Self> {
        if order <= Order::MAX.0 {
            Some(Order(order))
        } else {
            None
        }
    }

    /// The smallest order whose block holds at least `frames` frames (order 0
    /// for 0 frames), or `None` above [`Order::MAX`].
    ///
    /// ```
    /// use mm_types::Order;
    /// assert_eq!(Order::for_frames(1), Order::new(0));
    /// assert_eq!(Order::for_frames(3), Order::new(2));
    /// assert_eq!(Order::for_frames(512), Order::new(9));
    /// ```
    pub const fn for_frames(frames: u64) -> Option<Self> {
        if frames <= 1 {
            return Some(Order(0));
        }
        match frames.checked_next_power_of_two() {
            Some(p) => Order::new(p.trailing_zeros() as u8),
            None => None,
        }
    }

    /// The smallest order whose block holds at least `bytes` bytes.
    pub const fn for_bytes(bytes: u64) -> Option<Self> {
        Order::for_frames(bytes.div_ceil(PAGE_SIZE as u64))
    }

    /// The raw order.
    pub const fn as_u8(self) -> u8 {
        self.0
    }

    /// The raw order as an index.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }

    /// Number of frames in a block of this order.
    pub const fn frames(self) -> u64 {
        1 << self.0
    }

    /// Number of bytes in a block of this order.
    pub const fn bytes(self) -> u64 {
        (PAGE_SIZE as u64) << self.0
    }

    /// The next larger order, or `None` at [`Order::MAX`].
    pub const fn next(self) -> Option<Self> {
        Order::new(self.0 + 1)
    }
}

impl fmt::Debug for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Order({})", self.0)
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order {}", self.0)
    }
}

/// A naturally aligned block of `2^order` frames: what a
/// [`FrameProvider`](crate::FrameProvider) hands out and takes back.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameBlock {
    start: FrameNumber,
    order: Order,
}

impl FrameBlock {
    /// A block starting at `start`, which must be aligned to `2^order` frames
    /// and must not run past the physical address space.
    pub const fn new(start: FrameNumber, order: Order) -> Result<Self, AddrError> {
        if start.as_u64() & (order.frames() - 1) != 0 {
            return Err(AddrError::Misaligned { value: start.as_u64(), align: order.frames() });
        }
        if start.checked_add(order.frames() - 1).is_none() {
            return Err(AddrError::Overflow);
        }
        Ok(FrameBlock { start, order })
    }

    /// The block of `2^order` frames from frame number `start`, without the
    /// checks of [`FrameBlock::new`], for an allocator handing out a block
    /// its own bookkeeping already vouches for (the checks cost a fast path
    /// about a tenth of its instructions). Debug builds check anyway.
    ///
    /// ```
    /// use mm_types::{FrameBlock, FrameNumber, Order};
    /// // SAFETY: frame 0x200 is aligned to 2^9 frames and far below the top.
    /// let b = unsafe { FrameBlock::new_unchecked(0x200, 9) };
    /// assert_eq!(b, FrameBlock::new(FrameNumber::new(0x200)?, Order::new(9).unwrap())?);
    /// # Ok::<(), mm_types::AddrError>(())
    /// ```
    ///
    /// # Safety
    ///
    /// `order` is at most [`Order::MAX`], and [`FrameBlock::new`] would
    /// accept `start` and `order`: `start` is aligned to `2^order` frames and
    /// the block ends inside the physical address space. Code may trust a
    /// `FrameBlock` to name real frames (a frame provider frees what it
    /// names), so a block that breaks this is undefined behaviour waiting.
    #[inline]
    #[allow(unsafe_code)] // An unsafe constructor; nothing unsafe runs inside it.
    pub const unsafe fn new_unchecked(start: u64, order: u8) -> Self {
        debug_assert!(order <= Order::MAX.0 && start <= MAX_FRAME && start & ((1 << order) - 1) == 0);
        debug_assert!(start + ((1 << order) - 1) <= MAX_FRAME);
        FrameBlock { start: FrameNumber(start), order: Order(order) }
    }

    /// A block starting at physical address `addr`.
    pub const fn from_addr(addr: PhysAddr, order: Order) -> Result<Self, AddrError> {
        match FrameNumber::from_start(addr) {
            Ok(f) => FrameBlock::new(f, order),
            Err(e) => Err(e),
        }
    }

    /// First frame.
    pub const fn start(self) -> FrameNumber {
        self.start
    }

    /// Physical address of the first byte.
    pub const fn start_address(self) -> PhysAddr {
        self.start.start_address()
    }

    /// The block's order.
    pub const fn order(self) -> Order {
        self.order
    }

    /// Number of frames.
    pub const fn frames(self) -> u64 {
        self.order.frames()
    }

    /// Number of bytes.
    pub const fn bytes(self) -> u64 {
        self.order.bytes()
    }

    /// The frames as a range.
    pub fn frame_range(self) -> crate::FrameRange {
        crate::FrameRange::from_parts(self.start, self.frames())
    }

    /// The bytes as a physical range.
    pub fn phys_range(self) -> crate::PhysRange {
        crate::PhysRange::from_parts(self.start_address(), self.bytes())
    }
}

impl fmt::Debug for FrameBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameBlock({:#x}, order {})", self.start_address().as_u64(), self.order.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(PageSize::Size4KiB.bytes(), 4096);
        assert_eq!(PageSize::Size2MiB.bytes(), 2 << 20);
        assert_eq!(PageSize::Size1GiB.bytes(), 1 << 30);
        assert_eq!(PageSize::Size2MiB.order().as_u8(), 9);
        assert_eq!(PageSize::Size1GiB.order().as_u8(), 18);
        assert_eq!(PageSize::Size1GiB.level(), 3);
        assert!(PageSize::LARGEST_FIRST.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn frame_numbers() {
        let f = FrameNumber::new(5).unwrap();
        assert_eq!(f.start_address().as_u64(), 5 * 4096);
        assert_eq!(FrameNumber::containing(PhysAddr::new(0x5fff).unwrap()), f);
        assert_eq!(
            FrameNumber::from_start(PhysAddr::new(0x5001).unwrap()),
            Err(AddrError::Misaligned { value: 0x5001, align: 4096 })
        );
        assert_eq!(FrameNumber::new(MAX_FRAME + 1), Err(AddrError::PhysOutOfRange { value: MAX_FRAME + 1 }));
        assert_eq!(FrameNumber::new(MAX_FRAME).unwrap().checked_add(1), None);
        assert_eq!(f.checked_sub(6), None);
        assert_eq!(f.checked_sub(5).unwrap().as_u64(), 0);
    }

    #[test]
    fn page_numbers_round_trip_upper_half() {
        let v = VirtAddr::new(0xffff_ffff_8000_0000).unwrap();
        let p = PageNumber::from_start(v).unwrap();
        assert_eq!(p.start_address(), v);
        let last = PageNumber::containing(VirtAddr::new(u64::MAX).unwrap());
        assert_eq!(last.checked_add(1), None);
        assert_eq!(last.start_address().as_u64(), 0xffff_ffff_ffff_f000);
        let low_top = PageNumber::containing(VirtAddr::new(0x00ff_ffff_ffff_f000).unwrap());
        assert_eq!(low_top.checked_add(1), None);
        assert_eq!(PageNumber::containing(VirtAddr::ZERO).checked_sub(1), None);
        assert!(PageNumber::from_start(VirtAddr::new(0x10).unwrap()).is_err());
    }

    #[test]
    fn orders() {
        assert_eq!(Order::new(41), None);
        assert_eq!(Order::MAX.as_u8(), 40);
        assert_eq!(Order::MAX.next(), None);
        assert_eq!(Order::for_frames(0).unwrap().as_u8(), 0);
        assert_eq!(Order::for_frames(1025).unwrap().as_u8(), 11);
        assert_eq!(Order::for_frames(u64::MAX), None);
        assert_eq!(Order::for_frames(1 << 41), None);
        assert_eq!(Order::for_bytes(4097).unwrap().as_u8(), 1);
        assert_eq!(Order::new(3).unwrap().bytes(), 32768);
    }

    #[test]
    fn blocks() {
        let o = Order::new(2).unwrap();
        assert!(FrameBlock::new(FrameNumber::new(8).unwrap(), o).is_ok());
        assert_eq!(FrameBlock::new(FrameNumber::new(6).unwrap(), o), Err(AddrError::Misaligned { value: 6, align: 4 }));
        let b = FrameBlock::from_addr(PhysAddr::new(0x8000).unwrap(), o).unwrap();
        assert_eq!(b.frames(), 4);
        assert_eq!(b.phys_range().len(), 4 * 4096);
        assert_eq!(b.frame_range().start().as_u64(), 8);
        // The last possible order-0 block is fine; a larger block at the top is not.
        let top = FrameNumber::new(MAX_FRAME).unwrap();
        assert!(FrameBlock::new(top, Order::ZERO).is_ok());
        assert_eq!(FrameBlock::new(FrameNumber::new(0).unwrap(), Order::MAX).unwrap().frames(), 1 << 40);
    }
}
