//! The seeded simulator on the CI-sized scenarios: reproducibility, invariants and metric
//! relations. Large runs (NASA trace, scale) are `#[ignore]`d: run them in release with
//! `cargo test -p hodei-simulations --release -- --ignored --nocapture`.

use std::path::{Path, PathBuf};

use hodei_simulations::{Report, Scenario};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn run(name: &str, seed: Option<u64>, keep_log: bool) -> Report {
    let s = Scenario::load(&dir().join(name)).expect("scenario loads");
    let seed = seed.unwrap_or(s.seed);
    let r = s
        .run(seed, &dir(), keep_log)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{}\n{}", r.table(), r.summary_line());
    r
}

#[test]
fn the_same_seed_gives_the_same_event_log_hash() {
    let a = run("ci-poisson.toml", Some(42), true);
    let b = run("ci-poisson.toml", Some(42), true);
    assert_eq!(a.event_log_hash, b.event_log_hash);
    for (x, y) in a.runs.iter().zip(&b.runs) {
        assert_eq!(x.log.lines(), y.log.lines());
        assert!(x.log.len() > 1000, "a real run: {} lines", x.log.len());
    }
}

#[test]
fn different_seeds_give_different_event_logs() {
    let a = run("ci-poisson.toml", Some(1), false);
    let b = run("ci-poisson.toml", Some(2), false);
    assert_ne!(a.event_log_hash, b.event_log_hash);
}

#[test]
fn every_job_of_the_poisson_scenario_ends_and_the_autoscaler_scales_both_ways() {
    let r = run("ci-poisson.toml", None, false);
    for run in &r.runs {
        let m = &run.metrics;
        assert_eq!(m.jobs, 300);
        assert_eq!(m.succeeded, 300, "{}: {m:?}", run.name);
        assert!(run.jobs.iter().all(|j| !j.reason.is_empty()));
        assert!(m.scale_ups > 0 && m.scale_downs > 0, "{m:?}");
        assert!(m.utilisation_pct > 0.0 && m.utilisation_pct <= 100.0);
    }
}

#[test]
fn a_static_warm_pool_waits_less_than_a_dynamic_pool_from_zero() {
    let r = run("ci-warm-vs-cold.toml", None, false);
    let warm = &r.runs[0].metrics;
    let cold = &r.runs[1].metrics;
    assert_eq!(warm.succeeded, 200);
    assert_eq!(cold.succeeded, 200);
    assert!(
        warm.wait_p50_s < cold.wait_p50_s,
        "warm p50 {} s, dynamic p50 {} s",
        warm.wait_p50_s,
        cold.wait_p50_s
    );
    assert!(
        warm.idle_worker_s > cold.idle_worker_s,
        "warm workers idle between bursts"
    );
}

#[test]
fn crashed_workers_lose_their_attempts_which_are_retried_elsewhere() {
    let r = run("ci-crash.toml", None, false);
    let m = &r.runs[0].metrics;
    assert_eq!(m.crashes, 2);
    assert!(m.lost_attempts > 0, "{m:?}");
    assert_eq!(m.succeeded, 150, "all retried to success: {m:?}");
    assert!(r.runs[0].jobs.iter().any(|j| j.attempts > 1));
}

#[test]
fn every_scenario_file_parses() {
    for e in std::fs::read_dir(dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            Scenario::load(&p).unwrap_or_else(|e| panic!("{e:#}"));
        }
    }
}

fn run_scaled(name: &str, arrival_scale: f64) -> Report {
    let mut s = Scenario::load(&dir().join(name)).expect("scenario loads");
    s.workload.arrival_scale = arrival_scale;
    let r = s
        .run(s.seed, &dir(), false)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "arrival_scale {arrival_scale}\n{}\n{}",
        r.table(),
        r.summary_line()
    );
    r
}

#[test]
#[ignore = "18,239 jobs twice: a few seconds in debug, run in release"]
fn nasa_trace_completes_with_fifo_and_backfill_lowers_mean_bounded_slowdown() {
    // As logged: the submit times of this log are its start times, so the 128-cpu worker is
    // never contended and every strategy gives the same run.
    let r = run("nasa-ipsc.toml", None, false);
    let (fifo, backfill) = (&r.runs[0].metrics, &r.runs[1].metrics);
    assert_eq!(fifo.jobs, 18_239);
    assert_eq!(fifo.succeeded, 18_239);
    assert_eq!(backfill.succeeded, 18_239);
    assert!(r.notes.iter().any(|n| n.contains("actual run time")));
    eprintln!(
        "NASA iPSC as logged: FIFO mean bounded slowdown {:.3}, Backfill {:.3}; utilisation {:.1}% / {:.1}%; wall {:.2} s",
        fifo.bounded_slowdown_mean,
        backfill.bounded_slowdown_mean,
        fifo.utilisation_pct,
        backfill.utilisation_pct,
        r.wall_s
    );
    // The same jobs in 60% of the time (load ~78%): queues form and backfill pays off.
    let r = run_scaled("nasa-ipsc.toml", 0.6);
    let (fifo, backfill) = (&r.runs[0].metrics, &r.runs[1].metrics);
    assert_eq!(fifo.succeeded, 18_239);
    assert_eq!(backfill.succeeded, 18_239);
    eprintln!(
        "NASA iPSC arrivals x0.6: FIFO mean bounded slowdown {:.3}, Backfill {:.3}; utilisation {:.1}% / {:.1}%; wall {:.2} s",
        fifo.bounded_slowdown_mean,
        backfill.bounded_slowdown_mean,
        fifo.utilisation_pct,
        backfill.utilisation_pct,
        r.wall_s
    );
    assert!(backfill.bounded_slowdown_mean < fifo.bounded_slowdown_mean);
}

#[test]
fn batching_scheduling_cycles_runs_fewer_cycles_and_still_ends_every_job() {
    let mut s = Scenario::load(&dir().join("ci-poisson.toml")).unwrap();
    let every_change = s.run(s.seed, &dir(), false).unwrap();
    for c in &mut s.configs {
        c.schedule_interval_ms = 5_000;
    }
    let batched = s.run(s.seed, &dir(), false).unwrap();
    for (a, b) in every_change.runs.iter().zip(&batched.runs) {
        assert_eq!(b.metrics.succeeded, 300);
        assert!(b.metrics.scheduling_cycles < a.metrics.scheduling_cycles);
        assert!(b.metrics.wait_p50_s >= a.metrics.wait_p50_s);
    }
}

/// The scale scenario shrunk by `factor` in workers, jobs and arrival rate (same utilisation).
fn scale_run(factor: u64) -> Report {
    let mut s = Scenario::load(&dir().join("scale-10k-workers-1m-jobs.toml")).unwrap();
    s.workload.jobs /= factor;
    s.workload.rate_per_s /= factor as f64;
    s.pools[0].initial_workers = s.pools[0].initial_workers.map(|n| n / factor as u32);
    let r = s
        .run(s.seed, &dir(), false)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("scale / {factor}\n{}\n{}", r.table(), r.summary_line());
    r
}

#[test]
#[ignore = "100,000 jobs on 1,000 workers: run in release"]
fn the_scale_scenario_at_a_tenth_ends_every_job() {
    let r = scale_run(10);
    assert_eq!(r.runs[0].metrics.succeeded, 100_000);
}

#[test]
#[ignore = "1,000,000 jobs on 10,000 workers: run in release"]
fn the_scale_scenario_ends_every_job() {
    let r = scale_run(1);
    assert_eq!(r.runs[0].metrics.succeeded, 1_000_000);
}

#[test]
fn a_csv_trace_replays_with_its_bad_line_reported_and_a_quota_holds_jobs_back() {
    let r = run("ci-csv.toml", None, false);
    assert_eq!(r.jobs, 9);
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].starts_with("line 10:"), "{:?}", r.warnings);
    let (free, quota) = (&r.runs[0], &r.runs[1]);
    assert_eq!(free.metrics.succeeded, 9);
    assert_eq!(quota.metrics.succeeded, 9);
    let acme_wait = |run: &hodei_simulations::RunResult| -> u64 {
        run.jobs
            .iter()
            .filter(|j| j.tenant == "acme")
            .map(|j| j.start_ms.unwrap() - j.arrival_ms)
            .sum()
    };
    assert!(
        acme_wait(quota) > acme_wait(free),
        "the quota of 1 serialises acme's jobs"
    );
}

#[test]
fn a_provider_outage_delays_a_dynamic_pool_and_the_pool_refills_after_it() {
    let mut s = Scenario::load(&dir().join("ci-warm-vs-cold.toml")).unwrap();
    s.configs.truncate(2);
    s.configs.remove(0);
    let base = s.run(s.seed, &dir(), false).unwrap();
    s.faults.push(hodei_simulations::Fault::ProviderOutage {
        at_s: 0.0,
        duration_s: 600.0,
        pool: "general".into(),
    });
    let out = s.run(s.seed, &dir(), false).unwrap();
    let (b, o) = (&base.runs[0].metrics, &out.runs[0].metrics);
    assert_eq!(o.succeeded, 200, "{o:?}");
    assert!(o.provisioning_failures > 0, "{o:?}");
    assert!(
        o.wait_p95_s > b.wait_p95_s,
        "outage p95 {} vs {}",
        o.wait_p95_s,
        b.wait_p95_s
    );
}
