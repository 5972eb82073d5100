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

const RUN_ABOUT: &str = "\
Run a scenario: every configuration it lists, side by side on the same workload and seed.

A scenario is a TOML file (see simulations/scenarios/): [[pools]] (worker template, provider \
start-up latency and failure rate, cost, the production scaling policy), [workload] (poisson, \
bursty, swf or csv trace), optional [[faults]] (worker_crash, provider_outage) and [[configs]] \
(a scheduler config and per-pool scaling overrides each).

Output: a table on stderr; with --out DIR, SCENARIO.json and SCENARIO.csv (per configuration: \
wait and turnaround p50/p95/p99, mean bounded slowdown (tau 10 s), makespan, utilisation, \
throughput, preemptions, scale events, idle worker-seconds, cost, Jain's fairness index over \
tenants); the last line of stdout is one JSON object with scenario, seed, jobs, workers, wall_s, \
sim_s and event_log_hash.

The same seed gives the same event-log hash. Invariants (no over-committed worker, at most one \
live attempt per job, pool sizes within bounds, tenant quotas, every job terminal with a reason) \
are checked at every step; a violation stops the run with `reproduce with --seed N`: run the same \
command with that seed (and --keep-log --out DIR to get the event log).";

/// `hodei sim run` arguments.
#[derive(Args)]
pub struct RunArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Master seed (default: the scenario's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for the JSON and CSV results (and the event logs with --keep-log).
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
            let report = scenario.run(seed, &base, a.keep_log)?;
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
