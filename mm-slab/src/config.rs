//! Cache configuration and slab geometry (how objects are laid out in a
//! slab, and which slab order a size gets).

use mm_types::{AllocFlags, PAGE_SIZE};

use crate::error::SlabError;
use crate::slab::HEADER_BYTES;

bitflags::bitflags! {
    /// Hardening and debugging options of a cache, chosen at creation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct CacheFlags: u32 {
        /// Freelist links are stored XOR-ed with a per-cache secret and the
        /// link's own address (byte-swapped), and every link is checked to
        /// be an object start of its own slab before it is followed (a bad
        /// one is reported as [`CorruptionKind::FreePointer`](crate::CorruptionKind::FreePointer)
        /// and its freelist dropped); interior-pointer frees are refused on
        /// the fast path too. Costs a few instructions on the fast path; on
        /// by default. See the README for what it cannot catch.
        const HARDENED_FREELIST = 1 << 0;
        /// Free objects are filled with a poison pattern, checked when the
        /// object is handed out again: a write after free is reported.
        const POISON = 1 << 1;
        /// A red zone after each object, checked on free: an overflow off
        /// the object's end is reported.
        const RED_ZONE = 1 << 2;
        /// An allocation bitmap per slab and exact checks on free: a double
        /// free, a pointer into the middle of an object, or one from
        /// another cache is reported and ignored.
        const CHECK_FREE = 1 << 3;
        /// All debug checks. Debug caches take the locked path for every
        /// operation (as SLUB's debug caches do), so each check sees a
        /// consistent slab.
        const DEBUG = Self::POISON.bits() | Self::RED_ZONE.bits() | Self::CHECK_FREE.bits();
    }
}

impl CacheFlags {
    /// Whether the options need the locked (debug) path.
    pub(crate) fn is_debug(self) -> bool {
        self.intersects(CacheFlags::DEBUG)
    }
}

/// Largest slab order a cache may use (64 KiB slabs).
pub const MAX_SLAB_ORDER: u8 = 4;

/// How a cache is set up. `CacheConfig::new(name, size)` gives sensible
/// defaults; change fields with struct update syntax.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Name shown in statistics and corruption reports.
    pub name: &'static str,
    /// Object size in bytes (at least 1).
    pub size: usize,
    /// Object alignment (a power of two, at most the page size). Objects are
    /// always at least 8-byte aligned.
    pub align: usize,
    /// Hardening and debug options.
    pub flags: CacheFlags,
    /// Secret for freelist obfuscation and slab magic values. Give each boot
    /// a different value (from a hardware random source or a timer); caches
    /// derive their own from it.
    pub secret: u64,
    /// Empty slabs kept for reuse instead of going back to the frame
    /// provider ([`shrink`](crate::Cache::shrink) releases them too).
    pub min_empty_slabs: usize,
    /// Slabs each CPU takes from the shared partial list at once, and keeps
    /// on its own partial list.
    pub cpu_partial: usize,
    /// Largest slab order to consider (at most [`MAX_SLAB_ORDER`]).
    pub max_order: u8,
    /// Flags for slab frame allocations (for example
    /// [`AllocFlags::DMA32`] for a cache of device-visible objects).
    pub frame_flags: AllocFlags,
    /// Run on every object when its slab is created (Linux's constructor):
    /// objects then keep their constructed state across free and alloc.
    /// Cannot be combined with [`CacheFlags::POISON`].
    pub ctor: Option<fn(core::ptr::NonNull<u8>)>,
}

impl CacheConfig {
    /// A cache of `size`-byte objects, 8-byte aligned, with a hardened
    /// freelist and no debug checks.
    pub const fn new(name: &'static str, size: usize) -> Self {
        CacheConfig {
            name,
            size,
            align: 8,
            flags: CacheFlags::HARDENED_FREELIST,
            secret: 0x9e37_79b9_7f4a_7c15,
            min_empty_slabs: 1,
            cpu_partial: 4,
            max_order: 3,
            frame_flags: AllocFlags::empty(),
            ctor: None,
        }
    }
}

/// Where objects sit in a slab.
///
/// A slab is `2^order` frames, naturally aligned, with objects from its
/// first byte at `stride` intervals and the slab header in its last
/// [`HEADER_BYTES`] bytes (plus the debug bitmap before it when
/// [`CacheFlags::CHECK_FREE`] is set). Because the slab is aligned to its
/// size, the header of any object is found by masking its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Object size as requested.
    pub size: usize,
    /// Distance between objects (size + red zone, rounded up to the
    /// alignment).
    pub stride: usize,
    /// Alignment every object is guaranteed (power of two).
    pub align: usize,
    /// Slab order.
    pub order: u8,
    /// Objects per slab.
    pub objects: usize,
    /// Bytes of red zone after each object (0 without
    /// [`CacheFlags::RED_ZONE`]).
    pub red_zone: usize,
    /// Offset of the allocation bitmap (debug caches), or of the header.
    pub bitmap_offset: usize,
}

impl Geometry {
    /// Computes the layout: the smallest order (up to `max_order`) that
    /// wastes at most 1/16 of the slab, or else the order that wastes least.
    ///
    /// # Errors
    ///
    /// - [`SlabError::InvalidLayout`]: `size` is 0, or `align` is not a
    ///   power of two or is above the page size.
    /// - [`SlabError::InvalidConfig`]: `max_order` is above
    ///   [`MAX_SLAB_ORDER`].
    /// - [`SlabError::ObjectTooLarge`]: one object (with its red zone and
    ///   alignment) does not fit a slab of `max_order` beside the header;
    ///   any `size` up to `usize::MAX` is reported this way, never by an
    ///   arithmetic overflow.
    ///
    /// ```
    /// use mm_slab::{CacheFlags, Geometry, SlabError};
    ///
    /// let g = Geometry::new(96, 8, CacheFlags::HARDENED_FREELIST, 3)?;
    /// assert_eq!((g.stride, g.order), (96, 0));
    /// let max = Geometry::max_object_size(8, CacheFlags::RED_ZONE, 3);
    /// assert_eq!(
    ///     Geometry::new(usize::MAX, 8, CacheFlags::RED_ZONE, 3),
    ///     Err(SlabError::ObjectTooLarge { size: usize::MAX, max })
    /// );
    /// # Ok::<(), SlabError>(())
    /// ```
    pub fn new(size: usize, align: usize, flags: CacheFlags, max_order: u8) -> Result<Geometry, SlabError> {
        if size == 0 || !align.is_power_of_two() || align > PAGE_SIZE {
            return Err(SlabError::InvalidLayout { size, align });
        }
        if max_order > MAX_SLAB_ORDER {
            return Err(SlabError::InvalidConfig("max_order is above MAX_SLAB_ORDER"));
        }
        let max = Self::max_object_size(align, flags, max_order);
        let too_large = SlabError::ObjectTooLarge { size, max };
        // Checked before any arithmetic on `size`: from here on
        // `size <= max < 64 KiB`, so nothing below can overflow.
        if size > max {
            return Err(too_large);
        }
        let align = align.max(8);
        let red_zone = if flags.contains(CacheFlags::RED_ZONE) { 8 } else { 0 };
        let stride = (size.max(8) + red_zone).next_multiple_of(align);
        let mut best: Option<(usize, Geometry)> = None;
        for order in 0..=max_order {
            let bytes = PAGE_SIZE << order;
            let Some(geo) = Self::fit(size, stride, align, red_zone, order, bytes, flags) else { continue };
            let waste = bytes - geo.objects * size;
            if waste * 16 <= bytes {
                return Ok(geo);
            }
            // Compare waste fractions: waste/bytes < best_waste/best_bytes.
            if best.is_none_or(|(w, b)| waste * b.slab_bytes() < w * bytes) {
                best = Some((waste, geo));
            }
        }
        // Unreachable for `size <= max` (one object fits at `max_order`),
        // kept as an error rather than a panic.
        best.map(|(_, g)| g).ok_or(too_large)
    }

    /// The largest object size a cache with this alignment, these flags and
    /// slab orders up to `max_order` can hold: one object, its red zone and
    /// (with [`CacheFlags::CHECK_FREE`]) one bitmap word beside the header
    /// in a slab of `max_order`. `max_order` is capped at
    /// [`MAX_SLAB_ORDER`]; an `align` that is not a power of two is
    /// treated as 8.
    pub const fn max_object_size(align: usize, flags: CacheFlags, max_order: u8) -> usize {
        let order = if max_order > MAX_SLAB_ORDER { MAX_SLAB_ORDER } else { max_order };
        let align = if align.is_power_of_two() && align > 8 { align } else { 8 };
        let bitmap = if flags.contains(CacheFlags::CHECK_FREE) { 8 } else { 0 };
        let red_zone = if flags.contains(CacheFlags::RED_ZONE) { 8 } else { 0 };
        let room = (PAGE_SIZE << order) - HEADER_BYTES - bitmap;
        // `align <= PAGE_SIZE` for every layout `new` accepts, so the
        // rounded room still holds the red zone.
        (room & !(align - 1)).saturating_sub(red_zone)
    }

    fn fit(
        size: usize,
        stride: usize,
        align: usize,
        red_zone: usize,
        order: u8,
        bytes: usize,
        flags: CacheFlags,
    ) -> Option<Geometry> {
        let bitmap = |n: usize| if flags.contains(CacheFlags::CHECK_FREE) { n.div_ceil(64) * 8 } else { 0 };
        let mut objects = (bytes - HEADER_BYTES) / stride;
        while objects > 0 && objects * stride + bitmap(objects) + HEADER_BYTES > bytes {
            objects -= 1;
        }
        // Object indices must fit the u16 counters in the header.
        if objects == 0 || objects > u16::MAX as usize {
            return None;
        }
        let bitmap_offset = bytes - HEADER_BYTES - bitmap(objects);
        // Objects sit at multiples of the stride from a slab start aligned
        // to `bytes > stride`, so each is aligned to the stride's largest
        // power-of-two factor, which is at least the requested alignment.
        debug_assert!(stride % align == 0);
        Some(Geometry { size, stride, align: 1 << stride.trailing_zeros(), order, objects, red_zone, bitmap_offset })
    }

    /// Bytes per slab.
    pub const fn slab_bytes(&self) -> usize {
        PAGE_SIZE << self.order
    }

    /// Offset of the slab header from the slab start.
    pub const fn header_offset(&self) -> usize {
        self.slab_bytes() - HEADER_BYTES
    }

    /// Bytes covered by objects (the first `objects * stride` of the slab).
    pub const fn objects_bytes(&self) -> usize {
        self.objects * self.stride
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_keep_waste_low() {
        for size in [8, 16, 24, 96, 192, 256, 640, 1024, 2048, 3072, 4096, 8192] {
            let g = Geometry::new(size, 8, CacheFlags::empty(), 4).unwrap();
            let waste = g.slab_bytes() - g.objects * size;
            assert!(waste * 8 <= g.slab_bytes(), "size {size}: {g:?} wastes {waste}");
            assert!(g.objects_bytes() <= g.header_offset());
        }
        // Small objects fit a single page.
        assert_eq!(Geometry::new(64, 8, CacheFlags::empty(), 3).unwrap().order, 0);
    }

    #[test]
    fn alignment_red_zone_and_bitmap() {
        let g = Geometry::new(100, 64, CacheFlags::DEBUG, 3).unwrap();
        assert_eq!((g.stride, g.red_zone), (128, 8));
        assert!(g.align >= 64);
        assert!(g.objects_bytes() <= g.bitmap_offset);
        assert_eq!(g.header_offset() - g.bitmap_offset, g.objects.div_ceil(64) * 8);
        assert_eq!(Geometry::new(0, 8, CacheFlags::empty(), 3), Err(SlabError::InvalidLayout { size: 0, align: 8 }));
        assert!(Geometry::new(8, 3, CacheFlags::empty(), 3).is_err());
        assert!(Geometry::new(8, 8192, CacheFlags::empty(), 3).is_err());
        assert!(matches!(Geometry::new(1 << 20, 8, CacheFlags::empty(), 3), Err(SlabError::ObjectTooLarge { .. })));
    }

    #[test]
    fn the_largest_object_fits_and_one_more_byte_does_not() {
        for flags in [CacheFlags::empty(), CacheFlags::RED_ZONE, CacheFlags::CHECK_FREE, CacheFlags::DEBUG] {
            for align in [8, 64, 512, PAGE_SIZE] {
                for order in 0..=MAX_SLAB_ORDER {
                    let max = Geometry::max_object_size(align, flags, order);
                    if max == 0 {
                        // A page-aligned object leaves no room for the
                        // header in a single page.
                        assert_eq!((align, order), (PAGE_SIZE, 0));
                        assert_eq!(
                            Geometry::new(1, align, flags, order),
                            Err(SlabError::ObjectTooLarge { size: 1, max })
                        );
                        continue;
                    }
                    let g = Geometry::new(max, align, flags, order).unwrap();
                    assert_eq!((g.objects, g.order), (1, order), "{flags:?} align {align} order {order}");
                    assert!(g.objects_bytes() <= g.bitmap_offset);
                    assert_eq!(
                        Geometry::new(max + 1, align, flags, order),
                        Err(SlabError::ObjectTooLarge { size: max + 1, max })
                    );
                }
            }
        }
    }
}
