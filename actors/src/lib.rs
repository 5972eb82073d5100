//! # hodei-actors
//!
//! The ractor shells around `hodei-runtime`'s pure core: the supervision tree of a node (drawn
//! in [`node`]), the wire protocol ([`wire`]) and the shared context ([`context`]).

pub mod agent_gateway;
pub mod autoscaler;
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
