//! A small one-for-one supervisor (ractor has no restart strategies of its own, and
//! `ractor-supervisor` does not build with the `cluster` feature).
//!
//! Supervised by: its parent supervisor (or nobody, for the root).
//! Supervises: the children it is given at start plus those added with
//! [`SupervisorMsg::StartChild`].
//! Restart policy: per child ([`Restart`]); restarts are delayed by an exponential backoff and
//! limited by a budget (`max_restarts` within `window_ms`). A child that exhausts the budget makes
//! the supervisor fail, escalating to its own supervisor, as in Erlang/OTP.
//! State after restart: a child's `start` function rebuilds it (every Hodei actor rebuilds its
//! state from the control plane or the store in `pre_start`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokio::time::Instant;
use tracing::{info, warn};

/// Starts (or restarts) a child, linked to the given supervisor cell.
pub type StartFn = Arc<
    dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> + Send + Sync,
>;

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always (it must run for the node to work).
    Permanent,
    /// Only when it failed (a normal stop means it is done).
    Transient,
    /// Never.
    Temporary,
}

/// One child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique id within the supervisor.
    pub id: String,
    /// Restart policy.
    pub restart: Restart,
    /// How to start it.
    pub start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .finish()
    }
}

/// Restart budget and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Most restarts of one child within `window_ms` before escalating.
    pub max_restarts: u32,
    /// The budget window.
    pub window_ms: u64,
    /// Delay before the first restart in a window (doubles per restart).
    pub backoff_initial_ms: u64,
    /// Longest delay.
    pub backoff_max_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window_ms: 60_000,
            backoff_initial_ms: 10,
            backoff_max_ms: 2_000,
        }
    }
}

impl RestartPolicy {
    /// Delay before restart number `n` (0-based) in the window.
    pub fn backoff_ms(&self, n: u32) -> u64 {
        if self.backoff_initial_ms == 0 {
            return 0;
        }
        self.backoff_initial_ms
            .saturating_mul(1u64 << n.min(20))
            .min(self.backoff_max_ms)
    }
}

/// Messages.
pub enum SupervisorMsg {
    /// Start a child (dynamic children, e.g. one per job).
    StartChild(ChildSpec, Option<RpcReplyPort<Result<ActorCell, String>>>),
    /// Stop a child and forget it.
    StopChild(String),
    /// Restart after backoff (internal).
    RestartChild {
        /// Child id.
        id: String,
        /// Generation at scheduling time (a newer start cancels it).
        generation: u64,
    },
    /// List children (id, running).
    GetChildren(RpcReplyPort<Vec<(String, bool)>>),
}
impl ractor::Message for SupervisorMsg {}

/// Start arguments.
pub struct SupervisorArgs {
    /// Name for logs.
    pub name: String,
    /// Children started in order.
    pub children: Vec<ChildSpec>,
    /// Restart budget and backoff.
    pub policy: RestartPolicy,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    restarts: VecDeque<Instant>,
    generation: u64,
}

/// State.
pub struct SupervisorState {
    name: String,
    policy: RestartPolicy,
    children: BTreeMap<String, Child>,
    by_actor: HashMap<ActorId, String>,
}

/// The supervisor actor.
pub struct Supervisor;

#[ractor::async_trait]
impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            name: args.name,
            policy: args.policy,
            children: BTreeMap::new(),
            by_actor: HashMap::new(),
        };
        for spec in args.children {
            start_child(&myself, &mut state, spec).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Stop children in reverse start order.
        let cells: Vec<ActorCell> = state
            .children
            .values()
            .filter_map(|c| c.cell.clone())
            .collect();
        state.children.clear();
        for c in cells.iter().rev() {
            c.stop(Some("supervisor stopping".into()));
        }
        myself
            .get_cell()
            .stop_children_and_wait(None, Some(Duration::from_secs(10)))
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                let r = start_child(&myself, state, spec)
                    .await
                    .map_err(|e| e.to_string());
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            SupervisorMsg::StopChild(id) => {
                if let Some(c) = state.children.remove(&id)
                    && let Some(cell) = c.cell
                {
                    state.by_actor.remove(&cell.get_id());
                    cell.stop(Some("stopped by supervisor".into()));
                }
            }
            SupervisorMsg::RestartChild { id, generation } => {
                let Some(c) = state.children.get(&id) else {
                    return Ok(());
                };
                if c.generation != generation || c.cell.is_some() {
                    return Ok(());
                }
                let spec = c.spec.clone();
                if let Err(e) = start_child(&myself, state, spec).await {
                    warn!(supervisor = %state.name, child = %id, error = %e, "restart failed");
                    // Count it as another failure.
                    return on_child_down(&myself, state, &id, true).await;
                }
                info!(supervisor = %state.name, child = %id, "child restarted");
            }
            SupervisorMsg::GetChildren(reply) => {
                let _ = reply.send(
                    state
                        .children
                        .iter()
                        .map(|(id, c)| (id.clone(), c.cell.is_some()))
                        .collect(),
                );
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed, why) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let abnormal = matches!(reason.as_deref(), Some(r) if r != "normal" && !r.starts_with("stopped by supervisor") && r != "supervisor stopping");
                (cell, abnormal, reason.unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, true, err.to_string()),
            _ => return Ok(()),
        };
        let Some(id) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        if let Some(c) = state.children.get_mut(&id) {
            c.cell = None;
        }
        if failed {
            warn!(supervisor = %state.name, child = %id, reason = %why, "child failed");
        }
        on_child_down(&myself, state, &id, failed).await
    }
}

async fn start_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    spec: ChildSpec,
) -> Result<ActorCell, ActorProcessingErr> {
    if let Some(old) = state.children.get(&spec.id).and_then(|c| c.cell.clone()) {
        // Replacing a live child: stop the old one first.
        state.by_actor.remove(&old.get_id());
        old.stop(Some("stopped by supervisor: replaced".into()));
    }
    let cell = (spec.start)(myself.get_cell()).await?;
    state.by_actor.insert(cell.get_id(), spec.id.clone());
    let id = spec.id.clone();
    let entry = state.children.entry(id).or_insert_with(|| Child {
        spec: spec.clone(),
        cell: None,
        restarts: VecDeque::new(),
        generation: 0,
    });
    entry.spec = spec;
    entry.cell = Some(cell.clone());
    entry.generation += 1;
    Ok(cell)
}

async fn on_child_down(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    id: &str,
    failed: bool,
) -> Result<(), ActorProcessingErr> {
    let Some(child) = state.children.get_mut(id) else {
        return Ok(());
    };
    let restart = match child.spec.restart {
        Restart::Permanent => true,
        Restart::Transient => failed,
        Restart::Temporary => false,
    };
    if !restart {
        state.children.remove(id);
        return Ok(());
    }
    let now = Instant::now();
    let window = Duration::from_millis(state.policy.window_ms);
    while child
        .restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        child.restarts.pop_front();
    }
    if child.restarts.len() as u32 >= state.policy.max_restarts {
        let msg = format!(
            "supervisor {}: child {id} exceeded its restart budget ({} restarts in {} ms); escalating",
            state.name, state.policy.max_restarts, state.policy.window_ms
        );
        warn!("{msg}");
        return Err(msg.into());
    }
    let delay = state.policy.backoff_ms(child.restarts.len() as u32);
    child.restarts.push_back(now);
    let generation = child.generation;
    let id = id.to_string();
    if delay == 0 {
        myself.cast(SupervisorMsg::RestartChild { id, generation })?;
    } else {
        myself.send_after(Duration::from_millis(delay), move || {
            SupervisorMsg::RestartChild { id, generation }
        });
    }
    Ok(())
}

/// Builds a [`ChildSpec`] from an async start function.
pub fn child<F, Fut>(id: impl Into<String>, restart: Restart, f: F) -> ChildSpec
where
    F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<ActorCell, ActorProcessingErr>> + Send + 'static,
{
    ChildSpec {
        id: id.into(),
        restart,
        start: Arc::new(move |sup| Box::pin(f(sup))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A child that counts its starts and fails on request.
    struct Flaky;
    enum FlakyMsg {
        Fail,
        Stop,
    }
    impl ractor::Message for FlakyMsg {}

    #[ractor::async_trait]
    impl Actor for Flaky {
        type Msg = FlakyMsg;
        type State = ();
        type Arguments = Arc<AtomicU32>;
        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            starts: Arc<AtomicU32>,
        ) -> Result<(), ActorProcessingErr> {
            starts.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn handle(
            &self,
            myself: ActorRef<Self::Msg>,
            msg: FlakyMsg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                FlakyMsg::Fail => Err("boom".into()),
                FlakyMsg::Stop => {
                    myself.stop(None);
                    Ok(())
                }
            }
        }
    }

    fn flaky_spec(starts: Arc<AtomicU32>, restart: Restart) -> ChildSpec {
        child("flaky", restart, move |sup| {
            let starts = starts.clone();
            async move {
                let (r, _) = Actor::spawn_linked(None, Flaky, starts, sup).await?;
                Ok(r.get_cell())
            }
        })
    }

    async fn current(sup: &ActorRef<SupervisorMsg>) -> Option<ActorRef<FlakyMsg>> {
        for _ in 0..1000 {
            let kids = sup.get_children();
            if let Some(c) = kids.into_iter().next() {
                return Some(c.into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        None
    }

    async fn wait_starts(starts: &AtomicU32, n: u32) {
        for _ in 0..10_000 {
            if starts.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!(
            "child did not reach {n} starts (got {})",
            starts.load(Ordering::SeqCst)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_child_is_restarted_after_a_backoff() {
        let starts = Arc::new(AtomicU32::new(0));
        let (sup, _h) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                name: "t".into(),
                children: vec![flaky_spec(starts.clone(), Restart::Permanent)],
                policy: RestartPolicy::default(),
            },
        )
        .await
        .unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        current(&sup).await.unwrap().cast(FlakyMsg::Fail).unwrap();
        let before = Instant::now();
        wait_starts(&starts, 2).await;
        assert!(
            Instant::now() - before >= Duration::from_millis(10),
            "restart waited its backoff"
        );
        sup.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn exhausting_the_restart_budget_escalates() {
        let starts = Arc::new(AtomicU32::new(0));
        let (sup, h) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                name: "t".into(),
                children: vec![flaky_spec(starts.clone(), Restart::Permanent)],
                policy: RestartPolicy {
                    max_restarts: 3,
                    window_ms: 60_000,
                    backoff_initial_ms: 1,
                    backoff_max_ms: 10,
                },
            },
        )
        .await
        .unwrap();
        for n in 1..=4u32 {
            wait_starts(&starts, n).await;
            // The new child may not be linked yet; retry until a child is there.
            current(&sup).await.unwrap().cast(FlakyMsg::Fail).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("supervisor stopped after its budget was exhausted")
            .unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_children_that_stop_normally_are_not_restarted() {
        let starts = Arc::new(AtomicU32::new(0));
        let (sup, _h) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                name: "t".into(),
                children: vec![],
                policy: RestartPolicy::default(),
            },
        )
        .await
        .unwrap();
        let cell = ractor::call!(sup, |r| SupervisorMsg::StartChild(
            flaky_spec(starts.clone(), Restart::Transient),
            Some(r)
        ))
        .unwrap()
        .unwrap();
        let child: ActorRef<FlakyMsg> = cell.into();
        child.cast(FlakyMsg::Stop).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        let kids = ractor::call!(sup, SupervisorMsg::GetChildren).unwrap();
        assert!(kids.is_empty(), "{kids:?}");
        sup.stop(None);
    }
}
