//! Store integrity through real processes: the exact faults that made an earlier node start with
//! acknowledged jobs missing — a corrupted blob of the newest snapshot, bytes flipped in sled's
//! log, a truncated blob — after a `kill -9`. A node either recovers every acknowledged job or
//! refuses to start naming what was lost and the way out; with `--accept-data-loss` it starts,
//! records the loss, and never hands out a job id a client already holds.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use std::time::Duration;

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

#[test]
fn a_snapshot_saved_online_restores_into_an_empty_data_directory() {
    let node = TestNode::start(NodeOpts {
        workers: 1,
        slots: 2,
        ..Default::default()
    });
    node.wait_workers(1);
    let done: Vec<u64> = (0..5)
        .map(|i| node.submit(&["--name", &format!("done{i}")], &["true"]))
        .collect();
    for id in &done {
        node.wait_state(*id, "succeeded", Duration::from_secs(60));
    }
    let running = node.submit(&["--name", "long", "--retries", "1"], &["sleep", "300"]);
    node.wait_state(running, "running", Duration::from_secs(30));
    let held = node.submit(&["--name", "held", "--selector", "nowhere=true"], &["true"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.snap");
    let out = node.ok(&["operator", "snapshot", "save", &path_str(&file)]);
    assert!(out.contains("7 jobs"), "{out}");
    // The node keeps serving after the backup.
    let after = node.submit(&["--name", "after-backup"], &["true"]);
    node.wait_state(after, "succeeded", Duration::from_secs(60));
    let inspect = node.ok(&["operator", "snapshot", "inspect", &path_str(&file)]);
    assert!(inspect.contains("7 jobs"), "{inspect}");

    // A damaged copy is refused, naming the problem.
    let damaged = dir.path().join("damaged.snap");
    let mut b = std::fs::read(&file).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&damaged, b).unwrap();
    let mut target = TestNode::start(NodeOpts {
        workers: 1,
        slots: 2,
        ..Default::default()
    });
    target.stop();
    let data = path_str(&target.data_dir());
    let refused = target.run(&[
        "operator",
        "snapshot",
        "restore",
        &path_str(&damaged),
        "--data-dir",
        &data,
    ]);
    assert_ne!(exit_code(&refused), 0);
    assert!(
        stderr(&refused).contains("checksum"),
        "{}",
        stderr(&refused)
    );
    // Never over an existing store.
    let occupied = target.run(&[
        "operator",
        "snapshot",
        "restore",
        &path_str(&file),
        "--data-dir",
        &data,
    ]);
    assert_ne!(exit_code(&occupied), 0);
    assert!(
        stderr(&occupied).contains("already holds a store"),
        "{}",
        stderr(&occupied)
    );
    std::fs::remove_dir_all(target.data_dir().join("store")).unwrap();
    std::fs::remove_file(target.data_dir().join("store.watermark")).unwrap();
    let restored = target.ok(&[
        "operator",
        "snapshot",
        "restore",
        &path_str(&file),
        "--data-dir",
        &data,
    ]);
    assert!(restored.contains("7 jobs"), "{restored}");
    target.restart();
    let jobs = target.jobs();
    assert_eq!(jobs.len(), 7, "every job of the backup: {jobs:?}");
    for id in &done {
        assert_eq!(target.job(*id)["state"], "succeeded");
    }
    assert_eq!(target.job(held)["state"], "pending");
    // The attempt that was running when the backup was taken is retried on the new node.
    let r = target.wait_state(running, "running", Duration::from_secs(60));
    assert_eq!(r["attempts"], 2, "{r}");
    let next = target.submit(&["--name", "new"], &["true"]);
    assert!(next > held, "ids continue after the backup's: {next}");
    target.wait_state(next, "succeeded", Duration::from_secs(60));
}
