//! `ScalingPolicy`: the per-pool knobs of the autoscaler, validated at the edge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::worker::PoolSpec;

/// Longest duration any `*_ms` field accepts (30 days).
pub const DURATION_MS_MAX: u64 = 30 * 24 * 3_600_000;
/// Most predictive buckets per period (24 h of 1-minute buckets).
pub const PREDICTIVE_BUCKETS_MAX: u64 = 1440;

/// A scaling configuration error naming the field, the value and the reason.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ScalingError {
    /// A field holds an invalid value.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field (`scaling.max_step_up`).
        field: String,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

fn invalid(field: &str, value: impl ToString, reason: impl Into<String>) -> ScalingError {
    ScalingError::Invalid {
        field: format!("scaling.{field}"),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// How a provider is picked when a pool may use several ([`super::select_provider`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderStrategy {
    /// Lowest `cost_per_second` first.
    #[default]
    LowestCost,
    /// Lowest start-up time (EWMA) first.
    FastestStartup,
    /// Most remaining capacity first (unlimited counts as most).
    MostCapacity,
    /// Lowest recent failure rate (EWMA) first.
    Healthiest,
    /// Rotate over the eligible providers, by name.
    RoundRobin,
    /// Most pool/template labels matched by the provider's labels first.
    LabelAffinity,
}

/// Resource limits of one pool. What counts is what the pool holds: its non-terminated workers
/// (draining ones included) times the template capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolQuota {
    /// Workers at most.
    pub max_workers: Option<u32>,
    /// Template CPU × workers at most (millicores).
    pub max_cpu_millis: Option<u64>,
    /// Template memory × workers at most (bytes).
    pub max_memory_bytes: Option<u64>,
}

/// Pre-warming from recurring arrival patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictiveConfig {
    /// Off by default.
    pub enabled: bool,
    /// Width of a time-of-day bucket (default 5 min).
    pub bucket_ms: u64,
    /// The recurring period (default 24 h); a multiple of `bucket_ms`.
    pub period_ms: u64,
    /// Weight of the newest observation of a bucket, 1..=100 % (default 30).
    pub ewma_alpha_pct: u32,
    /// Workers are warm this long before the forecast burst (default 10 min).
    pub lead_ms: u64,
    /// Share of the forecast arrivals of a bucket expected to run at once, 1..=1000 % (default
    /// 100: every job arriving in the bucket needs its own slot).
    pub concurrency_pct: u32,
}

impl Default for PredictiveConfig {
    fn default() -> Self {
        PredictiveConfig {
            enabled: false,
            bucket_ms: 5 * 60_000,
            period_ms: 24 * 3_600_000,
            ewma_alpha_pct: 30,
            lead_ms: 10 * 60_000,
            concurrency_pct: 100,
        }
    }
}

/// The autoscaler's knobs for one pool (`[pools.NAME.scaling]`). Durations are `*_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingPolicy {
    /// Workers kept at all times, warm (a *static* pool has `min_workers > 0`; a *dynamic* pool
    /// scales from 0).
    pub min_workers: u32,
    /// Workers at most, provisioning ones included.
    pub max_workers: u32,
    /// Idle workers above the floor retire after this long idle.
    pub idle_timeout_ms: u64,
    /// A provisioning worker that has not registered this long after being started is a
    /// provisioning failure (the caller destroys it).
    pub register_timeout_ms: u64,
    /// Scale up for the queue once this many jobs lack a slot (default 1).
    pub scale_up_queue_min: u64,
    /// Also add a worker when the p90 wait of the pool's jobs reaches this.
    pub scale_up_p90_wait_ms: Option<u64>,
    /// Also add a worker when the average wait of the pool's jobs reaches this.
    pub scale_up_avg_wait_ms: Option<u64>,
    /// Also add a worker when this share of registered slots is busy (1..=100); scale-down keeps
    /// utilisation below it.
    pub scale_up_utilisation_pct: Option<u32>,
    /// After a scale-up, no demand-driven scale-up for this long.
    pub scale_up_cooldown_ms: u64,
    /// After any scale-up or scale-down, no scale-down for this long.
    pub scale_down_cooldown_ms: u64,
    /// Workers provisioned per decision at most.
    pub max_step_up: u32,
    /// Idle workers retired per decision at most (recycling is not counted).
    pub max_step_down: u32,
    /// One job per worker: a worker is drained as soon as its job is assigned and retired after.
    pub ephemeral: bool,
    /// Recycle (drain, then replace) a worker after this many jobs.
    pub max_jobs_per_worker: Option<u64>,
    /// Recycle a worker this long after it registered.
    pub max_worker_age_ms: Option<u64>,
    /// Pool-wide resource limits.
    pub quota: PoolQuota,
    /// Pre-warming.
    pub predictive: PredictiveConfig,
    /// How to pick among the pool's providers.
    pub provider_strategy: ProviderStrategy,
    /// Labels a provider must carry (all of them, same values) to serve this pool.
    pub provider_selector: BTreeMap<String, String>,
}

impl Default for ScalingPolicy {
    fn default() -> Self {
        ScalingPolicy {
            min_workers: 0,
            max_workers: 10,
            idle_timeout_ms: 60_000,
            register_timeout_ms: 30_000,
            scale_up_queue_min: 1,
            scale_up_p90_wait_ms: None,
            scale_up_avg_wait_ms: None,
            scale_up_utilisation_pct: None,
            scale_up_cooldown_ms: 10_000,
            scale_down_cooldown_ms: 60_000,
            max_step_up: 10,
            max_step_down: 5,
            ephemeral: false,
            max_jobs_per_worker: None,
            max_worker_age_ms: None,
            quota: PoolQuota::default(),
            predictive: PredictiveConfig::default(),
            provider_strategy: ProviderStrategy::LowestCost,
            provider_selector: BTreeMap::new(),
        }
    }
}

impl ScalingPolicy {
    /// The policy the foundation's `PoolSpec` implies: its min/max/idle/register fields, no
    /// cooldowns, unbounded steps (the behaviour of the foundation's policy).
    pub fn from_spec(spec: &PoolSpec) -> ScalingPolicy {
        ScalingPolicy {
            min_workers: spec.min_workers,
            max_workers: spec.max_workers,
            idle_timeout_ms: spec.idle_timeout_ms,
            register_timeout_ms: spec.register_timeout_ms,
            scale_up_cooldown_ms: 0,
            scale_down_cooldown_ms: 0,
            max_step_up: u32::MAX,
            max_step_down: u32::MAX,
            ..ScalingPolicy::default()
        }
    }

    /// Checks every field; the error names the field, the value and the reason.
    pub fn validate(&self) -> Result<(), ScalingError> {
        if self.max_workers < self.min_workers {
            return Err(invalid(
                "max_workers",
                self.max_workers,
                format!("below min_workers {}", self.min_workers),
            ));
        }
        if self.max_workers > 100_000 {
            return Err(invalid("max_workers", self.max_workers, "at most 100000"));
        }
        if self.max_step_up == 0 {
            return Err(invalid("max_step_up", 0, "must be at least 1"));
        }
        if self.max_step_down == 0 {
            return Err(invalid("max_step_down", 0, "must be at least 1"));
        }
        if self.scale_up_queue_min == 0 {
            return Err(invalid("scale_up_queue_min", 0, "must be at least 1"));
        }
        if let Some(p) = self.scale_up_utilisation_pct
            && !(1..=100).contains(&p)
        {
            return Err(invalid(
                "scale_up_utilisation_pct",
                p,
                "must be between 1 and 100",
            ));
        }
        if self.max_jobs_per_worker == Some(0) {
            return Err(invalid("max_jobs_per_worker", 0, "must be at least 1"));
        }
        if self.register_timeout_ms < 100 {
            return Err(invalid(
                "register_timeout_ms",
                self.register_timeout_ms,
                "at least 100",
            ));
        }
        let durations = [
            ("idle_timeout_ms", Some(self.idle_timeout_ms)),
            ("register_timeout_ms", Some(self.register_timeout_ms)),
            ("scale_up_p90_wait_ms", self.scale_up_p90_wait_ms),
            ("scale_up_avg_wait_ms", self.scale_up_avg_wait_ms),
            ("scale_up_cooldown_ms", Some(self.scale_up_cooldown_ms)),
            ("scale_down_cooldown_ms", Some(self.scale_down_cooldown_ms)),
            ("max_worker_age_ms", self.max_worker_age_ms),
            ("predictive.lead_ms", Some(self.predictive.lead_ms)),
        ];
        for (field, v) in durations {
            if let Some(v) = v
                && v > DURATION_MS_MAX
            {
                return Err(invalid(field, v, "at most 30 days"));
            }
        }
        if self.max_worker_age_ms == Some(0) {
            return Err(invalid("max_worker_age_ms", 0, "must be at least 1"));
        }
        if self.quota.max_workers == Some(0) {
            return Err(invalid(
                "quota.max_workers",
                0,
                "must be at least 1 (set max_workers = 0 to disable the pool)",
            ));
        }
        let p = &self.predictive;
        if p.enabled {
            if p.bucket_ms < 1_000 {
                return Err(invalid(
                    "predictive.bucket_ms",
                    p.bucket_ms,
                    "at least 1000",
                ));
            }
            if p.period_ms < p.bucket_ms || !p.period_ms.is_multiple_of(p.bucket_ms) {
                return Err(invalid(
                    "predictive.period_ms",
                    p.period_ms,
                    format!("must be a multiple of bucket_ms {}", p.bucket_ms),
                ));
            }
            if p.period_ms / p.bucket_ms > PREDICTIVE_BUCKETS_MAX {
                return Err(invalid(
                    "predictive.period_ms",
                    p.period_ms,
                    format!("at most {PREDICTIVE_BUCKETS_MAX} buckets of bucket_ms"),
                ));
            }
            if !(1..=100).contains(&p.ewma_alpha_pct) {
                return Err(invalid(
                    "predictive.ewma_alpha_pct",
                    p.ewma_alpha_pct,
                    "must be between 1 and 100",
                ));
            }
            if !(1..=1000).contains(&p.concurrency_pct) {
                return Err(invalid(
                    "predictive.concurrency_pct",
                    p.concurrency_pct,
                    "must be between 1 and 1000",
                ));
            }
            if p.lead_ms > p.period_ms {
                return Err(invalid(
                    "predictive.lead_ms",
                    p.lead_ms,
                    "at most period_ms",
                ));
            }
        }
        Ok(())
    }
}
