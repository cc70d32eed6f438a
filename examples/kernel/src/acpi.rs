//! Finding the CPUs: the ACPI root table (RSDP, then RSDT or XSDT) and the
//! MADT's local APIC entries (ACPI 6.5, sections 5.2.5-5.2.8 and 5.2.12).
//! Read once at boot, while the boot tables identity-map the first 4 GiB,
//! where the firmware keeps these tables.

/// Most CPUs this kernel runs.
pub const MAX_CPUS: usize = 8;

/// What the MADT says.
#[derive(Clone, Copy, Debug)]
pub struct Madt {
    /// The local APIC ids of the enabled CPUs, in table order.
    pub apic_ids: [u32; MAX_CPUS],
    /// How many of `apic_ids` are valid.
    pub cpus: usize,
    /// Enabled CPUs past [`MAX_CPUS`], left offline.
    pub ignored: usize,
    /// The local APIC's physical address.
    pub lapic: u64,
}

/// Reads `N` bytes at physical address `at` through the identity map.
///
/// # Safety
///
/// `[at, at + N)` is identity mapped and readable.
unsafe fn bytes<const N: usize>(at: u64) -> [u8; N] {
    // SAFETY: the caller's contract; the read is unaligned-safe.
    unsafe { core::ptr::read_unaligned(at as *const [u8; N]) }
}

/// The little-endian u32 at `at`.
///
/// # Safety
///
/// As for [`bytes`].
unsafe fn u32_at(at: u64) -> u32 {
    // SAFETY: the caller's contract.
    u32::from_le_bytes(unsafe { bytes::<4>(at) })
}

/// Whether the `len` bytes at `at` sum to zero (every ACPI checksum).
///
/// # Safety
///
/// As for [`bytes`], over `len` bytes.
unsafe fn checksum_ok(at: u64, len: u64) -> bool {
    // SAFETY: the caller's contract.
    (0..len).map(|i| unsafe { bytes::<1>(at + i)[0] }).fold(0u8, u8::wrapping_add) == 0
}

/// The RSDP: the one the loader passed, else a search of the BIOS area
/// [0xE0000, 0x100000) on 16-byte boundaries.
///
/// # Safety
///
/// The first MiB and `given` are identity mapped.
unsafe fn find_rsdp(given: u64) -> Option<u64> {
    // SAFETY: the caller's contract; a candidate is read 20 bytes at a time inside the first MiB.
    let valid = |at: u64| unsafe { &bytes::<8>(at) == b"RSD PTR " && checksum_ok(at, 20) };
    if given != 0 && valid(given) {
        return Some(given);
    }
    (0xe_0000..0x10_0000u64).step_by(16).find(|&at| valid(at))
}

/// Reads the MADT through the RSDP at `rsdp` (0: search for it).
///
/// # Safety
///
/// The boot tables' identity map of the first 4 GiB is live, and the
/// firmware's tables lie below 4 GiB (QEMU's do).
pub unsafe fn read_madt(rsdp: u64) -> Result<Madt, &'static str> {
    // SAFETY: the caller's contract: the first MiB is identity mapped.
    let rsdp = unsafe { find_rsdp(rsdp) }.ok_or("no ACPI RSDP")?;
    // SAFETY: a valid RSDP (checksummed) is at least 20 bytes; revision 2 adds the XSDT address.
    let (root, entry) = unsafe {
        match bytes::<1>(rsdp + 15)[0] {
            0 | 1 => (u32_at(rsdp + 16) as u64, 4),
            _ => (u64::from_le_bytes(bytes::<8>(rsdp + 24)), 8),
        }
    };
    if root == 0 || root >= 4 << 30 {
        return Err("the ACPI root table is not below 4 GiB");
    }
    // SAFETY: the root table's header (36 bytes) lies below 4 GiB, identity mapped.
    let len = unsafe { u32_at(root + 4) } as u64;
    if len < 36 {
        return Err("the ACPI root table is too short");
    }
    let madt = (0..(len - 36) / entry)
        .map(|i| {
            let at = root + 36 + i * entry;
            // SAFETY: inside the root table, whose length its header gave.
            unsafe {
                if entry == 4 {
                    u32_at(at) as u64
                } else {
                    u64::from_le_bytes(bytes::<8>(at))
                }
            }
        })
        // SAFETY: each entry names a table below 4 GiB (checked first), whose signature is 4 bytes.
        .find(|&t| t != 0 && t < 4 << 30 && unsafe { &bytes::<4>(t) == b"APIC" })
        .ok_or("no MADT in the ACPI tables")?;
    // SAFETY: the MADT's header, below 4 GiB.
    let len = unsafe { u32_at(madt + 4) } as u64;
    // SAFETY: the whole MADT, whose length its header gave.
    if len < 44 || !unsafe { checksum_ok(madt, len) } {
        return Err("the MADT is too short or its checksum is wrong");
    }
    // SAFETY: offset 36 of a MADT of at least 44 bytes.
    let mut out = Madt { apic_ids: [0; MAX_CPUS], cpus: 0, ignored: 0, lapic: unsafe { u32_at(madt + 36) } as u64 };
    let mut at = madt + 44;
    while at + 2 <= madt + len {
        // SAFETY: an entry header inside the MADT.
        let [kind, elen] = unsafe { bytes::<2>(at) };
        if elen < 2 || at + elen as u64 > madt + len {
            break;
        }
        // SAFETY: the entry's fields lie inside it (lengths checked per type).
        let (id, flags) = unsafe {
            match (kind, elen) {
                // Processor local APIC: id at 3, flags at 4.
                (0, 8..) => (Some(bytes::<1>(at + 3)[0] as u32), u32_at(at + 4)),
                // Processor local x2APIC: id at 4, flags at 8.
                (9, 16..) => (Some(u32_at(at + 4)), u32_at(at + 8)),
                // Local APIC address override.
                (5, 12..) => {
                    out.lapic = u64::from_le_bytes(bytes::<8>(at + 4));
                    (None, 0)
                }
                _ => (None, 0),
            }
        };
        if let Some(id) = id.filter(|_| flags & 1 != 0) {
            if out.cpus < MAX_CPUS {
                out.apic_ids[out.cpus] = id;
                out.cpus += 1;
            } else {
                out.ignored += 1;
            }
        }
        at += elen as u64;
    }
    if out.cpus == 0 {
        return Err("the MADT lists no enabled CPU");
    }
    Ok(out)
}
