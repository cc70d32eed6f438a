//! A failed swap-in says what failed: a read error, a checksum mismatch
//! and a lack of memory reach the task as different errors, and none of
//! the first two is "out of memory" (which would run reclaim and then the
//! OOM killer for an I/O error).

use mm_types::VirtAddr;
use mm_vma::{FaultError, HookError};
use mm_wiring::scenario::Touch;
use mm_wiring::sim::{Sim, SimConfig};
use mm_wiring::TaskError;

fn swapped_page() -> (Sim, mm_vma::SpaceId, VirtAddr, u64) {
    let mut sim = Sim::new(SimConfig { ram: 256 << 10, swap_slots: 64, second_area: 0, zswap: None });
    let t = sim.spawn(1)[0];
    let base = sim.map(t, 4096).unwrap();
    sim.write(t, base, 0x5eed).unwrap();
    sim.machine.reclaim_now(u64::MAX);
    sim.machine.reclaim_now(u64::MAX);
    let s = sim.machine.tasks.get(t).unwrap();
    let lookup = s.lock().page_table().lookup(base).unwrap();
    let mm_paging::Lookup::Swapped(entry) = lookup else { panic!("the page was swapped out: {lookup:?}") };
    (sim, t, base, entry.offset())
}

fn read(sim: &Sim, t: mm_vma::SpaceId, a: VirtAddr) -> Result<(), TaskError> {
    let mut b = [0u8; 8];
    sim.machine.with_task(t, |s| s.read_user(a, &mut b))
}

#[test]
fn a_read_error_is_an_io_error() {
    let (sim, t, base, _) = swapped_page();
    sim.store.as_ref().unwrap().fail_nth_read(1);
    assert_eq!(read(&sim, t, base), Err(TaskError::Fault(FaultError::Hook(HookError::Io))));
    // The page is still there.
    let mut sim = sim;
    assert_eq!(sim.read(t, base), Ok(0x5eed));
}

#[test]
fn a_corrupt_slot_is_a_checksum_error() {
    let (sim, t, base, slot) = swapped_page();
    sim.store.as_ref().unwrap().corrupt_slot(slot, 100);
    assert_eq!(read(&sim, t, base), Err(TaskError::Fault(FaultError::Hook(HookError::Corrupt))));
}
