//! # hodei
//!
//! The `hodei` binary's library: the [`Client`] for Rust programs, the cluster wiring of a node
//! ([`server`], [`cluster`]), the agent ([`agent`]), and the demo and benchmarks.
//!
//! See the [`client`] module for an example.

pub mod agent;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod demo;
pub mod output;
pub mod server;

pub use client::{Client, ClientError};
pub use hodei_actors::wire::{
    ApiError, ApiErrorKind, JobFilter, JobView, LogChunk, LogStream, PoolView, WorkerView,
};
pub use hodei_runtime::{JobId, JobSpec, JobState, Priority, Resources, RetryPolicy, TenantId};
