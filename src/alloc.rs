//! Tuning of mimalloc, the allocator shardcast's binaries use, so memory freed after a burst of connections goes back to the system.
//!
//! mimalloc keeps freed pages for `purge_delay` milliseconds (1,000 in the
//! mimalloc v3 the `mimalloc` crate builds; its header still says 10)
//! before returning them to the OS, and purges from within later calls into
//! the allocator. A core that goes quiet after its connections close
//! therefore keeps their pages: after 19,900 connections closed,
//! `examples/echo` held 18,008 KiB of its 19,612 KiB peak, against 6,572
//! KiB with `MIMALLOC_PURGE_DELAY=0`. Binaries call
//! [`purge_freed_memory_promptly`] first thing in `main`.

// Linked for its allocator and the option functions below, which the
// `mimalloc` crate does not re-export without its `extended` feature.
use mimalloc as _;

/// mimalloc's `mi_option_purge_delay` (same index in mimalloc v2 and v3).
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

extern "C" {
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
    fn mi_option_get(option: libc::c_int) -> libc::c_long;
}

/// The purge delay [`purge_freed_memory_promptly`] sets, in milliseconds:
/// freed pages go back to the OS at once. Default: 0.
pub const PURGE_DELAY_MS: i64 = 0;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`], unless the
/// `MIMALLOC_PURGE_DELAY` environment variable sets it already (an operator
/// or a benchmark comparing values keeps the last word). Call it at the
/// start of `main`, before other threads start; it only matters in a
/// program whose global allocator is `mimalloc::MiMalloc`.
pub fn purge_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set_purge_delay(PURGE_DELAY_MS);
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
}
