//! Many jobs from several client processes at once: nothing lost, nothing completed twice,
//! every log retrievable.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const JOBS_PER_CLIENT: usize = 250;

/// Runs inside a child process (started by the test below): one Rust client submitting its jobs
/// concurrently, waiting for all of them and checking their logs.
#[test]
#[ignore = "a child process of five_hundred_jobs_from_two_client_processes_all_finish_once"]
fn load_client_child() {
    let Ok(addr) = std::env::var("E2E_LOAD_ADDR") else {
        return;
    };
    let tag = std::env::var("E2E_LOAD_TAG").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let client = hodei::Client::connect(&addr, COOKIE)
            .await
            .expect("connect");
        let submits = futures::future::join_all((0..JOBS_PER_CLIENT).map(|i| {
            let c = client.clone();
            let spec = hodei::JobSpec::shell("echo out-$HODEI_JOB_ID")
                .with_name(format!("{tag}-{i}"))
                .with_label("client", tag.clone());
            async move { c.submit(spec).await }
        }))
        .await;
        let ids: Vec<hodei::JobId> = submits
            .into_iter()
            .map(|r| r.expect("submit acknowledged"))
            .collect();
        let done = futures::future::join_all(ids.iter().map(|id| {
            let c = client.clone();
            let id = *id;
            async move { c.wait(id, Some(Duration::from_secs(240))).await }
        }))
        .await;
        for (id, v) in ids.iter().zip(done) {
            let v = v.expect("wait");
            assert_eq!(v.state, hodei::JobState::Succeeded, "job {id}: {v:?}");
            let chunk = client
                .read_logs(*id, 0, 1 << 16, Duration::ZERO)
                .await
                .expect("logs");
            let text: String = chunk
                .records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.data).into_owned())
                .collect();
            assert_eq!(text, format!("out-{id}\n"), "log of job {id}");
        }
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        println!("IDS {}", list.join(","));
    });
}

#[test]
fn five_hundred_jobs_from_two_client_processes_all_finish_once() {
    let node = TestNode::start(NodeOpts {
        workers: 2,
        slots: 4,
        ..Default::default()
    });
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|tag| {
            Command::new(&exe)
                .args([
                    "load_client_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("E2E_LOAD_ADDR", &node.addr)
                .env("E2E_LOAD_TAG", tag)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all = BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "client process failed:\n{text}\n{}",
            stderr(&out)
        );
        let ids = text
            .lines()
            .find_map(|l| l.split_once("IDS ").map(|(_, ids)| ids.trim()))
            .unwrap_or_else(|| panic!("no IDS line in:\n{text}"));
        for id in ids.split(',') {
            assert!(
                all.insert(id.parse::<u64>().unwrap()),
                "id {id} given twice"
            );
        }
    }
    assert_eq!(all.len(), 2 * JOBS_PER_CLIENT);
    let jobs = node.jobs();
    assert_eq!(
        jobs.len(),
        2 * JOBS_PER_CLIENT,
        "no job lost, none invented"
    );
    for j in &jobs {
        assert_eq!(j["state"], "succeeded", "{j}");
        let history = j["attempt_history"].as_array().unwrap();
        assert_eq!(history.len(), 1, "ran once: {j}");
        assert_eq!(history[0]["outcome"], "exit code 0");
    }
    // Completion recorded exactly once per job.
    let metrics = http_get(&node.metrics_addr(), "/metrics");
    assert!(
        metrics.contains(&format!(
            "hodei_jobs_finished_total{{state=\"succeeded\"}} {}",
            2 * JOBS_PER_CLIENT
        )),
        "{metrics}"
    );
    // Logs are retrievable through the CLI too.
    for id in all.iter().step_by(50) {
        assert_eq!(node.ok(&["logs", &id.to_string()]), format!("out-{id}\n"));
    }
}
