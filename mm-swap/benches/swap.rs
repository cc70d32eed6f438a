//! mm-swap's throughput against `memcpy` in the same run, and its slot
//! allocation.
//!
//! - `memcpy`: copying a 4 KiB page into a preallocated 64 MiB buffer at
//!   rotating offsets (what an ideal in-memory swap device costs per page).
//! - `swap_out`: `Swap::swap_out` of a 4 KiB page to an in-memory store of
//!   the same size (slot allocation, checksum, the store's copy), the slot
//!   freed again so the area never fills.
//! - `swap_in`: `Swap::swap_in` of a written slot (read, checksum check,
//!   readahead off) and its release.
//! - `alloc_free`: one slot allocated and freed.
//!
//! The README reports the ratios (bytes per second against `memcpy`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mm_swap::{Swap, SwapConfig};
use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, FrameProvider, PhysAddr, PhysMemory};

const SLOTS: u64 = 16 * 1024;

fn bench(c: &mut Criterion) {
    let mem = SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), 4 << 20);
    let frames = RefFrameProvider::new(&mem);
    let page = frames.allocate_frame(AllocFlags::empty()).unwrap();
    // SAFETY: the frame was just allocated for the benchmark.
    unsafe { mem.write_bytes(page, &[0x6b; 4096]) }.unwrap();

    let mut g = c.benchmark_group("page");
    g.throughput(Throughput::Bytes(4096));
    let src = vec![0x6bu8; 4096];
    let mut dst = vec![0u8; SLOTS as usize * 4096];
    let mut i = 0usize;
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            let off = (i % SLOTS as usize) * 4096;
            dst[off..off + 4096].copy_from_slice(black_box(&src));
            i = i.wrapping_add(1);
        })
    });
    let swap = Swap::new(SwapConfig { cpus: 1, readahead: 0 });
    swap.add_area(Box::new(MemStore::new(SLOTS)), 0).unwrap();
    g.bench_function("swap_out", |b| {
        b.iter(|| {
            // SAFETY: nothing writes the benchmark's page.
            let s = unsafe { swap.swap_out(0, page, 1, &mem) }.unwrap();
            swap.free(black_box(s)).unwrap();
        })
    });
    // SAFETY: as above.
    let slot = unsafe { swap.swap_out(0, page, 1, &mem) }.unwrap();
    g.bench_function("swap_in", |b| {
        b.iter(|| {
            let f = swap.swap_in(slot, &frames, &mem).unwrap().frame;
            let f = swap.uncache(slot).unwrap().unwrap_or(f);
            frames.free_frame(f).unwrap();
        })
    });
    g.finish();
    c.bench_function("slot/alloc_free", |b| {
        b.iter(|| {
            let s = swap.alloc(0).unwrap();
            swap.free(black_box(s)).unwrap();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
