//! The `oom` scenario: no swap, one task wanting twice the RAM; the OOM
//! killer must pick it.

use super::{kill_all, machine, report, run_workers, workers};
use crate::frames::Frames;
use crate::kprintln;
use mm_wiring::scenario;

/// `oom`: no swap; three tasks, the middle one wanting twice the RAM. The
/// OOM killer (in the fault handler) must pick it, and the other two
/// finish with their data.
pub fn oom(buddy: &'static Frames, ram_end: u64) -> bool {
    let ram = buddy.free_frame_count();
    let Some(m) = machine(buddy, ram_end, 0, 0) else {
        kprintln!("oom: cannot set up the machine");
        return false;
    };
    let pages = scenario::oom_pages(ram);
    let Some(ws) = workers(m, buddy, &pages) else { return false };
    kprintln!("oom: 3 tasks, no swap; task {} wants {} pages of {} free", ws[1].id.0, pages[1], ram);
    let (out, _) = run_workers(m, buddy, ws);
    kprintln!(
        "oom: written {} verified {} corrupt {} errors {}; killed {:?}",
        out.written,
        out.verified,
        out.corrupt,
        out.errors,
        out.killed
    );
    report("oom", m, buddy);
    let ok = out.killed == [1] && out.corrupt == 0 && out.errors == 0 && out.verified == pages[0] + pages[2];
    kill_all(m);
    kprintln!("oom: the biggest task was killed and the others finished intact: {}", ok);
    ok
}
