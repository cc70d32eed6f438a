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
    if output(Command::new("qemu-system-x86_64").arg("--version")).is_some() {
        return true;
    }
    eprintln!("xtask: qemu-system-x86_64 not found; installing Debian's qemu-system-x86 with apt-get");
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
    apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"]) && {
        let found = output(Command::new("qemu-system-x86_64").arg("--version")).is_some();
        if !found {
            eprintln!("xtask: qemu-system-x86_64 still not found after installing");
        }
        found
    }
}
