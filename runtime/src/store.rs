//! The durable store: an ordered journal of [`Command`]s and periodic snapshots of the
//! [`ControlState`], both in sled.
//!
//! Layout (trees of one sled database in `<data_dir>/store`):
//! * `meta`: `format_version` (u32 LE) — written once; a database of another version is refused.
//! * `journal`: key = index of the first entry of a batch (u64 BE), value = a record holding the
//!   batch's commands (the journal writer stores each group commit as one record).
//! * `snapshots`: `current` and `previous`, each a record holding the state as of an index.
//!
//! A record is `[format version u32 LE][crc32 u32 LE][index u64 LE][payload]`; the checksum covers
//! the index and the payload. Recovery takes the newest snapshot that passes its checksum and
//! decodes (falling back to the previous one), then replays the journal after it. The journal is
//! truncated only behind the *previous* snapshot, so the fallback can always replay.
//!
//! Durability: [`Store::append`] writes, [`Store::flush`] makes durable (fsync), then
//! [`Store::write_marks`] records the durable index in the acknowledgement watermark
//! (`<store>.watermark`, see [`watermark`]). Callers acknowledge nothing before both.
//!
//! Integrity: sled truncates its log at the first damaged record, so a damaged file can make it
//! open without the journal's tail. Recovery compares the end of the journal it could read with
//! the watermark and refuses to start when acknowledged entries are missing
//! ([`StoreError::DataLoss`]), unless the store was opened with `accept_data_loss`: then the
//! loss is reported in [`Recovered::loss`] (the control plane journals it) and the watermark's
//! ids keep new job and worker ids from reusing old ones.
//!
//! This is the seam the cluster issue replaces with a replicated log: [`Store::append`],
//! [`Store::entries_from`] and the snapshot calls are what a consensus log store needs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::control::{Command, ControlState};
use crate::error::StoreError;

pub mod backup;
pub mod watermark;

pub use watermark::{Marks, Watermark, WatermarkError};

/// On-disk format version of this build. Bump it whenever an encoded type changes shape.
pub const STORE_FORMAT_VERSION: u32 = 2;

const HEADER_LEN: usize = 16;
const KEY_FORMAT_VERSION: &[u8] = b"format_version";
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
const KEY_CURRENT: &[u8] = b"current";
const KEY_PREVIOUS: &[u8] = b"previous";

/// One journaled command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Position in the journal, from 1, without gaps.
    pub index: u64,
    /// The command.
    pub command: Command,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    created_at_ms: u64,
    state: ControlState,
}

/// Which snapshot slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSlot {
    /// The newest.
    Current,
    /// The one before.
    Previous,
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The rebuilt state.
    pub state: ControlState,
    /// Index of the last applied entry (0 = empty).
    pub last_index: u64,
    /// Index the snapshot used covered, if one was used.
    pub snapshot_index: Option<u64>,
    /// Entries replayed after the snapshot.
    pub replayed: u64,
    /// Problems that recovery worked around (e.g. a corrupt newest snapshot).
    pub warnings: Vec<String>,
    /// Acknowledged data that was lost and accepted as lost (only with `accept_data_loss`).
    pub loss: Option<DataLoss>,
}

/// Acknowledged data found missing at start-up and accepted as lost (`--accept-data-loss`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLoss {
    /// The highest index ever acknowledged (from the watermark; 0 when it was unreadable).
    pub acked_index: u64,
    /// Where the surviving journal ends.
    pub recovered_index: u64,
    /// The watermark's marks: new ids start above them.
    pub marks: Marks,
    /// What was found (for the journal and the log).
    pub what: String,
}

/// The sled-backed journal and snapshot store. One process per data directory (sled locks it).
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    journal: sled::Tree,
    snapshots: sled::Tree,
    watermark: std::sync::Mutex<Watermark>,
    /// The marks found at open (what recovery must reach).
    marks_at_open: Marks,
    accept_data_loss: bool,
    /// Problems found at open and accepted (with `accept_data_loss`).
    open_losses: Vec<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn encode_record(index: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    out.extend_from_slice(&STORE_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

enum RecordError {
    Version(u32),
    Corrupt(String),
}

fn decode_record(bytes: &[u8]) -> Result<(u64, &[u8]), RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Corrupt(format!(
            "record of {} bytes is shorter than its header",
            bytes.len()
        )));
    }
    let version = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if version != STORE_FORMAT_VERSION {
        return Err(RecordError::Version(version));
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let index = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    if h.finalize() != crc {
        return Err(RecordError::Corrupt("checksum mismatch".into()));
    }
    Ok((index, payload))
}

/// The sled settings of a store (every open of one directory must use the same mode).
fn sled_config(dir: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(Some(1000))
}

/// Whether a sled error means damaged files (rather than, say, a lock or a missing permission).
/// sled reports a damaged `conf` file as "unsupported" (as if an old sled version wrote it).
fn is_damage(e: &sled::Error) -> bool {
    match e {
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => true,
        sled::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, refusing data of another format version, damaged
    /// files and a missing watermark.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Self::open_with(dir, cache_bytes, false)
    }

    /// Like [`Store::open`]; with `accept_data_loss`, a store sled cannot open because its files
    /// are damaged is moved aside (to `<dir>.damaged-<unix ms>`) and a new one started, and a
    /// missing or unreadable watermark is recreated. Every such loss is reported by
    /// [`Store::recover`] in [`Recovered::loss`].
    pub fn open_with(
        dir: &Path,
        cache_bytes: u64,
        accept_data_loss: bool,
    ) -> Result<Store, StoreError> {
        let path = dir.to_path_buf();
        let p = path.display().to_string();
        let wm_path = Watermark::path_for(dir);
        let mut open_losses = Vec::new();
        let marks_on_disk = match Watermark::read(&wm_path) {
            Ok(m) => m,
            Err(WatermarkError::Corrupt { .. }) if accept_data_loss => {
                open_losses.push(format!(
                    "the acknowledgement watermark {} was unreadable",
                    wm_path.display()
                ));
                None
            }
            Err(e) => return Err(StoreError::Watermark(e.to_string())),
        };
        let db = match sled_config(dir, cache_bytes).open() {
            Ok(db) => db,
            Err(e) if is_damage(&e) && accept_data_loss => {
                let aside = PathBuf::from(format!(
                    "{}.damaged-{}",
                    p,
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or(0)
                ));
                std::fs::rename(dir, &aside).map_err(|io| StoreError::Sled {
                    path: p.clone(),
                    source: sled::Error::Io(io),
                })?;
                open_losses.push(format!(
                    "sled could not open the store ({e}); it was moved aside to {} and a new one started",
                    aside.display()
                ));
                sled_config(dir, cache_bytes)
                    .open()
                    .map_err(|source| StoreError::Sled {
                        path: p.clone(),
                        source,
                    })?
            }
            Err(e) if is_damage(&e) => {
                return Err(StoreError::Damaged {
                    path: p.clone(),
                    detail: format!("sled could not open it: {e}"),
                    acked: marks_on_disk.map_or(0, |m| m.index),
                });
            }
            Err(source) => return Err(StoreError::Sled { path: p, source }),
        };
        let sled_err = |source: sled::Error| {
            if is_damage(&source) {
                StoreError::Damaged {
                    path: p.clone(),
                    detail: format!("sled could not read it: {source}"),
                    acked: marks_on_disk.map_or(0, |m| m.index),
                }
            } else {
                StoreError::Sled {
                    path: p.clone(),
                    source,
                }
            }
        };
        let meta = db.open_tree("meta").map_err(sled_err)?;
        let journal = db.open_tree("journal").map_err(sled_err)?;
        let snapshots = db.open_tree("snapshots").map_err(sled_err)?;
        let empty = journal.is_empty() && snapshots.is_empty();
        match meta.get(KEY_FORMAT_VERSION).map_err(sled_err)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_le_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        path: p.clone(),
                        what: "format version".into(),
                        reason: format!("{} bytes instead of 4", v.len()),
                    })?;
                if found != STORE_FORMAT_VERSION {
                    return Err(StoreError::FormatVersion {
                        path: p,
                        found,
                        expected: STORE_FORMAT_VERSION,
                    });
                }
            }
            None => {
                if !empty {
                    return Err(StoreError::Corrupt {
                        path: p,
                        what: "format version".into(),
                        reason: "data present but no format version recorded".into(),
                    });
                }
                meta.insert(KEY_FORMAT_VERSION, &STORE_FORMAT_VERSION.to_le_bytes())
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
        }
        // The watermark must exist once the store holds data: a store with data and no
        // watermark cannot prove it holds everything it acknowledged.
        let marks_at_open = match marks_on_disk {
            Some(m) => m,
            None if empty => Marks::default(),
            None if accept_data_loss => {
                if open_losses.is_empty() {
                    open_losses.push(format!(
                        "the acknowledgement watermark {} was missing",
                        wm_path.display()
                    ));
                }
                Marks::default()
            }
            None => {
                return Err(StoreError::WatermarkMissing {
                    path: p,
                    watermark: wm_path.display().to_string(),
                });
            }
        };
        let watermark = if marks_on_disk.is_some() {
            Watermark::open_or_create(&wm_path, marks_at_open)
                .map(|(w, _)| w)
                .map_err(|e| StoreError::Watermark(e.to_string()))?
        } else {
            Watermark::create(&wm_path, marks_at_open)
                .map_err(|e| StoreError::Watermark(e.to_string()))?
        };
        Ok(Store {
            path,
            db,
            meta,
            journal,
            snapshots,
            watermark: std::sync::Mutex::new(watermark),
            marks_at_open,
            accept_data_loss,
            open_losses,
        })
    }

    /// Durably records the marks of what is now durable in the watermark (after
    /// [`Store::flush`], before anything it covers is acknowledged).
    pub fn write_marks(&self, marks: Marks) -> Result<(), StoreError> {
        self.watermark
            .lock()
            .expect("watermark lock")
            .write(marks)
            .map_err(|e| StoreError::Watermark(e.to_string()))
    }

    /// The marks last recorded in the watermark.
    pub fn marks(&self) -> Marks {
        self.watermark.lock().expect("watermark lock").marks()
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
        if is_damage(&source) {
            return StoreError::Damaged {
                path: self.path.display().to_string(),
                detail: format!("sled could not read it: {source}"),
                acked: self.marks_at_open.index,
            };
        }
        StoreError::Sled {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn corrupt(&self, what: impl Into<String>, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Sets the cluster id (restoring a backup keeps the id of the directory it came from).
    pub fn set_cluster_id(&self, id: &str) -> Result<(), StoreError> {
        if id.is_empty() {
            return Ok(());
        }
        self.meta
            .insert(KEY_CLUSTER_ID, id.as_bytes())
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// A random id generated once per data directory (labels resources this cluster owns).
    pub fn cluster_id(&self) -> Result<String, StoreError> {
        if let Some(v) = self
            .meta
            .get(KEY_CLUSTER_ID)
            .map_err(|e| self.sled_err(e))?
        {
            return Ok(String::from_utf8_lossy(&v).into_owned());
        }
        let id = format!(
            "{:016x}",
            crc32fast::hash(self.path.display().to_string().as_bytes()) as u64
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0))
                ^ ((std::process::id() as u64) << 32)
        );
        self.meta
            .insert(KEY_CLUSTER_ID, id.as_bytes())
            .map_err(|e| self.sled_err(e))?;
        Ok(id)
    }

    /// Appends entries — contiguous, ascending — as one record (not yet durable: call
    /// [`Store::flush`]).
    pub fn append(&self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(StoreError::Encode {
                what: format!("journal batch at entry {}", first.index),
                reason: "entries are not contiguous".into(),
            });
        }
        let commands: Vec<&Command> = entries.iter().map(|e| &e.command).collect();
        let payload = codec::encode(&commands).map_err(|err| StoreError::Encode {
            what: format!("journal batch at entry {}", first.index),
            reason: err.to_string(),
        })?;
        self.journal
            .insert(
                first.index.to_be_bytes(),
                encode_record(first.index, &payload),
            )
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Makes everything written so far durable (fsync). Returns the bytes flushed.
    pub fn flush(&self) -> Result<usize, StoreError> {
        self.db.flush().map_err(|e| self.sled_err(e))
    }

    fn decode_batch(&self, key: &[u8], value: &[u8]) -> Result<(u64, Vec<Command>), StoreError> {
        let key = u64::from_be_bytes(
            key.try_into()
                .map_err(|_| self.corrupt("journal key", "not 8 bytes"))?,
        );
        let what = format!("journal record at entry {key}");
        let (index, payload) = match decode_record(value) {
            Ok(x) => x,
            Err(RecordError::Version(found)) => {
                return Err(StoreError::FormatVersion {
                    path: self.path.display().to_string(),
                    found,
                    expected: STORE_FORMAT_VERSION,
                });
            }
            Err(RecordError::Corrupt(r)) => return Err(self.corrupt(what, r)),
        };
        if index != key {
            return Err(self.corrupt(what, format!("holds index {index}")));
        }
        let commands: Vec<Command> =
            codec::decode_store(payload).map_err(|e| self.corrupt(what, e.to_string()))?;
        Ok((index, commands))
    }

    /// Index of the last journal entry, if any.
    pub fn last_journal_index(&self) -> Result<Option<u64>, StoreError> {
        match self.journal.last().map_err(|e| self.sled_err(e))? {
            Some((k, v)) => {
                let (first, cmds) = self.decode_batch(&k, &v)?;
                Ok(Some(first + cmds.len() as u64 - 1))
            }
            None => Ok(None),
        }
    }

    /// Journal entries with index ≥ `from`, in order, verified.
    pub fn entries_from(&self, from: u64) -> Result<Vec<JournalEntry>, StoreError> {
        // Start at the record that contains `from` (the last one starting at or before it).
        let start = self
            .journal
            .range(..=from.to_be_bytes())
            .next_back()
            .transpose()
            .map_err(|e| self.sled_err(e))?
            .map(|(k, _)| k.to_vec())
            .unwrap_or_else(|| from.to_be_bytes().to_vec());
        let mut out = Vec::new();
        for kv in self.journal.range(start..) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let (first, cmds) = self.decode_batch(&k, &v)?;
            for (i, command) in cmds.into_iter().enumerate() {
                let index = first + i as u64;
                if index >= from {
                    out.push(JournalEntry { index, command });
                }
            }
        }
        Ok(out)
    }

    fn read_snapshot(&self, slot: SnapshotSlot) -> Result<Option<(u64, ControlState)>, String> {
        let key = match slot {
            SnapshotSlot::Current => KEY_CURRENT,
            SnapshotSlot::Previous => KEY_PREVIOUS,
        };
        let Some(bytes) = self.snapshots.get(key).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let (index, payload) = match decode_record(&bytes) {
            Ok(x) => x,
            Err(RecordError::Version(v)) => return Err(format!("version:{v}")),
            Err(RecordError::Corrupt(r)) => return Err(r),
        };
        let body: SnapshotBody = codec::decode_store(payload).map_err(|e| e.to_string())?;
        let mut state = body.state;
        state.rebuild_indices();
        Ok(Some((index, state)))
    }

    /// Writes a snapshot (a state encoded by [`Store::encode_state`]) as of journal index `index`, keeping the previous one, then
    /// truncates the journal behind the previous snapshot. Durable on return.
    pub fn write_snapshot(
        &self,
        state_payload: Vec<u8>,
        index: u64,
        created_at_ms: u64,
    ) -> Result<(), StoreError> {
        // The body is encoded as (created_at_ms, state) — the same layout as SnapshotBody.
        let mut payload = codec::encode(&created_at_ms).map_err(|e| StoreError::Encode {
            what: "snapshot".into(),
            reason: e.to_string(),
        })?;
        payload.extend_from_slice(&state_payload);
        let record = encode_record(index, &payload);
        let old = self
            .snapshots
            .get(KEY_CURRENT)
            .map_err(|e| self.sled_err(e))?;
        let mut batch = sled::Batch::default();
        let mut truncate_to = None;
        if let Some(old) = &old {
            if let Ok((old_index, _)) = decode_record(old) {
                truncate_to = Some(old_index);
            }
            batch.insert(KEY_PREVIOUS, old.as_ref());
        }
        batch.insert(KEY_CURRENT, record);
        self.snapshots
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        if let Some(upto) = truncate_to {
            // Remove the records that end at or before `upto`: every record starting at or
            // before `upto + 1` except the last of them (which may reach past `upto`).
            let keys: Vec<sled::IVec> = self
                .journal
                .range(..=(upto + 1).to_be_bytes())
                .keys()
                .collect::<Result<_, _>>()
                .map_err(|e| self.sled_err(e))?;
            let mut batch = sled::Batch::default();
            for k in keys.iter().take(keys.len().saturating_sub(1)) {
                batch.remove(k.clone());
            }
            self.journal
                .apply_batch(batch)
                .map_err(|e| self.sled_err(e))?;
        }
        Ok(())
    }

    /// Encodes a state for [`Store::write_snapshot`] (done by the caller so the state need not be
    /// cloned or shared with the writer).
    pub fn encode_state(state: &ControlState) -> Result<Vec<u8>, StoreError> {
        codec::encode(state).map_err(|e| StoreError::Encode {
            what: "snapshot".into(),
            reason: e.to_string(),
        })
    }

    /// Rebuilds the state: the newest valid snapshot, then the journal after it.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let mut warnings = Vec::new();
        let mut base: Option<(u64, ControlState)> = None;
        let mut any_snapshot = false;
        for slot in [SnapshotSlot::Current, SnapshotSlot::Previous] {
            match self.read_snapshot(slot) {
                Ok(Some(s)) => {
                    base = Some(s);
                    break;
                }
                Ok(None) => {}
                Err(e) if e.starts_with("version:") => {
                    return Err(StoreError::FormatVersion {
                        path: self.path.display().to_string(),
                        found: e[8..].parse().unwrap_or(0),
                        expected: STORE_FORMAT_VERSION,
                    });
                }
                Err(e) => {
                    any_snapshot = true;
                    warnings.push(format!(
                        "{slot:?} snapshot is unreadable ({e}); falling back to an older one"
                    ));
                }
            }
        }
        let (mut snapshot_index, mut state) = match base {
            Some((i, s)) => (Some(i), s),
            None => (None, ControlState::default()),
        };
        let mut broken: Option<String> = None;
        let mut last = snapshot_index.unwrap_or(0);
        let mut replayed = 0;
        if snapshot_index.is_none() && any_snapshot && self.first_journal_index()? > Some(1) {
            // Every snapshot is unreadable and the journal no longer starts at entry 1: the
            // journal alone cannot rebuild anything.
            broken = Some(
                "every snapshot is unreadable and the journal no longer starts at entry 1".into(),
            );
        } else {
            self.replay(&mut state, &mut last, &mut replayed, &mut broken)?;
        }
        let acked = self.marks_at_open.index;
        let wm = Watermark::path_for(&self.path).display().to_string();
        let mut what: Vec<String> = self.open_losses.clone();
        if let Some(b) = &broken {
            what.push(b.clone());
        }
        if last < acked {
            what.push(format!(
                "entries {} to {acked} were acknowledged but are missing",
                last + 1
            ));
        }
        if what.is_empty() {
            return Ok(Recovered {
                state,
                last_index: last,
                snapshot_index,
                replayed,
                warnings,
                loss: None,
            });
        }
        if !self.accept_data_loss {
            return Err(if last < acked {
                StoreError::DataLoss {
                    path: self.path.display().to_string(),
                    acked,
                    recovered: last,
                    watermark: wm,
                    detail: broken.unwrap_or_else(|| {
                        "the journal ends early: a damaged store file was cut short".into()
                    }),
                }
            } else {
                self.corrupt("journal", broken.unwrap_or_default())
            });
        }
        // Accepted: what could not be read goes; the journal continues after `last`.
        if broken.is_some() && snapshot_index.is_none() && last == 0 && any_snapshot {
            state = ControlState::default();
            snapshot_index = None;
        }
        self.drop_journal_after(last)?;
        Ok(Recovered {
            state,
            last_index: last,
            snapshot_index,
            replayed,
            warnings,
            loss: Some(DataLoss {
                acked_index: acked,
                recovered_index: last,
                marks: self.marks_at_open,
                what: what.join("; "),
            }),
        })
    }

    /// Index of the first journal entry, if any.
    fn first_journal_index(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .journal
            .first()
            .map_err(|e| self.sled_err(e))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Applies the journal entries after `*last` to `state`, stopping at the first record that
    /// cannot be read or does not follow on (described in `broken`).
    fn replay(
        &self,
        state: &mut ControlState,
        last: &mut u64,
        replayed: &mut u64,
        broken: &mut Option<String>,
    ) -> Result<(), StoreError> {
        let from = *last + 1;
        let begin = self
            .journal
            .range(..=from.to_be_bytes())
            .next_back()
            .transpose()
            .map_err(|e| self.sled_err(e))?
            .map(|(k, _)| k.to_vec())
            .unwrap_or_else(|| from.to_be_bytes().to_vec());
        for kv in self.journal.range(begin..) {
            let (first, cmds) = match kv
                .map_err(|e| self.sled_err(e))
                .and_then(|(k, v)| self.decode_batch(&k, &v))
            {
                Ok(x) => x,
                Err(StoreError::FormatVersion { .. }) => {
                    return Err(StoreError::FormatVersion {
                        path: self.path.display().to_string(),
                        found: 0,
                        expected: STORE_FORMAT_VERSION,
                    });
                }
                Err(e) => {
                    *broken = Some(format!("after entry {last}: {e}"));
                    return Ok(());
                }
            };
            for (i, command) in cmds.into_iter().enumerate() {
                let index = first + i as u64;
                if index < from {
                    continue;
                }
                if index != *last + 1 {
                    *broken = Some(format!(
                        "journal entry {} is missing (the next one found is {index})",
                        *last + 1
                    ));
                    return Ok(());
                }
                state.apply(&command).map_err(|r| StoreError::Replay {
                    index,
                    reason: r.to_string(),
                })?;
                *last = index;
                *replayed += 1;
            }
        }
        Ok(())
    }

    /// Removes every journal record after entry `last` (accepted data loss), durably.
    fn drop_journal_after(&self, last: u64) -> Result<(), StoreError> {
        let keys: Vec<sled::IVec> = self
            .journal
            .range((last + 1).to_be_bytes()..)
            .keys()
            .filter_map(Result::ok)
            .collect();
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        self.journal
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        // A record that starts at or before `last` but could not be read goes too.
        if let Some((k, v)) = self
            .journal
            .range(..=last.to_be_bytes())
            .next_back()
            .and_then(Result::ok)
            && self.decode_batch(&k, &v).is_err()
        {
            self.journal.remove(k).map_err(|e| self.sled_err(e))?;
        }
        self.flush()?;
        Ok(())
    }
}

/// Fault injection for tests: damage a closed store the way a crash or a disk could. Never
/// used by Hodei itself.
pub mod testing {
    use super::*;

    /// Retries `open` for up to 10 s: sled releases its file lock from a background thread
    /// after the last handle of a database is dropped.
    fn retry<T, E: std::fmt::Display>(
        what: &str,
        dir: &Path,
        open: impl Fn() -> Result<T, E>,
    ) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open() {
                Ok(v) => return v,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{what} {}: {e}", dir.display()),
            }
        }
    }

    /// Opens the raw sled database of a closed store.
    pub fn open_raw(dir: &Path) -> sled::Db {
        retry("open store for fault injection", dir, || {
            sled_config(dir, 8 << 20).open()
        })
    }

    /// Opens a store that was just closed in this process.
    pub fn reopen(dir: &Path) -> Store {
        retry("reopen store", dir, || Store::open(dir, 8 << 20))
    }

    /// Cuts the given snapshot record in half (as a torn write would).
    pub fn truncate_snapshot(dir: &Path, slot: SnapshotSlot) -> bool {
        let db = open_raw(dir);
        let t = db.open_tree("snapshots").expect("snapshots tree");
        let key = match slot {
            SnapshotSlot::Current => KEY_CURRENT,
            SnapshotSlot::Previous => KEY_PREVIOUS,
        };
        let Some(v) = t.get(key).expect("read snapshot") else {
            return false;
        };
        t.insert(key, &v[..v.len() / 2]).expect("write");
        db.flush().expect("flush");
        true
    }

    /// Flips one byte in the middle of the given snapshot's payload.
    pub fn corrupt_snapshot(dir: &Path, slot: SnapshotSlot) -> bool {
        let db = open_raw(dir);
        let t = db.open_tree("snapshots").expect("snapshots tree");
        let key = match slot {
            SnapshotSlot::Current => KEY_CURRENT,
            SnapshotSlot::Previous => KEY_PREVIOUS,
        };
        let Some(v) = t.get(key).expect("read snapshot") else {
            return false;
        };
        let mut v = v.to_vec();
        let mid = HEADER_LEN + (v.len() - HEADER_LEN) / 2;
        v[mid] ^= 0x5a;
        t.insert(key, v).expect("write");
        db.flush().expect("flush");
        true
    }

    /// Rewrites the recorded format version (to simulate data from another release).
    pub fn set_format_version(dir: &Path, version: u32) {
        let db = open_raw(dir);
        let t = db.open_tree("meta").expect("meta tree");
        t.insert(KEY_FORMAT_VERSION, &version.to_le_bytes())
            .expect("write");
        db.flush().expect("flush");
    }

    /// Which snapshot indices are present (current, previous).
    pub fn snapshot_indices(dir: &Path) -> (Option<u64>, Option<u64>) {
        let db = open_raw(dir);
        let t = db.open_tree("snapshots").expect("snapshots tree");
        let idx = |k: &[u8]| {
            t.get(k).ok().flatten().and_then(|v| {
                v.get(8..16)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            })
        };
        (idx(KEY_CURRENT), idx(KEY_PREVIOUS))
    }
}

#[cfg(test)]
mod tests;
