//! Writeback errors kept for every open file's next fsync (Linux's
//! `errseq_t`).
//!
//! A writeback that fails in the background has no caller to tell. The
//! file keeps the error in one word: the error's kind, a "seen" flag and a
//! counter. Each open file samples the word when it is opened and compares
//! at fsync: a word that changed since means an error happened since, and
//! every open file hears of it once, whichever of them (or the flusher)
//! ran the failing writeback. An error nobody has seen yet is reported
//! even to a file opened after it. The counter moves only when the last
//! error was seen, so errors nobody looked at do not wrap it.

use mm_types::sync::atomic::{AtomicU64, Ordering};
use mm_types::FileErrorKind;

/// Low bits: the last error's kind, 1 + its place in
/// [`FileErrorKind::ALL`] (0: no error yet).
const KIND_MASK: u64 = 0xff;
/// Someone has been told of the last error.
const SEEN: u64 = 1 << 8;
/// One step of the counter above the flag.
const STEP: u64 = 1 << 9;

fn code(kind: FileErrorKind) -> u64 {
    FileErrorKind::ALL.iter().position(|&k| k == kind).map_or(0, |i| i as u64 + 1)
}

fn kind(word: u64) -> Option<FileErrorKind> {
    match (word & KIND_MASK) as usize {
        0 => None,
        n => FileErrorKind::ALL.get(n - 1).copied(),
    }
}

/// A file's writeback error record.
#[derive(Debug, Default)]
pub struct ErrSeq(AtomicU64);

/// What an open file saw of its file's [`ErrSeq`] last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrSince(u64);

impl ErrSeq {
    /// No error yet.
    pub fn new() -> Self {
        ErrSeq(AtomicU64::new(0))
    }

    /// Records an error.
    pub fn record(&self, error: FileErrorKind) {
        let mut old = self.0.load(Ordering::Acquire);
        loop {
            let mut new = (old & !(KIND_MASK | SEEN)) | code(error);
            if old & SEEN != 0 {
                new = new.wrapping_add(STEP);
            }
            if new == old {
                return;
            }
            match self.0.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => old = now,
            }
        }
    }

    /// The point a newly opened file starts from: now, unless an error
    /// happened that nobody has seen, which the new file is told of.
    pub fn sample(&self) -> ErrSince {
        let now = self.0.load(Ordering::Acquire);
        ErrSince(if now & SEEN != 0 || now == 0 { now } else { 0 })
    }

    /// The error that happened since `since`, if one did; `since` moves to
    /// now and the error counts as seen.
    pub fn check_and_advance(&self, since: &mut ErrSince) -> Result<(), FileErrorKind> {
        let mut now = self.0.load(Ordering::Acquire);
        if now == since.0 {
            return Ok(());
        }
        while now & SEEN == 0 {
            match self.0.compare_exchange_weak(now, now | SEEN, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => now |= SEEN,
                Err(n) => now = n,
            }
        }
        since.0 = now;
        // A word that moved has a kind (the counter moves only on record).
        Err(kind(now).unwrap_or(FileErrorKind::Io))
    }

    /// The last error recorded, seen or not.
    pub fn last(&self) -> Option<FileErrorKind> {
        kind(self.0.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FileErrorKind::{Io, NoSpace};

    #[test]
    fn every_open_file_hears_each_error_once() {
        let e = ErrSeq::new();
        let (mut a, mut b) = (e.sample(), e.sample());
        assert_eq!(e.check_and_advance(&mut a), Ok(()));
        e.record(Io);
        assert_eq!(e.check_and_advance(&mut a), Err(Io));
        assert_eq!(e.check_and_advance(&mut a), Ok(()), "once");
        assert_eq!(e.check_and_advance(&mut b), Err(Io), "and to every opener");
        // A second error after the first was seen moves the word again.
        e.record(NoSpace);
        assert_eq!(e.check_and_advance(&mut b), Err(NoSpace));
        assert_eq!(e.check_and_advance(&mut a), Err(NoSpace));
        assert_eq!(e.last(), Some(NoSpace));
    }

    #[test]
    fn an_unseen_error_reaches_a_later_opener_and_a_seen_one_does_not() {
        let e = ErrSeq::new();
        e.record(Io);
        let mut late = e.sample();
        assert_eq!(e.check_and_advance(&mut late), Err(Io), "nobody had seen it");
        let mut later = e.sample();
        assert_eq!(e.check_and_advance(&mut later), Ok(()), "seen before this open");
        // Two errors before anyone looks: reported once, as the last kind.
        e.record(Io);
        e.record(NoSpace);
        assert_eq!(e.check_and_advance(&mut later), Err(NoSpace));
        assert_eq!(e.check_and_advance(&mut later), Ok(()));
    }
}
