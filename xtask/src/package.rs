//! The package step: what crates.io would hand a user, built and tested as
//! that user builds it.
//!
//! 1. `cargo package --no-verify` for every published library crate in one
//!    invocation (cargo's own check, a build of each package alone, is
//!    covered by the `nostd` step and by 2).
//! 2. Each `.crate` is unpacked into `target/package-test/`, next to a
//!    workspace manifest whose members are the unpacked crates and whose
//!    `[patch.crates-io]` points every published crate at its unpacked copy;
//!    `cargo test --workspace` runs there. A file left out of a package, a
//!    dev-dependency dropped by packaging or a path outside a package fails
//!    here.
//! 3. The workspace README's examples, which no package ships, run as
//!    doctests of mm-types under `--cfg mm_workspace`.
//! 4. The library crates build with the toolchain of the declared
//!    `rust-version` (installed with rustup when missing).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{cargo, crate_dir, root, run, CRATES};

/// The scratch folder the packages are unpacked into.
const SCRATCH: &str = "target/package-test";

/// The files every package must hold.
const REQUIRED_FILES: &[&str] = &["Cargo.toml", "README.md", "LICENSE-MIT", "LICENSE-APACHE"];

pub fn package() -> bool {
    let r = root();
    let published: Vec<(&str, String)> = CRATES
        .iter()
        .filter_map(|&k| {
            let manifest = fs::read_to_string(r.join(crate_dir(k)).join("Cargo.toml")).ok()?;
            if manifest.lines().any(|l| l.trim() == "publish = false") {
                return None;
            }
            Some((k, field(&manifest, "version")?))
        })
        .collect();
    if published.is_empty() {
        eprintln!("xtask: no published crate found");
        return false;
    }

    // `--allow-dirty`: the working tree is what is checked, committed or not
    // (a CI clone is clean anyway). `--no-verify`: cargo's check builds each
    // package alone with its default features; the `nostd` step builds each
    // crate that way already, and the scratch workspace below builds and
    // tests the unpacked packages themselves, so cargo's check would only add
    // a registry query and a build per crate.
    let mut c = cargo(None);
    c.args(["package", "--allow-dirty", "--no-verify"]);
    for (k, _) in &published {
        c.args(["-p", k]);
    }
    if !run(&mut c) {
        return false;
    }

    unpack_and_test(&r, &published) && workspace_readme() && msrv(&r, &published)
}

/// The value of the first `name = "value"` line of a manifest.
fn field(manifest: &str, name: &str) -> Option<String> {
    manifest.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(name)?.trim_start().strip_prefix('=')?.trim();
        Some(rest.strip_prefix('"')?.strip_suffix('"')?.to_string())
    })
}

/// The features a crate's self dev-dependency (`k = { path = ".", features
/// = [...] }`) turns on for its tests, as `k/feature`. Cargo drops a
/// path-only dev-dependency from the package, and a self dev-dependency with
/// a version cannot be published at all (the package's lock file would need
/// the crate on crates.io already), so a user tests such a crate with these
/// features on the command line.
fn self_dev_features(r: &Path, k: &str) -> Vec<String> {
    let Ok(manifest) = fs::read_to_string(r.join(crate_dir(k)).join("Cargo.toml")) else { return Vec::new() };
    let prefix = format!("{k} = {{");
    let Some(line) = manifest.lines().find(|l| l.starts_with(&prefix) && l.contains("path = \".\"")) else {
        return Vec::new();
    };
    let Some(list) = line.split_once("features = [").and_then(|(_, rest)| rest.split_once(']')).map(|(l, _)| l) else {
        return Vec::new();
    };
    list.split(',').map(|f| f.trim().trim_matches('"')).filter(|f| !f.is_empty()).map(|f| format!("{k}/{f}")).collect()
}

fn unpack_and_test(r: &Path, published: &[(&str, String)]) -> bool {
    let scratch = r.join(SCRATCH);
    // Everything but `target` (the scratch build's own, kept for its
    // third-party dependencies) goes: no file of an earlier run survives.
    if let Ok(entries) = fs::read_dir(&scratch) {
        for e in entries.flatten() {
            if e.file_name() == "target" {
                continue;
            }
            let p = e.path();
            let gone = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
            if let Err(err) = gone {
                eprintln!("xtask: cannot remove {}: {err}", p.display());
                return false;
            }
        }
    }
    if let Err(e) = fs::create_dir_all(&scratch) {
        eprintln!("xtask: cannot create {}: {e}", scratch.display());
        return false;
    }

    let mut members = String::new();
    let mut patches = String::new();
    for (k, v) in published {
        let dir = format!("{k}-{v}");
        let file = r.join("target/package").join(format!("{dir}.crate"));
        // `-m`: fresh modification times. A package's files all carry one
        // fixed date, and cargo decides from times whether a path crate
        // changed since its last build.
        if !run(Command::new("tar").arg("-xzmf").arg(&file).arg("-C").arg(&scratch)) {
            return false;
        }
        for f in REQUIRED_FILES {
            if !scratch.join(&dir).join(f).is_file() {
                eprintln!("xtask: the package of {k} has no {f}");
                return false;
            }
        }
        members.push_str(&format!("    \"{dir}\",\n"));
        patches.push_str(&format!("{k} = {{ path = \"{dir}\" }}\n"));
    }
    let manifest = format!(
        "# Written by `cargo xtask test package`: the unpacked packages, with\n\
         # each other as their crates.io dependencies.\n\
         [workspace]\nresolver = \"2\"\nmembers = [\n{members}]\n\n[patch.crates-io]\n{patches}"
    );
    if let Err(e) = fs::write(scratch.join("Cargo.toml"), manifest) {
        eprintln!("xtask: cannot write the scratch manifest: {e}");
        return false;
    }
    // The workspace's lock file: the third-party versions the workspace is
    // tested with (cargo adds and drops entries as this workspace needs).
    if let Err(e) = fs::copy(r.join("Cargo.lock"), scratch.join("Cargo.lock")) {
        eprintln!("xtask: cannot copy Cargo.lock: {e}");
        return false;
    }

    let features: Vec<String> = published.iter().flat_map(|(k, _)| self_dev_features(r, k)).collect();
    let mut c = cargo(None);
    c.current_dir(&scratch).env("CARGO_TARGET_DIR", scratch.join("target")).args(["test", "--workspace"]);
    if !features.is_empty() {
        c.args(["--features", &features.join(",")]);
    }
    run(&mut c)
}

/// The workspace README's examples, as doctests of mm-types (see the
/// `WorkspaceReadmeDoctests` item of its `lib.rs`). Fails when none ran.
fn workspace_readme() -> bool {
    let mut c = cargo(None);
    c.args(["test", "--doc", "-p", "mm-types", "--", "WorkspaceReadmeDoctests"])
        .env("RUSTDOCFLAGS", "--cfg mm_workspace");
    eprintln!("$ RUSTDOCFLAGS=--cfg mm_workspace cargo test --doc -p mm-types -- WorkspaceReadmeDoctests");
    let out = match c.stderr(Stdio::inherit()).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask: could not start cargo: {e}");
            return false;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    let passed = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
        .sum::<usize>();
    if !out.status.success() {
        return false;
    }
    if passed == 0 {
        eprintln!("xtask: no doctest of the workspace README ran");
        return false;
    }
    true
}

/// `cargo check --all-features` of the published crates with the toolchain
/// of `rust-version` in the root manifest's `[workspace.package]`.
fn msrv(r: &Path, published: &[(&str, String)]) -> bool {
    let Some(version) = fs::read_to_string(r.join("Cargo.toml")).ok().and_then(|m| field(&m, "rust-version")) else {
        eprintln!("xtask: no rust-version in the root Cargo.toml");
        return false;
    };
    let installed = Command::new("rustc")
        .env_remove("RUSTUP_TOOLCHAIN")
        .arg(format!("+{version}"))
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("xtask: installing the toolchain {version} (the declared rust-version)");
        if !run(Command::new("rustup").env_remove("RUSTUP_TOOLCHAIN").args([
            "toolchain",
            "install",
            &version,
            "--profile",
            "minimal",
        ])) {
            return false;
        }
    }
    let mut c = cargo(Some(&version));
    c.args(["check", "--all-features"]).env("CARGO_TARGET_DIR", r.join("target/msrv"));
    for (k, _) in published {
        c.args(["-p", k]);
    }
    run(&mut c)
}
