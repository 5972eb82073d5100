//! The agent (`hodei agent`): a worker process that connects to its node, registers its
//! capacity, heartbeats, and runs the attempts it is assigned with the [`exec`] executor.
//!
//! * It is its own ractor_cluster node (`agent-<pid>-<random>`); its executor actor joins `pg`
//!   group `hodei.agent.<worker id>` before it dials, so the node finds it when it registers.
//! * A job's environment is its spec's `env` plus the `HODEI_JOB_*` variables (never the agent's
//!   own environment, which holds the cookie): `HODEI_JOB_ID`, `HODEI_JOB_NAME`,
//!   `HODEI_JOB_ATTEMPT`, `HODEI_JOB_TENANT`, `HODEI_JOB_WORKER`, `HODEI_JOB_POOL`, and
//!   `HODEI_JOB_RUN_TOKEN` (process-tree cookie), plus a default `PATH`.
//! * The agent enforces each attempt's timeout itself (SIGTERM, grace, SIGKILL of the tree).
//! * Lease: if no heartbeat is acknowledged for the lease duration, or the session to the node
//!   closes, it stops every attempt and exits — an orphaned agent never keeps running work the
//!   node has given up on. Started by the local provider, it also dies with the node
//!   (`PR_SET_PDEATHSIG`).

pub mod exec;
pub mod oom;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hodei_actors::wire::{
    AGENT_GATEWAY_GROUP, AgentEvent, AgentGatewayMsg, AgentHeartbeat, AgentHello, AgentMsg,
    AgentReport, ApiErrorKind, Assignment, AttemptRef, LogStream, PROTOCOL_VERSION,
    REPORT_EVENTS_MAX, REPORT_OUTPUT_BYTES_MAX, StopOrder, Wire, agent_group,
};
use hodei_runtime::job::StopCause as JobStopCause;
use hodei_runtime::{ExitReport, PoolId, Resources, WorkerId, WorkerRegistration};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, pg};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::cluster::{self, SessionEvent};
use exec::{AttemptKey, ExecConfig, ExecEvent, Executor, Launch, RunAs, Stream};

/// Commands queued from the executor actor to the agent loop.
pub const COMMANDS_MAX: usize = 4096;
/// Executor events buffered.
pub const EVENTS_MAX: usize = 1024;

/// How the agent is started.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Node address.
    pub node: String,
    /// Cluster cookie.
    pub cookie: String,
    /// Worker id to register as.
    pub worker: WorkerId,
    /// Pool.
    pub pool: PoolId,
    /// Concurrent attempts.
    pub slots: u32,
    /// Capacity offered.
    pub capacity: Resources,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<hodei_runtime::scheduling::Taint>,
    /// Environment every job starts with (its own env overrides it).
    pub job_env: BTreeMap<String, String>,
    /// Scratch directories go here.
    pub work_dir: PathBuf,
    /// Run jobs as (user, group).
    pub run_as: Option<(String, Option<String>)>,
    /// Process-tree token prefix (given by the provider, or random).
    pub token: String,
    /// The node's pid when started by the local provider: die with it.
    pub parent_pid: Option<u32>,
}

/// Why the agent stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentExit {
    /// Told to (node order or signal).
    Shutdown(String),
    /// No acknowledged heartbeat for the lease.
    LeaseExpired,
    /// The session to the node closed.
    Disconnected,
}

/// Errors that keep the agent from running.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad options.
    #[error("{0}")]
    Invalid(String),
    /// Could not reach or authenticate with the node.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// The node refused the registration.
    #[error("registration refused: {0}")]
    Refused(String),
    /// The executor could not start.
    #[error("executor: {0}")]
    Exec(#[from] exec::ExecError),
}

enum Cmd {
    Assign(Assignment),
    Stop(StopOrder),
    Shutdown(String, u64),
    TimedOut(AttemptKey),
}

/// The agent's remotable executor actor: forwards the node's orders to the agent loop.
struct AgentExecutor;

#[ractor::async_trait]
impl Actor for AgentExecutor {
    type Msg = AgentMsg;
    type State = mpsc::Sender<Cmd>;
    type Arguments = (mpsc::Sender<Cmd>, String);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (tx, group): (mpsc::Sender<Cmd>, String),
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(group, vec![myself.get_cell()]);
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let cmd = match msg {
            AgentMsg::Assign(Wire(Ok(a))) => Cmd::Assign(a),
            AgentMsg::Stop(Wire(Ok(s))) => Cmd::Stop(s),
            AgentMsg::Shutdown(Wire(Ok(s))) => Cmd::Shutdown(s.reason, s.grace_ms),
            AgentMsg::Assign(Wire(Err(e)))
            | AgentMsg::Stop(Wire(Err(e)))
            | AgentMsg::Shutdown(Wire(Err(e))) => {
                warn!(error = %e, "refused a message from the node");
                return Ok(());
            }
        };
        if tx.try_send(cmd).is_err() {
            warn!("agent command queue full; order dropped");
        }
        Ok(())
    }
}

struct Live {
    attempt: AttemptRef,
    requested: Option<JobStopCause>,
    timer: Option<tokio::task::JoinHandle<()>>,
    /// The cgroup's OOM-kill count when the attempt started.
    oom_kills_at_start: Option<u64>,
}

/// Turns an executor event into the report event the node gets (None for an unknown attempt).
fn translate(
    ev: ExecEvent,
    live: &mut HashMap<AttemptKey, Live>,
    running: &Mutex<Vec<AttemptRef>>,
    output_bytes: &mut usize,
    oom_counter: Option<&oom::OomCounter>,
) -> Option<AgentEvent> {
    match ev {
        ExecEvent::Started { key, pid } => live.get(&key).map(|l| AgentEvent::Started {
            attempt: l.attempt,
            pid,
        }),
        ExecEvent::Output { key, stream, data } => live.get(&key).map(|l| {
            *output_bytes += data.len();
            let stream = match stream {
                Stream::Stdout => LogStream::Stdout,
                Stream::Stderr => LogStream::Stderr,
            };
            AgentEvent::Output {
                attempt: l.attempt,
                stream,
                data,
            }
        }),
        ExecEvent::Exited { key, outcome } => {
            let l = live.remove(&key)?;
            if let Some(t) = l.timer {
                t.abort();
            }
            running
                .lock()
                .expect("running lock")
                .retain(|a| *a != l.attempt);
            let stopped_by = outcome
                .stopped_by
                .map(|c| l.requested.unwrap_or(job_cause(c)));
            Some(AgentEvent::Finished {
                attempt: l.attempt,
                report: ExitReport {
                    exit_code: outcome.exit_code,
                    signal: outcome.signal,
                    stopped_by,
                    spawn_error: outcome.spawn_error,
                    oom_killed: oom::killed_for_memory(
                        outcome.signal,
                        outcome.exit_code,
                        outcome.stopped_by.is_some(),
                        l.oom_kills_at_start,
                        oom_counter.and_then(|c| c.read()),
                    ),
                    log_bytes: outcome.log_bytes,
                    log_truncated: outcome.log_truncated,
                },
            })
        }
    }
}

fn exec_cause(c: JobStopCause) -> exec::StopCause {
    match c {
        JobStopCause::Timeout => exec::StopCause::Timeout,
        JobStopCause::Cancel | JobStopCause::Preempted => exec::StopCause::Cancel,
        JobStopCause::Shutdown => exec::StopCause::Shutdown,
        JobStopCause::Lease => exec::StopCause::Lease,
    }
}

fn job_cause(c: exec::StopCause) -> JobStopCause {
    match c {
        exec::StopCause::Timeout => JobStopCause::Timeout,
        exec::StopCause::Cancel => JobStopCause::Cancel,
        exec::StopCause::Shutdown => JobStopCause::Shutdown,
        exec::StopCause::Lease => JobStopCause::Lease,
    }
}

/// Runs the agent until it is told to stop, loses its lease or its session.
pub async fn run(opts: AgentOptions) -> Result<AgentExit, AgentError> {
    if let Some(parent) = opts.parent_pid {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| AgentError::Invalid(format!("set parent-death signal: {e}")))?;
        if nix::unistd::getppid().as_raw() as u32 != parent {
            return Ok(AgentExit::Shutdown(
                "the node that started this agent is gone".into(),
            ));
        }
    }
    if opts.slots == 0 {
        return Err(AgentError::Invalid("--slots must be at least 1".into()));
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AgentError::Invalid(format!("signal handler: {e}")))?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| AgentError::Invalid(format!("signal handler: {e}")))?;

    let (cmd_tx, mut cmd_rx) = mpsc::channel(COMMANDS_MAX);
    let mut cluster = cluster::start("agent", &opts.cookie).await?;
    let (executor_actor, _) = Actor::spawn(
        None,
        AgentExecutor,
        (cmd_tx.clone(), agent_group(&opts.worker)),
    )
    .await
    .map_err(|e| AgentError::Invalid(e.to_string()))?;
    cluster.connect(&opts.node, Duration::from_secs(10)).await?;
    let gateway: ActorRef<AgentGatewayMsg> =
        cluster::find_remote(AGENT_GATEWAY_GROUP, Duration::from_secs(10))
            .await
            .ok_or_else(|| AgentError::Refused(format!("{} offers no agent gateway", opts.node)))?
            .into();

    let registration = WorkerRegistration {
        id: opts.worker.clone(),
        pool: opts.pool.clone(),
        capacity: opts.capacity,
        slots: opts.slots,
        labels: opts.labels.clone(),
        taints: opts.taints.clone(),
        agent_node: cluster.name.clone(),
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into()),
        pid: std::process::id(),
        version: format!(
            "{} (protocol {PROTOCOL_VERSION})",
            env!("CARGO_PKG_VERSION")
        ),
    };
    let accepted = match gateway
        .call(
            |r| AgentGatewayMsg::Register(Wire::ok(AgentHello { registration }), r),
            Some(Duration::from_secs(30)),
        )
        .await
    {
        Ok(CallResult::Success(Wire(Ok(Ok(a))))) => a,
        Ok(CallResult::Success(Wire(Ok(Err(e))))) => return Err(AgentError::Refused(e.message)),
        Ok(CallResult::Success(Wire(Err(e)))) => return Err(AgentError::Refused(e.to_string())),
        _ => {
            return Err(AgentError::Refused(
                "the node did not answer the registration".into(),
            ));
        }
    };
    info!(worker = %opts.worker, node = %accepted.node, epoch = %accepted.epoch, "registered");

    let mut cfg = ExecConfig::new(&opts.work_dir);
    cfg.log_cap_bytes = accepted.log_cap_bytes;
    if let Some((u, g)) = &opts.run_as {
        cfg.run_as = Some(RunAs::resolve(u, g.as_deref())?);
    }
    let (ev_tx, mut ev_rx) = mpsc::channel(EVENTS_MAX);
    let executor = Executor::new(cfg, ev_tx)?;

    let grace_default = Duration::from_millis(accepted.stop_grace_ms);
    let lease = Duration::from_millis(accepted.lease_ms);
    let interval = Duration::from_millis(accepted.heartbeat_interval_ms);
    let running: Arc<Mutex<Vec<AttemptRef>>> = Arc::default();
    let (hb_tx, mut hb_rx) = mpsc::channel::<Result<Vec<AttemptRef>, (bool, String)>>(16);
    {
        let (gateway, running, worker) = (gateway.clone(), running.clone(), opts.worker.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let hb = AgentHeartbeat {
                    worker: worker.clone(),
                    running: running.lock().expect("running lock").clone(),
                };
                let r = match gateway
                    .call(
                        |r| AgentGatewayMsg::Heartbeat(Wire::ok(hb), r),
                        Some(interval.max(Duration::from_millis(500))),
                    )
                    .await
                {
                    Ok(CallResult::Success(Wire(Ok(Ok(ack))))) => Ok(ack.stop),
                    Ok(CallResult::Success(Wire(Ok(Err(e))))) => {
                        Err((e.kind == ApiErrorKind::NotFound, e.message))
                    }
                    Ok(CallResult::Success(Wire(Err(e)))) => Err((false, e.to_string())),
                    Ok(CallResult::Timeout) => Err((false, "heartbeat timed out".into())),
                    Ok(CallResult::SenderError) | Err(_) => Err((false, "node unreachable".into())),
                };
                if hb_tx.send(r).await.is_err() {
                    break;
                }
            }
        });
    }

    let report_all = |events: Vec<AgentEvent>| {
        if events.is_empty() {
            return;
        }
        let _ = gateway.cast(AgentGatewayMsg::Report(Wire::ok(AgentReport {
            worker: opts.worker.clone(),
            events,
        })));
    };
    let report = |event: AgentEvent| report_all(vec![event]);
    let mut live: HashMap<AttemptKey, Live> = HashMap::new();
    let oom_counter = oom::OomCounter::detect();
    let mut last_ack = tokio::time::Instant::now();
    let mut exiting: Option<AgentExit> = None;
    let mut events = std::mem::replace(&mut cluster.events, mpsc::channel(1).1);

    let begin_exit = |why: AgentExit,
                      grace: Duration,
                      cause: exec::StopCause,
                      exiting: &mut Option<AgentExit>| {
        if exiting.is_none() {
            info!(reason = ?why, "stopping all attempts and exiting");
            *exiting = Some(why);
            let ex = executor.clone();
            tokio::spawn(async move { ex.stop_all(grace, cause).await });
        }
    };

    loop {
        if let Some(why) = &exiting
            && live.is_empty()
            && executor.running().is_empty()
        {
            let why = why.clone();
            // Let the last reports leave before the session closes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            executor_actor.stop(None);
            return Ok(why);
        }
        tokio::select! {
            Some(cmd) = cmd_rx.recv() => match cmd {
                Cmd::Assign(a) => {
                    debug!(job = %a.attempt.job, attempt = %a.attempt.attempt, "assignment received");
                    let key = AttemptKey { job_id: a.attempt.job.0, attempt: a.attempt.attempt.0 };
                    if live.contains_key(&key) || exiting.is_some() {
                        continue;
                    }
                    let mut env = opts.job_env.clone();
                    env.extend(a.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                    env.insert("HODEI_JOB_ID".into(), a.attempt.job.to_string());
                    env.insert("HODEI_JOB_NAME".into(), a.name.clone());
                    env.insert("HODEI_JOB_ATTEMPT".into(), a.attempt.attempt.to_string());
                    env.insert("HODEI_JOB_TENANT".into(), a.tenant.to_string());
                    env.insert("HODEI_JOB_WORKER".into(), opts.worker.to_string());
                    env.insert("HODEI_JOB_POOL".into(), opts.pool.to_string());
                    let launch = Launch {
                        key,
                        argv: a.argv.clone(),
                        env,
                        working_dir: a.working_dir.as_ref().map(PathBuf::from),
                        run_token: format!("{}.{}.{}", opts.token, a.attempt.job, a.attempt.attempt),
                    };
                    match executor.launch(launch) {
                        Ok(()) => {
                            let timer = a.timeout_ms.map(|ms| {
                                let tx = cmd_tx.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    let _ = tx.send(Cmd::TimedOut(key)).await;
                                })
                            });
                            let oom_kills_at_start = oom_counter.as_ref().and_then(|c| c.read());
                            live.insert(key, Live { attempt: a.attempt, requested: None, timer, oom_kills_at_start });
                            running.lock().expect("running lock").push(a.attempt);
                        }
                        Err(exec::ExecError::Duplicate(_)) => {}
                        Err(e) => {
                            let mut r = ExitReport::exited(0);
                            r.exit_code = None;
                            r.spawn_error = Some(e.to_string());
                            report(AgentEvent::Finished { attempt: a.attempt, report: r });
                        }
                    }
                }
                Cmd::Stop(order) => {
                    let key = AttemptKey { job_id: order.attempt.job.0, attempt: order.attempt.attempt.0 };
                    if let Some(l) = live.get_mut(&key) {
                        l.requested.get_or_insert(order.cause);
                        executor.stop(key, Duration::from_millis(order.grace_ms), exec_cause(order.cause));
                    }
                }
                Cmd::TimedOut(key) => {
                    if let Some(l) = live.get_mut(&key) {
                        debug!(attempt = %key, "timeout reached; stopping");
                        l.requested.get_or_insert(JobStopCause::Timeout);
                        executor.stop(key, grace_default, exec::StopCause::Timeout);
                    }
                }
                Cmd::Shutdown(reason, grace_ms) => {
                    begin_exit(AgentExit::Shutdown(reason), Duration::from_millis(grace_ms), exec::StopCause::Shutdown, &mut exiting);
                }
            },
            Some(ev) = ev_rx.recv() => {
                // Send everything that is ready in one report (bounded): fewer messages under
                // load, no added latency when idle.
                let mut batch = Vec::new();
                let mut output_bytes = 0usize;
                let mut next = Some(ev);
                while let Some(ev) = next.take() {
                    if let Some(e) = translate(ev, &mut live, &running, &mut output_bytes, oom_counter.as_ref()) {
                        batch.push(e);
                    }
                    if batch.len() < REPORT_EVENTS_MAX && output_bytes < REPORT_OUTPUT_BYTES_MAX {
                        next = ev_rx.try_recv().ok();
                    }
                }
                report_all(batch);
            }
            Some(hb) = hb_rx.recv() => match hb {
                Ok(stop) => {
                    last_ack = tokio::time::Instant::now();
                    let running_now = executor.running();
                    for a in stop {
                        let key = AttemptKey { job_id: a.job.0, attempt: a.attempt.0 };
                        // An attempt that ended while the heartbeat was in flight is not news.
                        if running_now.contains(&key) {
                            warn!(attempt = %key, "the node no longer considers this attempt live here; stopping it");
                            executor.stop(key, grace_default, exec::StopCause::Lease);
                        }
                    }
                }
                Err((true, msg)) => {
                    warn!(%msg, "the node no longer knows this worker");
                    begin_exit(AgentExit::Disconnected, grace_default, exec::StopCause::Lease, &mut exiting);
                }
                Err((false, msg)) => {
                    if last_ack.elapsed() > lease {
                        warn!(%msg, lease_ms = lease.as_millis() as u64, "lease expired");
                        begin_exit(AgentExit::LeaseExpired, grace_default, exec::StopCause::Lease, &mut exiting);
                    }
                }
            },
            Some(ev) = events.recv() => {
                if let SessionEvent::Disconnected { .. } = ev {
                    warn!("session to the node closed");
                    begin_exit(AgentExit::Disconnected, grace_default, exec::StopCause::Lease, &mut exiting);
                }
            }
            _ = sigterm.recv() => begin_exit(AgentExit::Shutdown("SIGTERM".into()), grace_default, exec::StopCause::Shutdown, &mut exiting),
            _ = sigint.recv() => begin_exit(AgentExit::Shutdown("SIGINT".into()), grace_default, exec::StopCause::Shutdown, &mut exiting),
            _ = tokio::time::sleep(Duration::from_millis(200)), if exiting.is_some() => {}
        }
    }
}
