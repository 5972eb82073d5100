//! Actor tests of a node's tree under tokio's paused clock: a fake agent (a local actor speaking
//! the agent protocol) stands in for a real one, so heartbeat deadlines, job timeouts, retry
//! backoff and actor restarts run in virtual time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hodei_actors::context::NodeContext;
use hodei_actors::control_plane::{AttemptEvent, ControlPlaneMsg};
use hodei_actors::gateway::serve;
use hodei_actors::job::JobMsg;
use hodei_actors::journal::JournalMode;
use hodei_actors::node::{NodeHandle, start_node_with};
use hodei_actors::wire::{
    AgentHeartbeat, AgentMsg, AttemptRef, ClientRequest, ClientResponse, JobView, StopOrder, Wire,
};
use hodei_actors::worker::WorkerMsg;
use hodei_config::{HostResources, RawConfig};
use hodei_runtime::job::StopCause;
use hodei_runtime::{
    ExitReport, JobId, JobSpec, JobState, PoolId, Resources, RetryPolicy, WorkerId,
    WorkerRegistration,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

const CONFIG: &str = r#"
[node]
name = "t"
listen = "127.0.0.1:0"
cookie = "actor-test-cookie"
[agents]
heartbeat_interval = "1s"
heartbeat_timeout = "3s"
lease = "5s"
stop_grace = "1s"
[[pools]]
name = "fake"
provider = "external"
"#;

struct Node {
    handle: NodeHandle,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::parse(CONFIG, "test").unwrap();
        raw.node.data_dir = Some(dir.path().display().to_string());
        let cfg = raw
            .validate(HostResources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
            })
            .unwrap();
        let handle = start_node_with(cfg, "node-test".into(), JournalMode::Inline)
            .await
            .unwrap();
        Node { handle, _dir: dir }
    }

    fn ctx(&self) -> &NodeContext {
        &self.handle.ctx
    }

    async fn submit(&self, spec: JobSpec) -> JobId {
        match serve(
            self.ctx(),
            ClientRequest::Submit {
                spec: Box::new(spec),
            },
        )
        .await
        .unwrap()
        {
            ClientResponse::Submitted(a) => a.id,
            other => panic!("{other:?}"),
        }
    }

    async fn job(&self, id: JobId) -> JobView {
        match serve(self.ctx(), ClientRequest::GetJob { id })
            .await
            .unwrap()
        {
            ClientResponse::Job(v) => *v,
            other => panic!("{other:?}"),
        }
    }

    /// Waits until the job is finished and returns it.
    async fn finished(&self, id: JobId, within: Duration, what: &str) -> JobView {
        until(within, what, async || {
            let v = self.job(id).await;
            v.state.is_terminal().then_some(v)
        })
        .await
    }

    fn report(&self, ev: AttemptEvent) {
        self.ctx()
            .dir
            .control()
            .unwrap()
            .cast(ControlPlaneMsg::AttemptEvents(vec![ev]))
            .unwrap();
    }
}

/// Polls `f` every 10 ms of virtual time for at most `within` of virtual time.
async fn until<T>(within: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fake agent: records what the node sends it.
struct FakeAgent;
type Inbox = Arc<Mutex<Vec<AgentMsgRecord>>>;

#[derive(Debug, Clone)]
enum AgentMsgRecord {
    Assign(AttemptRef),
    Stop(StopOrder),
    Shutdown,
}

#[ractor::async_trait]
impl Actor for FakeAgent {
    type Msg = AgentMsg;
    type State = Inbox;
    type Arguments = Inbox;
    async fn pre_start(
        &self,
        _: ActorRef<AgentMsg>,
        inbox: Inbox,
    ) -> Result<Inbox, ActorProcessingErr> {
        Ok(inbox)
    }
    async fn handle(
        &self,
        _: ActorRef<AgentMsg>,
        msg: AgentMsg,
        inbox: &mut Inbox,
    ) -> Result<(), ActorProcessingErr> {
        let rec = match msg {
            AgentMsg::Assign(Wire(Ok(a))) => AgentMsgRecord::Assign(a.attempt),
            AgentMsg::Stop(Wire(Ok(s))) => AgentMsgRecord::Stop(s),
            AgentMsg::Shutdown(_) => AgentMsgRecord::Shutdown,
            _ => return Ok(()),
        };
        inbox.lock().unwrap().push(rec);
        Ok(())
    }
}

async fn register(node: &Node, id: &str) -> (WorkerId, Inbox) {
    let inbox: Inbox = Arc::default();
    let (agent, _) = Actor::spawn(None, FakeAgent, inbox.clone()).await.unwrap();
    let wid = WorkerId::new(id).unwrap();
    let registration = WorkerRegistration {
        id: wid.clone(),
        pool: PoolId::new("fake").unwrap(),
        capacity: Resources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ..Resources::ZERO
        },
        slots: 2,
        labels: Default::default(),
        taints: Vec::new(),
        agent_node: format!("agent-{id}"),
        hostname: "test".into(),
        pid: 1,
        version: "test".into(),
    };
    let control = node.ctx().dir.control().unwrap();
    ractor::call_t!(
        control,
        |reply| ControlPlaneMsg::RegisterWorker {
            registration,
            agent,
            reply
        },
        10_000
    )
    .unwrap()
    .unwrap();
    let w = wid.clone();
    until(Duration::from_secs(10), "the worker actor", async || {
        node.ctx().dir.worker(&w)
    })
    .await;
    (wid, inbox)
}

/// Heartbeats every 500 ms (virtual) until dropped.
fn keep_alive(node: &Node, w: &WorkerId) -> tokio::task::JoinHandle<()> {
    let (ctx, w) = (node.ctx().clone(), w.clone());
    tokio::spawn(async move {
        loop {
            if let Some(a) = ctx.dir.worker(&w) {
                let (tx, _rx) = ractor::concurrency::oneshot();
                let _ = a.cast(WorkerMsg::Heartbeat {
                    heartbeat: AgentHeartbeat {
                        worker: w.clone(),
                        running: vec![],
                    },
                    reply: tx.into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

fn stop_order(inbox: &Inbox) -> Option<StopOrder> {
    inbox.lock().unwrap().iter().find_map(|m| match m {
        AgentMsgRecord::Stop(s) => Some(*s),
        _ => None,
    })
}

fn assigned(inbox: &Inbox) -> Vec<AttemptRef> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            AgentMsgRecord::Assign(a) => Some(*a),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_stops_heartbeating_is_declared_lost_after_its_deadline() {
    let node = Node::start().await;
    let (w, inbox) = register(&node, "fake-1").await;
    let hb = keep_alive(&node, &w);
    let id = node.submit(JobSpec::shell("sleep 100")).await;
    let a = until(Duration::from_secs(10), "the assignment", async || {
        assigned(&inbox).first().copied()
    })
    .await;
    assert_eq!(a.job, id);
    node.report(AttemptEvent::Started(a));
    // While it heartbeats, the worker stays, however long the job runs.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(node.job(id).await.state, JobState::Running);
    hb.abort();
    let silent_since = tokio::time::Instant::now();
    let v = node
        .finished(
            id,
            Duration::from_secs(30),
            "the worker to be declared lost",
        )
        .await;
    let waited = silent_since.elapsed();
    assert_eq!(v.state, JobState::Failed);
    assert!(
        v.reason
            .as_deref()
            .unwrap()
            .starts_with("worker lost: no heartbeat"),
        "{v:?}"
    );
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(5),
        "lost after {waited:?}"
    );
    node.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_node_stops_a_timed_out_attempt_and_records_it_when_the_agent_stays_silent() {
    let node = Node::start().await;
    let (w, inbox) = register(&node, "fake-1").await;
    let _hb = keep_alive(&node, &w);
    let id = node
        .submit(JobSpec::shell("sleep 100").with_timeout_ms(2_000))
        .await;
    let a = until(Duration::from_secs(10), "the assignment", async || {
        assigned(&inbox).first().copied()
    })
    .await;
    node.report(AttemptEvent::Started(a));
    let started = tokio::time::Instant::now();
    let stop = until(Duration::from_secs(10), "a stop order", async || {
        stop_order(&inbox)
    })
    .await;
    assert_eq!(stop.cause, StopCause::Timeout);
    assert_eq!(stop.attempt, a);
    assert!(started.elapsed() >= Duration::from_secs(2));
    // The agent never confirms: after the grace (1 s) and the slack (5 s) the node records it.
    let v = node
        .finished(id, Duration::from_secs(20), "the timeout to be recorded")
        .await;
    assert_eq!(v.state, JobState::TimedOut, "{v:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    node.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_its_backoff_before_it_is_placed_again() {
    let node = Node::start().await;
    let (w, inbox) = register(&node, "fake-1").await;
    let _hb = keep_alive(&node, &w);
    let id = node
        .submit(JobSpec::shell("exit 1").with_retry_policy(RetryPolicy {
            max_retries: 1,
            backoff_initial_ms: 10_000,
            backoff_max_ms: 10_000,
            backoff_multiplier: 2,
        }))
        .await;
    let a1 = until(
        Duration::from_secs(10),
        "the first assignment",
        async || assigned(&inbox).first().copied(),
    )
    .await;
    node.report(AttemptEvent::Started(a1));
    node.report(AttemptEvent::Finished(a1, ExitReport::exited(1)));
    let failed_at = tokio::time::Instant::now();
    let a2 = until(Duration::from_secs(30), "the retry", async || {
        assigned(&inbox).get(1).copied()
    })
    .await;
    assert_eq!(a2.attempt.0, 2);
    assert!(
        failed_at.elapsed() >= Duration::from_secs(10),
        "retried after {:?}",
        failed_at.elapsed()
    );
    node.report(AttemptEvent::Started(a2));
    node.report(AttemptEvent::Finished(a2, ExitReport::exited(0)));
    let v = node.finished(id, Duration::from_secs(10), "success").await;
    assert_eq!(v.state, JobState::Succeeded);
    assert_eq!(v.attempts, 2);
    node.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_job_actor_is_rebuilt_and_still_enforces_the_timeout() {
    let node = Node::start().await;
    let (w, inbox) = register(&node, "fake-1").await;
    let _hb = keep_alive(&node, &w);
    let id = node
        .submit(JobSpec::shell("sleep 100").with_timeout_ms(5_000))
        .await;
    let a = until(Duration::from_secs(10), "the assignment", async || {
        assigned(&inbox).first().copied()
    })
    .await;
    node.report(AttemptEvent::Started(a));
    let started = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = node.ctx().dir.job(&id).expect("job actor").get_id();
    node.ctx()
        .dir
        .job(&id)
        .unwrap()
        .cast(JobMsg::InjectFault)
        .unwrap();
    let after = until(Duration::from_secs(5), "a new job actor", async || {
        node.ctx()
            .dir
            .job(&id)
            .filter(|j| j.get_id() != before)
            .map(|j| j.get_id())
    })
    .await;
    assert_ne!(before, after);
    let stop = until(
        Duration::from_secs(10),
        "the stop order from the rebuilt actor",
        async || stop_order(&inbox),
    )
    .await;
    assert_eq!(stop.cause, StopCause::Timeout);
    let at = started.elapsed();
    assert!(
        at >= Duration::from_secs(5) && at < Duration::from_secs(6),
        "deadline kept across the restart: {at:?}"
    );
    let mut r = ExitReport::exited(0);
    r.exit_code = None;
    r.signal = Some(15);
    r.stopped_by = Some(StopCause::Timeout);
    node.report(AttemptEvent::Finished(a, r));
    let v = node
        .finished(id, Duration::from_secs(10), "timed out")
        .await;
    assert_eq!(v.state, JobState::TimedOut);
    node.handle.shutdown().await;
}
