//! Running loom models the way every crate's `tests/loom_*.rs` does
//! (`--cfg loom` only).

/// Spawns a loom thread with a 1 MiB stack (loom's default is small, and
/// allocators under test are a few KiB moved around while built).
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> loom::thread::JoinHandle<T> {
    loom::thread::Builder::new().stack_size(1 << 20).spawn(f).expect("loom thread")
}

/// Explores `f` under loom with at most three preemptions per execution,
/// running the body in a spawned thread so it gets the large stack too.
pub fn model(f: fn()) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || spawn(f).join().expect("the model panicked"));
}
