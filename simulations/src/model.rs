//! The simulated cluster: pools of workers started by providers with a start-up latency and a
//! failure rate, jobs that arrive, wait, run and end, and the production policies deciding:
//! [`Pipeline::schedule`] on a [`ClusterView`] built from this state (only after something
//! changed: an arrival, an end, a worker registering or going away) and [`decide_pool`] on every
//! autoscaler tick. Worker failure is one crash event plus one detection event
//! `detection_delay_ms` later (what missed heartbeats would find), not a heartbeat per second; a
//! node crash is the same for every worker on the node, plus a restart event. Slow workers and
//! slow provisioning only stretch the durations drawn for them.
//!
//! Invariants are checked where values change: a bind never over-commits a worker nor starts a
//! second live attempt of a job; a tenant never exceeds its quota; a pool never exceeds
//! `max_workers`; a retired worker runs nothing; at the end every job is terminal with a reason.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hodei_runtime::scaling::{
    DecisionKind, POOL_LABEL, PoolState, ScalingHistory, ScalingPolicy, StopMode, WorkerView,
    decide_pool, demand_by_pool,
};
use hodei_runtime::scheduling::{
    ClusterIndex, ClusterView, Pipeline, QueuedJob, RunningJob, SchedulerConfig,
    SchedulingConstraints, WorkerInfo,
};
use hodei_runtime::{
    AttemptNo, Epoch, JobId, PoolId, PoolSpec, ProviderKind, Resources, TenantId, WorkerId,
    WorkerState, WorkerTemplate,
};
use serde::{Deserialize, Serialize};

use crate::engine::{EventLog, EventQueue};
use crate::metrics::{JobRecord, Metrics, RunCounters};
use crate::rng::Rng;
use crate::workload::JobSpec;

/// `[[pools]]` of a scenario: a template, a provider and a scaling policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Pool name.
    pub name: String,
    /// Millicores per worker.
    pub cpu_millis: u64,
    /// MiB per worker.
    pub memory_mib: u64,
    /// GPUs per worker.
    pub gpus: u32,
    /// Concurrent jobs per worker.
    pub slots: u32,
    /// Labels every worker carries.
    pub labels: BTreeMap<String, String>,
    /// Workers registered at time 0 (default: `scaling.min_workers`).
    pub initial_workers: Option<u32>,
    /// Provider start-up latency, uniform in this inclusive range (ms).
    pub startup_ms: [u64; 2],
    /// Chance that a provisioned worker never registers (%).
    pub provision_failure_pct: f64,
    /// Cost of a live worker per hour.
    pub cost_per_hour: f64,
    /// Run the autoscaler on this pool (off = a fixed set of `initial_workers`).
    pub autoscale: bool,
    /// Machines the pool's workers run on (0 = every worker on its own machine). A new worker
    /// goes to the up node with the fewest live workers of the pool; a `node_crash` fault takes
    /// one down with all its workers.
    pub nodes: u32,
    /// The production scaling policy.
    pub scaling: ScalingPolicy,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: "default".into(),
            cpu_millis: 4000,
            memory_mib: 8192,
            gpus: 0,
            slots: 4,
            labels: BTreeMap::new(),
            initial_workers: None,
            startup_ms: [2_000, 10_000],
            provision_failure_pct: 0.0,
            cost_per_hour: 0.10,
            autoscale: true,
            nodes: 0,
            scaling: ScalingPolicy::default(),
        }
    }
}

/// How backfill learns a job's expected end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeLimit {
    /// The job's actual run time is its time limit (a perfect estimate; traces without requested
    /// times are replayed this way, and the output says so).
    #[default]
    Actual,
    /// No time limit: backfill sees no expected ends.
    None,
}

/// A scripted fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// `count` registered workers of `pool` (drawn from the seed) crash at `at_s`; their attempts
    /// are lost, found after `detection_delay_ms`, and retried.
    WorkerCrash {
        /// When.
        at_s: f64,
        /// Which pool.
        pool: String,
        /// How many workers.
        count: u32,
    },
    /// Every provisioning of `pool` between `at_s` and `at_s + duration_s` fails.
    ProviderOutage {
        /// When.
        at_s: f64,
        /// How long.
        duration_s: f64,
        /// Which pool.
        pool: String,
    },
    /// Node `node` (0-based, of the pool's `nodes`) crashes at `at_s` with every worker on it:
    /// their attempts are lost, found after `detection_delay_ms` and retried; workers still
    /// provisioning there never register. The node restarts `down_s` later: a fixed pool
    /// provisions the workers it had there again; an autoscaled pool refills through the
    /// autoscaler (new workers avoid the node while it is down).
    NodeCrash {
        /// When.
        at_s: f64,
        /// Which pool.
        pool: String,
        /// Which node of the pool.
        node: u32,
        /// How long it stays down.
        down_s: f64,
    },
    /// Provisioning of `pool` between `at_s` and `at_s + duration_s` takes `factor` times the
    /// provider's start-up latency.
    SlowProvisioning {
        /// When.
        at_s: f64,
        /// How long.
        duration_s: f64,
        /// Which pool.
        pool: String,
        /// Latency multiplier (>= 1).
        factor: f64,
    },
    /// `count` registered workers of `pool` (drawn from the seed) become slow at `at_s`: every
    /// attempt started on them afterwards runs `factor` times its run time.
    SlowWorkers {
        /// When.
        at_s: f64,
        /// Which pool.
        pool: String,
        /// How many workers.
        count: u32,
        /// Run-time multiplier (>= 1).
        factor: f64,
    },
}

/// One scheduler/autoscaler configuration of a scenario (`[[configs]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Name in the table.
    pub name: String,
    /// The production scheduler configuration.
    pub scheduler: SchedulerConfig,
    /// Per-pool replacements of the scaling policy.
    pub scaling: BTreeMap<String, ScalingPolicy>,
    /// Per-pool replacement of `initial_workers`.
    pub initial_workers: BTreeMap<String, u32>,
    /// Autoscaler period.
    pub autoscale_interval_ms: u64,
    /// Heartbeat timeout: a crashed worker is found this long after it crashed.
    pub detection_delay_ms: u64,
    /// Backfill's expected ends.
    pub time_limit: TimeLimit,
    /// 0: the scheduler runs at every instant something changed. Above 0: changes are batched
    /// and the scheduler runs at the next multiple of this interval (a scheduler actor's cycle;
    /// what large runs need).
    pub schedule_interval_ms: u64,
    /// Virtual time between two samples of the time series (queue length, pool sizes,
    /// utilisation) at the start; doubles whenever `SAMPLES_MAX` samples are kept.
    pub sample_interval_ms: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            name: "default".into(),
            scheduler: SchedulerConfig::default(),
            scaling: BTreeMap::new(),
            initial_workers: BTreeMap::new(),
            autoscale_interval_ms: 10_000,
            detection_delay_ms: 15_000,
            time_limit: TimeLimit::Actual,
            schedule_interval_ms: 0,
            sample_interval_ms: 10_000,
        }
    }
}

/// A violated invariant: the run stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The seed to reproduce it with.
    pub seed: u64,
    /// Virtual time.
    pub at_ms: u64,
    /// What was violated.
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invariant violated at {} ms: {}; reproduce with --seed {}",
            self.at_ms, self.what, self.seed
        )
    }
}

impl std::error::Error for Violation {}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The configuration's name.
    pub name: String,
    /// The event log (its hash identifies the run).
    pub log: EventLog,
    /// Figures.
    pub metrics: Metrics,
    /// Per-job outcomes.
    pub jobs: Vec<JobRecord>,
    /// Virtual time at the end.
    pub sim_ms: u64,
    /// Workers ever started.
    pub workers: u64,
    /// Queue length, pool sizes and utilisation sampled over virtual time.
    pub series: TimeSeries,
}

/// Most samples kept per run: when full, every other sample is dropped and the interval doubles.
pub const SAMPLES_MAX: usize = 1000;

/// The state of a run at one instant (between events).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Virtual time.
    pub t_ms: u64,
    /// Pending jobs.
    pub pending: u32,
    /// Running attempts.
    pub running: u32,
    /// Per pool (scenario order): registered workers (idle, busy or draining).
    pub registered: Vec<u32>,
    /// Per pool: workers provisioning.
    pub provisioning: Vec<u32>,
    /// Allocated cpu ÷ cpu of registered workers, %.
    pub allocated_pct: f64,
}

/// Samples at a fixed interval of virtual time, at most [`SAMPLES_MAX`] of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeSeries {
    /// Current interval between samples.
    pub interval_ms: u64,
    /// Samples in time order.
    pub samples: Vec<Sample>,
    #[serde(skip)]
    next_ms: u64,
}

impl TimeSeries {
    fn new(interval_ms: u64) -> TimeSeries {
        TimeSeries {
            interval_ms: interval_ms.max(1),
            samples: Vec::new(),
            next_ms: 0,
        }
    }

    fn push(&mut self, s: Sample) {
        self.samples.push(s);
        self.next_ms += self.interval_ms;
        if self.samples.len() >= SAMPLES_MAX {
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.interval_ms *= 2;
            self.next_ms = self.samples.last().map_or(0, |s| s.t_ms) + self.interval_ms;
        }
    }
}

#[derive(Debug)]
enum Ev {
    Arrive(usize),
    Finish {
        job: usize,
        attempt: u32,
    },
    Ready(u64),
    Tick,
    Crash {
        pool: usize,
        count: u32,
    },
    Detect(u64),
    Schedule,
    NodeDown {
        pool: usize,
        node: u32,
        down_ms: u64,
    },
    NodeUp {
        pool: usize,
        node: u32,
        workers: u32,
    },
    Slow {
        pool: usize,
        count: u32,
        factor: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JState {
    Future,
    Pending,
    Running(u64),
    Succeeded,
    Failed,
}

#[derive(Debug)]
struct Job {
    spec: JobSpec,
    tenant: TenantId,
    /// What the pipeline sees of the job's constraints (its node selector).
    constraints: Arc<SchedulingConstraints>,
    /// The worker (and its pool's index) of the latest attempt.
    worker: Option<(WorkerId, usize)>,
    state: JState,
    attempt: u32,
    enqueued_at_ms: u64,
    first_start_ms: Option<u64>,
    start_ms: u64,
    end_ms: Option<u64>,
    reason: String,
    lost: u32,
    preempted: u32,
}

#[derive(Debug)]
struct Worker {
    id: WorkerId,
    pool: usize,
    state: WorkerState,
    capacity: Resources,
    allocated: Resources,
    slots: u32,
    running: BTreeSet<usize>,
    idle_since_ms: Option<u64>,
    jobs_completed: u64,
    provisioned_at_ms: u64,
    registered_at_ms: Option<u64>,
    crashed: bool,
    /// The node it runs on (pools with `nodes` > 0).
    node: Option<u32>,
    /// Attempts started here run this many times their run time (slow-worker fault).
    slow_factor: f64,
}

struct Pool {
    spec: PoolSpec,
    cfg: PoolConfig,
    /// What a registered worker carries: the template's labels plus `hodei.io/pool=<name>`
    /// (the control plane adds it at registration).
    worker_labels: BTreeMap<String, String>,
    policy: ScalingPolicy,
    history: ScalingHistory,
    next_index: u64,
    outage_until_ms: Vec<(u64, u64)>,
    /// Slow-provisioning windows: (from, until, latency factor).
    slow_until_ms: Vec<(u64, u64, f64)>,
    /// Per node: down.
    node_down: Vec<bool>,
}

/// One run of one configuration on one workload.
pub struct Simulation {
    seed: u64,
    cfg: RunConfig,
    pipeline: Pipeline,
    pools: Vec<Pool>,
    specs: Vec<PoolSpec>,
    jobs: Vec<Job>,
    workers: BTreeMap<u64, Worker>,
    by_id: BTreeMap<WorkerId, u64>,
    pending: BTreeSet<usize>,
    running: BTreeMap<usize, u64>,
    tenant_use: BTreeMap<TenantId, (u32, u64, u64)>,
    /// Per job: why the last cycle that saw it could not place it.
    last_summary: Vec<Option<String>>,
    q: EventQueue<Ev>,
    log: EventLog,
    provider_rng: Rng,
    fault_rng: Rng,
    now_ms: u64,
    cycle: u64,
    terminal: usize,
    arrived_since_tick: u64,
    counters: RunCounters,
    schedule_queued: bool,
    /// The scheduler's view, kept between cycles: workers rebuilt only when one joins or leaves
    /// (`view_members_dirty`), otherwise the touched ones updated in place; running jobs pushed
    /// on bind and swap-removed on release. The pipeline's outcome does not depend on the order.
    cv: ClusterView,
    view_worker_ix: BTreeMap<u64, usize>,
    view_members_dirty: bool,
    view_touched: BTreeSet<u64>,
    view_running_ix: BTreeMap<usize, usize>,
    series: TimeSeries,
    progress: Option<indicatif::ProgressBar>,
    progress_reported: usize,
    /// Position of each pending job in `cv.pending` (`u32::MAX` = not pending).
    view_pending_ix: Vec<u32>,
    /// The pipeline's per-worker state, kept in step with `cv` by the same deltas.
    index: ClusterIndex,
}

impl Simulation {
    /// Sets up a run. `keep_log` keeps the event-log lines (tests, small runs).
    pub fn new(
        seed: u64,
        pools: &[PoolConfig],
        cfg: &RunConfig,
        jobs: &[JobSpec],
        faults: &[Fault],
        keep_log: bool,
    ) -> anyhow::Result<Simulation> {
        cfg.scheduler
            .validate()
            .map_err(|e| anyhow::anyhow!("config {}: {e}", cfg.name))?;
        let mut sim_pools = Vec::new();
        for p in pools {
            let mut policy = cfg.scaling.get(&p.name).unwrap_or(&p.scaling).clone();
            if !p.autoscale {
                policy.max_workers = policy.max_workers.max(p.initial_workers.unwrap_or(0));
            }
            policy
                .validate()
                .map_err(|e| anyhow::anyhow!("pool {}: {e}", p.name))?;
            let spec = PoolSpec {
                id: PoolId::new(p.name.as_str())?,
                provider: ProviderKind::Local,
                min_workers: policy.min_workers,
                max_workers: policy.max_workers,
                template: WorkerTemplate {
                    capacity: Resources {
                        cpu_millis: p.cpu_millis,
                        memory_bytes: p.memory_mib << 20,
                        ephemeral_storage_bytes: 0,
                        gpus: p.gpus,
                    },
                    slots: p.slots.max(1),
                    labels: p.labels.clone(),
                    taints: Vec::new(),
                    env: BTreeMap::new(),
                    command: Vec::new(),
                    image: None,
                },
                idle_timeout_ms: policy.idle_timeout_ms,
                register_timeout_ms: policy.register_timeout_ms,
                scaling: policy.clone(),
                providers: Vec::new(),
            };
            let mut worker_labels = p.labels.clone();
            worker_labels.insert(POOL_LABEL.to_string(), p.name.clone());
            sim_pools.push(Pool {
                spec,
                cfg: p.clone(),
                worker_labels,
                policy,
                history: ScalingHistory::default(),
                next_index: 0,
                outage_until_ms: Vec::new(),
                slow_until_ms: Vec::new(),
                node_down: vec![false; p.nodes as usize],
            });
        }
        let mut sim_jobs = Vec::with_capacity(jobs.len());
        for (i, j) in jobs.iter().enumerate() {
            let constraints = SchedulingConstraints {
                node_selector: j.node_selector.clone(),
                ..SchedulingConstraints::default()
            };
            constraints
                .validate()
                .map_err(|e| anyhow::anyhow!("job {i}: {e}"))?;
            sim_jobs.push(Job {
                spec: j.clone(),
                tenant: TenantId::new(j.tenant.as_str())?,
                constraints: Arc::new(constraints),
                worker: None,
                state: JState::Future,
                attempt: 0,
                enqueued_at_ms: 0,
                first_start_ms: None,
                start_ms: 0,
                end_ms: None,
                reason: String::new(),
                lost: 0,
                preempted: 0,
            });
        }
        let mut sim = Simulation {
            seed,
            pipeline: Pipeline::new(cfg.scheduler.clone()),
            cfg: cfg.clone(),
            specs: sim_pools.iter().map(|p| p.spec.clone()).collect(),
            pools: sim_pools,
            jobs: sim_jobs,
            workers: BTreeMap::new(),
            by_id: BTreeMap::new(),
            pending: BTreeSet::new(),
            running: BTreeMap::new(),
            tenant_use: BTreeMap::new(),
            last_summary: vec![None; jobs.len()],
            q: EventQueue::default(),
            log: EventLog::new(keep_log),
            provider_rng: Rng::stream(seed, 3),
            fault_rng: Rng::stream(seed, 4),
            now_ms: 0,
            cycle: 0,
            terminal: 0,
            arrived_since_tick: 0,
            counters: RunCounters::default(),
            schedule_queued: false,
            cv: ClusterView::default(),
            view_worker_ix: BTreeMap::new(),
            view_members_dirty: true,
            view_touched: BTreeSet::new(),
            view_running_ix: BTreeMap::new(),
            series: TimeSeries::new(cfg.sample_interval_ms),
            progress: None,
            progress_reported: 0,
            view_pending_ix: vec![u32::MAX; jobs.len()],
            index: ClusterIndex::new(),
        };
        for (i, j) in jobs.iter().enumerate() {
            sim.q.push(j.arrival_ms, Ev::Arrive(i));
        }
        for f in faults {
            match f {
                Fault::WorkerCrash { at_s, pool, count } => {
                    let p = sim.pool_index(pool)?;
                    sim.q.push(
                        (at_s * 1000.0) as u64,
                        Ev::Crash {
                            pool: p,
                            count: *count,
                        },
                    );
                }
                Fault::ProviderOutage {
                    at_s,
                    duration_s,
                    pool,
                } => {
                    let p = sim.pool_index(pool)?;
                    let from = (at_s * 1000.0) as u64;
                    sim.pools[p]
                        .outage_until_ms
                        .push((from, from + (duration_s * 1000.0) as u64));
                }
                Fault::NodeCrash {
                    at_s,
                    pool,
                    node,
                    down_s,
                } => {
                    let p = sim.pool_index(pool)?;
                    if *node >= sim.pools[p].cfg.nodes {
                        anyhow::bail!(
                            "fault node_crash: node {node} of pool {pool}, which has {} nodes",
                            sim.pools[p].cfg.nodes
                        );
                    }
                    sim.q.push(
                        (at_s * 1000.0) as u64,
                        Ev::NodeDown {
                            pool: p,
                            node: *node,
                            down_ms: (down_s * 1000.0) as u64,
                        },
                    );
                }
                Fault::SlowProvisioning {
                    at_s,
                    duration_s,
                    pool,
                    factor,
                } => {
                    let p = sim.pool_index(pool)?;
                    check_factor("slow_provisioning", *factor)?;
                    let from = (at_s * 1000.0) as u64;
                    sim.pools[p].slow_until_ms.push((
                        from,
                        from + (duration_s * 1000.0) as u64,
                        *factor,
                    ));
                }
                Fault::SlowWorkers {
                    at_s,
                    pool,
                    count,
                    factor,
                } => {
                    let p = sim.pool_index(pool)?;
                    check_factor("slow_workers", *factor)?;
                    sim.q.push(
                        (at_s * 1000.0) as u64,
                        Ev::Slow {
                            pool: p,
                            count: *count,
                            factor: *factor,
                        },
                    );
                }
            }
        }
        for p in 0..sim.pools.len() {
            let n = cfg
                .initial_workers
                .get(&sim.pools[p].cfg.name)
                .copied()
                .or(sim.pools[p].cfg.initial_workers)
                .unwrap_or(sim.pools[p].policy.min_workers);
            for _ in 0..n {
                let node = sim.pick_node(p).unwrap_or(None);
                let k = sim.add_worker(p);
                sim.workers.get_mut(&k).expect("worker").node = node;
                sim.register(k);
            }
        }
        if sim.pools.iter().any(|p| p.cfg.autoscale) {
            sim.q.push(0, Ev::Tick);
        }
        Ok(sim)
    }

    /// Reports progress (jobs ended) to `bar` while running.
    pub fn set_progress(&mut self, bar: indicatif::ProgressBar) {
        self.progress = Some(bar);
    }

    fn pool_index(&self, name: &str) -> anyhow::Result<usize> {
        self.pools
            .iter()
            .position(|p| p.cfg.name == name)
            .ok_or_else(|| anyhow::anyhow!("fault names unknown pool {name:?}"))
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.seed,
            at_ms: self.now_ms,
            what,
        }
    }

    /// Runs to the end: every job terminal, no event left.
    pub fn run(mut self) -> Result<RunResult, Violation> {
        while let Some(t) = self.q.peek_time() {
            // The state between events is constant: samples due before `t` see it as it is.
            while self.series.next_ms < t {
                self.sample(self.series.next_ms);
            }
            self.now_ms = t;
            let mut dirty = false;
            while self.q.peek_time() == Some(t) {
                let (_, ev) = self.q.pop().expect("peeked");
                dirty |= self.handle(ev)?;
            }
            if dirty && !self.pending.is_empty() {
                let every = self.cfg.schedule_interval_ms;
                if every == 0 {
                    self.schedule()?;
                } else if !self.schedule_queued {
                    self.schedule_queued = true;
                    self.q.push((t / every + 1) * every, Ev::Schedule);
                }
            }
            if let Some(bar) = &self.progress
                && self.terminal >= self.progress_reported + (self.jobs.len() / 500).max(1)
            {
                bar.set_position(self.terminal as u64);
                self.progress_reported = self.terminal;
            }
        }
        self.sample(self.now_ms);
        // Nothing left to happen: what still waits can never run.
        let left: Vec<usize> = self.pending.iter().copied().collect();
        for j in left {
            let why = self.last_summary[j]
                .take()
                .unwrap_or_else(|| "no capacity ever offered".into());
            self.unpend(j);
            self.end_job(j, JState::Failed, format!("never placed: {why}"));
        }
        self.finish()
    }

    fn handle(&mut self, ev: Ev) -> Result<bool, Violation> {
        let now = self.now_ms;
        match ev {
            Ev::Arrive(j) => {
                let job = &mut self.jobs[j];
                job.state = JState::Pending;
                job.enqueued_at_ms = now;
                self.pend(j);
                self.arrived_since_tick += 1;
                self.log.record(now, format_args!("arrive j{j}"));
                Ok(true)
            }
            Ev::Finish { job, attempt } => {
                let JState::Running(k) = self.jobs[job].state else {
                    return Ok(false);
                };
                if self.jobs[job].attempt != attempt || self.workers[&k].crashed {
                    return Ok(false);
                }
                self.release(job, k);
                self.workers.get_mut(&k).expect("worker").jobs_completed += 1;
                match self.jobs[job].spec.exit_code {
                    0 => {
                        self.log.record(now, format_args!("finish j{job}"));
                        self.end_job(job, JState::Succeeded, "succeeded".into());
                    }
                    code => self.end_job(job, JState::Failed, format!("exit code {code}")),
                }
                self.after_release(k);
                Ok(true)
            }
            Ev::Ready(k) => {
                let Some(w) = self.workers.get(&k) else {
                    return Ok(false);
                };
                if w.state != WorkerState::Provisioning || w.crashed {
                    return Ok(false);
                }
                self.register(k);
                Ok(true)
            }
            Ev::Tick => {
                let changed = self.autoscale()?;
                if self.terminal < self.jobs.len() {
                    self.q
                        .push(now + self.cfg.autoscale_interval_ms.max(1), Ev::Tick);
                }
                Ok(changed)
            }
            Ev::Crash { pool, count } => {
                let live: Vec<u64> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.pool == pool && w.registered_at_ms.is_some() && !w.crashed)
                    .map(|(k, _)| *k)
                    .collect();
                let mut live = live;
                for _ in 0..count.min(live.len() as u32) {
                    let i = self.fault_rng.range(0, live.len() as u64 - 1) as usize;
                    let k = live.remove(i);
                    self.workers.get_mut(&k).expect("worker").crashed = true;
                    self.counters.crashes += 1;
                    self.log
                        .record(now, format_args!("crash {}", self.workers[&k].id));
                    self.q
                        .push(now + self.cfg.detection_delay_ms, Ev::Detect(k));
                }
                Ok(false)
            }
            Ev::Schedule => {
                self.schedule_queued = false;
                if !self.pending.is_empty() {
                    self.schedule()?;
                }
                Ok(false)
            }
            Ev::Detect(k) => {
                // Already gone (retired while idle, or destroyed after its register timeout).
                let Some(w) = self.workers.get(&k) else {
                    return Ok(false);
                };
                let lost: Vec<usize> = w.running.iter().copied().collect();
                self.log
                    .record(now, format_args!("lost {}", self.workers[&k].id));
                for j in lost {
                    self.release(j, k);
                    self.counters.lost_attempts += 1;
                    let job = &mut self.jobs[j];
                    if job.lost < job.spec.retries {
                        job.lost += 1;
                        self.requeue(j);
                    } else {
                        self.end_job(j, JState::Failed, "worker lost, retries exhausted".into());
                    }
                }
                self.terminate(k);
                Ok(true)
            }
            Ev::NodeDown {
                pool,
                node,
                down_ms,
            } => {
                self.pools[pool].node_down[node as usize] = true;
                let on_node: Vec<u64> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.pool == pool && w.node == Some(node) && !w.crashed)
                    .map(|(k, _)| *k)
                    .collect();
                self.log.record(
                    now,
                    format_args!(
                        "node down {}-node-{node} with {} workers",
                        self.pools[pool].cfg.name,
                        on_node.len()
                    ),
                );
                for &k in &on_node {
                    let w = self.workers.get_mut(&k).expect("worker");
                    w.crashed = true;
                    if w.registered_at_ms.is_some() {
                        self.counters.crashes += 1;
                    }
                    self.q
                        .push(now + self.cfg.detection_delay_ms, Ev::Detect(k));
                }
                self.q.push(
                    now + down_ms,
                    Ev::NodeUp {
                        pool,
                        node,
                        workers: on_node.len() as u32,
                    },
                );
                Ok(false)
            }
            Ev::NodeUp {
                pool,
                node,
                workers,
            } => {
                self.pools[pool].node_down[node as usize] = false;
                self.log.record(
                    now,
                    format_args!("node up {}-node-{node}", self.pools[pool].cfg.name),
                );
                if !self.pools[pool].cfg.autoscale {
                    // A fixed pool's workers come back with their machine.
                    for _ in 0..workers {
                        let k = self.add_worker(pool);
                        self.workers.get_mut(&k).expect("worker").node = Some(node);
                        let delay = self.startup_delay_ms(pool);
                        self.log
                            .record(now, format_args!("provision {}", self.workers[&k].id));
                        self.q.push(now + delay, Ev::Ready(k));
                    }
                }
                Ok(false)
            }
            Ev::Slow {
                pool,
                count,
                factor,
            } => {
                let mut live: Vec<u64> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.pool == pool && w.registered_at_ms.is_some() && !w.crashed)
                    .map(|(k, _)| *k)
                    .collect();
                for _ in 0..count.min(live.len() as u32) {
                    let i = self.fault_rng.range(0, live.len() as u64 - 1) as usize;
                    let k = live.remove(i);
                    let w = self.workers.get_mut(&k).expect("worker");
                    w.slow_factor = factor;
                    self.log
                        .record(now, format_args!("slow {} x{factor}", w.id));
                }
                Ok(false)
            }
        }
    }

    /// The provider's start-up latency for a worker of pool `p` provisioned now (slow
    /// provisioning windows multiply it).
    fn startup_delay_ms(&mut self, p: usize) -> u64 {
        let pool = &self.pools[p];
        let base = self
            .provider_rng
            .range(pool.cfg.startup_ms[0], pool.cfg.startup_ms[1]);
        let now = self.now_ms;
        let factor = pool
            .slow_until_ms
            .iter()
            .filter(|(a, b, _)| (*a..*b).contains(&now))
            .map(|(_, _, f)| *f)
            .fold(1.0, f64::max);
        (base as f64 * factor) as u64
    }

    /// The up node of pool `p` with the fewest live workers (`None`: no node model, or every
    /// node down).
    fn pick_node(&self, p: usize) -> Result<Option<u32>, ()> {
        let pool = &self.pools[p];
        if pool.cfg.nodes == 0 {
            return Ok(None);
        }
        let mut count = vec![0u32; pool.cfg.nodes as usize];
        for w in self.workers.values() {
            if w.pool == p
                && !w.crashed
                && let Some(n) = w.node
            {
                count[n as usize] += 1;
            }
        }
        (0..pool.cfg.nodes)
            .filter(|&n| !pool.node_down[n as usize])
            .min_by_key(|&n| (count[n as usize], n))
            .map(Some)
            .ok_or(())
    }

    fn sample(&mut self, t_ms: u64) {
        let n = self.pools.len();
        let (mut registered, mut provisioning) = (vec![0u32; n], vec![0u32; n]);
        let (mut alloc, mut cap) = (0u64, 0u64);
        for w in self.workers.values() {
            if w.registered_at_ms.is_some() {
                registered[w.pool] += 1;
                alloc += w.allocated.cpu_millis;
                cap += w.capacity.cpu_millis;
            } else {
                provisioning[w.pool] += 1;
            }
        }
        self.series.push(Sample {
            t_ms,
            pending: self.pending.len() as u32,
            running: self.running.len() as u32,
            registered,
            provisioning,
            allocated_pct: if cap == 0 {
                0.0
            } else {
                alloc as f64 * 100.0 / cap as f64
            },
        });
    }

    fn add_worker(&mut self, p: usize) -> u64 {
        let pool = &mut self.pools[p];
        pool.next_index += 1;
        let id = WorkerId::new(format!("{}-{:06}", pool.cfg.name, pool.next_index))
            .expect("pool names are valid ids");
        let k = self.counters.workers_started;
        let w = Worker {
            id: id.clone(),
            pool: p,
            state: WorkerState::Provisioning,
            capacity: pool.spec.template.capacity,
            allocated: Resources::ZERO,
            slots: pool.spec.template.slots,
            running: BTreeSet::new(),
            idle_since_ms: None,
            jobs_completed: 0,
            provisioned_at_ms: self.now_ms,
            registered_at_ms: None,
            crashed: false,
            node: None,
            slow_factor: 1.0,
        };
        self.by_id.insert(id, k);
        self.workers.insert(k, w);
        self.counters.workers_started += 1;
        k
    }

    fn register(&mut self, k: u64) {
        self.view_members_dirty = true;
        let now = self.now_ms;
        let w = self.workers.get_mut(&k).expect("worker");
        w.state = WorkerState::Idle;
        w.registered_at_ms = Some(now);
        w.idle_since_ms = Some(now);
        self.log.record(now, format_args!("ready {}", w.id));
    }

    fn terminate(&mut self, k: u64) {
        self.view_members_dirty = true;
        let now = self.now_ms;
        let w = self.workers.remove(&k).expect("worker");
        self.by_id.remove(&w.id);
        self.counters.workers_terminated += 1;
        self.account_worker(&w, now);
        self.log.record(now, format_args!("stop {}", w.id));
    }

    fn account_worker(&mut self, w: &Worker, end_ms: u64) {
        if let Some(r) = w.registered_at_ms {
            self.counters.capacity_cpu_ms += w.capacity.cpu_millis as u128 * (end_ms - r) as u128;
        }
        if let Some(i) = w.idle_since_ms {
            self.counters.idle_worker_ms += end_ms - i;
        }
        let alive_ms = end_ms - w.provisioned_at_ms;
        self.counters.cost += self.pools[w.pool].cfg.cost_per_hour * alive_ms as f64 / 3_600_000.0;
        self.counters.worker_ms += alive_ms;
    }

    fn release(&mut self, j: usize, k: u64) {
        let now = self.now_ms;
        let job = &self.jobs[j];
        let r = job.spec.resources;
        self.counters.busy_cpu_ms += r.cpu_millis as u128 * (now - job.start_ms) as u128;
        let u = self.tenant_use.get_mut(&job.tenant).expect("tenant use");
        u.0 -= 1;
        u.1 -= r.cpu_millis;
        u.2 -= r.memory_bytes;
        self.running.remove(&j);
        if let Some(i) = self.view_running_ix.remove(&j) {
            self.cv.running.swap_remove(i);
            self.index.job_ended(JobId(j as u64 + 1));
            if let Some(moved) = self.cv.running.get(i) {
                self.view_running_ix.insert((moved.id.0 - 1) as usize, i);
            }
        }
        self.view_touched.insert(k);
        let w = self.workers.get_mut(&k).expect("worker");
        w.allocated = w.allocated.saturating_sub(&r);
        w.running.remove(&j);
    }

    /// A worker lost a job: idle again, or gone if it was draining.
    fn after_release(&mut self, k: u64) {
        self.view_touched.insert(k);
        let now = self.now_ms;
        let w = self.workers.get_mut(&k).expect("worker");
        if w.running.is_empty() {
            match w.state {
                WorkerState::Draining => self.terminate(k),
                WorkerState::Busy => {
                    w.state = WorkerState::Idle;
                    w.idle_since_ms = Some(now);
                }
                _ => {}
            }
        }
    }

    fn requeue(&mut self, j: usize) {
        let job = &mut self.jobs[j];
        job.state = JState::Pending;
        job.attempt += 1;
        job.enqueued_at_ms = self.now_ms;
        self.pend(j);
    }

    fn end_job(&mut self, j: usize, state: JState, reason: String) {
        let job = &mut self.jobs[j];
        job.state = state;
        job.end_ms = Some(self.now_ms);
        if state == JState::Failed {
            self.log
                .record(self.now_ms, format_args!("fail j{j}: {reason}"));
        }
        job.reason = reason;
        self.terminal += 1;
        self.last_summary[j] = None;
    }

    fn worker_info(&self, w: &Worker) -> WorkerInfo {
        WorkerInfo {
            id: w.id.clone(),
            pool: self.pools[w.pool].spec.id.clone(),
            state: w.state,
            capacity: w.capacity,
            allocated: w.allocated,
            slots: w.slots,
            used_slots: w.running.len() as u32,
            labels: self.pools[w.pool].worker_labels.clone(),
            taints: Vec::new(),
        }
    }

    fn running_job(&self, j: usize, k: u64) -> RunningJob {
        let job = &self.jobs[j];
        RunningJob {
            id: JobId(j as u64 + 1),
            worker: self.workers[&k].id.clone(),
            priority: job.spec.priority,
            tenant: job.tenant.clone(),
            resources: job.spec.resources,
            labels: BTreeMap::new(),
            started_at_ms: job.start_ms,
            time_limit_ms: match self.cfg.time_limit {
                TimeLimit::Actual => Some(job.spec.run_ms),
                TimeLimit::None => None,
            },
            tolerations: Vec::new(),
        }
    }

    /// Brings the kept view up to date for a cycle.
    fn refresh_view(&mut self) {
        if self.view_members_dirty {
            let infos: Vec<(u64, WorkerInfo)> = self
                .workers
                .iter()
                .filter(|(_, w)| w.registered_at_ms.is_some())
                .map(|(k, w)| (*k, self.worker_info(w)))
                .collect();
            self.view_worker_ix = infos
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (*k, i))
                .collect();
            self.cv.workers = infos.into_iter().map(|(_, w)| w).collect();
            self.view_members_dirty = false;
            self.index.workers_changed();
        } else {
            for k in std::mem::take(&mut self.view_touched) {
                if let (Some(&i), Some(w)) = (self.view_worker_ix.get(&k), self.workers.get(&k)) {
                    let v = &mut self.cv.workers[i];
                    v.state = w.state;
                    v.allocated = w.allocated;
                    v.used_slots = w.running.len() as u32;
                    self.index.worker_updated(i);
                }
            }
        }
        self.view_touched.clear();
        self.cv.now_ms = self.now_ms;
        self.cv.epoch = Epoch(1);
        self.cv.cycle = self.cycle;
    }

    /// Job `j` waits: into the pending set and the kept view.
    fn pend(&mut self, j: usize) {
        self.pending.insert(j);
        self.view_pending_ix[j] = self.cv.pending.len() as u32;
        let q = self.queued(j);
        self.cv.pending.push(q);
    }

    /// Job `j` no longer waits (the pipeline's outcome does not depend on the pending order).
    fn unpend(&mut self, j: usize) {
        if !self.pending.remove(&j) {
            return;
        }
        let i = std::mem::replace(&mut self.view_pending_ix[j], u32::MAX) as usize;
        self.cv.pending.swap_remove(i);
        if let Some(moved) = self.cv.pending.get(i) {
            self.view_pending_ix[(moved.id.0 - 1) as usize] = i as u32;
        }
    }

    fn queued(&self, j: usize) -> QueuedJob {
        let job = &self.jobs[j];
        QueuedJob {
            id: JobId(j as u64 + 1),
            seq: j as u64,
            priority: job.spec.priority,
            tenant: job.tenant.clone(),
            resources: job.spec.resources,
            labels: BTreeMap::new(),
            constraints: job.constraints.clone(),
            enqueued_at_ms: job.enqueued_at_ms,
            time_limit_ms: match self.cfg.time_limit {
                TimeLimit::Actual => Some(job.spec.run_ms),
                TimeLimit::None => None,
            },
            next_attempt: AttemptNo(job.attempt + 1),
            schedule_failures: 0,
            deadline_at_ms: None,
        }
    }

    fn schedule(&mut self) -> Result<(), Violation> {
        self.cycle += 1;
        self.counters.cycles += 1;
        self.refresh_view();
        let out = self.pipeline.schedule_with(&self.cv, &mut self.index);
        for p in &out.preemptions {
            for v in &p.victims {
                let j = (v.0 - 1) as usize;
                let JState::Running(k) = self.jobs[j].state else {
                    return Err(self.violation(format!("preemption victim j{j} is not running")));
                };
                self.release(j, k);
                self.jobs[j].preempted += 1;
                self.counters.preemptions += 1;
                self.log.record(
                    self.now_ms,
                    format_args!("preempt j{j} for j{}", p.job.0 - 1),
                );
                self.requeue(j);
                self.after_release(k);
            }
        }
        let binds = out
            .preemptions
            .iter()
            .map(|p| (p.job, &p.worker))
            .chain(out.placements.iter().map(|p| (p.job, &p.worker)));
        let binds: Vec<(usize, WorkerId)> = binds
            .map(|(j, w)| ((j.0 - 1) as usize, w.clone()))
            .collect();
        for (j, wid) in binds {
            self.bind(j, &wid)?;
        }
        for e in &out.expired {
            let j = (e.job.0 - 1) as usize;
            self.unpend(j);
            self.end_job(j, JState::Failed, e.reason.clone());
        }
        for u in out.unplaced {
            self.last_summary[(u.job.0 - 1) as usize] = Some(u.summary);
        }
        Ok(())
    }

    fn bind(&mut self, j: usize, wid: &WorkerId) -> Result<(), Violation> {
        let now = self.now_ms;
        if self.jobs[j].state != JState::Pending {
            return Err(self.violation(format!(
                "j{j} placed while {:?}: a second live attempt",
                self.jobs[j].state
            )));
        }
        let Some(&k) = self.by_id.get(wid) else {
            return Err(self.violation(format!("j{j} placed on unknown worker {wid}")));
        };
        let r = self.jobs[j].spec.resources;
        let w = self.workers.get_mut(&k).expect("worker");
        let allocated = w.allocated.saturating_add(&r);
        if !matches!(w.state, WorkerState::Idle | WorkerState::Busy)
            || !allocated.fits_in(&w.capacity)
            || w.running.len() as u32 >= w.slots
        {
            let what = format!(
                "j{j} placed on {wid} ({:?}, {}/{} slots, {:?} of {:?} allocated): over-committed",
                w.state,
                w.running.len(),
                w.slots,
                w.allocated,
                w.capacity
            );
            return Err(self.violation(what));
        }
        w.allocated = allocated;
        w.running.insert(j);
        if let Some(i) = w.idle_since_ms.take() {
            self.counters.idle_worker_ms += now - i;
        }
        w.state = WorkerState::Busy;
        let crashed = w.crashed;
        let slow_factor = w.slow_factor;
        let pool = w.pool;
        self.unpend(j);
        let job = &mut self.jobs[j];
        job.state = JState::Running(k);
        job.worker = Some((wid.clone(), pool));
        job.start_ms = now;
        job.first_start_ms.get_or_insert(now);
        self.running.insert(j, k);
        self.last_summary[j] = None;
        let u = self.tenant_use.entry(job.tenant.clone()).or_default();
        u.0 += 1;
        u.1 += r.cpu_millis;
        u.2 += r.memory_bytes;
        if let Some(q) = self.cfg.scheduler.quotas.get(&job.tenant) {
            let over = q.max_running_jobs.is_some_and(|m| u.0 > m)
                || q.max_cpu_millis.is_some_and(|m| u.1 > m)
                || q.max_memory_bytes.is_some_and(|m| u.2 > m);
            if over {
                let tenant = job.tenant.clone();
                return Err(self.violation(format!("tenant {tenant} over its quota")));
            }
        }
        let attempt = job.attempt;
        let run_ms = if slow_factor == 1.0 {
            job.spec.run_ms
        } else {
            (job.spec.run_ms as f64 * slow_factor) as u64
        };
        self.view_touched.insert(k);
        let rj = self.running_job(j, k);
        self.view_running_ix.insert(j, self.cv.running.len());
        self.index.job_started(&rj);
        self.cv.running.push(rj);
        self.log
            .record(now, format_args!("start j{j} on {wid} attempt {attempt}"));
        // A crashed worker (not yet found) accepts the job and loses it.
        if !crashed {
            self.q.push(now + run_ms, Ev::Finish { job: j, attempt });
        }
        Ok(())
    }

    fn autoscale(&mut self) -> Result<bool, Violation> {
        let now = self.now_ms;
        if !self.pools.iter().any(|p| p.cfg.autoscale) {
            self.arrived_since_tick = 0;
            return Ok(false);
        }
        let pending: Vec<QueuedJob> = self.pending.iter().map(|&j| self.queued(j)).collect();
        let demand = demand_by_pool(&pending, &self.specs, &self.cfg.scheduler, now);
        let arrived = std::mem::take(&mut self.arrived_since_tick);
        let mut changed = false;
        for p in 0..self.pools.len() {
            if !self.pools[p].cfg.autoscale {
                continue;
            }
            let workers: Vec<WorkerView> = self
                .workers
                .values()
                .filter(|w| w.pool == p)
                .map(|w| WorkerView {
                    id: w.id.clone(),
                    state: w.state,
                    free_slots: w.slots.saturating_sub(w.running.len() as u32),
                    running_jobs: w.running.len() as u32,
                    idle_since_ms: w.idle_since_ms,
                    jobs_completed: w.jobs_completed,
                    provisioned_at_ms: Some(w.provisioned_at_ms),
                    registered_at_ms: w.registered_at_ms,
                })
                .collect();
            let pool = &self.pools[p];
            let state = PoolState {
                workers,
                demand: demand
                    .per_pool
                    .get(&pool.spec.id)
                    .cloned()
                    .unwrap_or_default(),
                providers: Vec::new(),
            };
            let d = decide_pool(&pool.spec, &pool.policy, &state, &pool.history, now);
            match d.kind {
                DecisionKind::ScaleUp => self.counters.scale_ups += 1,
                DecisionKind::ScaleDown => self.counters.scale_downs += 1,
                _ => {}
            }
            if !matches!(d.kind, DecisionKind::Steady | DecisionKind::Blocked { .. }) {
                self.log.record(
                    now,
                    format_args!("scale {} {}: {}", pool.cfg.name, d.kind.as_str(), d.reason),
                );
            }
            for id in &d.destroy {
                if let Some(&k) = self.by_id.get(id) {
                    self.counters.provisioning_failures += 1;
                    self.terminate(k);
                    changed = true;
                }
            }
            for s in &d.stops {
                let Some(&k) = self.by_id.get(&s.worker) else {
                    continue;
                };
                match s.mode {
                    StopMode::Retire => {
                        if !self.workers[&k].running.is_empty() {
                            return Err(self.violation(format!("busy worker {} retired", s.worker)));
                        }
                        self.terminate(k);
                    }
                    StopMode::Drain => {
                        let w = self.workers.get_mut(&k).expect("worker");
                        if let Some(i) = w.idle_since_ms.take() {
                            self.counters.idle_worker_ms += now - i;
                        }
                        w.state = WorkerState::Draining;
                        self.view_touched.insert(k);
                        if w.running.is_empty() {
                            self.terminate(k);
                        }
                    }
                }
                changed = true;
            }
            for _ in 0..d.provision {
                let node = self.pick_node(p);
                let k = self.add_worker(p);
                self.workers.get_mut(&k).expect("worker").node = node.unwrap_or(None);
                let pool = &self.pools[p];
                let out = pool
                    .outage_until_ms
                    .iter()
                    .any(|(a, b)| (*a..*b).contains(&now));
                let fails = out
                    || node.is_err()
                    || self.provider_rng.chance_pct(pool.cfg.provision_failure_pct);
                let delay = self.startup_delay_ms(p);
                self.log
                    .record(now, format_args!("provision {}", self.workers[&k].id));
                if !fails {
                    self.q.push(now + delay, Ev::Ready(k));
                }
            }
            let pool = &mut self.pools[p];
            pool.history.record_decision(&d, now);
            pool.history
                .arrivals
                .record_arrivals(&pool.policy.predictive, arrived, now);
            let live = self
                .workers
                .values()
                .filter(|w| {
                    w.pool == p
                        && matches!(
                            w.state,
                            WorkerState::Provisioning | WorkerState::Idle | WorkerState::Busy
                        )
                })
                .count() as u32;
            let max = self.pools[p].policy.max_workers;
            if live > max {
                return Err(self.violation(format!(
                    "pool {} has {live} live workers, max {max}",
                    self.pools[p].cfg.name
                )));
            }
        }
        Ok(changed)
    }

    fn finish(mut self) -> Result<RunResult, Violation> {
        let end = self.now_ms;
        if let Some(j) = self.jobs.iter().position(|j| {
            matches!(
                j.state,
                JState::Future | JState::Pending | JState::Running(_)
            ) || j.reason.is_empty()
        }) {
            return Err(self.violation(format!(
                "j{j} ended the run {:?} without a reason",
                self.jobs[j].state
            )));
        }
        let workers: Vec<u64> = self.workers.keys().copied().collect();
        for k in workers {
            let w = self.workers.remove(&k).expect("worker");
            self.account_worker(&w, end);
        }
        let records: Vec<JobRecord> = self
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| JobRecord {
                job: i as u64,
                tenant: j.spec.tenant.clone(),
                priority: j.spec.priority,
                arrival_ms: j.spec.arrival_ms,
                start_ms: j.first_start_ms,
                end_ms: j.end_ms.unwrap_or(end),
                run_ms: j.spec.run_ms,
                cpu_millis: j.spec.resources.cpu_millis,
                succeeded: j.state == JState::Succeeded,
                reason: j.reason.clone(),
                attempts: j.attempt + 1,
                preempted: j.preempted,
                worker: j.worker.as_ref().map(|(w, _)| w.to_string()),
                pool: j
                    .worker
                    .as_ref()
                    .map(|(_, p)| self.pools[*p].cfg.name.clone()),
            })
            .collect();
        let metrics = Metrics::compute(&records, &self.counters);
        Ok(RunResult {
            name: self.cfg.name.clone(),
            log: self.log,
            metrics,
            jobs: records,
            sim_ms: end,
            workers: self.counters.workers_started,
            series: self.series,
        })
    }
}

fn check_factor(fault: &str, factor: f64) -> anyhow::Result<()> {
    if !(1.0..=1000.0).contains(&factor) {
        anyhow::bail!("fault {fault}: factor {factor} must be between 1 and 1000");
    }
    Ok(())
}
