//! A process-wide budget for buffered message bytes.
//!
//! Verification needs the whole message in memory. Each message is capped by
//! `[limits] max_message_size`; this budget caps the sum over all messages in flight
//! (`[limits] max_buffered_total`), so memory stays bounded whatever the number of concurrent
//! connections. Bytes are charged as they arrive, never as the client announces them. A
//! message whose body does not fit is verified without it (its signatures "not evaluated"),
//! never by growing without bound.

use std::sync::atomic::{AtomicUsize, Ordering};

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Messages between MAIL FROM and their end (answer, abort or lost connection).
pub fn messages_in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// Counts one message in flight for as long as it lives.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    pub fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Default for InFlight {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes currently held by all [`Buffer`]s.
pub fn in_use() -> usize {
    IN_USE.load(Ordering::Relaxed)
}

/// A message buffer whose bytes are charged to the process-wide budget as they arrive.
#[derive(Debug)]
pub struct Buffer {
    data: Vec<u8>,
    charged: usize,
    total_limit: usize,
}

impl Buffer {
    /// An empty buffer. `size_hint` (the client's SIZE=, which the client chooses) only sizes
    /// the first allocation, and only when that much of the budget is free: it is never
    /// charged, so announcing sizes cannot take room from other messages.
    pub fn new(size_hint: usize, total_limit: usize) -> Buffer {
        let mut data = Vec::new();
        if size_hint <= total_limit.saturating_sub(in_use()) {
            let _ = data.try_reserve_exact(size_hint);
        }
        Buffer {
            data,
            charged: 0,
            total_limit,
        }
    }

    fn charge(&mut self, extra: usize) -> bool {
        let mut cur = IN_USE.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(extra).filter(|n| *n <= self.total_limit) else {
                return false;
            };
            match IN_USE.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.charged += extra;
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Append, charging the bytes first. False (and nothing appended) when the budget is
    /// exhausted or memory cannot be had.
    pub fn extend(&mut self, bytes: &[u8]) -> bool {
        if !self.charge(bytes.len()) {
            return false;
        }
        if self.data.try_reserve(bytes.len()).is_err() {
            return false;
        }
        self.data.extend_from_slice(bytes);
        true
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        IN_USE.fetch_sub(self.charged, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_enforced_and_released() {
        let limit = in_use() + 1000;
        let mut a = Buffer::new(100, limit);
        assert!(a.extend(&[1u8; 600]));
        let mut b = Buffer::new(100, limit);
        assert!(!b.extend(&[2u8; 600]), "over the total");
        assert!(b.extend(&[2u8; 100]));
        assert_eq!(a.len(), 600);
        drop(a);
        assert!(
            b.extend(&[2u8; 600]),
            "room again after the first buffer is gone"
        );
        drop(b);
        // Size hints are never charged: fifty buffers announcing a gigabyte take nothing.
        let limit = in_use() + 1000;
        let held: Vec<Buffer> = (0..50).map(|_| Buffer::new(1 << 30, limit)).collect();
        let mut c = Buffer::new(0, limit);
        assert!(c.extend(&[0u8; 900]), "announced sizes took the budget");
        drop(held);
    }
}
