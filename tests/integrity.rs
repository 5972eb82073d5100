//! Store integrity through real processes: the exact faults that made an earlier node start with
//! acknowledged jobs missing — a corrupted blob of the newest snapshot, bytes flipped in sled's
//! log, a truncated blob — after a `kill -9`. A node either recovers every acknowledged job or
//! refuses to start naming what was lost and the way out; with `--accept-data-loss` it starts,
//! records the loss, and never hands out a job id a client already holds.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Jobs acknowledged before the fault.
const JOBS: usize = 120;

/// A node with no workers (every job stays pending, so the state changes only by submissions),
/// snapshots every 50 entries, and job specs large enough (≈ 1.6 KiB each) that the snapshots
/// are stored as sled blobs.
fn node_with_acknowledged_jobs() -> (TestNode, Vec<u64>) {
    let node = TestNode::start(NodeOpts {
        workers: 0,
        snapshot_every: 50,
        ..Default::default()
    });
    let pad = format!("PAD={}", "x".repeat(1500));
    let ids: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (node, pad) = (&node, &pad);
                s.spawn(move || {
                    (0..JOBS / 4)
                        .map(|i| {
                            node.submit(&["--name", &format!("j{t}-{i}"), "--env", pad], &["true"])
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("submitter"))
            .collect()
    });
    assert_eq!(ids.len(), JOBS);
    (node, ids)
}

fn store_dir(node: &TestNode) -> PathBuf {
    node.data_dir().join("store")
}

/// sled's blob files, oldest first (named by log sequence number).
fn blobs(store: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(store.join("blobs"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.parse::<u64>().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// The newest blob holding a snapshot record (the `snapshots` tree's page: it carries the
/// keys `current` / `previous`).
fn newest_snapshot_blob(store: &Path) -> PathBuf {
    blobs(store)
        .into_iter()
        .rev()
        .find(|p| {
            let b = std::fs::read(p).unwrap_or_default();
            b.windows(7).any(|w| w == b"current")
        })
        .unwrap_or_else(|| {
            panic!(
                "no snapshot blob in {} (blobs: {:?})",
                store.display(),
                blobs(store)
            )
        })
}

fn flip_bytes(path: &Path, at: usize, n: usize) {
    let mut b = std::fs::read(path).expect("read file to damage");
    assert!(
        b.len() > at + n,
        "{} is too short to damage",
        path.display()
    );
    for x in &mut b[at..at + n] {
        *x ^= 0xa5;
    }
    std::fs::write(path, b).expect("write damaged file");
}

/// What restarting after the fault gave: the node either starts with every acknowledged job
/// or refuses with the data-loss message. Returns whether it refused.
fn restart_checks_every_acknowledged_job(node: &mut TestNode, ids: &[u64], fault: &str) -> bool {
    match node.try_restart(&[]) {
        Ok(()) => {
            let present: std::collections::BTreeSet<u64> = node
                .jobs()
                .iter()
                .filter_map(|j| j["id"].as_u64())
                .collect();
            let missing: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|i| !present.contains(i))
                .collect();
            assert!(
                missing.is_empty(),
                "{fault}: the node started without acknowledged jobs {missing:?}\n{}",
                tail(&node.log(), 40)
            );
            eprintln!("{fault}: the node recovered every acknowledged job");
            false
        }
        Err((status, log)) => {
            eprintln!(
                "{fault}: the node refused to start: {}",
                log.lines()
                    .rev()
                    .find(|l| l.contains("hodei:"))
                    .unwrap_or("")
            );
            assert!(
                log.contains("Refusing to start") && log.contains("--accept-data-loss"),
                "{fault}: the node exited ({status}) without the data-loss message:\n{}",
                tail(&log, 40)
            );
            true
        }
    }
}

/// After a refusal: `--accept-data-loss` starts the node, the loss is logged, and a new job gets
/// an id above every id handed out before.
fn accept_and_check_ids_are_not_reused(node: &mut TestNode, ids: &[u64], fault: &str) {
    node.try_restart(&["--accept-data-loss"])
        .unwrap_or_else(|(s, log)| {
            panic!(
                "{fault}: --accept-data-loss did not start the node ({s}):\n{}",
                tail(&log, 40)
            )
        });
    assert!(
        node.log().contains("accepting data loss"),
        "{fault}: the accepted loss is logged"
    );
    let max = *ids.iter().max().unwrap();
    let new = node.submit(&["--name", "after-loss"], &["true"]);
    assert!(
        new > max,
        "{fault}: job id {new} was handed out again (ids up to {max} were acknowledged)"
    );
    // And the next start is normal: the loss was recorded, the watermark follows the journal.
    node.restart();
    let again = node.submit(&["--name", "after-restart"], &["true"]);
    assert!(again > new, "{fault}: {again} after {new}");
}

#[test]
fn a_corrupted_blob_of_the_newest_snapshot_never_loses_acknowledged_jobs_silently() {
    let (mut node, ids) = node_with_acknowledged_jobs();
    node.kill9();
    let blob = newest_snapshot_blob(&store_dir(&node));
    let len = std::fs::metadata(&blob).unwrap().len() as usize;
    flip_bytes(&blob, len / 2, 16);
    if restart_checks_every_acknowledged_job(&mut node, &ids, "corrupt snapshot blob") {
        accept_and_check_ids_are_not_reused(&mut node, &ids, "corrupt snapshot blob");
    }
}

#[test]
fn a_truncated_blob_never_loses_acknowledged_jobs_silently() {
    let (mut node, ids) = node_with_acknowledged_jobs();
    node.kill9();
    let blob = newest_snapshot_blob(&store_dir(&node));
    let len = std::fs::metadata(&blob).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    if restart_checks_every_acknowledged_job(&mut node, &ids, "truncated blob") {
        accept_and_check_ids_are_not_reused(&mut node, &ids, "truncated blob");
    }
}

#[test]
fn bytes_flipped_in_the_middle_of_sleds_log_never_lose_acknowledged_jobs_silently() {
    let (mut node, ids) = node_with_acknowledged_jobs();
    node.kill9();
    let log = store_dir(&node).join("db");
    let len = std::fs::metadata(&log).unwrap().len() as usize;
    flip_bytes(&log, len / 2, 8);
    if restart_checks_every_acknowledged_job(&mut node, &ids, "flipped log bytes") {
        accept_and_check_ids_are_not_reused(&mut node, &ids, "flipped log bytes");
    }
}

#[test]
fn a_missing_watermark_is_refused_and_accepted_only_on_request() {
    let (mut node, ids) = node_with_acknowledged_jobs();
    node.stop();
    std::fs::remove_file(node.data_dir().join("store.watermark")).unwrap();
    let (_, log) = node
        .try_restart(&[])
        .expect_err("a store without its watermark is refused");
    assert!(
        log.contains("watermark") && log.contains("missing"),
        "{log}"
    );
    node.try_restart(&["--accept-data-loss"]).unwrap();
    assert_eq!(node.jobs().len(), ids.len(), "nothing was lost here");
}
