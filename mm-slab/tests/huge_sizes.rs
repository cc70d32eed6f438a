//! Issue 19: object sizes up to `usize::MAX` are refused with
//! `SlabError::ObjectTooLarge` (naming the largest size that would fit),
//! never by an arithmetic-overflow panic, through `Geometry::new`,
//! `Cache::new` and `Kmalloc::new`.

use mm_slab::{Cache, CacheConfig, CacheFlags, Geometry, Kmalloc, KmallocConfig, SlabError, MAX_SLAB_ORDER};
use mm_types::percpu::SingleCpu;
use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
use mm_types::{PhysAddr, PAGE_SIZE};

const FLAG_SETS: [CacheFlags; 5] = [
    CacheFlags::empty(),
    CacheFlags::HARDENED_FREELIST,
    CacheFlags::RED_ZONE,
    CacheFlags::CHECK_FREE,
    CacheFlags::HARDENED_FREELIST.union(CacheFlags::DEBUG),
];

/// Sizes near every overflow edge: the top of the address space, just below
/// it by less than a red zone or an alignment, the sign bit, and just past
/// the largest slab.
fn huge_sizes() -> [usize; 9] {
    [
        usize::MAX,
        usize::MAX - 1,
        usize::MAX - 7,
        usize::MAX - 8,
        usize::MAX - (PAGE_SIZE - 1),
        isize::MAX as usize,
        1 << (usize::BITS - 1),
        u32::MAX as usize,
        (PAGE_SIZE << MAX_SLAB_ORDER) + 1,
    ]
}

#[test]
fn geometry_refuses_huge_sizes_with_object_too_large() {
    for flags in FLAG_SETS {
        for align in [1, 8, 64, PAGE_SIZE] {
            for max_order in 0..=MAX_SLAB_ORDER {
                let max = Geometry::max_object_size(align, flags, max_order);
                assert!(max < PAGE_SIZE << max_order);
                for size in huge_sizes().into_iter().chain([max + 1]) {
                    assert_eq!(
                        Geometry::new(size, align, flags, max_order),
                        Err(SlabError::ObjectTooLarge { size, max }),
                        "size {size:#x} align {align} {flags:?} order {max_order}"
                    );
                }
            }
        }
    }
}

#[test]
fn cache_and_kmalloc_refuse_huge_sizes_with_object_too_large() {
    let mem = SimPhysMemory::new(PhysAddr::new(0x100_0000).unwrap(), 1 << 20);
    let frames = RefFrameProvider::new(&mem);
    for flags in FLAG_SETS {
        for size in huge_sizes() {
            let config = CacheConfig { flags, ..CacheConfig::new("huge", size) };
            let max = Geometry::max_object_size(config.align, flags, config.max_order);
            let err = Cache::<_, _, _>::new(&frames, mem.clone(), SingleCpu, config).unwrap_err();
            assert_eq!(err, SlabError::ObjectTooLarge { size, max }, "{flags:?}");
            assert!(err.to_string().contains(&format!("{size} bytes")), "{err}");
        }
    }
    // kmalloc's classes go up to 8 KiB: with single-page slabs the 4 KiB
    // class (64-byte aligned) is the first that does not fit.
    let config = KmallocConfig { max_order: 0, ..KmallocConfig::default() };
    let err = Kmalloc::<_, _, _>::new(&frames, mem.clone(), SingleCpu, config).unwrap_err();
    assert_eq!(err, SlabError::ObjectTooLarge { size: 4096, max: Geometry::max_object_size(64, config.flags, 0) });
    // An order above the limit is a configuration error, not a size error.
    let config = CacheConfig { max_order: MAX_SLAB_ORDER + 1, ..CacheConfig::new("order", 64) };
    assert!(matches!(Cache::<_, _, _>::new(&frames, mem.clone(), SingleCpu, config), Err(SlabError::InvalidConfig(_))));
}
