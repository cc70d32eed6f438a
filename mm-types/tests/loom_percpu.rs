//! Loom model of the per-CPU cache protocol that `PerCpu` supports: CPUs
//! refill their cache from a shared pool and free into it, while another
//! context drains every cache back to the pool (the drain-all path before an
//! out-of-memory report). Nothing may be lost or duplicated, and the lock
//! order (cache, then pool) must not deadlock.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p mm-types --test loom_percpu`.
#![cfg(loom)]

use loom::sync::Arc;
use mm_types::percpu::{FixedCpu, PerCpu};
use mm_types::sync::Mutex;

#[test]
fn refill_free_and_drain_conserve_items() {
    loom::model(|| {
        let pool = Arc::new(Mutex::new(vec![1u32, 2, 3]));
        let caches: Arc<PerCpu<Vec<u32>, 2>> = Arc::new(PerCpu::new(|_| Vec::new()));
        let workers: Vec<_> = (0..2)
            .map(|cpu| {
                let pool = pool.clone();
                let caches = caches.clone();
                loom::thread::spawn(move || {
                    let me = FixedCpu { cpu, count: 2 };
                    let item = {
                        let mut cache = caches.current(&me);
                        if cache.is_empty() {
                            if let Some(x) = pool.lock().pop() {
                                cache.push(x);
                            }
                        }
                        cache.pop()
                    };
                    if let Some(x) = item {
                        caches.current(&me).push(x);
                    }
                })
            })
            .collect();
        caches.for_each(|_, cache| pool.lock().append(cache));
        for w in workers {
            w.join().unwrap();
        }
        caches.for_each(|_, cache| pool.lock().append(cache));
        let mut all = pool.lock().clone();
        all.sort();
        assert_eq!(all, vec![1, 2, 3]);
    });
}

#[test]
fn shared_slot_when_cpu_ids_collide() {
    // Two contexts that report the same CPU (a migration race) still get
    // consistent updates, because each slot is locked.
    loom::model(|| {
        let counters: Arc<PerCpu<u32, 1>> = Arc::new(PerCpu::new(|_| 0));
        let t: Vec<_> = (0..2)
            .map(|_| {
                let c = counters.clone();
                loom::thread::spawn(move || *c.current(&FixedCpu { cpu: 0, count: 1 }) += 1)
            })
            .collect();
        for h in t {
            h.join().unwrap();
        }
        assert_eq!(*counters.cpu(0), 2);
    });
}
