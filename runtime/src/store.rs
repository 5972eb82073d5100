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
//! Durability: [`Store::append`] writes, [`Store::flush`] makes durable (fsync). Callers
//! acknowledge nothing before the flush that covers it.
//!
//! This is the seam the cluster issue replaces with a replicated log: [`Store::append`],
//! [`Store::entries_from`] and the snapshot calls are what a consensus log store needs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::control::{Command, ControlState};
use crate::error::StoreError;

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
}

/// The sled-backed journal and snapshot store. One process per data directory (sled locks it).
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    journal: sled::Tree,
    snapshots: sled::Tree,
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

impl Store {
    /// Opens (or creates) the store in `dir`, refusing data of another format version.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let path = dir.to_path_buf();
        let sled_err = |source| StoreError::Sled {
            path: path.display().to_string(),
            source,
        };
        let db = sled_config(dir, cache_bytes).open().map_err(sled_err)?;
        let meta = db.open_tree("meta").map_err(sled_err)?;
        let journal = db.open_tree("journal").map_err(sled_err)?;
        let snapshots = db.open_tree("snapshots").map_err(sled_err)?;
        match meta.get(KEY_FORMAT_VERSION).map_err(sled_err)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_le_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        path: path.display().to_string(),
                        what: "format version".into(),
                        reason: format!("{} bytes instead of 4", v.len()),
                    })?;
                if found != STORE_FORMAT_VERSION {
                    return Err(StoreError::FormatVersion {
                        path: path.display().to_string(),
                        found,
                        expected: STORE_FORMAT_VERSION,
                    });
                }
            }
            None => {
                if !journal.is_empty() || !snapshots.is_empty() {
                    return Err(StoreError::Corrupt {
                        path: path.display().to_string(),
                        what: "format version".into(),
                        reason: "data present but no format version recorded".into(),
                    });
                }
                meta.insert(KEY_FORMAT_VERSION, &STORE_FORMAT_VERSION.to_le_bytes())
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
        }
        Ok(Store {
            path,
            db,
            meta,
            journal,
            snapshots,
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
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
        let (snapshot_index, mut state) = match base {
            Some((i, s)) => (Some(i), s),
            None => (None, ControlState::default()),
        };
        let start = snapshot_index.unwrap_or(0) + 1;
        let entries = self.entries_from(start)?;
        if base_missing_but_truncated(any_snapshot, snapshot_index, &entries) {
            return Err(self.corrupt(
                "snapshots",
                "every snapshot is unreadable and the journal no longer starts at entry 1",
            ));
        }
        let mut last = start - 1;
        let mut replayed = 0;
        for e in entries {
            if e.index != last + 1 {
                return Err(self.corrupt(
                    format!("journal entry {}", e.index),
                    format!("gap: expected entry {}", last + 1),
                ));
            }
            state.apply(&e.command).map_err(|r| StoreError::Replay {
                index: e.index,
                reason: r.to_string(),
            })?;
            last = e.index;
            replayed += 1;
        }
        Ok(Recovered {
            state,
            last_index: last,
            snapshot_index,
            replayed,
            warnings,
        })
    }
}

fn base_missing_but_truncated(
    any_snapshot: bool,
    snapshot_index: Option<u64>,
    entries: &[JournalEntry],
) -> bool {
    snapshot_index.is_none() && any_snapshot && entries.first().is_some_and(|e| e.index != 1)
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
