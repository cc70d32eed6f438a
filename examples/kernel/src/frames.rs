//! The kernel's frame allocator: mm-buddy over the RAM of the PVH memory
//! map, reached through the boot identity map of the first 4 GiB.

use mm_buddy::{AddReport, BuddyAllocator, BuddyConfig, BuddyError};
use mm_types::percpu::Pinned;
use mm_types::{DirectMap, PhysAddr, PhysRange, VirtAddr};

use crate::percpu::{GsCpu, MAX_CPUS};
use crate::pvh::BootInfo;

/// The CPU source of the frame allocator and the heap: the CPU number
/// through GS, with the promise of pinned use, so their per-CPU fast paths
/// take no lock.
pub type KernelCpu = Pinned<GsCpu>;

/// The kernel's CPU source.
pub const fn kernel_cpu() -> KernelCpu {
    // SAFETY: the three promises of `Pinning::promise`:
    // 1. Pinned: a thread changes CPU only at a switch (`sched.rs`), which no allocator call
    //    contains, and ring 0 is never preempted (interrupts are off in the kernel).
    // 2. Not re-entered: the interrupts the kernel takes (the timer, in ring 3 or an idle CPU;
    //    the wake-up; NMIs for TLB shootdowns) allocate nothing, and the exceptions that reach
    //    mm-vma (and so the allocators) are user page faults and system calls, raised from ring 3
    //    or by kernel code touching user memory, never from inside an allocator call (which
    //    touches only identity-mapped RAM).
    // 3. Distinct: each CPU's GS base names its own per-CPU entry, whose number is below
    //    `MAX_CPUS`, the slot count of every structure built on this source.
    unsafe { Pinned::new(GsCpu) }
}

/// The allocator type: a slot per possible CPU, the identity map as direct
/// map.
pub type Frames = BuddyAllocator<'static, DirectMap, KernelCpu, MAX_CPUS>;

static FRAMES: spin::Once<Frames> = spin::Once::new();

/// The identity map set up by `boot.rs` covers the first 4 GiB.
const IDENTITY_LIMIT: u64 = 4 << 30;

/// Most usable memory map entries taken.
const MAX_USABLE: usize = 32;

/// The identity map of the first 4 GiB as a physical memory accessor.
pub fn identity_map() -> DirectMap {
    // SAFETY: boot.rs identity-maps [0, 4 GiB) read/write at offset 0, and the kernel's own tables
    // (paging.rs) keep that identity map of RAM for the kernel's whole life.
    unsafe { DirectMap::new(VirtAddr::ZERO, PhysAddr::new(IDENTITY_LIMIT).expect("4 GiB")) }
}

/// Builds the allocator from the memory map, reserving `reserved`.
pub fn init(info: &BootInfo, reserved: &[PhysRange]) -> Result<(&'static Frames, AddReport), BuddyError> {
    let direct = identity_map();
    let frames = FRAMES.try_call_once(|| BuddyAllocator::new(direct, kernel_cpu(), BuddyConfig::default()))?;
    let limit = PhysRange::new(PhysAddr::ZERO, IDENTITY_LIMIT).expect("4 GiB");
    let mut usable = [PhysRange::empty(PhysAddr::ZERO); MAX_USABLE];
    let mut n = 0;
    for e in info.memmap.iter().filter(|e| e.kind == 1) {
        if let Some(r) = e.range() {
            let r = r.intersection(&limit);
            if !r.is_empty() && n < MAX_USABLE {
                usable[n] = r;
                n += 1;
            }
        }
    }
    // These ranges are RAM per the firmware's memory map, inside the identity map, and the reserved ranges (boot data
    // in the first MiB, the kernel image) are excluded.
    // SAFETY: nothing else in the kernel uses free RAM.
    let report = unsafe { frames.add_boot_memory(&usable[..n], reserved)? };
    Ok((frames, report))
}

/// The allocator, once built.
pub fn get() -> Option<&'static Frames> {
    FRAMES.get()
}
