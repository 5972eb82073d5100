//! One actor per registered worker: the node-side proxy of its agent.
//!
//! Supervised by: the worker supervisor (transient: it stops when its worker is terminated;
//! restarted if it crashes).
//! Supervises: nothing.
//! State: the agent's executor ref (captured in its child spec) and the heartbeat deadline. After
//! a restart it re-sends the assignments that are still Scheduled on its worker (the agent
//! ignores duplicates) and restarts the heartbeat deadline.
//!
//! It forwards assignments and stop orders to the agent, answers the agent's heartbeats (naming
//! attempts the agent runs that the node does not consider live there, so the agent stops them),
//! and declares the worker lost when the agent disconnects or misses its heartbeat deadline —
//! asking the provider to destroy what is left of it.

use std::time::Duration;

use hodei_runtime::WorkerId;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::context::NodeContext;
use crate::control_plane::ControlPlaneMsg;
use crate::provider::ProviderMsg;
use crate::supervisor::{ChildSpec, Restart, child};
use crate::wire::{
    AgentHeartbeat, AgentMsg, Assignment, HeartbeatAck, HeartbeatReply, ShutdownOrder, StopOrder,
    Wire,
};

/// Messages.
pub enum WorkerMsg {
    /// Run an attempt on the agent.
    Dispatch(Assignment),
    /// Stop an attempt on the agent.
    Stop(StopOrder),
    /// The agent's heartbeat (answered directly to the agent).
    Heartbeat {
        /// What it reports.
        heartbeat: AgentHeartbeat,
        /// The agent's reply port.
        reply: RpcReplyPort<Wire<HeartbeatReply>>,
    },
    /// The agent's cluster session closed.
    AgentDisconnected,
    /// Heartbeat deadline check (timer).
    Check,
    /// Draining finished: shut the agent down.
    Drained,
    /// The control plane terminated the worker: stop.
    Terminated,
    /// Fault injection: fail.
    InjectFault,
}
impl ractor::Message for WorkerMsg {}

/// State.
pub struct WorkerState {
    ctx: NodeContext,
    id: WorkerId,
    agent: ActorRef<AgentMsg>,
    last_heartbeat: Instant,
    gone: bool,
}

/// The actor.
pub struct Worker;

/// The child spec the worker supervisor runs for a registered worker.
pub fn worker_child(ctx: NodeContext, id: WorkerId, agent: ActorRef<AgentMsg>) -> ChildSpec {
    child(format!("worker-{id}"), Restart::Transient, move |sup| {
        let (ctx, id, agent) = (ctx.clone(), id.clone(), agent.clone());
        async move {
            let (r, _) = Actor::spawn_linked(None, Worker, (ctx, id, agent), sup).await?;
            Ok(r.get_cell())
        }
    })
}

#[ractor::async_trait]
impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = (NodeContext, WorkerId, ActorRef<AgentMsg>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, id, agent): (NodeContext, WorkerId, ActorRef<AgentMsg>),
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.dir.set_worker(id.clone(), myself.clone());
        let control = ctx.dir.control().ok_or("control plane is not running")?;
        let pending = ractor::call_t!(
            control,
            |reply| ControlPlaneMsg::PendingAssignments {
                worker: id.clone(),
                reply
            },
            10_000
        )?;
        for a in pending {
            let _ = agent.cast(AgentMsg::Assign(Wire::ok(a)));
        }
        let interval = Duration::from_millis(ctx.config.agents.heartbeat_interval_ms);
        myself.send_interval(interval, || WorkerMsg::Check);
        Ok(WorkerState {
            ctx,
            id,
            agent,
            last_heartbeat: Instant::now(),
            gone: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.ctx.dir.clear_worker(&st.id, &myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Dispatch(a) => {
                if st.agent.cast(AgentMsg::Assign(Wire::ok(a))).is_err() {
                    st.lost(&myself, "agent unreachable".into());
                }
            }
            WorkerMsg::Stop(order) => {
                if st.agent.cast(AgentMsg::Stop(Wire::ok(order))).is_err() {
                    st.lost(&myself, "agent unreachable".into());
                }
            }
            WorkerMsg::Heartbeat { heartbeat, reply } => {
                st.last_heartbeat = Instant::now();
                let stop = match st.ctx.dir.control() {
                    Some(c) if !heartbeat.running.is_empty() => ractor::call_t!(
                        c,
                        |reply| ControlPlaneMsg::CheckAttempts {
                            worker: st.id.clone(),
                            running: heartbeat.running,
                            reply
                        },
                        5_000
                    )
                    .unwrap_or_default(),
                    _ => vec![],
                };
                if !stop.is_empty() {
                    debug!(worker = %st.id, attempts = stop.len(), "agent runs attempts the node gave up on; stopping them");
                }
                let _ = reply.send(Wire::ok(Ok(HeartbeatAck { stop })));
            }
            WorkerMsg::AgentDisconnected => st.lost(&myself, "agent disconnected".into()),
            WorkerMsg::Check => {
                let silent = st.last_heartbeat.elapsed();
                let limit = Duration::from_millis(st.ctx.config.agents.heartbeat_timeout_ms);
                if silent > limit {
                    st.lost(
                        &myself,
                        format!("no heartbeat for {} ms", silent.as_millis()),
                    );
                }
            }
            WorkerMsg::Drained => {
                let _ = st.agent.cast(AgentMsg::Shutdown(Wire::ok(ShutdownOrder {
                    reason: "worker retired".into(),
                    grace_ms: st.ctx.config.agents.stop_grace_ms,
                })));
            }
            WorkerMsg::Terminated => {
                if !st.gone {
                    // Terminated by the control plane (e.g. failed registration deadline):
                    // make sure nothing of it keeps running.
                    st.destroy("worker terminated".into());
                }
                myself.stop(None);
            }
            WorkerMsg::InjectFault => {
                return Err(format!("injected fault in worker actor {}", st.id).into());
            }
        }
        Ok(())
    }
}

impl WorkerState {
    fn destroy(&mut self, reason: String) {
        self.gone = true;
        for p in self.ctx.dir.all_providers() {
            let _ = p.cast(ProviderMsg::Destroy {
                worker: self.id.clone(),
                reason: reason.clone(),
            });
        }
    }

    fn lost(&mut self, myself: &ActorRef<WorkerMsg>, why: String) {
        if self.gone {
            return;
        }
        warn!(worker = %self.id, reason = %why, "worker lost");
        self.destroy(why.clone());
        if let Some(c) = self.ctx.dir.control() {
            let _ = c.cast(ControlPlaneMsg::WorkerGone {
                id: self.id.clone(),
                reason: format!("worker lost: {why}"),
            });
        }
        myself.stop(None);
    }
}
