//! # hodei-actors
//!
//! The ractor shells around `hodei-runtime`'s pure core: a node's supervision tree, the wire
//! protocol ([`wire`]) and the shared context ([`context`]).
//!
//! ```text
//! root (one-for-one, budget 0: a failure here stops the node, which restarts from its journal)
//! ├── control         ControlPlane — state machine, journal (group commit), the single writer
//! ├── jobs            Supervisor — one Job actor per unfinished job (transient; owns timeouts)
//! ├── workers         Supervisor — one Worker actor per registered agent (transient; heartbeats)
//! └── services        Supervisor (5 restarts / 60 s, exponential backoff)
//!     ├── provider    LocalProvider "local" — `hodei agent` child processes
//!     ├── provider-<name> LocalProvider — one per other configured `[providers.NAME]`
//!     ├── pool-<name> Pool — one per configured pool (decisions, provider health)
//!     ├── scheduler   Scheduler — scheduling cycles (pure `runtime::scheduling::Pipeline`)
//!     ├── autoscaler  Autoscaler — scaling decisions (pure `runtime::scaling::decide_pool`)
//!     ├── gateway     Gateway — client requests (remotable, pg "hodei.gateway")
//!     └── agent-gateway AgentGateway — agent registration, heartbeats, reports (remotable)
//! ```
//!
//! Every actor file opens with who supervises it, what it supervises, its restart policy and
//! what its state is rebuilt from. [`node::start_node`] builds the tree; the data flow is
//! described there.

pub mod agent_gateway;
pub mod autoscaler;
pub mod backups;
pub mod context;
pub mod control_plane;
pub mod gateway;
pub mod job;
pub mod journal;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod pool;
pub mod provider;
pub mod scheduler;
pub mod supervisor;
pub mod views;
pub mod wire;
pub mod worker;
