//! The local platform's Sentinel topology: `status` of a group, and its operations (planned
//! failover, rolling restart, heal) run as observe → plan → execute with the planner's group
//! path (`cinnabar_cluster::group_plan`) deciding every step.
//!
//! Executes only what the planner chose: restarts go to the supervisor over the control
//! socket (it owns the processes), and a failover is the supervisor's too, because it runs the
//! proxy that must hold clients' requests while the replica catches up and Sentinel promotes
//! it. Never decides a change itself.

use std::path::Path;
use std::time::{Duration, Instant};

use cinnabar_cluster::group_plan::{
    GroupMember, GroupNext, GroupObservation, GroupOperation, GroupStep, next_group_step,
};
use cinnabar_cluster::sentinel::{GroupAccess, node_info, quorum_master, sentinel_view};
use cinnabar_cluster::{NodeAddr, NodeClient, OperateReport, Timeouts};

use crate::control::{self, ControlReply, ControlRequest};
use crate::error::LocalError;
use crate::ops::{NodeStatus, ProxyStatus, SentinelStatus, StatusReport};
use crate::state::{Phase, State, StateDir};
use crate::supervisor::local_addr;

/// How long one node or Sentinel may take to answer.
const ASK: Duration = Duration::from_secs(1);
const TIMEOUTS: Timeouts = Timeouts {
    connect: ASK,
    response: ASK,
};
/// The longest clients' requests are held during a planned failover.
pub const FAILOVER_MAX_PAUSE: Duration = Duration::from_secs(10);

/// How the control plane reaches the group recorded in `state`.
pub fn access(state: &State) -> GroupAccess {
    GroupAccess {
        name: crate::spec::GROUP_NAME.into(),
        sentinels: state
            .nodes
            .iter()
            .filter(|n| n.sentinel)
            .map(|n| local_addr(n.port))
            .collect(),
        sentinel_credentials: None,
        credentials: None,
    }
}

fn data_nodes(state: &State) -> Vec<NodeAddr> {
    state
        .nodes
        .iter()
        .filter(|n| !n.sentinel)
        .map(|n| local_addr(n.port))
        .collect()
}

/// Asks every data node and Sentinel of the group in `state`.
pub async fn observe(state: &State) -> GroupObservation {
    let group = access(state);
    let named = quorum_master(&group.sentinels, &group.name, ASK, None).await;
    let mut members = Vec::new();
    for addr in data_nodes(state) {
        members.push(match node_info(&addr, TIMEOUTS, None).await {
            Ok(info) => GroupMember {
                addr,
                reachable: true,
                says_master: info.is_master(),
                follows: info.master.clone(),
                link_up: info.link_up,
                offset: info.offset,
            },
            Err(_) => GroupMember {
                addr,
                reachable: false,
                says_master: false,
                follows: None,
                link_up: false,
                offset: 0,
            },
        });
    }
    let (master, answering) = match named {
        Ok((master, _, answered)) => {
            let confirmed = members
                .iter()
                .any(|m| m.addr == master && m.reachable && m.says_master);
            (confirmed.then_some(master), answered)
        }
        Err(_) => (None, 0),
    };
    GroupObservation {
        master,
        members,
        sentinels_answering: answering,
        sentinels: group.sentinels.len(),
        // Configured once at start with fixed addresses: nothing to form or reset here.
        sentinel_members: Vec::new(),
    }
}

/// `cinnabar status` of a Sentinel group.
pub(crate) async fn status(
    dir: &StateDir,
    state: &State,
    supervisor: Option<u32>,
    proxy: Option<ProxyStatus>,
) -> StatusReport {
    let running = state.phase != Phase::Stopped;
    let supervised = supervisor.is_some();
    let observed = if running {
        Some(observe(state).await)
    } else {
        None
    };
    let master = observed.as_ref().and_then(|o| o.master.clone());
    let master_offset = observed
        .as_ref()
        .zip(master.as_ref())
        .and_then(|(o, m)| o.members.iter().find(|x| x.addr == *m))
        .map(|m| m.offset);
    // The master's own replica lines carry each replica's lag in seconds.
    let links = match &master {
        Some(m) => node_info(m, TIMEOUTS, None)
            .await
            .map(|i| i.replicas)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut problems = Vec::new();
    let mut nodes = Vec::new();
    for node in state.nodes.iter().filter(|n| !n.sentinel) {
        let addr = local_addr(node.port);
        let member = observed
            .as_ref()
            .and_then(|o| o.members.iter().find(|m| m.addr == addr));
        let (role, health) = match member {
            Some(m) if m.reachable && Some(&m.addr) == master.as_ref() => ("master", "ok"),
            Some(m) if m.reachable && m.says_master => {
                problems.push(format!(
                    "{addr} says it is a master, but the Sentinels name {}: `cinnabar heal` \
                     makes it a replica",
                    master.as_ref().map_or("none".into(), ToString::to_string)
                ));
                ("master", "degraded")
            }
            Some(m) if m.reachable => {
                let in_sync = m.link_up && m.follows.is_some() && m.follows == master;
                if !in_sync {
                    problems.push(format!(
                        "replica {addr} is not in sync with the master (follows {}, link {})",
                        m.follows
                            .as_ref()
                            .map_or("nobody".into(), ToString::to_string),
                        if m.link_up { "up" } else { "down" }
                    ));
                }
                ("replica", if in_sync { "ok" } else { "degraded" })
            }
            _ => {
                if running {
                    problems.push(format!("{addr} is unreachable"));
                }
                ("unknown", "unreachable")
            }
        };
        let link = links.iter().find(|l| l.addr == addr);
        nodes.push(NodeStatus {
            address: addr.to_string(),
            id: None,
            role: role.into(),
            master: member
                .and_then(|m| m.follows.as_ref())
                .map(ToString::to_string),
            slots: Vec::new(),
            pid: if supervised { node.pid } else { None },
            health: health.into(),
            memory_bytes: None,
            memory: None,
            restarts: node.restarts,
            flags: Vec::new(),
            host: None,
            offset: member.filter(|m| m.reachable).map(|m| m.offset),
            lag_bytes: member
                .filter(|m| m.reachable && role == "replica")
                .zip(master_offset)
                .map(|(m, o)| o.saturating_sub(m.offset)),
            lag_seconds: link.map(|l| l.lag),
        });
    }
    let group = access(state);
    let mut sentinels = Vec::new();
    for node in state.nodes.iter().filter(|n| n.sentinel) {
        let addr = local_addr(node.port);
        let view = if running {
            sentinel_view(&addr, &group.name, TIMEOUTS, None)
                .await
                .map_err(|e| e.to_string())
        } else {
            Err("the group is stopped".into())
        };
        if running {
            match &view {
                Ok(v) if Some(&v.master) != master.as_ref() => {
                    problems.push(format!("Sentinel {addr} names {} as master", v.master))
                }
                Ok(v) if v.flags.iter().any(|f| f.contains("down")) => problems.push(format!(
                    "Sentinel {addr} flags the master {}",
                    v.flags.join(",")
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("Sentinel {addr} does not answer: {e}")),
            }
        }
        sentinels.push(SentinelStatus {
            address: addr.to_string(),
            pid: if supervised { node.pid } else { None },
            up: view.is_ok(),
            master: view.as_ref().ok().map(|v| v.master.to_string()),
            flags: view.as_ref().map(|v| v.flags.clone()).unwrap_or_default(),
            replicas: view.as_ref().ok().map(|v| v.replicas),
            other_sentinels: view.as_ref().ok().map(|v| v.other_sentinels),
            restarts: node.restarts,
            error: view.err(),
        });
    }
    if running && master.is_none() {
        problems.push("no confirmed master: the Sentinels are failing over, or disagree".into());
    }
    if !supervised && running {
        problems.push("no supervisor is running: crashed nodes will not be restarted".into());
    }
    let proxy_down = proxy.as_ref().filter(|p| !p.up);
    if let Some(p) = proxy_down.filter(|_| running) {
        problems.push(format!(
            "the proxy on {} does not answer PING ({}): clients cannot use the endpoint",
            p.address,
            p.error.as_deref().unwrap_or("no reason")
        ));
    }
    let phase = match state.phase {
        Phase::Starting => "starting",
        Phase::Ready => "ready",
        Phase::Stopping => "stopping",
        Phase::Stopped => "stopped",
    };
    let in_sync = nodes
        .iter()
        .filter(|n| n.role == "replica" && n.health == "ok")
        .count();
    let agreeing = sentinels
        .iter()
        .filter(|s| s.master.is_some() && s.master == master.as_ref().map(ToString::to_string))
        .count();
    let healthy = state.phase == Phase::Ready && supervised && problems.is_empty();
    let verdict = if !running {
        format!(
            "stopped: data kept in {}; `cinnabar up --dir {0}` resumes it",
            dir.root().display()
        )
    } else {
        format!(
            "{}: master {}, {in_sync}/{} replicas in sync, {agreeing}/{} Sentinels agree{}",
            if healthy { "healthy" } else { "degraded" },
            master.as_ref().map_or("none".into(), ToString::to_string),
            nodes.len().saturating_sub(1),
            sentinels.len(),
            if healthy {
                proxy.as_ref().map_or(String::new(), |p| {
                    format!(", proxy serving on {}", p.address)
                })
            } else {
                format!(", {} problem(s)", problems.len())
            }
        )
    };
    StatusReport {
        endpoint: state.endpoint.clone(),
        admin: state
            .spec
            .admin_port()
            .map(|port| format!("127.0.0.1:{port}")),
        proxy,
        dir: dir.root().to_path_buf(),
        phase: phase.into(),
        supervisor_pid: supervisor,
        healthy,
        verdict,
        slots_covered: 0,
        server: format!("{:?} {}", state.server_flavor, state.server_version).to_lowercase(),
        nodes,
        problems,
        topology: "sentinel".into(),
        sentinels,
    }
}

/// What happened during a group operation, for the person watching.
#[derive(Debug)]
pub enum GroupEvent<'a> {
    /// A step starts.
    Step(usize, &'a GroupStep),
    /// It finished, with what it found worth saying.
    StepDone(usize, Duration, Option<String>),
    /// Waiting for the group.
    Waiting(&'a str),
}

impl std::fmt::Display for GroupEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step(n, step) => write!(f, "step {n}: {step}"),
            Self::StepDone(n, took, note) => {
                write!(f, "step {n} done in {} ms", took.as_millis())?;
                match note {
                    Some(note) => write!(f, " ({note})"),
                    None => Ok(()),
                }
            }
            Self::Waiting(why) => write!(f, "waiting: {why}"),
        }
    }
}

/// Why a group operation did not finish.
#[derive(Debug, thiserror::Error)]
pub enum GroupOperationError {
    /// The planner refused; nothing was changed by this refusal.
    #[error("refused: {0}")]
    Refused(String),
    /// A step failed.
    #[error("step `{step}` failed: {error}")]
    Step {
        /// The step.
        step: GroupStep,
        /// Why.
        error: String,
    },
    /// The group did not get to a state the next step needs within the time given.
    #[error("gave up after {0:?}: {1}")]
    Timeout(Duration, String),
    /// The platform failed.
    #[error(transparent)]
    Local(#[from] LocalError),
}

/// The operation in progress on a group, with what it cannot observe (which nodes a rolling
/// restart already restarted, which master a failover started from), kept until it ends, so
/// a killed run is finished by `cinnabar resume` and never repeats a failover.
pub const GROUP_JOURNAL: &str = "group-operation.json";

/// The journaled operation of the group in `dir`, if one is unfinished.
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn pending(dir: &Path) -> std::result::Result<Option<GroupOperation>, LocalError> {
    let path = dir.join(GROUP_JOURNAL);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            LocalError::io(
                format!("reading {}", path.display()),
                std::io::Error::other(e),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LocalError::io(format!("reading {}", path.display()), e)),
    }
}

/// Writes the journal atomically (temporary file, then rename).
fn journal(dir: &Path, operation: &GroupOperation) -> std::result::Result<(), LocalError> {
    let path = dir.join(GROUP_JOURNAL);
    let tmp = dir.join(format!("{GROUP_JOURNAL}.tmp"));
    let text = serde_json::to_string_pretty(operation)
        .map_err(|e| LocalError::io("encoding the journal", std::io::Error::other(e)))?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| LocalError::io(format!("writing {}", path.display()), e))
}

/// Runs `operation` on the group in `dir` to its end (or `timeout`): observe, plan, execute.
/// Failovers and rolling restarts are journaled (see [`GROUP_JOURNAL`]); heal is not.
///
/// # Errors
/// [`GroupOperationError`]; a refusal before the first step changed nothing.
pub async fn run_operation(
    dir: &Path,
    mut operation: GroupOperation,
    timeout: Duration,
    on_event: &mut dyn FnMut(GroupEvent<'_>),
) -> std::result::Result<OperateReport, GroupOperationError> {
    let started = Instant::now();
    let state_dir = StateDir::open(dir)?;
    let state = state_dir.load()?.ok_or_else(|| LocalError::NotRunning {
        dir: dir.to_path_buf(),
    })?;
    let name = operation.to_string();
    let journaled = !matches!(operation, GroupOperation::Heal);
    let mut steps = 0;
    let mut last_wait = String::new();
    loop {
        let observed = observe(&state).await;
        if let GroupOperation::Failover { from: from @ None } = &mut operation {
            *from = observed.master.clone();
        }
        if journaled {
            journal(state_dir.root(), &operation)?;
        }
        let step = match next_group_step(&operation, &observed) {
            GroupNext::Done => break,
            GroupNext::Refused(why) => return Err(GroupOperationError::Refused(why)),
            GroupNext::Wait(why) => {
                if started.elapsed() >= timeout {
                    return Err(GroupOperationError::Timeout(timeout, why));
                }
                if why != last_wait {
                    on_event(GroupEvent::Waiting(&why));
                    last_wait = why;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            GroupNext::Step(step) => step,
        };
        steps += 1;
        on_event(GroupEvent::Step(steps, &step));
        let step_started = Instant::now();
        let note = execute(state_dir.root(), &state, &step)
            .await
            .map_err(|error| GroupOperationError::Step {
                step: step.clone(),
                error,
            })?;
        on_event(GroupEvent::StepDone(steps, step_started.elapsed(), note));
        if let (GroupOperation::RollingRestart { restarted }, GroupStep::Restart { node }) =
            (&mut operation, &step)
        {
            restarted.push(node.clone());
        }
        last_wait.clear();
    }
    if journaled {
        let path = state_dir.root().join(GROUP_JOURNAL);
        std::fs::remove_file(&path)
            .map_err(|e| LocalError::io(format!("removing {}", path.display()), e))?;
    }
    Ok(OperateReport {
        operation: name,
        steps,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        unresolved: Vec::new(),
        planned: None,
    })
}

/// Carries out one step; returns a note for the person.
async fn execute(
    root: &Path,
    state: &State,
    step: &GroupStep,
) -> std::result::Result<Option<String>, String> {
    match step {
        GroupStep::Failover { .. } => {
            let request = ControlRequest::GroupFailover {
                max_pause_ms: u64::try_from(FAILOVER_MAX_PAUSE.as_millis()).unwrap_or(u64::MAX),
            };
            match control::send(root, &request)
                .await
                .map_err(|e| e.to_string())?
            {
                ControlReply::Done { .. } => Ok(None),
                ControlReply::GroupFailover { from, to, held_ms } => Ok(Some(format!(
                    "{from} -> {to}; clients' requests held {held_ms} ms"
                ))),
                ControlReply::Failed { message, .. } => Err(message),
                other => Err(format!("unexpected reply {other:?}")),
            }
        }
        GroupStep::Restart { node } => {
            let request = ControlRequest::Restart { port: node.port };
            let reply = control::send(root, &request)
                .await
                .map_err(|e| e.to_string())?;
            if let ControlReply::Failed { message, .. } = reply {
                return Err(message);
            }
            // Back in the group: a replica with its link up again (the master never is
            // restarted), as the planner's next look would also require.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let observed = observe(state).await;
                let back = observed
                    .members
                    .iter()
                    .any(|m| m.addr == *node && m.reachable && m.link_up);
                if back {
                    return Ok(None);
                }
                if Instant::now() >= deadline {
                    return Err(format!("{node} did not resync with its master in time"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        GroupStep::Monitor { .. } | GroupStep::ResetSentinel { .. } | GroupStep::Remove { .. } => {
            Err(format!(
                "`{step}` is not a step of the local platform (its Sentinels are configured at start)"
            ))
        }
        GroupStep::Follow { node, master } => {
            let mut client = NodeClient::connect(node, TIMEOUTS)
                .await
                .map_err(|e| e.to_string())?;
            let port = master.port.to_string();
            client
                .query::<String>(&["REPLICAOF", &master.host, &port])
                .await
                .map_err(|e| e.to_string())?;
            // Kept across restarts, as Sentinel itself does after reconfiguring a node.
            client
                .query::<String>(&["CONFIG", "REWRITE"])
                .await
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}
