//! The reference kernel: boots with PVH under QEMU, reads the memory map and
//! runs a scenario chosen on the command line (`-append`), then exits QEMU
//! through the isa-debug-exit device with status 33 on success.
//!
//! Boot flow: `boot.rs` (32-bit entry, identity map, long mode) ->
//! [`kernel_main`] -> GDT, TSS and IDT (`interrupts.rs`) -> memory map from
//! `pvh.rs` -> mm-buddy over RAM minus the kernel image and boot data
//! (`frames.rs`) -> the kernel's mm-paging tables in CR3 (`paging.rs`) ->
//! mm-slab as the global allocator (`heap.rs`) -> mm-vmalloc (`vmem.rs`) ->
//! the scenario: `smoke` here, or tasks in threads of the scheduler
//! (`sched.rs`, `tasks.rs`, `user.rs`).

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod acpi;
mod boot;
mod clock;
mod disk;
mod frames;
mod fs;
mod heap;
mod interrupts;
mod lapic;
mod paging;
mod percpu;
mod profile;
mod pvh;
mod sched;
mod serial;
mod shootdown;
mod smp;
mod tasks;
mod user;
mod uspace;
mod vmem;

use mm_types::{AllocFlags, FrameError, FrameProvider, Order, PhysAddr, PhysRange, Zone, PAGE_SIZE};
use x86_64::instructions::port::Port;

extern "C" {
    static __kernel_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

/// Value written to the debug-exit port: QEMU exits with `(v << 1) | 1`.
#[derive(Clone, Copy)]
#[repr(u32)]
enum ExitCode {
    Success = 0x10,
    Failure = 0x11,
}

fn exit_qemu(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is the isa-debug-exit device QEMU is started with; writing it ends the virtual machine.
    unsafe { Port::<u32>::new(0xf4).write(code as u32) };
    loop {
        x86_64::instructions::hlt();
    }
}

/// Physical memory the kernel image occupies.
fn kernel_image() -> PhysRange {
    // SAFETY: linker-script symbols; only their addresses are taken.
    let (start, end) = unsafe { (&__kernel_start as *const u8 as u64, &__kernel_end as *const u8 as u64) };
    PhysRange::from_bounds(PhysAddr::new(start).expect("low"), PhysAddr::new(end).expect("low"))
        .expect("image ends after it starts")
}

/// The image's sections, from the linker script.
fn image_sections() -> paging::Image {
    // SAFETY: linker-script symbols; only their addresses are taken.
    let [a, b, c, d] = unsafe {
        [
            &__kernel_start as *const u8 as u64,
            &__rodata_start as *const u8 as u64,
            &__data_start as *const u8 as u64,
            &__kernel_end as *const u8 as u64,
        ]
    };
    let r = |s: u64, e: u64| {
        PhysRange::from_bounds(PhysAddr::new(s).expect("low"), PhysAddr::new(e).expect("low")).expect("ordered")
    };
    paging::Image { text: r(a, b), rodata: r(b, c), data: r(c, d) }
}

/// Prints the memory map and works out which frames an allocator may use:
/// usable entries minus the first MiB (start info, memory map, command line
/// and legacy areas live there) and the kernel image.
fn show_memory_map(info: &pvh::BootInfo) -> (u64, u64) {
    kprintln!("memory map: {} entries", info.memmap.len());
    let mut usable = 0;
    let mut frames = 0;
    let low = PhysRange::new(PhysAddr::ZERO, 1 << 20).expect("1 MiB");
    let image = kernel_image();
    for e in info.memmap {
        kprintln!("  [{:#x}-{:#x}] {}", e.addr, e.addr.saturating_add(e.size), e.kind_name());
        if e.kind != 1 {
            continue;
        }
        let Some(range) = e.range() else { continue };
        usable += range.len();
        let above_low = range.subtract(&low).1;
        let (a, b) = above_low.subtract(&image);
        frames += a.frames_inward().len() + b.frames_inward().len();
    }
    (usable, frames)
}

/// The memory set-up every scenario starts with: the map, mm-buddy over the
/// RAM, and the kernel's own mm-paging tables in CR3.
fn setup_memory(info: &pvh::BootInfo) -> Option<&'static frames::Frames> {
    let (usable, frames) = show_memory_map(info);
    kprintln!("usable RAM: {} KiB", usable / 1024);
    let image = kernel_image();
    kprintln!(
        "kernel image: [{:#x}-{:#x}] ({} KiB)",
        image.start(),
        image.start().as_u64() + image.len(),
        image.len() / 1024
    );
    kprintln!("frames free for allocators: {} ({} KiB)", frames, frames * PAGE_SIZE as u64 / 1024);
    if usable == 0 || frames == 0 || frames * PAGE_SIZE as u64 > usable {
        return None;
    }
    let low = PhysRange::new(PhysAddr::ZERO, 1 << 20).expect("1 MiB");
    let (buddy, rep) = match frames::init(info, &[low, kernel_image()]) {
        Ok(x) => x,
        Err(e) => {
            kprintln!("buddy: setup failed: {}", e);
            return None;
        }
    };
    kprintln!(
        "buddy: managed {} frames in {} regions, metadata {} frames, skipped {}",
        rep.frames,
        rep.regions,
        rep.metadata_frames,
        rep.skipped_frames
    );
    if rep.frames + rep.metadata_frames + rep.skipped_frames != frames {
        kprintln!("buddy: frames do not add up");
        return None;
    }
    let ram_end = info.memmap.iter().filter(|e| e.kind == 1).map(|e| e.addr + e.size).max().unwrap_or(0);
    let image = image_sections();
    match paging::build_and_switch(buddy, &image, ram_end.min(4 << 30)) {
        Ok(s) => kprintln!(
            "paging: switched to mm-paging tables: RAM to {:#x} identity and at {:#x}; pages 4K {} 2M {} 1G {}; {} table pages",
            s.ram_end,
            paging::DIRECT_MAP,
            s.pages[0],
            s.pages[1],
            s.pages[2],
            s.tables
        ),
        Err(e) => {
            kprintln!("paging: building the kernel page tables failed: {}", e);
            return None;
        }
    }
    if !paging::check(&image, buddy) {
        return None;
    }
    if let Err(e) = heap::init(buddy) {
        kprintln!("heap: setup failed: {}", e);
        return None;
    }
    kprintln!("heap: mm-slab kmalloc is the global allocator");
    match vmem::init(buddy) {
        Ok(_) => kprintln!(
            "vmalloc: window [{:#x}-{:#x}) over the kernel page table",
            vmem::VMALLOC_START,
            vmem::VMALLOC_START + vmem::VMALLOC_SIZE
        ),
        Err(e) => {
            kprintln!("vmalloc: setup failed: {}", e);
            return None;
        }
    }
    Some(buddy)
}

/// Exercises mm-buddy: every zone, orders 0-10, zeroing, a contiguous run,
/// a double free, and full coalescing at the end.
fn buddy_smoke(buddy: &frames::Frames) -> bool {
    let mut ok = true;
    let mut held = [None; 11];
    for (order, slot) in held.iter_mut().enumerate() {
        let flags = if order % 2 == 0 { AllocFlags::MOVABLE } else { AllocFlags::ZERO };
        *slot = buddy.allocate(Order::new(order as u8).expect("small"), flags).ok();
        ok &= slot.is_some();
    }
    let dma = buddy.allocate(Order::new(2).expect("small"), AllocFlags::DMA);
    ok &= dma.is_ok_and(|b| b.start_address().as_u64() + b.bytes() <= 16 << 20);
    let run = buddy.allocate_contiguous(100, 64, None, AllocFlags::DMA32);
    ok &= run.is_ok_and(|r| r.start().as_u64() % 64 == 0);
    for b in held.iter().flatten().chain(dma.as_ref().ok()) {
        ok &= buddy.free(*b).is_ok();
    }
    if let Ok(r) = run {
        ok &= buddy.free_contiguous(r).is_ok();
    }
    if let Some(b) = held[0] {
        let again = buddy.free(b);
        kprintln!("buddy: double free of {:?} -> {:?}", b, again);
        ok &= again == Err(FrameError::DoubleFree(b));
    }
    buddy.drain_all();
    for zone in Zone::ALL {
        let s = buddy.zone_stats(zone);
        if s.managed_frames > 0 {
            kprintln!("buddyinfo: {}", s);
            let w = s.watermarks;
            kprintln!(
                "buddy: zone {} managed {} free {} watermarks min {} low {} high {}",
                zone,
                s.managed_frames,
                s.free_frames,
                w.min,
                w.low,
                w.high
            );
        }
    }
    // The kernel page tables hold their table pages for good, vmalloc its
    // index frames, and the other CPUs their stacks.
    let tables = paging::tables().map_or(0, |t| t.lock().table_pages())
        + vmem::index_frames()
        + vmem::vm().map_or(0, |v| v.stats().frames);
    let coalesced = buddy.free_frame_count() + tables == buddy.managed_frames();
    let checked = buddy.check();
    kprintln!(
        "buddy: all frames free again but the {} page-table, vmalloc index and CPU stack pages: {}; check: {:?}",
        tables,
        coalesced,
        checked
    );
    ok &= coalesced && checked.is_ok();
    kprintln!("buddy: {}", if ok { "ok" } else { "FAILED" });
    ok
}

/// Entry from `boot.rs`, in 64-bit mode with 0-4 GiB identity mapped.
#[no_mangle]
extern "C" fn kernel_main(start_info: u32) -> ! {
    serial::init();
    kprintln!("booted (PVH start info at {:#x})", start_info);
    // `start_info` is what the PVH loader passed in %ebx (boot.rs), the first 4 GiB are identity mapped.
    // SAFETY: nothing allocates memory yet.
    let info = match unsafe { pvh::parse(start_info as u64) } {
        Ok(i) => i,
        Err(why) => {
            kprintln!("cannot read boot information: {}", why);
            exit_qemu(ExitCode::Failure);
        }
    };
    let label = info.cmdline.trim();
    // `profile` last: the sampling profile (`profile.rs`), for any scenario.
    let (label, profiling) = match label.rsplit_once(char::is_whitespace) {
        Some((rest, "profile")) => (rest.trim_end(), true),
        None if label == "profile" => ("", true),
        _ => (label, false),
    };
    if profiling {
        profile::enable();
    }
    let label = if label.is_empty() { "smoke" } else { label };
    SCENARIO.call_once(|| label);
    let mut words = label.split_whitespace();
    let scenario = words.next().unwrap_or("smoke");
    kprintln!("command line: {:?}; scenario {}", info.cmdline, label);
    // The CPUs, read while the boot tables map the firmware's tables.
    // SAFETY: the boot tables identity-map the first 4 GiB, where QEMU's ACPI tables lie.
    let madt = match unsafe { acpi::read_madt(info.rsdp) } {
        Ok(m) => m,
        Err(why) => {
            kprintln!("cannot find the CPUs: {}", why);
            exit_qemu(ExitCode::Failure);
        }
    };
    // The boot CPU's local APIC id, from CPUID (its registers are not mapped yet).
    let bsp_apic_id = core::arch::x86_64::__cpuid(1).ebx >> 24;
    // Per-CPU data first: the allocators read the CPU number through it.
    interrupts::init(0, bsp_apic_id);
    kprintln!("clock: TSC at {} ticks per ms (calibrated against the PIT)", clock::init());
    clock::quiet_pic();
    // Read before the kernel's own tables unmap page 0, where the map lies.
    let ram_end = ram_end(&info);
    let Some(buddy) = setup_memory(&info) else { finish(false) };
    if !start_cpus(&madt) {
        finish(false)
    }
    // Pressure and smp time their own workloads; any other scenario is
    // profiled whole when asked.
    let whole = profiling && !matches!(scenario, "pressure" | "smp");
    let started = clock::now_ms();
    if whole {
        profile::reset();
    }
    let passed = match scenario {
        "smoke" => {
            buddy_smoke(buddy) & heap::smoke(buddy) & vmem::smoke(buddy) & uspace::smoke(buddy) & buddy_smoke(buddy)
        }
        "faults" => tasks::faults(buddy, ram_end, words.next()),
        "pressure" => tasks::pressure(buddy, ram_end, words.next()),
        "oom" => tasks::oom(buddy, ram_end),
        "files" => tasks::files(buddy, ram_end),
        "user" => tasks::user(buddy, ram_end),
        "smp" => tasks::smp(buddy, ram_end),
        other => {
            kprintln!(
                "unknown scenario {:?} (known: smoke, pressure [PAGES], oom, files, user, smp, faults [null|rodata|stack|user])",
                other
            );
            false
        }
    };
    if whole {
        profile::report(scenario, (clock::now_ms() - started).max(1));
    }
    finish(passed)
}

static SCENARIO: spin::Once<&'static str> = spin::Once::new();

/// The local APIC (mapped through vmalloc) and its timer on the boot CPU,
/// then the other CPUs of the MADT.
fn start_cpus(madt: &acpi::Madt) -> bool {
    let Some(vm) = vmem::vm() else { return false };
    if let Err(e) = lapic::map(vm, madt.lapic) {
        kprintln!("lapic: mapping the local APIC at {:#x} failed: {}", madt.lapic, e);
        return false;
    }
    kprintln!("lapic: timer at {} ticks per ms (calibrated against the TSC)", lapic::calibrate());
    lapic::start_timer(clock::TIMER_VECTOR, clock::TIMER_HZ);
    shootdown::join();
    let online = smp::start_cpus(madt);
    let ids = &madt.apic_ids[..madt.cpus];
    kprintln!(
        "smp: {} of {} CPUs online (APIC ids {:?}; {} past the limit of {})",
        online,
        madt.cpus,
        ids,
        madt.ignored,
        acpi::MAX_CPUS
    );
    online == madt.cpus
}

/// The end of RAM below 4 GiB, per the memory map.
fn ram_end(info: &pvh::BootInfo) -> u64 {
    info.memmap
        .iter()
        .filter(|e| e.kind == 1)
        .filter_map(|e| e.range())
        .map(|r| (r.start().as_u64() + r.len()).min(4 << 30))
        .max()
        .unwrap_or(0)
}

/// Ends the run: prints the scenario's verdict and leaves QEMU with the
/// agreed status.
pub fn finish(passed: bool) -> ! {
    let label = SCENARIO.get().copied().unwrap_or("?");
    if passed {
        kprintln!("scenario {}: PASS", label);
        exit_qemu(ExitCode::Success)
    } else {
        kprintln!("scenario {}: FAIL", label);
        exit_qemu(ExitCode::Failure)
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    serial::print_panic(format_args!("mm-kernel: PANIC on CPU {}: {}\n", percpu::index(), info));
    // Most panics under memory pressure are a failed allocation: say how
    // much memory was left.
    if let Some(b) = frames::get() {
        let (dma, dma32) = (b.watermark_state(Zone::Dma), b.watermark_state(Zone::Dma32));
        kprintln!(
            "free frames at the panic: DMA {} (min {}), DMA32 {} (min {})",
            dma.free,
            dma.watermarks.min,
            dma32.free,
            dma32.watermarks.min
        );
    }
    finish(false)
}
