//! Building the reference kernel and booting it in QEMU.
//!
//! The kernel reports over COM1 and ends through the isa-debug-exit device:
//! writing `v` to port 0xf4 makes QEMU exit with `(v << 1) | 1`. The kernel
//! writes 0x10 on success (status 33) and 0x11 on failure (35). A triple
//! fault exits with status 0, so 0 never counts as success; the boot test
//! also requires the expected serial lines.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{cargo, root, run, setup};

/// The kernel's target triple.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";
/// QEMU's exit status when the kernel reports success.
const SUCCESS_STATUS: i32 = (0x10 << 1) | 1;
/// How long one boot may take before it is killed (`smp` takes about 80 s
/// on a 2-core machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Builds the kernel (release) and returns the ELF path.
pub fn build_kernel() -> Option<PathBuf> {
    if !setup::ensure_target(None, KERNEL_TARGET) {
        return None;
    }
    let dir = root().join("examples/kernel");
    let ok = run(cargo(None).current_dir(&dir).args(["build", "--release", "--target", KERNEL_TARGET]));
    ok.then(|| dir.join("target").join(KERNEL_TARGET).join("release/mm-kernel"))
}

/// What one QEMU run produced.
pub struct Boot {
    /// Exit status (`None`: killed after the timeout).
    pub status: Option<i32>,
    /// Serial output lines.
    pub lines: Vec<String>,
}

/// Size of the swap disk image: four times the largest RAM a scenario gets
/// would be 512 MiB; 256 MiB of 4 KiB slots covers `pressure` (three times
/// 64 MiB) with room to spare. The image is sparse.
const SWAP_DISK_BYTES: u64 = 256 << 20;

/// The swap disk image of boot slot `slot` (`target/swap.img`, then
/// `swap-1.img` ...: boots that run at once each have their own), created
/// empty if missing.
fn swap_disk(slot: usize) -> Option<PathBuf> {
    disk_image(&slot_name("swap", slot), SWAP_DISK_BYTES, false)
}

/// `name` for boot slot 0, `name-SLOT` for the others.
fn slot_name(name: &str, slot: usize) -> String {
    if slot == 0 {
        name.to_string()
    } else {
        format!("{name}-{slot}")
    }
}

/// The scratch disk's size: a raw device the `files` scenario maps as a
/// file and writes through.
const SCRATCH_DISK_BYTES: u64 = 16 << 20;

/// The scratch disk image of boot slot `slot` (`target/scratch.img` ...),
/// zeroed for every boot (the `files` scenario checks what it wrote against
/// zeros elsewhere).
fn scratch_disk(slot: usize) -> Option<PathBuf> {
    disk_image(&slot_name("scratch", slot), SCRATCH_DISK_BYTES, true)
}

/// `target/NAME.img` of `bytes` bytes (sparse), emptied first if `zeroed`.
fn disk_image(name: &str, bytes: u64, zeroed: bool) -> Option<PathBuf> {
    let dir = root().join("target");
    let path = dir.join(format!("{name}.img"));
    let made = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::OpenOptions::new().create(true).truncate(zeroed).write(true).open(&path))
        .and_then(|f| f.set_len(bytes));
    match made {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("xtask: cannot create the {name} disk image {}: {e}", path.display());
            None
        }
    }
}

/// The files the ext4 image holds: path, size in bytes, pattern seed.
/// The kernel's `files` scenario expects exactly these (its `BIG` and
/// `SMALL`).
pub const EXT4_FILES: &[(&str, u64, u64)] = &[("big.bin", 24 << 20, 1), ("small.bin", 10_000, 2)];

/// Word `k` (8 bytes, little-endian) of the file with pattern `seed`: the
/// same function as `word` in the kernel's `src/tasks/files.rs`, so the
/// kernel can check every byte it reads.
pub fn file_word(seed: u64, k: u64) -> u64 {
    (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.wrapping_mul(0x0101_0101_0101_0101)
}

/// The ext4 image (`target/files.ext4`), made afresh from a folder of
/// [`EXT4_FILES`] with `mkfs.ext4 -d`, once per run of the xtask.
fn ext4_image() -> Option<PathBuf> {
    static IMAGE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(make_ext4_image).clone()
}

fn make_ext4_image() -> Option<PathBuf> {
    let mkfs = setup::mkfs_ext4()?;
    let target = root().join("target");
    let src = target.join("files-src");
    let image = target.join("files.ext4");
    let made = (|| -> std::io::Result<()> {
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src)?;
        for &(name, size, seed) in EXT4_FILES {
            let bytes: Vec<u8> =
                (0..size.div_ceil(8)).flat_map(|k| file_word(seed, k).to_le_bytes()).take(size as usize).collect();
            std::fs::write(src.join(name), bytes)?;
        }
        let _ = std::fs::remove_file(&image);
        Ok(())
    })();
    if let Err(e) = made {
        eprintln!("xtask: cannot write the ext4 image's files in {}: {e}", src.display());
        return None;
    }
    let total: u64 = EXT4_FILES.iter().map(|f| f.1).sum();
    let size_mib = (total >> 20) + 16;
    let ok = run(Command::new(&mkfs)
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(&src)
        .arg(&image)
        .arg(format!("{size_mib}M")));
    ok.then_some(image)
}

/// Boots `kernel` with `-append scenario`, echoing serial output if `echo`,
/// with the disk images of boot slot `slot` (boots at once use different
/// slots: QEMU locks its images).
pub fn boot(kernel: &PathBuf, scenario: &str, memory: &str, cpus: u64, echo: bool, slot: usize) -> Option<Boot> {
    if !setup::ensure_qemu() {
        return None;
    }
    let disk = swap_disk(slot)?;
    let scratch = scratch_disk(slot)?;
    let ext4 = ext4_image()?;
    let mut cmd = Command::new("qemu-system-x86_64");
    // Multi-threaded TCG (QEMU's default for x86 on an x86 host): each
    // virtual CPU is a host thread, so they really run in parallel.
    cmd.args(["-machine", "q35", "-cpu", "qemu64", "-m", memory, "-accel", "tcg", "-smp", &cpus.to_string()])
        .args(["-display", "none", "-no-reboot", "-monitor", "none", "-serial", "stdio"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        // The disks, raw images on virtio-blk PCI devices the kernel tells
        // apart by serial number: swap, an ext4 file system (read-only)
        // and a scratch device.
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=swap", disk.display()))
        .args(["-device", "virtio-blk-pci,drive=swap,serial=swap"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=ext4,readonly=on", ext4.display()))
        .args(["-device", "virtio-blk-pci,drive=ext4,serial=ext4"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=scratch", scratch.display()))
        .args(["-device", "virtio-blk-pci,drive=scratch,serial=scratch"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", scenario])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!("$ qemu-system-x86_64 ... -m {memory} -smp {cpus} -kernel {} -append {scenario}", kernel.display());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: could not start QEMU: {e}");
            return None;
        }
    };
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r').to_string();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut lines = Vec::new();
    let status = loop {
        while let Ok(l) = rx.try_recv() {
            if echo {
                println!("{l}");
            }
            lines.push(l);
        }
        match child.try_wait() {
            Ok(Some(s)) => break s.code(),
            Ok(None) if start.elapsed() > BOOT_TIMEOUT => {
                eprintln!("xtask: QEMU still running after {BOOT_TIMEOUT:?}; killing it");
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                eprintln!("xtask: waiting for QEMU failed: {e}");
                break None;
            }
        }
    };
    let _ = reader.join();
    for l in rx.try_iter() {
        if echo {
            println!("{l}");
        }
        lines.push(l);
    }
    Some(Boot { status, lines })
}

/// What each scenario of the reference kernel shows (`cargo xtask run
/// --list`), and the words it takes after its name.
pub const SCENARIO_DOCS: &[(&str, &[&str], &str)] = &[
    ("smoke", &[], "every crate once: buddy, the slab heap, vmalloc, a user space with faults, fork and copy-on-write"),
    (
        "pressure",
        &["PAGES"],
        "four tasks write three times the RAM (or PAGES pages between them): reclaim, swap to a virtio-blk disk, fork after, every page checked",
    ),
    ("oom", &[], "no swap; a task wanting twice the RAM is killed by the OOM killer, the others finish intact"),
    (
        "files",
        &[],
        "ext4 and scratch-disk files and shared memory mapped by tasks under pressure; every byte read back from disk and swap",
    ),
    ("user", &[], "ring 3 programs under swap, preempted by the timer; bad user programs are contained"),
    (
        "smp",
        &[],
        "every CPU runs tasks: fault scaling on 1, 2, 4 CPUs, 3x RAM under swap with kswapd, a fork, munmap/mprotect racing faults of one space; per-CPU figures",
    ),
    (
        "faults",
        &["null", "rodata", "stack", "user"],
        "bad kernel-mode accesses end only their thread and task (or one case)",
    ),
];

/// Checks a scenario command line against [`SCENARIO_DOCS`]; the reason
/// it is unknown otherwise.
pub fn check_scenario(scenario: &str) -> Result<(), String> {
    let mut words = scenario.split_whitespace();
    let name = words.next().unwrap_or("");
    let Some((_, args, _)) = SCENARIO_DOCS.iter().find(|s| s.0 == name) else {
        return Err(format!("unknown scenario {name:?}"));
    };
    let rest: Vec<&str> = words.collect();
    match rest.as_slice() {
        [] => Ok(()),
        [a] if args.contains(a) => Ok(()),
        // A number where the scenario takes one.
        [a] if args.contains(&"PAGES") && a.parse::<u64>().is_ok_and(|n| n >= 4) => Ok(()),
        _ => Err(format!(
            "scenario {name:?} does not take {:?} (it takes: {})",
            rest.join(" "),
            if args.is_empty() { "nothing".into() } else { args.join(", ") }
        )),
    }
}

/// Prints every scenario with what it shows.
pub fn list_scenarios() {
    for (name, args, what) in SCENARIO_DOCS {
        let name = if args.is_empty() { (*name).to_string() } else { format!("{name} [{}]", args.join("|")) };
        println!("{name:<36} {what}");
    }
}

/// `cargo xtask run`: build, boot, show the output; `cpus` and `ram` (MiB)
/// override what the boot test gives the scenario. With `stress`, boots
/// that many times in a row (for races that show once in many runs),
/// stopping at the first failure.
pub fn run_interactive(
    scenario: &str,
    cpus: Option<u64>,
    ram: Option<u64>,
    stress: Option<u64>,
    profile: bool,
) -> bool {
    if let Err(why) = check_scenario(scenario) {
        eprintln!("xtask: {why}; the scenarios are:");
        list_scenarios();
        return false;
    }
    let Some(kernel) = build_kernel() else { return false };
    // The RAM and CPUs the boot test gives the scenario (by its first
    // word), else 128 MiB and 4 CPUs.
    let first = scenario.split_whitespace().next().unwrap_or("");
    let known = SCENARIOS.iter().find(|s| s.0.split_whitespace().next() == Some(first));
    let ram = ram.unwrap_or(known.map_or(128, |s| s.1));
    let cpus = cpus.unwrap_or(known.map_or(4, |s| s.2));
    let boots = stress.unwrap_or(1);
    for i in 1..=boots {
        let start = Instant::now();
        let line = if profile { format!("{scenario} profile") } else { scenario.to_string() };
        let Some(b) = boot(&kernel, &line, &format!("{ram}M"), cpus, true, 0) else { return false };
        let ok = b.status == Some(SUCCESS_STATUS);
        if profile {
            crate::profile::by_function(&kernel, &b.lines);
        }
        eprintln!(
            "xtask: QEMU exited with status {} ({}) after {:.1} s",
            b.status.map_or("none".into(), |s| s.to_string()),
            if ok { "kernel reported success" } else { "kernel did NOT report success" },
            start.elapsed().as_secs_f64()
        );
        if !ok {
            if boots > 1 {
                eprintln!("xtask: stress: boot {i} of {boots} failed");
            }
            return false;
        }
    }
    if boots > 1 {
        eprintln!("xtask: stress: {boots} of {boots} boots passed");
    }
    true
}

/// Checks the serial output of a boot: the memory map is announced with its
/// entry count and exactly that many entries follow, its usable total is
/// plausible for the RAM given to QEMU, every CPU came online, and the
/// scenario reports PASS.
pub fn check_output(lines: &[String], scenario: &str, ram_mib: u64, cpus: u64) -> Result<(), String> {
    let header =
        lines.iter().position(|l| l.starts_with("mm-kernel: memory map:")).ok_or("no `mm-kernel: memory map:` line")?;
    let count: usize = lines[header]
        .trim_start_matches("mm-kernel: memory map:")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or("memory map line has no entry count")?;
    let entries: Vec<&String> = lines[header + 1..].iter().take_while(|l| l.starts_with("mm-kernel:   [")).collect();
    if count == 0 || entries.len() != count {
        return Err(format!("memory map announced {count} entries, {} printed", entries.len()));
    }
    if !entries.iter().any(|l| l.ends_with(" usable")) {
        return Err("no usable RAM in the memory map".into());
    }
    let usable_kib: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("mm-kernel: usable RAM: "))
        .and_then(|s| s.trim_end_matches(" KiB").parse().ok())
        .ok_or("no `usable RAM` line")?;
    let ram_kib = ram_mib * 1024;
    if usable_kib > ram_kib || usable_kib < ram_kib * 3 / 4 {
        return Err(format!("usable RAM {usable_kib} KiB is implausible for -m {ram_mib}M"));
    }
    let online = format!("mm-kernel: smp: {cpus} of {cpus} CPUs online");
    if !lines.iter().any(|l| l.starts_with(&online)) {
        return Err(format!("no `{online}` line"));
    }
    let pass = format!("mm-kernel: scenario {scenario}: PASS");
    if !lines.contains(&pass) {
        return Err(format!("no `{pass}` line"));
    }
    Ok(())
}

/// Scenarios the boot test runs: command line, RAM in MiB, CPUs, and lines
/// that must appear besides the common ones. Every scenario runs on 4 CPUs;
/// `smoke` also on 1 (no other CPU to start or shoot down).
const SCENARIOS: &[(&str, u64, u64, &[&str])] = &[
    (
        "smoke",
        128,
        4,
        &[
            "mm-kernel: buddy: ok",
            "mm-kernel: heap: mm-slab kmalloc is the global allocator",
            "mm-kernel: slab: ok",
            "mm-kernel: vmalloc: ok",
            "mm-kernel: user spaces: faults: zero page 1, demand zero 15, copy-on-write copied 3 reused 1, spurious 0, refused 0",
            "mm-kernel: user spaces: ok",
            "(ours: true); text RX, rodata R, data RW+NX: true; direct map alias with huge page: true",
        ],
    ),
    (
        "pressure",
        64,
        4,
        &[
            "mm-kernel: disk: virtio-blk at ",
            "mm-kernel: pressure: 4 tasks writing ",
            "corrupt 0 errors 0",
            "mm-kernel: pressure: swapped out ",
            " pages swapped out and ",
            "the parent's are unchanged: 512; intact: true",
            "mm-kernel: pressure: clean swap-cache pages match their slots: true",
            "mm-kernel: pressure: data intact: true",
        ],
    ),
    (
        "oom",
        64,
        4,
        &[
            "mm-kernel: oom: killed task ",
            "corrupt 0 errors 0; killed [1]",
            "mm-kernel: oom: the biggest task was killed and the others finished intact: true",
        ],
    ),
    (
        "files",
        64,
        4,
        &[
            "mm-kernel: files: in order read ",
            "; every thread ended normally: true",
            "mm-kernel: files: msync of the device mapping: ok",
            "mm-kernel: files: a read past the end of a mapped file ended its thread with a bus error: true",
            " words wrong",
            "mm-kernel: files: page cache: ",
            "mm-kernel: files: reclaim took file and anonymous pages, wrote dirty ones back and read ahead: true",
            "mm-kernel: files: every byte intact: true",
        ],
    ),
    (
        "user",
        64,
        4,
        &[
            "mm-kernel: user: 3 ring 3 tasks writing ",
            "page fault: address 0x100000: protection violation, read access, user mode",
            "mm-kernel: user: the kernel reader: page fault at 0x100000; its task is gone: true",
            "mm-kernel: user: the halter: general protection fault (vector 13); its task is gone: true",
            "mm-kernel: user: the spinner: killed; its task is gone: true",
            "mm-kernel: user: the timer preempted ring 3 ",
            "mm-kernel: user: every ring 3 task found its pages intact and the bad ones were contained: true",
        ],
    ),
    (
        "faults",
        128,
        4,
        &[
            "mm-kernel: page fault: address 0x0: page not present, read access, kernel mode",
            "mm-kernel: thread null ends with its task: page fault at 0x0",
            ": protection violation, write access, kernel mode",
            "mm-kernel: thread rodata ends with its task: page fault at 0x",
            "mm-kernel: EXCEPTION double fault (vector 8)",
            "of \"kernel stack\"",
            "mm-kernel: thread stack ends with its task: stack overflow at 0x",
            "mm-kernel: task segfault at 0x",
            ": Write not allowed by Protection(READ)",
            "mm-kernel: thread user ends with its task: page fault at 0x",
            "mm-kernel: faults: the good task verified 64 of 64 pages, corrupt 0",
            "mm-kernel: faults: 4 contained; the kernel went on: true",
        ],
    ),
    (
        "smp",
        64,
        4,
        &[
            "mm-kernel: smp: scaling: 4 CPU(s): ",
            "mm-kernel: smp: written ",
            "corrupt 0 errors 0",
            "the parent's are unchanged: 512; intact: true",
            "mm-kernel: smp: clean swap-cache pages match their slots: true",
            "mm-kernel: smp: shared space: munmap and mprotect raced faults on other CPUs safely: true",
            "mm-kernel: smp: every CPU faulted, switched, took shootdowns and hit its buddy and slab caches: true",
            "mm-kernel: smp: data intact: true",
        ],
    ),
    // One CPU: the MADT lists one, and nothing is started or shot down.
    ("smoke", 128, 1, &["mm-kernel: buddy: ok", "mm-kernel: vmalloc: ok", "mm-kernel: user spaces: ok"]),
];

/// The boot step of `cargo xtask test`.
pub fn boot_test() -> bool {
    for (scenario, ..) in SCENARIOS {
        assert!(check_scenario(scenario).is_ok(), "the boot test's scenario {scenario:?} is in SCENARIO_DOCS");
    }
    let Some(kernel) = build_kernel() else { return false };
    // Installed (if need be) and the ext4 image made once, before boots
    // run at once.
    if !setup::ensure_qemu() || ext4_image().is_none() {
        return false;
    }
    // The scenarios that keep to one CPU (the others idle and halted) boot
    // two at a time, on the machine's two cores; `smp` boots alone after
    // them, with both cores for its four CPUs.
    let (alone, paired): (Vec<_>, Vec<_>) = SCENARIOS.iter().partition(|s| s.0 == "smp");
    let queue = std::sync::Mutex::new(paired.into_iter().collect::<std::collections::VecDeque<_>>());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for slot in 0..2 {
            let (queue, results, kernel) = (&queue, &results, &kernel);
            s.spawn(move || loop {
                let Some(&(scenario, ram_mib, cpus, required)) = queue.lock().unwrap().pop_front() else { break };
                let b = boot(kernel, scenario, &format!("{ram_mib}M"), cpus, false, slot);
                results.lock().unwrap().push((scenario, ram_mib, cpus, required, b));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    for &(scenario, ram_mib, cpus, required) in alone {
        let b = boot(&kernel, scenario, &format!("{ram_mib}M"), cpus, false, 0);
        results.push((scenario, ram_mib, cpus, required, b));
    }
    let mut ok = true;
    for (scenario, ram_mib, cpus, required, b) in results {
        let Some(b) = b else { return false };
        let verdict = match b.status {
            Some(SUCCESS_STATUS) => check_output(&b.lines, scenario, ram_mib, cpus).and_then(|()| {
                match required.iter().find(|r| !b.lines.iter().any(|l| l.contains(*r))) {
                    Some(missing) => Err(format!("no line containing `{missing}`")),
                    None => Ok(()),
                }
            }),
            other => Err(format!("QEMU exit status {other:?}, expected {SUCCESS_STATUS}")),
        };
        match verdict {
            Ok(()) => eprintln!("boot {scenario} ({cpus} CPUs): ok ({} serial lines)", b.lines.len()),
            Err(why) => {
                ok = false;
                eprintln!("boot {scenario} ({cpus} CPUs): FAILED: {why}\n--- serial output ---");
                for l in &b.lines {
                    eprintln!("{l}");
                }
                eprintln!("--- end ---");
            }
        }
    }
    // The checker itself must reject bad output.
    let good: Vec<String> = [
        "mm-kernel: memory map: 2 entries",
        "mm-kernel:   [0x0-0x9fc00] usable",
        "mm-kernel:   [0x100000-0x8000000] usable",
        "mm-kernel: usable RAM: 130047 KiB",
        "mm-kernel: smp: 4 of 4 CPUs online (APIC ids [0, 1, 2, 3]; 0 past the limit of 8)",
        "mm-kernel: scenario smoke: PASS",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let self_check = check_output(&good, "smoke", 128, 4).is_ok()
        && check_output(&good[..5], "smoke", 128, 4).is_err()
        && check_output(&good[1..], "smoke", 128, 4).is_err()
        && check_output(&good, "smoke", 512, 4).is_err()
        && check_output(&good, "smoke", 128, 2).is_err();
    if !self_check {
        eprintln!("boot: the output checker accepts bad output or rejects good output");
    }
    ok && self_check
}
