//! Choosing among the providers a pool may use, and keeping their health: pure updates after
//! each provisioning attempt, exponential backoff after failures, and a selection strategy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::ProviderStrategy;

/// First backoff after a failed provisioning.
pub const PROVIDER_BACKOFF_MS_MIN: u64 = 1_000;
/// Longest backoff (5 min).
pub const PROVIDER_BACKOFF_MS_MAX: u64 = 300_000;
/// Weight of the newest observation in `startup_ms_ewma` and `recent_failure_rate`.
pub const PROVIDER_EWMA_ALPHA: f64 = 0.3;

/// What the autoscaler knows about one provider of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderStatus {
    /// Provider name (`local`, `docker`, `k8s-eu`).
    pub name: String,
    /// Labels matched against the pool's (`region`, `arch`).
    pub labels: BTreeMap<String, String>,
    /// Workers it can still start (`None` = unlimited).
    pub capacity_remaining: Option<u32>,
    /// What one worker costs per second.
    pub cost_per_second: f64,
    /// EWMA of provision-to-register time (0 = never measured).
    pub startup_ms_ewma: f64,
    /// EWMA of failures (1) and successes (0).
    pub recent_failure_rate: f64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Not used before this instant.
    pub backoff_until_ms: u64,
    /// The provider's own health check.
    pub healthy: bool,
}

impl ProviderStatus {
    /// A healthy provider with nothing measured yet.
    pub fn new(name: impl Into<String>) -> ProviderStatus {
        ProviderStatus {
            name: name.into(),
            labels: BTreeMap::new(),
            capacity_remaining: None,
            cost_per_second: 0.0,
            startup_ms_ewma: 0.0,
            recent_failure_rate: 0.0,
            consecutive_failures: 0,
            backoff_until_ms: 0,
            healthy: true,
        }
    }

    /// Why it may not be used at `now_ms` (`None` = eligible).
    fn ineligible(&self, selector: &BTreeMap<String, String>, now_ms: u64) -> Option<String> {
        if !self.healthy {
            return Some(format!("{}: unhealthy", self.name));
        }
        if self.backoff_until_ms > now_ms {
            return Some(format!(
                "{}: backing off for {} after {} failures",
                self.name,
                crate::control::fmt_ms(self.backoff_until_ms - now_ms),
                self.consecutive_failures
            ));
        }
        if self.capacity_remaining == Some(0) {
            return Some(format!("{}: no capacity left", self.name));
        }
        if let Some((k, v)) = selector
            .iter()
            .find(|(k, v)| self.labels.get(*k) != Some(*v))
        {
            return Some(format!("{}: lacks label {k}={v}", self.name));
        }
        None
    }
}

/// Backoff after `failures` consecutive failures: 1 s, doubling, at most 5 min.
pub fn provider_backoff_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    (PROVIDER_BACKOFF_MS_MIN << (failures - 1).min(20)).min(PROVIDER_BACKOFF_MS_MAX)
}

/// The status after a worker it started registered `startup_ms` after being asked for.
pub fn on_provision_success(
    status: &ProviderStatus,
    startup_ms: u64,
    _now_ms: u64,
) -> ProviderStatus {
    let a = PROVIDER_EWMA_ALPHA;
    ProviderStatus {
        startup_ms_ewma: if status.startup_ms_ewma == 0.0 {
            startup_ms as f64
        } else {
            a * startup_ms as f64 + (1.0 - a) * status.startup_ms_ewma
        },
        recent_failure_rate: (1.0 - a) * status.recent_failure_rate,
        consecutive_failures: 0,
        backoff_until_ms: 0,
        ..status.clone()
    }
}

/// The status after a provisioning failed (refused, crashed, or did not register in time):
/// backoff 1 s doubling to 5 min, meanwhile other providers are chosen.
pub fn on_provision_failure(status: &ProviderStatus, now_ms: u64) -> ProviderStatus {
    let a = PROVIDER_EWMA_ALPHA;
    let failures = status.consecutive_failures.saturating_add(1);
    ProviderStatus {
        recent_failure_rate: a + (1.0 - a) * status.recent_failure_rate,
        consecutive_failures: failures,
        backoff_until_ms: now_ms.saturating_add(provider_backoff_ms(failures)),
        ..status.clone()
    }
}

/// Picks the provider for one new worker. Eligible: healthy, not backing off, capacity left,
/// carrying every `selector` label. Among those, `strategy` ranks; ties go to the lower name.
/// `pool_labels` feed [`ProviderStrategy::LabelAffinity`]; `rr_counter` feeds RoundRobin.
/// `Err` lists why each provider was refused (`"aws: backing off for 4s after 3 failures"`).
pub fn select_provider(
    statuses: &[ProviderStatus],
    strategy: ProviderStrategy,
    selector: &BTreeMap<String, String>,
    pool_labels: &BTreeMap<String, String>,
    rr_counter: u64,
    now_ms: u64,
) -> Result<String, Vec<String>> {
    let mut why_not = Vec::new();
    let mut eligible: Vec<&ProviderStatus> = Vec::new();
    for s in statuses {
        match s.ineligible(selector, now_ms) {
            Some(r) => why_not.push(r),
            None => eligible.push(s),
        }
    }
    if eligible.is_empty() {
        if why_not.is_empty() {
            why_not.push("no provider configured".into());
        }
        return Err(why_not);
    }
    eligible.sort_by(|a, b| a.name.cmp(&b.name));
    let key = |s: &ProviderStatus| -> f64 {
        match strategy {
            ProviderStrategy::LowestCost => s.cost_per_second,
            ProviderStrategy::FastestStartup => s.startup_ms_ewma,
            ProviderStrategy::MostCapacity => {
                -(s.capacity_remaining.map_or(f64::INFINITY, f64::from))
            }
            ProviderStrategy::Healthiest => {
                s.recent_failure_rate + s.consecutive_failures as f64 * 1e-6
            }
            ProviderStrategy::LabelAffinity => {
                -(pool_labels
                    .iter()
                    .filter(|(k, v)| s.labels.get(*k) == Some(*v))
                    .count() as f64)
            }
            ProviderStrategy::RoundRobin => 0.0,
        }
    };
    let chosen = if strategy == ProviderStrategy::RoundRobin {
        eligible[(rr_counter % eligible.len() as u64) as usize]
    } else {
        // min_by keeps the first of equal keys: the lower name.
        eligible
            .iter()
            .copied()
            .min_by(|a, b| key(a).total_cmp(&key(b)))
            .unwrap_or(eligible[0])
    };
    Ok(chosen.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> ProviderStatus {
        ProviderStatus::new(name)
    }

    fn pick(s: &[ProviderStatus], strategy: ProviderStrategy) -> String {
        select_provider(s, strategy, &BTreeMap::new(), &BTreeMap::new(), 0, 0).unwrap()
    }

    #[test]
    fn lowest_cost_picks_the_cheapest() {
        let s = [
            ProviderStatus {
                cost_per_second: 0.02,
                ..p("a")
            },
            ProviderStatus {
                cost_per_second: 0.01,
                ..p("b")
            },
        ];
        assert_eq!(pick(&s, ProviderStrategy::LowestCost), "b");
    }

    #[test]
    fn fastest_startup_picks_the_quickest() {
        let s = [
            ProviderStatus {
                startup_ms_ewma: 900.0,
                ..p("a")
            },
            ProviderStatus {
                startup_ms_ewma: 30_000.0,
                ..p("b")
            },
        ];
        assert_eq!(pick(&s, ProviderStrategy::FastestStartup), "a");
    }

    #[test]
    fn most_capacity_prefers_unlimited_then_the_largest() {
        let s = [
            ProviderStatus {
                capacity_remaining: Some(3),
                ..p("a")
            },
            ProviderStatus {
                capacity_remaining: Some(9),
                ..p("b")
            },
        ];
        assert_eq!(pick(&s, ProviderStrategy::MostCapacity), "b");
        let s = [s[0].clone(), s[1].clone(), p("c")];
        assert_eq!(pick(&s, ProviderStrategy::MostCapacity), "c");
    }

    #[test]
    fn healthiest_picks_the_lowest_failure_rate() {
        let s = [
            ProviderStatus {
                recent_failure_rate: 0.5,
                ..p("a")
            },
            ProviderStatus {
                recent_failure_rate: 0.1,
                ..p("b")
            },
        ];
        assert_eq!(pick(&s, ProviderStrategy::Healthiest), "b");
    }

    #[test]
    fn round_robin_rotates_by_name() {
        let s = [p("b"), p("a"), p("c")];
        let names: Vec<String> = (0..4)
            .map(|i| {
                select_provider(
                    &s,
                    ProviderStrategy::RoundRobin,
                    &BTreeMap::new(),
                    &BTreeMap::new(),
                    i,
                    0,
                )
                .unwrap()
            })
            .collect();
        assert_eq!(names, ["a", "b", "c", "a"]);
    }

    #[test]
    fn label_affinity_picks_the_provider_matching_most_pool_labels() {
        let l = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = [
            ProviderStatus {
                labels: l(&[("region", "us")]),
                ..p("a")
            },
            ProviderStatus {
                labels: l(&[("region", "eu"), ("arch", "arm64")]),
                ..p("b")
            },
        ];
        let pool = l(&[("region", "eu"), ("arch", "arm64")]);
        let chosen = select_provider(
            &s,
            ProviderStrategy::LabelAffinity,
            &BTreeMap::new(),
            &pool,
            0,
            0,
        );
        assert_eq!(chosen.unwrap(), "b");
        // A selector is a hard requirement whatever the strategy.
        let err = select_provider(
            &s,
            ProviderStrategy::LowestCost,
            &l(&[("region", "ap")]),
            &pool,
            0,
            0,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ["a: lacks label region=ap", "b: lacks label region=ap"]
        );
    }

    #[test]
    fn a_failing_provider_backs_off_and_the_second_one_is_chosen_meanwhile() {
        let cheap = ProviderStatus {
            cost_per_second: 0.01,
            ..p("cheap")
        };
        let dear = ProviderStatus {
            cost_per_second: 0.05,
            ..p("dear")
        };
        assert_eq!(
            pick(&[cheap.clone(), dear.clone()], ProviderStrategy::LowestCost),
            "cheap"
        );
        let mut c = cheap;
        let mut t = 10_000;
        let mut waits = Vec::new();
        for _ in 0..11 {
            c = on_provision_failure(&c, t);
            waits.push(c.backoff_until_ms - t);
            let chosen = select_provider(
                &[c.clone(), dear.clone()],
                ProviderStrategy::LowestCost,
                &BTreeMap::new(),
                &BTreeMap::new(),
                0,
                t,
            );
            assert_eq!(chosen.unwrap(), "dear");
            t = c.backoff_until_ms;
        }
        assert_eq!(
            waits,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000,
                300_000
            ]
        );
        // Backoff over: the cheap one is tried again; a success clears the failures.
        let chosen = select_provider(
            &[c.clone(), dear.clone()],
            ProviderStrategy::LowestCost,
            &BTreeMap::new(),
            &BTreeMap::new(),
            0,
            t,
        );
        assert_eq!(chosen.unwrap(), "cheap");
        let c = on_provision_success(&c, 2_000, t);
        assert_eq!((c.consecutive_failures, c.backoff_until_ms), (0, 0));
        assert!(c.recent_failure_rate > 0.0 && c.recent_failure_rate < 1.0);
        assert_eq!(c.startup_ms_ewma, 2_000.0);
        let c = on_provision_success(&c, 1_000, t);
        assert!((c.startup_ms_ewma - 1_700.0).abs() < 1e-6);
    }

    #[test]
    fn no_eligible_provider_says_why_for_each() {
        let s = [
            ProviderStatus {
                healthy: false,
                ..p("a")
            },
            ProviderStatus {
                capacity_remaining: Some(0),
                ..p("b")
            },
            on_provision_failure(&p("c"), 0),
        ];
        let err = select_provider(
            &s,
            ProviderStrategy::LowestCost,
            &BTreeMap::new(),
            &BTreeMap::new(),
            0,
            500,
        )
        .unwrap_err();
        assert_eq!(
            err,
            [
                "a: unhealthy",
                "b: no capacity left",
                "c: backing off for 500ms after 1 failures"
            ]
        );
    }
}
