use super::*;
use crate::error::StoreError;
use crate::ids::{JobId, NodeId};
use crate::job::JobSpec;
use crate::store::Marks;

fn submit(i: u64) -> Command {
    Command::SubmitJob {
        id: JobId(i + 1),
        spec: Box::new(JobSpec::shell(format!("echo {i}"))),
        at_ms: i,
    }
}

fn started() -> Command {
    Command::NodeStarted {
        node: NodeId::new("n").unwrap(),
        at_ms: 0,
    }
}

/// Journals `cmds` as entries from `first`, applying them to `state`.
fn journal(store: &Store, state: &mut ControlState, first: u64, cmds: Vec<Command>) -> u64 {
    let mut entries = vec![];
    let mut i = first;
    for c in cmds {
        state.apply(&c).unwrap();
        entries.push(JournalEntry {
            index: i,
            command: c,
        });
        i += 1;
    }
    store.append(&entries).unwrap();
    store.flush().unwrap();
    i - 1
}

#[test]
fn journal_survives_a_reopen_and_replays_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = ControlState::default();
    {
        let s = Store::open(dir.path(), 8 << 20).unwrap();
        let mut cmds = vec![started()];
        cmds.extend((0..10).map(submit));
        journal(&s, &mut st, 1, cmds);
    }
    let s = testing::reopen(dir.path());
    let r = s.recover().unwrap();
    assert_eq!(r.last_index, 11);
    assert_eq!(r.replayed, 11);
    assert_eq!(r.state.jobs.len(), 10);
    assert_eq!(
        codec::encode(&r.state).unwrap(),
        codec::encode(&st).unwrap()
    );
}

#[test]
fn snapshots_truncate_the_journal_behind_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), 8 << 20).unwrap();
    let mut st = ControlState::default();
    let i1 = journal(&s, &mut st, 1, vec![started(), submit(0), submit(1)]);
    s.write_snapshot(Store::encode_state(&st).unwrap(), i1, 1)
        .unwrap();
    let i2 = journal(&s, &mut st, i1 + 1, vec![submit(2), submit(3)]);
    s.write_snapshot(Store::encode_state(&st).unwrap(), i2, 2)
        .unwrap();
    // Entries up to the previous snapshot (i1) are gone; later ones stay for the fallback.
    let left: Vec<u64> = s.entries_from(0).unwrap().iter().map(|e| e.index).collect();
    assert_eq!(left, vec![i1 + 1, i1 + 2]);
    let i3 = journal(&s, &mut st, i2 + 1, vec![submit(4)]);
    let r = s.recover().unwrap();
    assert_eq!(r.snapshot_index, Some(i2));
    assert_eq!(r.last_index, i3);
    assert_eq!(r.state.jobs.len(), 5);
}

#[test]
fn a_corrupt_or_truncated_newest_snapshot_falls_back_to_the_previous_one() {
    for damage in [testing::truncate_snapshot, testing::corrupt_snapshot] {
        let dir = tempfile::tempdir().unwrap();
        let mut st = ControlState::default();
        {
            let s = Store::open(dir.path(), 8 << 20).unwrap();
            let i1 = journal(&s, &mut st, 1, vec![started(), submit(0)]);
            s.write_snapshot(Store::encode_state(&st).unwrap(), i1, 1)
                .unwrap();
            let i2 = journal(&s, &mut st, i1 + 1, vec![submit(1), submit(2)]);
            s.write_snapshot(Store::encode_state(&st).unwrap(), i2, 2)
                .unwrap();
            journal(&s, &mut st, i2 + 1, vec![submit(3)]);
        }
        assert!(damage(dir.path(), SnapshotSlot::Current));
        let s = testing::reopen(dir.path());
        let r = s.recover().unwrap();
        assert_eq!(
            r.snapshot_index,
            Some(2),
            "fell back to the previous snapshot"
        );
        assert_eq!(r.state.jobs.len(), 4, "and replayed the journal after it");
        assert!(
            r.warnings[0].contains("Current snapshot is unreadable"),
            "{:?}",
            r.warnings
        );
        assert_eq!(
            codec::encode(&r.state).unwrap(),
            codec::encode(&st).unwrap()
        );
    }
}

#[test]
fn data_of_another_format_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), 8 << 20).unwrap();
        let mut st = ControlState::default();
        journal(&s, &mut st, 1, vec![started()]);
    }
    testing::set_format_version(dir.path(), 99);
    // (sled may still be releasing its lock from the earlier handle: wait that out.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let err = loop {
        match Store::open(dir.path(), 8 << 20) {
            Err(StoreError::Sled { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => break e.to_string(),
            Ok(_) => panic!("a store of another format version was opened"),
        }
    };
    assert!(err.contains("format version 99"), "{err}");
    assert!(
        err.contains(&format!("only version {STORE_FORMAT_VERSION}")),
        "{err}"
    );
}

#[test]
fn a_corrupt_journal_entry_is_an_error_not_silently_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), 8 << 20).unwrap();
        let mut st = ControlState::default();
        journal(&s, &mut st, 1, vec![started(), submit(0)]);
    }
    {
        let db = testing::open_raw(dir.path());
        let t = db.open_tree("journal").unwrap();
        let mut v = t.get(1u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let n = v.len();
        v[n - 1] ^= 1;
        t.insert(1u64.to_be_bytes(), v).unwrap();
        db.flush().unwrap();
    }
    let s = testing::reopen(dir.path());
    let err = s.recover().unwrap_err().to_string();
    assert!(
        err.contains("journal record at entry 1") && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn a_second_process_cannot_open_the_same_store() {
    // sled holds an exclusive file lock; within one process a second open of the same path fails too.
    let dir = tempfile::tempdir().unwrap();
    let _a = Store::open(dir.path(), 8 << 20).unwrap();
    let b = Store::open(dir.path(), 8 << 20);
    assert!(b.is_err());
}

/// A store of `n` acknowledged submissions (journaled, flushed, watermark written), closed.
fn acknowledged_store(dir: &std::path::Path, n: u64) -> u64 {
    let s = Store::open(dir, 8 << 20).unwrap();
    let mut st = ControlState::default();
    let mut cmds = vec![started()];
    cmds.extend((0..n).map(submit));
    let last = journal(&s, &mut st, 1, cmds);
    s.write_marks(Marks {
        index: last,
        next_job_id: st.next_job_id,
        epoch: st.epoch.0,
        worker_seq_max: 0,
    })
    .unwrap();
    last
}

fn damage(path: &std::path::Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    for x in &mut b[at..at + 4] {
        *x ^= 0xff;
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_log_that_sled_cuts_short_is_refused_naming_both_indices() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let last = acknowledged_store(&store, 50);
    damage(&store.join("db"), 0);
    let err = testing::reopen(&store).recover().unwrap_err();
    assert!(matches!(err, StoreError::DataLoss { acked, recovered: 0, .. } if acked == last));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("entry {last} was acknowledged"))
            && msg.contains("only up to entry 0")
            && msg.contains("--accept-data-loss")
            && msg.contains("snapshot restore"),
        "{msg}"
    );
}

#[test]
fn accepting_the_loss_keeps_the_watermarks_ids_and_drops_nothing_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let last = acknowledged_store(&store, 50);
    damage(&store.join("db"), 0);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let s = Store::open_with(&store, 8 << 20, true).unwrap();
    let r = s.recover().unwrap();
    let loss = r.loss.expect("the loss is reported");
    assert_eq!(loss.acked_index, last);
    assert_eq!(loss.recovered_index, r.last_index);
    assert_eq!(loss.marks.next_job_id, 51, "ids 1..=50 were handed out");
}

#[test]
fn a_damaged_sled_config_says_what_is_damaged_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let last = acknowledged_store(&store, 5);
    damage(&store.join("conf"), 0);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let msg = Store::open(&store, 8 << 20).unwrap_err().to_string();
    assert!(
        msg.contains("is damaged")
            && msg.contains(&format!("entries up to {last} were acknowledged"))
            && msg.contains("--accept-data-loss")
            && msg.contains("snapshot restore"),
        "{msg}"
    );
    // Accepting moves the damaged store aside (kept for inspection) and starts a new one that
    // still knows which ids were handed out.
    let s = Store::open_with(&store, 8 << 20, true).unwrap();
    let r = s.recover().unwrap();
    let loss = r.loss.expect("the loss is reported");
    assert!(loss.what.contains("moved aside"), "{}", loss.what);
    assert_eq!(loss.marks.next_job_id, 6);
    assert!(std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("store.damaged-")
    }));
}

#[test]
fn a_backup_restores_into_an_empty_directory_with_its_state_ids_and_cluster_id() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a/store");
    let s = Store::open(&src, 8 << 20).unwrap();
    let mut st = ControlState::default();
    let mut cmds = vec![started()];
    cmds.extend((0..20).map(submit));
    let last = journal(&s, &mut st, 1, cmds);
    let marks = Marks {
        index: last,
        next_job_id: st.next_job_id,
        epoch: st.epoch.0,
        worker_seq_max: 3,
    };
    let payload = Store::encode_state(&st).unwrap();
    let cluster = s.cluster_id().unwrap();
    let (bytes, info) = backup::encode(&payload, last, 99, &marks, &cluster);
    assert_eq!(info.index, last);
    let file = dir.path().join("b.snap");
    backup::write_file(&file, &bytes).unwrap();
    let b = backup::read(&file).unwrap();
    assert_eq!(b.info, info);
    assert_eq!(b.state.jobs.len(), 20);

    let dst = dir.path().join("restored/store");
    backup::restore(&dst, &b, 8 << 20).unwrap();
    let s2 = testing::reopen(&dst);
    let r = s2.recover().unwrap();
    assert_eq!(r.last_index, last);
    assert_eq!(r.state.jobs.len(), 20);
    assert_eq!(r.state.next_job_id, st.next_job_id);
    assert_eq!(s2.cluster_id().unwrap(), cluster);
    assert_eq!(s2.marks(), marks);
    drop(s2);
    // Never over an existing store.
    let err = backup::restore(&dst, &b, 8 << 20).unwrap_err().to_string();
    assert!(err.contains("already holds a store"), "{err}");
}

#[test]
fn a_damaged_or_truncated_backup_is_refused() {
    let st = ControlState::default();
    let payload = Store::encode_state(&st).unwrap();
    let (bytes, _) = backup::encode(&payload, 1, 1, &Marks::default(), "c");
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    let e = backup::decode(&flipped, "f").unwrap_err().to_string();
    assert!(e.contains("checksum") || e.contains("state"), "{e}");
    let e = backup::decode(&bytes[..bytes.len() - 1], "f")
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
    let e = backup::decode(b"not a backup at all", "f")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a hodei snapshot backup"), "{e}");
}
