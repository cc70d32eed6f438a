#![doc = include_str!("../README.md")]
#![no_std]
// Unsafe code only in the modules marked `#[allow(unsafe_code)]` below.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

mod arch;
mod error;
mod flags;
#[allow(unsafe_code)]
mod mapper;
#[allow(unsafe_code)]
pub mod smp;
#[allow(unsafe_code)]
mod table;
#[allow(unsafe_code)]
mod tlb;
#[allow(unsafe_code)]
mod x86;

pub use arch::{level_index, level_span, PagingArch, ENTRIES};
pub use error::PagingError;
pub use flags::{AccessBits, HugePages, MapFlags};
pub use mapper::{Entry, Lookup, Mapping, PageTable, Translation, Unmapped};
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub use tlb::HardwareTlb;
pub use tlb::{heapless_pages, Flush, FlushBatch, NoShootdown, RecordingTlb, Shootdown, TlbFlush, BATCH_PAGES};
pub use x86::{entry_bits, map_flags, EntryBits, X86_64};
