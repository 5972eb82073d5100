use super::*;
use crate::codec;
use crate::job::RetryPolicy;
use crate::scheduling::SchedulingConstraints;
use proptest::prelude::*;

fn node() -> NodeId {
    NodeId::new("n1").unwrap()
}

fn reg(id: &str, slots: u32, cpu: u64) -> WorkerRegistration {
    WorkerRegistration {
        id: WorkerId::new(id).unwrap(),
        pool: PoolId::new("p").unwrap(),
        capacity: Resources {
            cpu_millis: cpu,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        },
        slots,
        labels: Default::default(),
        taints: Vec::new(),
        agent_node: format!("agent-{id}"),
        hostname: "h".into(),
        pid: 1,
        version: "t".into(),
    }
}

struct H {
    s: ControlState,
    t: u64,
}

impl H {
    fn new() -> Self {
        let mut s = ControlState::default();
        s.apply(&Command::NodeStarted {
            node: node(),
            at_ms: 0,
        })
        .unwrap();
        Self { s, t: 1 }
    }
    fn run(&mut self, c: Command) -> Applied {
        self.s.apply(&c)
    }
    fn tick(&mut self) -> u64 {
        self.t += 1;
        self.t
    }
    fn submit(&mut self, spec: JobSpec) -> JobId {
        let id = JobId(self.s.next_job_id);
        let at_ms = self.tick();
        self.run(Command::SubmitJob {
            id,
            spec: Box::new(spec),
            at_ms,
        })
        .unwrap();
        id
    }
    fn worker(&mut self, id: &str, slots: u32) -> WorkerId {
        let at_ms = self.tick();
        self.run(Command::WorkerRegistered {
            registration: reg(id, slots, 4000),
            at_ms,
        })
        .unwrap();
        WorkerId::new(id).unwrap()
    }
    fn assign(&mut self, id: JobId, w: &WorkerId) -> AttemptNo {
        let attempt = AttemptNo(self.s.jobs[&id].attempts.len() as u32 + 1);
        let (epoch, at_ms) = (
            self.s.epoch,
            self.tick().max(self.s.jobs[&id].not_before_ms),
        );
        self.t = at_ms;
        self.run(Command::AssignJob {
            id,
            attempt,
            epoch,
            worker: w.clone(),
            at_ms,
        })
        .unwrap();
        attempt
    }
    fn finish(&mut self, id: JobId, attempt: AttemptNo, report: ExitReport) -> Applied {
        let (epoch, at_ms) = (self.s.epoch, self.tick());
        self.run(Command::AttemptFinished {
            id,
            attempt,
            epoch,
            report,
            at_ms,
        })
    }
    fn job(&self, id: JobId) -> &JobRecord {
        &self.s.jobs[&id]
    }
}

#[test]
fn a_job_runs_through_pending_scheduled_running_succeeded() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let id = h.submit(JobSpec::shell("true"));
    assert_eq!(h.job(id).state, JobState::Pending);
    let a = h.assign(id, &w);
    assert_eq!(h.job(id).state, JobState::Scheduled);
    assert_eq!(h.s.workers[&w].state, WorkerState::Busy);
    let (epoch, at_ms) = (h.s.epoch, h.t);
    h.run(Command::AttemptStarted {
        id,
        attempt: a,
        epoch,
        at_ms,
    })
    .unwrap();
    assert_eq!(h.job(id).state, JobState::Running);
    let ev = h.finish(id, a, ExitReport::exited(0)).unwrap();
    assert!(ev.contains(&Event::JobFinished {
        id,
        state: JobState::Succeeded
    }));
    assert_eq!(h.job(id).reason.as_deref(), Some("exit code 0"));
    assert_eq!(h.s.workers[&w].state, WorkerState::Idle);
    assert_eq!(h.s.workers[&w].free_slots(), 1);
}

#[test]
fn a_failed_attempt_is_retried_with_backoff_then_fails_with_its_reason() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let id = h.submit(JobSpec::shell("exit 3").with_retries(1));
    let a1 = h.assign(id, &w);
    h.finish(id, a1, ExitReport::exited(3)).unwrap();
    let j = h.job(id);
    assert_eq!(j.state, JobState::Pending);
    assert_eq!(j.not_before_ms, h.t + 1000);
    assert!(
        j.reason.as_deref().unwrap().contains("retry 1/1 in 1s"),
        "{:?}",
        j.reason
    );
    // Not schedulable during backoff.
    let none = std::collections::HashMap::new();
    assert!(
        h.s.scheduling_view(h.t, 0, 10, &none)
            .cluster
            .pending
            .is_empty()
    );
    assert_eq!(
        h.s.scheduling_view(h.t, 0, 10, &none).next_wake_ms,
        Some(h.t + 1000)
    );
    let a2 = h.assign(id, &w);
    assert_eq!(a2, AttemptNo(2));
    h.finish(id, a2, ExitReport::exited(3)).unwrap();
    let j = h.job(id);
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.exit_code, Some(3));
    assert!(j.reason.as_deref().unwrap().contains("exit code 3"));
}

#[test]
fn a_timed_out_attempt_without_retries_ends_timed_out() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let id = h.submit(JobSpec::shell("sleep 9").with_timeout_ms(1000));
    let a = h.assign(id, &w);
    let mut r = ExitReport::exited(0);
    r.exit_code = None;
    r.signal = Some(15);
    r.stopped_by = Some(StopCause::Timeout);
    h.finish(id, a, r).unwrap();
    assert_eq!(h.job(id).state, JobState::TimedOut);
    assert!(
        h.job(id)
            .reason
            .as_deref()
            .unwrap()
            .contains("timeout of 1s")
    );
}

#[test]
fn stale_reports_are_ignored_and_change_nothing() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let id = h.submit(JobSpec::shell("true").with_retries(2));
    let a1 = h.assign(id, &w);
    h.finish(id, a1, ExitReport::exited(1)).unwrap();
    let a2 = h.assign(id, &w);
    let before = codec::encode(&h.s).unwrap();
    // A late report for attempt 1.
    assert!(matches!(
        h.finish(id, a1, ExitReport::exited(0)),
        Err(Rejection::Stale(_))
    ));
    // A report from another epoch.
    let at_ms = h.t;
    let r = h.run(Command::AttemptFinished {
        id,
        attempt: a2,
        epoch: Epoch(99),
        report: ExitReport::exited(0),
        at_ms,
    });
    assert!(matches!(r, Err(Rejection::Stale(_))));
    assert_eq!(codec::encode(&h.s).unwrap(), before);
}

#[test]
fn cancelling_a_pending_job_ends_it_and_a_running_one_stops_it_first() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let p = h.submit(JobSpec::shell("true"));
    let r = h.submit(JobSpec::shell("sleep 100"));
    let a = h.assign(r, &w);
    let at_ms = h.t;
    h.run(Command::CancelJob {
        id: p,
        reason: "cancelled by user".into(),
        at_ms,
    })
    .unwrap();
    assert_eq!(h.job(p).state, JobState::Cancelled);
    let ev = h
        .run(Command::CancelJob {
            id: r,
            reason: "cancelled by user".into(),
            at_ms,
        })
        .unwrap();
    assert!(matches!(
        ev[0],
        Event::StopAttempt {
            cause: StopCause::Cancel,
            ..
        }
    ));
    assert_eq!(h.job(r).state, JobState::Scheduled);
    assert_eq!(
        h.run(Command::CancelJob {
            id: r,
            reason: "again".into(),
            at_ms
        }),
        Err(Rejection::NoOp)
    );
    let mut rep = ExitReport::exited(0);
    rep.exit_code = None;
    rep.signal = Some(15);
    rep.stopped_by = Some(StopCause::Cancel);
    h.finish(r, a, rep).unwrap();
    assert_eq!(h.job(r).state, JobState::Cancelled);
    assert_eq!(h.job(r).reason.as_deref(), Some("cancelled by user"));
}

#[test]
fn a_lost_worker_requeues_or_fails_its_jobs_with_worker_lost() {
    let mut h = H::new();
    let w = h.worker("w1", 2);
    let retry = h.submit(JobSpec::shell("a").with_retries(1));
    let once = h.submit(JobSpec::shell("b"));
    h.assign(retry, &w);
    h.assign(once, &w);
    let at_ms = h.t;
    h.run(Command::WorkerTerminated {
        id: w.clone(),
        reason: "worker lost: agent disconnected".into(),
        at_ms,
    })
    .unwrap();
    assert_eq!(h.job(retry).state, JobState::Pending);
    assert_eq!(h.job(once).state, JobState::Failed);
    assert_eq!(
        h.job(once).reason.as_deref(),
        Some("worker lost: agent disconnected")
    );
    assert_eq!(h.s.workers[&w].state, WorkerState::Terminated);
    // A terminated worker cannot come back under the same id.
    let at_ms = h.t;
    assert!(
        h.run(Command::WorkerRegistered {
            registration: reg("w1", 1, 1000),
            at_ms
        })
        .is_err()
    );
}

#[test]
fn a_node_restart_advances_the_epoch_and_loses_live_attempts() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let id = h.submit(JobSpec::shell("x").with_retries(3));
    let queued = h.submit(JobSpec::shell("y"));
    h.assign(id, &w);
    let e0 = h.s.epoch;
    let at_ms = h.t;
    let ev = h
        .run(Command::NodeStarted {
            node: node(),
            at_ms,
        })
        .unwrap();
    assert_eq!(h.s.epoch, Epoch(e0.0 + 1));
    assert_eq!(h.job(id).state, JobState::Pending);
    assert_eq!(h.job(id).charged_attempts, 1);
    assert_eq!(h.s.workers[&w].state, WorkerState::Terminated);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::JobQueued { id: q, .. } if *q == queued))
    );
}

#[test]
fn a_graceful_stop_requeues_live_attempts_without_charging_them() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let id = h.submit(JobSpec::shell("x"));
    h.assign(id, &w);
    let at_ms = h.t;
    h.run(Command::NodeStopping { at_ms }).unwrap();
    assert_eq!(h.job(id).state, JobState::Pending);
    assert_eq!(h.job(id).charged_attempts, 0);
}

#[test]
fn an_evicted_attempt_requeues_uncharged_once_its_agent_reports_the_stop() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let id = h.submit(JobSpec::shell("sleep 60"));
    let a = h.assign(id, &w);
    let (epoch, at_ms) = (h.s.epoch, h.tick());
    let ev = h
        .run(Command::EvictAttempt {
            id,
            attempt: a,
            epoch,
            reason: "by job 9 (critical)".into(),
            at_ms,
        })
        .unwrap();
    assert!(matches!(
        ev.as_slice(),
        [Event::StopAttempt {
            cause: StopCause::Preempted,
            ..
        }]
    ));
    // The slot stays taken until the agent confirms the stop.
    assert_eq!(h.s.workers[&w].free_slots(), 0);
    let mut r = ExitReport::exited(0);
    r.exit_code = None;
    r.signal = Some(15);
    r.stopped_by = Some(StopCause::Preempted);
    h.finish(id, a, r).unwrap();
    let j = h.job(id);
    assert_eq!(j.state, JobState::Pending);
    assert_eq!(j.charged_attempts, 0, "a preempted attempt is not charged");
    assert_eq!(j.preemptions, 1);
    assert_eq!(j.not_before_ms, 0, "a preempted job is schedulable at once");
    assert!(
        j.reason.as_deref().unwrap().contains("preempted: by job 9"),
        "{:?}",
        j.reason
    );
    assert_eq!(h.s.workers[&w].free_slots(), 1);
}

#[test]
fn an_evicted_attempt_that_succeeded_first_counts_as_success() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let id = h.submit(JobSpec::shell("true"));
    let a = h.assign(id, &w);
    let (epoch, at_ms) = (h.s.epoch, h.tick());
    h.run(Command::EvictAttempt {
        id,
        attempt: a,
        epoch,
        reason: "x".into(),
        at_ms,
    })
    .unwrap();
    h.finish(id, a, ExitReport::exited(0)).unwrap();
    assert_eq!(h.job(id).state, JobState::Succeeded);
}

#[test]
fn an_expired_pending_job_fails_with_its_reason_and_a_live_one_cannot_expire() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let pending = h.submit(JobSpec::shell("true"));
    let at_ms = h.tick();
    h.run(Command::ExpireJob {
        id: pending,
        reason: "scheduling deadline exceeded: 0/1 workers fit: 1 node selector mismatch".into(),
        at_ms,
    })
    .unwrap();
    assert_eq!(h.job(pending).state, JobState::Failed);
    assert!(
        h.job(pending)
            .reason
            .as_deref()
            .unwrap()
            .starts_with("scheduling deadline")
    );
    let live = h.submit(JobSpec::shell("true"));
    h.assign(live, &w);
    let at_ms = h.tick();
    assert!(matches!(
        h.run(Command::ExpireJob {
            id: live,
            reason: "x".into(),
            at_ms
        }),
        Err(Rejection::InvalidState(_))
    ));
}

#[test]
fn taints_are_stamped_when_added_kept_when_repeated_and_removed_by_key() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let gpu: Taint = "gpu=yes:NoExecute".parse().unwrap();
    let at1 = h.tick();
    h.run(Command::TaintWorker {
        id: w.clone(),
        add: vec![gpu.clone()],
        remove: vec![],
        at_ms: at1,
    })
    .unwrap();
    assert_eq!(h.s.workers[&w].taints[0].added_at_ms, at1);
    let at2 = h.tick();
    assert_eq!(
        h.run(Command::TaintWorker {
            id: w.clone(),
            add: vec![gpu],
            remove: vec![],
            at_ms: at2,
        }),
        Err(Rejection::NoOp),
        "the same taint again changes nothing (its toleration clock keeps running)"
    );
    let at3 = h.tick();
    h.run(Command::TaintWorker {
        id: w.clone(),
        add: vec![],
        remove: vec![("gpu".into(), None)],
        at_ms: at3,
    })
    .unwrap();
    assert!(h.s.workers[&w].taints.is_empty());
    assert!(matches!(
        h.run(Command::TaintWorker {
            id: WorkerId::new("nope").unwrap(),
            add: vec![],
            remove: vec![],
            at_ms: at3,
        }),
        Err(Rejection::UnknownWorker(_))
    ));
}

#[test]
fn the_view_holds_running_jobs_and_leaves_out_unschedulable_ones_until_their_retry_time() {
    let mut h = H::new();
    let w = h.worker("w1", 2);
    let a = h.submit(JobSpec::shell("a").with_timeout_ms(5_000));
    let b = h.submit(JobSpec::shell("b"));
    let c = h.submit(JobSpec::shell("c").with_scheduling(SchedulingConstraints {
        scheduling_deadline_ms: Some(10),
        ..Default::default()
    }));
    h.assign(a, &w);
    let mut notes = std::collections::HashMap::new();
    notes.insert(
        b,
        Unschedulable {
            failures: 2,
            retry_at_ms: h.t + 500,
        },
    );
    let v = h.s.scheduling_view(h.t, 7, 100, &notes);
    assert_eq!(v.cluster.cycle, 7);
    assert_eq!(v.cluster.running.len(), 1);
    assert_eq!(v.cluster.running[0].id, a);
    assert_eq!(v.cluster.running[0].time_limit_ms, Some(5_000));
    let ids: Vec<JobId> = v.cluster.pending.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![c], "b waits out its unschedulable backoff");
    assert_eq!(v.next_wake_ms, Some(h.t + 500));
    assert!(v.cluster.pending[0].deadline_at_ms.is_some());
    let later = h.t + 500;
    let v = h.s.scheduling_view(later, 8, 100, &notes);
    let b_view = v.cluster.pending.iter().find(|j| j.id == b).unwrap();
    assert_eq!(b_view.schedule_failures, 2);
    assert_eq!(
        h.s.expired_pending(later),
        vec![(c, h.job(c).submitted_at_ms + 10)]
    );
}

#[test]
fn one_tenants_backlog_does_not_fill_the_whole_window() {
    let mut h = H::new();
    h.worker("w1", 1);
    for _ in 0..100 {
        h.submit(JobSpec::shell("x").with_tenant(TenantId::new("big").unwrap()));
    }
    let small = h.submit(JobSpec::shell("x").with_tenant(TenantId::new("small").unwrap()));
    let v =
        h.s.scheduling_view(h.t, 0, 64, &std::collections::HashMap::new());
    assert!(v.cluster.pending.iter().any(|j| j.id == small));
    assert_eq!(v.pending_total, 101);
    // The window is full all the same: what the per-tenant cap skipped fills it.
    assert_eq!(v.cluster.pending.len(), CANDIDATES_PER_FREE_SLOT);
}

#[test]
fn an_idempotency_key_names_one_job_per_tenant() {
    let mut h = H::new();
    let id = h.submit(JobSpec::shell("x").with_idempotency_key("k1"));
    assert_eq!(h.s.idempotent_job(&TenantId::default(), "k1"), Some(id));
    let next = JobId(h.s.next_job_id);
    let at_ms = h.t;
    assert_eq!(
        h.run(Command::SubmitJob {
            id: next,
            spec: Box::new(JobSpec::shell("x").with_idempotency_key("k1")),
            at_ms
        }),
        Err(Rejection::Duplicate(id))
    );
    let other = JobSpec::shell("x")
        .with_idempotency_key("k1")
        .with_tenant(TenantId::new("t2").unwrap());
    h.submit(other);
}

#[test]
fn purge_forgets_old_finished_jobs_and_their_keys() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let mut ids = vec![];
    for i in 0..5 {
        let id = h.submit(JobSpec::shell("x").with_idempotency_key(format!("k{i}")));
        let a = h.assign(id, &w);
        h.finish(id, a, ExitReport::exited(0)).unwrap();
        ids.push(id);
    }
    let live = h.submit(JobSpec::shell("y"));
    let ev = h
        .run(Command::Purge {
            before_ms: 0,
            keep_finished_max: 2,
            keep_terminated_workers_max: 10,
        })
        .unwrap();
    assert_eq!(
        ev,
        vec![Event::JobsPurged {
            ids: ids[..3].to_vec()
        }]
    );
    assert!(h.s.job(ids[0]).is_none());
    assert!(h.s.job(ids[4]).is_some());
    assert!(h.s.job(live).is_some());
    assert_eq!(h.s.idempotent_job(&TenantId::default(), "k0"), None);
}

#[test]
fn backoff_policy_is_per_job() {
    let mut h = H::new();
    let w = h.worker("w1", 1);
    let id = h.submit(JobSpec::shell("x").with_retry_policy(RetryPolicy {
        max_retries: 3,
        backoff_initial_ms: 10,
        backoff_max_ms: 15,
        backoff_multiplier: 4,
    }));
    let a = h.assign(id, &w);
    h.finish(id, a, ExitReport::exited(1)).unwrap();
    assert_eq!(h.job(id).not_before_ms, h.t + 10);
    let a = h.assign(id, &w);
    h.finish(id, a, ExitReport::exited(1)).unwrap();
    assert_eq!(h.job(id).not_before_ms, h.t + 15);
}

// ---- property tests over random command sequences ----

#[derive(Debug, Clone)]
enum Op {
    Submit(u8, u32),
    Register(u8, u32),
    Assign(u8, u8),
    Start(u8),
    Finish(u8, i32),
    FinishStale(u8),
    Cancel(u8),
    Evict(u8),
    Expire(u8),
    Taint(u8, bool),
    Terminate(u8),
    Restart,
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..5, 0u32..3).prop_map(|(p, r)| Op::Submit(p, r)),
        1 => (0u8..4, 1u32..4).prop_map(|(w, s)| Op::Register(w, s)),
        4 => (0u8..20, 0u8..4).prop_map(|(j, w)| Op::Assign(j, w)),
        2 => (0u8..20).prop_map(Op::Start),
        3 => (0u8..20, 0i32..3).prop_map(|(j, c)| Op::Finish(j, c)),
        1 => (0u8..20).prop_map(Op::FinishStale),
        1 => (0u8..20).prop_map(Op::Cancel),
        1 => (0u8..20).prop_map(Op::Evict),
        1 => (0u8..20).prop_map(Op::Expire),
        1 => (0u8..4, any::<bool>()).prop_map(|(w, add)| Op::Taint(w, add)),
        1 => (0u8..4).prop_map(Op::Terminate),
        1 => Just(Op::Restart),
        1 => Just(Op::Purge),
    ]
}

fn to_command(s: &ControlState, op: &Op, t: u64) -> Option<Command> {
    let wid = |w: u8| WorkerId::new(format!("w{w}")).unwrap();
    let job = |j: u8| s.jobs.keys().nth(j as usize).copied();
    Some(match op {
        Op::Submit(p, r) => Command::SubmitJob {
            id: JobId(s.next_job_id),
            spec: Box::new(
                JobSpec::shell("x")
                    .with_priority(Priority::ALL[*p as usize])
                    .with_retries(*r)
                    .with_resources(Resources {
                        cpu_millis: 500,
                        ..Resources::ZERO
                    }),
            ),
            at_ms: t,
        },
        Op::Register(w, slots) => Command::WorkerRegistered {
            registration: reg(&format!("w{w}"), *slots, 1500),
            at_ms: t,
        },
        Op::Assign(j, w) => {
            let id = job(*j)?;
            Command::AssignJob {
                id,
                attempt: AttemptNo(s.jobs[&id].attempts.len() as u32 + 1),
                epoch: s.epoch,
                worker: wid(*w),
                at_ms: t,
            }
        }
        Op::Start(j) => {
            let id = job(*j)?;
            let a = s.jobs[&id].attempts.last()?;
            Command::AttemptStarted {
                id,
                attempt: a.number,
                epoch: a.epoch,
                at_ms: t,
            }
        }
        Op::Finish(j, code) => {
            let id = job(*j)?;
            let a = s.jobs[&id].attempts.last()?;
            Command::AttemptFinished {
                id,
                attempt: a.number,
                epoch: a.epoch,
                report: ExitReport::exited(*code),
                at_ms: t,
            }
        }
        Op::FinishStale(j) => {
            let id = job(*j)?;
            Command::AttemptFinished {
                id,
                attempt: AttemptNo(1),
                epoch: Epoch(0),
                report: ExitReport::exited(0),
                at_ms: t,
            }
        }
        Op::Cancel(j) => Command::CancelJob {
            id: job(*j)?,
            reason: "c".into(),
            at_ms: t,
        },
        Op::Evict(j) => {
            let id = job(*j)?;
            let a = s.jobs[&id].attempts.last()?;
            Command::EvictAttempt {
                id,
                attempt: a.number,
                epoch: a.epoch,
                reason: "by job 0 (critical)".into(),
                at_ms: t,
            }
        }
        Op::Expire(j) => Command::ExpireJob {
            id: job(*j)?,
            reason: "scheduling deadline exceeded".into(),
            at_ms: t,
        },
        Op::Taint(w, add) => Command::TaintWorker {
            id: wid(*w),
            add: if *add {
                vec!["maintenance:NoExecute".parse().unwrap()]
            } else {
                vec![]
            },
            remove: if *add {
                vec![]
            } else {
                vec![("maintenance".into(), None)]
            },
            at_ms: t,
        },
        Op::Terminate(w) => Command::WorkerTerminated {
            id: wid(*w),
            reason: "gone".into(),
            at_ms: t,
        },
        Op::Restart => Command::NodeStarted {
            node: node(),
            at_ms: t,
        },
        Op::Purge => Command::Purge {
            before_ms: t / 2,
            keep_finished_max: 5,
            keep_terminated_workers_max: 2,
        },
    })
}

fn check_invariants(s: &ControlState) -> Result<(), TestCaseError> {
    let mut live_on: BTreeMap<WorkerId, u32> = BTreeMap::new();
    for j in s.jobs.values() {
        let live = j.attempts.iter().filter(|a| a.outcome.is_none()).count();
        prop_assert!(live <= 1, "job {} has {live} live attempts", j.id);
        prop_assert_eq!(
            live == 1,
            matches!(j.state, JobState::Scheduled | JobState::Running)
        );
        if j.state.is_terminal() {
            prop_assert!(j.reason.is_some(), "terminal job {} has no reason", j.id);
            prop_assert!(j.finished_at_ms.is_some());
        }
        if let Some(a) = j.live_attempt() {
            *live_on.entry(a.worker.clone()).or_default() += 1;
            prop_assert!(s.workers[&a.worker].running.contains(&(j.id, a.number)));
        }
        prop_assert!(j.charged_attempts <= j.spec.retry.max_retries + 1);
    }
    for w in s.workers.values() {
        prop_assert!(w.running.len() as u32 <= w.slots || w.state == WorkerState::Terminated);
        prop_assert!(
            w.allocated.fits_in(&w.capacity),
            "worker {} over-committed",
            w.id
        );
        prop_assert_eq!(
            live_on.get(&w.id).copied().unwrap_or(0),
            w.running.len() as u32
        );
        if w.state == WorkerState::Busy {
            prop_assert!(!w.running.is_empty());
        }
    }
    let counted: u64 = s.state_counts().values().sum();
    prop_assert_eq!(counted, s.jobs.len() as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_and_rejected_commands_change_nothing(ops in proptest::collection::vec(op(), 1..120)) {
        let mut s = ControlState::default();
        s.apply(&Command::NodeStarted { node: node(), at_ms: 0 }).unwrap();
        let mut journal = vec![];
        for (i, o) in ops.iter().enumerate() {
            let t = 10 + i as u64 * 500;
            let Some(cmd) = to_command(&s, o, t) else { continue };
            let before = codec::encode(&s).unwrap();
            match s.apply(&cmd) {
                Ok(_) => journal.push(cmd),
                Err(_) => prop_assert_eq!(codec::encode(&s).unwrap(), before, "a rejected command changed the state"),
            }
            check_invariants(&s)?;
        }
        // Replay from scratch gives the same state.
        let mut r = ControlState::default();
        r.apply(&Command::NodeStarted { node: node(), at_ms: 0 }).unwrap();
        for c in &journal {
            prop_assert!(r.apply(c).is_ok());
        }
        prop_assert_eq!(codec::encode(&r).unwrap(), codec::encode(&s).unwrap());
        // A snapshot round trip rebuilds the same indices.
        let mut d: ControlState = codec::decode_store(&codec::encode(&s).unwrap()).unwrap();
        d.rebuild_indices();
        let none = std::collections::HashMap::new();
        prop_assert_eq!(
            format!("{:?}", d.scheduling_view(1 << 40, 0, 1000, &none)),
            format!("{:?}", s.scheduling_view(1 << 40, 0, 1000, &none))
        );
        prop_assert_eq!(d.state_counts(), s.state_counts());
    }
}

#[test]
fn an_accepted_data_loss_never_gives_out_an_id_or_epoch_again() {
    let mut h = H::new();
    let first = h.submit(JobSpec::shell("true"));
    let pool = PoolId::new("p").unwrap();
    assert_eq!(h.s.next_worker_id(&pool).as_str(), "p-1");
    // The surviving journal knows job 1 only; ids up to 40, epoch 7 and worker p-12 had been
    // handed out before the loss.
    h.run(Command::DataLossAccepted {
        acked_index: 90,
        recovered_index: 3,
        next_job_id: 41,
        epoch: 7,
        worker_seq_min: 12,
        pools: vec![pool.clone(), PoolId::new("other").unwrap()],
        what: "test".into(),
        at_ms: 5,
    })
    .unwrap();
    assert_eq!(h.s.epoch, Epoch(7));
    assert!(h.s.job(first).is_some(), "what survived stays");
    assert_eq!(h.submit(JobSpec::shell("true")), JobId(41));
    assert_eq!(h.s.next_worker_id(&pool).as_str(), "p-13");
    assert_eq!(
        h.s.next_worker_id(&PoolId::new("other").unwrap()).as_str(),
        "other-13"
    );
    // Marks below the state's own never move it back.
    h.run(Command::DataLossAccepted {
        acked_index: 0,
        recovered_index: 0,
        next_job_id: 2,
        epoch: 1,
        worker_seq_min: 0,
        pools: vec![],
        what: "test".into(),
        at_ms: 6,
    })
    .unwrap();
    assert_eq!(h.s.epoch, Epoch(7));
    assert_eq!(h.s.next_job_id, 42);
}
