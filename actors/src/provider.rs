//! Providers start and destroy workers. The embedded default is [`local`]: `hodei agent` child
//! processes of the node. (The Docker and Kubernetes providers come with their issues, behind the
//! same messages.)

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
    /// Workers this provider runs, with their process ids.
    GetWorkers(RpcReplyPort<Vec<(WorkerId, u32)>>),
    /// Fault injection: fail.
    InjectFault,
}
impl ractor::Message for ProviderMsg {}
