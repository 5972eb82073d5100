//! The Rust client library.
//!
//! ```no_run
//! use hodei::{Client, JobSpec, Priority};
//!
//! # async fn example() -> Result<(), hodei::ClientError> {
//! let client = Client::connect("127.0.0.1:7420", "hodei-dev-cookie").await?;
//! let id = client
//!     .submit(JobSpec::shell("echo hello").with_priority(Priority::High).with_retries(2))
//!     .await?;
//! let job = client.wait(id, None).await?;
//! println!("job {id} ended {} ({:?})", job.state, job.reason);
//! # Ok(())
//! # }
//! ```
//!
//! A remote client is its own ractor_cluster node (`client-<pid>-<random>`), authenticated with
//! the cluster cookie; one remote client per process (clone it to share). An embedded client
//! talks to a node running in the same process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hodei_actors::context::NodeContext;
use hodei_actors::gateway::serve;
use hodei_actors::wire::{
    self, ApiError, ApiErrorKind, ClientReply, ClientRequest, ClientResponse, GATEWAY_GROUP,
    GatewayMsg, JobFilter, JobView, LogChunk, PoolView, SubmitAck, Wire, WorkerView,
};
use hodei_runtime::scheduling::{Explanation, Taint, TaintEffect};
use hodei_runtime::{JobId, JobSpec};
use ractor::ActorRef;
use ractor::rpc::CallResult;

use crate::cluster::{self, ClusterError, ClusterNode};

/// How long a connect waits for the handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of an ordinary request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

static REMOTE_CLIENT: AtomicBool = AtomicBool::new(false);

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect or authenticate.
    #[error(transparent)]
    Connect(#[from] ClusterError),
    /// Connected, but the node's gateway did not show up.
    #[error("connected to {0}, but it offers no hodei gateway (is it a hodei node?)")]
    NoGateway(String),
    /// A second remote client in one process.
    #[error("this process already has a remote client; clone it instead of connecting twice")]
    AlreadyConnected,
    /// The node answered with an error.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The node did not answer in time.
    #[error("the node did not answer within {0:?}")]
    Timeout(Duration),
    /// The session to the node is gone.
    #[error("lost the connection to the node")]
    Disconnected,
    /// The request is larger than the node accepts.
    #[error("request of {bytes} bytes exceeds the {limit}-byte message limit")]
    TooLarge {
        /// Size.
        bytes: usize,
        /// Limit.
        limit: u64,
    },
    /// The node answered with something unexpected.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The API error kind, when the node refused the request.
    pub fn api_kind(&self) -> Option<ApiErrorKind> {
        match self {
            ClientError::Api(e) => Some(e.kind),
            _ => None,
        }
    }
}

enum Transport {
    Remote {
        gateway: ActorRef<GatewayMsg>,
        _node: tokio::sync::Mutex<ClusterNode>,
    },
    Embedded(NodeContext),
}

/// A handle to a Hodei node. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Transport>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match *self.inner {
            Transport::Remote { .. } => "Client(remote)",
            Transport::Embedded(_) => "Client(embedded)",
        })
    }
}

impl Client {
    /// Connects to the node at `addr` with the cluster `cookie`.
    pub async fn connect(addr: &str, cookie: &str) -> Result<Client, ClientError> {
        if REMOTE_CLIENT.swap(true, Ordering::SeqCst) {
            return Err(ClientError::AlreadyConnected);
        }
        let r = Self::connect_inner(addr, cookie).await;
        if r.is_err() {
            REMOTE_CLIENT.store(false, Ordering::SeqCst);
        }
        r
    }

    async fn connect_inner(addr: &str, cookie: &str) -> Result<Client, ClientError> {
        let mut node = cluster::start("client", cookie).await?;
        node.connect(addr, CONNECT_TIMEOUT).await?;
        let gateway: ActorRef<GatewayMsg> =
            cluster::find_remote(GATEWAY_GROUP, Duration::from_secs(5))
                .await
                .ok_or_else(|| ClientError::NoGateway(addr.into()))?
                .into();
        let client = Client {
            inner: Arc::new(Transport::Remote {
                gateway,
                _node: tokio::sync::Mutex::new(node),
            }),
        };
        client.hello().await?;
        Ok(client)
    }

    /// A client for a node running in this process.
    pub fn embedded(ctx: NodeContext) -> Client {
        Client {
            inner: Arc::new(Transport::Embedded(ctx)),
        }
    }

    async fn call(
        &self,
        req: ClientRequest,
        timeout: Duration,
    ) -> Result<ClientResponse, ClientError> {
        let reply: ClientReply = match &*self.inner {
            Transport::Embedded(ctx) => serve(ctx, req).await,
            Transport::Remote { gateway, .. } => {
                let frame = Wire::ok(req);
                let bytes = frame.encode().len();
                if bytes as u64 > wire::max_message_bytes() {
                    return Err(ClientError::TooLarge {
                        bytes,
                        limit: wire::max_message_bytes(),
                    });
                }
                match gateway
                    .call(|r| GatewayMsg::Request(frame, r), Some(timeout))
                    .await
                {
                    Ok(CallResult::Success(Wire(Ok(r)))) => r,
                    Ok(CallResult::Success(Wire(Err(e)))) => {
                        return Err(ClientError::Api(e.into()));
                    }
                    Ok(CallResult::Timeout) => return Err(ClientError::Timeout(timeout)),
                    Ok(CallResult::SenderError) | Err(_) => return Err(ClientError::Disconnected),
                }
            }
        };
        Ok(reply?)
    }

    async fn hello(&self) -> Result<(String, u64), ClientError> {
        match self
            .call(
                ClientRequest::Hello {
                    client: format!("pid-{}", std::process::id()),
                },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            ClientResponse::Hello { node, epoch, .. } => Ok((node, epoch)),
            other => Err(unexpected(other)),
        }
    }

    /// Submits a job; returns once the submission is durable. Submitting again with the same
    /// idempotency key (and tenant) returns the same id.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobId, ClientError> {
        Ok(self.submit_ack(spec).await?.id)
    }

    /// Like [`Client::submit`], also telling whether the key named an existing job.
    pub async fn submit_ack(&self, spec: JobSpec) -> Result<SubmitAck, ClientError> {
        spec.validate()
            .map_err(|e| ApiError::new(ApiErrorKind::InvalidRequest, e.to_string()))?;
        match self
            .call(
                ClientRequest::Submit {
                    spec: Box::new(spec),
                },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            ClientResponse::Submitted(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// One job.
    pub async fn get(&self, id: JobId) -> Result<JobView, ClientError> {
        job(self
            .call(ClientRequest::GetJob { id }, REQUEST_TIMEOUT)
            .await?)
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: JobFilter) -> Result<Vec<JobView>, ClientError> {
        match self
            .call(ClientRequest::ListJobs { filter }, REQUEST_TIMEOUT)
            .await?
        {
            ClientResponse::Jobs(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until the job is finished (or `timeout` passes: then returns it as it is).
    pub async fn wait(&self, id: JobId, timeout: Option<Duration>) -> Result<JobView, ClientError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let left = deadline
                .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
                .unwrap_or(Duration::from_millis(wire::LONG_POLL_MS_MAX));
            let poll = left.min(Duration::from_millis(wire::LONG_POLL_MS_MAX));
            let v = job(self
                .call(
                    ClientRequest::WaitJob {
                        id,
                        timeout_ms: poll.as_millis().max(1) as u64,
                    },
                    poll + REQUEST_TIMEOUT,
                )
                .await?)?;
            if v.state.is_terminal() || deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(v);
            }
        }
    }

    /// Reads the job's output from `offset` (at most `max_bytes`), waiting up to `wait` for more
    /// when at the end. `complete` is set once the job is finished and everything was read.
    pub async fn read_logs(
        &self,
        id: JobId,
        offset: u64,
        max_bytes: u32,
        wait: Duration,
    ) -> Result<LogChunk, ClientError> {
        match self
            .call(
                ClientRequest::ReadLogs {
                    id,
                    offset,
                    max_bytes,
                    wait_ms: wait.as_millis() as u64,
                },
                wait + REQUEST_TIMEOUT,
            )
            .await?
        {
            ClientResponse::Logs(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// Cancels a job; returns it as it is after the request (a running job is stopped first and
    /// becomes Cancelled when its process tree has ended).
    pub async fn cancel(&self, id: JobId) -> Result<JobView, ClientError> {
        job(self
            .call(ClientRequest::Cancel { id, reason: None }, REQUEST_TIMEOUT)
            .await?)
    }

    /// All workers.
    pub async fn workers(&self) -> Result<Vec<WorkerView>, ClientError> {
        match self
            .call(ClientRequest::ListWorkers, REQUEST_TIMEOUT)
            .await?
        {
            ClientResponse::Workers(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Puts taints on a worker (`add`) and takes others off (`remove`: key, and effect when
    /// only that one should go). A `NoExecute` taint evicts running jobs that do not tolerate
    /// it. Returns the worker afterwards, once the change is durable.
    pub async fn taint_worker(
        &self,
        id: hodei_runtime::WorkerId,
        add: Vec<Taint>,
        remove: Vec<(String, Option<TaintEffect>)>,
    ) -> Result<WorkerView, ClientError> {
        match self
            .call(
                ClientRequest::TaintWorker { id, add, remove },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            ClientResponse::Worker(v) => Ok(*v),
            other => Err(unexpected(other)),
        }
    }

    /// Why a job is where it is: the last scheduling cycle's per-filter counts, the best
    /// scores and the chosen worker. `None` when no cycle has looked at the job since the node
    /// started.
    pub async fn explain(&self, id: JobId) -> Result<Option<Explanation>, ClientError> {
        match self
            .call(ClientRequest::Explain { id }, REQUEST_TIMEOUT)
            .await?
        {
            ClientResponse::Explanation(e) => Ok(e.map(|e| *e)),
            other => Err(unexpected(other)),
        }
    }

    /// The node's metrics as Prometheus text (the same as its `/metrics` endpoint).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        match self.call(ClientRequest::Metrics, REQUEST_TIMEOUT).await? {
            ClientResponse::Metrics(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// All pools.
    pub async fn pools(&self) -> Result<Vec<PoolView>, ClientError> {
        match self.call(ClientRequest::ListPools, REQUEST_TIMEOUT).await? {
            ClientResponse::Pools(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Takes a consistent backup of the node's state while it runs and writes it to `path`:
    /// the node snapshots its state as of a durable journal index into a checksummed file,
    /// which is read back in chunks, verified (checksum and decode) and renamed into place.
    /// Restore it with `hodei operator snapshot restore` into an empty data directory.
    pub async fn save_snapshot(
        &self,
        path: &std::path::Path,
    ) -> Result<wire::SnapshotInfo, ClientError> {
        let info = match self
            .call(ClientRequest::SnapshotSave, REQUEST_TIMEOUT)
            .await?
        {
            ClientResponse::SnapshotSaved(i) => i,
            other => return Err(unexpected(other)),
        };
        let mut bytes = Vec::with_capacity(info.bytes as usize);
        while (bytes.len() as u64) < info.bytes {
            let req = ClientRequest::SnapshotRead {
                name: info.name.clone(),
                offset: bytes.len() as u64,
                max_bytes: wire::SNAPSHOT_READ_BYTES_MAX,
            };
            match self.call(req, REQUEST_TIMEOUT).await? {
                ClientResponse::SnapshotChunk { data, .. } if data.is_empty() => {
                    return Err(ClientError::Protocol(format!(
                        "the backup {} ended after {} of {} bytes",
                        info.name,
                        bytes.len(),
                        info.bytes
                    )));
                }
                ClientResponse::SnapshotChunk { data, .. } => bytes.extend_from_slice(&data),
                other => return Err(unexpected(other)),
            }
        }
        let shown = path.display().to_string();
        let check = hodei_runtime::store::backup::decode(&bytes, &shown)
            .map_err(|e| ClientError::Protocol(format!("the backup read back is invalid: {e}")))?;
        if check.info.sha256 != info.sha256 {
            return Err(ClientError::Protocol(format!(
                "the backup read back has checksum {} but the node wrote {}",
                check.info.sha256, info.sha256
            )));
        }
        hodei_runtime::store::backup::write_file(path, &bytes).map_err(|e| {
            ClientError::Api(ApiError::new(
                ApiErrorKind::InvalidRequest,
                format!("cannot write {shown}: {e}"),
            ))
        })?;
        Ok(info)
    }

    /// Crashes an actor on purpose (only when the node enables `debug.fault_injection`).
    pub async fn inject_fault(&self, target: &str) -> Result<(), ClientError> {
        self.call(
            ClientRequest::InjectFault {
                target: target.into(),
            },
            REQUEST_TIMEOUT,
        )
        .await
        .map(|_| ())
    }
}

fn unexpected(r: ClientResponse) -> ClientError {
    ClientError::Protocol(format!("{r:?}").chars().take(200).collect())
}

fn job(r: ClientResponse) -> Result<JobView, ClientError> {
    match r {
        ClientResponse::Job(v) => Ok(*v),
        other => Err(unexpected(other)),
    }
}
