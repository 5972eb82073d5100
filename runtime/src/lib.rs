//! # hodei-runtime
//!
//! The deterministic core of Hodei. Nothing here knows about actors or async runtimes: the build
//! graph keeps it that way (this crate depends on neither ractor nor tokio).
//!
//! * [`ids`], [`resources`], [`job`], [`worker`]: the domain model and its validation.
//! * [`control`]: the control-plane state machine (commands → state + events).
//! * [`scheduling`] (queue → filters → scores → preemption) and [`scaling`]: pure policies
//!   (view, config, now) → decision.
//! * [`store`]: the sled journal and snapshots; [`codec`]: the binary encoding.

pub mod codec;
pub mod control;
pub mod error;
pub mod ids;
pub mod job;
pub mod resources;
pub mod scaling;
pub mod scheduling;
pub mod store;
pub mod worker;

pub use control::{Command, ControlState, Event, Rejection};
pub use error::{SpecError, StoreError};
pub use ids::{AttemptNo, Epoch, JobId, NodeId, PoolId, TenantId, WorkerId};
pub use job::{
    AttemptOutcome, ExitReport, JobCommand, JobRecord, JobSpec, JobState, Priority, RetryPolicy,
    StopCause,
};
pub use resources::Resources;
pub use worker::{
    PoolSpec, ProviderKind, WorkerRecord, WorkerRegistration, WorkerState, WorkerTemplate,
};

/// Milliseconds since the Unix epoch (the clock value policies and commands carry).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
