//! The kernel heap: mm-slab's kmalloc over mm-buddy, installed as the
//! global allocator, so the kernel can use `alloc` (Vec, Box, BTreeMap).

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use mm_slab::{GlobalSlab, Kmalloc, KmallocConfig, SlabError, TypedCache};
use mm_types::DirectMap;

use crate::frames::{self, Frames, KernelCpu};
use crate::kprintln;
use crate::percpu::MAX_CPUS;

#[global_allocator]
static HEAP: GlobalSlab<'static, Frames, DirectMap, KernelCpu, MAX_CPUS> = GlobalSlab::new();

/// A boot-time secret for freelist obfuscation: the time-stamp counter is
/// what this machine offers without a random-number instruction check.
fn boot_secret() -> u64 {
    // SAFETY: `rdtsc` has no memory effects and is available on every x86-64 CPU.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    tsc.rotate_left(29) ^ 0x6a09_e667_f3bc_c908
}

/// Installs the heap. Nothing may allocate before this.
pub fn init(frames: &'static Frames) -> Result<(), SlabError> {
    let config = KmallocConfig { secret: boot_secret(), ..KmallocConfig::default() };
    let heap = Kmalloc::new(frames, frames::identity_map(), frames::kernel_cpu(), config)?;
    HEAP.init(heap).map(|_| ()).map_err(|_| SlabError::InvalidConfig("heap installed twice"))
}

/// The installed heap.
pub fn heap() -> &'static Kmalloc<'static, Frames, DirectMap, KernelCpu, MAX_CPUS> {
    HEAP.get().expect("heap::init ran during boot")
}

/// A kernel object for the typed-cache part of the smoke test.
struct Inode {
    number: u64,
    size: u64,
    blocks: [u32; 12],
}

/// Exercises the heap: collections through the global allocator (small,
/// mixed and large sizes), a typed object cache, statistics, then a shrink
/// that must give every slab back to mm-buddy.
pub fn smoke(frames: &'static Frames) -> bool {
    let mut ok = true;
    {
        let mut v: Vec<u64> = (0..10_000).collect();
        v.retain(|x| x % 3 == 0);
        ok &= v.len() == 3334 && v[1000] == 3000;
        let mut map = BTreeMap::new();
        for i in 0..2000u32 {
            map.insert(i, alloc::format!("value {i}"));
        }
        ok &= map.get(&1234).map(String::as_str) == Some("value 1234");
        let big: Box<[u8]> = alloc::vec![0xa5; 200_000].into_boxed_slice();
        // `v` (80 KB of capacity) and `big` are the two large allocations.
        ok &= big.iter().all(|&b| b == 0xa5) && heap().large_allocations() == 2;
        kprintln!("slab: kmalloc caches in use:");
        kprintln!("slab: {}", mm_slab::CacheStats::HEADER);
        for s in heap().stats().filter(|s| s.active_objects > 0) {
            kprintln!("slab: {}", s);
        }
    }
    ok &= heap().large_allocations() == 0;
    let inodes: TypedCache<Inode, Frames, DirectMap, KernelCpu, MAX_CPUS> =
        match TypedCache::new(frames, frames::identity_map(), frames::kernel_cpu(), "inode") {
            Ok(c) => c,
            Err(e) => {
                kprintln!("slab: inode cache: {}", e);
                return false;
            }
        };
    let held: Vec<_> = (0..500)
        .filter_map(|n| inodes.alloc(Inode { number: n, size: n * 512, blocks: [n as u32; 12] }).ok())
        .collect();
    ok &= held.len() == 500 && held.iter().enumerate().all(|(i, b)| b.number == i as u64 && b.blocks[11] == i as u32);
    ok &= held.iter().map(|b| b.size).sum::<u64>() == 512 * 499 * 500 / 2;
    kprintln!("slab: {}", inodes.stats());
    drop(held);
    ok &= inodes.stats().active_objects == 0;
    let released = inodes.cache().shrink().unwrap_or(0);
    drop(inodes);
    let live: usize = heap().stats().map(|s| s.active_objects).sum();
    let heap_released = heap().shrink();
    let corrupt = heap().validate(|c| kprintln!("slab: corruption: {}", c));
    kprintln!(
        "slab: live objects {}, inode slabs released {}, kmalloc slabs released {:?}, corruptions {}, refused frees {}",
        live,
        released,
        heap_released,
        corrupt,
        heap().refused_frees().0
    );
    ok &= live == 0 && heap_released.is_ok() && corrupt == 0 && heap().slab_bytes() == 0;
    kprintln!("slab: {}", if ok { "ok" } else { "FAILED" });
    ok
}
