//! The raw layer: slab headers, freelist links inside free objects, poison,
//! red zones and the debug bitmap. Everything that reads or writes slab
//! memory through raw pointers is here, behind `unsafe fn`s whose contracts
//! the cache logic upholds; the rest of the crate has no pointer arithmetic.

use core::ptr;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::config::Geometry;

/// Bytes of the header at the end of every slab.
pub const HEADER_BYTES: usize = 64;

/// Byte a free object is filled with under [`CacheFlags::POISON`](crate::CacheFlags::POISON).
pub const POISON_FREE: u8 = 0x6b;
/// Red-zone byte after an allocated object.
pub const RED_ACTIVE: u8 = 0xcc;
/// Red-zone byte after a free object.
pub const RED_INACTIVE: u8 = 0xbb;

/// Which list a slab is on. The node lock protects this and the links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SlabState {
    /// Owned by a CPU: its current slab, or on its partial list.
    Frozen = 0,
    /// On the shared partial list (some objects free, some in use).
    Partial = 1,
    /// On the full list (no free object on its freelist).
    Full = 2,
    /// On the empty list (every object free).
    Empty = 3,
}

/// The last [`HEADER_BYTES`] of every slab: the magic value, which the
/// free path reads without the node lock, and the header fields, which
/// only the node lock's holder touches. Kept apart so that a `&mut` to the
/// fields (under the lock) never covers the word read without it.
#[repr(C, align(64))]
pub(crate) struct HeaderBlock {
    /// `magic_key ^ address of this block`: tells a slab of this cache from
    /// anything else (another cache has another key). Written when the slab
    /// is formatted (before anyone can reach it) and cleared when it is
    /// released (when no object of it is live); read by every free.
    magic: AtomicU64,
    header: SlabHeader,
}

/// Per-slab metadata under the node lock.
#[repr(C)]
pub(crate) struct SlabHeader {
    /// First object of the slab's own freelist (address, 0 if none). CPU
    /// freelists are separate: see the cache module.
    pub freelist: usize,
    /// List links (node lists: doubly linked; CPU partial and release
    /// chains use `next` only).
    pub prev: Option<SlabRef>,
    /// See `prev`.
    pub next: Option<SlabRef>,
    /// Physical address of the slab's first frame.
    pub phys: u64,
    /// Objects not on `freelist` (allocated, on a CPU freelist, or waiting
    /// in a CPU's deferred frees).
    pub inuse: u16,
    /// A [`SlabState`].
    pub state: SlabState,
}

static_assertions::const_assert!(core::mem::size_of::<HeaderBlock>() == HEADER_BYTES);

/// A live slab of one cache, named by its header.
///
/// Invariant: the header was written by [`format`] and the slab has not been
/// given back to the frame provider. The cache's `release` is the one place
/// that ends a slab, and its contract is that no list, CPU or caller names
/// the slab any more. A handle is only a name: the header's fields are
/// reached through the cache's [`Headers`] token, that is, under its node
/// lock.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SlabRef(NonNull<HeaderBlock>);

impl SlabRef {
    /// Names the slab whose header is at `hdr`.
    ///
    /// # Safety
    ///
    /// `hdr` is the header of a live slab (see the type's invariant).
    #[inline(always)]
    pub unsafe fn from_raw(hdr: *mut HeaderBlock) -> Self {
        // SAFETY: a live header is inside mapped slab memory, so not null.
        SlabRef(unsafe { NonNull::new_unchecked(hdr) })
    }

    /// The slab holding `obj`, whose start is `base`.
    ///
    /// # Safety
    ///
    /// `base` is the start of a live slab of a cache with geometry `geo`.
    #[inline(always)]
    pub unsafe fn of_slab(base: *mut u8, geo: &Geometry) -> Self {
        // SAFETY: forwarded contract; the header is at the same place in every slab.
        unsafe { SlabRef::from_raw(header_of(base, geo)) }
    }

    /// The address of the header.
    pub fn addr(self) -> usize {
        self.0.as_ptr().addr()
    }

    /// The start of the slab.
    #[inline(always)]
    pub fn base(self, geo: &Geometry) -> *mut u8 {
        self.0.as_ptr().map_addr(|a| slab_base(a, geo)).cast()
    }

    /// The header, for the holder of the cache's header token.
    #[inline(always)]
    pub fn get(self, _headers: &mut Headers) -> &mut SlabHeader {
        // SAFETY: the slab is live (the type's invariant), and `&mut Headers` is the node lock's token,
        // held exclusively: no other reference to any header of this cache exists meanwhile. The
        // reference covers the fields only, not the magic word other CPUs read.
        unsafe { &mut *ptr::addr_of_mut!((*self.0.as_ptr()).header) }
    }

    /// The header, read-only, for a holder of the cache's header token.
    #[inline(always)]
    pub fn get_ref(self, _headers: &Headers) -> &SlabHeader {
        // SAFETY: as for `get`; a shared token rules out writers.
        unsafe { &*ptr::addr_of!((*self.0.as_ptr()).header) }
    }

    /// Whether the header carries the magic of a cache with `magic_key`.
    pub fn magic_ok(self, magic_key: u64) -> bool {
        // SAFETY: the slab is live, so its header block is readable.
        unsafe { magic_ok(self.0.as_ptr(), magic_key) }
    }

    /// Clears the magic of a slab on its way back to the frame provider: a
    /// stale pointer into it is then recognised as foreign.
    pub fn clear_magic(self) {
        // SAFETY: the slab is live, so its header block is readable; the magic is an atomic.
        unsafe { (*self.0.as_ptr()).magic.store(0, Ordering::Relaxed) }
    }

    /// The header of a slab that nothing else names any more (it left every
    /// list and CPU on its way back to the frame provider), without the node
    /// lock.
    ///
    /// # Safety
    ///
    /// No list, CPU or other handle reaches the slab while the reference is
    /// used.
    pub unsafe fn owned<'a>(self) -> &'a mut SlabHeader {
        // SAFETY: live (the type's invariant) and, per the contract, unreachable by anyone else.
        unsafe { &mut *ptr::addr_of_mut!((*self.0.as_ptr()).header) }
    }
}

/// The right to read and write a cache's slab headers. Each cache has one,
/// in the data its node lock protects, so `&mut Headers` exists only for the
/// holder of that lock (MODEL.md 4: headers are written under it). Kept
/// apart from the lists so that a list and a header can be borrowed at once.
pub(crate) struct Headers(());

impl Headers {
    /// The token of a new cache.
    ///
    /// # Safety
    ///
    /// One per cache, kept in the data of its node lock and nowhere else.
    pub const unsafe fn new() -> Self {
        Headers(())
    }
}

/// The header of the slab holding `obj`: mask to the slab start, add the
/// header offset. Pure address arithmetic (keeps `obj`'s provenance).
pub(crate) fn header_of(obj: *mut u8, geo: &Geometry) -> *mut HeaderBlock {
    obj.map_addr(|a| (a & !(geo.slab_bytes() - 1)) + geo.header_offset()).cast()
}

/// Start of the slab holding `obj`.
pub(crate) fn slab_base(obj: usize, geo: &Geometry) -> usize {
    obj & !(geo.slab_bytes() - 1)
}

/// Reads the freelist link stored in the free object `obj`. The value
/// returned is untrusted: it is whatever the object's first word decodes
/// to, and a use after free may have changed that word. Callers check it
/// is an object start of the same slab (`CacheCore::is_object_offset`)
/// before passing it here again (MODEL.md 6).
///
/// # Safety
///
/// `obj` is the start of a free object of a live slab (its first 8 bytes
/// are a link): a freelist head, or a link that passed the object-start
/// check. Never a decoded link that has not been checked, which may point
/// anywhere, including into the middle of an object.
#[inline(always)]
pub(crate) unsafe fn read_link(obj: *mut u8, key: usize) -> usize {
    debug_assert!(obj.addr() % core::mem::align_of::<usize>() == 0, "read_link of a non-object {obj:p}");
    // SAFETY: per the contract, `obj` is an object start, so 8-byte aligned (strides are multiples of
    // 8 from a slab start aligned to the slab size), and its first word is inside the slab.
    unsafe { obj.cast::<usize>().read() ^ key ^ obj.addr().swap_bytes() }
}

/// Stores `next` as the freelist link of the free object `obj`.
///
/// # Safety
///
/// `obj` is the start of an object of a live slab that nobody else uses
/// (it is being freed, or is free and owned by the caller's lock).
#[inline(always)]
pub(crate) unsafe fn write_link(obj: *mut u8, next: usize, key: usize) {
    debug_assert!(obj.addr() % core::mem::align_of::<usize>() == 0, "write_link to a non-object {obj:p}");
    // SAFETY: as for `read_link`, and the object is ours to write.
    unsafe { obj.cast::<usize>().write(next ^ key ^ obj.addr().swap_bytes()) }
}

/// Lays out a fresh slab at `base`: header, every object on the freelist in
/// address order, poison and red zones, debug bitmap cleared, constructor
/// run. Returns the header.
///
/// # Safety
///
/// `base` points to `geo.slab_bytes()` bytes that nobody else uses,
/// aligned to that size.
pub(crate) unsafe fn format(base: *mut u8, geo: &Geometry, keys: Keys, fill: Fill, phys: u64) -> SlabRef {
    let mut next = 0usize;
    for i in (0..geo.objects).rev() {
        // SAFETY: `i * stride` is inside the objects area of the slab.
        let obj = unsafe { base.add(i * geo.stride) };
        if let Some(ctor) = fill.ctor {
            // The constructor sees the object before the link goes in; a
            // constructed state must leave the first word to the allocator
            // (Linux's rule too: the free pointer lives in the object).
            // SAFETY: `obj` is non-null (inside a mapped slab).
            ctor(unsafe { ptr::NonNull::new_unchecked(obj) });
        }
        if fill.poison {
            // SAFETY: the object's bytes are ours (fresh slab).
            unsafe { poison(obj, geo) };
        }
        if geo.red_zone > 0 {
            // SAFETY: as above, the red zone follows the object in the slab.
            unsafe { paint_red_zone(obj, geo, RED_INACTIVE) };
        }
        // SAFETY: as above.
        unsafe { write_link(obj, next, keys.link) };
        next = obj.addr();
    }
    if geo.bitmap_offset < geo.header_offset() {
        // SAFETY: the bitmap area lies between the objects and the header.
        unsafe { base.add(geo.bitmap_offset).write_bytes(0, geo.header_offset() - geo.bitmap_offset) };
    }
    // SAFETY: the header area is the slab's last HEADER_BYTES, aligned to 64 because the slab is page aligned.
    let hdr = unsafe { base.add(geo.header_offset()) }.cast::<HeaderBlock>();
    // SAFETY: as above; `write` does not read the old bytes.
    unsafe {
        hdr.write(HeaderBlock {
            magic: AtomicU64::new(keys.magic ^ hdr.addr() as u64),
            header: SlabHeader { freelist: next, prev: None, next: None, phys, inuse: 0, state: SlabState::Frozen },
        })
    };
    // SAFETY: the header was just written; the slab is live until released.
    unsafe { SlabRef::from_raw(hdr) }
}

/// The two keys of a cache.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keys {
    /// XOR-ed into freelist links.
    pub link: usize,
    /// XOR-ed into header magic values.
    pub magic: u64,
}

/// What `format` writes into objects.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fill {
    pub poison: bool,
    pub ctor: Option<fn(ptr::NonNull<u8>)>,
}

/// Whether the header at `hdr` carries the magic of a cache with
/// `magic_key`.
///
/// # Safety
///
/// `hdr` is readable for [`HEADER_BYTES`] bytes.
pub(crate) unsafe fn magic_ok(hdr: *mut HeaderBlock, magic_key: u64) -> bool {
    // SAFETY: per the contract. An atomic load: the free path reads the magic without the node lock,
    // and no reference to the header fields covers it.
    unsafe { (*ptr::addr_of!((*hdr).magic)).load(Ordering::Relaxed) == magic_key ^ hdr.addr() as u64 }
}

/// Fills the object's bytes after its link word with [`POISON_FREE`].
///
/// # Safety
///
/// The object is free and owned by the caller.
pub(crate) unsafe fn poison(obj: *mut u8, geo: &Geometry) {
    if geo.size > 8 {
        // SAFETY: bytes 8..size of the object are inside it.
        unsafe { obj.add(8).write_bytes(POISON_FREE, geo.size - 8) };
    }
}

/// First byte after the link word that is not [`POISON_FREE`], as
/// `(offset, found)`.
///
/// # Safety
///
/// The object is free and its bytes are not written concurrently.
pub(crate) unsafe fn check_poison(obj: *mut u8, geo: &Geometry) -> Option<(usize, u8)> {
    // SAFETY: bytes 8..size are inside the object, which nobody writes meanwhile (caller's contract).
    unsafe { first_not(obj, 8..geo.size, POISON_FREE) }
}

/// First byte of `obj[range]` that is not `pattern`, as `(offset, found)`,
/// read eight bytes at a time (these scans are the debug checks' cost).
///
/// # Safety
///
/// `obj[range]` is readable and not written concurrently.
unsafe fn first_not(obj: *mut u8, range: core::ops::Range<usize>, pattern: u8) -> Option<(usize, u8)> {
    let wide = u64::from_ne_bytes([pattern; 8]);
    let mut off = range.start;
    while off + 8 <= range.end {
        // SAFETY: `off..off + 8` is inside the range (caller's contract); the read is unaligned-safe.
        let w = unsafe { obj.add(off).cast::<u64>().read_unaligned() };
        if w != wide {
            break;
        }
        off += 8;
    }
    (off..range.end).find_map(|off| {
        // SAFETY: `off` is inside the range.
        let b = unsafe { obj.add(off).read() };
        (b != pattern).then_some((off, b))
    })
}

/// Fills the red zone (from the object's end to the next stride) with
/// `pattern`.
///
/// # Safety
///
/// The object's red zone is not used concurrently.
pub(crate) unsafe fn paint_red_zone(obj: *mut u8, geo: &Geometry, pattern: u8) {
    // SAFETY: bytes size..stride follow the object inside the slab.
    unsafe { obj.add(geo.size).write_bytes(pattern, geo.stride - geo.size) };
}

/// First red-zone byte that is not `pattern`, as `(offset, found)`.
///
/// # Safety
///
/// As for [`paint_red_zone`].
pub(crate) unsafe fn check_red_zone(obj: *mut u8, geo: &Geometry, pattern: u8) -> Option<(usize, u8)> {
    // SAFETY: bytes size..stride follow the object inside its stride, unused concurrently (caller's contract).
    unsafe { first_not(obj, geo.size..geo.stride, pattern) }
}

/// Reads (and with `set = Some(v)`, writes) the debug bitmap bit of object
/// `index`, returning the old value.
///
/// # Safety
///
/// The slab has a bitmap (`CHECK_FREE`), `base` is its start and the caller
/// holds the lock that protects it.
pub(crate) unsafe fn bitmap_bit(base: *mut u8, geo: &Geometry, index: usize, set: Option<bool>) -> bool {
    // SAFETY: the bitmap has `objects.div_ceil(64)` words at `bitmap_offset`, 8-byte aligned (the
    // offset is a multiple of 8).
    let word = unsafe { base.add(geo.bitmap_offset).cast::<u64>().add(index / 64) };
    let mask = 1u64 << (index % 64);
    // SAFETY: as above.
    let old = unsafe { word.read() };
    if let Some(v) = set {
        // SAFETY: as above.
        unsafe { word.write(if v { old | mask } else { old & !mask }) };
    }
    old & mask != 0
}

/// A doubly linked list of slabs (a node list). Protected by the node lock
/// of its cache, whose header token every operation takes.
pub(crate) struct SlabList {
    pub head: Option<SlabRef>,
    pub len: usize,
}

impl SlabList {
    pub const fn new() -> Self {
        SlabList { head: None, len: 0 }
    }

    /// Puts `slab`, which is on no list, at the front.
    pub fn push(&mut self, slab: SlabRef, headers: &mut Headers) {
        let h = slab.get(headers);
        debug_assert!(h.prev.is_none() && h.next.is_none(), "a slab pushed while on a list");
        h.prev = None;
        h.next = self.head;
        if let Some(head) = self.head {
            head.get(headers).prev = Some(slab);
        }
        self.head = Some(slab);
        self.len += 1;
    }

    /// Takes `slab`, which is on this list, off it.
    pub fn remove(&mut self, slab: SlabRef, headers: &mut Headers) {
        let h = slab.get(headers);
        let (prev, next) = (h.prev.take(), h.next.take());
        match prev {
            None => self.head = next,
            Some(p) => p.get(headers).next = next,
        }
        if let Some(n) = next {
            n.get(headers).prev = prev;
        }
        self.len -= 1;
    }

    /// Takes the first slab, if any.
    pub fn pop(&mut self, headers: &mut Headers) -> Option<SlabRef> {
        let slab = self.head?;
        self.remove(slab, headers);
        Some(slab)
    }
}

#[cfg(test)]
mod tests {
    use super::first_not;

    #[test]
    fn first_not_finds_the_first_odd_byte_anywhere() {
        // Every start within a word, every end up to a few words on (fewer under miri).
        let mut buf = [0xa5u8; 40];
        let len = if cfg!(miri) { 20 } else { 40 };
        let p = buf.as_mut_ptr();
        for start in 0..9 {
            for end in start..=len {
                // SAFETY: the range is inside `buf`, which nothing else touches.
                assert_eq!(unsafe { first_not(p, start..end, 0xa5) }, None);
                for bad in start..end {
                    // SAFETY: as above.
                    unsafe {
                        p.add(bad).write(0x5a);
                        if bad + 3 < end {
                            p.add(bad + 3).write(0);
                        }
                        assert_eq!(first_not(p, start..end, 0xa5), Some((bad, 0x5a)), "{start}..{end}");
                        p.add(bad).write(0xa5);
                        if bad + 3 < end {
                            p.add(bad + 3).write(0xa5);
                        }
                    }
                }
            }
        }
    }
}
