//! # hodei-simulations
//!
//! A seeded, virtual-time simulator that drives Hodei's production policies — the scheduling
//! [`Pipeline`](hodei_runtime::scheduling::Pipeline) and the autoscaler's
//! [`decide_pool`](hodei_runtime::scaling::decide_pool) — over generated or traced workloads.
//! See `README.md` beside this crate for scenarios, metrics and reproducing a failure.
//!
//! * [`engine`]: the event queue (ordered by `(time, seq)`) and the hashed event log.
//! * [`rng`]: the one seeded random source (SplitMix64 streams split from the master seed).
//! * [`workload`]: Poisson, bursty and diurnal generators; SWF and CSV trace replay.
//! * [`model`]: pools, providers, nodes, workers, jobs, faults, invariants, the sampled time
//!   series; one [`model::Simulation`].
//! * [`metrics`]: waits, turnaround, bounded slowdown, utilisation, cost, fairness, SLO misses.
//! * [`scenario`]: TOML scenarios running several configurations side by side, and the output.
//! * [`plots`]: SVG plots (plotters) of queue length, pool sizes, utilisation and wait CDFs.

pub mod engine;
pub mod metrics;
pub mod model;
pub mod plots;
pub mod rng;
pub mod scenario;
pub mod workload;

pub use metrics::SloConfig;
pub use model::{
    Fault, PoolConfig, RunConfig, RunResult, Sample, Simulation, TimeSeries, Violation,
};
pub use scenario::{Report, Scenario};
