//! Online backups (`hodei operator snapshot save`): the control plane hands over its state as
//! of a durable index, the gateway writes it as a checksummed backup file under
//! `<data_dir>/backups/` and clients read it back in chunks. At most [`BACKUPS_KEPT`] files are
//! kept; older ones are removed when a new one is taken.

use std::path::{Path, PathBuf};

use hodei_runtime::store::backup;
use ractor::ActorRef;

use crate::context::NodeContext;
use crate::control_plane::ControlPlaneMsg;
use crate::gateway::{CONTROL_TIMEOUT_MS, ask};
use crate::wire::{
    ApiError, ApiErrorKind, ClientReply, ClientResponse, SNAPSHOT_READ_BYTES_MAX, SnapshotInfo,
};

/// Backup files kept on the node.
pub const BACKUPS_KEPT: usize = 2;
/// Suffix of backup files.
pub const SUFFIX: &str = ".hodei-snapshot";

fn dir(ctx: &NodeContext) -> PathBuf {
    ctx.config.node.data_dir.join("backups")
}

/// Takes a backup into a new file on the node.
pub async fn save(ctx: &NodeContext, control: &ActorRef<ControlPlaneMsg>) -> ClientReply {
    let state = ask(
        control,
        |reply| ControlPlaneMsg::Backup { reply },
        CONTROL_TIMEOUT_MS,
    )
    .await??;
    let dir = dir(ctx);
    let cluster_id = ctx.cluster_id.clone();
    tokio::task::spawn_blocking(move || {
        let (bytes, info) = backup::encode(
            &state.payload,
            state.index,
            state.at_ms,
            &state.marks,
            &cluster_id,
        );
        let name = format!("backup-{}-{}{SUFFIX}", state.index, state.at_ms);
        let io = |e: std::io::Error| ApiError::unavailable(format!("writing the backup: {e}"));
        std::fs::create_dir_all(&dir).map_err(io)?;
        backup::write_file(&dir.join(&name), &bytes).map_err(io)?;
        prune(&dir, &name);
        Ok(ClientResponse::SnapshotSaved(SnapshotInfo {
            name,
            bytes: bytes.len() as u64,
            index: info.index,
            jobs: state.jobs,
            workers: state.workers,
            sha256: info.sha256,
            created_at_ms: info.created_at_ms,
        }))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// Removes all but the newest [`BACKUPS_KEPT`] backup files (never `keep`).
fn prune(dir: &Path, keep: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            (n.ends_with(SUFFIX) || n.ends_with(".partial")) && n != keep
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(BACKUPS_KEPT - 1);
    for (_, p) in files.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

/// Reads part of a backup file.
pub async fn read(ctx: &NodeContext, name: String, offset: u64, max_bytes: u32) -> ClientReply {
    if name.contains('/') || name.contains("..") || !name.ends_with(SUFFIX) {
        return Err(ApiError::new(
            ApiErrorKind::InvalidRequest,
            format!("invalid backup name {name:?}"),
        ));
    }
    let path = dir(ctx).join(&name);
    let max = max_bytes.clamp(1, SNAPSHOT_READ_BYTES_MAX) as usize;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path).map_err(|e| {
            ApiError::new(
                ApiErrorKind::NotFound,
                format!("no backup {name:?} on this node ({e}); take a new one"),
            )
        })?;
        let total_bytes = f
            .metadata()
            .map_err(|e| ApiError::internal(e.to_string()))?
            .len();
        f.seek(SeekFrom::Start(offset.min(total_bytes)))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut data = Vec::with_capacity(max.min(total_bytes.saturating_sub(offset) as usize));
        f.take(max as u64)
            .read_to_end(&mut data)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(ClientResponse::SnapshotChunk { data, total_bytes })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}
