//! The autoscaling policy: pure functions of a pool's workers, its demand, its spec and policy,
//! the history and the clock, returning a decision the caller applies. No actors, no clocks.
//! See `README.md` beside this file for the steps, their order and the guarantees.
//!
//! * [`demand_by_pool`] splits pending jobs between pools with the scheduler's own filters
//!   ([`crate::scheduling::would_fit`] on [`would_be_worker`]) and names the unservable ones.
//! * [`decide_pool`] is the one entry point: one step for one pool.
//! * [`select_provider`], [`on_provision_success`], [`on_provision_failure`]: provider choice and
//!   health. [`ScalingHistory`] keeps cooldown stamps and the arrival forecast.

mod config;
mod decide;
mod demand;
mod history;
mod metrics;
mod provider;

pub use config::{
    DURATION_MS_MAX, PREDICTIVE_BUCKETS_MAX, PoolQuota, PredictiveConfig, ProviderStrategy,
    ScalingError, ScalingPolicy,
};
pub use decide::{
    DecisionKind, DecisionMetrics, PoolDecision, PoolState, StopCause, StopMode, WorkerStop,
    WorkerView, decide_pool,
};
pub use demand::{Demand, POOL_LABEL, PoolDemand, demand_by_pool, would_be_worker};
pub use history::{ArrivalHistory, ScalingHistory};
pub use metrics::{billable_workers, cost_accrued, idle_worker_ms};
pub use provider::{
    PROVIDER_BACKOFF_MS_MAX, PROVIDER_BACKOFF_MS_MIN, PROVIDER_EWMA_ALPHA, ProviderStatus,
    on_provision_failure, on_provision_success, provider_backoff_ms, select_provider,
};

#[cfg(test)]
mod tests;
