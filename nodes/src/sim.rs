//! `hodei sim`: runs a simulation scenario (the `hodei-simulations` crate) — the production
//! scheduling pipeline and autoscaling policy in virtual time, seeded.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `hodei sim` subcommands.
#[derive(Subcommand)]
pub enum SimCmd {
    /// Run a scenario: every configuration it lists, side by side on the same workload and seed.
    #[command(long_about = RUN_ABOUT)]
    Run(RunArgs),
}

/// `hodei sim --help`.
pub const SIM_ABOUT: &str = "\
Seeded, virtual-time simulations of Hodei's production scheduling pipeline and autoscaling \
policy (the same code the control plane runs, never a copy), over generated or traced workloads.

  hodei sim run simulations/scenarios/ci-poisson.toml                 # the table on stderr
  hodei sim run simulations/scenarios/nasa-ipsc.toml --out results/   # + JSON, CSV, SVG plots
  hodei sim run SCENARIO.toml --seed 42 --keep-log --out results/     # reproduce a run

Scenarios live in simulations/scenarios/ (simulations/README.md describes every field, the \
metrics and measured figures). A run is reproducible: the same scenario and seed give the same \
event-log hash. An invariant violation stops the run with `invariant violated at T ms: ...; \
reproduce with --seed N`: run the same command with --seed N (and --keep-log --out DIR to read \
the event log).";

const RUN_ABOUT: &str = "\
Run a scenario: every configuration it lists, side by side on the same workload and seed.

SCENARIOS. A scenario is a TOML file (see simulations/scenarios/): [[pools]] (worker template, \
provider start-up latency and failure rate, cost per hour, `nodes` the workers run on, the \
production scaling policy), [workload] (poisson, bursty, diurnal, or an swf / csv trace), \
optional [[faults]] (worker_crash, node_crash, provider_outage, slow_provisioning, \
slow_workers), an optional [slo] (wait-time SLO per priority) and [[configs]] (a scheduler \
config — queue fcfs, fifo, priority, fair or backfill; worker selection — and per-pool scaling \
overrides each).

METRICS, per configuration: wait and turnaround p50/p95/p99, mean and p99 bounded slowdown \
(tau 10 s), makespan, utilisation (busy cpu-time / cpu-time offered), throughput, preemptions, \
scale-ups/downs, workers started, idle and live worker-seconds, cost, Jain's fairness index \
over tenants' slowdowns, crashes, lost attempts, provisioning failures, SLO misses.

OUTPUT. A table on stderr, with a progress bar per configuration while running (only when \
stderr is a terminal). With --out DIR: SCENARIO.json and SCENARIO.csv (the metrics), \
SCENARIO-series.csv (queue length, pool sizes and allocated cpu sampled over virtual time, at \
most 1000 samples a run) and SVG plots SCENARIO-queue.svg, -pools.svg, -utilisation.svg and \
-wait-cdf.svg (one curve per configuration). The last line of stdout is one JSON object with \
scenario, seed, jobs, workers, wall_s, sim_s and event_log_hash.

REPRODUCING A FAILURE. The same seed gives the same event-log hash. Invariants (no \
over-committed worker, at most one live attempt per job, pool sizes within bounds, tenant \
quotas, every job terminal with a reason) are checked at every step; a violation stops the run \
with `reproduce with --seed N`: run the same command with that seed (and --keep-log --out DIR \
to get the event log, one line per state change).";

/// `hodei sim run` arguments.
#[derive(Args)]
pub struct RunArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Master seed (default: the scenario's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for the JSON and CSV results, the time series and the SVG plots (and the event
    /// logs with --keep-log).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the event log lines and write them to --out (memory grows with the run).
    #[arg(long)]
    pub keep_log: bool,
}

/// Runs `hodei sim ...`.
pub fn run(cmd: SimCmd) -> anyhow::Result<()> {
    match cmd {
        SimCmd::Run(a) => {
            let scenario = hodei_simulations::Scenario::load(&a.scenario)?;
            let seed = a.seed.unwrap_or(scenario.seed);
            let base = a
                .scenario
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            eprintln!(
                "scenario {} (seed {seed}): {} configuration(s)",
                scenario.name,
                scenario.configs.len()
            );
            let report = scenario.run_with(seed, &base, a.keep_log, true)?;
            for w in report.warnings.iter().take(20) {
                eprintln!("trace: {w}");
            }
            if report.warnings.len() > 20 {
                eprintln!("trace: {} more notes", report.warnings.len() - 20);
            }
            for n in &report.notes {
                eprintln!("note: {n}");
            }
            eprintln!("{}", report.table());
            if let Some(dir) = &a.out {
                for p in report.write(dir)? {
                    eprintln!("wrote {}", p.display());
                }
            }
            println!("{}", report.summary_line());
            Ok(())
        }
    }
}
