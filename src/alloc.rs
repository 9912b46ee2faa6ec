//! Tuning of mimalloc, the allocator shardcast's binaries use, so memory freed after a burst of connections goes back to the system.
//!
//! mimalloc keeps freed pages for `purge_delay` milliseconds (1,000 in the
//! mimalloc v3 the `mimalloc` crate builds; its header still says 10)
//! and purges only from within later calls into the allocator, so a core
//! that goes quiet after its connections close keeps their pages. The
//! `shardcast` server, after waves of 19,000 connections holding 85,000
//! subscriptions, kept 21.9-33.0 MiB of its 32-36 MiB peaks with the
//! default delay and 15-19 MiB with 10 ms; with 0, 7.5-7.9 MiB, but at
//! about 15% more CPU per delivery while fanning out. Binaries therefore
//! set a short delay ([`PURGE_DELAY_MS`]) and have each core collect its
//! thread's mimalloc heap when its connection table shrinks or empties,
//! which purges regardless of the delay: 6.7-7.6 MiB after each wave,
//! and 6.4-6.7 MiB once cores also make monoio give back its driver
//! table pages (see `settle_driver_tables` in `engine`).
//! They call [`purge_freed_memory_promptly`] first thing in `main`.

// Linked for its allocator and the option functions below, which the
// `mimalloc` crate does not re-export without its `extended` feature.
use mimalloc as _;

use std::sync::atomic::{AtomicBool, Ordering};

/// mimalloc's `mi_option_purge_delay` (same index in mimalloc v2 and v3).
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

extern "C" {
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
    fn mi_option_get(option: libc::c_int) -> libc::c_long;
    fn mi_collect(force: bool);
}

/// Whether cores collect mimalloc's thread heap when they empty. Off for
/// library users, whose allocator may not be mimalloc: collecting would
/// set up a mimalloc heap for nothing.
static COLLECT_WHEN_EMPTY: AtomicBool = AtomicBool::new(false);

/// The purge delay [`purge_freed_memory_promptly`] sets, in milliseconds.
/// Default: 10.
///
/// Measured with `loadgen fanout` (10,000 subscribers, 100 topics, one
/// server core; a contended 2-vCPU VM): 0 cost about 15% more server CPU
/// per delivery than mimalloc's 1,000 (pages freed and refilled within
/// milliseconds were returned and faulted back in), 10 no measurable
/// amount. Pages of a wave of closed connections go back either way: the
/// heap collection a core does when its connection table shrinks purges
/// them regardless of the delay.
pub const PURGE_DELAY_MS: i64 = 10;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`], unless the
/// `MIMALLOC_PURGE_DELAY` environment variable sets it already (an operator
/// or a benchmark comparing values keeps the last word), and makes every
/// core collect mimalloc's heap of its thread when it shrinks or empties
/// its connection table (at most once a second, from the core's ticker). Call it at the
/// start of `main`, before the server starts; only for a program whose
/// global allocator is `mimalloc::MiMalloc`.
pub fn purge_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set_purge_delay(PURGE_DELAY_MS);
    }
    COLLECT_WHEN_EMPTY.store(true, Ordering::Relaxed);
}

/// Called by a core that has just shrunk or emptied its connection table
/// (most of its connections are gone): returns the thread's cached free
/// pages when enabled.
pub(crate) fn core_emptied() {
    if COLLECT_WHEN_EMPTY.load(Ordering::Relaxed) {
        // SAFETY: mi_collect takes no pointer; it walks the calling
        // thread's own mimalloc heap and frees what is unused. Allocations
        // made through the global allocator are untouched.
        unsafe { mi_collect(true) };
    }
}

/// Sets mimalloc's purge delay in milliseconds (-1: never purge).
pub fn set_purge_delay(ms: i64) {
    // SAFETY: mi_option_set takes any option index below mimalloc's option
    // count and any value; it stores one word in mimalloc's option table,
    // which mimalloc reads with relaxed atomics from any thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms as libc::c_long) };
}

/// mimalloc's current purge delay in milliseconds.
pub fn purge_delay() -> i64 {
    // SAFETY: as in `set_purge_delay`; a read of the same option slot.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_is_set_and_read_back() {
        let before = purge_delay();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // mimalloc v3's default (options.c): a different value means
            // the option index moved and we would be setting another one.
            assert_eq!(before, 1000);
        }
        set_purge_delay(0);
        assert_eq!(purge_delay(), 0);
        set_purge_delay(before);
        assert_eq!(purge_delay(), before);
    }

    #[test]
    fn collecting_leaves_live_allocations_alone() {
        let keep: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 100]).collect();
        core_emptied(); // disabled: nothing happens
        COLLECT_WHEN_EMPTY.store(true, Ordering::Relaxed);
        core_emptied();
        assert!(keep
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|&b| b == i as u8)));
    }
}
