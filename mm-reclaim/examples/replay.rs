//! Trace-driven evaluation of the replacement policies.
//!
//! `replay --policy NAME TRACE CAPACITY_PAGES [--bits]` replays a trace
//! (little-endian `u64` page ids, plain or gzip) under demand paging with
//! `CAPACITY_PAGES` frames and prints `misses=N accesses=N` as its last
//! line. NAME is `clock`, `twolist`, `mglru`, `s3fifo`,
//! `s3fifo:SMALL,GHOST,PROMOTE` (sizes in
//! percent of the capacity), `opt` (Belady's MIN), `default` (the crate's
//! default policy) or `all` (a table of every policy and `opt`).
//! `--bits` replays as a kernel sees accesses: each access sets the page's
//! accessed bit, and policies learn of it only when they scan.
//!
//! `replay --grid DIR [--bits] [--only NAME...]` runs every `*.u64.gz`
//! trace of DIR at 1 %, 5 % and 10 % of its footprint (the evaluation model of
//! `shared/reclaim-eval/README.md`) and prints a table of miss ratios with
//! the mean of all cells.

use std::io::Read;

use mm_reclaim::eval::{belady, dense_ids, replay, Mode};
use mm_reclaim::{PageId, Policy, S3Fifo};

/// Reads a trace and renames its page ids densely (0, 1, ... in order of
/// first use).
fn load(path: &str) -> Vec<PageId> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap_or_else(|e| panic!("{path}: {e}"));
        out
    } else {
        raw
    };
    dense_ids(&bytes).unwrap_or_else(|| panic!("{path}: not a whole number of u64 ids"))
}

fn make(name: &str, ids: usize, capacity: usize, mode: Mode) -> Option<Box<dyn Policy>> {
    // `s3fifo:SMALL,GHOST,PROMOTE`: S3-FIFO with other sizes (percent of
    // the capacity) and promotion threshold.
    if let Some(params) = name.strip_prefix("s3fifo:") {
        let v: Vec<usize> = params.split(',').map(|x| x.parse().expect("s3fifo:SMALL,GHOST,PROMOTE")).collect();
        return Some(Box::new(S3Fifo::with_params(ids, capacity, v[0], v[1], v[2] as u8)));
    }
    mm_reclaim::policy_by_name(name, ids, capacity, mode).map(|p| p as Box<dyn Policy>)
}

const POLICIES: &[&str] = mm_reclaim::POLICY_NAMES;

fn run(name: &str, trace: &[PageId], ids: usize, capacity: usize, bits: bool) -> u64 {
    if name == "opt" {
        return belady(trace, ids, capacity);
    }
    let mode = if bits { Mode::AccessedBits } else { Mode::Callback };
    let mut p = make(name, ids, capacity, mode).unwrap_or_else(|| panic!("unknown policy {name}"));
    let misses = replay(p.as_mut(), trace, ids, capacity, mode);
    p.check().expect("the policy's invariants hold");
    misses
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bits = args.iter().any(|a| a == "--bits");
    let args: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != "--bits").collect();
    match args.as_slice() {
        ["--policy", name, path, capacity] => {
            let trace = load(path);
            let ids = trace.iter().max().map_or(0, |&m| m as usize + 1);
            let capacity: usize = capacity.parse().expect("CAPACITY_PAGES is a number");
            if *name == "all" {
                println!("| policy | misses | miss ratio |");
                println!("|---|---|---|");
                for n in POLICIES.iter().chain(&["opt"]) {
                    let m = run(n, &trace, ids, capacity, bits);
                    println!("| {n} | {m} | {:.4} |", m as f64 / trace.len() as f64);
                }
                // The last line is always the default policy's.
                let m = run("default", &trace, ids, capacity, bits);
                println!("misses={m} accesses={}", trace.len());
            } else {
                let m = run(name, &trace, ids, capacity, bits);
                println!("misses={m} accesses={}", trace.len());
            }
        }
        ["--grid", dir] => grid(dir, bits, POLICIES),
        ["--grid", dir, "--only", names @ ..] => grid(dir, bits, names),
        _ => {
            eprintln!("usage: replay --policy NAME TRACE CAPACITY_PAGES [--bits] | replay --grid DIR [--bits]");
            std::process::exit(2);
        }
    }
}

fn grid(dir: &str, bits: bool, policies: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("trace directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".u64.gz"))
        .collect();
    names.sort();
    let cols: Vec<&str> = std::iter::once("opt").chain(policies.iter().copied()).collect();
    println!("| trace | size | pages | {} |", cols.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(cols.len()));
    let mut sums = vec![0f64; cols.len()];
    let mut cells = 0;
    for n in &names {
        let trace = load(&format!("{dir}/{n}"));
        let ids = trace.iter().max().map_or(0, |&m| m as usize + 1);
        for pct in [1u64, 5, 10] {
            // round_half_up(p * U), at least 1.
            let capacity = (((ids as u64) * pct + 50) / 100).max(1) as usize;
            let ratios: Vec<f64> =
                cols.iter().map(|c| run(c, &trace, ids, capacity, bits) as f64 / trace.len() as f64).collect();
            for (s, r) in sums.iter_mut().zip(&ratios) {
                *s += r;
            }
            cells += 1;
            let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.4}")).collect();
            println!("| {} | {pct}% | {capacity} | {} |", n.trim_end_matches(".u64.gz"), shown.join(" | "));
        }
    }
    let means: Vec<String> = sums.iter().map(|s| format!("**{:.4}**", s / cells as f64)).collect();
    println!("| **mean of the {cells} cells** | | | {} |", means.join(" | "));
}
