//! `cargo xtask run --profile`: names the functions of the sampled
//! instruction addresses the kernel printed (`... profile: pc ADDRESS
//! COUNT`), with `addr2line` over the kernel's debug information, and
//! prints the busiest functions two ways: by the function the address
//! belongs to (its symbol), and by the innermost function inlined there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Rows printed per table.
const TOP: usize = 30;

/// The samples of `lines`, symbolized and summed by function.
pub fn by_function(kernel: &Path, lines: &[String]) {
    let samples: Vec<(u64, u64)> = lines
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find(" profile: pc ")? + " profile: pc ".len()..];
            let (pc, n) = rest.split_once(' ')?;
            Some((u64::from_str_radix(pc.trim_start_matches("0x"), 16).ok()?, n.trim().parse().ok()?))
        })
        .collect();
    if samples.is_empty() {
        eprintln!("xtask: profile: no samples (sampling needs a second CPU)");
        return;
    }
    let total: u64 = samples.iter().map(|s| s.1).sum();
    let Some(frames) = symbolize(kernel, &samples) else { return };
    let mut outer: BTreeMap<&str, u64> = BTreeMap::new();
    let mut inner: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, n), f) in samples.iter().zip(&frames) {
        *outer.entry(f.last().map_or("?", String::as_str)).or_default() += n;
        *inner.entry(f.first().map_or("?", String::as_str)).or_default() += n;
    }
    for (title, table) in [("function (symbol)", outer), ("innermost inlined function", inner)] {
        let mut rows: Vec<(&str, u64)> = table.into_iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1));
        println!("xtask: profile: {total} samples of CPU 0 by {title}");
        for (name, n) in rows.into_iter().take(TOP) {
            println!("  {:>5.1}% {:>6}  {}", n as f64 * 100.0 / total as f64, n, short(name));
        }
    }
}

/// The inline chain of each address, innermost first (its symbol last).
fn symbolize(kernel: &Path, samples: &[(u64, u64)]) -> Option<Vec<Vec<String>>> {
    let child = Command::new("addr2line")
        .args(["-a", "-f", "-i", "-C", "-e"])
        .arg(kernel)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: profile: cannot run addr2line (binutils): {e}");
            return None;
        }
    };
    let input: String = samples.iter().map(|(pc, _)| format!("{pc:#x}\n")).collect();
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().ok()?;
    let _ = writer.join();
    // `-a`: each address's block starts with the address; then function
    // and file:line pairs, innermost first.
    let mut frames: Vec<Vec<String>> = Vec::new();
    let mut lines = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>().into_iter();
    while let Some(l) = lines.next() {
        if l.starts_with("0x") {
            frames.push(Vec::new());
        } else if let Some(f) = frames.last_mut() {
            f.push(l);
            lines.next(); // its file:line
        }
    }
    if frames.len() != samples.len() {
        eprintln!("xtask: profile: addr2line gave {} answers for {} addresses", frames.len(), samples.len());
        return None;
    }
    Some(frames)
}

/// A function name without its generic arguments' paths, for a table.
fn short(name: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in name.chars() {
        match c {
            '<' => {
                depth += 1;
                if depth == 1 {
                    out.push_str("<..>");
                }
            }
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}
