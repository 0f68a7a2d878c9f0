//! A process-wide budget for buffered message bytes.
//!
//! Verification needs the whole message in memory. Each message is capped by
//! `[limits] max_message_size`; this budget caps the sum over all messages in flight
//! (`[limits] max_buffered_total`), so memory stays bounded whatever the number of concurrent
//! connections. A message that does not fit is handled as oversize (`on_oversize`), never by
//! growing without bound.

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

/// A message buffer whose capacity is charged to the process-wide budget.
#[derive(Debug)]
pub struct Buffer {
    data: Vec<u8>,
    charged: usize,
    total_limit: usize,
}

impl Buffer {
    /// A buffer with room for `want` bytes, if the budget allows (else a smaller start).
    pub fn new(want: usize, total_limit: usize) -> Option<Buffer> {
        let mut b = Buffer {
            data: Vec::new(),
            charged: 0,
            total_limit,
        };
        if !b.charge(want) && !b.charge(want.min(64 * 1024)) {
            return None;
        }
        b.data.reserve_exact(b.charged);
        Some(b)
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

    /// Append, growing the charge first. False (and nothing appended) when the budget is
    /// exhausted.
    pub fn extend(&mut self, bytes: &[u8]) -> bool {
        let needed = self.data.len() + bytes.len();
        if needed > self.charged {
            // Grow the charge geometrically, like Vec does, but never past what is needed x2.
            let extra = (needed - self.charged).max(self.charged.min(8 << 20));
            if !self.charge(extra) && !self.charge(needed - self.charged) {
                return false;
            }
            self.data.reserve_exact(self.charged - self.data.len());
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
        let mut a = Buffer::new(100, limit).unwrap();
        assert!(a.extend(&[1u8; 600]));
        let mut b = Buffer::new(100, limit).unwrap();
        assert!(!b.extend(&[2u8; 600]), "over the total");
        assert!(b.extend(&[2u8; 100]));
        assert_eq!(a.len(), 600);
        drop(a);
        assert!(
            b.extend(&[2u8; 600]),
            "room again after the first buffer is gone"
        );
    }
}
