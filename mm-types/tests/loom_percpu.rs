//! Loom model of the per-CPU cache protocol that `PerCpu` supports: CPUs
//! refill their cache from a shared pool and free into it, while another
//! context drains every cache back to the pool (the drain-all path before an
//! out-of-memory report). Nothing may be lost or duplicated, and the lock
//! order (cache, then pool) must not deadlock.
//!
//! The pinned mode has its own model: the owner uses its slot with no lock
//! while another CPU asks it to drain; the owner must honour the request at
//! its next access, see what the requester wrote before asking, and no
//! access of the two may race (loom tracks the slot's cell).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p mm-types --test loom_percpu`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use mm_types::percpu::{FixedCpu, PerCpu, Pinned, Pinning};
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

/// One alloc+free pair through a CPU's cache: refill one item from the pool
/// when empty, take it, put it back (so the cache keeps it, as a per-CPU
/// list does).
fn pair(cache: &mut Vec<u32>, pool: &Mutex<Vec<u32>>) {
    if cache.is_empty() {
        if let Some(x) = pool.lock().pop() {
            cache.push(x);
        }
    }
    if let Some(x) = cache.pop() {
        cache.push(x);
    }
}

#[test]
fn pinned_owner_honours_drain_requests() {
    loom::model(|| {
        let pool = Arc::new(Mutex::new(vec![1u32, 2, 3]));
        // SAFETY: in this model CPU 0 is the owner thread alone and CPU 1 the main thread alone,
        // each running one access at a time, and the final check runs after the join.
        let pinned = unsafe { Pinning::promise() };
        let caches: Arc<PerCpu<Vec<u32>, 2>> = Arc::new(PerCpu::with_pinning(pinned, |_| Vec::new()));
        // What the requester writes before asking (say, why it is short of memory), with no
        // synchronisation of its own: the request's release/acquire must order it.
        let reason = Arc::new(loom::cell::UnsafeCell::new(0u32));
        let posted = Arc::new(AtomicBool::new(false));
        let owner = {
            let (pool, caches, reason, posted) = (pool.clone(), caches.clone(), reason.clone(), posted.clone());
            loom::thread::spawn(move || {
                // SAFETY: as for `pinned`: this thread alone is CPU 0.
                let me = unsafe { Pinned::new(FixedCpu { cpu: 0, count: 2 }) };
                let mut honoured = false;
                for _ in 0..2 {
                    let request_was_posted = posted.load(Ordering::Acquire);
                    let mut cache = caches.current(&me);
                    if cache.take_drain_request() {
                        // SAFETY: read only after the request, which the requester posted after its
                        // one write; loom reports a race if the flag does not order them.
                        assert_eq!(reason.with(|r| unsafe { *r }), 7);
                        pool.lock().append(&mut cache);
                        honoured = true;
                    }
                    // A request posted before this access began is honoured by now.
                    assert!(honoured || !request_was_posted);
                    pair(&mut cache, &pool);
                }
            })
        };
        // The main thread is CPU 1: it works on its own cache, then asks CPU 0 to drain.
        // SAFETY: as for `pinned`: this thread alone is CPU 1.
        let me = unsafe { Pinned::new(FixedCpu { cpu: 1, count: 2 }) };
        pair(&mut caches.current(&me), &pool);
        // SAFETY: the owner reads `reason` only after taking the request posted below.
        reason.with_mut(|r| unsafe { *r = 7 });
        assert_eq!(caches.request_drain_others(&me), 1);
        posted.store(true, Ordering::Release);
        pair(&mut caches.current(&me), &pool);
        owner.join().unwrap();
        let mut all = pool.lock().clone();
        for cpu in 0..2 {
            // SAFETY: the owner thread was joined; this thread is CPU 1 and holds no guard.
            all.extend(unsafe { caches.cpu_quiescent(cpu) }.iter().copied());
        }
        all.sort();
        assert_eq!(all, vec![1, 2, 3]);
    });
}
