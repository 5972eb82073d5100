//! The Docker engine as the Docker provider uses it: connecting (API version negotiated, so an
//! older engine works), what a worker container looks like (a pure function of the pool's
//! template, tested without an engine), and the calls the provider makes.
//!
//! Every container Hodei creates carries `hodei.io/cluster` (the data directory's cluster id),
//! so two clusters — or two test runs — on one engine never touch each other's containers.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerSummary, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use hodei_runtime::WorkerTemplate;
use hodei_runtime::resources::{format_bytes, format_cpu_millis};

/// Label: the cluster (data directory) a container belongs to.
pub const LABEL_CLUSTER: &str = "hodei.io/cluster";
/// Label: the pool.
pub const LABEL_POOL: &str = "hodei.io/pool";
/// Label: the worker id.
pub const LABEL_WORKER: &str = "hodei.io/worker";
/// Label: the node that created it.
pub const LABEL_NODE: &str = "hodei.io/node";
/// Label: the named provider that created it.
pub const LABEL_PROVIDER: &str = "hodei.io/provider";
/// Where the image keeps the agent binary.
pub const AGENT_PATH: &str = "/usr/local/bin/hodei";
/// Scratch directories of jobs inside the container.
pub const WORK_DIR: &str = "/var/lib/hodei/work";
/// Seconds every engine request may take (an unreachable engine fails in this time).
pub const REQUEST_TIMEOUT_S: u64 = 30;
/// Bytes of a container's log kept for diagnosis when it dies.
pub const LOG_TAIL_BYTES: usize = 4096;

/// An engine call failed: the engine's own message, and what we were doing.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// Could not reach the engine.
    #[error("docker engine at {host} unreachable: {reason}")]
    Unreachable {
        /// The configured address.
        host: String,
        /// Why (the client's or the engine's message).
        reason: String,
    },
    /// The engine refused or failed a request.
    #[error("docker {op}: {reason}")]
    Engine {
        /// What was asked (`create container hodei-…`).
        op: String,
        /// The engine's message.
        reason: String,
    },
    /// Preparing an image failed on this side.
    #[error("worker image: {0}")]
    Image(String),
}

impl DockerError {
    /// Wraps an engine error with the operation.
    pub fn engine(op: impl Into<String>, e: bollard::errors::Error) -> DockerError {
        DockerError::Engine {
            op: op.into(),
            reason: engine_message(&e),
        }
    }
}

/// The engine's message without the client's decoration.
pub fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// Connects to `host` (`unix:///…`, `tcp://…`) and negotiates the API version with the engine.
pub async fn connect(host: &str) -> Result<Docker, DockerError> {
    let unreachable = |e: bollard::errors::Error| DockerError::Unreachable {
        host: host.to_string(),
        reason: engine_message(&e),
    };
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(host, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
    }
    .map_err(unreachable)?;
    let docker = tokio::time::timeout(
        Duration::from_secs(REQUEST_TIMEOUT_S),
        docker.negotiate_version(),
    )
    .await
    .map_err(|_| DockerError::Unreachable {
        host: host.to_string(),
        reason: format!("no answer within {REQUEST_TIMEOUT_S} s"),
    })?
    .map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// Everything that decides what one worker container looks like.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    /// Container name (`hodei-<cluster>-<worker>`).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// The agent's command line.
    pub cmd: Vec<String>,
    /// Environment of the agent (`K=V`).
    pub env: Vec<String>,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// CPU limit in billionths of a CPU (0 = none).
    pub nano_cpus: i64,
    /// Memory limit in bytes (0 = none).
    pub memory_bytes: i64,
    /// GPUs requested from the engine's device driver.
    pub gpus: u32,
    /// Network mode.
    pub network: String,
}

/// What a container plan is made from.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// Cluster id (data directory).
    pub cluster_id: &'a str,
    /// This node's name.
    pub node_name: &'a str,
    /// The named provider.
    pub provider: &'a str,
    /// Worker id.
    pub worker: &'a str,
    /// Pool.
    pub pool: &'a str,
    /// The pool's worker template.
    pub template: &'a WorkerTemplate,
    /// Image.
    pub image: &'a str,
    /// Network mode.
    pub network: &'a str,
    /// Address the agent dials.
    pub node_address: &'a str,
    /// Cluster cookie.
    pub cookie: &'a str,
    /// The agent's process-tree token.
    pub agent_token: &'a str,
}

/// The container name of a worker.
pub fn container_name(cluster_id: &str, worker: &str) -> String {
    let short: String = cluster_id.chars().take(12).collect();
    format!("hodei-{short}-{worker}")
}

/// The container for one worker: the agent with the template's capacity, labels, taints and job
/// environment, limited to the capacity it advertises.
pub fn plan_container(i: &PlanInput<'_>) -> ContainerPlan {
    let t = i.template;
    let mut cmd: Vec<String> = t.command.clone();
    cmd.extend(
        [
            AGENT_PATH,
            "agent",
            "--node",
            i.node_address,
            "--worker-id",
            i.worker,
            "--pool",
            i.pool,
            "--slots",
            &t.slots.to_string(),
            "--cpu",
            &format_cpu_millis(t.capacity.cpu_millis),
            "--memory",
            &format_bytes(t.capacity.memory_bytes),
            "--ephemeral-storage",
            &format_bytes(t.capacity.ephemeral_storage_bytes),
            "--gpus",
            &t.capacity.gpus.to_string(),
            "--work-dir",
            WORK_DIR,
        ]
        .map(String::from),
    );
    for (k, v) in &t.labels {
        cmd.push("--label".into());
        cmd.push(format!("{k}={v}"));
    }
    for taint in &t.taints {
        cmd.push("--taint".into());
        cmd.push(taint.to_string());
    }
    for (k, v) in &t.env {
        cmd.push("--job-env".into());
        cmd.push(format!("{k}={v}"));
    }
    let labels = HashMap::from([
        (LABEL_CLUSTER.to_string(), i.cluster_id.to_string()),
        (LABEL_POOL.to_string(), i.pool.to_string()),
        (LABEL_WORKER.to_string(), i.worker.to_string()),
        (LABEL_NODE.to_string(), i.node_name.to_string()),
        (LABEL_PROVIDER.to_string(), i.provider.to_string()),
    ]);
    ContainerPlan {
        name: container_name(i.cluster_id, i.worker),
        image: i.image.to_string(),
        cmd,
        env: vec![
            format!("{}={}", super::local::ENV_COOKIE, i.cookie),
            format!("{}={}", super::local::ENV_AGENT_TOKEN, i.agent_token),
        ],
        labels,
        nano_cpus: (t.capacity.cpu_millis as i64).saturating_mul(1_000_000),
        memory_bytes: t.capacity.memory_bytes.min(i64::MAX as u64) as i64,
        gpus: t.capacity.gpus,
        network: i.network.to_string(),
    }
}

/// The engine's create request for a plan.
pub fn create_body(p: &ContainerPlan) -> ContainerCreateBody {
    let device_requests = (p.gpus > 0).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            count: Some(i64::from(p.gpus)),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    ContainerCreateBody {
        image: Some(p.image.clone()),
        cmd: Some(p.cmd.clone()),
        env: Some(p.env.clone()),
        labels: Some(p.labels.clone()),
        host_config: Some(HostConfig {
            nano_cpus: (p.nano_cpus > 0).then_some(p.nano_cpus),
            memory: (p.memory_bytes > 0).then_some(p.memory_bytes),
            // No swap beyond the memory limit: exceeding it is an OOM kill, as on a node.
            memory_swap: (p.memory_bytes > 0).then_some(p.memory_bytes),
            network_mode: Some(p.network.clone()),
            device_requests,
            init: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Containers of this cluster (running or not), optionally only those of one provider.
pub async fn list_cluster_containers(
    docker: &Docker,
    cluster_id: &str,
    provider: Option<&str>,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let mut labels = vec![format!("{LABEL_CLUSTER}={cluster_id}")];
    if let Some(p) = provider {
        labels.push(format!("{LABEL_PROVIDER}={p}"));
    }
    let filters = HashMap::from([("label".to_string(), labels)]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| DockerError::engine("list containers", e))
}

/// Force-removes a container (killing it if it runs). A container already gone is not an error.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let opts = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(DockerError::engine(format!("remove container {id}"), e)),
    }
}

/// The end of a container's output (stdout and stderr), at most [`LOG_TAIL_BYTES`].
pub async fn logs_tail(docker: &Docker, id: &str) -> String {
    let opts = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail("40")
        .build();
    let mut out = Vec::new();
    let mut s = docker.logs(id, Some(opts));
    while let Some(Ok(chunk)) = s.next().await {
        out.extend_from_slice(chunk.as_ref());
        if out.len() > 4 * LOG_TAIL_BYTES {
            out.drain(..out.len() - LOG_TAIL_BYTES);
        }
    }
    let start = out.len().saturating_sub(LOG_TAIL_BYTES);
    String::from_utf8_lossy(&out[start..]).trim().to_string()
}

/// The last non-empty line of a log tail (for a one-line reason).
pub fn last_line(log: &str) -> Option<&str> {
    log.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_runtime::Resources;
    use std::collections::BTreeMap;

    fn template() -> WorkerTemplate {
        WorkerTemplate {
            capacity: Resources {
                cpu_millis: 1500,
                memory_bytes: 256 << 20,
                ephemeral_storage_bytes: 0,
                gpus: 0,
            },
            slots: 2,
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            taints: vec!["dedicated=ci:NoSchedule".parse().expect("taint")],
            env: BTreeMap::from([("LANG".to_string(), "C".to_string())]),
            command: vec![],
            image: None,
        }
    }

    fn input(t: &WorkerTemplate) -> PlanInput<'_> {
        PlanInput {
            cluster_id: "0123456789abcdef",
            node_name: "n1",
            provider: "docker",
            worker: "ci-7",
            pool: "ci",
            template: t,
            image: "hodei-worker:abc",
            network: "host",
            node_address: "127.0.0.1:7070",
            cookie: "secret",
            agent_token: "tok",
        }
    }

    #[test]
    fn a_worker_container_carries_labels_limits_and_the_agent_command() {
        let t = template();
        let p = plan_container(&input(&t));
        assert_eq!(p.name, "hodei-0123456789ab-ci-7");
        assert_eq!(p.labels[LABEL_CLUSTER], "0123456789abcdef");
        assert_eq!(p.labels[LABEL_POOL], "ci");
        assert_eq!(p.labels[LABEL_WORKER], "ci-7");
        assert_eq!(p.labels[LABEL_NODE], "n1");
        assert_eq!(p.nano_cpus, 1_500_000_000);
        assert_eq!(p.memory_bytes, 256 << 20);
        let cmd = p.cmd.join(" ");
        assert!(
            cmd.starts_with("/usr/local/bin/hodei agent --node 127.0.0.1:7070 --worker-id ci-7 --pool ci --slots 2 --cpu 1500m --memory 256Mi"),
            "{cmd}"
        );
        assert!(cmd.contains("--label zone=a"), "{cmd}");
        assert!(cmd.contains("--taint dedicated=ci:NoSchedule"), "{cmd}");
        assert!(cmd.contains("--job-env LANG=C"), "{cmd}");
        assert!(p.env.contains(&"HODEI_COOKIE=secret".to_string()));
        let body = create_body(&p);
        let hc = body.host_config.expect("host config");
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.memory_swap, Some(256 << 20));
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert!(hc.device_requests.is_none());
    }

    #[test]
    fn gpus_become_a_device_request_and_a_command_prefix_is_kept() {
        let mut t = template();
        t.capacity.gpus = 2;
        t.command = vec!["nice".into(), "-n".into(), "5".into()];
        let p = plan_container(&input(&t));
        assert_eq!(&p.cmd[..4], ["nice", "-n", "5", AGENT_PATH]);
        let hc = create_body(&p).host_config.expect("host config");
        let d = &hc.device_requests.expect("device requests")[0];
        assert_eq!(d.count, Some(2));
        assert_eq!(d.capabilities, Some(vec![vec!["gpu".to_string()]]));
    }

    #[test]
    fn no_limits_when_the_template_has_none() {
        let mut t = template();
        t.capacity.cpu_millis = 0;
        t.capacity.memory_bytes = 0;
        let hc = create_body(&plan_container(&input(&t)))
            .host_config
            .expect("host config");
        assert_eq!(hc.nano_cpus, None);
        assert_eq!(hc.memory, None);
    }

    #[test]
    fn the_last_line_of_a_log_is_the_reason() {
        assert_eq!(last_line("a\nb failed\n\n"), Some("b failed"));
        assert_eq!(last_line("  \n"), None);
    }
}
