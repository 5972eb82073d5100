//! Backups of the control-plane state (`hodei operator snapshot save|restore`), as etcd's and
//! Nomad's snapshot commands offer: one file holding the whole state as of a durable journal
//! index, checksummed, restorable offline into an empty data directory.
//!
//! File layout (little-endian):
//! ```text
//! magic "HODEIBK1" | store format version u32 | reserved u32 | index u64 | created_at_ms u64
//! | marks: next_job_id u64, epoch u64, worker_seq_max u64 | cluster id: len u32 + bytes
//! | payload len u64 | sha256 of everything before it and of the payload (32 bytes) | payload
//! ```
//! The payload is the state as [`Store::encode_state`] encodes it (the same bytes a snapshot
//! holds), so a backup is exactly a snapshot plus what a new data directory needs around it.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Marks, STORE_FORMAT_VERSION, Store};
use crate::codec;
use crate::control::ControlState;
use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"HODEIBK1";
/// Longest cluster id accepted in a backup header.
const CLUSTER_ID_MAX: usize = 256;

/// What a backup file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The journal index the state is as of.
    pub index: u64,
    /// When it was taken.
    pub created_at_ms: u64,
    /// Ids handed out up to then (restored into the new watermark).
    pub marks: Marks,
    /// The cluster id of the data directory it came from.
    pub cluster_id: String,
    /// Bytes of state.
    pub payload_bytes: u64,
    /// Hex SHA-256 over header and payload.
    pub sha256: String,
}

/// A verified backup.
#[derive(Debug)]
pub struct Backup {
    /// Its header.
    pub info: BackupInfo,
    /// The state.
    pub state: ControlState,
    /// The encoded state (written into the new store as its snapshot).
    pub payload: Vec<u8>,
}

fn header(index: u64, created_at_ms: u64, marks: &Marks, cluster_id: &str, len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(96 + cluster_id.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&STORE_FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    for v in [
        index,
        created_at_ms,
        marks.next_job_id,
        marks.epoch,
        marks.worker_seq_max,
    ] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&(cluster_id.len() as u32).to_le_bytes());
    h.extend_from_slice(cluster_id.as_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Encodes a backup of `payload` (a state encoded by [`Store::encode_state`]) as of `index`.
pub fn encode(
    payload: &[u8],
    index: u64,
    created_at_ms: u64,
    marks: &Marks,
    cluster_id: &str,
) -> (Vec<u8>, BackupInfo) {
    let cluster_id = &cluster_id[..cluster_id.len().min(CLUSTER_ID_MAX)];
    let head = header(
        index,
        created_at_ms,
        marks,
        cluster_id,
        payload.len() as u64,
    );
    let digest = Sha256::new()
        .chain_update(&head)
        .chain_update(payload)
        .finalize();
    let mut out = Vec::with_capacity(head.len() + 32 + payload.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&digest);
    out.extend_from_slice(payload);
    let info = BackupInfo {
        index,
        created_at_ms,
        marks: Marks { index, ..*marks },
        cluster_id: cluster_id.to_string(),
        payload_bytes: payload.len() as u64,
        sha256: hex(&digest),
    };
    (out, info)
}

fn bad(path: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_string(),
        what: "backup".into(),
        reason: reason.into(),
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let s = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| bad(self.path, format!("truncated: {} bytes", self.bytes.len())))?;
        self.at += n;
        Ok(s)
    }
}

/// Decodes and verifies a backup (magic, format version, checksum, state).
pub fn decode(bytes: &[u8], path: &str) -> Result<Backup, StoreError> {
    let mut c = Cursor { bytes, at: 0, path };
    let mut take = |n: usize| c.take(n);
    if take(8)? != MAGIC {
        return Err(bad(path, "not a hodei snapshot backup (bad magic)"));
    }
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let version = u32_at(take(4)?);
    if version != STORE_FORMAT_VERSION {
        return Err(StoreError::FormatVersion {
            path: path.to_string(),
            found: version,
            expected: STORE_FORMAT_VERSION,
        });
    }
    take(4)?;
    let mut v = [0u64; 5];
    for x in &mut v {
        *x = u64_at(take(8)?);
    }
    let id_len = u32_at(take(4)?) as usize;
    if id_len > CLUSTER_ID_MAX {
        return Err(bad(path, format!("cluster id of {id_len} bytes")));
    }
    let cluster_id = String::from_utf8_lossy(take(id_len)?).into_owned();
    let len = u64_at(take(8)?);
    let digest = take(32)?.to_vec();
    let head_end = c.at - 32;
    let payload = bytes.get(c.at..).unwrap_or_default();
    if payload.len() as u64 != len {
        return Err(bad(
            path,
            format!(
                "truncated: the state should be {len} bytes, {} found",
                payload.len()
            ),
        ));
    }
    let actual = Sha256::new()
        .chain_update(&bytes[..head_end])
        .chain_update(payload)
        .finalize();
    if actual.as_slice() != digest.as_slice() {
        return Err(bad(path, "checksum mismatch: the file is damaged"));
    }
    let mut state: ControlState =
        codec::decode_store(payload).map_err(|e| bad(path, format!("state: {e}")))?;
    state.rebuild_indices();
    let [index, created_at_ms, next_job_id, epoch, worker_seq_max] = v;
    Ok(Backup {
        info: BackupInfo {
            index,
            created_at_ms,
            marks: Marks {
                index,
                next_job_id,
                epoch,
                worker_seq_max,
            },
            cluster_id,
            payload_bytes: len,
            sha256: hex(&digest),
        },
        state,
        payload: payload.to_vec(),
    })
}

/// Reads and verifies a backup file.
pub fn read(path: &Path) -> Result<Backup, StoreError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| bad(&p, format!("cannot read it: {e}")))?;
    decode(&bytes, &p)
}

/// Writes `bytes` to `path` durably: a temporary file beside it, synced, then renamed.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Restores a verified backup into `store_dir`, which must not hold a store yet: the state
/// becomes the store's snapshot as of the backup's index, the cluster id is kept, and the
/// watermark records the backup's marks. Durable on return.
pub fn restore(store_dir: &Path, backup: &Backup, cache_bytes: u64) -> Result<(), StoreError> {
    let p = store_dir.display().to_string();
    let occupied = std::fs::read_dir(store_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
        || super::Watermark::path_for(store_dir).exists();
    if occupied {
        return Err(StoreError::Corrupt {
            path: p,
            what: "restore target".into(),
            reason: "the data directory already holds a store; restore only into an empty data directory \
                     (move the old one aside first)"
                .into(),
        });
    }
    let store = Store::open(store_dir, cache_bytes)?;
    store.set_cluster_id(&backup.info.cluster_id)?;
    store.write_snapshot(
        backup.payload.clone(),
        backup.info.index,
        backup.info.created_at_ms,
    )?;
    store.flush()?;
    store.write_marks(backup.info.marks)?;
    Ok(())
}
