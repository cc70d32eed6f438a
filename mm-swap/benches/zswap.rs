//! The compressed tier against `memcpy` in the same run, on the page mix
//! (zero, text-like and random pages, `mm_types::testkit::PageSample`).
//!
//! - `memcpy`: one 4 KiB page copied into a 64 MiB buffer at rotating
//!   offsets (an ideal in-memory store's cost per page).
//! - `store/<kind>`: `Compressed::write_slot` of a page of that kind
//!   (same-filled check, LZ4, pool insert; random pages go through to the
//!   in-memory store below), then `discard`, so the pool never fills.
//! - `load/<kind>`: `Compressed::read_slot` of a page written once.
//! - `swap_out/mix`, `swap_in/mix`: `Swap::swap_out` + `free` and
//!   `Swap::swap_in` + release over the tier, cycling through the mix.
//!
//! Before measuring, the compression ratio of 3,000 pages of each kind and
//! of their mix is printed (uncompressed bytes per pooled byte).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mm_swap::zswap::{Compressed, ZswapConfig};
use mm_swap::{Swap, SwapConfig};
use mm_types::testkit::{MemStore, PageSample, RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, BackingStore, FrameProvider, PhysAddr, PhysMemory};

const SLOTS: u64 = 16 * 1024;
const PAGES: u64 = 3000;

fn ratios() {
    let big = ZswapConfig { pool_limit: 1 << 30, ..ZswapConfig::default() };
    let mut mix = Vec::new();
    for kind in PageSample::ALL {
        let z = Compressed::new(MemStore::new(PAGES), big);
        for i in 0..PAGES {
            z.write_slot(i, &kind.page(i)).unwrap();
        }
        let s = z.stats();
        eprintln!(
            "zswap ratio {kind:?}: {} of {PAGES} pages pooled ({} same-filled), {} bytes, {} written through; \
             LZ4 ratio {}",
            s.pages,
            s.same_filled,
            s.pool_bytes,
            s.incompressible,
            s.ratio().map_or("-".into(), |r| format!("{r:.2}"))
        );
        mix.push(s);
    }
    let z = Compressed::new(MemStore::new(PAGES), big);
    for i in 0..PAGES {
        z.write_slot(i, &PageSample::ALL[i as usize % 3].page(i)).unwrap();
    }
    let s = z.stats();
    // Over the whole mix, pages written through count at full size.
    let stored = s.pool_bytes + s.incompressible * 4096;
    eprintln!(
        "zswap ratio mix: {PAGES} pages, {} pooled in {} bytes, {} written through; memory+disk ratio {:.2}",
        s.pages,
        s.pool_bytes,
        s.incompressible,
        (PAGES * 4096) as f64 / stored as f64
    );
}

fn bench(c: &mut Criterion) {
    ratios();
    let pages: Vec<[u8; 4096]> = (0..30).map(|i| PageSample::ALL[i % 3].page(i as u64)).collect();
    let mut g = c.benchmark_group("zswap");
    g.throughput(Throughput::Bytes(4096));
    let mut dst = vec![0u8; SLOTS as usize * 4096];
    let mut i = 0usize;
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            let off = (i % SLOTS as usize) * 4096;
            dst[off..off + 4096].copy_from_slice(black_box(&pages[i % 30]));
            i = i.wrapping_add(1);
        })
    });
    drop(dst);
    let z = Compressed::new(MemStore::new(SLOTS), ZswapConfig::default());
    for (k, kind) in PageSample::ALL.iter().enumerate() {
        let name = format!("{kind:?}").to_lowercase();
        g.bench_function(format!("store/{name}"), |b| {
            b.iter(|| {
                z.write_slot(1, black_box(&pages[k])).unwrap();
                z.discard(1);
            })
        });
        z.write_slot(2, &pages[k]).unwrap();
        let mut buf = [0u8; 4096];
        g.bench_function(format!("load/{name}"), |b| b.iter(|| z.read_slot(black_box(2), &mut buf).unwrap()));
    }

    let mem = SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), 4 << 20);
    let frames = RefFrameProvider::new(&mem);
    let frame: Vec<PhysAddr> = pages
        .iter()
        .map(|p| {
            let f = frames.allocate_frame(AllocFlags::empty()).unwrap();
            // SAFETY: the frame was just allocated for the benchmark.
            unsafe { mem.write_bytes(f, p) }.unwrap();
            f
        })
        .collect();
    let swap = Swap::new(SwapConfig { cpus: 1, readahead: 0 });
    swap.add_area(Box::new(Compressed::new(MemStore::new(SLOTS), ZswapConfig::default())), 0).unwrap();
    let mut i = 0usize;
    g.bench_function("swap_out/mix", |b| {
        b.iter(|| {
            // SAFETY: nothing writes the benchmark's pages.
            let s = unsafe { swap.swap_out(0, frame[i % 30], 1, &mem) }.unwrap();
            swap.free(black_box(s)).unwrap();
            i = i.wrapping_add(1);
        })
    });
    // SAFETY: as above.
    let slots: Vec<_> = frame.iter().map(|&f| unsafe { swap.swap_out(0, f, 1, &mem) }.unwrap()).collect();
    g.bench_function("swap_in/mix", |b| {
        b.iter(|| {
            let slot = slots[i % 30];
            let f = swap.swap_in(slot, &frames, &mem).unwrap().frame;
            let f = swap.uncache(slot).unwrap().unwrap_or(f);
            frames.free_frame(f).unwrap();
            i = i.wrapping_add(1);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
