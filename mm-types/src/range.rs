//! Half-open ranges of addresses, frames or pages.
//!
//! A range is stored as a start and a length, so a range may end exactly at
//! the top of the address space (the last page of the upper half) without
//! its exclusive end having to be representable.

use core::fmt;

use crate::addr::{Address, PhysAddr, VirtAddr};
use crate::align;
use crate::error::AddrError;
use crate::page::{FrameNumber, PageNumber, PAGE_SHIFT, PAGE_SIZE};

/// A half-open range `[start, start + len)` of some [`Address`] type.
///
/// Every unit in the range is a valid value of `A` and the range never spans
/// the non-canonical hole: the constructors check it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrRange<A> {
    start: A,
    len: u64,
}

/// A range of physical bytes.
pub type PhysRange = AddrRange<PhysAddr>;
/// A range of virtual bytes.
pub type VirtRange = AddrRange<VirtAddr>;
/// A range of physical frames.
pub type FrameRange = AddrRange<FrameNumber>;
/// A range of virtual pages.
pub type PageRange = AddrRange<PageNumber>;

impl<A: Address> AddrRange<A> {
    /// The range of `len` units starting at `start`.
    ///
    /// ```
    /// use mm_types::{PhysAddr, PhysRange};
    /// let r = PhysRange::new(PhysAddr::new(0x1000)?, 0x3000)?;
    /// assert_eq!(r.end(), Some(PhysAddr::new(0x4000)?));
    /// # Ok::<(), mm_types::AddrError>(())
    /// ```
    pub fn new(start: A, len: u64) -> Result<Self, AddrError> {
        if len > 0 {
            start.checked_add(len - 1).ok_or(AddrError::Overflow)?;
        }
        Ok(AddrRange { start, len })
    }

    /// The range `[start, end)`.
    pub fn from_bounds(start: A, end: A) -> Result<Self, AddrError> {
        let len = end.units_from(start).ok_or(AddrError::InvertedRange { start: start.to_u64(), end: end.to_u64() })?;
        AddrRange::new(start, len)
    }

    /// Builds a range the caller already knows to be valid.
    pub(crate) fn from_parts(start: A, len: u64) -> Self {
        debug_assert!(AddrRange::new(start, len).is_ok());
        AddrRange { start, len }
    }

    /// An empty range at `start`.
    pub fn empty(start: A) -> Self {
        AddrRange { start, len: 0 }
    }

    /// First unit.
    pub fn start(&self) -> A {
        self.start
    }

    /// Number of units.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Last unit, or `None` when empty.
    pub fn last(&self) -> Option<A> {
        if self.len == 0 {
            None
        } else {
            self.start.checked_add(self.len - 1)
        }
    }

    /// Exclusive end, or `None` when it is not representable (a range ending
    /// at the very top of the address space).
    pub fn end(&self) -> Option<A> {
        self.start.checked_add(self.len)
    }

    fn end_u128(&self) -> u128 {
        self.start.to_u64() as u128 + self.len as u128
    }

    /// Whether `a` lies in the range.
    pub fn contains(&self, a: A) -> bool {
        a.units_from(self.start).is_some_and(|off| off < self.len)
    }

    /// Whether `other` lies entirely inside this range (an empty `other`
    /// counts if its start lies inside or at the end).
    pub fn contains_range(&self, other: &Self) -> bool {
        other.start >= self.start && other.end_u128() <= self.end_u128()
    }

    /// Whether the two ranges share at least one unit.
    pub fn overlaps(&self, other: &Self) -> bool {
        !self.intersection(other).is_empty()
    }

    /// The units both ranges hold (empty if none).
    pub fn intersection(&self, other: &Self) -> Self {
        let start = core::cmp::max(self.start, other.start);
        let end = core::cmp::min(self.end_u128(), other.end_u128());
        let len = end.saturating_sub(start.to_u64() as u128) as u64;
        AddrRange { start, len }
    }

    /// Splits at `at`: the units below it and the units from it on. When `at`
    /// lies outside the range, one of the two parts is empty.
    pub fn split_at(&self, at: A) -> (Self, Self) {
        if at <= self.start {
            return (AddrRange::empty(self.start), *self);
        }
        let off = at.units_from(self.start).unwrap_or(0);
        if off >= self.len {
            let end_point = self.end().unwrap_or(at);
            return (*self, AddrRange::empty(end_point));
        }
        (AddrRange { start: self.start, len: off }, AddrRange { start: at, len: self.len - off })
    }

    /// What is left of this range once `other` is removed: the part below
    /// `other` and the part above it (either may be empty).
    ///
    /// ```
    /// use mm_types::{FrameNumber, FrameRange};
    /// let f = |n| FrameNumber::new(n).unwrap();
    /// let all = FrameRange::from_bounds(f(0), f(100))?;
    /// let hole = FrameRange::from_bounds(f(10), f(20))?;
    /// let (below, above) = all.subtract(&hole);
    /// assert_eq!((below.len(), above.start(), above.len()), (10, f(20), 80));
    /// # Ok::<(), mm_types::AddrError>(())
    /// ```
    pub fn subtract(&self, other: &Self) -> (Self, Self) {
        let cut = self.intersection(other);
        if cut.is_empty() {
            return if other.start >= self.start {
                (*self, AddrRange::empty(self.start))
            } else {
                (AddrRange::empty(self.start), *self)
            };
        }
        let below = AddrRange { start: self.start, len: cut.start.units_from(self.start).unwrap_or(0) };
        let above_len = (self.end_u128() - cut.end_u128()) as u64;
        let above = match cut.end() {
            Some(s) => AddrRange { start: s, len: above_len },
            None => AddrRange::empty(self.start),
        };
        (below, above)
    }

    /// The largest sub-range whose bounds are multiples of `align` units
    /// (empty if none fits).
    pub fn align_inward(&self, align: u64) -> Result<Self, AddrError> {
        align::check_alignment(align)?;
        let start = self.start.to_u64();
        let Ok(aligned_start) = align::align_up(start, align) else {
            return Ok(AddrRange::empty(self.start));
        };
        let end = self.end_u128();
        let aligned_end = end & !(align as u128 - 1);
        if (aligned_start as u128) >= aligned_end {
            return Ok(AddrRange::empty(self.start));
        }
        let new_start = self.start.checked_add(aligned_start - start).ok_or(AddrError::Overflow)?;
        Ok(AddrRange { start: new_start, len: (aligned_end - aligned_start as u128) as u64 })
    }

    /// Iterates over the units of the range, `step` units apart (`step` 0 is
    /// treated as 1).
    pub fn iter_step(&self, step: u64) -> StepIter<A> {
        StepIter { next: self.start, remaining: self.len, step: step.max(1) }
    }
}

/// Iterator over a range; see [`AddrRange::iter_step`].
#[derive(Clone, Debug)]
pub struct StepIter<A> {
    next: A,
    remaining: u64,
    step: u64,
}

impl<A: Address> Iterator for StepIter<A> {
    type Item = A;
    fn next(&mut self) -> Option<A> {
        if self.remaining == 0 {
            return None;
        }
        let item = self.next;
        if self.remaining <= self.step {
            self.remaining = 0;
        } else {
            self.remaining -= self.step;
            // In range by construction: every unit of the range is valid.
            self.next = item.checked_add(self.step)?;
        }
        Some(item)
    }
}

impl<A: Address> fmt::Debug for AddrRange<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?} + {:#x})", self.start, self.len)
    }
}

impl PhysRange {
    /// The frames lying entirely inside this range.
    pub fn frames_inward(&self) -> FrameRange {
        let inner = self.align_inward(PAGE_SIZE as u64).unwrap_or(AddrRange::empty(self.start));
        FrameRange::from_parts(FrameNumber::containing(inner.start), inner.len >> PAGE_SHIFT)
    }

    /// The frames touching this range.
    pub fn frames_outward(&self) -> FrameRange {
        let first = FrameNumber::containing(self.start);
        match self.last() {
            None => FrameRange::empty(first),
            Some(last) => FrameRange::from_parts(first, FrameNumber::containing(last).as_u64() - first.as_u64() + 1),
        }
    }
}

impl FrameRange {
    /// The bytes of these frames.
    pub fn phys_range(&self) -> PhysRange {
        PhysRange::from_parts(self.start.start_address(), self.len << PAGE_SHIFT)
    }
}

impl VirtRange {
    /// The pages touching this range.
    pub fn pages_outward(&self) -> PageRange {
        let first = PageNumber::containing(self.start);
        match self.last() {
            None => PageRange::empty(first),
            Some(last) => PageRange::from_parts(first, PageNumber::containing(last).as_u64() - first.as_u64() + 1),
        }
    }
}

impl PageRange {
    /// The bytes of these pages.
    pub fn virt_range(&self) -> VirtRange {
        VirtRange::from_parts(self.start.start_address(), self.len << PAGE_SHIFT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn f(n: u64) -> FrameNumber {
        FrameNumber::new(n).unwrap()
    }
    fn fr(a: u64, b: u64) -> FrameRange {
        FrameRange::from_bounds(f(a), f(b)).unwrap()
    }

    #[test]
    fn construction_and_bounds() {
        assert_eq!(FrameRange::from_bounds(f(5), f(4)), Err(AddrError::InvertedRange { start: 5, end: 4 }));
        assert_eq!(PhysRange::new(PhysAddr::MAX, 2), Err(AddrError::Overflow));
        assert!(PhysRange::new(PhysAddr::MAX, 1).is_ok());
        let top = VirtAddr::new(0xffff_ffff_ffff_f000).unwrap();
        let r = VirtRange::new(top, 0x1000).unwrap();
        assert_eq!(r.end(), None);
        assert_eq!(r.last(), Some(VirtAddr::new(u64::MAX).unwrap()));
        assert!(r.contains(VirtAddr::new(u64::MAX).unwrap()));
        // Spanning the hole is rejected.
        assert_eq!(VirtRange::new(VirtAddr::new(0x00ff_ffff_ffff_f000).unwrap(), 0x2000), Err(AddrError::Overflow));
        let e = fr(3, 3);
        assert!(e.is_empty() && e.last().is_none());
    }

    #[test]
    fn set_operations() {
        let a = fr(10, 20);
        assert!(a.contains(f(10)) && a.contains(f(19)) && !a.contains(f(20)) && !a.contains(f(9)));
        assert_eq!(a.intersection(&fr(15, 30)), fr(15, 20));
        assert!(a.intersection(&fr(20, 30)).is_empty());
        assert!(a.overlaps(&fr(0, 11)) && !a.overlaps(&fr(0, 10)));
        assert!(a.contains_range(&fr(12, 20)) && !a.contains_range(&fr(12, 21)));
        assert_eq!(a.split_at(f(15)), (fr(10, 15), fr(15, 20)));
        assert_eq!(a.split_at(f(5)).0.len(), 0);
        assert_eq!(a.split_at(f(25)), (a, fr(20, 20)));
        assert_eq!(a.subtract(&fr(12, 14)), (fr(10, 12), fr(14, 20)));
        assert_eq!(a.subtract(&fr(0, 12)), (fr(10, 10), fr(12, 20)));
        assert_eq!(a.subtract(&fr(18, 40)), (fr(10, 18), fr(20, 20)));
        assert_eq!(a.subtract(&fr(0, 40)).0.len() + a.subtract(&fr(0, 40)).1.len(), 0);
        assert_eq!(a.subtract(&fr(30, 40)).0, a);
        assert_eq!(a.subtract(&fr(0, 5)).1, a);
    }

    #[test]
    fn alignment() {
        let r = PhysRange::from_bounds(PhysAddr::new(0x1800).unwrap(), PhysAddr::new(0x5400).unwrap()).unwrap();
        let inner = r.align_inward(0x1000).unwrap();
        assert_eq!((inner.start().as_u64(), inner.len()), (0x2000, 0x3000));
        assert_eq!(r.frames_inward(), fr(2, 5));
        assert_eq!(r.frames_outward(), fr(1, 6));
        assert!(r.align_inward(0x10000).unwrap().is_empty());
        assert_eq!(r.align_inward(3), Err(AddrError::BadAlignment { align: 3 }));
        assert_eq!(fr(2, 5).phys_range().start().as_u64(), 0x2000);
        let top = VirtRange::new(VirtAddr::new(0xffff_ffff_ffff_e000).unwrap(), 0x2000).unwrap();
        assert_eq!(top.align_inward(0x1000).unwrap(), top);
        let pages = top.pages_outward();
        assert_eq!(pages.len(), 2);
        assert_eq!(pages.virt_range(), top);
    }

    #[test]
    fn iteration() {
        let v: Vec<u64> = fr(0, 10).iter_step(3).map(|x| x.as_u64()).collect();
        assert_eq!(v, [0, 3, 6, 9]);
        let top = PageRange::new(PageNumber::containing(VirtAddr::new(0xffff_ffff_ffff_e000).unwrap()), 2).unwrap();
        assert_eq!(top.iter_step(1).count(), 2);
        assert_eq!(fr(4, 4).iter_step(0).count(), 0);
    }
}
