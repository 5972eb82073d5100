//! Providers start and destroy workers. The embedded default is [`local`]: `hodei agent` child
//! processes of the node. [`docker`] runs each worker as a container of a Docker engine, from an
//! image built without a registry ([`docker_image`]). (The Kubernetes provider comes with its
//! issue, behind the same messages.)

pub mod docker;
pub mod docker_engine;
pub mod docker_image;
pub mod local;

use hodei_runtime::{PoolId, WorkerId, WorkerTemplate};
use ractor::RpcReplyPort;

/// Messages every provider understands.
pub enum ProviderMsg {
    /// Start a worker for `pool` from `template`; its agent registers as `worker`.
    Create {
        /// The id the control plane gave it.
        worker: WorkerId,
        /// Its pool.
        pool: PoolId,
        /// What it offers.
        template: WorkerTemplate,
    },
    /// Destroy a worker and everything it left running.
    Destroy {
        /// Which.
        worker: WorkerId,
        /// Why (logged).
        reason: String,
    },
    /// A worker's process ended (from the provider's own watcher).
    AgentExited {
        /// Which.
        worker: WorkerId,
        /// How (e.g. "exit status 0", "signal 9").
        status: String,
    },
    /// Workers this provider runs, with their process ids (0 when not known yet).
    GetWorkers(RpcReplyPort<Vec<(WorkerId, u32)>>),
    /// A worker's container was created and started (Docker: from the create task).
    Started {
        /// Which.
        worker: WorkerId,
        /// The container id.
        handle: String,
        /// Its main process on the host (0 if unknown).
        pid: u32,
    },
    /// A worker's container could not be created or started (Docker: from the create task).
    StartFailed {
        /// Which.
        worker: WorkerId,
        /// The engine's message.
        error: String,
    },
    /// Periodic health check and reconciliation (Docker).
    Tick,
    /// Node shutdown: destroy every worker this provider runs, then answer.
    StopAll(RpcReplyPort<()>),
    /// Fault injection: fail.
    InjectFault,
}
impl ractor::Message for ProviderMsg {}
