//! The discrete-event core: virtual time in milliseconds, a queue ordered by `(time, seq)` (ties
//! in insertion order, so nothing depends on hashing or addresses), and the event log whose
//! FNV-1a hash identifies a run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Events waiting for their time, popped in `(time, seq)` order.
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(u64, u64, Slot<E>)>>,
    seq: u64,
}

/// Wrapper so the payload never takes part in the ordering.
#[derive(Debug)]
struct Slot<E>(E);

impl<E> PartialEq for Slot<E> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<E> Eq for Slot<E> {}
impl<E> PartialOrd for Slot<E> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Slot<E> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `at_ms`.
    pub fn push(&mut self, at_ms: u64, event: E) {
        self.seq += 1;
        self.heap.push(Reverse((at_ms, self.seq, Slot(event))));
    }

    /// The time of the next event.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The next event and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|Reverse((t, _, Slot(e)))| (t, e))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// No event waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// The event log: every line is folded into a 64-bit FNV-1a hash as it is written; the lines
/// themselves are kept only when asked (tests, `--out` with a small run).
#[derive(Debug, Clone)]
pub struct EventLog {
    hash: u64,
    lines: u64,
    kept: Option<Vec<String>>,
}

impl EventLog {
    /// A log that keeps its lines when `keep` (up to `LINES_KEPT_MAX`).
    pub fn new(keep: bool) -> EventLog {
        EventLog {
            hash: FNV_OFFSET,
            lines: 0,
            kept: keep.then(Vec::new),
        }
    }

    /// Appends one line (`"<time_ms> <what>"`).
    pub fn record(&mut self, at_ms: u64, line: std::fmt::Arguments<'_>) {
        let text = format!("{at_ms} {line}");
        for b in text.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
        self.lines += 1;
        if let Some(k) = &mut self.kept
            && k.len() < LINES_KEPT_MAX
        {
            k.push(text);
        }
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The hash as 16 hex digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash)
    }

    /// Lines written.
    pub fn len(&self) -> u64 {
        self.lines
    }

    /// Nothing written.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The kept lines (empty unless kept).
    pub fn lines(&self) -> &[String] {
        self.kept.as_deref().unwrap_or(&[])
    }
}

/// Most log lines kept in memory.
pub const LINES_KEPT_MAX: usize = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pop_in_time_then_insertion_order() {
        let mut q = EventQueue::default();
        q.push(5, "c");
        q.push(1, "a");
        q.push(5, "d");
        q.push(1, "b");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(1, "a"), (1, "b"), (5, "c"), (5, "d")]);
    }

    #[test]
    fn the_log_hash_depends_on_every_line() {
        let mut a = EventLog::new(true);
        let mut b = EventLog::new(false);
        a.record(1, format_args!("x"));
        b.record(1, format_args!("x"));
        assert_eq!(a.hash(), b.hash());
        b.record(2, format_args!("y"));
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.lines(), ["1 x"]);
    }
}
