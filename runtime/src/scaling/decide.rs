//! `decide_pool`: one autoscaling step for one pool. See `README.md` beside this file for the
//! order of the steps and the guarantees.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::ScalingPolicy;
use super::demand::{POOL_LABEL, PoolDemand};
use super::history::ScalingHistory;
use super::provider::{ProviderStatus, select_provider};
use crate::control::fmt_ms;
use crate::ids::WorkerId;
use crate::worker::{PoolSpec, WorkerRecord, WorkerState};

/// A worker of the pool as the autoscaler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Id.
    pub id: WorkerId,
    /// State (Terminated workers are ignored).
    pub state: WorkerState,
    /// Free slots (registered workers).
    pub free_slots: u32,
    /// Attempts running on it.
    pub running_jobs: u32,
    /// Since when it has been Idle.
    pub idle_since_ms: Option<u64>,
    /// Attempts it has run to the end.
    pub jobs_completed: u64,
    /// When it was asked of its provider (`None` = unknown: no registration deadline).
    pub provisioned_at_ms: Option<u64>,
    /// When its agent registered (`None` = unknown: no age limit).
    pub registered_at_ms: Option<u64>,
}

impl WorkerView {
    /// From the control plane's record.
    pub fn from_record(r: &WorkerRecord) -> WorkerView {
        WorkerView {
            id: r.id.clone(),
            state: r.state,
            free_slots: r.free_slots(),
            running_jobs: r.running.len() as u32,
            idle_since_ms: r.idle_since_ms,
            jobs_completed: r.jobs_completed,
            provisioned_at_ms: Some(r.provisioned_at_ms),
            registered_at_ms: r.registered_at_ms,
        }
    }
}

/// What one decision reads about its pool (besides the spec, the policy and the history).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PoolState {
    /// The pool's workers (Terminated ones may be left in; they are ignored).
    pub workers: Vec<WorkerView>,
    /// Its demand (from [`super::demand_by_pool`]).
    pub demand: PoolDemand,
    /// The providers it may use; empty = the pool's own `spec.provider`, always available.
    pub providers: Vec<ProviderStatus>,
}

/// What a decision does, for `hodei pools` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DecisionKind {
    /// Provisions workers (possibly also recycling others).
    ScaleUp,
    /// Retires idle workers above the floor.
    ScaleDown,
    /// Only recycles workers (ephemeral, max jobs, max age) or destroys failed registrations.
    Drain,
    /// Nothing to do.
    Steady,
    /// Workers are wanted but none can be provisioned now.
    Blocked {
        /// "at max 8 workers", "quota max_cpu_millis 16000 reached", "scale-up cooldown 7s
        /// left", "no provider: ...".
        why: String,
    },
}

/// How a worker is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Idle now: stop it now.
    Retire,
    /// Busy: accept no new work, stop once its attempts end. Never killed while busy.
    Drain,
}

/// Why a worker is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// Idle for `idle_timeout_ms` above the floor (scale-down).
    IdleTimeout,
    /// Ephemeral pool: the worker has (had) its one job.
    Ephemeral,
    /// Ran `max_jobs_per_worker` jobs.
    MaxJobs,
    /// Older than `max_worker_age_ms`.
    MaxAge,
}

impl DecisionKind {
    /// Short name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecisionKind::ScaleUp => "scale_up",
            DecisionKind::ScaleDown => "scale_down",
            DecisionKind::Drain => "drain",
            DecisionKind::Steady => "steady",
            DecisionKind::Blocked { .. } => "blocked",
        }
    }
}

impl StopCause {
    /// Short name for reasons and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            StopCause::IdleTimeout => "idle timeout",
            StopCause::Ephemeral => "ephemeral",
            StopCause::MaxJobs => "max jobs per worker",
            StopCause::MaxAge => "max worker age",
        }
    }
}

/// One worker to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStop {
    /// The worker.
    pub worker: WorkerId,
    /// Retire (idle) or drain (busy).
    pub mode: StopMode,
    /// Why.
    pub cause: StopCause,
}

/// Counts behind a decision (gauges for metrics and `hodei pools`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DecisionMetrics {
    /// Provisioning (in time) + Idle + Busy workers before the decision.
    pub live: u32,
    /// Of which still provisioning.
    pub provisioning: u32,
    /// Registered and running nothing.
    pub idle: u32,
    /// Registered and running something.
    pub busy: u32,
    /// Draining already.
    pub draining: u32,
    /// Busy slots ÷ slots of registered, non-recycled workers, in %.
    pub utilisation_pct: u32,
    /// Jobs this pool scales for.
    pub demand_jobs: u64,
    /// Of which lack a free or incoming slot.
    pub unmet_jobs: u64,
    /// Workers the predictive forecast wants warm now (0 when off).
    pub forecast_workers: u32,
    /// Workers wanted after every rule, before cooldowns, steps, quota and providers.
    pub target_workers: u32,
    /// Provisioning workers whose registration deadline passed (see `PoolDecision::destroy`).
    pub provisioning_failures: u32,
}

/// The outcome of one step for one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDecision {
    /// What kind of step.
    pub kind: DecisionKind,
    /// Workers to start.
    pub provision: u32,
    /// The provider of each worker to start (empty when `PoolState::providers` is empty: use
    /// `spec.provider`).
    pub providers: Vec<String>,
    /// Workers to stop: retired now when idle, drained when busy.
    pub stops: Vec<WorkerStop>,
    /// Provisioning workers that did not register within `register_timeout_ms`: provisioning
    /// failures. The caller destroys them and reports `on_provision_failure` to their provider.
    pub destroy: Vec<WorkerId>,
    /// Why (for logs, metrics and `hodei pools`).
    pub reason: String,
    /// The counts behind it.
    pub metrics: DecisionMetrics,
}

impl PoolDecision {
    /// Workers to stop now (idle).
    pub fn retire(&self) -> impl Iterator<Item = &WorkerId> {
        self.stops
            .iter()
            .filter(|s| s.mode == StopMode::Retire)
            .map(|s| &s.worker)
    }

    /// Workers to drain (busy).
    pub fn drain(&self) -> impl Iterator<Item = &WorkerId> {
        self.stops
            .iter()
            .filter(|s| s.mode == StopMode::Drain)
            .map(|s| &s.worker)
    }
}

fn recycle_cause(w: &WorkerView, policy: &ScalingPolicy, now_ms: u64) -> Option<StopCause> {
    if policy.ephemeral && (w.jobs_completed >= 1 || w.running_jobs > 0) {
        return Some(StopCause::Ephemeral);
    }
    if policy
        .max_jobs_per_worker
        .is_some_and(|m| w.jobs_completed >= m)
    {
        return Some(StopCause::MaxJobs);
    }
    if let (Some(age), Some(at)) = (policy.max_worker_age_ms, w.registered_at_ms)
        && now_ms.saturating_sub(at) >= age
    {
        return Some(StopCause::MaxAge);
    }
    None
}

/// Decides one step for one pool. Pure: the same arguments give the same decision. The caller
/// applies it, then records it with [`ScalingHistory::record_decision`].
pub fn decide_pool(
    spec: &PoolSpec,
    policy: &ScalingPolicy,
    state: &PoolState,
    history: &ScalingHistory,
    now_ms: u64,
) -> PoolDecision {
    let slots = spec.template.slots.max(1);
    // An ephemeral worker runs one job, whatever its slots.
    let job_slots = if policy.ephemeral { 1 } else { slots };
    let mut m = DecisionMetrics::default();
    let mut destroy = Vec::new();
    let mut stops = Vec::new();
    let mut kept: Vec<&WorkerView> = Vec::new();

    // 1. Failed registrations, 2. recycling.
    let mut workers: Vec<&WorkerView> = state.workers.iter().collect();
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    workers.dedup_by(|a, b| a.id == b.id);
    for w in workers {
        match w.state {
            WorkerState::Terminated => {}
            WorkerState::Draining => m.draining += 1,
            WorkerState::Provisioning => {
                if w.provisioned_at_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= policy.register_timeout_ms)
                {
                    destroy.push(w.id.clone());
                } else {
                    m.provisioning += 1;
                }
            }
            WorkerState::Idle | WorkerState::Busy => {
                let idle = w.state == WorkerState::Idle && w.running_jobs == 0;
                if idle {
                    m.idle += 1;
                } else {
                    m.busy += 1;
                }
                match recycle_cause(w, policy, now_ms) {
                    Some(cause) => stops.push(WorkerStop {
                        worker: w.id.clone(),
                        mode: if idle {
                            StopMode::Retire
                        } else {
                            StopMode::Drain
                        },
                        cause,
                    }),
                    None => kept.push(w),
                }
            }
        }
    }
    m.provisioning_failures = destroy.len() as u32;
    m.live = m.provisioning + m.idle + m.busy;
    let recycled = stops.len() as u32;
    // Workers that stay: they count against min and max.
    let live = m.provisioning + kept.len() as u32;

    // 3. Capacity and demand.
    let total_slots: u64 = kept.len() as u64 * slots as u64;
    let busy_slots: u64 = kept
        .iter()
        .map(|w| slots.saturating_sub(w.free_slots) as u64)
        .sum();
    m.utilisation_pct = (busy_slots * 100).checked_div(total_slots).unwrap_or(0) as u32;
    let incoming: u64 = kept
        .iter()
        .map(|w| {
            if policy.ephemeral {
                (w.running_jobs == 0 && w.jobs_completed == 0) as u64
            } else {
                w.free_slots as u64
            }
        })
        .sum::<u64>()
        + m.provisioning as u64 * job_slots as u64;
    let d = &state.demand;
    m.demand_jobs = d.jobs();
    m.unmet_jobs = m.demand_jobs.saturating_sub(incoming);

    // 4. The target.
    let mut why_up: Vec<String> = Vec::new();
    let mut target = live;
    if m.unmet_jobs >= policy.scale_up_queue_min {
        let add = m.unmet_jobs.div_ceil(job_slots as u64).min(u32::MAX as u64) as u32;
        target = target.max(live.saturating_add(add));
        why_up.push(format!(
            "{} jobs waiting for this pool ({} only here), {incoming} free or incoming slots",
            m.demand_jobs, d.only_here
        ));
    }
    let waiting_long = m.demand_jobs > 0
        && (policy
            .scale_up_p90_wait_ms
            .is_some_and(|t| d.p90_wait_ms >= t)
            || policy
                .scale_up_avg_wait_ms
                .is_some_and(|t| d.avg_wait_ms >= t));
    if waiting_long {
        target = target.max(live + 1);
        why_up.push(format!(
            "jobs waiting too long (p90 {}, average {})",
            fmt_ms(d.p90_wait_ms),
            fmt_ms(d.avg_wait_ms)
        ));
    }
    let busy_enough = policy
        .scale_up_utilisation_pct
        .is_some_and(|t| total_slots > 0 && m.utilisation_pct >= t);
    if busy_enough {
        target = target.max(live + 1);
        why_up.push(format!("utilisation {}%", m.utilisation_pct));
    }
    let p = &policy.predictive;
    if p.enabled {
        let forecast = history.arrivals.peak_ahead(p, now_ms) * p.concurrency_pct as f64 / 100.0;
        let w = (forecast / job_slots as f64).ceil();
        m.forecast_workers = if w.is_finite() && w > 0.0 {
            (w.min(policy.max_workers as f64)) as u32
        } else {
            0
        };
        if m.forecast_workers > target {
            why_up.push(format!(
                "pre-warming {} workers for {forecast:.1} jobs forecast within {}",
                m.forecast_workers,
                fmt_ms(p.lead_ms)
            ));
        }
        target = target.max(m.forecast_workers);
    }
    let below_min = policy.min_workers.saturating_sub(live);
    if below_min > 0 {
        why_up.push(format!("{live} workers, below min {}", policy.min_workers));
    }
    let ceiling = policy.max_workers.max(policy.min_workers);
    if target > ceiling {
        why_up.push(format!("capped at max {} workers", policy.max_workers));
    }
    target = target.max(policy.min_workers).min(ceiling);
    m.target_workers = target;
    let wanted = target.saturating_sub(live);
    // Wanted but capped at max (demand beyond it).
    let capped_at_max = live >= policy.max_workers
        && (m.unmet_jobs >= policy.scale_up_queue_min || waiting_long || busy_enough);

    let mut recycle_note = String::new();
    if recycled > 0 || !destroy.is_empty() {
        let mut parts = Vec::new();
        for (cause, label) in [
            (StopCause::Ephemeral, "ephemeral workers done"),
            (StopCause::MaxJobs, "at max jobs per worker"),
            (StopCause::MaxAge, "past max worker age"),
        ] {
            let n = stops.iter().filter(|s| s.cause == cause).count();
            if n > 0 {
                parts.push(format!("{n} {label}"));
            }
        }
        if !destroy.is_empty() {
            parts.push(format!(
                "{} failed to register within {}",
                destroy.len(),
                fmt_ms(policy.register_timeout_ms)
            ));
        }
        recycle_note = format!("recycling: {}", parts.join(", "));
    }
    let with_note = |s: String| -> String {
        match (s.is_empty(), recycle_note.is_empty()) {
            (_, true) => s,
            (true, false) => recycle_note.clone(),
            (false, false) => format!("{s}; {recycle_note}"),
        }
    };
    let base = |kind: DecisionKind, reason: String| PoolDecision {
        kind,
        provision: 0,
        providers: Vec::new(),
        stops: stops.clone(),
        destroy: destroy.clone(),
        reason: with_note(reason),
        metrics: m,
    };
    let quiet_kind = if stops.is_empty() && destroy.is_empty() {
        DecisionKind::Steady
    } else {
        DecisionKind::Drain
    };

    if wanted > 0 {
        let up = Want {
            live,
            wanted,
            below_min,
            destroyed: destroy.len() as u64,
        };
        return scale_up(spec, policy, state, history, now_ms, up, &why_up, base);
    }
    if capped_at_max {
        let why = format!(
            "at max {} workers with {} jobs waiting",
            policy.max_workers, m.unmet_jobs
        );
        return base(DecisionKind::Blocked { why: why.clone() }, why);
    }

    // 5. Scale down: nothing unmet, above the floor, after the cooldown.
    let floor = policy.min_workers.max(m.forecast_workers);
    if m.unmet_jobs > 0 || waiting_long || live <= floor {
        return base(quiet_kind, String::new()).steady_reason();
    }
    let last = history
        .last_scale_up_at_ms
        .max(history.last_scale_down_at_ms);
    if let Some(t) = last
        && now_ms.saturating_sub(t) < policy.scale_down_cooldown_ms
    {
        let left = policy.scale_down_cooldown_ms - now_ms.saturating_sub(t);
        return base(
            quiet_kind,
            format!("scale-down cooldown {} left", fmt_ms(left)),
        );
    }
    let mut idle: Vec<(u64, &WorkerId)> = kept
        .iter()
        .filter(|w| w.state == WorkerState::Idle && w.running_jobs == 0)
        .filter_map(|w| w.idle_since_ms.map(|t| (t, &w.id)))
        .filter(|(t, _)| now_ms.saturating_sub(*t) >= policy.idle_timeout_ms)
        .collect();
    idle.sort();
    let room = (live - floor).min(policy.max_step_down) as usize;
    let mut retire: Vec<WorkerId> = Vec::new();
    for (_, id) in idle {
        if retire.len() >= room {
            break;
        }
        let k = retire.len() as u64 + 1;
        // Keep a slot for every job this pool scales for.
        if incoming.saturating_sub(k * job_slots as u64) < m.demand_jobs {
            break;
        }
        // Stay below the utilisation that would scale back up (no flapping).
        if let Some(t) = policy.scale_up_utilisation_pct {
            let left = total_slots.saturating_sub(k * slots as u64);
            if busy_slots > 0 && (left == 0 || busy_slots * 100 / left >= t as u64) {
                break;
            }
        }
        retire.push(id.clone());
    }
    if retire.is_empty() {
        return base(quiet_kind, String::new()).steady_reason();
    }
    let reason = format!(
        "{} workers idle for {}+, above {} {floor}",
        retire.len(),
        fmt_ms(policy.idle_timeout_ms),
        if floor > policy.min_workers {
            "forecast"
        } else {
            "min"
        }
    );
    let mut out = base(DecisionKind::ScaleDown, reason);
    out.stops
        .extend(retire.into_iter().map(|worker| WorkerStop {
            worker,
            mode: StopMode::Retire,
            cause: StopCause::IdleTimeout,
        }));
    out
}

impl PoolDecision {
    fn steady_reason(mut self) -> PoolDecision {
        if self.reason.is_empty() {
            self.reason = "steady".into();
        }
        self
    }
}

/// The counts a scale-up starts from.
struct Want {
    /// Workers that stay (provisioning + registered, not recycled).
    live: u32,
    /// Workers wanted on top of them.
    wanted: u32,
    /// Of which needed to reach `min_workers` (not held back by the cooldown).
    below_min: u32,
    /// Failed registrations being destroyed (no longer held against the quota).
    destroyed: u64,
}

#[allow(clippy::too_many_arguments)] // the decision's pieces, passed explicitly rather than bundled
fn scale_up(
    spec: &PoolSpec,
    policy: &ScalingPolicy,
    state: &PoolState,
    history: &ScalingHistory,
    now_ms: u64,
    want: Want,
    why_up: &[String],
    base: impl Fn(DecisionKind, String) -> PoolDecision,
) -> PoolDecision {
    let Want {
        live,
        wanted,
        below_min,
        destroyed,
    } = want;
    let mut limits: Vec<String> = Vec::new();
    let mut n = wanted;
    // Cooldown: only restoring the minimum goes ahead.
    if let Some(t) = history.last_scale_up_at_ms
        && now_ms.saturating_sub(t) < policy.scale_up_cooldown_ms
        && n > below_min
    {
        n = below_min;
        let left = policy.scale_up_cooldown_ms - now_ms.saturating_sub(t);
        limits.push(format!("scale-up cooldown {} left", fmt_ms(left)));
    }
    let room = policy.max_workers.saturating_sub(live);
    if n > room {
        n = room;
        limits.push(format!("at max {} workers", policy.max_workers));
    }
    if n > policy.max_step_up {
        n = policy.max_step_up;
        limits.push(format!("step limit {}", policy.max_step_up));
    }
    // Quota: what the pool holds, draining and recycled workers included.
    let held = state
        .workers
        .iter()
        .filter(|w| w.state != WorkerState::Terminated)
        .count() as u64;
    let held = held.saturating_sub(destroyed);
    let q = &policy.quota;
    let cap = &spec.template.capacity;
    let mut quota_room = |limit: Option<u64>, per: u64, field: &str, n: &mut u32| {
        if let Some(max) = limit {
            let used = held.saturating_mul(per);
            // A template without that resource never reaches the limit.
            let r = max
                .saturating_sub(used)
                .checked_div(per)
                .unwrap_or(u64::MAX);
            if (*n as u64) > r {
                *n = r as u32;
                limits.push(format!(
                    "quota {field} {max} reached ({held} workers hold {used})"
                ));
            }
        }
    };
    quota_room(q.max_workers.map(u64::from), 1, "max_workers", &mut n);
    quota_room(q.max_cpu_millis, cap.cpu_millis, "max_cpu_millis", &mut n);
    quota_room(
        q.max_memory_bytes,
        cap.memory_bytes,
        "max_memory_bytes",
        &mut n,
    );
    // Providers: one choice per worker, capacity used as it goes.
    let mut providers = Vec::new();
    if !state.providers.is_empty() && n > 0 {
        let mut statuses = state.providers.clone();
        let mut labels: BTreeMap<String, String> = spec.template.labels.clone();
        labels.insert(POOL_LABEL.to_string(), spec.id.to_string());
        for i in 0..n {
            match select_provider(
                &statuses,
                policy.provider_strategy,
                &policy.provider_selector,
                &labels,
                history.provider_rr_counter.wrapping_add(i as u64),
                now_ms,
            ) {
                Ok(name) => {
                    if let Some(s) = statuses.iter_mut().find(|s| s.name == name) {
                        s.capacity_remaining = s.capacity_remaining.map(|c| c.saturating_sub(1));
                    }
                    providers.push(name);
                }
                Err(why) => {
                    limits.push(format!("no provider: {}", why.join("; ")));
                    break;
                }
            }
        }
        n = providers.len() as u32;
    }
    let why_up = why_up.join("; ");
    if n == 0 {
        let why = limits.join("; ");
        return base(
            DecisionKind::Blocked { why: why.clone() },
            format!("{why_up}: blocked by {why}"),
        );
    }
    let mut reason = format!("+{n}: {why_up}");
    if n < wanted {
        reason.push_str(&format!(" ({wanted} wanted; {})", limits.join("; ")));
    }
    let mut out = base(DecisionKind::ScaleUp, reason);
    out.provision = n;
    out.providers = providers;
    out
}
