//! Making monoio give back the driver table pages a wave of connections grew, once a core empties.

use std::io::Write;

/// Below this many connections at peak, the driver's tables left over are
/// small (under 100 KiB) and not worth [`settle_driver_tables`].
pub(super) const SETTLE_MIN_PEAK: usize = 4096;

/// Makes monoio give back the table pages a wave of connections grew.
///
/// monoio keeps in-flight operations (io_uring) or registered descriptors
/// (epoll) in a table of pages that double in size (64, 128, ... slots).
/// It frees a page only on every 2,048th removal from the table, and then
/// only the highest page, if it is empty. A core whose connections have all
/// closed makes no more removals, so the pages grown for its peak (about
/// 600 KiB for 19,000 connections) stay until connections come back: the
/// core's memory after a wave depends on where the last close fell in
/// that cycle. This issues throw-away operations, each one insertion and
/// one removal on either driver (a readiness poll of a fresh socket pair
/// that is already readable), enough for every page above the first to
/// reach its turn: 2,048 per page, about 20,000 for 19,000 connections,
/// a few tens of milliseconds, only when a core has just emptied after a
/// peak of at least [`SETTLE_MIN_PEAK`]. Returns the operations completed.
pub(super) async fn settle_driver_tables(peak: usize) -> usize {
    // Page i holds 64 << i slots, so slot k is on page
    // log2((k + 64) >> 7) + 1 (0 for k < 64); the highest slot is peak - 1.
    let top = (usize::BITS - ((peak.max(1) - 1 + 64) >> 7).leading_zeros()) as usize;
    let pages = top + 1;
    let mut done = 0;
    for _ in 0..pages * 2048 {
        let Ok((a, b)) = std::os::unix::net::UnixStream::pair() else {
            break;
        };
        if (&b).write(&[0]).is_err() || a.set_nonblocking(true).is_err() {
            break;
        }
        let Ok(a) = monoio::net::UnixStream::from_std(a) else {
            break;
        };
        if a.readable(false).await.is_err() {
            break;
        }
        done += 1;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle_on<D: monoio::Driver>(mut rt: monoio::Runtime<D>) {
        // 4,096 slots span pages 0-6: seven pages' turns.
        assert_eq!(rt.block_on(settle_driver_tables(SETTLE_MIN_PEAK)), 7 * 2048);
        assert_eq!(rt.block_on(settle_driver_tables(19_000)), 9 * 2048);
    }

    #[test]
    fn settling_completes_every_operation_on_io_uring() {
        if !monoio::utils::detect_uring() {
            return;
        }
        settle_on(
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .build()
                .unwrap(),
        );
    }

    #[test]
    fn settling_completes_every_operation_on_epoll() {
        settle_on(
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .build()
                .unwrap(),
        );
    }
}
