//! Figures of a run, computed once at the end from per-job records and a few counters
//! accumulated on the way (busy and offered cpu-time, idle worker-time, cost).

use std::collections::BTreeMap;

use hodei_runtime::Priority;
use serde::{Deserialize, Serialize};

/// Bounded slowdown's threshold: jobs shorter than this count as this long (Feitelson).
pub const SLOWDOWN_TAU_MS: u64 = 10_000;

/// What happened to one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    /// Index in the workload.
    pub job: u64,
    /// Tenant.
    pub tenant: String,
    /// Priority.
    pub priority: Priority,
    /// Submitted.
    pub arrival_ms: u64,
    /// First started (None = never).
    pub start_ms: Option<u64>,
    /// Ended (terminal).
    pub end_ms: u64,
    /// Run time of one attempt.
    pub run_ms: u64,
    /// Cpu asked.
    pub cpu_millis: u64,
    /// Ended successfully.
    pub succeeded: bool,
    /// Terminal reason.
    pub reason: String,
    /// Attempts started or planned.
    pub attempts: u32,
    /// Times preempted.
    pub preempted: u32,
    /// The worker of the latest attempt (None = never started).
    pub worker: Option<String>,
    /// That worker's pool.
    pub pool: Option<String>,
}

/// Counters accumulated during a run.
#[derive(Debug, Clone, Default)]
pub struct RunCounters {
    /// Scheduling cycles run.
    pub cycles: u64,
    /// cpu-millis × ms held by running attempts.
    pub busy_cpu_ms: u128,
    /// cpu-millis × ms offered by registered workers.
    pub capacity_cpu_ms: u128,
    /// Idle worker-ms.
    pub idle_worker_ms: u64,
    /// Live (provisioning or registered) worker-ms.
    pub worker_ms: u64,
    /// Cost of live workers.
    pub cost: f64,
    /// Preempted attempts.
    pub preemptions: u64,
    /// ScaleUp decisions.
    pub scale_ups: u64,
    /// ScaleDown decisions.
    pub scale_downs: u64,
    /// Workers started (initial ones included).
    pub workers_started: u64,
    /// Workers gone.
    pub workers_terminated: u64,
    /// Provisioned workers that never registered.
    pub provisioning_failures: u64,
    /// Crashed workers.
    pub crashes: u64,
    /// Attempts lost with a crashed worker.
    pub lost_attempts: u64,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Metrics {
    /// Jobs in the workload.
    pub jobs: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that failed (reason in the per-job records).
    pub failed: u64,
    /// Wait (first start − arrival) percentiles, seconds.
    pub wait_p50_s: f64,
    /// 95th percentile wait.
    pub wait_p95_s: f64,
    /// 99th percentile wait.
    pub wait_p99_s: f64,
    /// Mean wait.
    pub wait_mean_s: f64,
    /// Turnaround (end − arrival) percentiles, seconds.
    pub turnaround_p50_s: f64,
    /// 95th percentile turnaround.
    pub turnaround_p95_s: f64,
    /// 99th percentile turnaround.
    pub turnaround_p99_s: f64,
    /// Mean bounded slowdown: max(1, turnaround / max(run, tau)), tau = 10 s.
    pub bounded_slowdown_mean: f64,
    /// 99th percentile of the bounded slowdown.
    pub bounded_slowdown_p99: f64,
    /// First arrival to last end, seconds.
    pub makespan_s: f64,
    /// Busy cpu-time ÷ cpu-time offered by registered workers, %.
    pub utilisation_pct: f64,
    /// Succeeded jobs per hour of makespan.
    pub throughput_per_h: f64,
    /// Preempted attempts.
    pub preemptions: u64,
    /// Scale-up decisions.
    pub scale_ups: u64,
    /// Scale-down decisions.
    pub scale_downs: u64,
    /// Workers started.
    pub workers_started: u64,
    /// Idle worker-seconds.
    pub idle_worker_s: f64,
    /// Live worker-seconds (provisioning included).
    pub worker_s: f64,
    /// Cost of live workers.
    pub cost: f64,
    /// Jain's fairness index over tenants' mean bounded slowdown (1 = equal).
    pub jain_fairness: f64,
    /// Scheduling cycles (pipeline calls).
    pub scheduling_cycles: u64,
    /// Crashed workers.
    pub crashes: u64,
    /// Attempts lost to crashes.
    pub lost_attempts: u64,
    /// Provisioned workers that never registered.
    pub provisioning_failures: u64,
    /// Jobs with a wait-time SLO (`[slo]` of the scenario).
    pub slo_jobs: u64,
    /// Of those, jobs that waited longer than their SLO or never started.
    pub slo_misses: u64,
    /// `slo_misses` ÷ `slo_jobs`, %.
    pub slo_miss_pct: f64,
}

/// `[slo]` of a scenario: the longest acceptable wait (first start − arrival) per priority.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloConfig {
    /// Seconds per priority (`high = 30`).
    pub wait_s: BTreeMap<Priority, f64>,
    /// Seconds for priorities not listed (none: no SLO for them).
    pub default_wait_s: Option<f64>,
}

impl SloConfig {
    /// The wait SLO of a priority, if any.
    pub fn wait_ms(&self, p: Priority) -> Option<u64> {
        self.wait_s
            .get(&p)
            .copied()
            .or(self.default_wait_s)
            .map(|s| (s * 1000.0) as u64)
    }

    /// Fills `slo_jobs`, `slo_misses` and `slo_miss_pct`: a job misses when it waited longer
    /// than its priority's SLO, or never started.
    pub fn apply(&self, jobs: &[JobRecord], m: &mut Metrics) {
        let (mut n, mut missed) = (0u64, 0u64);
        for j in jobs {
            let Some(limit) = self.wait_ms(j.priority) else {
                continue;
            };
            n += 1;
            if j.start_ms.is_none_or(|s| s - j.arrival_ms > limit) {
                missed += 1;
            }
        }
        m.slo_jobs = n;
        m.slo_misses = missed;
        m.slo_miss_pct = if n == 0 {
            0.0
        } else {
            missed as f64 * 100.0 / n as f64
        };
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Jain's index: (Σx)² / (n Σx²); 1 when all equal, 1/n when one takes all.
pub fn jain(values: &[f64]) -> f64 {
    let sum: f64 = values.iter().sum();
    let sq: f64 = values.iter().map(|v| v * v).sum();
    if values.is_empty() || sq == 0.0 {
        return 1.0;
    }
    sum * sum / (values.len() as f64 * sq)
}

/// max(1, turnaround / max(run, tau)).
pub fn bounded_slowdown(turnaround_ms: u64, run_ms: u64) -> f64 {
    (turnaround_ms as f64 / run_ms.max(SLOWDOWN_TAU_MS) as f64).max(1.0)
}

impl Metrics {
    /// Computes the figures.
    pub fn compute(jobs: &[JobRecord], c: &RunCounters) -> Metrics {
        let ok: Vec<&JobRecord> = jobs.iter().filter(|j| j.succeeded).collect();
        let sorted = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v
        };
        let waits = sorted(
            ok.iter()
                .map(|j| (j.start_ms.unwrap_or(j.end_ms) - j.arrival_ms) as f64 / 1000.0)
                .collect(),
        );
        let turn = sorted(
            ok.iter()
                .map(|j| (j.end_ms - j.arrival_ms) as f64 / 1000.0)
                .collect(),
        );
        let sd: Vec<f64> = ok
            .iter()
            .map(|j| bounded_slowdown(j.end_ms - j.arrival_ms, j.run_ms))
            .collect();
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let mut per_tenant: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
        for (j, s) in ok.iter().zip(&sd) {
            let e = per_tenant.entry(j.tenant.as_str()).or_default();
            e.0 += s;
            e.1 += 1;
        }
        let tenant_sd: Vec<f64> = per_tenant.values().map(|(s, n)| s / *n as f64).collect();
        let first = jobs.iter().map(|j| j.arrival_ms).min().unwrap_or(0);
        let last = jobs.iter().map(|j| j.end_ms).max().unwrap_or(0);
        let makespan_s = (last - first) as f64 / 1000.0;
        let sd_sorted = sorted(sd.clone());
        Metrics {
            jobs: jobs.len() as u64,
            succeeded: ok.len() as u64,
            failed: (jobs.len() - ok.len()) as u64,
            wait_p50_s: percentile(&waits, 50.0),
            wait_p95_s: percentile(&waits, 95.0),
            wait_p99_s: percentile(&waits, 99.0),
            wait_mean_s: mean(&waits),
            turnaround_p50_s: percentile(&turn, 50.0),
            turnaround_p95_s: percentile(&turn, 95.0),
            turnaround_p99_s: percentile(&turn, 99.0),
            bounded_slowdown_mean: mean(&sd),
            bounded_slowdown_p99: percentile(&sd_sorted, 99.0),
            makespan_s,
            utilisation_pct: if c.capacity_cpu_ms == 0 {
                0.0
            } else {
                c.busy_cpu_ms as f64 * 100.0 / c.capacity_cpu_ms as f64
            },
            throughput_per_h: if makespan_s > 0.0 {
                ok.len() as f64 * 3600.0 / makespan_s
            } else {
                0.0
            },
            preemptions: c.preemptions,
            scale_ups: c.scale_ups,
            scale_downs: c.scale_downs,
            workers_started: c.workers_started,
            idle_worker_s: c.idle_worker_ms as f64 / 1000.0,
            worker_s: c.worker_ms as f64 / 1000.0,
            cost: c.cost,
            jain_fairness: jain(&tenant_sd),
            scheduling_cycles: c.cycles,
            crashes: c.crashes,
            lost_attempts: c.lost_attempts,
            provisioning_failures: c.provisioning_failures,
            slo_jobs: 0,
            slo_misses: 0,
            slo_miss_pct: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_jain_and_slowdown() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(jain(&[2.0, 2.0, 2.0]), 1.0);
        assert!((jain(&[1.0, 0.0]) - 0.5).abs() < 1e-9);
        assert_eq!(bounded_slowdown(5_000, 1_000), 1.0);
        assert_eq!(bounded_slowdown(40_000, 20_000), 2.0);
    }

    #[test]
    fn a_job_misses_its_slo_when_it_waits_longer_or_never_starts() {
        let rec = |priority, start_ms| JobRecord {
            job: 0,
            tenant: "t".into(),
            priority,
            arrival_ms: 1_000,
            start_ms,
            end_ms: 100_000,
            run_ms: 10_000,
            cpu_millis: 1000,
            succeeded: start_ms.is_some(),
            reason: "x".into(),
            attempts: 1,
            preempted: 0,
            worker: None,
            pool: None,
        };
        let jobs = [
            rec(Priority::High, Some(11_000)), // waited 10 s: within 10 s
            rec(Priority::High, Some(11_001)), // missed
            rec(Priority::High, None),         // never started: missed
            rec(Priority::Low, Some(90_000)),  // no SLO for low
        ];
        let slo = SloConfig {
            wait_s: BTreeMap::from([(Priority::High, 10.0)]),
            default_wait_s: None,
        };
        let mut m = Metrics::default();
        slo.apply(&jobs, &mut m);
        assert_eq!((m.slo_jobs, m.slo_misses), (3, 2));
        assert!((m.slo_miss_pct - 66.666).abs() < 0.01);
    }
}
