//! Choosing an out-of-memory victim when reclaim makes no progress, after
//! Linux's `oom_badness`: a task's badness is the memory killing it would
//! free (resident pages, swap entries, page-table pages), shifted by a
//! per-task adjustment in thousandths of all memory (`oom_score_adj`,
//! -1000 to 1000; -1000 means never).

/// What the OOM killer knows about one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskMemory<T> {
    /// The task, as the kernel names it.
    pub task: T,
    /// Resident pages (anonymous and file, as mm-vma counts them).
    pub resident: u64,
    /// Swap entries in its page tables.
    pub swapped: u64,
    /// Its page-table pages.
    pub page_tables: u64,
    /// `oom_score_adj`: -1000 (never chosen) to 1000.
    pub adjust: i16,
}

/// Why a task cannot be scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OomError {
    /// An adjustment outside -1000..=1000.
    BadAdjustment(i16),
}

impl core::fmt::Display for OomError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OomError::BadAdjustment(a) => write!(f, "oom_score_adj {a} is outside -1000..=1000"),
        }
    }
}

/// A task's badness with `total` pages of memory (RAM plus swap), or
/// `None` if it must never be chosen. A task whose adjustment brings it to
/// zero or below still scores 1, so it is chosen before nothing (as Linux
/// does).
pub fn badness<T>(t: &TaskMemory<T>, total: u64) -> Result<Option<u64>, OomError> {
    if !(-1000..=1000).contains(&t.adjust) {
        return Err(OomError::BadAdjustment(t.adjust));
    }
    if t.adjust == -1000 {
        return Ok(None);
    }
    let points = t.resident.saturating_add(t.swapped).saturating_add(t.page_tables) as i128;
    let shift = i128::from(t.adjust) * i128::from(total) / 1000;
    Ok(Some((points + shift).max(1) as u64))
}

/// The task with the highest badness (the first of equals), or `None` if
/// every task is exempt or there are none.
pub fn choose_victim<T: Copy>(
    tasks: impl IntoIterator<Item = TaskMemory<T>>,
    total: u64,
) -> Result<Option<(T, u64)>, OomError> {
    let mut best: Option<(T, u64)> = None;
    for t in tasks {
        if let Some(score) = badness(&t, total)? {
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((t.task, score));
            }
        }
    }
    Ok(best)
}
