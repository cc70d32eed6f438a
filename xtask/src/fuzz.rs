//! `cargo xtask fuzz [MINUTES] [TARGET...]`: runs each cargo-fuzz target in
//! turn for MINUTES (default [`DEFAULT_MINUTES`]) and ends with a table of
//! runs, runs per second, new corpus entries and crashes per target.
//!
//! Every target runs with `-len_control=0` (the model targets decode long
//! operation sequences, which libFuzzer's slow length growth would starve)
//! on a scratch corpus, `target/fuzz-corpus/TARGET`, seeded from the
//! checked-in `fuzz/corpus/TARGET`, so a run never changes tracked files.
//! Crashing inputs land in `fuzz/artifacts/TARGET/` (cargo-fuzz's default,
//! ignored by git); the paths are printed. Installs cargo-fuzz (and the
//! nightly toolchain) when missing.
//!
//! The targets are built without a sanitizer (`-s none`) unless
//! `--sanitizer=NAME` names one of cargo-fuzz's (`address`, `leak`,
//! `memory`, `thread`): the code under test does its unsafe work inside
//! `SimPhysMemory`'s own anonymous mapping, which AddressSanitizer neither
//! poisons nor splits into objects, so it saw nothing there, while costing
//! every run two to three times (the miri step of `cargo xtask test`
//! checks the unsafe code). They are built without LLVM's comparison tracing
//! (`--no-trace-compares`) unless `--trace-compares` is given: the models
//! decode operations and take their arguments modulo the state, so traced
//! comparisons guide little, while tracing every compare took half of each
//! run. The measured runs and coverage are in `fuzz/README.md`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{cargo, root, run, setup};

/// Minutes per target when none are given.
pub const DEFAULT_MINUTES: f64 = 2.0;

/// What one target's run did, read from libFuzzer's output.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    /// Inputs executed (the final `Done N runs` line, else the last `#N`).
    runs: u64,
    /// Seconds of fuzzing (the `Done` line's, else measured).
    seconds: f64,
    /// Inputs libFuzzer saved as crashes, timeouts, leaks or OOMs.
    artifacts: Vec<String>,
    /// Inputs libFuzzer saved because one run took longer than its
    /// `-report_slow_units` (10 s): worth a look, not a failure (a starved
    /// process, at `nice 19` beside a build, reports them too).
    slow_units: Vec<String>,
    /// Whether libFuzzer reported its normal end.
    done: bool,
}

impl Outcome {
    /// Reads one line of libFuzzer's output.
    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix('#') {
            // "#123\tNEW    cov: ..." or "#4096\tpulse  cov: ...".
            if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                self.runs = n;
            }
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 12345 runs in 61 second(s)".
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let (Some(runs), Some(secs)) = (words.first(), words.get(3)) {
                if let (Ok(r), Ok(s)) = (runs.parse(), secs.parse()) {
                    self.runs = r;
                    self.seconds = s;
                    self.done = true;
                }
            }
        } else if let Some(at) = line.find("Test unit written to ") {
            let path = line[at + "Test unit written to ".len()..].trim().to_string();
            let slow = Path::new(&path).file_name().is_some_and(|n| n.to_string_lossy().starts_with("slow-unit-"));
            if slow {
                self.slow_units.push(path);
            } else {
                self.artifacts.push(path);
            }
        }
    }

    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.runs as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The targets in `fuzz/fuzz_targets/`, sorted.
fn targets() -> Vec<String> {
    let dir = root().join("fuzz/fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .collect();
    names.sort();
    names
}

fn files(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()).unwrap_or_default()
}

/// Makes `cargo fuzz` available, installing it with `cargo install` if not.
fn ensure_cargo_fuzz() -> bool {
    let found = Command::new("cargo")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    eprintln!("xtask: cargo-fuzz not found; installing it (a few minutes of compiling)");
    run(cargo(None).args(["install", "cargo-fuzz"]))
}

/// Copies the checked-in corpus into the scratch one (files already there
/// are kept, so inputs found earlier carry over).
fn seed(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for name in files(from) {
        let dest = to.join(&name);
        if !dest.exists() {
            fs::copy(from.join(&name), dest)?;
        }
    }
    Ok(())
}

/// Runs one target for `seconds`, echoing libFuzzer's status lines.
fn fuzz_one(target: &str, seconds: u64, corpus: &Path, build: &Build) -> Option<Outcome> {
    let mut c = cargo(Some("nightly"));
    c.args(["fuzz", "run", "--sanitizer", &build.sanitizer, target]);
    if !build.trace_compares {
        c.arg("--no-trace-compares");
    }
    c.arg(corpus)
        .args(["--", &format!("-max_total_time={seconds}"), "-len_control=0", "-print_final_stats=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("$ {}", crate::describe(&c));
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: could not start cargo fuzz: {e}");
            return None;
        }
    };
    // libFuzzer writes to stderr; the target's own prints (panic messages)
    // may go to either. Read stdout on a thread so neither pipe fills up.
    let stdout = child.stdout.take().expect("piped");
    let echo = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
        }
    });
    let mut out = Outcome::default();
    let mut started: Option<Instant> = None;
    for line in BufReader::new(child.stderr.take().expect("piped")).lines().map_while(Result::ok) {
        if started.is_none() && line.starts_with("INFO: Seed:") {
            started = Some(Instant::now());
        }
        // Status lines every power of two and every new coverage would
        // drown the rest; show the pulses, the end and anything else.
        let chatty = line.starts_with('#') && !line.contains("pulse") && !line.contains("DONE");
        if !chatty {
            eprintln!("{line}");
        }
        out.line(&line);
    }
    let status = child.wait();
    let _ = echo.join();
    if !out.done {
        out.seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    }
    match status {
        Ok(s) if s.success() || !out.artifacts.is_empty() || started.is_some() => Some(out),
        Ok(s) => {
            eprintln!("xtask: cargo fuzz run {target} failed before fuzzing ({s})");
            None
        }
        Err(e) => {
            eprintln!("xtask: cargo fuzz run {target}: {e}");
            None
        }
    }
}

/// How the targets are built.
#[derive(Debug, PartialEq)]
struct Build {
    /// cargo-fuzz's `--sanitizer`.
    sanitizer: String,
    /// LLVM's comparison tracing.
    trace_compares: bool,
}

/// The cargo-fuzz sanitizers `--sanitizer=` accepts.
const SANITIZERS: &[&str] = &["none", "address", "leak", "memory", "thread"];

/// Splits the build options off the other arguments.
fn build_options(args: &[String]) -> Result<(Build, Vec<String>), String> {
    let mut build = Build { sanitizer: "none".into(), trace_compares: false };
    let mut rest = Vec::new();
    for a in args {
        if a == "--trace-compares" {
            build.trace_compares = true;
        } else if let Some(name) = a.strip_prefix("--sanitizer=") {
            if !SANITIZERS.contains(&name) {
                return Err(format!("no sanitizer `{name}`; cargo-fuzz has: {}", SANITIZERS.join(", ")));
            }
            build.sanitizer = name.into();
        } else if a.starts_with("--") {
            return Err(format!("unknown option `{a}` (options: --sanitizer=NAME, --trace-compares)"));
        } else {
            rest.push(a.clone());
        }
    }
    Ok((build, rest))
}

/// `cargo xtask fuzz [--sanitizer=NAME] [--trace-compares] [MINUTES]
/// [TARGET...]`; returns whether every target ran and none crashed.
pub fn fuzz(args: &[String]) -> bool {
    let (build, args) = match build_options(args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("xtask: {e}");
            return false;
        }
    };
    let (minutes, names) = match args.first().map(|a| a.parse::<f64>()) {
        Some(Ok(m)) if m > 0.0 && m.is_finite() => (m, &args[1..]),
        Some(Ok(_)) => {
            eprintln!("xtask: MINUTES must be a positive number");
            return false;
        }
        _ => (DEFAULT_MINUTES, &args[..]),
    };
    let all = targets();
    let chosen: Vec<String> = if names.is_empty() { all.clone() } else { names.to_vec() };
    if let Some(bad) = chosen.iter().find(|n| !all.contains(n)) {
        eprintln!("xtask: no fuzz target `{bad}`; the targets are: {}", all.join(", "));
        return false;
    }
    if !(setup::ensure_nightly() && ensure_cargo_fuzz()) {
        return false;
    }
    let seconds = ((minutes * 60.0).round() as u64).max(1);
    let r = root();
    let mut rows: Vec<(String, Option<Outcome>, usize)> = Vec::new();
    for target in &chosen {
        eprintln!("\n==> xtask fuzz: {target} for {seconds} s");
        let scratch = r.join("target/fuzz-corpus").join(target);
        if let Err(e) = seed(&r.join("fuzz/corpus").join(target), &scratch) {
            eprintln!("xtask: seeding {}: {e}", scratch.display());
            rows.push((target.clone(), None, 0));
            continue;
        }
        let before = files(&scratch).len();
        let out = fuzz_one(target, seconds, &scratch, &build);
        let new = files(&scratch).len().saturating_sub(before);
        rows.push((target.clone(), out, new));
    }
    report(&rows)
}

fn report(rows: &[(String, Option<Outcome>, usize)]) -> bool {
    println!("\n| target | runs | runs/s | new corpus entries | crashes | slow units |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut ok = true;
    for (target, out, new) in rows {
        match out {
            Some(o) => {
                let (crashes, slow) = (o.artifacts.len(), o.slow_units.len());
                println!("| {target} | {} | {:.0} | {new} | {crashes} | {slow} |", o.runs, o.rate());
                ok &= o.artifacts.is_empty();
            }
            None => {
                println!("| {target} | did not run | | | | |");
                ok = false;
            }
        }
    }
    let artifacts: Vec<&String> = rows.iter().filter_map(|r| r.1.as_ref()).flat_map(|o| &o.artifacts).collect();
    if !artifacts.is_empty() {
        println!("\nCrashing inputs (reproduce with `cargo +nightly fuzz run TARGET PATH`):");
        for a in artifacts {
            println!("  {}", Path::new(a).display());
        }
    }
    let slow: Vec<&String> = rows.iter().filter_map(|r| r.1.as_ref()).flat_map(|o| &o.slow_units).collect();
    if !slow.is_empty() {
        println!("\nSlow inputs (over 10 s once; time one with `cargo +nightly fuzz run TARGET PATH`):");
        for a in slow {
            println!("  {}", Path::new(a).display());
        }
    }
    let scratch: PathBuf = PathBuf::from("target/fuzz-corpus");
    if rows.iter().any(|r| r.2 > 0) {
        println!(
            "\nNew inputs are in {}/TARGET, not in the checked-in corpus. To keep the ones that add coverage:\n  \
             cargo +nightly fuzz run TARGET fuzz/corpus/TARGET {}/TARGET -- -merge=1\n\
             and to minimise the checked-in corpus afterwards: cargo +nightly fuzz cmin TARGET",
            scratch.display(),
            scratch.display()
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_options_are_split_off() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (b, rest) = build_options(&args(&["20", "--sanitizer=address", "vma_model", "--trace-compares"])).unwrap();
        assert_eq!(b, Build { sanitizer: "address".into(), trace_compares: true });
        assert_eq!(rest, args(&["20", "vma_model"]));
        let (b, rest) = build_options(&args(&["buddy_model"])).unwrap();
        assert_eq!(b, Build { sanitizer: "none".into(), trace_compares: false });
        assert_eq!(rest, args(&["buddy_model"]));
        assert!(build_options(&args(&["--sanitizer=asan"])).unwrap_err().contains("no sanitizer `asan`"));
        assert!(build_options(&args(&["--sanitizer", "address"])).unwrap_err().contains("unknown option"));
    }

    #[test]
    fn reads_libfuzzer_output() {
        let mut o = Outcome::default();
        for l in [
            "INFO: Seed: 123",
            "#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#4096\tpulse  cov: 10 ft: 10 corp: 1/1b lim: 4096 exec/s: 2048 rss: 31Mb",
            "#5000\tNEW    cov: 11 ft: 12 corp: 2/2b lim: 4096 exec/s: 2500 rss: 31Mb L: 1/1 MS: 1 ChangeBit-",
        ] {
            o.line(l);
        }
        assert_eq!((o.runs, o.done), (5000, false));
        o.line("Done 123456 runs in 61 second(s)");
        assert_eq!((o.runs, o.seconds, o.done), (123456, 61.0, true));
        assert!((o.rate() - 123456.0 / 61.0).abs() < 1e-9);
        o.line("artifact_prefix='/w/fuzz/artifacts/t/'; Test unit written to /w/fuzz/artifacts/t/crash-ab12");
        assert_eq!(o.artifacts, ["/w/fuzz/artifacts/t/crash-ab12"]);
        o.line("Test unit written to /w/fuzz/artifacts/t/slow-unit-cd34");
        assert_eq!(o.artifacts, ["/w/fuzz/artifacts/t/crash-ab12"], "a slow unit is no crash");
        assert_eq!(o.slow_units, ["/w/fuzz/artifacts/t/slow-unit-cd34"]);
    }
}
