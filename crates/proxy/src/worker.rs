//! A worker: one thread, one single-threaded runtime, its own listener (`SO_REUSEPORT`), its
//! own backend connections and tickets. Nothing here is shared with other workers except the
//! routing-table snapshot, so the hot path takes no lock.
//!
//! The worker decides where a ticket goes (`dispatch`) and what a backend's answer means for it
//! (`on_reply`: deliver, follow MOVED/ASK, or retry TRYAGAIN/CLUSTERDOWN within the window).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use cinnabar_resp::{ErrorClass, RedirectKind, RequestParser, error_class, parse_redirect};
use tokio::sync::{Notify, watch};

use crate::backend::{self, Backend};
use crate::config::ProxyConfig;
use crate::slotmap::SlotMap;
use crate::ticket::Tickets;

/// Pause before re-sending a request that hit a transient cluster error.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Per-thread state of one worker.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) config: Arc<ProxyConfig>,
    pub(crate) parser: RequestParser,
    pub(crate) tickets: RefCell<Tickets>,
    routes_rx: RefCell<watch::Receiver<Arc<SlotMap>>>,
    routes: RefCell<Arc<SlotMap>>,
    /// Backends by address (for redirects); `by_master` is the same set indexed like the
    /// routing table's masters (for the hot path).
    backends: RefCell<HashMap<NodeAddr, Rc<Backend>>>,
    by_master: RefCell<Vec<Rc<Backend>>>,
    refresh: Arc<Notify>,
    /// The address clients reach this proxy at (announced in CLUSTER replies).
    pub(crate) announce: std::net::SocketAddr,
}

impl Worker {
    pub(crate) fn new(
        config: Arc<ProxyConfig>,
        routes_rx: watch::Receiver<Arc<SlotMap>>,
        refresh: Arc<Notify>,
        announce: std::net::SocketAddr,
    ) -> Rc<Self> {
        let routes = routes_rx.borrow().clone();
        let worker = Rc::new(Self {
            config,
            parser: RequestParser::new(cinnabar_resp::Limits::default()),
            tickets: RefCell::new(Tickets::default()),
            routes_rx: RefCell::new(routes_rx),
            routes: RefCell::new(Arc::new(SlotMap::empty())),
            backends: RefCell::new(HashMap::new()),
            by_master: RefCell::new(Vec::new()),
            refresh,
            announce,
        });
        worker.install_routes(routes);
        worker
    }

    /// Picks up a newer routing table if the refresher published one (an atomic version check
    /// when nothing changed).
    fn sync_routes(self: &Rc<Self>) {
        let changed = self.routes_rx.borrow().has_changed().unwrap_or(false);
        if changed {
            let routes = self.routes_rx.borrow_mut().borrow_and_update().clone();
            self.install_routes(routes);
        }
    }

    fn install_routes(self: &Rc<Self>, routes: Arc<SlotMap>) {
        let by_master: Vec<Rc<Backend>> = routes
            .masters()
            .iter()
            .map(|addr| self.backend_for(addr))
            .collect();
        *self.by_master.borrow_mut() = by_master;
        *self.routes.borrow_mut() = routes;
    }

    /// The backend for `addr`, connecting lazily on first use.
    fn backend_for(self: &Rc<Self>, addr: &NodeAddr) -> Rc<Backend> {
        if let Some(b) = self.backends.borrow().get(addr) {
            return Rc::clone(b);
        }
        let backend = Rc::new(Backend::new(addr.clone()));
        self.backends
            .borrow_mut()
            .insert(addr.clone(), Rc::clone(&backend));
        tokio::task::spawn_local(backend::run(Rc::clone(&backend), Rc::clone(self)));
        backend
    }

    /// The current routing table (after picking up any newer one).
    pub(crate) fn routes(self: &Rc<Self>) -> Arc<SlotMap> {
        self.sync_routes();
        Arc::clone(&self.routes.borrow())
    }

    /// Sends ticket `id` to the master of its slot (any master for keyless commands).
    pub(crate) fn dispatch(self: &Rc<Self>, id: usize) {
        self.sync_routes();
        let slot = self.tickets.borrow_mut().get(id).slot;
        let target = {
            let routes = self.routes.borrow();
            let index = match slot {
                Some(slot) => routes.owner(slot),
                None => (!routes.masters().is_empty()).then_some(0),
            };
            index.and_then(|i| self.by_master.borrow().get(i).cloned())
        };
        match target {
            Some(backend) => self.send(&backend, id, false),
            None => {
                self.refresh.notify_one();
                if !self.retry_later(id) {
                    let msg = match slot {
                        Some(slot) => {
                            format!("-CLUSTERDOWN Hash slot {slot} is not served by any node\r\n")
                        }
                        None => "-CLUSTERDOWN cinnabar: no master is known\r\n".to_owned(),
                    };
                    self.tickets.borrow_mut().complete(id, msg.as_bytes());
                }
            }
        }
    }

    fn send(&self, backend: &Backend, id: usize, asking: bool) {
        let mut tickets = self.tickets.borrow_mut();
        let ticket = tickets.get(id);
        backend.enqueue(&ticket.request, id, asking, ticket.discard);
    }

    /// A backend answered ticket `id` with `reply`.
    pub(crate) fn on_reply(self: &Rc<Self>, id: usize, reply: &[u8], from: &NodeAddr) {
        if reply.first() == Some(&b'-') && self.handle_cluster_error(id, reply, from) {
            return;
        }
        self.tickets.borrow_mut().complete(id, reply);
    }

    /// Follows redirects and retries transient errors; `false` means: give the error to the client.
    fn handle_cluster_error(self: &Rc<Self>, id: usize, reply: &[u8], from: &NodeAddr) -> bool {
        match error_class(reply) {
            Some(ErrorClass::Moved | ErrorClass::Ask) => {
                let Some(redirect) = parse_redirect(reply) else {
                    return false;
                };
                let Some((host, port)) = redirect.host_port() else {
                    return false;
                };
                {
                    let mut tickets = self.tickets.borrow_mut();
                    let ticket = tickets.get(id);
                    if ticket.redirects >= self.config.max_redirects {
                        return false;
                    }
                    ticket.redirects += 1;
                }
                let host = if host.is_empty() {
                    from.host.clone()
                } else {
                    String::from_utf8_lossy(host).into_owned()
                };
                let asking = redirect.kind == RedirectKind::Ask;
                if !asking {
                    self.refresh.notify_one();
                }
                let backend = self.backend_for(&NodeAddr { host, port });
                self.send(&backend, id, asking);
                true
            }
            Some(
                ErrorClass::TryAgain
                | ErrorClass::ClusterDown
                | ErrorClass::MasterDown
                | ErrorClass::Loading,
            ) => {
                self.refresh.notify_one();
                self.retry_later(id)
            }
            _ => false,
        }
    }

    /// The connection to `node` failed with ticket `id` in flight.
    pub(crate) fn on_backend_failure(
        self: &Rc<Self>,
        id: usize,
        never_sent: bool,
        node: &NodeAddr,
        why: &str,
    ) {
        self.refresh.notify_one();
        if never_sent && self.retry_later(id) {
            return;
        }
        let msg = if never_sent {
            format!("-ERR cinnabar: backend {node} unavailable ({why})\r\n")
        } else {
            format!(
                "-ERR cinnabar: connection to backend {node} lost while the command was in flight; it may or may not have run ({why})\r\n"
            )
        };
        self.tickets.borrow_mut().complete(id, msg.as_bytes());
    }

    /// Re-dispatches `id` after a pause if its retry window is still open.
    fn retry_later(self: &Rc<Self>, id: usize) -> bool {
        let now = Instant::now();
        let within = {
            let mut tickets = self.tickets.borrow_mut();
            let since = *tickets.get(id).failing_since.get_or_insert(now);
            now.duration_since(since) < self.config.retry_window
        };
        if within {
            let worker = Rc::clone(self);
            tokio::task::spawn_local(async move {
                tokio::time::sleep(RETRY_PAUSE).await;
                worker.dispatch(id);
            });
        }
        within
    }
}
