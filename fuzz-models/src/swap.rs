//! mm-swap's model-based fuzz body.
//!
//! Random swap-out / fork-share / free / swap-in / uncache sequences with
//! injected write failures, read failures and corruption, on two areas of
//! different priority, against a model of every live slot's users, page
//! contents, cache state and corruption: every swap-in returns the page
//! that was written or an error (never other data), failed swap-outs leave
//! nothing allocated, counts and cache marks agree (`Swap::check`, every
//! fourth step and at the end), and
//! every frame comes back at the end (MODEL 1-6).

use std::vec::Vec;

use arbitrary::Arbitrary;
use mm_types::testkit::{MemStore, RefFrameProvider, SimPhysMemory};
use mm_types::{AllocFlags, FrameProvider, PhysAddr, PhysMemory, SwapSlot};

use mm_swap::{Swap, SwapConfig, SwapError, SwappedIn};

/// One step; `i` picks a live slot modulo their number.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Swap out a page filled with `fill`, mapped by `1 + users % 4`.
    Out {
        /// The page's byte.
        fill: u8,
        /// Mappers.
        users: u8,
        /// CPU (of 2).
        cpu: bool,
    },
    /// A fork: one more user.
    Dup(u8),
    /// A page table drops the slot.
    Free(u8),
    /// A fault on the slot.
    In(u8),
    /// Reclaim drops the slot's cached page.
    Uncache(u8),
    /// The next write of area `a % 2` fails.
    FailWrite(bool),
    /// The next read of area `a % 2` fails.
    FailRead(bool),
    /// A bit of the slot's stored page flips.
    Corrupt(u8, u16),
}

struct Live {
    slot: SwapSlot,
    users: u16,
    fill: u8,
    cached: Option<PhysAddr>,
    /// Bits flipped in the stored page (flipping one twice restores it).
    flipped: Vec<u16>,
}

impl Live {
    fn corrupt(&self) -> bool {
        !self.flipped.is_empty()
    }
}

fn fill_page(mem: &SimPhysMemory, f: PhysAddr, fill: u8) {
    let mut d = [fill; 4096];
    d[0] = fill ^ 0x5a;
    // SAFETY: the model owns the frame and nothing else touches it.
    unsafe { mem.write_bytes(f, &d) }.expect("simulated RAM");
}

fn holds(mem: &SimPhysMemory, f: PhysAddr, fill: u8) -> bool {
    let mut d = [0u8; 4096];
    // SAFETY: the frame is in the swap cache; nothing writes it.
    unsafe { mem.read_bytes(f, &mut d) }.expect("simulated RAM");
    d[0] == fill ^ 0x5a && d[1..].iter().all(|&b| b == fill)
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    let ops: Vec<Op> = crate::decode_ops(data, 400);
    let mem = SimPhysMemory::new(PhysAddr::new(0x10_0000).expect("aligned"), 1 << 20);
    let frames = RefFrameProvider::new(&mem);
    // Area 1 takes runs of slots in one request, as a disk does.
    let stores = [std::sync::Arc::new(MemStore::new(40)), std::sync::Arc::new(MemStore::new(600).with_max_run(4))];
    let swap = Swap::new(SwapConfig { cpus: 2, readahead: u32::from(data.first().copied().unwrap_or(0) % 4) });
    for (i, s) in stores.iter().enumerate() {
        // Area 0 has the higher priority and fills first.
        swap.add_area(std::boxed::Box::new(s.clone()), 1 - i as i16).expect("two areas fit");
    }
    let mut live: Vec<Live> = Vec::new();
    let pick = |live: &Vec<Live>, i: u8| if live.is_empty() { None } else { Some(usize::from(i) % live.len()) };
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Out { fill, users, cpu } => {
                let users = 1 + u16::from(users % 4);
                let f = frames.allocate_frame(AllocFlags::empty()).expect("1 MiB of frames");
                fill_page(&mem, f, fill);
                // SAFETY: the model owns the frame and does not write it.
                match unsafe { swap.swap_out(usize::from(cpu), f, users, &mem) } {
                    Ok(slot) => {
                        assert!(live.iter().all(|l| l.slot != slot), "slot {slot:?} handed out twice");
                        live.push(Live { slot, users, fill, cached: None, flipped: Vec::new() });
                    }
                    Err(SwapError::Store(_)) | Err(SwapError::Full) => {
                        // Nothing allocated for it; the page is intact.
                        assert!(holds(&mem, f, fill));
                    }
                    Err(e) => panic!("swap-out: {e}"),
                }
                frames.free_frame(f).expect("the model frees each frame once");
            }
            Op::Dup(i) => {
                if let Some(k) = pick(&live, i) {
                    swap.dup(live[k].slot).expect("a live slot");
                    live[k].users += 1;
                }
            }
            Op::Free(i) => {
                if let Some(k) = pick(&live, i) {
                    let got = swap.free(live[k].slot).expect("a live slot");
                    live[k].users -= 1;
                    if live[k].users == 0 {
                        assert_eq!(got, live[k].cached);
                        if let Some(f) = got {
                            frames.free_frame(f).expect("the model frees each frame once");
                        }
                        live.swap_remove(k);
                    } else {
                        assert_eq!(got, None);
                    }
                }
            }
            Op::In(i) => {
                if let Some(k) = pick(&live, i) {
                    let l = &mut live[k];
                    match swap.swap_in(l.slot, &frames, &mem) {
                        Ok(SwappedIn { frame: f, read: io }) => {
                            assert_eq!(io, l.cached.is_none());
                            assert!(l.cached.is_none_or(|c| c == f));
                            assert!(holds(&mem, f, l.fill), "slot {:?} came back with other data", l.slot);
                            assert!(!l.corrupt() || !io, "a corrupted slot was read without error");
                            l.cached = Some(f);
                        }
                        Err(SwapError::Corrupt(_)) => assert!(l.corrupt() && l.cached.is_none()),
                        Err(SwapError::Store(_)) => assert!(l.cached.is_none()),
                        Err(e) => panic!("swap-in: {e}"),
                    }
                    // Readahead may have cached neighbours: learn them.
                    for l in live.iter_mut() {
                        if l.cached.is_none() {
                            if let Some(f) = swap.lookup(l.slot) {
                                assert!(!l.corrupt(), "a corrupted slot was read ahead");
                                assert!(holds(&mem, f, l.fill));
                                l.cached = Some(f);
                            }
                        }
                    }
                }
            }
            Op::Uncache(i) => {
                if let Some(k) = pick(&live, i) {
                    let got = swap.uncache(live[k].slot).expect("a live slot");
                    assert_eq!(got, live[k].cached.take());
                    if let Some(f) = got {
                        frames.free_frame(f).expect("the model frees each frame once");
                    }
                }
            }
            Op::FailWrite(a) => stores[usize::from(a)].fail_nth_write(1),
            Op::FailRead(a) => stores[usize::from(a)].fail_nth_read(1),
            Op::Corrupt(i, bit) => {
                if let Some(k) = pick(&live, i) {
                    let s = live[k].slot;
                    let byte = bit % 4096;
                    stores[usize::from(s.area())].corrupt_slot(s.offset(), usize::from(byte));
                    let f = &mut live[k].flipped;
                    match f.iter().position(|&b| b == byte) {
                        Some(at) => {
                            f.swap_remove(at);
                        }
                        None => f.push(byte),
                    }
                }
            }
        }
        assert_eq!(swap.used_slots(), live.len() as u64);
        // Every step's results are checked above; the whole bookkeeping
        // every fourth step and at the end (a corruption persists until then).
        if step % 4 == 3 {
            swap.check().expect("swap bookkeeping");
        }
    }
    swap.check().expect("swap bookkeeping");
    for l in live {
        for u in 0..l.users {
            let got = swap.free(l.slot).expect("a live slot");
            if u + 1 == l.users {
                assert_eq!(got, l.cached);
                if let Some(f) = got {
                    frames.free_frame(f).expect("the model frees each frame once");
                }
            }
        }
    }
    assert_eq!(swap.used_slots(), 0);
    assert_eq!(frames.allocated_blocks(), 0, "frames leaked");
}

/// One step of the compressed-tier model; slots are taken modulo 12.
#[derive(Arbitrary, Debug, Clone)]
pub enum ZOp {
    /// Write a sample page (`kind % 3`: zero, text, random) to a slot.
    Write {
        /// The slot.
        slot: u8,
        /// The kind of page.
        kind: u8,
        /// Which page of that kind.
        seed: u8,
    },
    /// Read a slot.
    Read(u8),
    /// The slot was freed.
    Discard(u8),
    /// A shrinker writes back up to `n % 4` pages.
    WriteBack(u8),
    /// The store below fails every write (`true`) or none (`false`).
    FailBelow(bool),
}

/// The sample page of `kind` and `seed`, made once per process: the text
/// and random pages cost more to make than the compressed tier spends
/// storing them.
fn sample(kind: mm_types::testkit::PageSample, seed: u8) -> &'static [u8; mm_types::SLOT_SIZE] {
    use std::boxed::Box;
    use std::sync::OnceLock;
    static PAGES: [OnceLock<Box<[u8; mm_types::SLOT_SIZE]>>; 3 * 256] = [const { OnceLock::new() }; 3 * 256];
    let i = mm_types::testkit::PageSample::ALL.iter().position(|&k| k == kind).expect("one of the kinds");
    PAGES[i * 256 + usize::from(seed)].get_or_init(|| Box::new(kind.page(u64::from(seed))))
}

/// Runs one input against the compressed tier alone: every read of a slot
/// whose last write succeeded returns that page (pooled, written back or
/// written through), the pool never holds more than its limit, its
/// bookkeeping holds (`Compressed::check`, every fourth step and at the
/// end), and every write that reached
/// the store below is accounted for.
pub fn run_zswap(data: &[u8]) {
    use mm_swap::zswap::{Compressed, ZswapConfig};
    use mm_types::testkit::PageSample;
    use mm_types::{BackingStore, SLOT_SIZE};

    const SLOTS: u64 = 12;
    let limit = 1024 * (1 + usize::from(data.first().copied().unwrap_or(0) % 8));
    let ops: Vec<ZOp> = crate::decode_ops(data.get(1..).unwrap_or(&[]), 200);
    let z = Compressed::new(MemStore::new(SLOTS), ZswapConfig { pool_limit: limit, ..ZswapConfig::default() });
    // What each slot must read back as, if known.
    let mut model: [Option<(PageSample, u8)>; SLOTS as usize] = [None; SLOTS as usize];
    let mut failing = false;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            ZOp::Write { slot, kind, seed } => {
                let s = u64::from(slot) % SLOTS;
                let k = PageSample::ALL[usize::from(kind % 3)];
                let r = z.write_slot(s, sample(k, seed));
                assert!(r.is_ok() || failing, "a write failed with a working store below: {r:?}");
                // A failed write leaves the slot reading its last good one.
                if r.is_ok() {
                    model[s as usize] = Some((k, seed));
                }
            }
            ZOp::Read(slot) => {
                let s = u64::from(slot) % SLOTS;
                let mut buf = [0u8; SLOT_SIZE];
                let r = z.read_slot(s, &mut buf);
                if let Some((k, seed)) = model[s as usize] {
                    assert!(r.is_ok(), "reading slot {s}: {r:?}");
                    assert!(&buf == sample(k, seed), "slot {s} read back other data");
                }
            }
            ZOp::Discard(slot) => {
                let s = u64::from(slot) % SLOTS;
                z.discard(s);
                assert!(!z.is_pooled(s));
                model[s as usize] = None;
            }
            ZOp::WriteBack(n) => {
                let before = z.stats();
                let done = z.write_back(usize::from(n % 4));
                let after = z.stats();
                assert_eq!(after.written_back - before.written_back, done as u64);
                if !failing {
                    assert!(done == usize::from(n % 4) || after.pages == after.same_filled);
                }
            }
            ZOp::FailBelow(on) => {
                z.below().fail_writes(on);
                failing = on;
            }
        }
        let s = z.stats();
        assert!(s.pool_bytes <= limit as u64);
        assert_eq!(z.below().writes(), s.incompressible + s.pool_full + s.written_back + s.writeback_errors);
        // The pool's whole bookkeeping every fourth step and at the end.
        if step % 4 == 3 {
            z.check().expect("pool bookkeeping");
        }
    }
    z.check().expect("pool bookkeeping");
}
