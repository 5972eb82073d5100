//! The client gateway: the one remotable actor clients talk to (found in `pg` group
//! [`GATEWAY_GROUP`]). Each request is served on its own task (bounded by
//! [`REQUESTS_IN_FLIGHT_MAX`]) so a long-poll never blocks other clients.
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing.
//! State: none (it forwards to the control plane, the pools and the log store).

use std::sync::Arc;
use std::time::Duration;

use hodei_runtime::JobId;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, pg};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::context::NodeContext;
use crate::control_plane::ControlPlaneMsg;
use crate::metrics::ReasonLabel;
use crate::pool::PoolMsg;
use crate::wire::{
    ApiError, ApiErrorKind, ClientReply, ClientRequest, ClientResponse, GATEWAY_GROUP, GatewayMsg,
    LOG_READ_BYTES_MAX, LONG_POLL_MS_MAX, PoolView, Wire, WireError,
};

/// Most client requests served at once; more are refused as Unavailable.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 16_384;
/// Timeout of a request to the control plane.
pub const CONTROL_TIMEOUT_MS: u64 = 30_000;

/// The actor.
pub struct Gateway;

/// State.
pub struct GatewayState {
    ctx: NodeContext,
    permits: Arc<Semaphore>,
}

/// Asks an actor, mapping transport failures and timeouts to API errors.
pub async fn ask<M, T, F>(actor: &ActorRef<M>, f: F, timeout_ms: u64) -> Result<T, ApiError>
where
    M: ractor::Message,
    T: Send + 'static,
    F: FnOnce(ractor::RpcReplyPort<T>) -> M,
{
    match actor.call(f, Some(Duration::from_millis(timeout_ms))).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(ApiError::unavailable(format!(
            "the node did not answer within {timeout_ms} ms"
        ))),
        Ok(CallResult::SenderError) | Err(_) => Err(ApiError::unavailable(
            "the node is restarting a component; retry",
        )),
    }
}

pub(crate) fn refuse(ctx: &NodeContext, e: &WireError) {
    let reason = match e {
        WireError::Malformed(_) => "malformed",
        WireError::Oversized { .. } => "oversized",
        WireError::Version { .. } => "version",
    };
    ctx.metrics
        .refused_messages
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .inc();
    warn!(%e, "refused a message");
}

#[ractor::async_trait]
impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.dir.set_gateway(myself.clone());
        pg::join(GATEWAY_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(GatewayState {
            ctx,
            permits: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        pg::leave(GATEWAY_GROUP.to_string(), vec![myself.get_cell()]);
        st.ctx.dir.clear_gateway(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let GatewayMsg::Request(wire, reply) = msg;
        let req = match wire.0 {
            Ok(r) => r,
            Err(e) => {
                refuse(&st.ctx, &e);
                let _ = reply.send(Wire::ok(Err(e.into())));
                return Ok(());
            }
        };
        let Ok(permit) = st.permits.clone().try_acquire_owned() else {
            let _ = reply.send(Wire::ok(Err(ApiError::unavailable(format!(
                "the node is serving {REQUESTS_IN_FLIGHT_MAX} requests; retry later"
            )))));
            return Ok(());
        };
        let ctx = st.ctx.clone();
        tokio::spawn(async move {
            let r = serve(&ctx, req).await;
            if let Err(e) = &r {
                debug!(error = %e, "request failed");
            }
            let _ = reply.send(Wire::ok(r));
            drop(permit);
        });
        Ok(())
    }
}

/// Serves one client request (also used by the embedded client).
pub async fn serve(ctx: &NodeContext, req: ClientRequest) -> ClientReply {
    let control = ctx
        .dir
        .control()
        .ok_or_else(|| ApiError::unavailable("the control plane is not running"))?;
    let t = CONTROL_TIMEOUT_MS;
    match req {
        ClientRequest::Hello { client } => {
            debug!(%client, "client hello");
            let epoch = ask(&control, |reply| ControlPlaneMsg::GetEpoch { reply }, t).await?;
            Ok(ClientResponse::Hello {
                node: ctx.config.node.name.to_string(),
                epoch,
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
        }
        ClientRequest::Submit { spec } => {
            let ack = ask(
                &control,
                |reply| ControlPlaneMsg::Submit { spec: *spec, reply },
                t,
            )
            .await??;
            Ok(ClientResponse::Submitted(ack))
        }
        ClientRequest::GetJob { id } => {
            let v = ask(&control, |reply| ControlPlaneMsg::GetJob { id, reply }, t).await??;
            Ok(ClientResponse::Job(Box::new(v)))
        }
        ClientRequest::ListJobs { filter } => {
            let v = ask(
                &control,
                |reply| ControlPlaneMsg::ListJobs { filter, reply },
                t,
            )
            .await?;
            Ok(ClientResponse::Jobs(v))
        }
        ClientRequest::WaitJob { id, timeout_ms } => {
            let wait = timeout_ms.clamp(1, LONG_POLL_MS_MAX);
            match control
                .call(
                    |reply| ControlPlaneMsg::WaitJob { id, reply },
                    Some(Duration::from_millis(wait)),
                )
                .await
            {
                Ok(CallResult::Success(r)) => Ok(ClientResponse::Job(Box::new(r?))),
                _ => {
                    let v =
                        ask(&control, |reply| ControlPlaneMsg::GetJob { id, reply }, t).await??;
                    Ok(ClientResponse::Job(Box::new(v)))
                }
            }
        }
        ClientRequest::ReadLogs {
            id,
            offset,
            max_bytes,
            wait_ms,
        } => read_logs(ctx, &control, id, offset, max_bytes, wait_ms).await,
        ClientRequest::Cancel { id, reason } => {
            let reason = reason.unwrap_or_else(|| "cancelled by user".into());
            let v = ask(
                &control,
                |reply| ControlPlaneMsg::Cancel { id, reason, reply },
                t,
            )
            .await??;
            Ok(ClientResponse::Job(Box::new(v)))
        }
        ClientRequest::ListWorkers => {
            let v = ask(&control, |reply| ControlPlaneMsg::ListWorkers { reply }, t).await?;
            Ok(ClientResponse::Workers(v))
        }
        ClientRequest::ListPools => {
            let stats = ask(&control, |reply| ControlPlaneMsg::GetPoolStats { reply }, t).await?;
            let mut out = Vec::new();
            for spec in &ctx.config.pools {
                let mut view = match ctx.dir.pool(&spec.id) {
                    Some(p) => ask(&p, PoolMsg::GetView, t).await?,
                    None => PoolView {
                        name: spec.id.to_string(),
                        provider: spec.provider.to_string(),
                        min_workers: spec.min_workers,
                        max_workers: spec.max_workers,
                        slots: spec.template.slots,
                        capacity: spec.template.capacity,
                        workers: vec![],
                        pending_fitting: 0,
                        last_decision: None,
                        provisioning_failures: 0,
                        providers: vec![],
                    },
                };
                if let Some(s) = stats.pools.get(&spec.id) {
                    let mut counts = std::collections::BTreeMap::new();
                    for w in &s.workers {
                        *counts.entry(w.state).or_insert(0u32) += 1;
                    }
                    view.workers = counts.into_iter().collect();
                    view.pending_fitting = s.demand.jobs();
                }
                out.push(view);
            }
            Ok(ClientResponse::Pools(out))
        }
        ClientRequest::TaintWorker { id, add, remove } => {
            for t in &add {
                t.validate()
                    .map_err(|e| ApiError::new(ApiErrorKind::InvalidRequest, e.to_string()))?;
            }
            let v = ask(
                &control,
                |reply| ControlPlaneMsg::TaintWorker {
                    id,
                    add,
                    remove,
                    reply,
                },
                t,
            )
            .await??;
            Ok(ClientResponse::Worker(Box::new(v)))
        }
        ClientRequest::Explain { id } => {
            let e = ask(&control, |reply| ControlPlaneMsg::Explain { id, reply }, t).await??;
            Ok(ClientResponse::Explanation(e.map(Box::new)))
        }
        ClientRequest::Metrics => Ok(ClientResponse::Metrics(ctx.metrics.encode())),
        ClientRequest::InjectFault { target } => inject_fault(ctx, &target),
        ClientRequest::SnapshotSave => crate::backups::save(ctx, &control).await,
        ClientRequest::SnapshotRead {
            name,
            offset,
            max_bytes,
        } => crate::backups::read(ctx, name, offset, max_bytes).await,
    }
}

async fn read_logs(
    ctx: &NodeContext,
    control: &ActorRef<ControlPlaneMsg>,
    id: JobId,
    offset: u64,
    max_bytes: u32,
    wait_ms: u64,
) -> ClientReply {
    let max_bytes = max_bytes.clamp(1, LOG_READ_BYTES_MAX);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(wait_ms.min(LONG_POLL_MS_MAX));
    loop {
        // Register for wake-ups before looking, so output arriving in between is not missed.
        let notify = ctx.logs.notifier(id);
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let finished = ask(
            control,
            |reply| ControlPlaneMsg::IsFinished { id, reply },
            CONTROL_TIMEOUT_MS,
        )
        .await?
        .ok_or_else(|| ApiError::no_job(id))?;
        let logs = ctx.logs.clone();
        let chunk =
            tokio::task::spawn_blocking(move || logs.chunk(id, offset, max_bytes, finished))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| ApiError::internal(format!("reading the log of job {id}: {e}")))?;
        if !chunk.records.is_empty() || chunk.complete || tokio::time::Instant::now() >= deadline {
            return Ok(ClientResponse::Logs(chunk));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            // One last look after the deadline.
            continue;
        }
    }
}

fn inject_fault(ctx: &NodeContext, target: &str) -> ClientReply {
    if !ctx.config.fault_injection {
        return Err(ApiError::new(
            ApiErrorKind::Forbidden,
            "fault injection is disabled on this node (debug.fault_injection = false)",
        ));
    }
    let sent = match target.split_once(':') {
        None if target == "scheduler" => ctx
            .dir
            .scheduler()
            .map(|s| s.cast(crate::scheduler::SchedulerMsg::InjectFault).is_ok()),
        None if target == "autoscaler" => ctx.dir.autoscaler().map(|s| {
            s.cast(crate::autoscaler::AutoscalerMsg::InjectFault)
                .is_ok()
        }),
        None if target == "provider" => ctx
            .dir
            .provider()
            .map(|s| s.cast(crate::provider::ProviderMsg::InjectFault).is_ok()),
        Some(("provider", name)) => ctx
            .dir
            .named_provider(&name.to_string())
            .map(|s| s.cast(crate::provider::ProviderMsg::InjectFault).is_ok()),
        Some(("job", id)) => id.parse::<JobId>().ok().and_then(|id| {
            ctx.dir
                .job(&id)
                .map(|j| j.cast(crate::job::JobMsg::InjectFault).is_ok())
        }),
        Some(("worker", id)) => id.parse().ok().and_then(|id| {
            ctx.dir
                .worker(&id)
                .map(|w| w.cast(crate::worker::WorkerMsg::InjectFault).is_ok())
        }),
        Some(("pool", id)) => id.parse().ok().and_then(|id| {
            ctx.dir
                .pool(&id)
                .map(|p| p.cast(PoolMsg::InjectFault).is_ok())
        }),
        _ => {
            return Err(ApiError::new(
                ApiErrorKind::InvalidRequest,
                format!(
                    "unknown fault target {target:?}; use scheduler, autoscaler, provider, job:ID, worker:ID or pool:NAME"
                ),
            ));
        }
    };
    match sent {
        Some(true) => Ok(ClientResponse::Done),
        _ => Err(ApiError::new(
            ApiErrorKind::NotFound,
            format!("fault target {target:?} is not running"),
        )),
    }
}
