//! The kernel's `pressure` scenario on the host simulation at the size the
//! boot test gives QEMU (64 MiB; `RAM_MB` to change it), timed; any
//! argument puts a 8 MiB compressed tier in front of the swap store.
//!
//! ```text
//! cargo run --release -p mm-wiring --features std --example pressure -- z
//! ```

use mm_wiring::scenario;
use mm_wiring::sim::{Sim, SimConfig};

fn main() {
    let mib: u64 = std::env::var("RAM_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let ram = mib << 20;
    let zswap = std::env::args().nth(1).map(|_| 8 << 20);
    let mut sim = Sim::new(SimConfig { ram, swap_slots: 4 * ram / 4096, second_area: 0, zswap });
    let tasks = sim.spawn(4);
    let t = std::time::Instant::now();
    let out = scenario::pressure(&mut sim, &tasks, ram / 4096);
    println!("{out:?} in {:?}", t.elapsed());
    println!("{:?}", sim.figures());
    assert_eq!((out.corrupt, out.errors, out.verified), (0, 0, out.written));
}
