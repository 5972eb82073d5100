//! The node's metrics registry (Prometheus text format). Later capabilities add their series
//! here; the node serves [`Metrics::encode`] at `/metrics`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: a job or worker state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state's name.
    pub state: String,
}

/// Labels: pool and worker state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolStateLabel {
    /// Pool.
    pub pool: String,
    /// Worker state.
    pub state: String,
}

/// Label: why a message was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Reason.
    pub reason: String,
}

/// Labels: a pending job's priority and tenant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct QueueLabel {
    /// Priority name.
    pub priority: String,
    /// Tenant.
    pub tenant: String,
}

/// Labels: one resource of one worker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct WorkerResourceLabel {
    /// Pool.
    pub pool: String,
    /// Worker.
    pub worker: String,
    /// `cpu`, `memory` or `slots`.
    pub resource: String,
}

/// Labels: a pool and a scaling decision kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PoolKindLabel {
    /// Pool.
    pub pool: String,
    /// `scale_up`, `scale_down`, `drain`, `blocked`.
    pub kind: String,
}

/// Label: a pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PoolLabel {
    /// Pool.
    pub pool: String,
}

/// Every series the node exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Jobs per state (gauge).
    pub jobs: Family<StateLabel, Gauge>,
    /// Accepted submissions.
    pub submissions: Counter,
    /// Attempts assigned to workers.
    pub attempts: Counter,
    /// Jobs that reached a terminal state, per state.
    pub jobs_finished: Family<StateLabel, Counter>,
    /// Workers per pool and state (gauge).
    pub workers: Family<PoolStateLabel, Gauge>,
    /// Journal flush (fsync) latency in seconds.
    pub journal_flush_seconds: Histogram,
    /// Entries per flushed batch.
    pub journal_batch_entries: Histogram,
    /// Journal entries written.
    pub journal_entries: Counter,
    /// Snapshots written.
    pub snapshots: Counter,
    /// Messages refused (malformed, oversized, version).
    pub refused_messages: Family<ReasonLabel, Counter>,
    /// Workers lost (died, silent, disconnected).
    pub workers_lost: Counter,
    /// Actor restarts by supervisors are logged; this counts scheduling cycles.
    pub scheduling_cycles: Counter,
    /// Time the scheduler takes for one cycle (view → plan), in seconds.
    pub scheduling_latency_seconds: Histogram,
    /// Time from when a job became schedulable to its assignment, in seconds.
    pub queue_wait_seconds: Histogram,
    /// Schedulable pending jobs per priority and tenant (gauge).
    pub queue_depth: Family<QueueLabel, Gauge>,
    /// Running attempts evicted for a higher-priority job.
    pub preemptions: Counter,
    /// Running attempts evicted by a `NoExecute` taint.
    pub taint_evictions: Counter,
    /// Jobs a cycle could not place, by the most common reason.
    pub scheduling_failures: Family<ReasonLabel, Counter>,
    /// Jobs held back by a tenant quota in a cycle.
    pub quota_holds: Counter,
    /// Jobs failed at their scheduling deadline.
    pub scheduling_deadline_failures: Counter,
    /// Allocated share of each registered worker's cpu, memory and slots (0–1).
    pub worker_utilisation: Family<WorkerResourceLabel, Gauge<f64, AtomicU64>>,
    /// Scaling decisions carried out, per pool and kind.
    pub scale_events: Family<PoolKindLabel, Counter>,
    /// Time from asking a provider for a worker to its agent registering, in seconds.
    pub provisioning_seconds: Family<PoolLabel, Histogram>,
    /// Workers that failed to come up (create error or no registration in time), per pool.
    pub provisioning_failures: Family<PoolLabel, Counter>,
    /// Idle worker-seconds accrued (capacity paid for and unused), per pool.
    pub idle_worker_seconds: Family<PoolLabel, Counter<f64, AtomicU64>>,
    /// Share of the pool's registered slots that are busy (0–1).
    pub pool_utilisation: Family<PoolLabel, Gauge<f64, AtomicU64>>,
    /// Cost accrued by the pool's workers (providers' `cost_per_second` × worker-seconds).
    pub pool_cost: Family<PoolLabel, Counter<f64, AtomicU64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh registry with every series registered.
    pub fn new() -> Arc<Self> {
        let mut r = Registry::with_prefix("hodei");
        let jobs = Family::<StateLabel, Gauge>::default();
        r.register("jobs", "Jobs by state", jobs.clone());
        let submissions = Counter::default();
        r.register(
            "job_submissions",
            "Accepted job submissions",
            submissions.clone(),
        );
        let attempts = Counter::default();
        r.register(
            "job_attempts",
            "Attempts assigned to workers",
            attempts.clone(),
        );
        let jobs_finished = Family::<StateLabel, Counter>::default();
        r.register(
            "jobs_finished",
            "Jobs that reached a terminal state",
            jobs_finished.clone(),
        );
        let workers = Family::<PoolStateLabel, Gauge>::default();
        r.register("workers", "Workers by pool and state", workers.clone());
        let journal_flush_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        r.register(
            "journal_flush_seconds",
            "Latency of a journal flush (fsync)",
            journal_flush_seconds.clone(),
        );
        let journal_batch_entries = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        r.register(
            "journal_batch_entries",
            "Journal entries made durable by one flush",
            journal_batch_entries.clone(),
        );
        let journal_entries = Counter::default();
        r.register(
            "journal_entries",
            "Journal entries written",
            journal_entries.clone(),
        );
        let snapshots = Counter::default();
        r.register("snapshots", "State snapshots written", snapshots.clone());
        let refused_messages = Family::<ReasonLabel, Counter>::default();
        r.register(
            "refused_messages",
            "Messages refused (malformed, oversized, protocol version)",
            refused_messages.clone(),
        );
        let workers_lost = Counter::default();
        r.register(
            "workers_lost",
            "Workers declared lost",
            workers_lost.clone(),
        );
        let scheduling_cycles = Counter::default();
        r.register(
            "scheduling_cycles",
            "Scheduling cycles run",
            scheduling_cycles.clone(),
        );
        let scheduling_latency_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 20));
        r.register(
            "scheduling_latency_seconds",
            "Time the scheduler takes for one cycle (view to plan)",
            scheduling_latency_seconds.clone(),
        );
        let queue_wait_seconds = Histogram::new(exponential_buckets(0.000_5, 2.0, 24));
        r.register(
            "queue_wait_seconds",
            "Time from a job becoming schedulable to its assignment",
            queue_wait_seconds.clone(),
        );
        let queue_depth = Family::<QueueLabel, Gauge>::default();
        r.register(
            "queue_depth",
            "Pending jobs by priority and tenant",
            queue_depth.clone(),
        );
        let preemptions = Counter::default();
        r.register(
            "preemptions",
            "Running attempts evicted for a higher-priority job",
            preemptions.clone(),
        );
        let taint_evictions = Counter::default();
        r.register(
            "taint_evictions",
            "Running attempts evicted by a NoExecute taint",
            taint_evictions.clone(),
        );
        let scheduling_failures = Family::<ReasonLabel, Counter>::default();
        r.register(
            "scheduling_failures",
            "Jobs a scheduling cycle could not place, by the most common reason",
            scheduling_failures.clone(),
        );
        let quota_holds = Counter::default();
        r.register(
            "quota_holds",
            "Jobs held back by a tenant quota in a scheduling cycle",
            quota_holds.clone(),
        );
        let scheduling_deadline_failures = Counter::default();
        r.register(
            "scheduling_deadline_failures",
            "Jobs failed because they could not be placed before their scheduling deadline",
            scheduling_deadline_failures.clone(),
        );
        let worker_utilisation = Family::<WorkerResourceLabel, Gauge<f64, AtomicU64>>::default();
        r.register(
            "worker_utilisation",
            "Allocated share of a worker's cpu, memory and slots",
            worker_utilisation.clone(),
        );
        let scale_events = Family::<PoolKindLabel, Counter>::default();
        r.register(
            "scale_events",
            "Scaling decisions carried out, per pool and kind",
            scale_events.clone(),
        );
        let provisioning_seconds = Family::<PoolLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        r.register(
            "provisioning_seconds",
            "Time from asking a provider for a worker to its agent registering",
            provisioning_seconds.clone(),
        );
        let provisioning_failures = Family::<PoolLabel, Counter>::default();
        r.register(
            "provisioning_failures",
            "Workers that failed to come up (create error, or no registration in time)",
            provisioning_failures.clone(),
        );
        let idle_worker_seconds = Family::<PoolLabel, Counter<f64, AtomicU64>>::default();
        r.register(
            "idle_worker_seconds",
            "Idle worker-seconds accrued (capacity held and unused)",
            idle_worker_seconds.clone(),
        );
        let pool_utilisation = Family::<PoolLabel, Gauge<f64, AtomicU64>>::default();
        r.register(
            "pool_utilisation",
            "Share of the pool's registered slots that are busy",
            pool_utilisation.clone(),
        );
        let pool_cost = Family::<PoolLabel, Counter<f64, AtomicU64>>::default();
        r.register(
            "pool_cost",
            "Cost accrued by the pool's workers (cost per second of their provider)",
            pool_cost.clone(),
        );
        Arc::new(Self {
            registry: Mutex::new(r),
            jobs,
            submissions,
            attempts,
            jobs_finished,
            workers,
            journal_flush_seconds,
            journal_batch_entries,
            journal_entries,
            snapshots,
            refused_messages,
            workers_lost,
            scheduling_cycles,
            scheduling_latency_seconds,
            queue_wait_seconds,
            queue_depth,
            preemptions,
            taint_evictions,
            scheduling_failures,
            quota_holds,
            scheduling_deadline_failures,
            worker_utilisation,
            scale_events,
            provisioning_seconds,
            provisioning_failures,
            idle_worker_seconds,
            pool_utilisation,
            pool_cost,
        })
    }

    /// Lets later capabilities register more series.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.lock().expect("metrics registry lock"))
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().expect("metrics registry lock");
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_exported_in_prometheus_text() {
        let m = Metrics::new();
        m.submissions.inc();
        m.jobs
            .get_or_create(&StateLabel {
                state: "pending".into(),
            })
            .set(3);
        m.journal_flush_seconds.observe(0.0002);
        let text = m.encode();
        assert!(text.contains("hodei_job_submissions_total 1"), "{text}");
        assert!(text.contains("hodei_jobs{state=\"pending\"} 3"), "{text}");
        assert!(
            text.contains("hodei_journal_flush_seconds_bucket"),
            "{text}"
        );
    }
}
