//! What a job asks of the worker it runs on, and what a worker repels: node selectors, node
//! affinity, taints and tolerations, inter-job affinity / anti-affinity / spread.
//!
//! The semantics follow Kubernetes so the vocabulary carries over: requirements inside a
//! [`NodeSelectorTerm`] are ANDed, terms are ORed; a [`Toleration`] with an empty key and operator
//! `Exists` tolerates every taint; `NotIn` and `DoesNotExist` match workers without the label.
//!
//! Every type decodes from old data (`#[serde(default)]` on every field) and has a `FromStr` for
//! the command line (`zone in (a,b)`, `dedicated=gpu:NoSchedule`, `gpu:Exists`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::SchedulingError;

/// Longest label key or value accepted in a constraint.
pub const LABEL_LEN_MAX: usize = 253;
/// Most entries in any one list of a job's constraints (selector labels, terms, requirements,
/// values, tolerations, job-affinity terms).
pub const CONSTRAINT_ITEMS_MAX: usize = 64;
/// The topology key that names the worker itself: "not two of these on the same worker".
pub const TOPOLOGY_WORKER: &str = "hodei.io/worker";
/// Longest scheduling deadline accepted: 30 days.
pub const SCHEDULING_DEADLINE_MS_MAX: u64 = 30 * 24 * 3600 * 1000;

fn invalid(
    field: impl Into<String>,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> SchedulingError {
    SchedulingError::Invalid {
        field: field.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn check_label(field: &str, s: &str, allow_empty: bool) -> Result<(), SchedulingError> {
    if s.is_empty() && !allow_empty {
        return Err(invalid(field, s, "must not be empty"));
    }
    if s.len() > LABEL_LEN_MAX {
        return Err(invalid(
            field,
            s,
            format!("longer than {LABEL_LEN_MAX} characters"),
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(field, s, "must not contain whitespace"));
    }
    Ok(())
}

fn check_len(field: &str, n: usize) -> Result<(), SchedulingError> {
    if n > CONSTRAINT_ITEMS_MAX {
        return Err(invalid(
            field,
            n.to_string(),
            format!("at most {CONSTRAINT_ITEMS_MAX} entries"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Taints and tolerations
// ---------------------------------------------------------------------------------------------

/// What a taint does to jobs that do not tolerate it. Serialised in snake_case like Hodei's
/// other enums; the Kubernetes spelling (`NoSchedule`) is accepted too.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TaintEffect {
    /// New jobs are not placed on the worker.
    #[default]
    #[serde(alias = "NoSchedule")]
    NoSchedule,
    /// New jobs avoid the worker when they can (a score, not a filter).
    #[serde(alias = "PreferNoSchedule")]
    PreferNoSchedule,
    /// New jobs are not placed, and running ones are evicted (after their toleration seconds).
    #[serde(alias = "NoExecute")]
    NoExecute,
}

impl TaintEffect {
    /// The name as written (`NoSchedule`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

impl FromStr for TaintEffect {
    type Err = SchedulingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "noschedule" => Ok(TaintEffect::NoSchedule),
            "prefernoschedule" => Ok(TaintEffect::PreferNoSchedule),
            "noexecute" => Ok(TaintEffect::NoExecute),
            _ => Err(invalid(
                "taint effect",
                s,
                "expected NoSchedule, PreferNoSchedule or NoExecute",
            )),
        }
    }
}

/// A mark on a worker that repels jobs which do not tolerate it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Taint {
    /// Label-like key (`dedicated`).
    pub key: String,
    /// Value, may be empty.
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
    /// When the taint was put on the worker (NoExecute toleration seconds count from here).
    pub added_at_ms: u64,
}

impl Taint {
    /// `key=value` (or `key` when the value is empty): the form used in reasons.
    pub fn key_value(&self) -> String {
        if self.value.is_empty() {
            self.key.clone()
        } else {
            format!("{}={}", self.key, self.value)
        }
    }

    /// Checks key and value.
    pub fn validate(&self) -> Result<(), SchedulingError> {
        check_label("taint key", &self.key, false)?;
        check_label("taint value", &self.value, true)
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_value(), self.effect.as_str())
    }
}

/// Parses `key=value:Effect` or `key:Effect` (`added_at_ms` is 0; the caller stamps it).
impl FromStr for Taint {
    type Err = SchedulingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kv, effect) = s.trim().rsplit_once(':').ok_or_else(|| {
            invalid(
                "taint",
                s,
                "expected key=value:Effect or key:Effect, e.g. dedicated=gpu:NoSchedule",
            )
        })?;
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        let t = Taint {
            key: key.to_string(),
            value: value.to_string(),
            effect: effect.parse()?,
            added_at_ms: 0,
        };
        t.validate()?;
        Ok(t)
    }
}

/// How a toleration compares its value with a taint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TolerationOperator {
    /// Key and value must be equal.
    #[default]
    #[serde(alias = "Equal")]
    Equal,
    /// Key must be equal (any value); an empty key matches every taint.
    #[serde(alias = "Exists")]
    Exists,
}

/// Lets a job run on (or stay on) a worker despite a matching taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Toleration {
    /// Taint key; empty with `Exists` matches all taints.
    pub key: String,
    /// Operator.
    pub operator: TolerationOperator,
    /// Value (only with `Equal`).
    pub value: String,
    /// Effect to match; `None` matches all effects.
    pub effect: Option<TaintEffect>,
    /// For NoExecute: how long the job may stay after the taint was added; `None` = forever.
    pub toleration_seconds: Option<u64>,
}

impl Toleration {
    /// True when this toleration matches `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if let Some(e) = self.effect
            && e != taint.effect
        {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => self.key.is_empty() || self.key == taint.key,
            TolerationOperator::Equal => self.key == taint.key && self.value == taint.value,
        }
    }

    /// Checks the combination of fields.
    pub fn validate(&self) -> Result<(), SchedulingError> {
        check_label("toleration key", &self.key, true)?;
        check_label("toleration value", &self.value, true)?;
        if self.key.is_empty() && self.operator != TolerationOperator::Exists {
            return Err(invalid(
                "toleration operator",
                "Equal",
                "an empty key (tolerate everything) needs operator Exists",
            ));
        }
        if self.operator == TolerationOperator::Exists && !self.value.is_empty() {
            return Err(invalid(
                "toleration value",
                &self.value,
                "operator Exists takes no value",
            ));
        }
        if self.toleration_seconds.is_some()
            && !matches!(self.effect, None | Some(TaintEffect::NoExecute))
        {
            return Err(invalid(
                "toleration_seconds",
                self.toleration_seconds.unwrap_or(0).to_string(),
                "only meaningful for effect NoExecute",
            ));
        }
        Ok(())
    }
}

/// True when some toleration in `tolerations` matches `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// Parses, Kubernetes-style:
/// * `key=value[:Effect[:seconds]]` — operator Equal;
/// * `key[:Effect[:seconds]]` or `key:Exists` — operator Exists;
/// * `*` or `:Exists` — tolerate everything.
impl FromStr for Toleration {
    type Err = SchedulingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t == "*" || t == ":Exists" {
            return Ok(Toleration {
                operator: TolerationOperator::Exists,
                ..Default::default()
            });
        }
        let mut parts = t.split(':');
        let kv = parts.next().unwrap_or("");
        let effect_part = parts.next();
        let seconds_part = parts.next();
        if parts.next().is_some() {
            return Err(invalid(
                "toleration",
                s,
                "expected key=value:Effect[:seconds], key:Effect or key:Exists",
            ));
        }
        let (key, value, operator) = match kv.split_once('=') {
            Some((k, v)) => (k, v, TolerationOperator::Equal),
            None => (kv, "", TolerationOperator::Exists),
        };
        let effect = match effect_part {
            None => None,
            Some(e) if e.eq_ignore_ascii_case("exists") => {
                if operator == TolerationOperator::Equal {
                    return Err(invalid(
                        "toleration",
                        s,
                        "key=value cannot be combined with Exists; write key:Exists",
                    ));
                }
                None
            }
            Some(e) => Some(e.parse::<TaintEffect>()?),
        };
        let toleration_seconds = match seconds_part {
            None => None,
            Some(n) => Some(n.trim_end_matches('s').parse::<u64>().map_err(|_| {
                invalid(
                    "toleration seconds",
                    n,
                    "expected a whole number of seconds, e.g. 300",
                )
            })?),
        };
        let tol = Toleration {
            key: key.to_string(),
            operator,
            value: value.to_string(),
            effect,
            toleration_seconds,
        };
        tol.validate()?;
        Ok(tol)
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors and node affinity
// ---------------------------------------------------------------------------------------------

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectorOp {
    /// The label's value is one of `values`.
    #[default]
    #[serde(alias = "In")]
    In,
    /// The label is absent or its value is none of `values`.
    #[serde(alias = "NotIn")]
    NotIn,
    /// The label is present.
    #[serde(alias = "Exists")]
    Exists,
    /// The label is absent.
    #[serde(alias = "DoesNotExist")]
    DoesNotExist,
    /// The label's value, as an integer, is greater than the single value.
    #[serde(alias = "Gt")]
    Gt,
    /// The label's value, as an integer, is less than the single value.
    #[serde(alias = "Lt")]
    Lt,
}

/// One requirement on a worker label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LabelRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub op: SelectorOp,
    /// Values (one or more for In/NotIn, none for Exists/DoesNotExist, one integer for Gt/Lt).
    pub values: Vec<String>,
}

impl LabelRequirement {
    /// True when `labels` satisfy the requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            SelectorOp::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            SelectorOp::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            SelectorOp::Exists => v.is_some(),
            SelectorOp::DoesNotExist => v.is_none(),
            SelectorOp::Gt | SelectorOp::Lt => {
                let (Some(v), Some(bound)) = (v, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.op == SelectorOp::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }

    /// Checks the key and the number and form of values for the operator.
    pub fn validate(&self) -> Result<(), SchedulingError> {
        check_label("selector key", &self.key, false)?;
        check_len("selector values", self.values.len())?;
        for v in &self.values {
            check_label("selector value", v, true)?;
        }
        let n = self.values.len();
        match self.op {
            SelectorOp::In | SelectorOp::NotIn if n == 0 => Err(invalid(
                "selector values",
                self.to_string(),
                "In and NotIn need at least one value",
            )),
            SelectorOp::Exists | SelectorOp::DoesNotExist if n != 0 => Err(invalid(
                "selector values",
                self.to_string(),
                "Exists and DoesNotExist take no values",
            )),
            SelectorOp::Gt | SelectorOp::Lt if n != 1 || self.values[0].parse::<i64>().is_err() => {
                Err(invalid(
                    "selector values",
                    self.to_string(),
                    "Gt and Lt take exactly one integer",
                ))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        match self.op {
            SelectorOp::In => write!(f, "{k} in ({})", self.values.join(",")),
            SelectorOp::NotIn => write!(f, "{k} notin ({})", self.values.join(",")),
            SelectorOp::Exists => write!(f, "{k} exists"),
            SelectorOp::DoesNotExist => write!(f, "!{k}"),
            SelectorOp::Gt => write!(f, "{k} gt {}", self.values.join(",")),
            SelectorOp::Lt => write!(f, "{k} lt {}", self.values.join(",")),
        }
    }
}

/// Parses `zone in (a,b)`, `zone notin (a)`, `gpu exists`, `gpu`, `!gpu`, `gpu doesnotexist`,
/// `cores gt 4`, `cores lt 64`, `zone=a`, `zone!=a` (operators are case-insensitive).
impl FromStr for LabelRequirement {
    type Err = SchedulingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = |reason: &str| invalid("selector expression", s, reason);
        let req = if let Some(k) = t.strip_prefix('!') {
            LabelRequirement {
                key: k.trim().to_string(),
                op: SelectorOp::DoesNotExist,
                values: vec![],
            }
        } else if let Some((k, v)) = t.split_once("!=") {
            LabelRequirement {
                key: k.trim().to_string(),
                op: SelectorOp::NotIn,
                values: vec![v.trim().to_string()],
            }
        } else if let Some((k, v)) = t.split_once('=') {
            LabelRequirement {
                key: k.trim().to_string(),
                op: SelectorOp::In,
                values: vec![v.trim_start_matches('=').trim().to_string()],
            }
        } else {
            let mut words = t.splitn(3, char::is_whitespace);
            let key = words.next().unwrap_or("").to_string();
            let op = words.next().map(str::to_ascii_lowercase);
            let rest = words.next().unwrap_or("").trim();
            let list = |rest: &str| -> Result<Vec<String>, SchedulingError> {
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad("expected a parenthesised list, e.g. zone in (a,b)"))?;
                Ok(inner
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect())
            };
            let (op, values) = match op.as_deref() {
                None => (SelectorOp::Exists, vec![]),
                Some("in") => (SelectorOp::In, list(rest)?),
                Some("notin") => (SelectorOp::NotIn, list(rest)?),
                Some("exists") if rest.is_empty() => (SelectorOp::Exists, vec![]),
                Some("doesnotexist") if rest.is_empty() => (SelectorOp::DoesNotExist, vec![]),
                Some("gt") => (SelectorOp::Gt, vec![rest.to_string()]),
                Some("lt") => (SelectorOp::Lt, vec![rest.to_string()]),
                Some(_) => {
                    return Err(bad(
                        "expected KEY in (..), KEY notin (..), KEY exists, !KEY, KEY gt N, KEY lt N",
                    ));
                }
            };
            LabelRequirement { key, op, values }
        };
        req.validate()?;
        Ok(req)
    }
}

/// Requirements that must all hold (AND).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeSelectorTerm {
    /// The requirements.
    pub requirements: Vec<LabelRequirement>,
}

impl NodeSelectorTerm {
    /// True when every requirement holds.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    fn validate(&self) -> Result<(), SchedulingError> {
        check_len("node affinity requirements", self.requirements.len())?;
        self.requirements
            .iter()
            .try_for_each(LabelRequirement::validate)
    }
}

/// Parses `zone in (a,b) && gpu exists` (requirements joined by `&&`).
impl FromStr for NodeSelectorTerm {
    type Err = SchedulingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let requirements = s
            .split("&&")
            .map(str::parse)
            .collect::<Result<Vec<LabelRequirement>, _>>()?;
        Ok(NodeSelectorTerm { requirements })
    }
}

/// A preferred term with its weight (1..=100).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WeightedTerm {
    /// 1..=100.
    pub weight: u32,
    /// The term.
    pub term: NodeSelectorTerm,
}

/// Where a job may (required) and would like to (preferred) run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeAffinity {
    /// Terms ORed; empty means no requirement.
    pub required: Vec<NodeSelectorTerm>,
    /// Soft preferences: a worker scores the sum of the weights of the terms it matches.
    pub preferred: Vec<WeightedTerm>,
}

impl NodeAffinity {
    /// True when there is no required term or one of them matches.
    pub fn required_matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.required.is_empty() || self.required.iter().any(|t| t.matches(labels))
    }

    /// Sum of the weights of the preferred terms `labels` match.
    pub fn preferred_score(&self, labels: &BTreeMap<String, String>) -> u64 {
        self.preferred
            .iter()
            .filter(|w| w.term.matches(labels))
            .map(|w| w.weight as u64)
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Inter-job affinity
// ---------------------------------------------------------------------------------------------

/// What a job-affinity term demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAffinityKind {
    /// Land in a topology domain that already runs a matching job.
    Affinity,
    /// Do not land in a domain that runs a matching job.
    #[default]
    AntiAffinity,
    /// Keep matching jobs evenly spread: count here + self − min count over domains ≤ max_skew.
    Spread {
        /// Largest allowed difference (≥ 1).
        max_skew: u32,
    },
}

/// A term over the labels of running (and already placed this cycle) jobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JobAffinityTerm {
    /// Affinity, anti-affinity or spread.
    pub kind: JobAffinityKind,
    /// Match labels: a job matches when it carries all of them.
    pub selector: BTreeMap<String, String>,
    /// Worker label naming the domain (`zone`, `region`) or [`TOPOLOGY_WORKER`].
    pub topology_key: String,
}

impl JobAffinityTerm {
    /// True when a job with `labels` matches the selector.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        selector_matches(&self.selector, labels)
    }

    fn validate(&self) -> Result<(), SchedulingError> {
        check_label("job affinity topology_key", &self.topology_key, false)?;
        check_len("job affinity selector", self.selector.len())?;
        for (k, v) in &self.selector {
            check_label("job affinity selector key", k, false)?;
            check_label("job affinity selector value", v, true)?;
        }
        if let JobAffinityKind::Spread { max_skew: 0 } = self.kind {
            return Err(invalid("max_skew", "0", "must be at least 1"));
        }
        Ok(())
    }
}

/// True when `labels` carry every `key=value` of `selector` (an empty selector matches all).
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The domain a worker belongs to under `topology_key`, if it has one.
pub fn topology_domain<'a>(
    topology_key: &str,
    worker_id: &'a str,
    labels: &'a BTreeMap<String, String>,
) -> Option<&'a str> {
    if topology_key == TOPOLOGY_WORKER {
        Some(worker_id)
    } else {
        labels.get(topology_key).map(String::as_str)
    }
}

// ---------------------------------------------------------------------------------------------
// All of a job's constraints
// ---------------------------------------------------------------------------------------------

/// Everything a job says about where it may run. `Default` = no constraint, the default profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulingConstraints {
    /// The scheduler profile; `None` = `"default"`.
    pub profile: Option<String>,
    /// Worker labels that must all be present with these values.
    pub node_selector: BTreeMap<String, String>,
    /// Required and preferred node affinity.
    pub node_affinity: NodeAffinity,
    /// Taints the job tolerates.
    pub tolerations: Vec<Toleration>,
    /// Affinity, anti-affinity and spread relative to other jobs.
    pub job_affinity: Vec<JobAffinityTerm>,
    /// Give up scheduling this long after the job was enqueued (the caller turns it into the
    /// absolute [`super::QueuedJob::deadline_at_ms`]).
    pub scheduling_deadline_ms: Option<u64>,
}

impl SchedulingConstraints {
    /// Checks every part; the error names the field, the value and the reason.
    pub fn validate(&self) -> Result<(), SchedulingError> {
        if let Some(p) = &self.profile {
            super::validate_profile_name(p)?;
        }
        check_len("node_selector", self.node_selector.len())?;
        for (k, v) in &self.node_selector {
            check_label("node_selector key", k, false)?;
            check_label("node_selector value", v, true)?;
        }
        check_len("node_affinity.required", self.node_affinity.required.len())?;
        check_len(
            "node_affinity.preferred",
            self.node_affinity.preferred.len(),
        )?;
        for t in &self.node_affinity.required {
            t.validate()?;
        }
        for w in &self.node_affinity.preferred {
            if !(1..=100).contains(&w.weight) {
                return Err(invalid(
                    "node_affinity.preferred weight",
                    w.weight.to_string(),
                    "must be between 1 and 100",
                ));
            }
            w.term.validate()?;
        }
        check_len("tolerations", self.tolerations.len())?;
        self.tolerations.iter().try_for_each(Toleration::validate)?;
        check_len("job_affinity", self.job_affinity.len())?;
        self.job_affinity
            .iter()
            .try_for_each(JobAffinityTerm::validate)?;
        if let Some(d) = self.scheduling_deadline_ms
            && (d == 0 || d > SCHEDULING_DEADLINE_MS_MAX)
        {
            return Err(invalid(
                "scheduling_deadline_ms",
                d.to_string(),
                "must be between 1 ms and 30 days",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn taints_parse_with_and_without_value() {
        let t: Taint = "dedicated=gpu:NoSchedule".parse().unwrap();
        assert_eq!((t.key.as_str(), t.value.as_str()), ("dedicated", "gpu"));
        assert_eq!(t.effect, TaintEffect::NoSchedule);
        assert_eq!(t.to_string(), "dedicated=gpu:NoSchedule");
        let t: Taint = "spot:NoExecute".parse().unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_str(), t.effect),
            ("spot", "", TaintEffect::NoExecute)
        );
        let e = "dedicated=gpu".parse::<Taint>().unwrap_err().to_string();
        assert!(e.contains("key=value:Effect"), "{e}");
        let e = "a=b:Sometimes".parse::<Taint>().unwrap_err().to_string();
        assert!(e.contains("Sometimes") && e.contains("NoExecute"), "{e}");
    }

    #[test]
    fn tolerations_parse_and_match_like_kubernetes() {
        let gpu = Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: TaintEffect::NoSchedule,
            added_at_ms: 0,
        };
        let t: Toleration = "dedicated=gpu:NoSchedule".parse().unwrap();
        assert!(t.tolerates(&gpu));
        let t: Toleration = "dedicated=cpu:NoSchedule".parse().unwrap();
        assert!(!t.tolerates(&gpu));
        let t: Toleration = "dedicated:Exists".parse().unwrap();
        assert_eq!(t.operator, TolerationOperator::Exists);
        assert!(t.tolerates(&gpu));
        let t: Toleration = "dedicated:NoExecute".parse().unwrap();
        assert!(!t.tolerates(&gpu), "effect must match");
        let t: Toleration = "*".parse().unwrap();
        assert!(t.tolerates(&gpu));
        let t: Toleration = "spot:NoExecute:300".parse().unwrap();
        assert_eq!(t.toleration_seconds, Some(300));
        assert!("a=b:Exists".parse::<Toleration>().is_err());
        assert!(
            "a:NoSchedule:30".parse::<Toleration>().is_err(),
            "seconds only for NoExecute"
        );
    }

    #[test]
    fn selector_expressions_parse_and_match() {
        let w = labels(&[("zone", "a"), ("cores", "8")]);
        let cases = [
            ("zone in (a,b)", true),
            ("zone in (b)", false),
            ("zone notin (b,c)", true),
            ("region notin (x)", true),
            ("zone exists", true),
            ("gpu", false),
            ("!gpu", true),
            ("gpu doesnotexist", true),
            ("cores gt 4", true),
            ("cores lt 4", false),
            ("cores GT 8", false),
            ("zone=a", true),
            ("zone!=a", false),
        ];
        for (expr, want) in cases {
            let r: LabelRequirement = expr.parse().unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(r.matches(&w), want, "{expr}");
        }
        let e = "zone in a,b"
            .parse::<LabelRequirement>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("parenthesised"), "{e}");
        let e = "cores gt many"
            .parse::<LabelRequirement>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("integer"), "{e}");
        let e = "zone in ()"
            .parse::<LabelRequirement>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one value"), "{e}");
        assert!("zone frob x".parse::<LabelRequirement>().is_err());
        let r: LabelRequirement = "zone in (a, b)".parse().unwrap();
        assert_eq!(r.to_string(), "zone in (a,b)");
    }

    #[test]
    fn node_affinity_terms_are_ored_and_requirements_anded() {
        let aff = NodeAffinity {
            required: vec![
                "zone in (a) && arch in (arm64)".parse().unwrap(),
                "zone in (b)".parse().unwrap(),
            ],
            preferred: vec![WeightedTerm {
                weight: 7,
                term: "arch in (amd64)".parse().unwrap(),
            }],
        };
        assert!(!aff.required_matches(&labels(&[("zone", "a"), ("arch", "amd64")])));
        assert!(aff.required_matches(&labels(&[("zone", "a"), ("arch", "arm64")])));
        assert!(aff.required_matches(&labels(&[("zone", "b")])));
        assert_eq!(aff.preferred_score(&labels(&[("arch", "amd64")])), 7);
        assert!(NodeAffinity::default().required_matches(&labels(&[])));
    }

    #[test]
    fn constraints_validate_names_field_value_and_reason() {
        let mut c = SchedulingConstraints::default();
        assert!(c.validate().is_ok());
        c.node_affinity.preferred.push(WeightedTerm {
            weight: 101,
            term: NodeSelectorTerm::default(),
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("weight") && e.contains("101") && e.contains("between 1 and 100"),
            "{e}"
        );
        let c = SchedulingConstraints {
            job_affinity: vec![JobAffinityTerm {
                kind: JobAffinityKind::Spread { max_skew: 0 },
                selector: labels(&[("app", "x")]),
                topology_key: "zone".into(),
            }],
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("max_skew"));
        let c = SchedulingConstraints {
            scheduling_deadline_ms: Some(0),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("scheduling_deadline_ms")
        );
    }
}
