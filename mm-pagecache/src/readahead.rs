//! On-demand readahead, per open file (Linux's `file_ra_state` and
//! `ondemand_readahead`).
//!
//! A reader that misses the cache where its previous read ended (or at the
//! start of the file) is sequential: the miss reads a *window* of pages,
//! sized from the request (rounded up to a power of two, four times that
//! for small requests, twice for medium ones, capped at the maximum). One
//! page of the window carries a *marker*; when the reader reaches it, the
//! next window is read (twice the size, four times while still small,
//! capped), while the pages between marker and window end are still there
//! to read, so a reader never waits for a window it could have been
//! given earlier. A miss anywhere else is random access: only the pages
//! asked for are read. A marker this state did not set (another reader of
//! the same file set it) starts a window after the pages already cached
//! there, sized from how many there are.

/// A window of pages to read: `start .. start + size`, with the marker on
/// page `marker` (if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub start: u64,
    pub size: u64,
    pub marker: Option<u64>,
}

impl Window {
    const NONE: Window = Window { start: 0, size: 0, marker: None };
}

/// One open file's readahead state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readahead {
    /// First page of the current window.
    pub start: u64,
    /// Pages in the current window (0: none yet).
    pub size: u64,
    /// Pages at the end of the window; the first of them carries the
    /// marker.
    pub async_size: u64,
    /// The last page the previous read touched (`None` before the first).
    pub prev: Option<u64>,
}

impl Default for Readahead {
    fn default() -> Self {
        Self::new()
    }
}

/// The first window for a sequential request of `req` pages.
fn initial_size(req: u64, max: u64) -> u64 {
    let n = req.max(1).checked_next_power_of_two().unwrap_or(u64::MAX);
    let n = if n <= max / 32 {
        n * 4
    } else if n <= max / 4 {
        n * 2
    } else {
        max
    };
    n.min(max)
}

/// The window after one of `cur` pages.
fn next_size(cur: u64, max: u64) -> u64 {
    let n = if cur < max / 16 { cur.saturating_mul(4) } else { cur.saturating_mul(2) };
    n.clamp(1, max)
}

impl Readahead {
    /// No reads yet.
    pub const fn new() -> Self {
        Readahead { start: 0, size: 0, async_size: 0, prev: None }
    }

    /// The marker page of the current window, if it has one.
    pub fn marker(&self) -> Option<u64> {
        (self.async_size > 0).then(|| self.start + self.size - self.async_size)
    }

    fn window(&self) -> Window {
        Window { start: self.start, size: self.size, marker: self.marker() }
    }

    /// A miss at page `index` of a read that wants `req` pages from there:
    /// the window to read (it always starts at `index`).
    pub(crate) fn on_miss(&mut self, index: u64, req: u64, max: u64) -> Window {
        let req = req.max(1);
        if max == 0 {
            return Window { start: index, size: req, marker: None };
        }
        // The reader went past the marker without stopping on it (it was
        // evicted, or read by another file): the next window, ramped up.
        if self.size > 0 && index == self.start + self.size {
            self.start = index;
            self.size = next_size(self.size, max);
            self.async_size = self.size;
            return self.window();
        }
        let sequential = index == 0 || self.prev.is_some_and(|p| index == p || index == p + 1);
        if !sequential {
            // Random: just what was asked for (at most a window's worth).
            return Window { start: index, size: req, marker: None };
        }
        self.start = index;
        self.size = initial_size(req, max).max(req.min(max));
        self.async_size = if self.size > req { self.size - req } else { self.size };
        self.window()
    }

    /// A hit on a page carrying the marker at `index`, in a read that wants
    /// `req` pages from there. `next_missing(from, limit)` is the first
    /// page at or after `from` that is not cached, looking no further than
    /// `limit` pages. The window to read (empty if none).
    pub(crate) fn on_marker(
        &mut self,
        index: u64,
        req: u64,
        max: u64,
        next_missing: impl FnOnce(u64, u64) -> Option<u64>,
    ) -> Window {
        if max == 0 {
            return Window::NONE;
        }
        if self.size > 0 && (Some(index) == self.marker() || index == self.start + self.size) {
            self.start += self.size;
            self.size = next_size(self.size, max);
            self.async_size = self.size;
            return self.window();
        }
        // Someone else's marker: start after what is cached from here on,
        // sized from it.
        let Some(start) = next_missing(index + 1, max) else { return Window::NONE };
        self.start = start;
        self.size = next_size(start - index + req.max(1), max);
        self.async_size = self.size;
        self.window()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequential_reader_ramps_up_and_a_random_one_does_not() {
        let mut ra = Readahead::new();
        // The first one-page read at page 0: four pages, marker on page 1.
        let w = ra.on_miss(0, 1, 32);
        assert_eq!(w, Window { start: 0, size: 4, marker: Some(1) });
        ra.prev = Some(0);
        // The marker: the next window, twice as big, its marker on its
        // first page.
        let w = ra.on_marker(1, 1, 32, |_, _| unreachable!());
        assert_eq!(w, Window { start: 4, size: 8, marker: Some(4) });
        let w = ra.on_marker(4, 1, 32, |_, _| unreachable!());
        assert_eq!(w, Window { start: 12, size: 16, marker: Some(12) });
        let w = ra.on_marker(12, 1, 32, |_, _| unreachable!());
        assert_eq!(w, Window { start: 28, size: 32, marker: Some(28) });
        let w = ra.on_marker(28, 1, 32, |_, _| unreachable!());
        assert_eq!(w, Window { start: 60, size: 32, marker: Some(60) }, "capped");
        // A reader that jumps: only what it asked for, state kept.
        ra.prev = Some(30);
        let w = ra.on_miss(1000, 2, 32);
        assert_eq!(w, Window { start: 1000, size: 2, marker: None });
        assert_eq!(ra.start, 60);
        // Missing where the window ended: the next window.
        let w = ra.on_miss(92, 1, 32);
        assert_eq!(w, Window { start: 92, size: 32, marker: Some(92) });
        // Four times while small against the maximum.
        assert_eq!(next_size(4, 128), 16);
    }

    #[test]
    fn window_sizes_follow_the_request() {
        assert_eq!(initial_size(1, 32), 4);
        assert_eq!(initial_size(3, 32), 8, "medium: twice the power of two");
        assert_eq!(initial_size(8, 32), 16);
        assert_eq!(initial_size(9, 32), 32);
        assert_eq!(initial_size(100, 32), 32);
        assert_eq!(next_size(1, 32), 4);
        assert_eq!(next_size(4, 64), 8);
        assert_eq!(next_size(16, 64), 32);
        assert_eq!(next_size(40, 64), 64);
        // A large sequential read gets at least what it asked for, up to
        // the maximum; marker at the end of the request.
        let mut ra = Readahead::new();
        let w = ra.on_miss(0, 20, 32);
        assert_eq!(w, Window { start: 0, size: 32, marker: Some(20) });
        let mut ra = Readahead::new();
        assert_eq!(ra.on_miss(0, 1, 0), Window { start: 0, size: 1, marker: None }, "readahead off");
        assert_eq!(ra.on_marker(0, 1, 0, |_, _| unreachable!()), Window::NONE);
    }

    #[test]
    fn a_foreign_marker_starts_after_the_cached_run() {
        let mut ra = Readahead::new();
        // Pages 10..18 cached by another reader; this state knows nothing.
        let w = ra.on_marker(10, 1, 32, |from, limit| {
            assert_eq!((from, limit), (11, 32));
            Some(18)
        });
        // Nine pages from the marker to the end of the request: twice that.
        assert_eq!(w, Window { start: 18, size: 18, marker: Some(18) });
        // Everything cached as far as a window reaches: nothing to read.
        let mut ra = Readahead::new();
        assert_eq!(ra.on_marker(10, 1, 32, |_, _| None), Window::NONE);
    }
}
