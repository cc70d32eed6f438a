//! The one byte of metadata per frame.
//!
//! Every managed frame belongs to exactly one block (free, cached per CPU, or
//! allocated); the block's first frame (its head) records what the block is
//! and its order, and every other frame is a tail (zero). So a region can be
//! walked block by block from its first frame, and a free can check in one
//! byte whether it names an allocated block of the right order.
//!
//! | byte | meaning |
//! |---|---|
//! | `0x00` | tail of a block |
//! | `0b100m_oooo`-ish: `0x80 \| mobility << 5 \| order` | head of a free block on the buddy list of that mobility |
//! | `0x40 \| order` | head of an allocated block |
//! | `0x60 \| order` | head of a block held in a per-CPU list |
//!
//! The order takes the low five bits, so the encoding is unambiguous only
//! for orders up to [`MAX_ORDER_LIMIT`] (20): `0x40 | 32` would read as
//! "cached, order 0". Every constructor debug-asserts it, and the checked free
//! refuses an order above `max_order` before it builds a byte from it.

#![deny(unsafe_code)]

use crate::zone::MAX_ORDER_LIMIT;

/// A tail frame (not the head of a block).
pub(crate) const TAIL: u8 = 0;

const FREE: u8 = 0x80;
const ALLOCATED: u8 = 0x40;
const CACHED: u8 = 0x60;
const ORDER_MASK: u8 = 0x1f;

/// What a frame's byte says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameState {
    Tail,
    Free { order: u8, mobility: usize },
    Allocated { order: u8 },
    Cached { order: u8 },
}

pub(crate) const fn free(order: u8, mobility: usize) -> u8 {
    debug_assert!(order <= MAX_ORDER_LIMIT, "order does not fit the state byte");
    FREE | ((mobility as u8) << 5) | order
}

pub(crate) const fn allocated(order: u8) -> u8 {
    debug_assert!(order <= MAX_ORDER_LIMIT, "order does not fit the state byte");
    ALLOCATED | order
}

pub(crate) const fn cached(order: u8) -> u8 {
    debug_assert!(order <= MAX_ORDER_LIMIT, "order does not fit the state byte");
    CACHED | order
}

pub(crate) const fn decode(b: u8) -> FrameState {
    if b & FREE != 0 {
        FrameState::Free { order: b & ORDER_MASK, mobility: ((b >> 5) & 3) as usize }
    } else if b & CACHED == CACHED {
        FrameState::Cached { order: b & ORDER_MASK }
    } else if b & ALLOCATED != 0 {
        FrameState::Allocated { order: b & ORDER_MASK }
    } else {
        FrameState::Tail
    }
}

/// Order of the block whose head byte is `b` (0 for a tail).
pub(crate) const fn head_order(b: u8) -> u8 {
    b & ORDER_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for order in 0..=20u8 {
            for m in 0..3 {
                assert_eq!(decode(free(order, m)), FrameState::Free { order, mobility: m });
            }
            assert_eq!(decode(allocated(order)), FrameState::Allocated { order });
            assert_eq!(decode(cached(order)), FrameState::Cached { order });
            assert_eq!(head_order(cached(order)), order);
        }
        assert_eq!(decode(TAIL), FrameState::Tail);
    }

    #[test]
    fn every_state_up_to_the_order_limit_has_its_own_byte() {
        let mut seen = std::collections::BTreeSet::from([TAIL]);
        for order in 0..=MAX_ORDER_LIMIT {
            for b in [allocated(order), cached(order), free(order, 0), free(order, 1), free(order, 2)] {
                assert!(seen.insert(b), "byte {b:#x} (order {order}) is shared by two states");
            }
        }
    }
}
