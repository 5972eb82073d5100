//! `ScalingHistory`: what the autoscaler remembers between decisions — when it last scaled (for
//! cooldowns), the provider round-robin counter, and arrivals per time-of-day bucket (for
//! pre-warming). Plain data, updated by pure functions, serde-able so the caller may persist it.

use serde::{Deserialize, Serialize};

use super::config::PredictiveConfig;
use super::decide::{DecisionKind, PoolDecision};

/// The memory of one pool's autoscaler.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScalingHistory {
    /// When the last decision that provisioned was taken.
    pub last_scale_up_at_ms: Option<u64>,
    /// When the last decision that retired idle workers was taken.
    pub last_scale_down_at_ms: Option<u64>,
    /// Advanced by one per provider selected (round-robin).
    pub provider_rr_counter: u64,
    /// Arrivals per time-of-day bucket.
    pub arrivals: ArrivalHistory,
}

/// EWMA of job arrivals per bucket of a recurring period.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ArrivalHistory {
    /// Per bucket of the period: EWMA of the arrivals counted in it (`None` = never observed).
    pub ewma: Vec<Option<f64>>,
    /// The absolute bucket number (`ms / bucket_ms`) being counted.
    pub current_bucket: Option<u64>,
    /// Arrivals counted in `current_bucket` so far.
    pub current_count: u64,
    /// The bucket width the vector was built for (a change of config resets the history).
    pub bucket_ms: u64,
    /// The period the vector was built for.
    pub period_ms: u64,
}

impl ScalingHistory {
    /// Remembers when `decision` (taken at `now_ms`) scaled, and the providers it selected.
    pub fn record_decision(&mut self, decision: &PoolDecision, now_ms: u64) {
        if decision.provision > 0 {
            self.last_scale_up_at_ms = Some(now_ms);
        }
        if decision.kind == DecisionKind::ScaleDown {
            self.last_scale_down_at_ms = Some(now_ms);
        }
        self.provider_rr_counter = self
            .provider_rr_counter
            .wrapping_add(decision.providers.len() as u64);
    }
}

impl ArrivalHistory {
    fn buckets(cfg: &PredictiveConfig) -> u64 {
        (cfg.period_ms / cfg.bucket_ms.max(1)).max(1)
    }

    fn fold(&mut self, cfg: &PredictiveConfig, bucket: u64, count: u64) {
        let n = Self::buckets(cfg);
        let slot = (bucket % n) as usize;
        let a = cfg.ewma_alpha_pct.clamp(1, 100) as f64 / 100.0;
        let e = &mut self.ewma[slot];
        *e = Some(match *e {
            None => count as f64,
            Some(old) => a * count as f64 + (1.0 - a) * old,
        });
    }

    /// Counts `n` arrivals at `now_ms`. Buckets that ended since the last call are folded into
    /// their time-of-day EWMA (empty ones as 0, at most one period of them).
    pub fn record_arrivals(&mut self, cfg: &PredictiveConfig, n: u64, now_ms: u64) {
        let buckets = Self::buckets(cfg);
        if self.bucket_ms != cfg.bucket_ms
            || self.period_ms != cfg.period_ms
            || self.ewma.len() as u64 != buckets
        {
            *self = ArrivalHistory {
                ewma: vec![None; buckets as usize],
                bucket_ms: cfg.bucket_ms,
                period_ms: cfg.period_ms,
                ..ArrivalHistory::default()
            };
        }
        let bucket = now_ms / cfg.bucket_ms.max(1);
        match self.current_bucket {
            Some(cur) if bucket > cur => {
                self.fold(cfg, cur, self.current_count);
                // Empty buckets in between, at most one period of them.
                let first_empty = (cur + 1).max(bucket.saturating_sub(buckets));
                for b in first_empty..bucket {
                    self.fold(cfg, b, 0);
                }
                self.current_bucket = Some(bucket);
                self.current_count = n;
            }
            Some(_) => self.current_count += n, // same bucket (or a clock step back)
            None => {
                self.current_bucket = Some(bucket);
                self.current_count = n;
            }
        }
    }

    /// Forecast arrivals in the bucket containing `at_ms` (0 when never observed).
    pub fn forecast(&self, cfg: &PredictiveConfig, at_ms: u64) -> f64 {
        if self.ewma.is_empty() {
            return 0.0;
        }
        let slot = ((at_ms / cfg.bucket_ms.max(1)) % self.ewma.len() as u64) as usize;
        self.ewma[slot].unwrap_or(0.0)
    }

    /// Largest forecast over the buckets from `now_ms` to `now_ms + lead_ms`: what must be warm
    /// now for a burst starting up to `lead_ms` ahead.
    pub fn peak_ahead(&self, cfg: &PredictiveConfig, now_ms: u64) -> f64 {
        let step = cfg.bucket_ms.max(1);
        let steps = cfg.lead_ms / step;
        (0..=steps.min(PREDICTIVE_STEPS_MAX))
            .map(|i| self.forecast(cfg, now_ms.saturating_add(i * step)))
            .fold(0.0, f64::max)
    }
}

const PREDICTIVE_STEPS_MAX: u64 = super::config::PREDICTIVE_BUCKETS_MAX;

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn cfg() -> PredictiveConfig {
        PredictiveConfig {
            enabled: true,
            bucket_ms: 5 * MIN,
            period_ms: 60 * MIN,
            ewma_alpha_pct: 50,
            lead_ms: 10 * MIN,
            concurrency_pct: 100,
        }
    }

    #[test]
    fn a_bucket_is_folded_when_the_next_one_starts() {
        let c = cfg();
        let mut h = ArrivalHistory::default();
        h.record_arrivals(&c, 4, 0);
        h.record_arrivals(&c, 4, MIN);
        assert_eq!(h.forecast(&c, 0), 0.0);
        h.record_arrivals(&c, 0, 5 * MIN);
        assert_eq!(h.forecast(&c, 0), 8.0);
        // One period later the same time of day: EWMA with alpha 0.5.
        h.record_arrivals(&c, 2, 60 * MIN);
        h.record_arrivals(&c, 0, 65 * MIN);
        assert_eq!(h.forecast(&c, 120 * MIN), 5.0);
        // Empty buckets in between were folded as zeros.
        assert_eq!(h.forecast(&c, 30 * MIN), 0.0);
        assert_eq!(h.ewma[6], Some(0.0));
    }

    #[test]
    fn peak_ahead_sees_a_burst_lead_ms_before_it() {
        let c = cfg();
        let mut h = ArrivalHistory::default();
        h.record_arrivals(&c, 10, 30 * MIN);
        h.record_arrivals(&c, 0, 35 * MIN);
        assert_eq!(h.peak_ahead(&c, 15 * MIN), 0.0);
        assert_eq!(h.peak_ahead(&c, 20 * MIN), 10.0);
        assert_eq!(h.peak_ahead(&c, 80 * MIN), 10.0);
    }

    #[test]
    fn a_change_of_bucket_width_resets_the_history() {
        let mut c = cfg();
        let mut h = ArrivalHistory::default();
        h.record_arrivals(&c, 3, 0);
        h.record_arrivals(&c, 0, 5 * MIN);
        c.bucket_ms = MIN;
        h.record_arrivals(&c, 0, 6 * MIN);
        assert_eq!(h.ewma.len(), 60);
        assert!(h.ewma.iter().all(Option::is_none));
    }

    #[test]
    fn history_round_trips_through_json() {
        let mut h = ScalingHistory::default();
        h.arrivals.record_arrivals(&cfg(), 3, 0);
        h.last_scale_up_at_ms = Some(5);
        let s = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<ScalingHistory>(&s).unwrap(), h);
    }
}
