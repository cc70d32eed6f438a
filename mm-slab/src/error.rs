//! Errors and corruption reports.

use core::fmt;

use mm_types::{FrameError, PhysAccessError, PhysAddr};

/// What went wrong in a slab operation. Every variant is something a caller
/// (or a bug elsewhere in the kernel) can cause; the cache stays consistent
/// after each of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlabError {
    /// The frame provider could not supply a slab (or a large allocation).
    OutOfMemory(FrameError),
    /// A size of zero where objects are needed, an alignment that is not a
    /// power of two or is above the page size, or (for a large kmalloc
    /// request) a size no frame block order covers.
    InvalidLayout {
        /// Requested size in bytes.
        size: usize,
        /// Requested alignment in bytes.
        align: usize,
    },
    /// A cache configuration that cannot work (the message says why).
    InvalidConfig(&'static str),
    /// An object too large for a slab of the largest order the cache may
    /// use (its `max_order`): even one object, with its red zone and
    /// alignment, does not fit beside the slab header.
    ObjectTooLarge {
        /// Requested object size in bytes.
        size: usize,
        /// The largest object size those options allow
        /// ([`Geometry::max_object_size`](crate::Geometry::max_object_size)).
        max: usize,
    },
    /// The physical memory accessor maps a naturally aligned slab at a
    /// virtual address that is not aligned to the slab size; slabs need
    /// alignment-preserving direct maps (all linear ones are).
    MappingNotAligned {
        /// The slab's physical start.
        phys: PhysAddr,
        /// Where the accessor put it.
        virt: usize,
    },
    /// The physical memory accessor could not map a slab.
    Unmapped(PhysAccessError),
    /// A free of an address that is not in a slab of this cache (a pointer
    /// from elsewhere, from another cache, or freed with the wrong size).
    ForeignPointer {
        /// The address passed to free.
        addr: usize,
    },
    /// A free of an address inside a slab of this cache that is not the
    /// start of an object.
    Misaligned {
        /// The address passed to free.
        addr: usize,
        /// Start of the object it points into.
        object: usize,
    },
    /// A free of an object that is already free.
    DoubleFree {
        /// The object.
        addr: usize,
    },
    /// Slab memory was overwritten; see [`Corruption`].
    Corrupted(Corruption),
    /// A large (page-level) allocation needs a linear direct map to find
    /// the frames from the address, and the accessor has none.
    NoLinearMap,
    /// The frame provider refused a block this allocator gave back (a
    /// sign that someone else freed it first).
    Frames(FrameError),
    /// The cache still has live objects and cannot be destroyed.
    CacheBusy {
        /// Objects still allocated.
        live: usize,
    },
}

/// One corrupted spot found by a check on alloc or free, or by
/// [`validate`](crate::Cache::validate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The cache's name.
    pub cache: &'static str,
    /// The object (or slab, for header problems) concerned.
    pub object: usize,
    /// What was found there.
    pub kind: CorruptionKind,
}

/// What kind of overwrite a [`Corruption`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The red zone after the object was overwritten: an overflow off its
    /// end. `offset` is from the object start.
    RedZone {
        /// Offset of the first bad byte from the object start.
        offset: usize,
        /// The pattern byte that should be there.
        expected: u8,
        /// The byte found.
        found: u8,
    },
    /// A free object's poison was overwritten: a write after free.
    Poison {
        /// Offset of the first bad byte from the object start.
        offset: usize,
        /// The pattern byte that should be there.
        expected: u8,
        /// The byte found.
        found: u8,
    },
    /// A freelist link decodes to an address that is not a free object of
    /// the same slab (an overwritten link, or a forged one).
    FreePointer {
        /// The decoded (invalid) address.
        decoded: usize,
    },
    /// A slab header no longer holds this cache's magic value.
    Header,
    /// A slab's free-object count disagrees with its freelist.
    FreeCount {
        /// Free objects the slab records.
        recorded: usize,
        /// Free objects found on its freelist.
        found: usize,
    },
    /// An object is on the freelist but marked allocated (or the reverse)
    /// in the debug bitmap.
    Bitmap,
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlabError::OutOfMemory(e) => write!(f, "no memory for a slab: {e}"),
            SlabError::InvalidLayout { size, align } => write!(f, "invalid object layout: size {size}, align {align}"),
            SlabError::InvalidConfig(why) => write!(f, "invalid cache configuration: {why}"),
            SlabError::ObjectTooLarge { size, max } => {
                write!(f, "objects of {size} bytes do not fit a slab (at most {max} bytes with these options)")
            }
            SlabError::MappingNotAligned { phys, virt } => {
                write!(f, "slab at {phys:?} is mapped at {virt:#x}, not aligned to the slab size")
            }
            SlabError::Unmapped(e) => write!(f, "slab memory not accessible: {e}"),
            SlabError::ForeignPointer { addr } => write!(f, "{addr:#x} is not an object of this cache"),
            SlabError::Misaligned { addr, object } => {
                write!(f, "{addr:#x} points inside the object at {object:#x}, not to its start")
            }
            SlabError::DoubleFree { addr } => write!(f, "double free of {addr:#x}"),
            SlabError::Corrupted(c) => write!(f, "{c}"),
            SlabError::NoLinearMap => f.write_str("large allocations need a linear direct map"),
            SlabError::Frames(e) => write!(f, "frame provider refused a free: {e}"),
            SlabError::CacheBusy { live } => write!(f, "cache still has {live} live objects"),
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: object {:#x}: ", self.cache, self.object)?;
        match self.kind {
            CorruptionKind::RedZone { offset, expected, found } => {
                write!(f, "red zone overwritten at +{offset} (found {found:#04x}, expected {expected:#04x})")
            }
            CorruptionKind::Poison { offset, expected, found } => {
                write!(f, "written after free at +{offset} (found {found:#04x}, expected {expected:#04x})")
            }
            CorruptionKind::FreePointer { decoded } => write!(f, "freelist link corrupted (decodes to {decoded:#x})"),
            CorruptionKind::Header => f.write_str("slab header overwritten"),
            CorruptionKind::FreeCount { recorded, found } => {
                write!(f, "slab records {recorded} free objects, its freelist has {found}")
            }
            CorruptionKind::Bitmap => f.write_str("freelist and allocation bitmap disagree"),
        }
    }
}

impl core::error::Error for SlabError {}
