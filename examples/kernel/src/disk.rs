//! The swap disk: a virtio-blk PCI device (QEMU `-device virtio-blk-pci`)
//! driven by the `virtio-drivers` crate, as an mm-types backing store.
//!
//! PCI configuration space is reached through q35's ECAM window at
//! 0xb000_0000 (the memory map reserves it), mapped uncached with
//! mm-vmalloc's `ioremap` (2 MiB pages), as are the BARs the firmware
//! assigned. DMA buffers come from mm-buddy, and RAM is identity mapped, so
//! a buffer's physical address is its virtual one; so are the frames swap
//! writes from and reads into.

extern crate alloc;

use core::ptr::NonNull;

use mm_types::{
    AllocFlags, BackingStore, FrameBlock, FrameNumber, FrameProvider, Order, PhysAddr, StoreError, StoreErrorKind,
    StoreOp, SLOT_SIZE,
};
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{Cam, MmioCam, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::{BufferDirection, Hal};

use crate::frames::Frames;
use crate::kprintln;

/// q35's PCIe ECAM window (MMCONFIG), 256 MiB for buses 0-255.
const ECAM: u64 = 0xb000_0000;
const ECAM_SIZE: u64 = 256 << 20;
/// The identity map of RAM ends below this.
const IDENTITY_LIMIT: u64 = 4 << 30;

/// Maps `len` bytes of MMIO at `phys`, uncached.
fn ioremap(phys: u64, len: u64) -> Option<NonNull<u8>> {
    let vm = crate::vmem::vm()?;
    let va = vm.ioremap(PhysAddr::new(phys).ok()?, len, mm_vmalloc::CacheMode::Uncached).ok()?;
    NonNull::new(va.as_u64() as *mut u8)
}

static FRAMES: spin::Once<&'static Frames> = spin::Once::new();

/// virtio-drivers' platform layer: DMA from mm-buddy, identity mapping.
pub struct KernelHal;

fn order_for(pages: usize) -> Option<Order> {
    Order::new(pages.next_power_of_two().trailing_zeros() as u8)
}

// SAFETY: DMA blocks are fresh zeroed frames from mm-buddy, owned by the driver until freed; RAM is identity mapped (virtual == physical), so the device and the CPU see the same memory; MMIO is mapped uncached by ioremap.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (virtio_drivers::PhysAddr, NonNull<u8>) {
        let Some(frames) = FRAMES.get() else { return (0, NonNull::dangling()) };
        let Some(order) = order_for(pages) else { return (0, NonNull::dangling()) };
        match frames.allocate(order, AllocFlags::ZERO | AllocFlags::DMA32) {
            Ok(b) => {
                let pa = b.start_address().as_u64();
                (pa, NonNull::new(pa as *mut u8).expect("not frame 0"))
            }
            Err(_) => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: virtio_drivers::PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let (Some(frames), Some(order)) = (FRAMES.get(), order_for(pages)) else { return -1 };
        let Ok(pa) = PhysAddr::new(paddr) else { return -1 };
        let Ok(block) = FrameBlock::new(FrameNumber::containing(pa), order) else { return -1 };
        match frames.free(block) {
            Ok(()) => 0,
            Err(_) => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: virtio_drivers::PhysAddr, size: usize) -> NonNull<u8> {
        // A mapping per capability structure, kept for the driver's life.
        ioremap(paddr, size as u64).expect("room in the vmalloc window for a BAR")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _dir: BufferDirection) -> virtio_drivers::PhysAddr {
        let va = buffer.as_ptr() as *mut u8 as u64;
        assert!(va + buffer.len() as u64 <= IDENTITY_LIMIT, "a DMA buffer outside the identity map: {va:#x}");
        va
    }

    unsafe fn unshare(_paddr: virtio_drivers::PhysAddr, _buffer: NonNull<[u8]>, _dir: BufferDirection) {}
}

/// The swap disk as a backing store of 4 KiB slots.
pub struct VirtioDisk {
    blk: spin::Mutex<VirtIOBlk<KernelHal, PciTransport>>,
    slots: u64,
}

const SECTORS_PER_SLOT: usize = SLOT_SIZE / SECTOR_SIZE;

impl VirtioDisk {
    /// Finds the first virtio-blk device on PCI bus 0 and sets it up;
    /// `None` if there is none.
    pub fn probe(frames: &'static Frames) -> Option<VirtioDisk> {
        FRAMES.call_once(|| frames);
        let ecam = ioremap(ECAM, ECAM_SIZE)?;
        // SAFETY: `ecam` maps the 256 MiB ECAM window the memory map reserves, uncached, for the kernel's life; nothing else uses it.
        let cam = unsafe { MmioCam::new(ecam.as_ptr(), Cam::Ecam) };
        let mut root = PciRoot::new(cam);
        let (df, _info) =
            root.enumerate_bus(0).find(|(_, info)| virtio_device_type(info) == Some(DeviceType::Block))?;
        let transport = match PciTransport::new::<KernelHal, _>(&mut root, df) {
            Ok(t) => t,
            Err(e) => {
                kprintln!("disk: virtio-blk at {}: {:?}", df, e);
                return None;
            }
        };
        let blk = match VirtIOBlk::<KernelHal, _>::new(transport) {
            Ok(b) => b,
            Err(e) => {
                kprintln!("disk: virtio-blk set-up failed: {:?}", e);
                return None;
            }
        };
        let slots = blk.capacity() / SECTORS_PER_SLOT as u64;
        kprintln!("disk: virtio-blk at {}: {} sectors, {} swap slots", df, blk.capacity(), slots);
        Some(VirtioDisk { blk: spin::Mutex::new(blk), slots })
    }
}

fn io(op: StoreOp, slot: u64) -> StoreError {
    StoreError::slot(op, slot, StoreErrorKind::Io)
}

impl BackingStore for VirtioDisk {
    fn slot_count(&self) -> u64 {
        self.slots
    }

    fn read_slot(&self, slot: u64, buf: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.check_slot(StoreOp::Read, slot)?;
        let block = slot as usize * SECTORS_PER_SLOT;
        self.blk.lock().read_blocks(block, buf).map_err(|_| io(StoreOp::Read, slot))
    }

    fn write_slot(&self, slot: u64, buf: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.check_slot(StoreOp::Write, slot)?;
        let block = slot as usize * SECTORS_PER_SLOT;
        self.blk.lock().write_blocks(block, buf).map_err(|_| io(StoreOp::Write, slot))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.blk.lock().flush().map_err(|_| StoreError { op: StoreOp::Flush, slot: None, kind: StoreErrorKind::Io })
    }
}
