//! The agent gateway: the remotable actor agents register with, heartbeat to and report to
//! (found in `pg` group [`AGENT_GATEWAY_GROUP`]).
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing.
//! State: none (registrations go to the control plane, heartbeats to worker actors, output to
//! the log store — written before the attempt's end is forwarded, so a finished job's log is
//! complete).

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, pg};
use tracing::{debug, warn};

use crate::context::NodeContext;
use crate::control_plane::{AttemptEvent, ControlPlaneMsg};
use crate::gateway::{ask, refuse};
use crate::wire::{
    AGENT_GATEWAY_GROUP, AgentEvent, AgentGatewayMsg, AgentMsg, ApiError, ApiErrorKind, Wire,
    agent_group,
};
use crate::worker::WorkerMsg;

/// How long registration waits for the agent's executor to appear in `pg`.
pub const AGENT_LOOKUP_MS: u64 = 5_000;

/// The actor.
pub struct AgentGateway;

#[ractor::async_trait]
impl Actor for AgentGateway {
    type Msg = AgentGatewayMsg;
    type State = NodeContext;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(AGENT_GATEWAY_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(ctx)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        pg::leave(AGENT_GATEWAY_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        ctx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentGatewayMsg::Register(wire, reply) => {
                let hello = match wire.0 {
                    Ok(h) => h,
                    Err(e) => {
                        refuse(ctx, &e);
                        let _ = reply.send(Wire::ok(Err(e.into())));
                        return Ok(());
                    }
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let r = register(&ctx, hello.registration).await;
                    if let Err(e) = &r {
                        warn!(error = %e, "agent registration refused");
                    }
                    let _ = reply.send(Wire::ok(r));
                });
            }
            AgentGatewayMsg::Heartbeat(wire, reply) => {
                let hb = match wire.0 {
                    Ok(h) => h,
                    Err(e) => {
                        refuse(ctx, &e);
                        let _ = reply.send(Wire::ok(Err(e.into())));
                        return Ok(());
                    }
                };
                match ctx.dir.worker(&hb.worker) {
                    Some(w) => {
                        let _ = w.cast(WorkerMsg::Heartbeat {
                            heartbeat: hb,
                            reply,
                        });
                    }
                    None => {
                        let _ = reply.send(Wire::ok(Err(ApiError::new(
                            ApiErrorKind::NotFound,
                            format!(
                                "worker {} is not registered with this node (it was declared lost or retired); the agent must exit",
                                hb.worker
                            ),
                        ))));
                    }
                }
            }
            AgentGatewayMsg::Report(wire) => {
                let report = match wire.0 {
                    Ok(r) => r,
                    Err(e) => {
                        refuse(ctx, &e);
                        return Ok(());
                    }
                };
                let mut attempt_events = Vec::new();
                for event in report.events {
                    match event {
                        AgentEvent::Started { attempt, .. } => {
                            attempt_events.push(AttemptEvent::Started(attempt));
                        }
                        AgentEvent::Output {
                            attempt,
                            stream,
                            data,
                        } => {
                            if let Err(e) =
                                ctx.logs
                                    .append(attempt.job, attempt.attempt.0, stream, &data)
                            {
                                warn!(job = %attempt.job, error = %e, "could not store job output");
                            }
                        }
                        AgentEvent::Finished { attempt, report: r } => {
                            debug!(job = %attempt.job, attempt = %attempt.attempt, outcome = %r.describe(), "attempt finished");
                            attempt_events.push(AttemptEvent::Finished(attempt, r));
                        }
                    }
                }
                // Output was stored above, before the control plane learns an attempt ended.
                if !attempt_events.is_empty()
                    && let Some(c) = ctx.dir.control()
                {
                    let _ = c.cast(ControlPlaneMsg::AttemptEvents(attempt_events));
                }
            }
        }
        Ok(())
    }
}

async fn register(
    ctx: &NodeContext,
    registration: hodei_runtime::WorkerRegistration,
) -> Result<crate::wire::RegisterAccepted, ApiError> {
    let group = agent_group(&registration.id);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(AGENT_LOOKUP_MS);
    let agent: ActorRef<AgentMsg> = loop {
        if let Some(cell) = pg::get_members(&group)
            .into_iter()
            .find(|c| !c.get_id().is_local())
        {
            break cell.into();
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                ApiErrorKind::InvalidRequest,
                format!(
                    "agent for worker {} registered, but its executor is not in pg group {group}",
                    registration.id
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let control = ctx
        .dir
        .control()
        .ok_or_else(|| ApiError::unavailable("the control plane is not running"))?;
    ask(
        &control,
        |reply| ControlPlaneMsg::RegisterWorker {
            registration,
            agent,
            reply,
        },
        30_000,
    )
    .await?
}
