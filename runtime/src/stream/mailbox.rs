//! The single-slot latest-value mailbox between ingest and the AI worker.
//!
//! [`Mailbox::put`] never blocks for longer than a mutex hand-over: it replaces
//! whatever is waiting (the older frame is dropped and counted) and wakes the
//! worker. [`Mailbox::take`] waits for a value, the close signal, or a timeout.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug)]
struct Slot<T> {
    value: Option<T>,
    closed: bool,
    dropped: u64,
}

/// A one-value mailbox that keeps only the newest value.
#[derive(Debug)]
pub struct Mailbox<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// What [`Mailbox::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Take<T> {
    /// The newest value.
    Value(T),
    /// Nothing arrived within the timeout.
    Empty,
    /// The mailbox is closed and empty.
    Closed,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Mailbox<T> {
    /// An empty, open mailbox.
    pub fn new() -> Self {
        Self {
            slot: Mutex::new(Slot {
                value: None,
                closed: false,
                dropped: 0,
            }),
            ready: Condvar::new(),
        }
    }

    // A panic while holding this lock cannot leave the slot inconsistent (every
    // critical section is a plain field update), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `value`, dropping (and returning) the value it replaces.
    pub fn put(&self, value: T) -> Option<T> {
        let old = {
            let mut s = self.lock();
            let old = s.value.replace(value);
            if old.is_some() {
                s.dropped += 1;
            }
            old
        };
        self.ready.notify_one();
        old
    }

    /// Takes the newest value, waiting at most `timeout`.
    pub fn take(&self, timeout: Duration) -> Take<T> {
        let s = self.lock();
        let (mut s, _) = self
            .ready
            .wait_timeout_while(s, timeout, |s| s.value.is_none() && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        match s.value.take() {
            Some(v) => Take::Value(v),
            None if s.closed => Take::Closed,
            None => Take::Empty,
        }
    }

    /// Closes the mailbox: takers drain the last value, then see `Closed`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// How many values were replaced before anyone took them.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn keeps_only_the_newest() {
        let m = Mailbox::new();
        assert_eq!(m.put(1), None);
        assert_eq!(m.put(2), Some(1));
        assert_eq!(m.put(3), Some(2));
        assert_eq!(m.dropped(), 2);
        assert_eq!(m.take(Duration::ZERO), Take::Value(3));
        assert_eq!(m.take(Duration::from_millis(1)), Take::Empty);
        m.put(4);
        m.close();
        assert_eq!(m.take(Duration::ZERO), Take::Value(4));
        assert_eq!(m.take(Duration::from_secs(5)), Take::Closed);
    }

    #[test]
    fn wakes_a_waiting_taker() {
        let m = Arc::new(Mailbox::new());
        let m2 = Arc::clone(&m);
        let t = std::thread::spawn(move || m2.take(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        m.put(9);
        assert_eq!(t.join().unwrap(), Take::Value(9));
    }
}
