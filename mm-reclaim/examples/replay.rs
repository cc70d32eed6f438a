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
//!
//! `replay --cv DIR [--bits]` estimates how the default policy's parameter
//! choice does on traces it was not chosen on: leave-one-trace-out cross
//! validation over the same cells. For each trace, the S3-FIFO parameters
//! (small queue, ghost window, promotion threshold) are chosen from a grid
//! by their mean miss ratio over the other traces' cells, then scored on
//! the held-out trace's cells; the mean of those held-out scores is the
//! out-of-sample estimate. It prints them beside the in-sample figures and
//! the untuned policies (whose in-sample mean is already out of sample).

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
        ["--cv", dir] => cross_validate(dir, bits),
        ["--grid", dir, "--only", names @ ..] => grid(dir, bits, names),
        _ => {
            eprintln!(
                "usage: replay --policy NAME TRACE CAPACITY_PAGES [--bits] | replay --grid DIR [--bits] | replay --cv DIR [--bits]"
            );
            std::process::exit(2);
        }
    }
}

/// The `*.u64.gz` traces of `dir`, by name.
fn trace_names(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("trace directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".u64.gz"))
        .collect();
    names.sort();
    names
}

/// The capacities of a trace's three cells: 1 %, 5 % and 10 % of its
/// footprint, `round_half_up(p * U)`, at least 1.
fn cell_capacities(ids: usize) -> [usize; 3] {
    [1u64, 5, 10].map(|pct| (((ids as u64) * pct + 50) / 100).max(1) as usize)
}

fn grid(dir: &str, bits: bool, policies: &[&str]) {
    let names = trace_names(dir);
    let cols: Vec<&str> = std::iter::once("opt").chain(policies.iter().copied()).collect();
    println!("| trace | size | pages | {} |", cols.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(cols.len()));
    let mut sums = vec![0f64; cols.len()];
    let mut cells = 0;
    for n in &names {
        let trace = load(&format!("{dir}/{n}"));
        let ids = trace.iter().max().map_or(0, |&m| m as usize + 1);
        for (pct, capacity) in [1, 5, 10].into_iter().zip(cell_capacities(ids)) {
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

/// The S3-FIFO parameters the cross validation chooses among: small queue
/// and ghost window in percent of the capacity, promotion threshold.
const SMALL_PCT: &[usize] = &[5, 10, 15, 20, 25];
const GHOST_PCT: &[usize] = &[50, 90, 150, 300, 1000, 3000, 10000];
const PROMOTE: &[usize] = &[1, 2, 3];

fn cross_validate(dir: &str, bits: bool) {
    let mode = if bits { Mode::AccessedBits } else { Mode::Callback };
    let traces: Vec<(String, Vec<PageId>)> = trace_names(dir)
        .into_iter()
        .map(|n| (n.trim_end_matches(".u64.gz").to_string(), load(&format!("{dir}/{n}"))))
        .collect();
    let configs: Vec<(usize, usize, usize)> = SMALL_PCT
        .iter()
        .flat_map(|&s| GHOST_PCT.iter().flat_map(move |&g| PROMOTE.iter().map(move |&p| (s, g, p))))
        .collect();
    // ratio[c][t]: the mean miss ratio of configuration `c` over trace
    // `t`'s three cells (each trace weighs the same, as in the grid mean).
    let cells = |t: &[PageId], run: &mut dyn FnMut(usize) -> u64| -> f64 {
        let ids = t.iter().max().map_or(0, |&m| m as usize + 1);
        cell_capacities(ids).iter().map(|&c| run(c) as f64 / t.len() as f64).sum::<f64>() / 3.0
    };
    let ratio: Vec<Vec<f64>> = configs
        .iter()
        .map(|&(s, g, p)| {
            traces
                .iter()
                .map(|(_, t)| {
                    let ids = t.iter().max().map_or(0, |&m| m as usize + 1);
                    cells(t, &mut |c| {
                        let mut policy = S3Fifo::with_params(ids, c, s, g, p as u8);
                        replay(&mut policy, t, ids, c, mode)
                    })
                })
                .collect()
        })
        .collect();
    let mean = |v: &[f64], skip: Option<usize>| {
        let kept: Vec<f64> = v.iter().enumerate().filter(|&(i, _)| Some(i) != skip).map(|(_, &r)| r).collect();
        kept.iter().sum::<f64>() / kept.len() as f64
    };
    let best = |skip: Option<usize>| {
        (0..configs.len()).min_by(|&a, &b| mean(&ratio[a], skip).total_cmp(&mean(&ratio[b], skip))).expect("a grid")
    };
    let fixed: Vec<(&str, Vec<f64>)> = ["opt", "clock", "twolist", "mglru", "s3fifo", "default"]
        .iter()
        .map(|&n| {
            let per_trace = traces
                .iter()
                .map(|(_, t)| {
                    let ids = t.iter().max().map_or(0, |&m| m as usize + 1);
                    cells(t, &mut |c| run(n, t, ids, c, bits))
                })
                .collect();
            (n, per_trace)
        })
        .collect();
    let s3 = &fixed.iter().find(|(n, _)| *n == "s3fifo").expect("s3fifo").1;
    println!("| held-out trace | chosen on the others (small %, ghost %, promote) | held out | s3fifo |");
    println!("|---|---|---|---|");
    let mut held = Vec::new();
    for (t, (name, _)) in traces.iter().enumerate() {
        let c = best(Some(t));
        held.push(ratio[c][t]);
        let (s, g, p) = configs[c];
        println!("| {name} | {s}, {g}, {p} | {:.4} | {:.4} |", ratio[c][t], s3[t]);
    }
    let all = best(None);
    let (s, g, p) = configs[all];
    println!();
    println!("| figure (mean over the traces' cells) | miss ratio |");
    println!("|---|---|");
    println!("| S3-FIFO tuned on every trace ({s}, {g}, {p}), in sample | {:.4} |", mean(&ratio[all], None));
    println!("| S3-FIFO tuned leaving each trace out, held out (out of sample) | **{:.4}** |", mean(&held, None));
    for (n, v) in &fixed {
        let note = match *n {
            "opt" => "Belady's optimum",
            "default" => "the shipped default's fixed parameters, in sample",
            _ => "no parameter tuned on these traces",
        };
        println!("| {n} ({note}) | {:.4} |", mean(v, None));
    }
}
