//! Trace-driven evaluation of the replacement policies.
//!
//! `replay --policy NAME TRACE CAPACITY_PAGES [--bits]` replays a trace
//! (little-endian `u64` page ids, plain or gzip) under demand paging with
//! `CAPACITY_PAGES` frames and prints `misses=N accesses=N` as its last
//! line. NAME is `clock`, `twolist`, `genclock`, `s3fifo`,
//! `s3fifo:SMALL,GHOST,PROMOTE` (sizes in percent of the capacity),
//! `wtinylfu`, `wtinylfu:REACH` (the window moves on refaults within
//! `capacity / REACH` departures; 0: a fixed 1 % window), `opt` (Belady's
//! MIN), `default` (the crate's default policy) or `all` (a table of every
//! policy and `opt`).
//! `--bits` replays as a kernel sees accesses: each access sets the page's
//! accessed bit, and policies learn of it only when they scan.
//!
//! `replay --grid DIR [--bits] [--only NAME...]` runs every `*.u64.gz`
//! trace of DIR at 1 %, 5 % and 10 % of its footprint (the evaluation model of
//! `shared/reclaim-eval/README.md`) and prints a table of miss ratios with
//! the mean of all cells.
//!
//! `replay --synth DIR` writes five synthetic traces into DIR (a shifting
//! Zipf popularity, a loop mixed with a hot set, a hot set interrupted by
//! scans, a zigzag loop, bursts of short reuse), seeded, so that a policy
//! chosen on real traces can be checked on workloads it never saw.
//!
//! `replay --cv DIR [--bits]` estimates how a parameter choice does on
//! traces it was not chosen on: leave-one-trace-out cross validation over
//! the same cells, for S3-FIFO's three parameters (small queue, ghost
//! window, promotion threshold) and for W-TinyLFU's reach. For each trace,
//! the setting with the best mean miss ratio over the other traces' cells
//! is scored on the held-out trace's cells; the mean of those held-out
//! scores is the out-of-sample estimate. It prints them beside every
//! policy's in-sample mean and worst cell against CLOCK.

use std::io::Read;

use mm_reclaim::eval::{belady, dense_ids, replay, Mode};
use mm_reclaim::{PageId, Policy, S3Fifo, WTinyLfu};

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
    // `wtinylfu:REACH`: W-TinyLFU whose window moves on refaults within
    // `capacity / REACH` departures (0: a fixed 1 % window).
    if let Some(reach) = name.strip_prefix("wtinylfu:") {
        let reach = reach.parse().expect("wtinylfu:REACH");
        return Some(Box::new(WTinyLfu::with_reach(ids, capacity, reach)));
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
        ["--synth", dir] => synthesize(dir),
        ["--cv", dir] => cross_validate(dir, bits),
        ["--grid", dir, "--only", names @ ..] => grid(dir, bits, names),
        _ => {
            eprintln!(
                "usage: replay --policy NAME TRACE CAPACITY_PAGES [--bits] | replay --grid DIR [--bits] | replay --cv DIR [--bits] | replay --synth DIR"
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

/// The S3-FIFO parameters one cross validation chooses among: small
/// queue and ghost window in percent of the capacity, promotion threshold.
const SMALL_PCT: &[usize] = &[5, 10, 15, 20, 25];
const GHOST_PCT: &[usize] = &[50, 90, 150, 300, 1000, 3000, 10000];
const PROMOTE: &[usize] = &[1, 2, 3];
/// W-TinyLFU's one parameter, the other grid: the adaptation's reach as a
/// divisor of the capacity.
const REACH_DIV: &[u64] = &[2, 4, 8, 16, 32, 64];

/// A trace with its name and its three cells' capacities.
struct Trace {
    name: String,
    ids: usize,
    pages: Vec<PageId>,
}

/// A policy maker, by page ids and capacity.
type Maker = Box<dyn Fn(usize, usize) -> Box<dyn Policy>>;

/// Miss ratios of `make` on each of the traces' cells: `[trace][cell]`.
fn cell_ratios(traces: &[Trace], mode: Mode, make: &dyn Fn(usize, usize) -> Box<dyn Policy>) -> Vec<[f64; 3]> {
    traces
        .iter()
        .map(|t| {
            cell_capacities(t.ids).map(|c| {
                let mut p = make(t.ids, c);
                replay(p.as_mut(), &t.pages, t.ids, c, mode) as f64 / t.pages.len() as f64
            })
        })
        .collect()
}

/// The mean over traces (each weighing the same, as in the grid mean),
/// leaving trace `skip` out.
fn mean_over(r: &[[f64; 3]], skip: Option<usize>) -> f64 {
    let kept: Vec<f64> =
        r.iter().enumerate().filter(|&(i, _)| Some(i) != skip).map(|(_, c)| c.iter().sum::<f64>() / 3.0).collect();
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// Leave-one-trace-out over a grid of settings: for each trace, the
/// setting with the best mean on the others, scored on it. Returns the
/// in-sample best (label, mean) and the held-out mean, and prints the folds.
fn loo(name: &str, grid: &[(String, Vec<[f64; 3]>)], traces: &[Trace]) -> (String, f64, f64) {
    let best = |skip: Option<usize>| {
        (0..grid.len())
            .min_by(|&a, &b| mean_over(&grid[a].1, skip).total_cmp(&mean_over(&grid[b].1, skip)))
            .expect("a grid")
    };
    println!("| {name}: held-out trace | chosen on the others | held out |");
    println!("|---|---|---|");
    let mut held = Vec::new();
    for (t, trace) in traces.iter().enumerate() {
        let c = best(Some(t));
        let r = grid[c].1[t].iter().sum::<f64>() / 3.0;
        held.push(r);
        println!("| {} | {} | {r:.4} |", trace.name, grid[c].0);
    }
    println!();
    let all = best(None);
    (grid[all].0.clone(), mean_over(&grid[all].1, None), held.iter().sum::<f64>() / held.len() as f64)
}

fn cross_validate(dir: &str, bits: bool) {
    let mode = if bits { Mode::AccessedBits } else { Mode::Callback };
    let traces: Vec<Trace> = trace_names(dir)
        .into_iter()
        .map(|n| {
            let pages = load(&format!("{dir}/{n}"));
            let ids = pages.iter().max().map_or(0, |&m| m as usize + 1);
            Trace { name: n.trim_end_matches(".u64.gz").to_string(), ids, pages }
        })
        .collect();
    let s3_grid: Vec<(String, Vec<[f64; 3]>)> = SMALL_PCT
        .iter()
        .flat_map(|&s| GHOST_PCT.iter().flat_map(move |&g| PROMOTE.iter().map(move |&p| (s, g, p))))
        .map(|(s, g, p)| {
            let make: Maker = Box::new(move |ids, c| Box::new(S3Fifo::with_params(ids, c, s, g, p as u8)));
            (format!("s3fifo {s} %, {g} %, {p}"), cell_ratios(&traces, mode, &make))
        })
        .collect();
    let tiny_grid: Vec<(String, Vec<[f64; 3]>)> = REACH_DIV
        .iter()
        .map(|&f| {
            let make: Maker = Box::new(move |ids, c| Box::new(WTinyLfu::with_reach(ids, c, f)));
            (format!("wtinylfu reach 1/{f}"), cell_ratios(&traces, mode, &make))
        })
        .collect();
    let s3 = loo("S3-FIFO's three parameters", &s3_grid, &traces);
    let tiny = loo("W-TinyLFU's reach", &tiny_grid, &traces);
    let fixed: Vec<(&str, Vec<[f64; 3]>)> = ["opt", "clock", "twolist", "genclock", "s3fifo", "wtinylfu:0", "wtinylfu"]
        .iter()
        .map(|&n| {
            let r = traces
                .iter()
                .map(|t| cell_capacities(t.ids).map(|c| run(n, &t.pages, t.ids, c, bits) as f64 / t.pages.len() as f64))
                .collect();
            (n, r)
        })
        .collect();
    let clock = fixed[1].1.clone();
    let worst = |r: &[[f64; 3]]| {
        let mut w = (f64::MIN, String::new());
        for (t, cells) in r.iter().enumerate() {
            for (i, pct) in [1, 5, 10].iter().enumerate() {
                let d = cells[i] - clock[t][i];
                if d > w.0 {
                    w = (d, format!("{} {pct} %", traces[t].name));
                }
            }
        }
        format!("{:+.2} points ({})", 100.0 * w.0, w.1)
    };
    println!("| policy | in sample | left one trace out | worst cell against clock |");
    println!("|---|---|---|---|");
    for (n, r) in &fixed {
        let m = mean_over(r, None);
        let note = match *n {
            "wtinylfu" => " (the default)",
            "wtinylfu:0" => " (its window fixed at 1 %)",
            _ => "",
        };
        let held = if *n == "wtinylfu" { "see the reach row".into() } else { format!("{m:.4} (nothing tuned)") };
        println!("| {n}{note} | {m:.4} | {held} | {} |", if *n == "opt" { "-".into() } else { worst(r) });
    }
    for (label, (chosen, inside, held)) in [("S3-FIFO tuned", &s3), ("W-TinyLFU's reach tuned", &tiny)] {
        println!("| {label} (all traces: {chosen}) | {inside:.4} | **{held:.4}** | |");
    }
}

/// A seeded generator (SplitMix64): the synthetic traces are the same on
/// every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// Zipf's law over `n` ranks with exponent `a`, sampled by its CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, a: f64) -> Self {
        let w: Vec<f64> = (1..=n).map(|i| 1.0 / (i as f64).powf(a)).collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        Zipf(
            w.iter()
                .map(|x| {
                    acc += x / total;
                    acc
                })
                .collect(),
        )
    }
    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1) as u64
    }
}

/// Writes the synthetic traces (600,000 accesses each) into `dir`.
fn synthesize(dir: &str) {
    use std::io::Write;
    const N: usize = 600_000;
    let mut rng = Rng(7);
    let mut traces: Vec<(&str, Vec<u64>)> = Vec::new();
    // Popularity over 20,000 pages by Zipf 0.9, reshuffled every 150,000.
    let zipf = Zipf::new(20_000, 0.9);
    let mut perm: Vec<u64> = (0..20_000).collect();
    let mut t = Vec::with_capacity(N);
    for i in 0..N {
        if i % 150_000 == 0 {
            rng.shuffle(&mut perm);
        }
        t.push(perm[zipf.sample(&mut rng) as usize]);
    }
    traces.push(("zipf_shift", t));
    // A loop over 3,000 pages, half the accesses; a hot set of 800 pages
    // by Zipf 1.0, the other half.
    let zipf = Zipf::new(800, 1.0);
    let mut j = 0;
    let t = (0..N)
        .map(|_| {
            if rng.unit() < 0.5 {
                j += 1;
                100_000 + j % 3_000
            } else {
                zipf.sample(&mut rng)
            }
        })
        .collect();
    traces.push(("loop_mix", t));
    // Zipf 0.8 over 8,000 pages; the first 20,000 accesses of every
    // 100,000 are a scan of pages never seen before.
    let zipf = Zipf::new(8_000, 0.8);
    let mut fresh = 1_000_000;
    let t = (0..N)
        .map(|i| {
            if i % 100_000 < 20_000 {
                fresh += 1;
                fresh
            } else {
                zipf.sample(&mut rng)
            }
        })
        .collect();
    traces.push(("scan_storage", t));
    // A loop over 2,500 pages, forwards then backwards.
    let t = (0..N as u64)
        .map(|i| {
            let (lap, at) = (i / 2_500, i % 2_500);
            if lap % 2 == 0 {
                at
            } else {
                2_499 - at
            }
        })
        .collect();
    traces.push(("zigzag", t));
    // Bursts: 20 new pages referenced 5 times each in shuffled order, then
    // (three times in ten) 10 references to pages of the last 2,000.
    let mut t = Vec::with_capacity(N);
    let mut first = 0u64;
    while t.len() < N {
        let mut burst: Vec<u64> = (first..first + 20).cycle().take(100).collect();
        rng.shuffle(&mut burst);
        t.extend(burst);
        if rng.unit() < 0.3 && first > 0 {
            let lo = first.saturating_sub(2_000);
            for _ in 0..10 {
                t.push(lo + rng.below(first - lo));
            }
        }
        first += 20;
    }
    t.truncate(N);
    traces.push(("bursts", t));
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    for (name, t) in traces {
        let path = format!("{dir}/{name}.u64.gz");
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
        for id in t {
            gz.write_all(&id.to_le_bytes()).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        gz.finish().unwrap_or_else(|e| panic!("{path}: {e}"));
        println!("{path}");
    }
}
