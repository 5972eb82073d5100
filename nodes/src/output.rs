//! How the CLI prints: tables for people, JSON objects for scripts (`--output json`).

use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{Table, presets};
use hodei_actors::wire::{JobView, PoolView, WorkerView};
use hodei_runtime::resources::{format_bytes, format_bytes_approx, format_cpu_millis};
use serde::Serialize;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON document.
    Json,
}

/// RFC 3339 time of a millisecond timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn ago(ms: u64) -> String {
    let now = hodei_runtime::now_ms();
    let secs = now.saturating_sub(ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The JSON shape of a job (stable field names).
#[derive(Debug, Serialize)]
pub struct JobJson<'a> {
    id: u64,
    name: &'a str,
    state: &'a str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    attempts: u32,
    reason: Option<&'a str>,
    priority: &'a str,
    tenant: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
    worker: Option<&'a str>,
    command: &'a str,
    cpu: String,
    memory: String,
    timeout_ms: Option<u64>,
    max_retries: u32,
    submitted_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    attempt_history: Vec<AttemptJson<'a>>,
}

#[derive(Debug, Serialize)]
struct AttemptJson<'a> {
    number: u32,
    epoch: u64,
    worker: &'a str,
    assigned_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    outcome: Option<&'a str>,
}

/// JSON view of a job.
pub fn job_json(j: &JobView) -> JobJson<'_> {
    JobJson {
        id: j.id.0,
        name: &j.name,
        state: j.state.as_str(),
        exit_code: j.exit_code,
        signal: j.signal,
        attempts: j.attempts,
        reason: j.reason.as_deref(),
        priority: j.priority.as_str(),
        tenant: j.tenant.as_str(),
        labels: &j.labels,
        worker: j.worker.as_deref(),
        command: &j.command,
        cpu: format_cpu_millis(j.resources.cpu_millis),
        memory: format_bytes(j.resources.memory_bytes),
        timeout_ms: j.timeout_ms,
        max_retries: j.max_retries,
        submitted_at: rfc3339(j.submitted_at_ms),
        started_at: j.started_at_ms.map(rfc3339),
        finished_at: j.finished_at_ms.map(rfc3339),
        attempt_history: j
            .attempt_history
            .iter()
            .map(|a| AttemptJson {
                number: a.number,
                epoch: a.epoch,
                worker: &a.worker,
                assigned_at: rfc3339(a.assigned_at_ms),
                started_at: a.started_at_ms.map(rfc3339),
                finished_at: a.finished_at_ms.map(rfc3339),
                outcome: a.outcome.as_deref(),
            })
            .collect(),
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    t
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Jobs as a table.
pub fn jobs_table(jobs: &[JobView]) -> String {
    let mut t = table(&[
        "ID", "NAME", "STATE", "EXIT", "ATTEMPTS", "PRIORITY", "TENANT", "WORKER", "AGE", "REASON",
    ]);
    for j in jobs {
        t.add_row(vec![
            j.id.to_string(),
            trunc(&j.name, 24),
            j.state.to_string(),
            exit_text(j),
            j.attempts.to_string(),
            j.priority.to_string(),
            j.tenant.to_string(),
            j.worker.clone().unwrap_or_else(|| "-".into()),
            ago(j.submitted_at_ms),
            trunc(j.reason.as_deref().unwrap_or(""), 60),
        ]);
    }
    t.to_string()
}

fn exit_text(j: &JobView) -> String {
    match (j.exit_code, j.signal) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("sig{s}"),
        _ => "-".into(),
    }
}

/// One job in detail.
pub fn job_detail(j: &JobView) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    kv("id", j.id.to_string());
    kv("name", j.name.clone());
    kv("state", j.state.to_string());
    kv("reason", j.reason.clone().unwrap_or_else(|| "-".into()));
    kv("exit", exit_text(j));
    kv("command", j.command.clone());
    kv("priority", j.priority.to_string());
    kv("tenant", j.tenant.to_string());
    kv(
        "labels",
        if j.labels.is_empty() {
            "-".into()
        } else {
            j.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        },
    );
    kv("resources", j.resources.to_string());
    kv(
        "timeout",
        j.timeout_ms
            .map(hodei_runtime::control::fmt_ms)
            .unwrap_or_else(|| "none".into()),
    );
    kv("retries", format!("{} allowed", j.max_retries));
    kv("submitted", rfc3339(j.submitted_at_ms));
    kv(
        "started",
        j.started_at_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
    );
    kv(
        "finished",
        j.finished_at_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
    );
    if !j.attempt_history.is_empty() {
        let mut t = table(&["ATTEMPT", "EPOCH", "WORKER", "STARTED", "ENDED", "OUTCOME"]);
        for a in &j.attempt_history {
            t.add_row(vec![
                a.number.to_string(),
                a.epoch.to_string(),
                a.worker.clone(),
                a.started_at_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
                a.finished_at_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
                a.outcome.clone().unwrap_or_else(|| "(live)".into()),
            ]);
        }
        out.push('\n');
        out.push_str(&t.to_string());
        out.push('\n');
    }
    out
}

/// A scheduling explanation under a job's details.
pub fn explanation(e: &hodei_runtime::scheduling::Explanation) -> String {
    let mut out = String::from("\nscheduling:\n");
    out.push_str(&format!("  summary        {}\n", e.summary));
    out.push_str(&format!(
        "  workers        {} in view, {} scanned, {} feasible\n",
        e.total, e.scanned, e.feasible
    ));
    if !e.filter_counts.is_empty() {
        let mut counts: Vec<(&String, &u32)> = e.filter_counts.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        out.push_str("  filtered out\n");
        for (reason, n) in counts {
            out.push_str(&format!("    {n:>5}  {reason}\n"));
        }
    }
    if let Some(c) = &e.chosen {
        out.push_str(&format!("  chosen         {c}\n"));
    }
    if !e.top_scores.is_empty() {
        out.push_str("  top scores\n");
        for s in &e.top_scores {
            let parts: Vec<String> = s
                .breakdown
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}"))
                .collect();
            out.push_str(&format!(
                "    {:<24} {:>7.1}  ({})\n",
                s.worker.to_string(),
                s.total,
                parts.join(", ")
            ));
        }
    }
    out
}

/// The scheduler's series (or all of them) from Prometheus text, without comments.
pub fn metrics(text: &str, all: bool) -> String {
    const SCHEDULER: [&str; 10] = [
        "hodei_scheduling_",
        "hodei_queue_",
        "hodei_preemptions",
        "hodei_taint_evictions",
        "hodei_quota_holds",
        "hodei_worker_utilisation",
        "hodei_jobs{",
        "hodei_job_",
        "hodei_workers{",
        "hodei_jobs_finished",
    ];
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('#') && !all {
            continue;
        }
        if all || SCHEDULER.iter().any(|p| line.starts_with(p)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Workers as a table.
pub fn workers_table(ws: &[WorkerView]) -> String {
    let mut t = table(&[
        "ID", "POOL", "STATE", "SLOTS", "RUNNING", "CPU", "MEMORY", "TAINTS", "PID", "JOBS", "AGE",
        "REASON",
    ]);
    for w in ws {
        t.add_row(vec![
            w.id.to_string(),
            w.pool.clone(),
            w.state.to_string(),
            w.slots.to_string(),
            w.running.to_string(),
            format_cpu_millis(w.capacity.cpu_millis),
            format_bytes_approx(w.capacity.memory_bytes),
            if w.taints.is_empty() {
                "-".into()
            } else {
                w.taints.join(",")
            },
            w.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            w.jobs_completed.to_string(),
            ago(w.provisioned_at_ms),
            trunc(w.reason.as_deref().unwrap_or(""), 50),
        ]);
    }
    t.to_string()
}

/// Pools as a table.
pub fn pools_table(ps: &[PoolView]) -> String {
    let mut t = table(&[
        "NAME",
        "PROVIDER",
        "MIN",
        "MAX",
        "SLOTS",
        "CPU",
        "MEMORY",
        "WORKERS",
        "PENDING",
        "FAILURES",
        "LAST DECISION",
    ]);
    for p in ps {
        t.add_row(vec![
            p.name.clone(),
            p.provider.clone(),
            p.min_workers.to_string(),
            p.max_workers.to_string(),
            p.slots.to_string(),
            format_cpu_millis(p.capacity.cpu_millis),
            format_bytes_approx(p.capacity.memory_bytes),
            if p.workers.is_empty() {
                "0".into()
            } else {
                p.workers
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            p.pending_fitting.to_string(),
            p.provisioning_failures.to_string(),
            trunc(p.last_decision.as_deref().unwrap_or("-"), 60),
        ]);
    }
    let mut out = t.to_string();
    for p in ps {
        if p.providers.len() > 1
            || p.providers
                .iter()
                .any(|l| l.contains("fail") || l.contains("backing off") || l.contains("unhealthy"))
        {
            out.push_str(&format!("\n{} providers:", p.name));
            for line in &p.providers {
                out.push_str(&format!("\n  {line}"));
            }
        }
    }
    out
}
