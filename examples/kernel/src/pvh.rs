//! The PVH boot protocol's `hvm_start_info`: memory map, command line and
//! the ACPI root pointer.

use mm_types::{PhysAddr, PhysRange};

/// `hvm_start_info.magic`.
const MAGIC: u32 = 0x336e_c578;

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// One memory map entry (`hvm_memmap_table_entry`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MemMapEntry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type: 1 = usable RAM.
    pub kind: u32,
    reserved: u32,
}

impl MemMapEntry {
    /// E820 type name.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            1 => "usable",
            2 => "reserved",
            3 => "ACPI reclaimable",
            4 => "ACPI NVS",
            5 => "bad",
            _ => "other",
        }
    }

    /// The entry as a physical range, if it is valid.
    pub fn range(&self) -> Option<PhysRange> {
        PhysRange::new(PhysAddr::new(self.addr).ok()?, self.size).ok()
    }
}

/// What the kernel takes from the start info.
pub struct BootInfo {
    /// The memory map.
    pub memmap: &'static [MemMapEntry],
    /// The command line (`-append`), or "" if none.
    pub cmdline: &'static str,
    /// The ACPI RSDP's physical address (0: the loader gave none).
    pub rsdp: u64,
}

/// Reads the start info at `paddr`.
///
/// # Safety
///
/// `paddr` is the value the PVH loader passed in `%ebx`, and the first 4 GiB
/// are identity mapped; the structures it points to stay untouched for the
/// kernel's lifetime (the boot code reserves them before handing RAM to any
/// allocator).
pub unsafe fn parse(paddr: u64) -> Result<BootInfo, &'static str> {
    if paddr == 0 || !paddr.is_multiple_of(8) {
        return Err("no hvm_start_info pointer");
    }
    // The loader placed a start info here (caller's contract) and the address is identity mapped.
    // SAFETY: 8-byte aligned.
    let info = unsafe { &*(paddr as *const StartInfo) };
    if info.magic != MAGIC {
        return Err("hvm_start_info has a bad magic number");
    }
    if info.version < 1 || info.memmap_paddr == 0 || info.memmap_entries == 0 {
        return Err("hvm_start_info has no memory map (version 0)");
    }
    let (table, entries) = (info.memmap_paddr as *const MemMapEntry, info.memmap_entries as usize);
    // SAFETY: the loader wrote that many entries there, identity mapped and kept (caller's contract).
    let memmap = unsafe { core::slice::from_raw_parts(table, entries) };
    let cmdline = if info.cmdline_paddr == 0 {
        ""
    } else {
        // SAFETY: a NUL-terminated string written by the loader, identity mapped and kept (caller's contract).
        let c = unsafe { core::ffi::CStr::from_ptr(info.cmdline_paddr as *const core::ffi::c_char) };
        c.to_str().unwrap_or("")
    };
    Ok(BootInfo { memmap, cmdline, rsdp: info.rsdp_paddr })
}
