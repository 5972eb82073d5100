//! Jobs: the spec a user submits, its validation, and the record the control plane keeps.
//!
//! # Job state machine
//!
//! ```text
//!            submit                 assign                 started
//!   (new) ─────────▶ Pending ───────────────▶ Scheduled ───────────▶ Running
//!                      ▲  │                      │                     │
//!                      │  │ cancel               │ lost / retried /    │ exit 0 ─────▶ Succeeded
//!                      │  ▼                      │ preempted           │ exit ≠ 0, no retry left ─▶ Failed
//!                      │ Cancelled               ▼                     │ timeout, no retry left ──▶ TimedOut
//!                      └──────────────────── (back to Pending) ◀───────┤ cancel ─────▶ Cancelled
//!                                                                      └ failure with retries left: Pending
//! ```
//!
//! * Every terminal state (`Succeeded`, `Failed`, `Cancelled`, `TimedOut`) carries a reason.
//! * Each attempt is numbered (1, 2, …) and stamped with the [`Epoch`] of the control plane that
//!   assigned it; a result naming another attempt or epoch is stale and ignored.
//! * A retry waits `backoff_initial_ms · multiplier^(n-1)`, capped at `backoff_max_ms`.
//! * A preempted attempt or one lost to a graceful node shutdown is not charged against the
//!   retry budget; a failed, timed-out or lost one is.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::SpecError;
use crate::ids::{AttemptNo, Epoch, JobId, TenantId, WorkerId};
use crate::resources::Resources;
use crate::scheduling::SchedulingConstraints;

/// Maximum retries after the first attempt.
pub const RETRIES_MAX: u32 = 100;
/// Longest accepted per-attempt timeout: 30 days.
pub const TIMEOUT_MS_MAX: u64 = 30 * 24 * 3600 * 1000;
/// Longest job name.
pub const JOB_NAME_LEN_MAX: usize = 253;
/// Most arguments in an argv command.
pub const ARGV_LEN_MAX: usize = 4096;
/// Largest total size of a command (argv or shell line) plus environment, in bytes.
pub const COMMAND_AND_ENV_BYTES_MAX: usize = 256 * 1024;
/// Most labels on a job or worker.
pub const LABELS_MAX: usize = 64;
/// Longest idempotency key.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 256;
/// Environment variables with this prefix are set by Hodei and cannot be given in a spec.
pub const RESERVED_ENV_PREFIX: &str = "HODEI_";

/// Scheduling priority; higher priorities are served first. `Ord` sorts highest first
/// (Critical < High < … < Batch, as [`Priority::rank`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served before everything else; may preempt all lower priorities.
    Critical,
    /// Above normal.
    High,
    /// The default.
    #[default]
    Medium,
    /// Below normal.
    Low,
    /// Background work, served last.
    Batch,
}

impl Priority {
    /// All priorities from highest to lowest.
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
        Priority::Batch,
    ];

    /// 0 for Critical … 4 for Batch: sorts highest priority first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Medium => 2,
            Priority::Low => 3,
            Priority::Batch => 4,
        }
    }

    /// Lower-case name as used on the command line and in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
            Priority::Batch => "batch",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "critical" => Ok(Priority::Critical),
            "high" => Ok(Priority::High),
            "medium" | "normal" => Ok(Priority::Medium),
            "low" => Ok(Priority::Low),
            "batch" => Ok(Priority::Batch),
            _ => Err(SpecError::Invalid {
                field: "priority",
                value: s.into(),
                reason: "expected one of critical, high, medium, low, batch".into(),
            }),
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobCommand {
    /// A program and its arguments, executed directly (PATH lookup for the program).
    Argv(Vec<String>),
    /// A shell line, run as `/bin/sh -c LINE`.
    Shell(String),
}

impl JobCommand {
    /// The argv the agent executes.
    pub fn to_argv(&self) -> Vec<String> {
        match self {
            JobCommand::Argv(v) => v.clone(),
            JobCommand::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
        }
    }

    fn byte_len(&self) -> usize {
        match self {
            JobCommand::Argv(v) => v.iter().map(|a| a.len() + 1).sum(),
            JobCommand::Shell(l) => l.len(),
        }
    }
}

impl fmt::Display for JobCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobCommand::Argv(v) => {
                for (i, a) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                        write!(f, "'{}'", a.replace('\'', "'\\''"))?;
                    } else {
                        f.write_str(a)?;
                    }
                }
                Ok(())
            }
            JobCommand::Shell(l) => f.write_str(l),
        }
    }
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = run once).
    pub max_retries: u32,
    /// Wait before the first retry.
    pub backoff_initial_ms: u64,
    /// Upper bound of the wait.
    pub backoff_max_ms: u64,
    /// Growth factor of the wait per retry (≥ 1).
    pub backoff_multiplier: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 0,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 30_000,
            backoff_multiplier: 2,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based).
    pub fn backoff_ms(&self, retry: u32) -> u64 {
        let mut d = self.backoff_initial_ms;
        for _ in 1..retry {
            d = d.saturating_mul(self.backoff_multiplier as u64);
            if d >= self.backoff_max_ms {
                break;
            }
        }
        d.min(self.backoff_max_ms)
    }
}

/// A job as submitted: a command with its resources, labels, priority, tenant, timeout and retry
/// policy. Build one with [`JobSpec::argv`] or [`JobSpec::shell`] and the `with_*` methods, then
/// [`JobSpec::validate`] it (the control plane validates again on submit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Human-readable name (not unique).
    pub name: String,
    /// What to run.
    pub command: JobCommand,
    /// Environment of the job (on top of `PATH` and the `HODEI_JOB_*` variables).
    pub env: BTreeMap<String, String>,
    /// Working directory on the worker; a fresh scratch directory when `None`.
    pub working_dir: Option<String>,
    /// Resources the job requests on its worker.
    pub resources: Resources,
    /// Labels (for selection and listing).
    pub labels: BTreeMap<String, String>,
    /// Scheduling priority.
    pub priority: Priority,
    /// Owner for quotas and fairness.
    pub tenant: TenantId,
    /// Limit on each attempt's run time; `None` = no limit.
    pub timeout_ms: Option<u64>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Submitting twice with the same key (per tenant) yields the same job.
    pub idempotency_key: Option<String>,
    /// Where it may run: scheduler profile, node selector, affinity, tolerations, deadline.
    pub scheduling: SchedulingConstraints,
}

impl JobSpec {
    /// A job running `argv` directly.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(JobCommand::Argv(argv.into_iter().map(Into::into).collect()))
    }

    /// A job running `line` with `/bin/sh -c`.
    pub fn shell(line: impl Into<String>) -> Self {
        Self::new(JobCommand::Shell(line.into()))
    }

    fn new(command: JobCommand) -> Self {
        let name = match &command {
            JobCommand::Argv(v) => v
                .first()
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .unwrap_or_default(),
            JobCommand::Shell(_) => "sh".into(),
        };
        Self {
            name,
            command,
            env: BTreeMap::new(),
            working_dir: None,
            resources: Resources::ZERO,
            labels: BTreeMap::new(),
            priority: Priority::Medium,
            tenant: TenantId::default(),
            timeout_ms: None,
            retry: RetryPolicy::default(),
            idempotency_key: None,
            scheduling: SchedulingConstraints::default(),
        }
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// Sets the priority.
    pub fn with_priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }
    /// Sets the tenant.
    pub fn with_tenant(mut self, t: TenantId) -> Self {
        self.tenant = t;
        self
    }
    /// Sets the per-attempt timeout.
    pub fn with_timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
    /// Sets the number of retries after the first attempt.
    pub fn with_retries(mut self, n: u32) -> Self {
        self.retry.max_retries = n;
        self
    }
    /// Sets the whole retry policy.
    pub fn with_retry_policy(mut self, r: RetryPolicy) -> Self {
        self.retry = r;
        self
    }
    /// Sets the resource request.
    pub fn with_resources(mut self, r: Resources) -> Self {
        self.resources = r;
        self
    }
    /// Adds a label.
    pub fn with_label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    /// Adds an environment variable.
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }
    /// Sets the working directory.
    pub fn with_working_dir(mut self, d: impl Into<String>) -> Self {
        self.working_dir = Some(d.into());
        self
    }
    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, k: impl Into<String>) -> Self {
        self.idempotency_key = Some(k.into());
        self
    }

    /// Sets the scheduling constraints.
    pub fn with_scheduling(mut self, c: SchedulingConstraints) -> Self {
        self.scheduling = c;
        self
    }

    /// Checks every field; the error names the field, the value and the reason.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |field: &'static str, value: &str, reason: &str| SpecError::Invalid {
            field,
            value: value.chars().take(120).collect(),
            reason: reason.into(),
        };
        match &self.command {
            JobCommand::Argv(v) => {
                if v.is_empty() || v[0].trim().is_empty() {
                    return Err(SpecError::Missing {
                        field: "command",
                        reason: "the command is empty; give a program to run".into(),
                    });
                }
                if v.len() > ARGV_LEN_MAX {
                    return Err(invalid(
                        "command",
                        &v.len().to_string(),
                        "more than 4096 arguments",
                    ));
                }
                if let Some(a) = v.iter().find(|a| a.contains('\0')) {
                    return Err(invalid(
                        "command",
                        a,
                        "arguments must not contain NUL bytes",
                    ));
                }
            }
            JobCommand::Shell(l) => {
                if l.trim().is_empty() {
                    return Err(SpecError::Missing {
                        field: "command",
                        reason: "the shell command line is empty".into(),
                    });
                }
                if l.contains('\0') {
                    return Err(invalid("command", l, "must not contain NUL bytes"));
                }
            }
        }
        if self.name.is_empty() {
            return Err(invalid("name", &self.name, "must not be empty"));
        }
        if self.name.len() > JOB_NAME_LEN_MAX || self.name.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "name",
                &self.name,
                "at most 253 characters, no control characters",
            ));
        }
        let mut size = self.command.byte_len();
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(invalid(
                    "env",
                    k,
                    "variable names must be non-empty without '=' or NUL",
                ));
            }
            if k.starts_with(RESERVED_ENV_PREFIX) {
                return Err(invalid(
                    "env",
                    k,
                    "names starting with HODEI_ are reserved for variables Hodei sets",
                ));
            }
            if v.contains('\0') {
                return Err(invalid("env", k, "values must not contain NUL bytes"));
            }
            size += k.len() + v.len() + 2;
        }
        if size > COMMAND_AND_ENV_BYTES_MAX {
            return Err(invalid(
                "command",
                &format!("{size} bytes"),
                "command plus environment exceed 256 KiB",
            ));
        }
        if let Some(d) = &self.working_dir
            && (d.is_empty() || !d.starts_with('/') || d.contains('\0'))
        {
            return Err(invalid(
                "working_dir",
                d,
                "must be an absolute path (or omitted for a scratch directory)",
            ));
        }
        self.resources.validate()?;
        validate_labels("label", &self.labels)?;
        match self.timeout_ms {
            Some(0) => return Err(invalid("timeout", "0s", "must be greater than zero")),
            Some(t) if t > TIMEOUT_MS_MAX => {
                return Err(invalid(
                    "timeout",
                    &format!("{t}ms"),
                    "longer than the maximum of 30 days",
                ));
            }
            _ => {}
        }
        if self.retry.max_retries > RETRIES_MAX {
            return Err(invalid(
                "retries",
                &self.retry.max_retries.to_string(),
                "at most 100",
            ));
        }
        if self.retry.backoff_multiplier == 0 {
            return Err(invalid("backoff multiplier", "0", "must be at least 1"));
        }
        if self.retry.backoff_initial_ms > self.retry.backoff_max_ms {
            return Err(invalid(
                "backoff",
                &format!(
                    "{}ms > {}ms",
                    self.retry.backoff_initial_ms, self.retry.backoff_max_ms
                ),
                "initial backoff exceeds the maximum",
            ));
        }
        if self.retry.backoff_max_ms > 24 * 3600 * 1000 {
            return Err(invalid(
                "backoff",
                &format!("{}ms", self.retry.backoff_max_ms),
                "maximum backoff longer than one day",
            ));
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty()
                || k.len() > IDEMPOTENCY_KEY_LEN_MAX
                || k.chars().any(|c| c.is_control()))
        {
            return Err(invalid(
                "idempotency key",
                k,
                "1 to 256 characters, no control characters",
            ));
        }
        self.scheduling.validate()?;
        Ok(())
    }
}

/// Checks label keys and values (Kubernetes-like: keys up to 63 characters of `[A-Za-z0-9._/-]`,
/// values up to 63 characters of `[A-Za-z0-9._-]`, at most 64 labels).
pub fn validate_labels(
    field: &'static str,
    labels: &BTreeMap<String, String>,
) -> Result<(), SpecError> {
    if labels.len() > LABELS_MAX {
        return Err(SpecError::Invalid {
            field,
            value: format!("{} labels", labels.len()),
            reason: format!("at most {LABELS_MAX} labels"),
        });
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !key_ok {
            return Err(SpecError::Invalid {
                field,
                value: k.clone(),
                reason: "keys are 1-63 characters of letters, digits, '-', '_', '.', '/'".into(),
            });
        }
        let val_ok = v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !val_ok {
            return Err(SpecError::Invalid {
                field,
                value: format!("{k}={v}"),
                reason: "values are 0-63 characters of letters, digits, '-', '_', '.'".into(),
            });
        }
    }
    Ok(())
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker (possibly in retry backoff).
    Pending,
    /// Assigned to a worker; the agent has not confirmed the start yet.
    Scheduled,
    /// Running on a worker.
    Running,
    /// Finished with exit code 0.
    Succeeded,
    /// Finished unsuccessfully with no retries left.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// The last attempt exceeded its timeout and no retries were left.
    TimedOut,
}

impl JobState {
    /// All states in display order.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    /// True for Succeeded, Failed, Cancelled and TimedOut.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.to_ascii_lowercase().replace('-', "_");
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == norm || (norm == "timedout" && *st == JobState::TimedOut))
            .ok_or_else(|| SpecError::Invalid {
                field: "state",
                value: s.into(),
                reason: "expected pending, scheduled, running, succeeded, failed, cancelled or timed_out".into(),
            })
    }
}

/// Why the agent stopped an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// The attempt exceeded its timeout.
    Timeout,
    /// A user cancelled the job.
    Cancel,
    /// The agent or node is shutting down.
    Shutdown,
    /// The agent lost its lease (could not reach its node).
    Lease,
    /// The attempt was preempted by a higher-priority job.
    Preempted,
}

/// What an agent reports when an attempt's process tree has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// Exit code when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
    /// Set when the agent stopped it, and why.
    pub stopped_by: Option<StopCause>,
    /// Set when the process could not be started at all.
    pub spawn_error: Option<String>,
    /// Set when the kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
    /// Bytes of output produced (up to the cap).
    pub log_bytes: u64,
    /// Whether output was truncated at the cap.
    pub log_truncated: bool,
}

impl ExitReport {
    /// A clean exit with `code`.
    pub fn exited(code: i32) -> Self {
        Self {
            exit_code: Some(code),
            signal: None,
            stopped_by: None,
            spawn_error: None,
            oom_killed: false,
            log_bytes: 0,
            log_truncated: false,
        }
    }

    /// True for exit code 0 without intervention.
    pub fn is_success(&self) -> bool {
        self.exit_code == Some(0) && self.stopped_by.is_none() && self.spawn_error.is_none()
    }

    /// A short human description: `exit code 3`, `killed by signal 9`, `spawn failed: ...`.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.spawn_error {
            return format!("could not start: {e}");
        }
        if self.oom_killed {
            return "killed: out of memory (exceeded its memory limit)".into();
        }
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "ended without status".into(),
        }
    }
}

/// How an attempt ended, as recorded by the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// The agent reported the process tree's end.
    Exited(ExitReport),
    /// The worker was lost (agent died, missed heartbeats, node restarted).
    Lost {
        /// e.g. "worker lost: agent disconnected".
        reason: String,
    },
    /// Evicted for a higher-priority job; not charged.
    Preempted {
        /// Which job took the place.
        reason: String,
    },
    /// Requeued because the node shut down gracefully; not charged.
    Requeued {
        /// Why.
        reason: String,
    },
}

/// One run of a job on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based number.
    pub number: AttemptNo,
    /// Epoch of the control plane that assigned it.
    pub epoch: Epoch,
    /// Where it ran.
    pub worker: WorkerId,
    /// When it was assigned.
    pub assigned_at_ms: u64,
    /// When the agent confirmed the start.
    pub started_at_ms: Option<u64>,
    /// When it ended.
    pub finished_at_ms: Option<u64>,
    /// How it ended.
    pub outcome: Option<AttemptOutcome>,
}

/// The control plane's record of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The id.
    pub id: JobId,
    /// What was submitted.
    pub spec: JobSpec,
    /// Current state.
    pub state: JobState,
    /// Submission order (ties in a priority level are served in this order).
    pub seq: u64,
    /// When the submission was accepted.
    pub submitted_at_ms: u64,
    /// All attempts so far, oldest first (bounded by the retry policy plus uncharged ones).
    pub attempts: Vec<Attempt>,
    /// Attempts that count against the retry budget.
    pub charged_attempts: u32,
    /// Not to be scheduled before this time (retry backoff).
    pub not_before_ms: u64,
    /// Why the job is in its state: the terminal reason, or why it is pending.
    pub reason: Option<String>,
    /// Exit code of the last attempt, when it exited.
    pub exit_code: Option<i32>,
    /// Signal that killed the last attempt, when it was killed.
    pub signal: Option<i32>,
    /// When the job reached a terminal state.
    pub finished_at_ms: Option<u64>,
    /// A cancel was requested while an attempt was live.
    pub cancel_requested: Option<String>,
    /// The scheduler asked to evict the live attempt (preemption or a `NoExecute` taint), and
    /// why; cleared when that attempt ends.
    pub evict_requested: Option<String>,
    /// Times the job was preempted or evicted.
    pub preemptions: u32,
}

impl JobRecord {
    /// The current (last) attempt.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// The live attempt (Scheduled or Running), if any.
    pub fn live_attempt(&self) -> Option<&Attempt> {
        match self.state {
            JobState::Scheduled | JobState::Running => self.attempts.last(),
            _ => None,
        }
    }

    /// Since when a pending job has been schedulable: its submission, the end of its last
    /// attempt, or the end of its retry backoff, whichever is latest.
    pub fn queued_since_ms(&self) -> u64 {
        let last_end = self
            .attempts
            .last()
            .and_then(|a| a.finished_at_ms)
            .unwrap_or(0);
        self.submitted_at_ms.max(last_end).max(self.not_before_ms)
    }

    /// When the first attempt started running.
    pub fn started_at_ms(&self) -> Option<u64> {
        self.attempts.iter().find_map(|a| a.started_at_ms)
    }

    /// The worker of the last attempt.
    pub fn worker(&self) -> Option<&WorkerId> {
        self.attempts.last().map(|a| &a.worker)
    }

    /// True if label `k=v` is on the job.
    pub fn has_label(&self, k: &str, v: &str) -> bool {
        self.spec.labels.get(k).map(String::as_str) == Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let r = RetryPolicy::default();
        assert_eq!(r.backoff_ms(1), 1_000);
        assert_eq!(r.backoff_ms(2), 2_000);
        assert_eq!(r.backoff_ms(5), 16_000);
        assert_eq!(r.backoff_ms(6), 30_000);
        assert_eq!(r.backoff_ms(60), 30_000);
    }

    #[test]
    fn an_empty_command_is_refused() {
        let e = JobSpec::argv(Vec::<String>::new()).validate().unwrap_err();
        assert!(e.to_string().contains("command"), "{e}");
        assert!(JobSpec::shell("  ").validate().is_err());
    }

    #[test]
    fn a_zero_timeout_is_refused() {
        let e = JobSpec::shell("true")
            .with_timeout_ms(0)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
    }

    #[test]
    fn absurd_resources_are_refused() {
        let r = Resources {
            cpu_millis: 10_000_000,
            ..Resources::ZERO
        };
        let e = JobSpec::shell("true")
            .with_resources(r)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("cpu"), "{e}");
    }

    #[test]
    fn reserved_env_names_are_refused() {
        let e = JobSpec::shell("true")
            .with_env("HODEI_JOB_ID", "1")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
    }

    #[test]
    fn unknown_priorities_are_refused_by_name() {
        let e = "urgent".parse::<Priority>().unwrap_err().to_string();
        assert!(e.contains("priority") && e.contains("urgent"), "{e}");
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
    }

    #[test]
    fn labels_are_checked() {
        assert!(
            JobSpec::shell("true")
                .with_label("a b", "c")
                .validate()
                .is_err()
        );
        assert!(
            JobSpec::shell("true")
                .with_label("team", "x y")
                .validate()
                .is_err()
        );
        assert!(
            JobSpec::shell("true")
                .with_label("team", "infra")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn job_states_parse() {
        assert_eq!("timed-out".parse::<JobState>().unwrap(), JobState::TimedOut);
        assert!("done".parse::<JobState>().is_err());
    }
}
