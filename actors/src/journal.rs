//! The journal writer: a dedicated thread that appends journal entries to the store and makes
//! them durable in batches (group commit). The control plane hands it entries as it applies
//! commands; the writer drains everything queued, writes it as one record, and — when anyone is
//! waiting for durability (`sync`) — flushes once and reports the highest durable index.
//! Acknowledgements wait for that report. Entries nobody waits for are flushed with the next
//! sync (the control plane asks for one at least every second).
//!
//! It runs on its own OS thread because sled's flush is a blocking fsync.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use hodei_runtime::store::{JournalEntry, Marks, Store};

use crate::metrics::Metrics;

/// Most operations queued for the writer; beyond it the control plane waits (backpressure).
pub const WRITER_QUEUE_MAX: usize = 65_536;
/// Most entries written per flush.
pub const BATCH_ENTRIES_MAX: usize = 16_384;

/// Work for the writer.
pub enum WriterOp {
    /// Append entries (in index order); `sync`: make everything durable and report it.
    Append {
        /// The entries.
        entries: Vec<JournalEntry>,
        /// Flush after writing.
        sync: bool,
        /// The state's marks once these entries are applied (recorded in the watermark when
        /// they are durable).
        marks: Marks,
    },
    /// Make everything appended so far durable and report it.
    Sync,
    /// Write a snapshot of the state encoded at `index`.
    Snapshot {
        /// Encoded state.
        state: Vec<u8>,
        /// Index it covers.
        index: u64,
        /// When it was taken.
        at_ms: u64,
        /// The state's marks at `index`.
        marks: Marks,
    },
}

/// What the writer reports.
#[derive(Debug)]
pub enum WriterEvent {
    /// Everything up to `index` is durable.
    Durable {
        /// Highest durable index.
        index: u64,
    },
    /// The store failed; nothing after the last `Durable` is durable.
    Failed {
        /// The error.
        error: String,
    },
}

/// How the journal is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JournalMode {
    /// On the writer thread, with group commit (production).
    #[default]
    Threaded,
    /// Synchronously in the caller (tests under a paused clock, where no real thread may run
    /// concurrently with virtual time).
    Inline,
}

/// Handle to the writer; dropping it stops the thread after it drains its queue.
pub struct JournalWriter {
    tx: Option<SyncSender<WriterOp>>,
    thread: Option<JoinHandle<()>>,
    inline: Option<Inline>,
}

struct Inline {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    report: Box<dyn Fn(WriterEvent) + Send>,
    appended: u64,
    marks: Option<Marks>,
}

impl std::fmt::Debug for JournalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalWriter")
    }
}

impl JournalWriter {
    /// Starts the writer. `report` is called from the writer thread (or inline).
    pub fn start(
        mode: JournalMode,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        report: impl Fn(WriterEvent) + Send + 'static,
    ) -> Self {
        if mode == JournalMode::Inline {
            return Self {
                tx: None,
                thread: None,
                inline: Some(Inline {
                    store,
                    metrics,
                    report: Box::new(report),
                    appended: 0,
                    marks: None,
                }),
            };
        }
        let (tx, rx) = sync_channel(WRITER_QUEUE_MAX);
        let thread = std::thread::Builder::new()
            .name("hodei-journal".into())
            .spawn(move || run(store, metrics, rx, report))
            .expect("spawn journal writer thread");
        Self {
            tx: Some(tx),
            thread: Some(thread),
            inline: None,
        }
    }

    /// Queues an operation (blocks only when the queue is full).
    pub fn submit(&mut self, op: WriterOp) -> Result<(), String> {
        if let Some(i) = self.inline.as_mut() {
            let (r, sync) = match op {
                WriterOp::Append {
                    entries,
                    sync,
                    marks,
                } => {
                    if let Some(last) = entries.last() {
                        i.appended = i.appended.max(last.index);
                    }
                    i.marks = Some(marks);
                    i.metrics.journal_entries.inc_by(entries.len() as u64);
                    (i.store.append(&entries), sync)
                }
                WriterOp::Sync => (Ok(()), true),
                WriterOp::Snapshot {
                    state,
                    index,
                    at_ms,
                    marks,
                } => {
                    i.marks = Some(marks);
                    i.metrics.snapshots.inc();
                    (i.store.write_snapshot(state, index, at_ms), true)
                }
            };
            let marks = i.marks;
            match r.and_then(|_| {
                if sync {
                    i.store.flush()?;
                    if let Some(m) = marks {
                        i.store.write_marks(m)?;
                    }
                }
                Ok(())
            }) {
                Ok(()) if sync => (i.report)(WriterEvent::Durable { index: i.appended }),
                Ok(()) => {}
                Err(e) => {
                    (i.report)(WriterEvent::Failed {
                        error: e.to_string(),
                    });
                    return Err(e.to_string());
                }
            }
            return Ok(());
        }
        let tx = self.tx.as_ref().ok_or("journal writer stopped")?;
        match tx.try_send(op) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(op)) => tx.send(op).map_err(|_| "journal writer stopped".into()),
            Err(TrySendError::Disconnected(_)) => Err("journal writer stopped".into()),
        }
    }

    /// Stops the thread after it has written everything queued.
    pub fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    rx: Receiver<WriterOp>,
    report: impl Fn(WriterEvent),
) {
    let mut failed = false;
    let mut appended = 0u64;
    let mut marks: Option<Marks> = None;
    while let Ok(first) = rx.recv() {
        if failed {
            continue;
        }
        let mut ops = vec![first];
        let mut entries = match &ops[0] {
            WriterOp::Append { entries, .. } => entries.len(),
            _ => 0,
        };
        while entries < BATCH_ENTRIES_MAX {
            match rx.try_recv() {
                Ok(op) => {
                    if let WriterOp::Append { entries: e, .. } = &op {
                        entries += e.len();
                    }
                    ops.push(op);
                }
                Err(_) => break,
            }
        }
        // All appends of the batch become one record; a snapshot is written after the entries
        // it covers.
        let mut result = Ok(());
        let mut sync = false;
        let mut pending: Vec<JournalEntry> = Vec::with_capacity(entries);
        for op in ops {
            match op {
                WriterOp::Append {
                    entries: mut e,
                    sync: s,
                    marks: m,
                } => {
                    if let Some(last) = e.last() {
                        appended = appended.max(last.index);
                    }
                    marks = Some(m);
                    sync |= s;
                    pending.append(&mut e);
                }
                WriterOp::Sync => sync = true,
                WriterOp::Snapshot {
                    state,
                    index,
                    at_ms,
                    marks: m,
                } => {
                    marks = Some(m);
                    metrics.journal_entries.inc_by(pending.len() as u64);
                    result = store
                        .append(&std::mem::take(&mut pending))
                        .and_then(|_| store.write_snapshot(state, index, at_ms));
                    metrics.snapshots.inc();
                    sync = true;
                    if result.is_err() {
                        break;
                    }
                }
            }
        }
        if result.is_ok() && !pending.is_empty() {
            metrics.journal_entries.inc_by(pending.len() as u64);
            result = store.append(&pending);
        }
        if result.is_ok() && !sync {
            continue;
        }
        let result = result.and_then(|_| {
            let t = Instant::now();
            store.flush()?;
            // The watermark follows the flush and precedes every acknowledgement it covers.
            if let Some(m) = marks {
                store.write_marks(m)?;
            }
            metrics
                .journal_flush_seconds
                .observe(t.elapsed().as_secs_f64());
            Ok(())
        });
        match result {
            Ok(_) => {
                metrics.journal_batch_entries.observe(entries as f64);
                if appended > 0 {
                    report(WriterEvent::Durable { index: appended });
                }
            }
            Err(e) => {
                failed = true;
                report(WriterEvent::Failed {
                    error: e.to_string(),
                });
            }
        }
    }
}
