//! The daemon's budget for buffered message bytes, and its count of messages in flight.
//!
//! Verification needs the whole message in memory. Each message is capped by
//! `[limits] max_message_size`; the budget caps the sum over all messages in flight
//! (`[limits] max_buffered_total`), so memory stays bounded whatever the number of concurrent
//! connections. Bytes are charged as they arrive, never as the client announces them. A
//! message whose body does not fit is verified without it (its signatures "not evaluated"),
//! never by growing without bound.
//!
//! One [`Budget`] lives as long as the daemon (a reload must not double the bound); each
//! configuration snapshot shares it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Budget {
    in_use: AtomicUsize,
    in_flight: AtomicUsize,
    drained: Notify,
}

impl Budget {
    /// Bytes currently held by all buffers.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Messages between MAIL FROM and their end (answer, abort or lost connection).
    pub fn messages_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count one message in flight for as long as the guard lives.
    pub fn message(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Wait until no message is in flight, for at most `grace`; returns how many still are.
    pub async fn drained(&self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left = self.messages_in_flight();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.messages_in_flight();
            }
        }
    }

    /// An empty buffer. `size_hint` (the client's SIZE=, which the client chooses) only sizes
    /// the first allocation, and only when that much of `limit` is free: it is never charged,
    /// so announcing sizes cannot take room from other messages.
    pub fn buffer(self: &Arc<Self>, size_hint: usize, limit: usize) -> Buffer {
        let mut data = Vec::new();
        if size_hint <= limit.saturating_sub(self.in_use()) {
            let _ = data.try_reserve_exact(size_hint);
        }
        Buffer {
            data,
            charged: 0,
            limit,
            budget: self.clone(),
        }
    }
}

/// Counts one message in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Budget>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// A message buffer whose bytes are charged to the budget as they arrive.
#[derive(Debug)]
pub struct Buffer {
    data: Vec<u8>,
    charged: usize,
    limit: usize,
    budget: Arc<Budget>,
}

impl Buffer {
    fn charge(&mut self, extra: usize) -> bool {
        let in_use = &self.budget.in_use;
        let mut cur = in_use.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(extra).filter(|n| *n <= self.limit) else {
                return false;
            };
            match in_use.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
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
        self.budget
            .in_use
            .fetch_sub(self.charged, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_enforced_and_released() {
        let budget = Arc::new(Budget::default());
        let mut a = budget.buffer(100, 1000);
        assert!(a.extend(&[1u8; 600]));
        let mut b = budget.buffer(100, 1000);
        assert!(!b.extend(&[2u8; 600]), "over the total");
        assert!(b.extend(&[2u8; 100]));
        assert_eq!(a.len(), 600);
        drop(a);
        assert!(
            b.extend(&[2u8; 600]),
            "room again after the first buffer is gone"
        );
        drop(b);
        assert_eq!(budget.in_use(), 0);
        // Size hints are never charged: fifty buffers announcing a gigabyte take nothing.
        let held: Vec<Buffer> = (0..50).map(|_| budget.buffer(1 << 30, 1000)).collect();
        let mut c = budget.buffer(0, 1000);
        assert!(c.extend(&[0u8; 900]), "announced sizes took the budget");
        drop(held);
    }

    #[tokio::test]
    async fn draining_waits_for_messages_in_flight() {
        let budget = Arc::new(Budget::default());
        assert_eq!(budget.drained(Duration::from_millis(1)).await, 0);
        let m = budget.message();
        assert_eq!(budget.drained(Duration::from_millis(20)).await, 1);
        let waiter = {
            let b = budget.clone();
            tokio::spawn(async move { b.drained(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        drop(m);
        assert_eq!(waiter.await.unwrap(), 0);
    }
}
