//! The replacement-policy interface.

/// A page as a policy knows it: a dense index the integrator assigns (for
/// example a frame number minus the first frame of the zone). Policies size
/// their per-page state for ids below the bound given at construction.
pub type PageId = u32;

/// What an evicted page leaves behind for refault detection (Linux's
/// "shadow entry"): the integrator stores it with the page's identity (in
/// the page cache slot or next to the swap entry) and hands it back to
/// [`Policy::insert`] when the page is faulted in again. Only the policy
/// that made it can read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shadow(pub u64);

/// How a policy asks about pages while it scans for victims.
pub trait Scan {
    /// Tests and clears the hardware accessed bits of every mapping of
    /// `page` (through the reverse map). Pages referenced only by software
    /// are reported with [`Policy::access`] instead.
    fn test_and_clear_referenced(&mut self, page: PageId) -> bool;

    /// Whether `page` may be evicted now (not locked, pinned or under
    /// writeback). A page that may not is kept and looked at again later.
    fn is_evictable(&mut self, _page: PageId) -> bool {
        true
    }
}

/// A [`Scan`] with no hardware bits: policies see only [`Policy::access`]
/// calls (a trace replay that reports every access, or file pages read
/// through system calls).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBits;

impl Scan for NoBits {
    fn test_and_clear_referenced(&mut self, _page: PageId) -> bool {
        false
    }
}

/// An [`insert`](Policy::insert) or [`remove`](Policy::remove) that breaks
/// the policy's contract, refused with the policy's lists left as they were
/// (in release builds too: a double insert would otherwise link a page
/// twice and corrupt the lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// A page id at or above the bound the policy was made for.
    OutOfRange(PageId),
    /// [`Policy::insert`] of a page the policy already tracks.
    AlreadyTracked(PageId),
    /// [`Policy::remove`] of a page the policy does not track.
    NotTracked(PageId),
}

impl core::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PolicyError::OutOfRange(p) => write!(f, "page {p} is beyond the policy's page ids"),
            PolicyError::AlreadyTracked(p) => write!(f, "page {p} is already tracked by the policy"),
            PolicyError::NotTracked(p) => write!(f, "page {p} is not tracked by the policy"),
        }
    }
}

/// A page-replacement policy: bookkeeping in `O(1)` amortised per event,
/// no allocation after construction.
///
/// The integrator calls [`insert`](Self::insert) when a page becomes
/// resident, [`access`](Self::access) for references software sees,
/// [`remove`](Self::remove) when a page goes away by other means, and
/// [`evict`](Self::evict) when it needs a page back: the policy then picks
/// a victim, forgets it, and returns it with its shadow.
pub trait Policy {
    /// A short name (`clock`, `s3fifo`, ...).
    fn name(&self) -> &'static str;

    /// Pages tracked.
    fn len(&self) -> usize;

    /// Whether no page is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `page` became resident; `shadow` is what it left when it was last
    /// evicted, if the integrator kept it.
    ///
    /// # Errors
    /// [`PolicyError::AlreadyTracked`] if `page` is tracked,
    /// [`PolicyError::OutOfRange`] if it is beyond the policy's ids; the
    /// policy is unchanged.
    fn insert(&mut self, page: PageId, shadow: Option<Shadow>) -> Result<(), PolicyError>;

    /// A reference to a tracked `page` seen by software. A reference to a
    /// page not tracked (or beyond the policy's ids) is ignored, or at most
    /// remembered until the page is inserted, which resets it.
    fn access(&mut self, page: PageId);

    /// A tracked `page` went away without being chosen (freed, unmapped,
    /// truncated).
    ///
    /// # Errors
    /// [`PolicyError::NotTracked`] if `page` is not tracked,
    /// [`PolicyError::OutOfRange`] if it is beyond the policy's ids; the
    /// policy is unchanged.
    fn remove(&mut self, page: PageId) -> Result<(), PolicyError>;

    /// Picks a victim among the evictable tracked pages, stops tracking it,
    /// and returns it with its shadow; `None` only if no tracked page is
    /// evictable (or none is tracked). The work is linear in the pages
    /// tracked, whatever `scan` answers: references a page keeps getting
    /// while the policy scans (a page hammered by another CPU) save it only
    /// a bounded number of times per call (MODEL 3).
    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)>;

    /// Checks the policy's own invariants.
    fn check(&self) -> Result<(), &'static str>;
}

/// How a policy learns of references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every reference is reported with [`Policy::access`].
    Callback,
    /// As a kernel sees them: a reference (and the access that faulted a
    /// page in) sets the page's accessed bit, which the policy sees only
    /// when it scans the page ([`Scan::test_and_clear_referenced`]).
    AccessedBits,
}

impl<P: Policy + ?Sized> Policy for alloc::boxed::Box<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn insert(&mut self, page: PageId, shadow: Option<Shadow>) -> Result<(), PolicyError> {
        (**self).insert(page, shadow)
    }
    fn access(&mut self, page: PageId) {
        (**self).access(page)
    }
    fn remove(&mut self, page: PageId) -> Result<(), PolicyError> {
        (**self).remove(page)
    }
    fn evict(&mut self, scan: &mut dyn Scan) -> Option<(PageId, Shadow)> {
        (**self).evict(scan)
    }
    fn check(&self) -> Result<(), &'static str> {
        (**self).check()
    }
}
