//! Workloads: the jobs of a run, generated from the seed (Poisson, bursty) or replayed from a
//! trace (SWF, CSV). Traces are parsed defensively: `-1` means unknown, and a malformed line is
//! skipped and reported with its line number.
//!
//! CSV format (one job per line, `#` comments and a header line starting with `submit_s` allowed):
//!
//! ```text
//! submit_s,duration_s,cpu,memory,gpu,tenant,priority[,selector[,exit_code]]
//! 0,120,2,4Gi,0,acme,medium
//! 1.5,30,500m,512Mi,0,beta,high,zone=b;disk=ssd
//! 2,10,1,,,,,,3
//! ```
//!
//! `submit_s` and `duration_s` are seconds (decimals allowed), `cpu` is cores or millicores
//! (`2`, `500m`), `memory` bytes with an optional suffix (`512Mi`, `4Gi`), `gpu` whole devices,
//! `priority` one of critical, high, medium, low, batch. Empty fields take the defaults (1 cpu,
//! 0 memory, 0 gpu, tenant `default`, medium). The two optional columns: `selector`, worker
//! labels the job needs (`k=v` pairs joined by `;`, the job's node selector), and `exit_code`,
//! what the job exits with at its end (default 0; any other code fails the job, without retry).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use hodei_runtime::Priority;
use hodei_runtime::Resources;
use hodei_runtime::resources::{parse_bytes, parse_cpu_millis};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// One job of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSpec {
    /// When it is submitted.
    pub arrival_ms: u64,
    /// How long it runs once started.
    pub run_ms: u64,
    /// What it asks for.
    pub resources: Resources,
    /// Its tenant.
    pub tenant: String,
    /// Its priority.
    pub priority: Priority,
    /// Retries after a lost attempt (worker crash).
    pub retries: u32,
    /// Worker labels the job needs (its node selector; every worker also carries
    /// `hodei.io/pool=<pool>`, as in production).
    pub node_selector: BTreeMap<String, String>,
    /// What the job exits with at its end: 0 succeeds, anything else fails the job with
    /// "exit code N" (not retried: `retries` is for lost attempts).
    pub exit_code: i32,
}

/// Which generator or trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// Exponential inter-arrival times at `rate_per_s`.
    #[default]
    Poisson,
    /// `burst_jobs` jobs at once every `burst_every_s`, plus Poisson background at `rate_per_s`.
    Bursty,
    /// Poisson arrivals whose rate follows a day: `rate_per_s × (1 + diurnal_amplitude ×
    /// cos(2π (t − diurnal_peak_s) / diurnal_period_s))` (drawn by thinning).
    Diurnal,
    /// Standard Workload Format trace at `path`.
    Swf,
    /// CSV trace at `path` (format in the module docs).
    Csv,
}

/// Distribution of run times between `run_s[0]` and `run_s[1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunDist {
    /// Uniform.
    Uniform,
    /// Log-uniform (many short jobs, a few long ones).
    #[default]
    LogUniform,
}

/// `[workload]` of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// Generator or trace.
    pub kind: WorkloadKind,
    /// Jobs to generate; for traces, the first N (0 = all).
    pub jobs: u64,
    /// Poisson arrival rate.
    pub rate_per_s: f64,
    /// Bursty: seconds between bursts.
    pub burst_every_s: f64,
    /// Bursty: jobs per burst.
    pub burst_jobs: u64,
    /// Cores asked, uniform in this inclusive range.
    pub cpu_cores: [u64; 2],
    /// Memory asked (MiB), uniform in this inclusive range.
    pub memory_mib: [u64; 2],
    /// Run time bounds (seconds).
    pub run_s: [u64; 2],
    /// Run time distribution.
    pub run_dist: RunDist,
    /// Tenants, picked uniformly.
    pub tenants: Vec<String>,
    /// Priorities, picked uniformly.
    pub priorities: Vec<Priority>,
    /// Retries of every job after a lost attempt.
    pub retries: u32,
    /// Trace file (relative to the scenario file).
    pub path: Option<String>,
    /// SWF: millicores per processor.
    pub cpu_millis_per_processor: u64,
    /// Diurnal: relative swing of the rate around `rate_per_s` (0 = flat, 1 = zero at night).
    pub diurnal_amplitude: f64,
    /// Diurnal: length of a day (seconds).
    pub diurnal_period_s: f64,
    /// Diurnal: time of the daily peak within the period (seconds; 50,400 = 14:00).
    pub diurnal_peak_s: f64,
    /// Arrival times are multiplied by this (0.5 = the same jobs in half the time: twice the
    /// load). Traces whose submit times are really start times need < 1 to show contention.
    pub arrival_scale: f64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            kind: WorkloadKind::Poisson,
            jobs: 100,
            rate_per_s: 1.0,
            burst_every_s: 600.0,
            burst_jobs: 50,
            cpu_cores: [1, 1],
            memory_mib: [0, 0],
            run_s: [10, 600],
            run_dist: RunDist::LogUniform,
            tenants: vec!["default".into()],
            priorities: vec![Priority::Medium],
            retries: 2,
            path: None,
            cpu_millis_per_processor: 1000,
            arrival_scale: 1.0,
            diurnal_amplitude: 0.8,
            diurnal_period_s: 86_400.0,
            diurnal_peak_s: 50_400.0,
        }
    }
}

/// The jobs of a workload, sorted by arrival, and what the parser had to say.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// Jobs in arrival order.
    pub jobs: Vec<JobSpec>,
    /// "line 12: ..." notes about skipped or defaulted lines.
    pub warnings: Vec<String>,
}

/// Builds the workload of a scenario. `base` is the scenario file's directory.
pub fn build(cfg: &WorkloadConfig, seed: u64, base: &Path) -> anyhow::Result<Workload> {
    let mut w = match cfg.kind {
        WorkloadKind::Poisson | WorkloadKind::Bursty | WorkloadKind::Diurnal => Workload {
            jobs: generate(cfg, seed)?,
            warnings: Vec::new(),
        },
        WorkloadKind::Swf | WorkloadKind::Csv => {
            let Some(p) = &cfg.path else {
                bail!(
                    "workload.path: a {:?} workload needs a trace file",
                    cfg.kind
                )
            };
            let path = base.join(p);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading trace {}", path.display()))?;
            let mut w = if cfg.kind == WorkloadKind::Swf {
                parse_swf(&text, cfg.cpu_millis_per_processor)
            } else {
                parse_csv(&text)
            };
            for j in &mut w.jobs {
                j.retries = cfg.retries;
            }
            if cfg.jobs > 0 {
                w.jobs.truncate(cfg.jobs as usize);
            }
            w
        }
    };
    if !(cfg.arrival_scale > 0.0 && cfg.arrival_scale <= 1000.0) {
        bail!(
            "workload.arrival_scale {}: must be above 0 and at most 1000",
            cfg.arrival_scale
        );
    }
    if cfg.arrival_scale != 1.0 {
        for j in &mut w.jobs {
            j.arrival_ms = (j.arrival_ms as f64 * cfg.arrival_scale) as u64;
        }
    }
    // Stable: equal arrival times keep file / generation order.
    w.jobs.sort_by_key(|j| j.arrival_ms);
    Ok(w)
}

fn generate(cfg: &WorkloadConfig, seed: u64) -> anyhow::Result<Vec<JobSpec>> {
    if cfg.tenants.is_empty() || cfg.priorities.is_empty() {
        bail!("workload.tenants and workload.priorities must not be empty");
    }
    if cfg.rate_per_s <= 0.0 && matches!(cfg.kind, WorkloadKind::Poisson | WorkloadKind::Diurnal) {
        bail!("workload.rate_per_s {}: must be positive", cfg.rate_per_s);
    }
    if cfg.kind == WorkloadKind::Diurnal {
        if !(0.0..=1.0).contains(&cfg.diurnal_amplitude) {
            bail!(
                "workload.diurnal_amplitude {}: must be between 0 and 1",
                cfg.diurnal_amplitude
            );
        }
        if cfg.diurnal_period_s.is_nan() || cfg.diurnal_period_s <= 0.0 {
            bail!(
                "workload.diurnal_period_s {}: must be positive",
                cfg.diurnal_period_s
            );
        }
    }
    // Diurnal thinning: candidates at the peak rate, kept with probability rate(t) / peak.
    let peak_rate = cfg.rate_per_s * (1.0 + cfg.diurnal_amplitude);
    let rate_at = |t_s: f64| {
        let phase = std::f64::consts::TAU * (t_s - cfg.diurnal_peak_s) / cfg.diurnal_period_s;
        cfg.rate_per_s * (1.0 + cfg.diurnal_amplitude * phase.cos())
    };
    let mut arrivals = Rng::stream(seed, 1);
    let mut shape = Rng::stream(seed, 2);
    let mut t_s = 0.0f64;
    let mut burst_left = 0u64;
    let mut next_burst_s = 0.0f64;
    let mut jobs = Vec::with_capacity(cfg.jobs as usize);
    for _ in 0..cfg.jobs {
        let at_s = if cfg.kind == WorkloadKind::Bursty && (burst_left > 0 || cfg.rate_per_s <= 0.0)
        {
            if burst_left == 0 {
                burst_left = cfg.burst_jobs.max(1);
                t_s = t_s.max(next_burst_s);
                next_burst_s = t_s + cfg.burst_every_s;
            }
            burst_left -= 1;
            // A burst spreads over its first second.
            t_s + arrivals.unit()
        } else if cfg.kind == WorkloadKind::Diurnal {
            loop {
                t_s += arrivals.exp(1.0 / peak_rate);
                if arrivals.unit() * peak_rate <= rate_at(t_s) {
                    break t_s;
                }
            }
        } else {
            t_s += arrivals.exp(1.0 / cfg.rate_per_s);
            if cfg.kind == WorkloadKind::Bursty && t_s >= next_burst_s {
                burst_left = cfg.burst_jobs.max(1);
                t_s = next_burst_s;
                next_burst_s += cfg.burst_every_s;
            }
            t_s
        };
        let run_s = match cfg.run_dist {
            RunDist::Uniform => shape.range(cfg.run_s[0], cfg.run_s[1]) as f64,
            RunDist::LogUniform => {
                let (lo, hi) = (cfg.run_s[0].max(1) as f64, cfg.run_s[1].max(1) as f64);
                (lo.ln() + shape.unit() * (hi.ln() - lo.ln())).exp()
            }
        };
        let tenant = cfg.tenants[shape.range(0, cfg.tenants.len() as u64 - 1) as usize].clone();
        let priority = cfg.priorities[shape.range(0, cfg.priorities.len() as u64 - 1) as usize];
        jobs.push(JobSpec {
            arrival_ms: (at_s * 1000.0) as u64,
            run_ms: (run_s * 1000.0) as u64,
            resources: Resources {
                cpu_millis: shape.range(cfg.cpu_cores[0], cfg.cpu_cores[1]) * 1000,
                memory_bytes: shape.range(cfg.memory_mib[0], cfg.memory_mib[1]) << 20,
                ..Resources::ZERO
            },
            tenant,
            priority,
            retries: cfg.retries,
            node_selector: BTreeMap::new(),
            exit_code: 0,
        });
    }
    Ok(jobs)
}

/// Parses an SWF log: submit time (field 2), run time (4), allocated processors (5, else the
/// requested ones, 8), user (12, the tenant `uN`). A job with an unknown run time or processor
/// count is skipped and reported; so is a line without 18 numeric fields.
pub fn parse_swf(text: &str, cpu_millis_per_processor: u64) -> Workload {
    let mut w = Workload::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with(';') {
            continue;
        }
        let fields: Result<Vec<i64>, _> = t.split_whitespace().map(str::parse::<i64>).collect();
        let f = match fields {
            Ok(f) if f.len() == 18 => f,
            Ok(f) => {
                w.warnings.push(format!(
                    "line {n}: {} fields, expected 18; skipped",
                    f.len()
                ));
                continue;
            }
            Err(e) => {
                w.warnings
                    .push(format!("line {n}: not a number ({e}); skipped"));
                continue;
            }
        };
        let (submit, run, alloc, req, user) = (f[1], f[3], f[4], f[7], f[11]);
        let procs = if alloc > 0 { alloc } else { req };
        if submit < 0 || run < 0 || procs <= 0 {
            w.warnings.push(format!(
                "line {n}: job {} has an unknown submit time, run time or processor count; skipped",
                f[0]
            ));
            continue;
        }
        w.jobs.push(JobSpec {
            arrival_ms: submit as u64 * 1000,
            run_ms: run as u64 * 1000,
            resources: Resources {
                cpu_millis: procs as u64 * cpu_millis_per_processor,
                ..Resources::ZERO
            },
            tenant: if user >= 0 {
                format!("u{user}")
            } else {
                "unknown".into()
            },
            priority: Priority::Medium,
            retries: 0,
            node_selector: BTreeMap::new(),
            exit_code: 0,
        });
    }
    w
}

/// Parses the CSV format described in the module docs.
pub fn parse_csv(text: &str) -> Workload {
    let mut w = Workload::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("submit_s") {
            continue;
        }
        match parse_csv_line(t) {
            Ok(j) => w.jobs.push(j),
            Err(e) => w.warnings.push(format!("line {n}: {e}; skipped")),
        }
    }
    w
}

fn parse_csv_line(t: &str) -> anyhow::Result<JobSpec> {
    let f: Vec<&str> = t.split(',').map(str::trim).collect();
    if !(7..=9).contains(&f.len()) {
        bail!("{} fields, expected 7 to 9", f.len());
    }
    let secs = |name: &str, s: &str| -> anyhow::Result<u64> {
        let v: f64 = s.parse().with_context(|| format!("{name} {s:?}"))?;
        if !(0.0..1e12).contains(&v) {
            bail!("{name} {s:?}: must be between 0 and 1e12 seconds");
        }
        Ok((v * 1000.0).round() as u64)
    };
    fn or<'a>(s: &'a str, d: &'a str) -> &'a str {
        if s.is_empty() { d } else { s }
    }
    Ok(JobSpec {
        arrival_ms: secs("submit_s", f[0])?,
        run_ms: secs("duration_s", f[1])?,
        resources: Resources {
            cpu_millis: parse_cpu_millis(or(f[2], "1"))?,
            memory_bytes: parse_bytes("memory", or(f[3], "0"))?,
            ephemeral_storage_bytes: 0,
            gpus: or(f[4], "0")
                .parse()
                .with_context(|| format!("gpu {:?}", f[4]))?,
        },
        tenant: or(f[5], "default").to_string(),
        priority: serde_json::from_value(serde_json::Value::String(or(f[6], "medium").into()))
            .with_context(|| format!("priority {:?}", f[6]))?,
        retries: 0,
        node_selector: parse_selector(f.get(7).copied().unwrap_or(""))?,
        exit_code: {
            let code = or(f.get(8).copied().unwrap_or(""), "0");
            code.parse()
                .with_context(|| format!("exit_code {code:?}"))?
        },
    })
}

/// `zone=b;disk=ssd` → a node selector (empty → none).
fn parse_selector(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    s.split(';')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => bail!("selector {s:?}: expected k=v pairs joined by ';'"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swf_lines_with_unknowns_or_garbage_are_skipped_with_their_line_number() {
        let text = "; header\n\
            1 0 -1 100 4 -1 -1 -1 -1 -1 -1 3 1 -1 -1 -1 -1 -1\n\
            2 5 -1 -1 4 -1 -1 -1 -1 -1 -1 3 1 -1 -1 -1 -1 -1\n\
            3 x\n\
            4 7 -1 50 -1 -1 -1 2 -1 -1 -1 -1 1 -1 -1 -1 -1 -1\n";
        let w = parse_swf(text, 1000);
        assert_eq!(w.jobs.len(), 2);
        assert_eq!(w.jobs[0].resources.cpu_millis, 4000);
        assert_eq!(w.jobs[0].tenant, "u3");
        assert_eq!(
            w.jobs[1].resources.cpu_millis, 2000,
            "requested processors used"
        );
        assert_eq!(w.warnings.len(), 2);
        assert!(w.warnings[0].starts_with("line 3:"), "{:?}", w.warnings);
        assert!(w.warnings[1].starts_with("line 4:"), "{:?}", w.warnings);
    }

    #[test]
    fn csv_jobs_parse_and_bad_lines_are_reported() {
        let text = "submit_s,duration_s,cpu,memory,gpu,tenant,priority\n\
            0,120,2,4Gi,0,acme,medium\n\
            1.5,30,500m,512Mi,1,beta,high\n\
            2,30,,,,,\n\
            oops\n\
            3,10,1,1Gi,0,acme,urgent\n\
            4,10,1,,,,,zone=b;disk=ssd,3\n\
            5,10,1,,,,,zone\n";
        let w = parse_csv(text);
        assert_eq!(w.jobs.len(), 4);
        assert_eq!(w.jobs[1].arrival_ms, 1500);
        assert_eq!(w.jobs[1].resources.cpu_millis, 500);
        assert_eq!(w.jobs[1].resources.gpus, 1);
        assert_eq!(w.jobs[1].priority, Priority::High);
        assert_eq!(w.jobs[2].tenant, "default");
        assert_eq!(w.jobs[2].exit_code, 0);
        assert!(w.jobs[2].node_selector.is_empty());
        assert_eq!(w.jobs[3].exit_code, 3);
        assert_eq!(
            w.jobs[3].node_selector,
            BTreeMap::from([("disk".into(), "ssd".into()), ("zone".into(), "b".into())])
        );
        assert_eq!(w.warnings.len(), 3);
        assert!(w.warnings[0].starts_with("line 5:"));
        assert!(w.warnings[1].starts_with("line 6:"));
        assert!(w.warnings[2].starts_with("line 8:"), "{:?}", w.warnings);
    }

    #[test]
    fn diurnal_arrivals_crowd_around_the_daily_peak() {
        let cfg = WorkloadConfig {
            kind: WorkloadKind::Diurnal,
            jobs: 4000,
            rate_per_s: 0.01,
            diurnal_amplitude: 0.8,
            ..WorkloadConfig::default()
        };
        let jobs = generate(&cfg, 9).unwrap();
        assert_eq!(jobs, generate(&cfg, 9).unwrap(), "seeded");
        // Hours 08:00-20:00 around the 14:00 peak against 20:00-08:00: expected ratio
        // (1/2 + 0.8/π) / (1/2 − 0.8/π) ≈ 3.1.
        let (mut day, mut night) = (0u32, 0u32);
        for j in &jobs {
            let hour = (j.arrival_ms / 3_600_000) % 24;
            if (8..20).contains(&hour) {
                day += 1;
            } else {
                night += 1;
            }
        }
        assert!(day > 2 * night, "day {day}, night {night}");
        // The mean rate is kept: 4000 jobs at 0.01/s take about 4.6 days.
        let days = jobs.last().unwrap().arrival_ms as f64 / 86_400_000.0;
        assert!((3.5..6.0).contains(&days), "{days} days");
        let flat = WorkloadConfig {
            diurnal_amplitude: 0.0,
            ..cfg.clone()
        };
        let flat = generate(&flat, 9).unwrap();
        let day_flat = flat
            .iter()
            .filter(|j| (8..20).contains(&((j.arrival_ms / 3_600_000) % 24)))
            .count() as f64;
        assert!(
            (day_flat / 4000.0 - 0.5).abs() < 0.05,
            "amplitude 0 is flat"
        );
    }

    #[test]
    fn generators_are_seeded() {
        let cfg = WorkloadConfig {
            jobs: 50,
            kind: WorkloadKind::Bursty,
            rate_per_s: 0.5,
            burst_every_s: 30.0,
            burst_jobs: 10,
            ..WorkloadConfig::default()
        };
        let a = generate(&cfg, 1).unwrap();
        assert_eq!(a, generate(&cfg, 1).unwrap());
        assert_ne!(a, generate(&cfg, 2).unwrap());
        assert_eq!(a.len(), 50);
    }
}
