//! What crosses the network: the three remotable message types (the node's client gateway, the
//! node's agent gateway, and each agent's executor) and the payloads they carry.
//!
//! Every payload travels inside a [`Wire`] envelope: `b"HDW1"`, the protocol version (u32 LE), a
//! kind byte (0 = value, 1 = error) and the bincode body. Decoding never panics: bytes that are
//! too large, from another protocol version, or malformed decode to `Wire(Err(..))`, so the
//! receiver can answer with an error instead of the call silently timing out (ractor drops a
//! message whose decoder panics). `runtime` stays free of ractor: the `BytesConvertable` impl
//! sits on this crate's envelope type.
//!
//! Keep wire types plain (no `flatten`, `untagged`, `skip_serializing_if`): bincode's serde mode
//! rejects them. Every type here has a round-trip test.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hodei_runtime::codec;
use hodei_runtime::job::StopCause;
use hodei_runtime::scheduling::{Explanation, Taint, TaintEffect};
use hodei_runtime::{
    AttemptNo, Epoch, ExitReport, JobId, JobSpec, JobState, Priority, Resources, TenantId,
    WorkerId, WorkerRegistration, WorkerState,
};
use ractor::{BytesConvertable, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of the client and agent protocols. A peer speaking another version is refused with a
/// message naming both versions.
pub const PROTOCOL_VERSION: u32 = 2;
/// `pg` group of the node's client gateway.
pub const GATEWAY_GROUP: &str = "hodei.gateway";
/// `pg` group of the node's agent gateway.
pub const AGENT_GATEWAY_GROUP: &str = "hodei.agent-gateway";
/// Bytes of one output chunk an agent sends at most.
pub const LOG_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Most bytes returned by one log read.
pub const LOG_READ_BYTES_MAX: u32 = 1 << 20;
/// Most jobs returned by one list call.
pub const LIST_LIMIT_MAX: u32 = 10_000;
/// Most bytes of a backup read per request (`SnapshotRead`).
pub const SNAPSHOT_READ_BYTES_MAX: u32 = 1 << 20;
/// Longest a client may long-poll (wait, log follow) in one call.
pub const LONG_POLL_MS_MAX: u64 = 60_000;

const MAGIC: &[u8; 4] = b"HDW1";
const HEADER_LEN: usize = 9;

static MAX_MESSAGE_BYTES: AtomicU64 = AtomicU64::new(4 << 20);

/// Sets the largest message this process accepts (from config; default 4 MiB).
pub fn set_max_message_bytes(n: u64) {
    MAX_MESSAGE_BYTES.store(n, Ordering::Relaxed);
}

/// The largest message this process accepts.
pub fn max_message_bytes() -> u64 {
    MAX_MESSAGE_BYTES.load(Ordering::Relaxed)
}

/// `pg` group an agent's executor joins: `hodei.agent.<worker id>`.
pub fn agent_group(worker: &WorkerId) -> String {
    format!("hodei.agent.{worker}")
}

/// Why an envelope could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    /// Not a Hodei frame, or the body does not decode.
    Malformed(String),
    /// Larger than the receiver's limit.
    Oversized {
        /// Size received.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// Another protocol version.
    Version {
        /// The sender's version.
        peer: u32,
        /// Ours.
        ours: u32,
    },
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Malformed(r) => write!(f, "malformed message: {r}"),
            WireError::Oversized { bytes, limit } => {
                write!(
                    f,
                    "message of {bytes} bytes exceeds the limit of {limit} bytes"
                )
            }
            WireError::Version { peer, ours } => write!(
                f,
                "protocol version mismatch: peer speaks version {peer}, this side speaks version {ours}; run the same hodei release on both sides"
            ),
        }
    }
}

/// The envelope every payload crosses the network in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire<T>(pub Result<T, WireError>);

impl<T> Wire<T> {
    /// Wraps a value.
    pub fn ok(v: T) -> Self {
        Wire(Ok(v))
    }
}

impl<T: Serialize + DeserializeOwned> Wire<T> {
    /// Encodes to a frame (also used by tests that send raw bytes).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = match &self.0 {
            Ok(v) => (0u8, codec::encode(v)),
            Err(e) => (1u8, codec::encode(e)),
        };
        let body = body.unwrap_or_else(|e| {
            codec::encode(&WireError::Malformed(format!(
                "sender could not encode: {e}"
            )))
            .unwrap_or_default()
        });
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a frame; never panics.
    pub fn decode(bytes: &[u8]) -> Self {
        let limit = max_message_bytes();
        if bytes.len() as u64 > limit {
            return Wire(Err(WireError::Oversized {
                bytes: bytes.len() as u64,
                limit,
            }));
        }
        if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
            return Wire(Err(WireError::Malformed(
                "not a Hodei protocol frame".into(),
            )));
        }
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        if version != PROTOCOL_VERSION {
            return Wire(Err(WireError::Version {
                peer: version,
                ours: PROTOCOL_VERSION,
            }));
        }
        let body = &bytes[HEADER_LEN..];
        match bytes[8] {
            0 => match codec::decode_wire::<T>(body) {
                Ok(v) => Wire(Ok(v)),
                Err(e) => Wire(Err(WireError::Malformed(e.to_string()))),
            },
            1 => match codec::decode_wire::<WireError>(body) {
                Ok(e) => Wire(Err(e)),
                Err(e) => Wire(Err(WireError::Malformed(e.to_string()))),
            },
            k => Wire(Err(WireError::Malformed(format!("unknown frame kind {k}")))),
        }
    }
}

impl<T: Serialize + DeserializeOwned> BytesConvertable for Wire<T> {
    fn into_bytes(self) -> Vec<u8> {
        self.encode()
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        Self::decode(&bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors returned to clients and agents.

/// Kinds of API errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiErrorKind {
    /// The request is invalid (spec validation, bad argument).
    InvalidRequest,
    /// No such job/worker/pool.
    NotFound,
    /// Conflicts with current state (e.g. cancelling a finished job, idempotency key reuse).
    Conflict,
    /// The node cannot serve it now (overloaded, shutting down, limit reached).
    Unavailable,
    /// The request was too large.
    TooLarge,
    /// The request could not be decoded.
    Malformed,
    /// Protocol version mismatch.
    Version,
    /// Not allowed (e.g. fault injection disabled).
    Forbidden,
    /// A bug or internal failure.
    Internal,
}

/// An error answered to a client or agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What kind.
    pub kind: ApiErrorKind,
    /// Human-readable, names what was wrong.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// NotFound for a job.
    pub fn no_job(id: JobId) -> Self {
        Self::new(ApiErrorKind::NotFound, format!("no job with id {id}"))
    }
    /// Internal error.
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ApiErrorKind::Internal, m)
    }
    /// Unavailable.
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ApiErrorKind::Unavailable, m)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        let kind = match e {
            WireError::Malformed(_) => ApiErrorKind::Malformed,
            WireError::Oversized { .. } => ApiErrorKind::TooLarge,
            WireError::Version { .. } => ApiErrorKind::Version,
        };
        ApiError::new(kind, e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Client API.

/// Filter for listing jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this tenant.
    pub tenant: Option<TenantId>,
    /// Only jobs with this label `(key, value)`.
    pub label: Option<(String, String)>,
    /// Most results (newest first); 0 = the default of 100.
    pub limit: u32,
}

/// One attempt, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    /// Number.
    pub number: u32,
    /// Epoch.
    pub epoch: u64,
    /// Worker.
    pub worker: String,
    /// Assigned.
    pub assigned_at_ms: u64,
    /// Started.
    pub started_at_ms: Option<u64>,
    /// Ended.
    pub finished_at_ms: Option<u64>,
    /// How it ended.
    pub outcome: Option<String>,
}

/// A job as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// Id.
    pub id: JobId,
    /// Name.
    pub name: String,
    /// State.
    pub state: JobState,
    /// Exit code of the last attempt.
    pub exit_code: Option<i32>,
    /// Signal that killed the last attempt.
    pub signal: Option<i32>,
    /// Attempts made.
    pub attempts: u32,
    /// Why it is in its state (terminal reason, retry note, or why it is still pending).
    pub reason: Option<String>,
    /// Priority.
    pub priority: Priority,
    /// Tenant.
    pub tenant: TenantId,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Worker of the last attempt.
    pub worker: Option<String>,
    /// Submitted.
    pub submitted_at_ms: u64,
    /// First start.
    pub started_at_ms: Option<u64>,
    /// Terminal time.
    pub finished_at_ms: Option<u64>,
    /// The command as text.
    pub command: String,
    /// Requested resources.
    pub resources: Resources,
    /// Per-attempt timeout.
    pub timeout_ms: Option<u64>,
    /// Retries allowed.
    pub max_retries: u32,
    /// Attempt history.
    pub attempt_history: Vec<AttemptView>,
}

impl JobView {
    /// The CLI exit code for a finished job: its exit code, 124 timed out, 130 cancelled,
    /// 128+N killed by signal N, 1 for other failures.
    pub fn cli_exit_code(&self) -> i32 {
        match self.state {
            JobState::Succeeded => 0,
            JobState::TimedOut => 124,
            JobState::Cancelled => 130,
            _ => match (self.exit_code, self.signal) {
                (Some(c), _) => c,
                (None, Some(s)) => 128 + s,
                _ => 1,
            },
        }
    }
}

/// A worker as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Id.
    pub id: WorkerId,
    /// Pool.
    pub pool: String,
    /// State.
    pub state: WorkerState,
    /// Slots.
    pub slots: u32,
    /// Attempts running.
    pub running: u32,
    /// Capacity.
    pub capacity: Resources,
    /// Allocated to running attempts.
    pub allocated: Resources,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints (`key=value:Effect`).
    pub taints: Vec<String>,
    /// Host.
    pub hostname: Option<String>,
    /// Agent pid.
    pub pid: Option<u32>,
    /// Provisioned.
    pub provisioned_at_ms: u64,
    /// Registered.
    pub registered_at_ms: Option<u64>,
    /// Terminated.
    pub terminated_at_ms: Option<u64>,
    /// Attempts run to the end.
    pub jobs_completed: u64,
    /// Why it terminated.
    pub reason: Option<String>,
}

/// A pool as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Bounds.
    pub min_workers: u32,
    /// Bounds.
    pub max_workers: u32,
    /// Slots per worker.
    pub slots: u32,
    /// Capacity per worker.
    pub capacity: Resources,
    /// Workers per state (non-zero only).
    pub workers: Vec<(WorkerState, u32)>,
    /// Pending jobs this pool could run.
    pub pending_fitting: u64,
    /// The last scaling decision with its reason.
    pub last_decision: Option<String>,
    /// Its providers' health, one line each ("broken: backing off 4s after 3 failures: …").
    pub providers: Vec<String>,
    /// Workers that failed to start or register.
    pub provisioning_failures: u64,
}

/// Which stream a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStream {
    /// The job's stdout.
    Stdout,
    /// The job's stderr.
    Stderr,
    /// A note from Hodei (truncation, attempt boundaries).
    System,
}

/// One piece of a job's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Attempt that produced it.
    pub attempt: u32,
    /// Stream.
    pub stream: LogStream,
    /// Bytes.
    pub data: Vec<u8>,
}

/// The answer to a log read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Records from the requested offset.
    pub records: Vec<LogRecord>,
    /// Offset to continue from.
    pub next_offset: u64,
    /// The job is finished and everything has been read.
    pub complete: bool,
}

/// The answer to a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitAck {
    /// The job's id.
    pub id: JobId,
    /// True if the idempotency key named an existing job.
    pub existing: bool,
}

/// Requests a client can make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Handshake.
    Hello {
        /// The client's node name.
        client: String,
    },
    /// Submit a job; answered after the submission is durable.
    Submit {
        /// The job (boxed: by far the largest request).
        spec: Box<JobSpec>,
    },
    /// One job.
    GetJob {
        /// Which.
        id: JobId,
    },
    /// Jobs matching a filter.
    ListJobs {
        /// The filter.
        filter: JobFilter,
    },
    /// Wait until the job is finished (or `timeout_ms` passes), then return it.
    WaitJob {
        /// Which.
        id: JobId,
        /// Longest wait (≤ 60 s).
        timeout_ms: u64,
    },
    /// Read output from `offset`, waiting up to `wait_ms` for more when at the end.
    ReadLogs {
        /// Which job.
        id: JobId,
        /// Byte offset in the job's log.
        offset: u64,
        /// Most bytes to return.
        max_bytes: u32,
        /// Long-poll time when nothing new is there.
        wait_ms: u64,
    },
    /// Cancel a job.
    Cancel {
        /// Which.
        id: JobId,
        /// Why (default "cancelled by user").
        reason: Option<String>,
    },
    /// All workers.
    ListWorkers,
    /// All pools.
    ListPools,
    /// Put taints on a worker or take them off (answered once durable).
    TaintWorker {
        /// Which worker.
        id: WorkerId,
        /// Taints to add (`added_at_ms` is set by the node).
        add: Vec<Taint>,
        /// Taints to remove: key, and effect when only that one should go.
        remove: Vec<(String, Option<TaintEffect>)>,
    },
    /// Why a job is where it is (the last scheduling cycle's explanation).
    Explain {
        /// Which.
        id: JobId,
    },
    /// The node's metrics in Prometheus text format.
    Metrics,
    /// Crash an actor on purpose (only when `debug.fault_injection` is on).
    InjectFault {
        /// `scheduler`, `autoscaler`, `gateway-task`, `job:<id>`, `worker:<id>`, `pool:<name>`.
        target: String,
    },
    /// Take a backup of the state (consistent, as of a durable index) into a file on the node,
    /// to be read with `SnapshotRead`.
    SnapshotSave,
    /// Read part of a backup file taken by `SnapshotSave`.
    SnapshotRead {
        /// The name `SnapshotSave` returned.
        name: String,
        /// Byte offset.
        offset: u64,
        /// Most bytes to return (≤ [`SNAPSHOT_READ_BYTES_MAX`]).
        max_bytes: u32,
    },
}

/// A backup taken on the node (`hodei operator snapshot save`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its name on the node (for `SnapshotRead`).
    pub name: String,
    /// File size.
    pub bytes: u64,
    /// The journal index the state is as of.
    pub index: u64,
    /// Jobs in it.
    pub jobs: u64,
    /// Workers in it.
    pub workers: u64,
    /// Hex SHA-256 of its content.
    pub sha256: String,
    /// When it was taken.
    pub created_at_ms: u64,
}

/// Successful answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// Handshake answer.
    Hello {
        /// Node name.
        node: String,
        /// Current epoch.
        epoch: u64,
        /// Node's hodei version.
        version: String,
    },
    /// Submission acknowledged (durable).
    Submitted(SubmitAck),
    /// One job.
    Job(Box<JobView>),
    /// Jobs.
    Jobs(Vec<JobView>),
    /// Output.
    Logs(LogChunk),
    /// Workers.
    Workers(Vec<WorkerView>),
    /// Pools.
    Pools(Vec<PoolView>),
    /// One worker.
    Worker(Box<WorkerView>),
    /// A scheduling explanation (`None`: no cycle has looked at the job since the node started).
    Explanation(Option<Box<Explanation>>),
    /// Prometheus text.
    Metrics(String),
    /// Done.
    Done,
    /// A backup was taken.
    SnapshotSaved(SnapshotInfo),
    /// Part of a backup file.
    SnapshotChunk {
        /// The bytes from the requested offset.
        data: Vec<u8>,
        /// The file's size.
        total_bytes: u64,
    },
}

/// A client reply.
pub type ClientReply = Result<ClientResponse, ApiError>;

/// The node's client gateway (remotable; found in `pg` group [`GATEWAY_GROUP`]).
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    /// Every client request.
    #[rpc]
    Request(Wire<ClientRequest>, RpcReplyPort<Wire<ClientReply>>),
}

// ---------------------------------------------------------------------------------------------
// Agent protocol.

/// An agent's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHello {
    /// What it offers.
    pub registration: WorkerRegistration,
}

/// Settings the node gives an agent on registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterAccepted {
    /// Node name.
    pub node: String,
    /// Epoch.
    pub epoch: Epoch,
    /// Heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Lease: stop jobs and exit when the node is unreachable this long.
    pub lease_ms: u64,
    /// Default SIGTERM → SIGKILL grace.
    pub stop_grace_ms: u64,
    /// Per-attempt output cap.
    pub log_cap_bytes: u64,
}

/// Registration answer.
pub type RegisterReply = Result<RegisterAccepted, ApiError>;

/// A live attempt as an agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRef {
    /// Job.
    pub job: JobId,
    /// Attempt.
    pub attempt: AttemptNo,
    /// Epoch.
    pub epoch: Epoch,
}

/// Periodic liveness report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHeartbeat {
    /// Who.
    pub worker: WorkerId,
    /// What it is running.
    pub running: Vec<AttemptRef>,
}

/// Heartbeat answer: attempts the node does not consider live on this worker (to stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// Stop these.
    pub stop: Vec<AttemptRef>,
}

/// Heartbeat reply.
pub type HeartbeatReply = Result<HeartbeatAck, ApiError>;

/// Something that happened on an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentEvent {
    /// The attempt's process started.
    Started {
        /// Which.
        attempt: AttemptRef,
        /// Its pid.
        pid: u32,
    },
    /// Output (≤ [`LOG_CHUNK_BYTES_MAX`]).
    Output {
        /// Which.
        attempt: AttemptRef,
        /// Stream.
        stream: LogStream,
        /// Bytes.
        data: Vec<u8>,
    },
    /// The attempt's process tree ended.
    Finished {
        /// Which.
        attempt: AttemptRef,
        /// How.
        report: ExitReport,
    },
}

/// Most bytes of output an agent puts in one report (more goes in the next one).
pub const REPORT_OUTPUT_BYTES_MAX: usize = 256 * 1024;
/// Most events in one report.
pub const REPORT_EVENTS_MAX: usize = 64;

/// An agent's report (cast): the events that happened since its last report, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    /// Who.
    pub worker: WorkerId,
    /// What, in order.
    pub events: Vec<AgentEvent>,
}

/// The node's agent gateway (remotable; `pg` group [`AGENT_GATEWAY_GROUP`]).
#[derive(RactorClusterMessage)]
pub enum AgentGatewayMsg {
    /// Registration (once per agent).
    #[rpc]
    Register(Wire<AgentHello>, RpcReplyPort<Wire<RegisterReply>>),
    /// Liveness; the reply renews the agent's lease.
    #[rpc]
    Heartbeat(Wire<AgentHeartbeat>, RpcReplyPort<Wire<HeartbeatReply>>),
    /// Started / output / finished.
    Report(Wire<AgentReport>),
}

/// Run an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Which.
    pub attempt: AttemptRef,
    /// Job name.
    pub name: String,
    /// Tenant.
    pub tenant: TenantId,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The spec's environment (the agent adds `HODEI_JOB_*`).
    pub env: BTreeMap<String, String>,
    /// Working directory (None = scratch).
    pub working_dir: Option<String>,
    /// Per-attempt timeout.
    pub timeout_ms: Option<u64>,
    /// Requested resources.
    pub resources: Resources,
}

/// Stop an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOrder {
    /// Which.
    pub attempt: AttemptRef,
    /// Why.
    pub cause: StopCause,
    /// SIGTERM → SIGKILL grace.
    pub grace_ms: u64,
}

/// Stop everything and exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownOrder {
    /// Why.
    pub reason: String,
    /// Grace for running attempts.
    pub grace_ms: u64,
}

/// An agent's executor (remotable; `pg` group [`agent_group`]).
#[derive(RactorClusterMessage)]
pub enum AgentMsg {
    /// Run an attempt.
    Assign(Wire<Assignment>),
    /// Stop an attempt.
    Stop(Wire<StopOrder>),
    /// Stop everything and exit.
    Shutdown(Wire<ShutdownOrder>),
}

#[cfg(test)]
mod tests;
