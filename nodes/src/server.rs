//! Running a node in this process: the cluster transport, the actor tree, the metrics endpoint,
//! and signal handling. Used by `hodei node`, `hodei dev`, `hodei demo` and `hodei bench`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hodei_actors::metrics::Metrics;
use hodei_actors::node::{NodeHandle, start_node};
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
pub async fn start(mut config: Config) -> anyhow::Result<RunningNode> {
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
    let handle = start_node(config, cluster.name.clone()).await?;
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
