//! The local-process provider: each worker is a `hodei agent` child process of the node.
//!
//! Supervised by: the services supervisor (permanent).
//! Supervises: nothing; the agent processes are tracked in [`LocalAgents`], which outlives the
//! actor, so a restarted provider keeps watching and destroying the same processes.
//! State: rebuilt from [`LocalAgents`].
//!
//! An agent dies with the node: it asks the kernel for SIGTERM when its parent exits
//! (`PR_SET_PDEATHSIG`), then stops its jobs and exits. When an agent process ends, the provider
//! kills whatever of its jobs survived it: every process whose environment carries the agent's
//! token in `HODEI_JOB_RUN_TOKEN` (the agent sets it per attempt as `<agent token>.<job>.<attempt>`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use hodei_runtime::resources::{format_bytes, format_cpu_millis};
use hodei_runtime::{PoolId, WorkerId, WorkerTemplate};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use crate::context::NodeContext;
use crate::control_plane::ControlPlaneMsg;
use crate::pool::PoolMsg;
use crate::provider::ProviderMsg;

/// Environment variable carrying the cluster cookie to a local agent.
pub const ENV_COOKIE: &str = "HODEI_COOKIE";
/// Environment variable carrying the agent's token (process-tree cookie prefix).
pub const ENV_AGENT_TOKEN: &str = "HODEI_AGENT_TOKEN";
/// Environment variable carrying the node's pid (the agent checks it is still its parent).
pub const ENV_PARENT_PID: &str = "HODEI_PARENT_PID";
/// Environment variable naming each job attempt's process-tree token.
pub const ENV_RUN_TOKEN: &str = "HODEI_JOB_RUN_TOKEN";

#[derive(Debug, Clone)]
struct LocalAgent {
    pid: u32,
    token: String,
}

/// The agent processes this node started (outlives provider restarts).
#[derive(Debug, Default)]
pub struct LocalAgents {
    agents: Mutex<BTreeMap<WorkerId, LocalAgent>>,
}

impl LocalAgents {
    /// An empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Workers and pids.
    pub fn list(&self) -> Vec<(WorkerId, u32)> {
        self.agents
            .lock()
            .expect("agents lock")
            .iter()
            .map(|(w, a)| (w.clone(), a.pid))
            .collect()
    }

    /// SIGTERM every agent (they stop their jobs and exit); used at node shutdown.
    pub fn terminate_all(&self) {
        for a in self.agents.lock().expect("agents lock").values() {
            let _ = kill(Pid::from_raw(a.pid as i32), Signal::SIGTERM);
        }
    }

    /// Whether any agent is still registered as running.
    pub fn is_empty(&self) -> bool {
        self.agents.lock().expect("agents lock").is_empty()
    }
}

/// Kills every process whose environment holds `HODEI_JOB_RUN_TOKEN=<token>.` (the leftovers of
/// one agent's jobs). Returns how many were signalled.
pub fn kill_by_token_prefix(token: &str) -> usize {
    let needle = format!("{ENV_RUN_TOKEN}={token}.");
    let me = std::process::id();
    let mut killed = 0;
    // Repeat a few times: a process may fork while we scan.
    for _ in 0..5 {
        let mut found = 0;
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return killed;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env
                .split(|b| *b == 0)
                .any(|kv| kv.starts_with(needle.as_bytes()))
                && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
            {
                found += 1;
            }
        }
        killed += found;
        if found == 0 {
            break;
        }
    }
    killed
}

/// The actor.
pub struct LocalProvider;

/// State.
pub struct LocalProviderState {
    ctx: NodeContext,
    agents: Arc<LocalAgents>,
    name: String,
    binary: PathBuf,
}

#[ractor::async_trait]
impl Actor for LocalProvider {
    type Msg = ProviderMsg;
    type State = LocalProviderState;
    /// The node, the agents registry shared by every local provider, and this provider's name
    /// (`[providers.NAME]`; `local` is the default one).
    type Arguments = (NodeContext, Arc<LocalAgents>, String);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, agents, name): (NodeContext, Arc<LocalAgents>, String),
    ) -> Result<Self::State, ActorProcessingErr> {
        if name == "local" {
            ctx.dir.set_provider(myself.clone());
        }
        ctx.dir.set_named_provider(name.clone(), myself);
        let own = ctx
            .config
            .providers
            .get(&name)
            .and_then(|p| p.binary.clone());
        let binary = match own.or_else(|| ctx.config.agents.binary.clone()) {
            Some(b) => b,
            None => std::env::current_exe()?,
        };
        Ok(LocalProviderState {
            ctx,
            agents,
            name,
            binary,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.ctx.dir.clear_provider(&myself);
        st.ctx.dir.clear_named_provider(&st.name, &myself);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProviderMsg::Create {
                worker,
                pool,
                template,
            } => {
                if let Err(e) = st.create(&worker, &pool, &template) {
                    warn!(%worker, provider = %st.name, error = %e, "could not start agent");
                    if let Some(p) = st.ctx.dir.pool(&pool) {
                        let _ = p.cast(PoolMsg::ProvisionFailed {
                            id: worker,
                            error: format!(
                                "provider {}: could not start agent {}: {e}",
                                st.name,
                                st.binary.display()
                            ),
                        });
                    }
                }
            }
            ProviderMsg::Destroy { worker, reason } => {
                let agent = st
                    .agents
                    .agents
                    .lock()
                    .expect("agents lock")
                    .get(&worker)
                    .cloned();
                if let Some(a) = agent {
                    info!(%worker, pid = a.pid, %reason, "destroying agent");
                    let _ = kill(Pid::from_raw(a.pid as i32), Signal::SIGKILL);
                    let token = a.token.clone();
                    tokio::task::spawn_blocking(move || kill_by_token_prefix(&token));
                }
            }
            ProviderMsg::AgentExited { worker, status } => {
                let agent = st
                    .agents
                    .agents
                    .lock()
                    .expect("agents lock")
                    .remove(&worker);
                if let Some(a) = agent {
                    let token = a.token.clone();
                    let swept = tokio::task::spawn_blocking(move || kill_by_token_prefix(&token))
                        .await
                        .unwrap_or(0);
                    if swept > 0 {
                        warn!(%worker, processes = swept, "killed job processes the agent left behind");
                    }
                }
                if let Some(c) = st.ctx.dir.control() {
                    let _ = c.cast(ControlPlaneMsg::WorkerGone {
                        id: worker,
                        reason: format!("agent exited ({status})"),
                    });
                }
            }
            ProviderMsg::GetWorkers(reply) => {
                let _ = reply.send(st.agents.list());
            }
            ProviderMsg::StopAll(reply) => {
                // The node's shutdown terminates local agents itself (they stop their jobs).
                let _ = reply.send(());
            }
            ProviderMsg::Started { .. } | ProviderMsg::StartFailed { .. } | ProviderMsg::Tick => {}
            ProviderMsg::InjectFault => return Err("injected fault in local provider".into()),
        }
        Ok(())
    }
}

impl LocalProviderState {
    fn create(&self, worker: &WorkerId, pool: &PoolId, t: &WorkerTemplate) -> std::io::Result<()> {
        let cfg = &self.ctx.config;
        let token = format!("{}-{}", self.ctx.cluster_id, random_hex(8));
        let work_dir = cfg.agents.work_dir.join(worker.as_str());
        let mut cmd = match t.command.split_first() {
            Some((program, args)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(args).arg(&self.binary);
                c
            }
            None => tokio::process::Command::new(&self.binary),
        };
        cmd.arg("agent")
            .arg("--node")
            .arg(cfg.node.advertise.to_string())
            .arg("--worker-id")
            .arg(worker.as_str())
            .arg("--pool")
            .arg(pool.as_str())
            .arg("--slots")
            .arg(t.slots.to_string())
            .arg("--cpu")
            .arg(format_cpu_millis(t.capacity.cpu_millis))
            .arg("--memory")
            .arg(format_bytes(t.capacity.memory_bytes))
            .arg("--ephemeral-storage")
            .arg(format_bytes(t.capacity.ephemeral_storage_bytes))
            .arg("--gpus")
            .arg(t.capacity.gpus.to_string())
            .arg("--work-dir")
            .arg(&work_dir);
        for (k, v) in &t.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        for taint in &t.taints {
            cmd.arg("--taint").arg(taint.to_string());
        }
        for (k, v) in &t.env {
            cmd.arg("--job-env").arg(format!("{k}={v}"));
        }
        if let Some(u) = &cfg.agents.run_as_user {
            cmd.arg("--run-as-user").arg(u);
        }
        if let Some(g) = &cfg.agents.run_as_group {
            cmd.arg("--run-as-group").arg(g);
        }
        cmd.env(ENV_COOKIE, &cfg.node.cookie)
            .env(ENV_AGENT_TOKEN, &token)
            .env(ENV_PARENT_PID, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(false);
        // The spawn happens on this runtime worker thread, which lives as long as the node: the
        // agent's parent-death signal is tied to the spawning thread.
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        info!(%worker, pid, pool = %pool, "agent started");
        self.agents
            .agents
            .lock()
            .expect("agents lock")
            .insert(worker.clone(), LocalAgent { pid, token });
        let dir = self.ctx.dir.clone();
        let worker = worker.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                    (Some(c), _) => format!("exit status {c}"),
                    (None, Some(sig)) => format!("killed by signal {sig}"),
                    _ => s.to_string(),
                },
                Err(e) => format!("wait failed: {e}"),
            };
            if let Some(p) = dir.named_provider(&name) {
                let _ = p.cast(ProviderMsg::AgentExited { worker, status });
            }
        });
        Ok(())
    }
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
