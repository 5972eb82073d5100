//! This process's ractor_cluster node: every Hodei process (node, agent, client) is one cluster
//! node with a unique name (`<role>-<pid>-<random>`).
//!
//! ractor_cluster is a transport: it authenticates sessions with the shared cookie and syncs
//! `pg` groups. A node accepts connections on its own listener (so it knows its bound address
//! and can bound the number of connections) and hands each stream to the NodeServer. Session
//! events arrive on a bounded channel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NetworkStream, NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Largest inbound frame (the transport's default; a bigger one kills the session).
pub const MAX_FRAME_BYTES: u64 = 16 << 20;
/// Session events buffered before they are dropped (and logged).
pub const EVENTS_MAX: usize = 4096;

/// A session event.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// A peer authenticated and finished its initial sync.
    Ready {
        /// Its cluster node name.
        peer: String,
    },
    /// A session closed; `authenticated` is false when it never got past the handshake
    /// (wrong cookie, malformed traffic).
    Disconnected {
        /// Its name, if it got that far.
        peer: Option<String>,
        /// Its address.
        addr: String,
        /// Whether it had authenticated.
        authenticated: bool,
    },
}

struct Forwarder {
    tx: mpsc::Sender<SessionEvent>,
    authenticated: Arc<dashmap::DashSet<u64>>,
    open: Arc<AtomicUsize>,
}

fn peer_name(s: &NodeServerSessionInformation) -> Option<String> {
    s.peer_name.as_ref().map(|n| n.name.clone())
}

impl NodeEventSubscription for Forwarder {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.authenticated.insert(ses.node_id);
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        if let Some(peer) = peer_name(&ses)
            && self.tx.try_send(SessionEvent::Ready { peer }).is_err()
        {
            warn!("session event queue full; dropped a ready event");
        }
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let authenticated = self.authenticated.remove(&ses.node_id).is_some();
        let ev = SessionEvent::Disconnected {
            peer: peer_name(&ses),
            addr: ses.peer_addr.clone(),
            authenticated,
        };
        if self.tx.try_send(ev).is_err() {
            warn!("session event queue full; dropped a disconnect event");
        }
    }
}

/// Errors of the cluster transport.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node server could not start.
    #[error("starting the cluster transport: {0}")]
    Start(String),
    /// Could not bind the listen address.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Could not reach the peer.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer closed the session during the handshake.
    #[error("{addr} closed the connection during the handshake: wrong cookie, or not a hodei node")]
    Handshake {
        /// Address.
        addr: String,
    },
    /// No answer in time.
    #[error("{addr} did not complete the handshake within {secs} s")]
    Timeout {
        /// Address.
        addr: String,
        /// Seconds waited.
        secs: u64,
    },
}

/// This process's cluster node.
pub struct ClusterNode {
    /// The NodeServer actor.
    pub server: ActorRef<NodeServerMessage>,
    /// Our unique name.
    pub name: String,
    /// Session events.
    pub events: mpsc::Receiver<SessionEvent>,
    open_sessions: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("name", &self.name)
            .finish()
    }
}

/// A unique node name for this process: `<role>-<pid>-<random>`.
pub fn unique_name(role: &str) -> String {
    format!(
        "{role}-{}-{}",
        std::process::id(),
        hodei_actors::provider::local::random_hex(3)
    )
}

/// Starts this process's cluster node. Clients and agents pass no `listen` (they only dial).
pub async fn start(role: &str, cookie: &str) -> Result<ClusterNode, ClusterError> {
    let name = unique_name(role);
    // The NodeServer always runs a listener; ours is on loopback with an OS-chosen port. A node
    // accepts its real traffic through `accept_loop`.
    let server = NodeServer::new(
        0,
        cookie.to_string(),
        name.clone(),
        "127.0.0.1".into(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
    .with_max_inbound_frame_size(MAX_FRAME_BYTES);
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| ClusterError::Start(e.to_string()))?;
    let (tx, events) = mpsc::channel(EVENTS_MAX);
    let open_sessions = Arc::new(AtomicUsize::new(0));
    server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "hodei".into(),
            subscription: Box::new(Forwarder {
                tx,
                authenticated: Arc::new(dashmap::DashSet::new()),
                open: open_sessions.clone(),
            }),
        })
        .map_err(|e| ClusterError::Start(e.to_string()))?;
    Ok(ClusterNode {
        server,
        name,
        events,
        open_sessions,
    })
}

impl ClusterNode {
    /// Binds `addr` and hands accepted connections to the NodeServer (at most `max_connections`
    /// open sessions; more are closed at once). Returns the bound address.
    pub async fn listen(
        &self,
        addr: SocketAddr,
        max_connections: u32,
    ) -> Result<SocketAddr, ClusterError> {
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ClusterError::Bind {
                    addr,
                    reason: e.to_string(),
                })?;
        let bound = listener.local_addr().map_err(|e| ClusterError::Bind {
            addr,
            reason: e.to_string(),
        })?;
        let server = self.server.clone();
        let open = self.open_sessions.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer_addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if open.load(Ordering::Relaxed) >= max_connections as usize {
                    warn!(%peer_addr, max_connections, "connection refused: too many open sessions");
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let local_addr = stream.local_addr().unwrap_or(bound);
                debug!(%peer_addr, "connection accepted");
                if server
                    .cast(NodeServerMessage::ConnectionOpened {
                        stream: Box::new(NetworkStream::Raw {
                            peer_addr,
                            local_addr,
                            stream,
                        }),
                        is_server: true,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        info!(%bound, "listening");
        Ok(bound)
    }

    /// Dials `addr` and waits until the session is ready (authenticated and synced).
    pub async fn connect(&mut self, addr: &str, timeout: Duration) -> Result<String, ClusterError> {
        let target: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| ClusterError::Connect {
                addr: addr.into(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| ClusterError::Connect {
                addr: addr.into(),
                reason: "no address".into(),
            })?;
        ractor_cluster::client_connect(&self.server, target)
            .await
            .map_err(|e| ClusterError::Connect {
                addr: addr.into(),
                reason: e.to_string(),
            })?;
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(SessionEvent::Ready { peer })) => Ok(peer),
            Ok(Some(SessionEvent::Disconnected { .. })) | Ok(None) => {
                Err(ClusterError::Handshake { addr: addr.into() })
            }
            Err(_) => Err(ClusterError::Timeout {
                addr: addr.into(),
                secs: timeout.as_secs(),
            }),
        }
    }
}

/// Waits until a remote member of `group` appears in `pg` (after a session became ready).
pub async fn find_remote(group: &str, timeout: Duration) -> Option<ractor::ActorCell> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(c) = ractor::pg::get_members(&group.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local())
        {
            return Some(c);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
