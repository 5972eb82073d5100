//! `hodei operator`: operations on a node's data — backups of the control-plane state, as etcd's
//! and Nomad's `snapshot save|restore` offer.

use std::path::PathBuf;

use clap::Subcommand;
use hodei_config::Config;
use hodei_runtime::store::backup;

use crate::{Conn, Failure, connect};

/// `hodei operator` subcommands.
#[derive(Subcommand)]
pub enum OperatorCmd {
    /// Backups of the control-plane state.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
}

/// `hodei operator snapshot` subcommands.
#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Take a consistent backup of a running node's state (every acknowledged job and worker,
    /// as of a durable journal index) and write it to FILE, checksummed and verified. The node
    /// keeps running. Job output (logs) is not part of it.
    Save {
        #[command(flatten)]
        conn: Conn,
        /// Where to write the backup.
        file: PathBuf,
    },
    /// Restore a backup into an EMPTY data directory, with no node running on it (offline).
    /// The node started on it then has every job and worker of the backup; attempts that were
    /// running are retried per their policy (or fail "worker lost: node restarted").
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The node's config (its [node] data_dir is restored into) ...
        #[arg(
            long,
            conflicts_with = "data_dir",
            required_unless_present = "data_dir"
        )]
        config: Option<PathBuf>,
        /// ... or the data directory itself.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Verify a backup file and print what it holds.
    Inspect {
        /// The backup file.
        file: PathBuf,
    },
}

fn describe(file: &std::path::Path, b: &backup::Backup) -> String {
    format!(
        "{}: state as of journal index {} ({} jobs, {} workers; next job id {}), cluster {}, {} bytes of state, sha256 {}",
        file.display(),
        b.info.index,
        b.state.jobs.len(),
        b.state.workers.len(),
        b.state.next_job_id,
        b.info.cluster_id,
        b.info.payload_bytes,
        b.info.sha256
    )
}

/// Runs an operator command.
pub async fn run(cmd: OperatorCmd) -> Result<u8, Failure> {
    let OperatorCmd::Snapshot { cmd } = cmd;
    match cmd {
        SnapshotCmd::Save { conn, file } => {
            let client = connect(&conn).await?;
            let info = client.save_snapshot(&file).await?;
            println!(
                "saved {}: state as of journal index {} ({} jobs, {} workers), {} bytes, sha256 {}",
                file.display(),
                info.index,
                info.jobs,
                info.workers,
                info.bytes,
                info.sha256
            );
            Ok(0)
        }
        SnapshotCmd::Inspect { file } => {
            let b = backup::read(&file).map_err(Failure::other)?;
            println!("{}", describe(&file, &b));
            Ok(0)
        }
        SnapshotCmd::Restore {
            file,
            config,
            data_dir,
        } => {
            let (data_dir, cache_bytes) = match (config, data_dir) {
                (Some(c), _) => {
                    let c = Config::load(&c).map_err(|e| Failure::usage(e.to_string()))?;
                    (c.node.data_dir.clone(), c.store.cache_bytes)
                }
                (None, Some(d)) => (d, 64 << 20),
                (None, None) => return Err(Failure::usage("give --config or --data-dir")),
            };
            let b = backup::read(&file).map_err(Failure::other)?;
            let store_dir = hodei_actors::node::store_path(&data_dir);
            std::fs::create_dir_all(&data_dir).map_err(|e| {
                Failure::other(format!("data directory {}: {e}", data_dir.display()))
            })?;
            tokio::task::spawn_blocking(move || {
                backup::restore(&store_dir, &b, cache_bytes).map(|()| b)
            })
            .await
            .map_err(|e| Failure::other(e.to_string()))?
            .map(|b| {
                println!(
                    "restored into {}: {}",
                    data_dir.display(),
                    describe(&file, &b)
                );
            })
            .map_err(Failure::other)?;
            Ok(0)
        }
    }
}
