//! Installs what the checks need on a fresh machine, saying what it does.

use std::process::{Command, Stdio};

use crate::run;

fn rustup(toolchain: Option<&str>) -> Command {
    let mut c = Command::new("rustup");
    c.env_remove("RUSTUP_TOOLCHAIN");
    if let Some(t) = toolchain {
        c.arg(format!("+{t}"));
    }
    c
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes sure the nightly toolchain exists (for miri and cargo-fuzz).
pub fn ensure_nightly() -> bool {
    if output(Command::new("rustc").env_remove("RUSTUP_TOOLCHAIN").args(["+nightly", "--version"])).is_some() {
        return true;
    }
    eprintln!("xtask: installing the nightly toolchain (needed for miri)");
    run(rustup(None).args(["toolchain", "install", "nightly", "--profile", "minimal"]))
}

/// Makes sure a rustup component is installed.
pub fn ensure_component(toolchain: Option<&str>, component: &str) -> bool {
    let installed = output(rustup(toolchain).args(["component", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.starts_with(component)) {
        return true;
    }
    eprintln!("xtask: installing rustup component {component} ({})", toolchain.unwrap_or("default toolchain"));
    run(rustup(toolchain).args(["component", "add", component]))
}

/// Makes sure a rustup target is installed.
pub fn ensure_target(toolchain: Option<&str>, target: &str) -> bool {
    let installed = output(rustup(toolchain).args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == target) {
        return true;
    }
    eprintln!("xtask: installing rustup target {target}");
    run(rustup(toolchain).args(["target", "add", target]))
}

/// Makes sure `qemu-system-x86_64` is on the PATH, installing Debian's
/// `qemu-system-x86` package when it is not.
pub fn ensure_qemu() -> bool {
    ensure_tool("qemu-system-x86_64", &["--version"], "qemu-system-x86")
}

/// Where `mkfs.ext4` is (it lives in `/sbin`, often off a user's PATH),
/// installing Debian's `e2fsprogs` when it is nowhere.
pub fn mkfs_ext4() -> Option<String> {
    let find = || {
        ["mkfs.ext4", "/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
            .into_iter()
            .find(|p| output(Command::new(p).arg("-V")).is_some())
            .map(String::from)
    };
    if let Some(p) = find() {
        return Some(p);
    }
    eprintln!("xtask: mkfs.ext4 not found; installing Debian's e2fsprogs with apt-get");
    if !apt_install("e2fsprogs") {
        return None;
    }
    let found = find();
    if found.is_none() {
        eprintln!("xtask: mkfs.ext4 still not found after installing e2fsprogs");
    }
    found
}

/// Makes sure `binary` runs (`binary args` succeeds), installing Debian's
/// `package` with apt-get when it does not.
fn ensure_tool(binary: &str, args: &[&str], package: &str) -> bool {
    if output(Command::new(binary).args(args)).is_some() {
        return true;
    }
    eprintln!("xtask: {binary} not found; installing Debian's {package} with apt-get");
    apt_install(package) && {
        let found = output(Command::new(binary).args(args)).is_some();
        if !found {
            eprintln!("xtask: {binary} still not found after installing {package}");
        }
        found
    }
}

/// `apt-get install` of `package` (through sudo unless root).
fn apt_install(package: &str) -> bool {
    let is_root = output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0");
    let apt = |args: &[&str]| {
        let mut c = if is_root {
            Command::new("apt-get")
        } else {
            let mut s = Command::new("sudo");
            s.arg("apt-get");
            s
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut c)
    };
    apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "--no-install-recommends", package])
}
