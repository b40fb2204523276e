//! The supervisor's side of the control channel: provision, restart, start and remove nodes
//! on request, record the cluster's new shape, and pass "the cluster changed" on to the proxy
//! (which runs in this process) so its fan-outs count every master at once.
//!
//! Requests are served inline in the supervision loop, so a planned restart and the crash-restart
//! logic can never both start a node. The state file is updated before replying, so a client
//! that reads it next sees the change. Nothing here touches cluster topology: the planner does.

use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use super::{Child, NODE_READY_TIMEOUT, STOP_GRACE, Supervisor};
use crate::control::{self, ControlReply, ControlRequest, FailureKind, REQUEST_READ_TIMEOUT};
use crate::error::LocalError;
use crate::ports;
use crate::process::NodeProcess;
use crate::state::NodeState;

/// How long a cluster change waits for the proxy's refresh before it is answered.
const PROXY_REFRESH_WAIT: Duration = Duration::from_secs(2);

/// How many ports above the highest one in use are tried for a new node.
const PORT_SEARCH: u16 = 200;

/// A request that could not be carried out.
struct Refused(FailureKind, String);

impl From<LocalError> for Refused {
    fn from(e: LocalError) -> Self {
        Self(FailureKind::Failed, e.to_string())
    }
}

impl Supervisor {
    /// Reads one request from `stream`, carries it out and writes the reply.
    pub(super) async fn serve_control(&mut self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let request =
            match tokio::time::timeout(REQUEST_READ_TIMEOUT, control::read_line(read)).await {
                Ok(Ok(Some(request))) => request,
                Ok(Ok(None)) => return,
                Ok(Err(reason)) => {
                    let reply = ControlReply::failed(FailureKind::Failed, reason);
                    let _ = control::write_line(&mut write, &reply).await;
                    return;
                }
                Err(_) => return,
            };
        tracing::info!(?request, "control request");
        let reply = match &request {
            ControlRequest::SwitchBackend {
                seeds,
                dir,
                sync,
                max_pause_ms,
            } => {
                self.switch_backend(seeds, dir.as_deref(), sync.as_deref(), *max_pause_ms)
                    .await
            }
            ControlRequest::GroupFailover { max_pause_ms } => {
                self.group_failover(Duration::from_millis(*max_pause_ms))
                    .await
            }
            _ => self.carry_out(&request).await.map_or_else(
                |Refused(kind, message)| {
                    tracing::warn!(?request, %message, "control request failed");
                    ControlReply::failed(kind, message)
                },
                |(port, host)| ControlReply::Done { port, host },
            ),
        };
        if let Err(e) = control::write_line(&mut write, &reply).await {
            tracing::warn!(error = %e, "could not send the control reply");
        }
    }

    /// A planned failover of the Sentinel group behind the proxy: hold the clients' requests
    /// (so no write reaches the old master once a replica may be promoted), fail over with the
    /// replicas caught up, publish the new master to the proxy, let the requests go.
    async fn group_failover(&mut self, max_pause: Duration) -> ControlReply {
        let failed = |message: String| {
            tracing::warn!(%message, "group failover failed");
            ControlReply::failed(FailureKind::Failed, message)
        };
        if !self.state.spec.is_sentinel() {
            return failed("this is a cluster, not a Sentinel group".into());
        }
        let Some(proxy) = self.proxy.as_ref() else {
            return failed("the proxy is not running".into());
        };
        let hold = match proxy.hold_requests(max_pause).await {
            Ok(hold) => hold,
            Err(e) => return failed(format!("cannot hold the clients' requests: {e}")),
        };
        let done =
            cinnabar_cluster::sentinel::planned_failover(&self.group_access(), max_pause).await;
        // Whatever happened, the proxy looks again before requests go on: it must not serve
        // a table from before a promotion that did happen.
        proxy.topology_changed(PROXY_REFRESH_WAIT).await;
        let held = hold.release();
        match done {
            Ok(done) => {
                tracing::info!(from = %done.from, to = %done.to, held_ms = held.as_millis(), "planned failover done");
                ControlReply::GroupFailover {
                    from: done.from.to_string(),
                    to: done.to.to_string(),
                    held_ms: u64::try_from(held.as_millis()).unwrap_or(u64::MAX),
                }
            }
            Err(e) => failed(e.to_string()),
        }
    }

    /// Switches the proxy to the cluster at `seeds`; once it serves it, records so in the
    /// state (a restarted supervisor's proxy serves it too).
    async fn switch_backend(
        &mut self,
        seeds: &[String],
        dir: Option<&std::path::Path>,
        sync: Option<&str>,
        max_pause_ms: u64,
    ) -> ControlReply {
        let Some(proxy) = &self.proxy else {
            return ControlReply::failed(
                FailureKind::Failed,
                "this cluster runs without a proxy, so there is no endpoint to switch",
            );
        };
        let parsed: Result<Vec<cinnabar_cluster::NodeAddr>, String> = seeds
            .iter()
            .map(|s| s.parse().map_err(|e| format!("seed {s:?}: {e}")))
            .collect();
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return ControlReply::failed(FailureKind::Failed, e),
        };
        let report = proxy
            .switch_backend(cinnabar_proxy::SwitchRequest {
                cluster: None,
                seeds: parsed,
                credentials: None,
                catch_up: sync.map_or(cinnabar_proxy::CatchUp::Unchecked, |at| {
                    cinnabar_proxy::CatchUp::Sync(at.to_owned())
                }),
                max_pause: Duration::from_millis(max_pause_ms),
            })
            .await;
        if report.outcome == cinnabar_proxy::switch::Outcome::Switched {
            self.state.serving = Some(crate::state::Serving {
                dir: dir.map(std::path::Path::to_path_buf),
                seeds: seeds.to_vec(),
            });
            if let Err(e) = self.dir.save(&mut self.state) {
                tracing::error!(error = %e, "switched, but could not record it in the state file");
            }
        }
        ControlReply::Switch {
            report: serde_json::to_string(&report).unwrap_or_default(),
        }
    }

    async fn carry_out(
        &mut self,
        request: &ControlRequest,
    ) -> Result<(Option<u16>, Option<String>), Refused> {
        match request {
            ControlRequest::Provision { host } => {
                let (port, host) = self.provision_node(host.as_deref())?;
                Ok((Some(port), host))
            }
            ControlRequest::Restart { port } => {
                self.restart_node(*port)?;
                Ok((Some(*port), None))
            }
            ControlRequest::Start { port } => {
                self.start_node(*port)?;
                Ok((Some(*port), None))
            }
            ControlRequest::Remove { port } => {
                self.remove_node(*port)?;
                Ok((Some(*port), None))
            }
            ControlRequest::TopologyChanged => {
                // Answered once the proxy refreshed (or the wait ran out: its fan-outs still
                // wait for a newer table), so the operation's next report is already true
                // through the endpoint.
                if let Some(proxy) = &self.proxy
                    && !proxy.topology_changed(PROXY_REFRESH_WAIT).await
                {
                    tracing::warn!(
                        "the proxy did not refresh its routing table in time after a cluster \
                         change; its keyspace-wide commands wait for the refresh"
                    );
                }
                Ok((None, None))
            }
            ControlRequest::SetShape { masters, replicas } => {
                self.state.spec.masters = *masters;
                self.state.spec.replicas = *replicas;
                self.dir.save(&mut self.state)?;
                Ok((None, None))
            }
            ControlRequest::SwitchBackend { .. } | ControlRequest::GroupFailover { .. } => {
                Err(Refused(
                    FailureKind::Failed,
                    "a switch is answered with its report, not here".into(),
                ))
            }
        }
    }

    fn index_of(&self, port: u16) -> Result<usize, Refused> {
        self.state
            .nodes
            .iter()
            .position(|n| n.port == port)
            .ok_or_else(|| {
                let ports: Vec<String> = self
                    .state
                    .nodes
                    .iter()
                    .map(|n| n.port.to_string())
                    .collect();
                Refused(
                    FailureKind::UnknownNode,
                    format!(
                        "no node of this cluster listens on port {port} (its nodes: {})",
                        ports.join(", ")
                    ),
                )
            })
    }

    /// The host for a new node: `wanted` when it is one of ours, else the least used one.
    fn host_for(&self, wanted: Option<&str>) -> Result<Option<String>, Refused> {
        let hosts = self.state.spec.host_names();
        if let Some(host) = wanted {
            if hosts.iter().any(|h| h == host) {
                return Ok(Some(host.to_owned()));
            }
            let known = if hosts.is_empty() {
                "this cluster has no simulated hosts (it was created without --hosts)".to_owned()
            } else {
                format!("its hosts are {}", hosts.join(", "))
            };
            return Err(Refused(
                FailureKind::UnknownHost,
                format!("no host {host}: {known}"),
            ));
        }
        let load = |h: &String| {
            self.state
                .nodes
                .iter()
                .filter(|n| n.host.as_ref() == Some(h))
                .count()
        };
        Ok(hosts.iter().min_by_key(|h| load(h)).cloned())
    }

    /// A port above every port in use whose bus port is free too, and that no old data
    /// directory claims (a new node must start empty).
    fn free_port(&self) -> Result<u16, Refused> {
        let highest = self
            .state
            .nodes
            .iter()
            .map(|n| n.port)
            .chain(self.state.spec.proxy_port())
            .max()
            .unwrap_or(self.state.spec.port);
        (1..=PORT_SEARCH)
            .filter_map(|step| highest.checked_add(step))
            .find(|port| {
                !self.dir.node_dir(*port).exists()
                    && ports::ensure_node_ports_free(*port, 1).is_ok()
            })
            .ok_or_else(|| {
                Refused(
                    FailureKind::Failed,
                    format!(
                        "no free port pair (port and port+10000) among the {PORT_SEARCH} ports \
                         above {highest}"
                    ),
                )
            })
    }

    fn provision_node(&mut self, host: Option<&str>) -> Result<(u16, Option<String>), Refused> {
        let host = self.host_for(host)?;
        let port = self.free_port()?;
        let config = self.node_config(port);
        let mut process = NodeProcess::spawn(&self.binary, &config)?;
        if let Err(e) = process.wait_ready(NODE_READY_TIMEOUT) {
            process.stop(STOP_GRACE);
            let _ = std::fs::remove_dir_all(&config.dir);
            return Err(e.into());
        }
        tracing::info!(node = %process.addr(), host = ?host, pid = process.pid(), "provisioned a new node");
        self.children.push(Child::new(process));
        self.state.nodes.push(NodeState {
            sentinel: false,
            port,
            dir: config.dir,
            pid: None,
            restarts: 0,
            host: host.clone(),
        });
        self.record_pids()?;
        Ok((port, host))
    }

    fn restart_node(&mut self, port: u16) -> Result<(), Refused> {
        let index = self.index_of(port)?;
        let child = &mut self.children[index];
        child.process.stop(STOP_GRACE);
        let outcome = respawn(&self.binary, child);
        self.record_pids()?;
        outcome
    }

    fn start_node(&mut self, port: u16) -> Result<(), Refused> {
        let index = self.index_of(port)?;
        let child = &mut self.children[index];
        let down = child.restart_at.is_some() || child.process.try_exit().is_some();
        if !down {
            return Ok(());
        }
        let outcome = respawn(&self.binary, child);
        if outcome.is_ok() {
            // It died on its own: that counts as a restart, as when `tend` brings it back.
            child.restarts += 1;
        }
        self.record_pids()?;
        outcome
    }

    fn remove_node(&mut self, port: u16) -> Result<(), Refused> {
        let index = self.index_of(port)?;
        let mut child = self.children.remove(index);
        let node = self.state.nodes.remove(index);
        child.process.stop(STOP_GRACE);
        self.record_pids()?;
        std::fs::remove_dir_all(&node.dir).map_err(|e| {
            Refused(
                FailureKind::Failed,
                format!(
                    "stopped the node on port {port}, but could not delete {}: {e}",
                    node.dir.display()
                ),
            )
        })?;
        tracing::info!(port, "removed node and its data");
        Ok(())
    }
}

/// Starts `child` again on its data now and waits until it answers; on failure the ordinary
/// crash-restart logic takes over from a clean backoff.
fn respawn(binary: &crate::binary::ServerBinary, child: &mut Child) -> Result<(), Refused> {
    let config = child.process.config().clone();
    let started = NodeProcess::spawn(binary, &config).and_then(|mut process| {
        let ready = process.wait_ready(NODE_READY_TIMEOUT);
        // Keep the process even when it is not ready: `tend` watches it like any other.
        child.process = process;
        ready
    });
    let now = Instant::now();
    child.started = now;
    child.backoff = Duration::ZERO;
    match started {
        Ok(()) => {
            child.restart_at = None;
            Ok(())
        }
        Err(e) => {
            if child.process.try_exit().is_some() || child.restart_at.is_some() {
                child.restart_at = Some(now);
            }
            Err(e.into())
        }
    }
}
