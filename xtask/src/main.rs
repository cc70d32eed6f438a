//! Project automation.
//!
//! - `cargo xtask run [--cpus N] [--ram MIB] [--stress N] [--profile] [SCENARIO]`: builds
//!   the reference kernel and boots it in QEMU, showing its serial output
//!   (default scenario: `smoke`; CPUs and RAM as the boot test gives it,
//!   else 4 and 128 MiB; `--stress N` boots N times, stopping at a failure);
//!   an unknown scenario is refused before anything is built, and
//!   `run --list` prints each scenario with what it shows.
//! - `cargo xtask test [STEP...]`: the whole check suite, or the named steps
//!   (see `STEPS`). Installs what it needs on a fresh machine (rustup targets
//!   and components, QEMU through apt-get) and says so.
//! - `cargo xtask fuzz [--sanitizer=NAME] [--trace-compares] [MINUTES] [TARGET...]`: runs the
//!   cargo-fuzz targets in turn and tabulates runs and crashes (see
//!   `fuzz.rs`).

use std::collections::VecDeque;
use std::env;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{exit, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod boot;
mod fuzz;
mod ir;
mod miri;
mod package;
mod profile;
mod setup;

/// The steps of `cargo xtask test`, in the order they run.
const STEPS: &[(&str, &str)] = &[
    ("fmt", "rustfmt --check over every workspace"),
    ("clippy", "clippy -D warnings over the crates, the kernel and xtask"),
    ("test", "host unit, integration and doc tests, including fuzz corpus replay"),
    ("alone", "each library crate's `cargo test` inside its folder with default features (fuzz models: in `test`)"),
    ("nostd", "every library crate builds for x86_64-unknown-none"),
    ("doc", "rustdoc with warnings denied"),
    ("package", "cargo package, then the unpacked crates' tests as their users build them; workspace README; MSRV"),
    ("boot", "boot the reference kernel in QEMU and check its status and serial output"),
    ("loom", "loom model tests (tests/loom_*.rs, RUSTFLAGS=--cfg loom)"),
    ("fuzz", "the cargo-fuzz targets compile"),
    ("miri", "host tests under miri (nightly)"),
];

/// Library crates of the root workspace.
pub const CRATES: &[&str] = &[
    "mm-types",
    "mm-paging",
    "mm-buddy",
    "mm-slab",
    "mm-vmalloc",
    "mm-vma",
    "mm-reclaim",
    "mm-swap",
    "mm-pagecache",
    "mm-wiring",
];

/// Unpublished crates that hold only tests' code (the fuzz models): run by
/// `test` and miri, not built for the kernel target or packaged.
pub const TEST_CRATES: &[&str] = &["mm-fuzz-models"];

/// The folder of a crate of the root workspace.
pub fn crate_dir(k: &str) -> &str {
    match k {
        "mm-wiring" => "examples/wiring",
        "mm-fuzz-models" => "fuzz-models",
        _ => k,
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// How many lines of a failed command's standard error the summary repeats.
const TAIL_LINES: usize = 40;

/// The commands that failed, each with the end of its standard error, for the
/// summary: a CI log is often read from its end, far from where the error was
/// printed.
static FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Runs a command, echoing it and its output as it runs; returns whether it
/// succeeded. A failure is recorded with the last `TAIL_LINES` lines of its
/// output (standard output and error as they arrived), which the summary
/// repeats.
pub fn run(cmd: &mut Command) -> bool {
    let line = describe(cmd);
    eprintln!("$ {line}");
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("xtask: could not start {:?}: {e}", cmd.get_program());
            eprintln!("{msg}");
            record_failure(&line, &msg);
            return false;
        }
    };
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let out = child.stdout.take().map(|p| echo(p, tail.clone(), false));
    let err = child.stderr.take().map(|p| echo(p, tail.clone(), true));
    let status = child.wait();
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    let ok = status.as_ref().is_ok_and(|s| s.success());
    if !ok {
        let how = match status {
            Ok(s) => format!("ended with {s}"),
            Err(e) => format!("could not be waited for: {e}"),
        };
        let mut text = format!("{how}; the end of its output:\n");
        for l in tail.lock().map(|t| t.clone()).unwrap_or_default() {
            text.push_str("    | ");
            text.push_str(&l);
            text.push('\n');
        }
        record_failure(&line, &text);
    }
    ok
}

/// Copies a child's pipe to ours line by line, keeping the last lines.
fn echo(pipe: impl Read + Send + 'static, tail: Arc<Mutex<VecDeque<String>>>, to_stderr: bool) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let _ = if to_stderr { std::io::stderr().write_all(&buf) } else { std::io::stdout().write_all(&buf) };
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(String::from_utf8_lossy(&buf).trim_end().to_string());
            }
            buf.clear();
        }
    })
}

fn record_failure(command: &str, text: &str) {
    if let Ok(mut f) = FAILURES.lock() {
        f.push(format!("$ {command}\n{text}"));
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `cargo` with the given toolchain (`None`: the default one).
pub fn cargo(toolchain: Option<&str>) -> Command {
    let mut c = Command::new("cargo");
    if let Some(t) = toolchain {
        c.arg(format!("+{t}"));
    }
    // Variables set by the outer `cargo run` must not leak into inner builds.
    c.env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO_TARGET_DIR").current_dir(root());
    c
}

fn step(name: &str) -> bool {
    let r = root();
    match name {
        "fmt" => {
            setup::ensure_component(None, "rustfmt")
                && run(cargo(None).args(["fmt", "--all", "--check"]))
                && run(cargo(None).args(["fmt", "--all", "--check", "--manifest-path", "examples/kernel/Cargo.toml"]))
                && run(cargo(None).args(["fmt", "--all", "--check", "--manifest-path", "fuzz/Cargo.toml"]))
        }
        "clippy" => {
            setup::ensure_component(None, "clippy")
                && setup::ensure_target(None, boot::KERNEL_TARGET)
                && run(cargo(None).args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--all-features",
                    "--",
                    "-D",
                    "warnings",
                ]))
                && run(cargo(None).current_dir(r.join("examples/kernel")).args([
                    "clippy",
                    "--release",
                    "--target",
                    boot::KERNEL_TARGET,
                    "--",
                    "-D",
                    "warnings",
                ]))
        }
        "test" => run(cargo(None).args(["test", "--workspace", "--all-features"])),
        "alone" => CRATES.iter().all(|k| {
            // As a user of one crate runs it: inside its folder, default
            // features.
            run(cargo(None).current_dir(r.join(crate_dir(k))).args(["test"]))
        }),
        "nostd" => {
            setup::ensure_target(None, boot::KERNEL_TARGET) && {
                let mut c = cargo(None);
                c.args(["build", "--target", boot::KERNEL_TARGET, "--features", "mm-types/x86_64"]);
                for k in CRATES {
                    c.args(["-p", k]);
                }
                run(&mut c)
            }
        }
        "doc" => {
            let mut c = cargo(None);
            c.args(["doc", "--no-deps", "--all-features"]).env("RUSTDOCFLAGS", "-D warnings");
            for k in CRATES {
                c.args(["-p", k]);
            }
            run(&mut c)
        }
        "boot" => boot::boot_test(),
        "loom" => loom_tests(),
        "fuzz" => run(cargo(None).args(["check", "--manifest-path", "fuzz/Cargo.toml", "--bins"])),
        "miri" => miri::miri(),
        "package" => package::package(),
        other => {
            eprintln!("xtask: unknown step `{other}`");
            false
        }
    }
}

/// Runs every `tests/loom_*.rs` of every crate under `--cfg loom`.
fn loom_tests() -> bool {
    let r = root();
    let mut ok = true;
    let mut any = false;
    for k in CRATES {
        // By the crate's folder: mm-wiring lives in examples/wiring.
        let Ok(dir) = std::fs::read_dir(r.join(crate_dir(k)).join("tests")) else { continue };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("loom_") && n.ends_with(".rs"))
            .map(|n| n.trim_end_matches(".rs").to_string())
            .collect();
        names.sort();
        for n in names {
            any = true;
            ok &= run(cargo(None)
                .args(["test", "--release", "--all-features", "-p", k, "--test", &n])
                .env("RUSTFLAGS", "--cfg loom")
                .env("CARGO_TARGET_DIR", r.join("target/loom")));
        }
    }
    if !any {
        eprintln!("xtask: no loom tests found");
    }
    ok && any
}

fn test(selected: &[String]) -> ! {
    let names: Vec<&str> = if selected.is_empty() {
        STEPS.iter().map(|(n, _)| *n).collect()
    } else {
        selected.iter().map(String::as_str).collect()
    };
    let start = Instant::now();
    let mut results = Vec::new();
    for name in &names {
        eprintln!("\n==> xtask test: {name}");
        let t = Instant::now();
        let before = FAILURES.lock().map_or(0, |f| f.len());
        let ok = step(name);
        results.push((name.to_string(), ok, t.elapsed()));
        if ok {
            // A command a passing step could do without (a probe, a first
            // attempt) is no failure of the run.
            if let Ok(mut f) = FAILURES.lock() {
                f.truncate(before);
            }
        } else {
            eprintln!("==> {name} FAILED");
            if let Ok(mut f) = FAILURES.lock() {
                if f.len() == before {
                    f.push(format!("[{name}] failed in a check of its own; its message is above"));
                } else {
                    for text in &mut f[before..] {
                        text.insert_str(0, &format!("[{name}] "));
                    }
                }
            }
        }
    }
    eprintln!("\n==> summary ({:.0?} in all)", start.elapsed());
    for (n, ok, d) in &results {
        eprintln!("    {:<7} {:<4} {:>6.1?}", n, if *ok { "ok" } else { "FAIL" }, round(*d));
    }
    let failed = results.iter().filter(|r| !r.1).count();
    if let Ok(f) = FAILURES.lock() {
        if !f.is_empty() {
            eprintln!("\n==> the commands that failed");
            for text in f.iter() {
                eprintln!("{}", text.trim_end());
            }
        }
    }
    println!("xtask: {} passed, {} failed", results.len() - failed, failed);
    exit(if failed == 0 { 0 } else { 1 })
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

fn usage() -> ! {
    eprintln!("usage:\n  cargo xtask run [SCENARIO]   boot the reference kernel in QEMU (default: smoke; --list: the scenarios;\n                               --cpus N, --ram MIB: the machine; --stress N: N boots in a row;
                               --profile: phase times and a sampling profile of CPU 0 by function)");
    eprintln!("  cargo xtask test [STEP...]   run the check suite (all steps by default)");
    eprintln!(
        "  cargo xtask fuzz [--sanitizer=NAME] [--trace-compares] [MINUTES] [TARGET...]   run each fuzz target for MINUTES (default 2), then a table"
    );
    eprintln!(
        "  cargo xtask ir [SUITE]       instructions per operation under callgrind, ours and peers (buddy, paging, slab, vmalloc, pagecache)\n\nsteps:"
    );
    for (n, d) in STEPS {
        eprintln!("  {n:<7} {d}");
    }
    exit(2)
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") if args.get(1).map(String::as_str) == Some("--list") => boot::list_scenarios(),
        Some("run") => {
            let mut words = Vec::new();
            let (mut cpus, mut ram, mut stress) = (None, None, None);
            let mut profile = false;
            let mut rest = args[1..].iter();
            while let Some(a) = rest.next() {
                let slot = match a.as_str() {
                    "--profile" => {
                        profile = true;
                        continue;
                    }
                    "--cpus" => &mut cpus,
                    "--ram" => &mut ram,
                    "--stress" => &mut stress,
                    _ => {
                        words.push(a.clone());
                        continue;
                    }
                };
                match rest.next().and_then(|v| v.parse::<u64>().ok()).filter(|&v| v > 0) {
                    Some(v) => *slot = Some(v),
                    None => {
                        eprintln!("xtask: {a} takes a positive number");
                        exit(2)
                    }
                }
            }
            let scenario = if words.is_empty() { "smoke".to_string() } else { words.join(" ") };
            exit(if boot::run_interactive(&scenario, cpus, ram, stress, profile) { 0 } else { 1 })
        }
        Some("test") => test(&args[1..]),
        Some("fuzz") => exit(if fuzz::fuzz(&args[1..]) { 0 } else { 1 }),
        Some("ir") => exit(if ir::ir(args.get(1).map_or("buddy", String::as_str)) { 0 } else { 1 }),
        _ => usage(),
    }
}
