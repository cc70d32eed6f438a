//! The disks: virtio-blk PCI devices (QEMU `-device virtio-blk-pci`, named
//! by their serial numbers) driven by the `virtio-drivers` crate, as mm-types backing stores.
//!
//! PCI configuration space is reached through q35's ECAM window at
//! 0xb000_0000 (the memory map reserves it), mapped uncached with
//! mm-vmalloc's `ioremap` (2 MiB pages), as are the BARs the firmware
//! assigned. DMA buffers come from mm-buddy, and RAM is identity mapped, so
//! a buffer's physical address is its virtual one; so are the frames swap
//! writes from and reads into. The driver's small request buffers live on
//! the calling thread's vmalloc'ed stack: they are translated through the
//! kernel page table, or bounced when they straddle two pages that are not
//! physically adjacent.

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

use mm_types::{
    AllocFlags, BackingStore, FrameBlock, FrameNumber, FrameProvider, Order, PhysAddr, StoreError, StoreErrorKind,
    StoreOp, VirtAddr, SLOT_SIZE,
};
use mm_vmalloc::KernelMapper;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{Cam, MmioCam, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::{BufferDirection, Hal};

use crate::frames::Frames;
use crate::kprintln;
use crate::paging;

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

// SAFETY: DMA blocks are fresh zeroed frames from mm-buddy, owned by the driver until freed; RAM is
// identity mapped (virtual == physical), so the device and the CPU see the same memory; MMIO is mapped
// uncached by ioremap.
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

    unsafe fn share(buffer: NonNull<[u8]>, dir: BufferDirection) -> virtio_drivers::PhysAddr {
        let va = buffer.as_ptr() as *mut u8 as u64;
        let len = buffer.len() as u64;
        if va + len <= IDENTITY_LIMIT {
            return va;
        }
        // The driver's request header and status byte live on the calling
        // thread's stack, which is vmalloc'ed: translate through the kernel
        // page table when the buffer's bytes are physically contiguous.
        let phys = |a: u64| Some(paging::tables()?.translate(VirtAddr::new(a).ok()?)?.phys.as_u64());
        if let (Some(first), Some(last)) = (phys(va), phys(va + len.max(1) - 1)) {
            if last.wrapping_sub(first) == len.max(1) - 1 {
                return first;
            }
        }
        // Otherwise through a bounce buffer on the heap (identity mapped).
        let mut bounce = alloc::vec![0u8; buffer.len()].into_boxed_slice();
        if dir != BufferDirection::DeviceToDriver {
            // SAFETY: the driver hands over a buffer valid for reads of its length for the request's life.
            bounce.copy_from_slice(unsafe { buffer.as_ref() });
        }
        let pa = bounce.as_ptr() as u64;
        BOUNCED.lock().push(bounce);
        pa
    }

    unsafe fn unshare(paddr: virtio_drivers::PhysAddr, mut buffer: NonNull<[u8]>, dir: BufferDirection) {
        let bounce = {
            let mut b = BOUNCED.lock();
            let Some(i) = b.iter().position(|x| x.as_ptr() as u64 == paddr) else { return };
            b.swap_remove(i)
        };
        if dir != BufferDirection::DriverToDevice {
            // SAFETY: the buffer `share` bounced, valid for writes of its length until the request ends (now).
            unsafe { buffer.as_mut() }.copy_from_slice(&bounce);
        }
    }
}

/// Buffers `share` copied because they were not physically contiguous.
static BOUNCED: spin::Mutex<Vec<Box<[u8]>>> = spin::Mutex::new(Vec::new());

/// A virtio-blk disk as a backing store of 4 KiB slots.
///
/// A run of consecutive slots ([`BackingStore::write_slots`],
/// [`BackingStore::read_slots`]) goes to the device as one request of up to
/// [`MAX_RUN`] slots, through a staging buffer the pages are copied to or
/// from: the driver takes one data buffer per request, and the pages of a
/// run are scattered in RAM. A request costs far more than the copy under
/// QEMU (an exit to the device model each), so runs pay.
///
/// Requests from several CPUs are in flight together: the lock is held to
/// submit a request and to complete one, not while the device works. Each
/// CPU waits for its own request to reach the head of the used ring (the
/// driver completes requests in ring order) and completes it; the request
/// header, status and data buffer stay on the waiting thread's stack (or
/// are the caller's page, or its CPU's staging buffer) until then. A flush
/// waits until no request is in flight, holding new ones off.
pub struct VirtioDisk {
    dev: crate::smp::HaltLock<Device>,
    slots: u64,
    frames: &'static Frames,
    /// Each CPU's staging buffer (`MAX_RUN` slots of identity-mapped DMA32
    /// frames, kept for good), made on its first run; null until then, or
    /// if there were no frames for it (runs then go slot by slot). Only
    /// that CPU uses it, during one request at a time (a disk request does
    /// not yield the CPU).
    staging: [AtomicPtr<u8>; crate::percpu::MAX_CPUS],
}

const SECTORS_PER_SLOT: usize = SLOT_SIZE / SECTOR_SIZE;

/// The slots one request carries at most: mm-swap's run.
pub const MAX_RUN: usize = mm_swap::MAX_RUN;

/// The driver, used under the disk's lock, and its requests in flight.
struct Device {
    blk: VirtIOBlk<KernelHal, PciTransport>,
    /// Requests submitted and not completed yet.
    in_flight: usize,
    /// A flush waits for the requests in flight to complete: nothing new
    /// is submitted meanwhile. (The driver's flush waits for the next used
    /// request and takes it for its own: it must be the only one.)
    draining: bool,
}

/// A request's data buffer.
enum Data<'b> {
    Read(&'b mut [u8]),
    Write(&'b [u8]),
}

/// The disks found on PCI bus 0, by serial number (QEMU's
/// `-device virtio-blk-pci,serial=NAME`), not yet taken.
static DISKS: spin::Mutex<Vec<(Vec<u8>, VirtioDisk)>> = spin::Mutex::new(Vec::new());
static PROBED: spin::Once<()> = spin::Once::new();

impl VirtioDisk {
    /// The virtio-blk disk whose serial number is `serial`; `None` if
    /// there is none (or it was taken already). The first call finds and
    /// sets up every virtio-blk device on PCI bus 0.
    pub fn take(frames: &'static Frames, serial: &str) -> Option<VirtioDisk> {
        PROBED.call_once(|| probe_all(frames));
        let mut disks = DISKS.lock();
        let i = disks.iter().position(|(s, _)| s.as_slice() == serial.as_bytes())?;
        let disk = disks.swap_remove(i).1;
        drop(disks);
        // The boot CPU's staging buffer now, while memory is plentiful;
        // the other CPUs' when they first need one.
        disk.make_staging(0, AllocFlags::DMA32);
        Some(disk)
    }

    fn check_slot(&self, op: StoreOp, slot: u64) -> Result<(), StoreError> {
        if slot < self.slots {
            Ok(())
        } else {
            Err(StoreError::slot(op, slot, StoreErrorKind::OutOfRange))
        }
    }
}

/// Sets up every virtio-blk device on PCI bus 0 and files it by serial.
fn probe_all(frames: &'static Frames) {
    FRAMES.call_once(|| frames);
    let Some(ecam) = ioremap(ECAM, ECAM_SIZE) else {
        kprintln!("disk: cannot map the PCI configuration window");
        return;
    };
    // SAFETY: `ecam` maps the 256 MiB ECAM window the memory map reserves, uncached, for the
    // kernel's life; nothing else uses it.
    let cam = unsafe { MmioCam::new(ecam.as_ptr(), Cam::Ecam) };
    let mut root = PciRoot::new(cam);
    let found: Vec<_> =
        root.enumerate_bus(0).filter(|(_, info)| virtio_device_type(info) == Some(DeviceType::Block)).collect();
    for (df, _) in found {
        let transport = match PciTransport::new::<KernelHal, _>(&mut root, df) {
            Ok(t) => t,
            Err(e) => {
                kprintln!("disk: virtio-blk at {}: {:?}", df, e);
                continue;
            }
        };
        let mut blk = match VirtIOBlk::<KernelHal, _>::new(transport) {
            Ok(b) => b,
            Err(e) => {
                kprintln!("disk: virtio-blk set-up failed: {:?}", e);
                continue;
            }
        };
        let mut id = [0u8; 20];
        let serial = match blk.device_id(&mut id) {
            Ok(n) => id[..n].to_vec(),
            Err(_) => Vec::new(),
        };
        let slots = blk.capacity() / SECTORS_PER_SLOT as u64;
        kprintln!(
            "disk: virtio-blk at {}: serial {:?}, {} sectors, {} slots of 4 KiB",
            df,
            core::str::from_utf8(&serial).unwrap_or("?"),
            blk.capacity(),
            slots
        );
        let staging = [const { AtomicPtr::new(core::ptr::null_mut()) }; crate::percpu::MAX_CPUS];
        let dev = Device { blk, in_flight: 0, draining: false };
        let disk = VirtioDisk { dev: crate::smp::HaltLock::new(dev), slots, frames, staging };
        DISKS.lock().push((serial, disk));
    }
}

/// A pause before trying to submit again (the queue full, or a flush
/// draining it). The wait for a completion looks again at once: pausing
/// there made `smp` slower (25.0 and 26.0 s against 20.2 and 20.3 s).
fn back_off() {
    for _ in 0..64 {
        core::hint::spin_loop();
    }
}

fn io(op: StoreOp, slot: u64) -> StoreError {
    StoreError::slot(op, slot, StoreErrorKind::Io)
}

impl VirtioDisk {
    /// Makes CPU `cpu`'s staging buffer (`MAX_RUN` slots) with `flags`
    /// unless it has one; the buffer, `None` if there were no frames.
    fn make_staging(&self, cpu: usize, flags: AllocFlags) -> Option<NonNull<u8>> {
        let cell = &self.staging[cpu];
        if let Some(p) = NonNull::new(cell.load(Ordering::Acquire)) {
            return Some(p);
        }
        let block = self.frames.allocate(order_for(MAX_RUN)?, flags).ok()?;
        // Identity mapped: the physical address is the virtual one.
        let p = NonNull::new(block.start_address().as_u64() as *mut u8)?;
        cell.store(p.as_ptr(), Ordering::Release);
        Some(p)
    }

    /// The start of this CPU's staging buffer, made now if it has none:
    /// without waiting for memory (a run is mostly made by reclaim, when
    /// memory is short; it then goes slot by slot, and the next run tries
    /// again); `None` if there are no frames for it.
    fn staging(&self) -> Option<NonNull<u8>> {
        self.make_staging(crate::percpu::index(), AllocFlags::DMA32 | AllocFlags::NO_WAIT)
    }

    /// One request: `data` to or from the disk at sector `sector`. Submitted
    /// under the lock; then, with the lock let go, waits for the device to
    /// use it, and completes it under the lock once it is the used ring's
    /// next (other CPUs' requests complete in their turn). `slot` names the
    /// request in an error.
    fn request(&self, sector: usize, mut data: Data<'_>, op: StoreOp, slot: u64) -> Result<(), StoreError> {
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        let token = loop {
            let mut dev = self.dev.lock();
            if dev.draining {
                // A flush waits for the requests in flight: this one waits for it.
                drop(dev);
                back_off();
                continue;
            }
            // SAFETY: `req`, `resp` and the data buffer stay where they are, untouched, until the
            // request is completed below: this function does not return before that.
            let r = unsafe {
                match &mut data {
                    Data::Read(b) => dev.blk.read_blocks_nb(sector, &mut req, b, &mut resp),
                    Data::Write(b) => dev.blk.write_blocks_nb(sector, &mut req, b, &mut resp),
                }
            };
            match r {
                Ok(t) => {
                    dev.in_flight += 1;
                    break t;
                }
                // Every descriptor is in use by other CPUs' requests.
                Err(virtio_drivers::Error::QueueFull) => {
                    drop(dev);
                    back_off();
                }
                Err(_) => return Err(io(op, slot)),
            }
        };
        loop {
            let mut dev = self.dev.lock();
            if dev.blk.peek_used() == Some(token) {
                // SAFETY: the same buffers as were submitted with `token`.
                let r = unsafe {
                    match &mut data {
                        Data::Read(b) => dev.blk.complete_read_blocks(token, &req, b, &mut resp),
                        Data::Write(b) => dev.blk.complete_write_blocks(token, &req, b, &mut resp),
                    }
                };
                dev.in_flight -= 1;
                return r.map_err(|_| io(op, slot));
            }
            drop(dev);
            core::hint::spin_loop();
        }
    }
}

impl BackingStore for VirtioDisk {
    fn slot_count(&self) -> u64 {
        self.slots
    }

    fn read_slot(&self, slot: u64, buf: &mut [u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.check_slot(StoreOp::Read, slot)?;
        let _timed = crate::profile::start(crate::profile::Phase::DiskRead);
        self.request(slot as usize * SECTORS_PER_SLOT, Data::Read(buf), StoreOp::Read, slot)
    }

    fn write_slot(&self, slot: u64, buf: &[u8; SLOT_SIZE]) -> Result<(), StoreError> {
        self.check_slot(StoreOp::Write, slot)?;
        let _timed = crate::profile::start(crate::profile::Phase::DiskWrite);
        self.request(slot as usize * SECTORS_PER_SLOT, Data::Write(buf), StoreOp::Write, slot)
    }

    fn max_run(&self) -> usize {
        MAX_RUN
    }

    fn write_slots(&self, first: u64, pages: &[&[u8; SLOT_SIZE]]) -> Result<(), StoreError> {
        mm_types::check_run(self, StoreOp::Write, first, pages.len())?;
        // One slot needs no staging; a run longer than the staging buffer,
        // or one without a staging buffer, goes slot by slot.
        let Some(p) = (2..=MAX_RUN).contains(&pages.len()).then(|| self.staging()).flatten() else {
            return pages.iter().zip(first..).try_for_each(|(p, s)| self.write_slot(s, p));
        };
        // SAFETY: this CPU's staging buffer (MAX_RUN slots, at least the run's length, of frames
        // from mm-buddy, never freed, identity mapped), which only this CPU uses, and this is its
        // one request in progress (a disk request does not yield the CPU, and no interrupt handler
        // makes one).
        let buf = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), pages.len() * SLOT_SIZE) };
        let _timed = crate::profile::start(crate::profile::Phase::DiskWrite);
        for (chunk, page) in buf.chunks_exact_mut(SLOT_SIZE).zip(pages) {
            chunk.copy_from_slice(&page[..]);
        }
        self.request(first as usize * SECTORS_PER_SLOT, Data::Write(buf), StoreOp::Write, first)
    }

    fn read_slots(&self, first: u64, bufs: &mut [&mut [u8; SLOT_SIZE]]) -> Result<(), StoreError> {
        mm_types::check_run(self, StoreOp::Read, first, bufs.len())?;
        let Some(p) = (2..=MAX_RUN).contains(&bufs.len()).then(|| self.staging()).flatten() else {
            return bufs.iter_mut().zip(first..).try_for_each(|(b, s)| self.read_slot(s, b));
        };
        // SAFETY: as in `write_slots`.
        let buf = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), bufs.len() * SLOT_SIZE) };
        let _timed = crate::profile::start(crate::profile::Phase::DiskRead);
        self.request(first as usize * SECTORS_PER_SLOT, Data::Read(&mut *buf), StoreOp::Read, first)?;
        for (page, chunk) in bufs.iter_mut().zip(buf.chunks_exact(SLOT_SIZE)) {
            page.copy_from_slice(chunk);
        }
        Ok(())
    }

    /// Waits for the requests in flight (holding off new ones), then
    /// flushes with the lock held: the driver's flush takes the next used
    /// request for its own, so it must be the only one.
    fn flush(&self) -> Result<(), StoreError> {
        loop {
            let mut dev = self.dev.lock();
            if dev.in_flight == 0 {
                dev.draining = false;
                let r = dev.blk.flush();
                return r.map_err(|_| StoreError { op: StoreOp::Flush, slot: None, kind: StoreErrorKind::Io });
            }
            dev.draining = true;
            drop(dev);
            back_off();
        }
    }
}
