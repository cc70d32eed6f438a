//! Links the kernel at 1 MiB with its own linker script, as a static
//! (non-PIE) executable so the 32-bit entry code can use absolute addresses.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-static");
    println!("cargo:rerun-if-changed=linker.ld");
}
