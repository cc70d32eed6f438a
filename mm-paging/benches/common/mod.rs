//! Workloads shared by the criterion bench (`paging.rs`) and the
//! instruction-count runner (`examples/paging_ir.rs`): 1 GiB of 4 KiB pages
//! (262,144) on simulated physical memory, for mm-paging, the `x86_64`
//! crate's `OffsetPageTable`, `page_table_multiarch` and
//! `page-table-generic`. All four take their table pages from the same
//! simple frame pool.

#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

use mm_paging::{HugePages, MapFlags, PageTable, X86_64};
use mm_types::testkit::SimPhysMemory;
use mm_types::{AllocFlags, FrameBlock, FrameError, FrameNumber, FrameProvider, Order, PhysAddr, PhysMemory, VirtAddr};

/// Pages in the benchmark range.
pub const PAGES: u64 = 1 << 18;
/// Where the range starts (1 GiB aligned, lower half).
pub const VA: u64 = 0x10_0000_0000;
/// The physical memory it maps (never touched).
pub const PA: u64 = 0x40_0000_0000;

/// A LIFO pool of zeroed 4 KiB frames over simulated RAM.
pub struct Pool {
    pub mem: SimPhysMemory,
    free: Mutex<Vec<u64>>,
}

impl Pool {
    fn new() -> Self {
        let mem = SimPhysMemory::new(PhysAddr::new(0x10_0000).unwrap(), 32 << 20);
        let free = (0x100..0x100 + 8192u64).rev().collect();
        Pool { mem, free: Mutex::new(free) }
    }

    fn take(&self) -> Option<u64> {
        let f = self.free.lock().unwrap().pop()?;
        // SAFETY: the frame just left the pool; nothing else uses it.
        unsafe { self.mem.zero_block(FrameBlock::new(FrameNumber::new(f).unwrap(), Order::ZERO).unwrap()) }.unwrap();
        Some(f)
    }

    fn give(&self, f: u64) {
        self.free.lock().unwrap().push(f);
    }

    /// Frames left.
    pub fn available(&self) -> usize {
        self.free.lock().unwrap().len()
    }

    /// Host address of physical address `pa`.
    pub fn host(&self, pa: u64) -> usize {
        self.mem.translate(PhysAddr::new(pa).unwrap(), 1).unwrap().as_ptr() as usize
    }
}

/// The shared pool.
pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Pool::new)
}

/// The pool as an `mm_types` frame provider.
pub struct PoolFrames;

// SAFETY: frames leave the pool exactly once until given back, zeroed.
unsafe impl FrameProvider for PoolFrames {
    fn allocate(&self, order: Order, _flags: AllocFlags) -> Result<FrameBlock, FrameError> {
        assert_eq!(order, Order::ZERO);
        let f = pool().take().ok_or(FrameError::OutOfMemory { order })?;
        Ok(FrameBlock::new(FrameNumber::new(f).unwrap(), order).unwrap())
    }
    fn free(&self, block: FrameBlock) -> Result<(), FrameError> {
        pool().give(block.start().as_u64());
        Ok(())
    }
}

/// The page-table implementations under test.
pub trait Tables {
    /// Maps `pages` 4 KiB pages from `VA` to `PA` (huge pages when `huge`).
    fn map(&mut self, pages: u64, huge: bool);
    /// Unmaps them.
    fn unmap(&mut self, pages: u64, huge: bool);
    /// Maps the 4 KiB page at `VA + i * 4096` to `PA + i * 4096` with one
    /// call (what a page fault does).
    fn map_page(&mut self, i: u64);
    /// Unmaps the 4 KiB page at `VA + i * 4096` with one call (what
    /// eviction or the munmap of one page does).
    fn unmap_page(&mut self, i: u64);
    /// Translates one address.
    fn translate(&self, va: u64) -> Option<u64>;
}

/// mm-paging.
pub struct Ours(Option<PageTable<X86_64, SimPhysMemory, PoolFrames>>);

impl Ours {
    pub fn new() -> Self {
        Ours(Some(PageTable::new(X86_64::FOUR_LEVEL, pool().mem.clone(), PoolFrames).unwrap()))
    }

    fn pt(&self) -> &PageTable<X86_64, SimPhysMemory, PoolFrames> {
        self.0.as_ref().unwrap()
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.0.take().unwrap().destroy(|_| {});
    }
}

impl Tables for Ours {
    fn map(&mut self, pages: u64, huge: bool) {
        let h = if huge { HugePages::all() } else { HugePages::empty() };
        let v = VirtAddr::new(VA).unwrap();
        let pt = self.0.as_mut().unwrap();
        pt.map_range(v, PhysAddr::new(PA).unwrap(), pages * 4096, MapFlags::KERNEL_DATA, h).unwrap().ignore();
    }
    fn unmap(&mut self, pages: u64, _huge: bool) {
        let pt = self.0.as_mut().unwrap();
        pt.unmap_range(VirtAddr::new(VA).unwrap(), pages * 4096, |_| {}).unwrap().ignore();
    }
    #[inline]
    fn map_page(&mut self, i: u64) {
        let (v, p) = (VirtAddr::new(VA + i * 4096).unwrap(), PhysAddr::new(PA + i * 4096).unwrap());
        let pt = self.0.as_mut().unwrap();
        pt.map(v, p, mm_types::PageSize::Size4KiB, MapFlags::KERNEL_DATA).unwrap().ignore();
    }
    #[inline]
    fn unmap_page(&mut self, i: u64) {
        let pt = self.0.as_mut().unwrap();
        pt.unmap_range(VirtAddr::new(VA + i * 4096).unwrap(), 4096, |_| {}).unwrap().ignore();
    }
    #[inline]
    fn translate(&self, va: u64) -> Option<u64> {
        self.pt().translate(VirtAddr::new(va).ok()?).map(|t| t.phys.as_u64())
    }
}

/// The `x86_64` crate's `OffsetPageTable`, page by page (it has no range
/// operations).
pub struct X86Crate {
    pt: x86_64::structures::paging::OffsetPageTable<'static>,
    root: u64,
}

/// Gives every table page below (and including) the table at `pa` back to
/// the pool (the `x86_64` crate never frees tables itself).
fn free_x86_tables(pa: u64, level: u8) {
    use x86_64::structures::paging::PageTableFlags as F;
    // SAFETY: `pa` is a table page of a hierarchy that is being dropped.
    let table = unsafe { &*(pool().host(pa) as *const x86_64::structures::paging::PageTable) };
    if level > 1 {
        for e in table.iter() {
            if e.flags().contains(F::PRESENT) && !e.flags().contains(F::HUGE_PAGE) {
                free_x86_tables(e.addr().as_u64(), level - 1);
            }
        }
    }
    pool().give(pa >> 12);
}

impl Drop for X86Crate {
    fn drop(&mut self) {
        free_x86_tables(self.root, 4);
    }
}

struct PoolAlloc;

// SAFETY: frames come from the pool, unused and zeroed.
unsafe impl x86_64::structures::paging::FrameAllocator<x86_64::structures::paging::Size4KiB> for PoolAlloc {
    fn allocate_frame(&mut self) -> Option<x86_64::structures::paging::PhysFrame> {
        let f = pool().take()?;
        Some(x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(f << 12)))
    }
}

impl X86Crate {
    pub fn new() -> Self {
        let root = pool().take().unwrap() << 12;
        let offset = pool().mem.translate_offset();
        // The pool's RAM is reachable at `phys + offset`.
        // SAFETY: `root` is a zeroed frame owned by this table for the rest of the program.
        let pt = unsafe {
            let table = &mut *(pool().host(root) as *mut x86_64::structures::paging::PageTable);
            x86_64::structures::paging::OffsetPageTable::new(table, x86_64::VirtAddr::new(offset))
        };
        X86Crate { pt, root }
    }
}

impl Tables for X86Crate {
    fn map(&mut self, pages: u64, huge: bool) {
        use x86_64::structures::paging::{Mapper, Page, PageTableFlags as F, PhysFrame, Size1GiB};
        let flags = F::PRESENT | F::WRITABLE | F::NO_EXECUTE;
        if huge {
            for i in 0..pages / 262144 {
                let page = Page::<Size1GiB>::containing_address(x86_64::VirtAddr::new(VA + (i << 30)));
                let frame = PhysFrame::<Size1GiB>::containing_address(x86_64::PhysAddr::new(PA + (i << 30)));
                // SAFETY: the frames are numbers nobody dereferences.
                unsafe { self.pt.map_to(page, frame, flags, &mut PoolAlloc).unwrap().ignore() };
            }
            return;
        }
        for i in 0..pages {
            self.map_page(i);
        }
    }
    fn unmap(&mut self, pages: u64, huge: bool) {
        use x86_64::structures::paging::{Mapper, Page, Size1GiB};
        if huge {
            for i in 0..pages / 262144 {
                let page = Page::<Size1GiB>::containing_address(x86_64::VirtAddr::new(VA + (i << 30)));
                self.pt.unmap(page).unwrap().1.ignore();
            }
            return;
        }
        for i in 0..pages {
            self.unmap_page(i);
        }
    }
    #[inline]
    fn map_page(&mut self, i: u64) {
        use x86_64::structures::paging::{Mapper, Page, PageTableFlags as F, PhysFrame, Size4KiB};
        let flags = F::PRESENT | F::WRITABLE | F::NO_EXECUTE;
        let page = Page::<Size4KiB>::containing_address(x86_64::VirtAddr::new(VA + i * 4096));
        let frame = PhysFrame::containing_address(x86_64::PhysAddr::new(PA + i * 4096));
        // SAFETY: the frames are numbers nobody dereferences.
        unsafe { self.pt.map_to(page, frame, flags, &mut PoolAlloc).unwrap().ignore() };
    }
    #[inline]
    fn unmap_page(&mut self, i: u64) {
        use x86_64::structures::paging::{Mapper, Page, Size4KiB};
        let page = Page::<Size4KiB>::containing_address(x86_64::VirtAddr::new(VA + i * 4096));
        self.pt.unmap(page).unwrap().1.ignore();
    }
    #[inline]
    fn translate(&self, va: u64) -> Option<u64> {
        use x86_64::structures::paging::Translate;
        self.pt.translate_addr(x86_64::VirtAddr::new(va)).map(|p| p.as_u64())
    }
}

/// `page_table_multiarch` (ArceOS).
pub struct Multiarch(page_table_multiarch::x86_64::X64PageTable<Handler>);

/// Its frame and direct-map hooks, on the pool.
pub struct Handler;

impl page_table_multiarch::PagingHandler for Handler {
    fn alloc_frames(num: usize, _align: usize) -> Option<memory_addr::PhysAddr> {
        assert_eq!(num, 1);
        pool().take().map(|f| memory_addr::PhysAddr::from_usize((f << 12) as usize))
    }
    fn dealloc_frames(paddr: memory_addr::PhysAddr, _num: usize) {
        pool().give(paddr.as_usize() as u64 >> 12);
    }
    fn phys_to_virt(paddr: memory_addr::PhysAddr) -> memory_addr::VirtAddr {
        memory_addr::VirtAddr::from_usize(pool().host(paddr.as_usize() as u64))
    }
}

impl Multiarch {
    pub fn new() -> Self {
        Multiarch(page_table_multiarch::x86_64::X64PageTable::<Handler>::try_new().unwrap())
    }
}

impl Tables for Multiarch {
    fn map(&mut self, pages: u64, huge: bool) {
        use page_table_entry::MappingFlags as F;
        let mut c = self.0.cursor();
        c.map_region(
            memory_addr::VirtAddr::from_usize(VA as usize),
            |v| memory_addr::PhysAddr::from_usize(v.as_usize() - VA as usize + PA as usize),
            (pages * 4096) as usize,
            F::READ | F::WRITE,
            huge,
        )
        .unwrap();
    }
    fn unmap(&mut self, pages: u64, _huge: bool) {
        let mut c = self.0.cursor();
        c.unmap_region(memory_addr::VirtAddr::from_usize(VA as usize), (pages * 4096) as usize).unwrap();
    }
    #[inline]
    fn map_page(&mut self, i: u64) {
        use page_table_entry::MappingFlags as F;
        let va = memory_addr::VirtAddr::from_usize((VA + i * 4096) as usize);
        let pa = memory_addr::PhysAddr::from_usize((PA + i * 4096) as usize);
        self.0.cursor().map(va, pa, page_table_multiarch::PageSize::Size4K, F::READ | F::WRITE).unwrap();
    }
    #[inline]
    fn unmap_page(&mut self, i: u64) {
        self.0.cursor().unmap(memory_addr::VirtAddr::from_usize((VA + i * 4096) as usize)).unwrap();
    }
    #[inline]
    fn translate(&self, va: u64) -> Option<u64> {
        self.0.query(memory_addr::VirtAddr::from_usize(va as usize)).ok().map(|(p, _, _)| p.as_usize() as u64)
    }
}

/// `page-table-generic`: a generic walker that takes the entry format from
/// its user, with range map and unmap that free emptied tables. It ships no
/// x86-64 format, so the harness gives it one (`GenericPte`), encoded as
/// the other implementations encode it.
pub struct Generic(page_table_generic::PageTable<GenericMeta, GenericFrames>);

/// An x86-64 entry for `page-table-generic`; its configuration is the leaf
/// flag bits.
#[derive(Clone, Copy, Debug)]
pub struct GenericPte(u64);

const PTE_PRESENT: u64 = 1;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;
const PTE_NO_EXECUTE: u64 = 1 << 63;
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

impl page_table_generic::PageTableEntry for GenericPte {
    type PteConfig = u64;
    fn new_page(paddr: page_table_generic::PhysAddr, config: u64, is_huge: bool) -> Self {
        GenericPte(paddr.as_usize() as u64 | config | PTE_PRESENT | if is_huge { PTE_HUGE } else { 0 })
    }
    fn new_table(paddr: page_table_generic::PhysAddr) -> Self {
        GenericPte(paddr.as_usize() as u64 | PTE_PRESENT | PTE_WRITABLE)
    }
    fn paddr(&self, _is_dir: bool) -> page_table_generic::PhysAddr {
        page_table_generic::PhysAddr::from_usize((self.0 & PTE_ADDR) as usize)
    }
    fn config(&self, _is_dir: bool) -> u64 {
        self.0 & !(PTE_ADDR | PTE_PRESENT | PTE_HUGE)
    }
    fn present(&self) -> bool {
        self.0 & PTE_PRESENT != 0
    }
    fn huge(&self, is_dir: bool) -> bool {
        is_dir && self.0 & PTE_HUGE != 0
    }
    fn unused(&self) -> bool {
        self.0 == 0
    }
    fn clear(&mut self) {
        self.0 = 0;
    }
}

/// Four levels of 512 entries, 2 MiB and 1 GiB blocks, no TLB on the host.
#[derive(Clone, Copy)]
pub struct GenericMeta;

impl page_table_generic::TableMeta for GenericMeta {
    type P = GenericPte;
    const PAGE_SIZE: usize = 4096;
    const LEVEL_BITS: &[usize] = &[9, 9, 9, 9];
    const MAX_BLOCK_LEVEL: usize = 3;
    fn flush(_vaddr: Option<page_table_generic::VirtAddr>) {}
}

/// Its frames: the shared pool.
#[derive(Clone)]
pub struct GenericFrames;

impl page_table_generic::FrameAllocator for GenericFrames {
    fn alloc_frame(&self) -> Option<page_table_generic::PhysAddr> {
        pool().take().map(|f| page_table_generic::PhysAddr::from_usize((f << 12) as usize))
    }
    fn dealloc_frame(&self, frame: page_table_generic::PhysAddr) {
        pool().give(frame.as_usize() as u64 >> 12);
    }
    fn phys_to_virt(&self, paddr: page_table_generic::PhysAddr) -> *mut u8 {
        pool().host(paddr.as_usize() as u64) as *mut u8
    }
}

impl Generic {
    pub fn new() -> Self {
        Generic(page_table_generic::PageTable::new(GenericFrames).unwrap())
    }
}

fn generic_va(i: u64) -> page_table_generic::VirtAddr {
    page_table_generic::VirtAddr::from_usize((VA + i * 4096) as usize)
}

fn generic_pa(i: u64) -> page_table_generic::PhysAddr {
    page_table_generic::PhysAddr::from_usize((PA + i * 4096) as usize)
}

impl Tables for Generic {
    fn map(&mut self, pages: u64, huge: bool) {
        let config = page_table_generic::MapConfig {
            vaddr: generic_va(0),
            paddr: generic_pa(0),
            size: (pages * 4096) as usize,
            pte: PTE_WRITABLE | PTE_NO_EXECUTE,
            allow_huge: huge,
            flush: false,
        };
        self.0.map(&config).unwrap();
    }
    fn unmap(&mut self, pages: u64, _huge: bool) {
        self.0.unmap(generic_va(0), (pages * 4096) as usize).unwrap();
    }
    #[inline]
    fn map_page(&mut self, i: u64) {
        self.0.map_page(generic_va(i), generic_pa(i), 4096, PTE_WRITABLE | PTE_NO_EXECUTE).unwrap();
    }
    #[inline]
    fn unmap_page(&mut self, i: u64) {
        self.0.unmap_page(generic_va(i)).unwrap();
    }
    #[inline]
    fn translate(&self, va: u64) -> Option<u64> {
        let va = page_table_generic::VirtAddr::from_usize(va as usize);
        self.0.translate_phys(va).ok().map(|p| p.as_usize() as u64)
    }
}

/// Deterministic generator (the test kit's xorshift).
pub use mm_types::testkit::XorShift as Rng;

/// `n` translations of random addresses in the mapped range; returns a
/// checksum so the work is not optimised away.
#[inline(always)]
pub fn translate_random<T: Tables>(t: &T, rng: &mut Rng, n: u64) -> u64 {
    let mut sum = 0;
    for _ in 0..n {
        let off = rng.next() % (PAGES * 4096);
        sum ^= t.translate(VA + off).unwrap();
    }
    sum
}
