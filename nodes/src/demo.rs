//! `hodei demo`: a throw-away single-node cluster on the embedded default (local agents) runs a
//! sample workload — successes at several priorities, a failure retried into success, a
//! timeout, a cancellation and a plain failure — with live progress and a summary.

use std::time::Duration;

use hodei_config::Config;
use hodei_runtime::{JobState, Priority};
use indicatif::{ProgressBar, ProgressStyle};

use crate::JobSpec;
use crate::output;

struct Sample {
    spec: JobSpec,
    expect: JobState,
}

fn workload(dir: &std::path::Path) -> Vec<Sample> {
    let marker = dir.join("flaky.marker");
    vec![
        Sample {
            spec: JobSpec::shell("echo 'hello from hodei'").with_name("hello").with_priority(Priority::High),
            expect: JobState::Succeeded,
        },
        Sample {
            spec: JobSpec::shell("for i in 1 2 3; do echo \"step $i\"; sleep 0.3; done")
                .with_name("compute")
                .with_label("kind", "batch-step"),
            expect: JobState::Succeeded,
        },
        Sample {
            spec: JobSpec::shell("echo 'urgent report ready'").with_name("report").with_priority(Priority::Critical),
            expect: JobState::Succeeded,
        },
        Sample {
            spec: JobSpec::shell("sleep 0.5; echo 'cleaned up'").with_name("cleanup").with_priority(Priority::Batch),
            expect: JobState::Succeeded,
        },
        Sample {
            spec: JobSpec::shell(format!(
                "if [ ! -f {m} ]; then touch {m}; echo 'first attempt fails' >&2; exit 1; fi; echo 'recovered on retry'",
                m = marker.display()
            ))
            .with_name("flaky")
            .with_retries(2),
            expect: JobState::Succeeded,
        },
        Sample {
            spec: JobSpec::shell("echo 'this takes too long'; sleep 30")
                .with_name("too-slow")
                .with_priority(Priority::Low)
                .with_timeout_ms(1_000),
            expect: JobState::TimedOut,
        },
        Sample {
            spec: JobSpec::shell("echo 'bad input' >&2; exit 3").with_name("doomed"),
            expect: JobState::Failed,
        },
        Sample {
            spec: JobSpec::shell("echo 'waiting forever'; sleep 60").with_name("cancel-me").with_priority(Priority::Low),
            expect: JobState::Cancelled,
        },
    ]
}

/// Runs the demo; returns the process exit code (0 when every job ended as expected).
pub async fn run() -> anyhow::Result<u8> {
    let dir = tempfile::Builder::new().prefix("hodei-demo-").tempdir()?;
    let cookie = format!("demo-{}", hodei_actors::provider::local::random_hex(12));
    let config = Config::dev(
        &dir.path().join("data"),
        "127.0.0.1:0".parse()?,
        &cookie,
        2,
        2,
    )?;
    eprintln!(
        "starting a single-node Hodei cluster (2 local agents x 2 slots) in {}",
        dir.path().display()
    );
    let node = crate::server::start(config).await?;
    let client = node.client();
    let samples = workload(dir.path());
    let mut ids = Vec::new();
    for s in &samples {
        let id = client.submit(s.spec.clone()).await?;
        ids.push(id);
    }
    eprintln!(
        "submitted {} jobs; the node is scheduling them by priority on its local workers",
        ids.len()
    );
    let bar = ProgressBar::new(ids.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} finished  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let cancel_id = ids[ids.len() - 1];
    let mut cancelled = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let views = loop {
        let mut views = Vec::new();
        for id in &ids {
            views.push(client.get(*id).await?);
        }
        let done = views.iter().filter(|v| v.state.is_terminal()).count();
        bar.set_position(done as u64);
        let running: Vec<String> = views
            .iter()
            .filter(|v| v.state == JobState::Running)
            .map(|v| v.name.clone())
            .collect();
        bar.set_message(if running.is_empty() {
            String::new()
        } else {
            format!("running: {}", running.join(", "))
        });
        if !cancelled && views.last().is_some_and(|v| v.state == JobState::Running) {
            client.cancel(cancel_id).await?;
            bar.println(format!(
                "cancelled job {cancel_id} (cancel-me) while it was running"
            ));
            cancelled = true;
        }
        if done == ids.len() {
            break views;
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon_with_message("the demo did not finish within 2 minutes");
            anyhow::bail!("demo timed out");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    bar.finish_with_message("all jobs finished");
    println!("\n{}", output::jobs_table(&views));
    let flaky = &views[4];
    let mut flaky_log = String::new();
    let chunk = client
        .read_logs(flaky.id, 0, 1 << 16, Duration::ZERO)
        .await?;
    for r in chunk.records {
        flaky_log.push_str(&String::from_utf8_lossy(&r.data));
    }
    println!(
        "output of job {} (flaky), both attempts:\n{}",
        flaky.id,
        indent(&flaky_log)
    );
    let mut ok = true;
    for (s, v) in samples.iter().zip(&views) {
        if v.state != s.expect {
            ok = false;
            println!(
                "unexpected: job {} ({}) ended {} but {} was expected",
                v.id, v.name, v.state, s.expect
            );
        }
    }
    let count = |st: JobState| views.iter().filter(|v| v.state == st).count();
    println!(
        "summary: {} succeeded ({} after a retry), {} failed, {} timed out, {} cancelled — {}",
        count(JobState::Succeeded),
        views
            .iter()
            .filter(|v| v.state == JobState::Succeeded && v.attempts > 1)
            .count(),
        count(JobState::Failed),
        count(JobState::TimedOut),
        count(JobState::Cancelled),
        if ok {
            "every job ended as expected"
        } else {
            "SOME JOBS DID NOT END AS EXPECTED"
        }
    );
    node.shutdown().await;
    Ok(if ok { 0 } else { 1 })
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}
