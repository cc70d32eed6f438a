//! `cargo xtask ir CRATE`: instructions per operation under callgrind,
//! ours and the peers side by side, from the crate's `*_ir` example. Only the
//! measured phase counts (`--toggle-collect=*measure_*`); setup is excluded.
//! Instruction counts do not depend on machine load, unlike wall time.

use std::process::Command;

use crate::{cargo, root, run};

struct Suite {
    example: &'static str,
    package: &'static str,
    /// Our allocator with a pinned CPU source (no lock on the per-CPU fast
    /// paths), measured on its own row under each workload, against the
    /// same peer figures.
    pinned: Option<&'static str>,
    allocators: &'static [&'static str],
    workloads: &'static [(&'static str, &'static [&'static str])],
}

const BUDDY: Suite = Suite {
    example: "buddy_ir",
    package: "mm-buddy",
    pinned: Some("mm-buddy-pinned"),
    allocators: &["mm-buddy", "buddy_system_allocator", "bitmap-allocator", "frame-alloc", "free-list"],
    workloads: &[
        ("pair", &["mm-buddy", "buddy_system_allocator", "bitmap-allocator", "frame-alloc", "free-list"]),
        ("alloc_all", &["mm-buddy", "buddy_system_allocator", "bitmap-allocator", "frame-alloc", "free-list"]),
        ("free_all", &["mm-buddy", "buddy_system_allocator", "bitmap-allocator", "frame-alloc"]),
        ("random_orders", &["mm-buddy", "buddy_system_allocator", "bitmap-allocator", "frame-alloc"]),
    ],
};

const SLAB: Suite = Suite {
    example: "slab_ir",
    package: "mm-slab",
    pinned: Some("mm-slab-pinned"),
    allocators: &["mm-slab", "axallocator-slab", "talc", "linked_list_allocator", "glibc"],
    workloads: &[
        ("pair", &["mm-slab", "axallocator-slab", "talc", "linked_list_allocator", "glibc"]),
        ("mixed_alloc", &["mm-slab", "axallocator-slab", "talc", "linked_list_allocator", "glibc"]),
        ("mixed_free", &["mm-slab", "axallocator-slab", "talc", "linked_list_allocator", "glibc"]),
    ],
};

const PAGING: Suite = Suite {
    example: "paging_ir",
    package: "mm-paging",
    pinned: None,
    allocators: &["mm-paging", "x86_64", "page_table_multiarch", "page-table-generic"],
    workloads: &[
        ("map", &["mm-paging", "x86_64", "page_table_multiarch", "page-table-generic"]),
        ("translate", &["mm-paging", "x86_64", "page_table_multiarch", "page-table-generic"]),
        ("unmap", &["mm-paging", "x86_64", "page_table_multiarch", "page-table-generic"]),
        ("map_page", &["mm-paging", "x86_64", "page_table_multiarch", "page-table-generic"]),
        ("unmap_page", &["mm-paging", "x86_64", "page_table_multiarch", "page-table-generic"]),
        ("unmap_sparse", &["mm-paging", "x86_64", "page_table_multiarch", "page-table-generic"]),
    ],
};

const VMALLOC: Suite = Suite {
    example: "vmalloc_ir",
    package: "mm-vmalloc",
    pinned: None,
    allocators: &["mm-vmalloc", "first-fit"],
    workloads: &[
        ("pair_1page", &["mm-vmalloc", "first-fit"]),
        ("pair_1mib", &["mm-vmalloc", "first-fit"]),
        ("busy_100", &["mm-vmalloc", "first-fit"]),
        ("busy_1000", &["mm-vmalloc", "first-fit"]),
        ("busy_15000", &["mm-vmalloc", "first-fit"]),
    ],
};

const PAGECACHE: Suite = Suite {
    example: "index_ir",
    package: "mm-pagecache",
    pinned: None,
    allocators: &["mm-pagecache", "BTreeMap"],
    workloads: &[
        ("get_hit", &["mm-pagecache", "BTreeMap"]),
        ("insert_remove", &["mm-pagecache", "BTreeMap"]),
        ("next_dirty", &["mm-pagecache", "BTreeMap"]),
    ],
};

fn ensure_valgrind() -> bool {
    if Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    eprintln!("xtask: valgrind not found; installing Debian's valgrind with apt-get");
    run(Command::new("apt-get").args(["install", "-y", "-qq", "valgrind"]))
}

/// Ir per operation for one allocator and workload.
fn measure(bin: &std::path::Path, alloc: &str, workload: &str) -> Option<f64> {
    let out = std::env::temp_dir().join(format!("xtask-cg-{}.out", std::process::id()));
    let o = Command::new("valgrind")
        .args(["--tool=callgrind", "--toggle-collect=*measure_*"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(bin)
        .args([alloc, workload])
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        return None;
    }
    let ops: f64 = String::from_utf8_lossy(&o.stdout).lines().find_map(|l| l.strip_prefix("ops="))?.parse().ok()?;
    let text = std::fs::read_to_string(&out).ok()?;
    let _ = std::fs::remove_file(&out);
    let ir: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(ir / ops)
}

pub fn ir(which: &str) -> bool {
    let suite = match which {
        "buddy" | "mm-buddy" => BUDDY,
        "paging" | "mm-paging" => PAGING,
        "slab" | "mm-slab" => SLAB,
        "vmalloc" | "mm-vmalloc" => VMALLOC,
        "pagecache" | "mm-pagecache" => PAGECACHE,
        other => {
            eprintln!("xtask ir: unknown suite {other} (known: buddy, paging, slab, vmalloc, pagecache)");
            return false;
        }
    };
    if !ensure_valgrind()
        || !run(cargo(None).args(["build", "--release", "-p", suite.package, "--example", suite.example]))
    {
        return false;
    }
    let bin = root().join("target/release/examples").join(suite.example);
    let ours = suite.allocators[0];
    println!("| workload | {} |", suite.allocators.join(" | "));
    println!("|---|{}", "---|".repeat(suite.allocators.len()));
    for (w, allocs) in suite.workloads {
        let peers: Vec<Option<f64>> =
            suite.allocators[1..].iter().map(|a| if allocs.contains(a) { measure(&bin, a, w) } else { None }).collect();
        // One row for the default (locked) build, one for the pinned one:
        // the same peer figures, each row's ratios against its own cost.
        let rows = std::iter::once((w.to_string(), ours)).chain(suite.pinned.map(|p| (format!("{w}, pinned"), p)));
        for (label, variant) in rows {
            let ours_ir = measure(&bin, variant, w);
            let mut cells = vec![match ours_ir {
                Some(v) => format!("{v:.0} Ir"),
                None => "failed".to_string(),
            }];
            for (a, v) in suite.allocators[1..].iter().zip(&peers) {
                cells.push(match (v, ours_ir) {
                    _ if !allocs.contains(a) => "n/a".to_string(),
                    (Some(v), Some(o)) => format!("{v:.0} Ir (ours/peer {:.2})", o / v),
                    (Some(v), None) => format!("{v:.0} Ir"),
                    (None, _) => "failed".to_string(),
                });
            }
            println!("| {label} | {} |", cells.join(" | "));
        }
    }
    true
}
