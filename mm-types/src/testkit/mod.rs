//! Host test kit: a simulated machine for tests, miri and fuzzing
//! (feature `std`).
//!
//! - [`SimPhysMemory`]: physical memory with a chosen base, size and holes,
//!   implementing [`PhysMemory`](crate::PhysMemory).
//! - [`MemStore`]: an in-memory [`BackingStore`](crate::BackingStore) with fault
//!   injection (fail the Nth read or write, corrupt a slot).
//! - [`MemFile`]: an in-memory [`FileBacking`](crate::FileBacking) that
//!   counts its requests, with fault injection (fail the Nth read or write
//!   request, every write or sync; read-only).
//! - [`MemSwap`]: an in-memory [`PageSwap`](crate::PageSwap) over a
//!   [`SimPhysMemory`]'s frames (fail the Nth swap-out or swap-in).
//! - [`RefFrameProvider`]: a slow, obviously correct
//!   [`FrameProvider`](crate::FrameProvider) with the same error reporting
//!   the real allocators promise, and allocation-failure injection.
//! - [`PageSample`]: zero, text-like and random page contents, the mix
//!   compressed-swap figures are reported on.
//! - [`HostCpus`]: a [`CpuLocal`](crate::CpuLocal) that gives each host
//!   thread a CPU id; [`ThreadCpus`]: one where each thread sets its own.
//! - `loom_model` (under `--cfg loom`): `spawn` and `model`, as every loom
//!   test uses them.
//!
//! ```
//! use mm_types::testkit::{RefFrameProvider, SimPhysMemory};
//! use mm_types::{AllocFlags, FrameProvider, Order, PhysAddr, PhysMemory};
//!
//! // 1 MiB of RAM at 16 MiB, with a hole of 64 KiB in the middle.
//! let base = PhysAddr::new(16 << 20)?;
//! let mem = SimPhysMemory::builder(base, 1 << 20)
//!     .hole(PhysAddr::new((16 << 20) + 0x40000)?, 0x10000)
//!     .build();
//! let frames = RefFrameProvider::new(&mem);
//! let block = frames.allocate(Order::new(1).unwrap(), AllocFlags::ZERO)?;
//! let mut bytes = [0xffu8; 8];
//! // SAFETY: the block was just allocated to us; nobody else touches it.
//! unsafe { mem.read_bytes(block.start_address(), &mut bytes)? };
//! assert_eq!(bytes, [0; 8]);
//! assert!(mem.translate(PhysAddr::new((16 << 20) + 0x40000)?, 1).is_err());
//! frames.free(block)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cpus;
pub mod fuzzing;
#[cfg(loom)]
pub mod loom_model;
mod mem_file;
mod mem_store;
mod mem_swap;
mod pages;
mod ref_frames;
mod sim_memory;

pub use cpus::{HostCpus, ThreadCpus};
pub use fuzzing::XorShift;
pub use mem_file::MemFile;
pub use mem_store::MemStore;
pub use mem_swap::MemSwap;
pub use pages::PageSample;
pub use ref_frames::RefFrameProvider;
pub use sim_memory::{SimPhysMemory, SimPhysMemoryBuilder};
