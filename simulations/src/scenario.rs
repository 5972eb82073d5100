//! Scenarios: a TOML file naming the pools, the workload, optional faults and one or more
//! scheduler/autoscaler configurations, which run side by side on the same workload and seed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::metrics::SloConfig;
use crate::model::{Fault, PoolConfig, RunConfig, RunResult, Simulation, TimeLimit};
use crate::workload::{self, WorkloadConfig, WorkloadKind};

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name (output files and the summary line).
    pub name: String,
    /// Default seed (`--seed` overrides).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Pools.
    pub pools: Vec<PoolConfig>,
    /// Jobs.
    pub workload: WorkloadConfig,
    /// Scripted faults.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Wait-time SLOs per priority (counted as `slo_misses`).
    #[serde(default)]
    pub slo: SloConfig,
    /// Configurations run side by side.
    pub configs: Vec<RunConfig>,
}

fn default_seed() -> u64 {
    1
}

/// All runs of a scenario.
#[derive(Debug, Clone)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Jobs in the workload.
    pub jobs: u64,
    /// Workers started (largest over the runs).
    pub workers: u64,
    /// Wall time of all runs.
    pub wall_s: f64,
    /// Longest virtual time of the runs.
    pub sim_s: f64,
    /// FNV-1a over the runs' log hashes, in order.
    pub event_log_hash: String,
    /// Trace parser notes.
    pub warnings: Vec<String>,
    /// Notes about the model ("time limits are actual run times").
    pub notes: Vec<String>,
    /// One per configuration.
    pub runs: Vec<RunResult>,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Scenario::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses a scenario from TOML.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = toml::from_str(text)?;
        if s.pools.is_empty() || s.configs.is_empty() {
            anyhow::bail!("a scenario needs at least one [[pools]] and one [[configs]]");
        }
        Ok(s)
    }

    /// Runs every configuration with `seed`; `base` resolves trace paths.
    pub fn run(&self, seed: u64, base: &Path, keep_log: bool) -> anyhow::Result<Report> {
        self.run_with(seed, base, keep_log, false)
    }

    /// [`Scenario::run`], with a progress bar per configuration on stderr when `progress` (and
    /// stderr is a terminal).
    pub fn run_with(
        &self,
        seed: u64,
        base: &Path,
        keep_log: bool,
        progress: bool,
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        let w = workload::build(&self.workload, seed, base)?;
        let mut notes = Vec::new();
        if matches!(self.workload.kind, WorkloadKind::Swf | WorkloadKind::Csv)
            && self
                .configs
                .iter()
                .any(|c| c.time_limit == TimeLimit::Actual)
        {
            notes.push(
                "the trace has no requested times: time-limit based strategies (backfill) use \
                 each job's actual run time as its estimate"
                    .to_string(),
            );
        }
        let mut runs = Vec::new();
        for c in &self.configs {
            let mut sim = Simulation::new(seed, &self.pools, c, &w.jobs, &self.faults, keep_log)?;
            let bar = progress.then(|| progress_bar(&c.name, w.jobs.len()));
            if let Some(b) = &bar {
                sim.set_progress(b.clone());
            }
            let r = sim.run();
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let mut r = r.map_err(anyhow::Error::new)?;
            self.slo.apply(&r.jobs, &mut r.metrics);
            runs.push(r);
        }
        let mut h = crate::engine::EventLog::new(false);
        for r in &runs {
            h.record(0, format_args!("{} {}", r.name, r.log.hash_hex()));
        }
        Ok(Report {
            scenario: self.name.clone(),
            seed,
            jobs: w.jobs.len() as u64,
            workers: runs.iter().map(|r| r.workers).max().unwrap_or(0),
            wall_s: started.elapsed().as_secs_f64(),
            sim_s: runs.iter().map(|r| r.sim_ms).max().unwrap_or(0) as f64 / 1000.0,
            event_log_hash: h.hash_hex(),
            warnings: w.warnings,
            notes,
            runs,
        })
    }
}

/// A bar counting the jobs that ended; drawn only when stderr is a terminal.
fn progress_bar(config: &str, jobs: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(jobs as u64), target);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>14} [{bar:40}] {pos}/{len} jobs ended ({elapsed})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(config.to_string());
    bar
}

impl Report {
    /// The one-line JSON summary (the last line of stdout).
    pub fn summary_line(&self) -> String {
        serde_json::json!({
            "scenario": self.scenario,
            "seed": self.seed,
            "jobs": self.jobs,
            "workers": self.workers,
            "wall_s": (self.wall_s * 1000.0).round() / 1000.0,
            "sim_s": self.sim_s,
            "event_log_hash": self.event_log_hash,
        })
        .to_string()
    }

    /// The comparison table (for stderr).
    pub fn table(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header(vec![
            "config",
            "ok",
            "failed",
            "wait p50 s",
            "wait p95 s",
            "wait p99 s",
            "turn p50 s",
            "bsld mean",
            "makespan s",
            "util %",
            "preempt",
            "scale up/down",
            "idle w·s",
            "live w·s",
            "cost",
            "jain",
            "slo miss",
            "log hash",
        ]);
        for r in &self.runs {
            let m = &r.metrics;
            t.add_row(vec![
                r.name.clone(),
                m.succeeded.to_string(),
                m.failed.to_string(),
                format!("{:.1}", m.wait_p50_s),
                format!("{:.1}", m.wait_p95_s),
                format!("{:.1}", m.wait_p99_s),
                format!("{:.1}", m.turnaround_p50_s),
                format!("{:.2}", m.bounded_slowdown_mean),
                format!("{:.0}", m.makespan_s),
                format!("{:.1}", m.utilisation_pct),
                m.preemptions.to_string(),
                format!("{}/{}", m.scale_ups, m.scale_downs),
                format!("{:.0}", m.idle_worker_s),
                format!("{:.0}", m.worker_s),
                format!("{:.2}", m.cost),
                format!("{:.3}", m.jain_fairness),
                if m.slo_jobs == 0 {
                    "-".to_string()
                } else {
                    format!("{}/{}", m.slo_misses, m.slo_jobs)
                },
                r.log.hash_hex(),
            ]);
        }
        t.to_string()
    }

    /// Writes `<scenario>.json` (metrics and time series per config), `<scenario>.csv` (one row
    /// per config),
    /// `<scenario>-series.csv` (the sampled time series), the SVG plots (see [`crate::plots`])
    /// and, when the log was kept, `<scenario>-<config>.log` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut written = Vec::new();
        let json = serde_json::json!({
            "scenario": self.scenario,
            "seed": self.seed,
            "jobs": self.jobs,
            "event_log_hash": self.event_log_hash,
            "notes": self.notes,
            "warnings": self.warnings,
            "runs": self.runs.iter().map(|r| serde_json::json!({
                "config": r.name,
                "event_log_hash": r.log.hash_hex(),
                "sim_s": r.sim_ms as f64 / 1000.0,
                "metrics": r.metrics,
                "series": r.series,
            })).collect::<Vec<_>>(),
        });
        let p = dir.join(format!("{}.json", self.scenario));
        std::fs::write(&p, serde_json::to_string_pretty(&json)?)?;
        written.push(p);
        let p = dir.join(format!("{}.csv", self.scenario));
        let mut f = std::fs::File::create(&p)?;
        let header = serde_json::to_value(&self.runs[0].metrics)?;
        let keys: Vec<String> = header
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        writeln!(f, "config,{}", keys.join(","))?;
        for r in &self.runs {
            let v = serde_json::to_value(&r.metrics)?;
            let row: Vec<String> = keys.iter().map(|k| v[k].to_string()).collect();
            writeln!(f, "{},{}", r.name, row.join(","))?;
        }
        written.push(p);
        let p = dir.join(format!("{}-series.csv", self.scenario));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p)?);
        writeln!(
            f,
            "config,t_s,pending,running,allocated_pct,registered,provisioning"
        )?;
        for r in &self.runs {
            for s in &r.series.samples {
                let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
                writeln!(
                    f,
                    "{},{},{},{},{:.2},{},{}",
                    r.name,
                    s.t_ms as f64 / 1000.0,
                    s.pending,
                    s.running,
                    s.allocated_pct,
                    join(&s.registered),
                    join(&s.provisioning)
                )?;
            }
        }
        f.flush()?;
        written.push(p);
        written.extend(crate::plots::write(self, dir)?);
        for r in &self.runs {
            if !r.log.lines().is_empty() {
                let p = dir.join(format!("{}-{}.log", self.scenario, r.name));
                std::fs::write(&p, r.log.lines().join("\n") + "\n")?;
                written.push(p);
            }
        }
        Ok(written)
    }
}
