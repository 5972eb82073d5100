//! Running a node in this process: the cluster transport, the actor tree, the metrics endpoint,
//! and signal handling. Used by `hodei node`, `hodei dev`, `hodei demo` and `hodei bench`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use hodei_actors::context::SchedulerPlugins;
use hodei_actors::metrics::Metrics;
use hodei_actors::node::{NodeHandle, start_node_full};
use hodei_config::Config;
use tracing::{info, warn};

use crate::client::Client;
use crate::cluster::{self, SessionEvent};

/// A node running in this process.
pub struct RunningNode {
    /// The actor tree.
    pub handle: NodeHandle,
    /// Where it accepts clients and agents.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    _cluster: cluster::ClusterNode,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("addr", &self.addr)
            .finish()
    }
}

/// The file a node writes its listen address to (for scripts and tests that use port 0).
pub fn addr_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("node.addr")
}

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Starts a node: listener first (so agents get the real port), then the actor tree.
pub async fn start(config: Config) -> anyhow::Result<RunningNode> {
    start_with_plugins(config, SchedulerPlugins::default()).await
}

/// Like [`start`], adding custom scheduling plugins (filters and scores written in Rust) to
/// named scheduler profiles:
///
/// ```no_run
/// # async fn f(config: hodei_config::Config) -> anyhow::Result<()> {
/// use std::sync::Arc;
/// use hodei::server::{SchedulerPlugins, start_with_plugins};
/// use hodei_runtime::scheduling::{Candidate, QueuedJob, Reason, SchedulingContext, SchedulingPlugin};
///
/// /// Keeps jobs labelled `confidential=yes` off workers not labelled `secure=yes`.
/// struct SecureOnly;
/// impl SchedulingPlugin for SecureOnly {
///     fn name(&self) -> &str { "secure_only" }
///     fn filter(&self, _: &SchedulingContext<'_, '_>, job: &QueuedJob, w: &Candidate<'_>)
///         -> Result<(), Reason> {
///         let wants = job.labels.get("confidential").is_some_and(|v| v == "yes");
///         let is = w.info.labels.get("secure").is_some_and(|v| v == "yes");
///         if wants && !is { Err("worker not secure".into()) } else { Ok(()) }
///     }
/// }
///
/// let plugins = SchedulerPlugins::default().with("default", Arc::new(|| Box::new(SecureOnly)));
/// let node = start_with_plugins(config, plugins).await?;
/// # drop(node); Ok(()) }
/// ```
pub async fn start_with_plugins(
    mut config: Config,
    plugins: SchedulerPlugins,
) -> anyhow::Result<RunningNode> {
    let _ = std::fs::remove_file(addr_file(&config.node.data_dir));
    let _ = std::fs::remove_file(config.node.data_dir.join("metrics.addr"));
    let mut cluster = cluster::start("node", &config.node.cookie).await?;
    let addr = cluster
        .listen(config.node.listen, config.node.max_connections)
        .await?;
    if config.node.advertise.port() == 0 || config.node.advertise == config.node.listen {
        let mut a = addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        config.node.advertise = a;
    }
    let data_dir = config.node.data_dir.clone();
    let metrics_listen = config.node.metrics_listen;
    let handle = start_node_full(
        config,
        cluster.name.clone(),
        hodei_actors::journal::JournalMode::Threaded,
        plugins,
    )
    .await?;
    let mut events = std::mem::replace(&mut cluster.events, tokio::sync::mpsc::channel(1).1);
    let dir = handle.ctx.dir.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                SessionEvent::Disconnected {
                    peer,
                    addr,
                    authenticated: false,
                } => warn!(
                    peer_addr = %addr,
                    peer = peer.as_deref().unwrap_or("?"),
                    "rejected a connection: it closed before authenticating (wrong cookie, or not a hodei peer)"
                ),
                SessionEvent::Disconnected {
                    peer: Some(peer), ..
                } => {
                    if let Some(w) = dir.peer_worker(&peer)
                        && let Some(a) = dir.worker(&w)
                    {
                        let _ = a.cast(hodei_actors::worker::WorkerMsg::AgentDisconnected);
                    }
                }
                _ => {}
            }
        }
    });
    let metrics_addr = match metrics_listen {
        Some(a) => Some(serve_metrics(a, handle.ctx.metrics.clone()).await?),
        None => None,
    };
    if let Some(m) = metrics_addr {
        write_atomically(&data_dir.join("metrics.addr"), &m.to_string())?;
    }
    write_atomically(&addr_file(&data_dir), &addr.to_string())?;
    info!(%addr, node = %handle.ctx.config.node.name, cluster_name = %handle.ctx.cluster_name, "node ready");
    Ok(RunningNode {
        handle,
        addr,
        metrics_addr,
        _cluster: cluster,
    })
}

async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "metrics endpoint stopped");
        }
    });
    info!(%bound, "serving /metrics");
    Ok(bound)
}

impl RunningNode {
    /// A client talking to this node in-process.
    pub fn client(&self) -> Client {
        Client::embedded(self.handle.ctx.clone())
    }

    /// The cluster id of this node's data directory (labels its Docker containers).
    pub fn cluster_id(&self) -> String {
        self.handle.ctx.cluster_id.clone()
    }

    /// Runs until SIGINT/SIGTERM (graceful shutdown) or a fatal failure (error).
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("interrupted; shutting down"),
            _ = term.recv() => info!("terminated; shutting down"),
            _ = self.handle.wait() => {
                self.handle.agents.terminate_all();
                anyhow::bail!("the node stopped after a fatal failure (see the log above); its state is safe in the data directory");
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Graceful shutdown.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}
