//! The miri step, run on both cores: one build of every crate's tests
//! under miri, then every test target (each crate's library tests, each
//! integration test file, its doctests) as a separate `cargo miri test`,
//! two at a time. Cargo holds its build lock only while it compiles, so
//! runs of an already built target do not wait for each other, and miri
//! (one host thread per process) gets a core each.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{cargo, crate_dir, root, run, setup, CRATES, TEST_CRATES};

/// Miri's flags: page-table walks and free-list links turn physical
/// addresses into pointers through a direct-map offset (integer to
/// pointer, with the buffer's provenance exposed by the test kit): say so
/// instead of warning.
const MIRIFLAGS: &str = "-Zmiri-permissive-provenance";

/// How many `cargo miri test` processes run at once.
fn lanes() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4)
}

/// One test target: crate and the cargo arguments that select it.
#[derive(Clone, Debug)]
struct Unit {
    krate: &'static str,
    select: Vec<String>,
}

impl Unit {
    fn name(&self) -> String {
        format!("{} {}", self.krate, self.select.join(" "))
    }
}

/// Every test target of every crate, the library tests first (they hold
/// the fuzz models, the longest runs), so the queue ends with short ones.
fn units(r: &Path) -> Vec<Unit> {
    let mut libs = Vec::new();
    let mut rest = Vec::new();
    for &k in CRATES.iter().chain(TEST_CRATES) {
        libs.push(Unit { krate: k, select: vec!["--lib".into()] });
        let mut tests: Vec<String> = std::fs::read_dir(r.join(crate_dir(k)).join("tests"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".rs") && !n.starts_with("loom_"))
                    .map(|n| n.trim_end_matches(".rs").to_string())
                    .collect()
            })
            .unwrap_or_default();
        tests.sort();
        for t in tests {
            rest.push(Unit { krate: k, select: vec!["--test".into(), t] });
        }
        rest.push(Unit { krate: k, select: vec!["--doc".into()] });
    }
    libs.extend(rest);
    // Longest first, so that no long target starts last and runs alone at
    // the end (seconds under miri on the 2-core machine, measured
    // 2026-12-06: the crates' targets in the clean-clone run, the fuzz
    // models' and the three library targets they left one by one after the
    // move; mm-pagecache's cache tests 2026-12-07; mm-vma's `vma` and
    // mm-reclaim's `driver` are short since their safe-code-only tests are
    // skipped under miri; a target not listed counts as short).
    const LONG: &[(&str, &str, u32)] = &[
        ("mm-wiring", "scenarios", 224),
        ("mm-swap", "zswap", 103),
        ("mm-pagecache", "cache", 30),
        ("mm-paging", "paging", 133),
        ("mm-slab", "hardened_freelist", 96),
        ("mm-vmalloc", "vmalloc", 84),
        ("mm-swap", "--lib", 79),
        ("mm-slab", "slab", 75),
        ("mm-slab", "interior_free", 72),
        ("mm-fuzz-models", "paging", 68),
        ("mm-buddy", "buddy", 52),
        ("mm-slab", "--lib", 50),
        ("mm-vma", "space", 48),
        ("mm-wiring", "--doc", 42),
        ("mm-swap", "swap", 42),
        ("mm-fuzz-models", "vma", 25),
        ("mm-fuzz-models", "vmalloc", 22),
        ("mm-fuzz-models", "zswap", 19),
        ("mm-fuzz-models", "wiring", 19),
    ];
    let weight = |u: &Unit| {
        let last = u.select.last().map_or("", String::as_str);
        LONG.iter().find(|l| l.0 == u.krate && l.1 == last).map_or(0, |l| l.2)
    };
    libs.sort_by_key(|u| core::cmp::Reverse(weight(u)));
    libs
}

fn miri_cargo(r: &Path) -> Command {
    let mut c = cargo(Some("nightly"));
    c.env("CARGO_TARGET_DIR", r.join("target/miri")).env("MIRIFLAGS", MIRIFLAGS);
    c
}

/// The miri step.
pub fn miri() -> bool {
    let r = root();
    if !(setup::ensure_nightly()
        && setup::ensure_component(Some("nightly"), "miri")
        && setup::ensure_component(Some("nightly"), "rust-src")
        && run(cargo(Some("nightly")).args(["miri", "setup"])))
    {
        return false;
    }
    // Build everything once (the runs below then only check freshness).
    let mut build = miri_cargo(&r);
    build.args(["miri", "test", "--all-features", "--no-run", "--lib", "--tests"]);
    for k in CRATES.iter().chain(TEST_CRATES) {
        build.args(["-p", k]);
    }
    if !run(&mut build) {
        return false;
    }
    let queue = Mutex::new(units(&r).into_iter().collect::<VecDeque<_>>());
    let results: Mutex<Vec<(String, bool, Duration, String)>> = Mutex::new(Vec::new());
    let n = lanes();
    eprintln!("xtask: miri over {} test targets, {n} at a time", queue.lock().unwrap().len());
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| loop {
                let Some(u) = queue.lock().unwrap().pop_front() else { break };
                let t = Instant::now();
                let mut c = miri_cargo(&r);
                c.args(["miri", "test", "--all-features", "-p", u.krate]).args(&u.select);
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
                let (ok, log) = match c.output() {
                    Ok(o) => {
                        let mut log = String::from_utf8_lossy(&o.stdout).into_owned();
                        log.push_str(&String::from_utf8_lossy(&o.stderr));
                        (o.status.success(), log)
                    }
                    Err(e) => (false, format!("could not start cargo: {e}")),
                };
                let d = t.elapsed();
                eprintln!("miri {:<40} {} {:>6.1}s", u.name(), if ok { "ok  " } else { "FAIL" }, d.as_secs_f64());
                results.lock().unwrap().push((u.name(), ok, d, log));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut ok = true;
    for (name, good, _, log) in &results {
        // The runs' closing lines, so a reader (and CI) sees the counts.
        for l in log.lines().filter(|l| l.starts_with("test result:")) {
            println!("{name}: {l}");
        }
        if !good {
            ok = false;
            eprintln!("--- miri {name} FAILED ---\n{log}");
        }
    }
    ok
}
