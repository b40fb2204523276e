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

use crate::backend::{self, Backend, Flavor};
use crate::config::{ProxyConfig, ReadFrom};
use crate::keyroute::KeyRouter;
use crate::refresh::Freshness;
use crate::slotmap::SlotMap;
use crate::stats::{Stats, WorkerStats};
use crate::switch::Gate;
use crate::ticket::Tickets;
use cinnabar_access::Access;
use cinnabar_audit::Auditor;

/// Pause before re-sending a request that hit a transient cluster error.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Per-thread state of one worker.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) config: Arc<ProxyConfig>,
    pub(crate) parser: RequestParser,
    /// The parse of the request being handled, shared by this worker's sessions (one parses
    /// at a time): kept per connection, it was two more cache lines each request had to bring
    /// in once many clients' state no longer fits in the cache. A session whose input ends
    /// inside a request keeps that partial parse for itself (`Session::parked_parse`).
    pub(crate) request: RefCell<cinnabar_resp::Request>,
    pub(crate) tickets: RefCell<Tickets>,
    routes_rx: RefCell<watch::Receiver<Arc<SlotMap>>>,
    routes: RefCell<Arc<SlotMap>>,
    /// Backends by address: `backend_connections` lanes per [`Flavor`] (slot
    /// `flavor.index() * lanes + lane`), created on first use. `by_master` holds the plain
    /// RESP2 master connections (`master * lanes + lane`), for the hot path. A client always
    /// uses the same lane, so its requests to one node keep their order.
    backends: RefCell<HashMap<NodeAddr, Vec<Option<Rc<Backend>>>>>,
    by_master: RefCell<Vec<Rc<Backend>>>,
    lanes: usize,
    refresh: Arc<Notify>,
    /// How recent the routing table is, for fan-outs (see `refresh::Freshness`).
    pub(crate) freshness: Arc<Freshness>,
    /// The address clients reach this proxy at (announced in CLUSTER replies).
    pub(crate) announce: std::net::SocketAddr,
    /// This worker's counters (it is their only writer).
    pub(crate) stats: Arc<WorkerStats>,
    /// Every worker's counters (read for INFO and the client limit).
    pub(crate) all_stats: Arc<Stats>,
    /// The proxy drains: sessions finish what they accepted and close. A plain flag the
    /// sessions read at each turn of their loop; `sleepers` lets the drain wake the idle ones,
    /// so no session registers a waker per request.
    draining: std::cell::Cell<bool>,
    sleepers: RefCell<HashMap<u64, std::task::Waker>>,
    /// Users and roles: the current compiled set, and where reloads come from.
    access_rx: RefCell<watch::Receiver<Arc<Policy>>>,
    access: RefCell<Arc<Policy>>,
    /// Counts installed access sets, so a session notices a reload with one comparison.
    access_generation: std::cell::Cell<u64>,
    pub(crate) auditor: Auditor,
    /// Failed logins per client address: how many in a row, and when the last one was.
    login_failures: RefCell<HashMap<std::net::IpAddr, (u32, Instant)>>,
    /// The online switch's barrier (see `switch`), and this worker's place in its reports.
    pub(crate) gate: Arc<Gate>,
    index: usize,
    /// Which cluster each key belongs to (one, unless `[[clusters]]` are configured).
    pub(crate) router: Arc<KeyRouter>,
    /// Clients blocked in BLPOP & co. now: the node and the `CLIENT ID` of each one's private
    /// connection, by a number of this worker's, so a switch can release them.
    blocked: RefCell<HashMap<u64, (NodeAddr, i64)>>,
    next_blocked: std::cell::Cell<u64>,
    /// Blocking commands between being handled and knowing their connection's id: a switch's
    /// drain waits for them, since it could not release them yet.
    blocking_starting: std::cell::Cell<usize>,
}

/// Who may do what, and which of what they do is audited: replaced whole on reload, so a
/// client's next command sees both the new permissions and the new audit categories.
#[derive(Debug)]
pub(crate) struct Policy {
    /// Users, roles, guards.
    pub(crate) access: Access,
    /// ACL categories whose commands are audited when they run (`audit.categories`).
    pub(crate) audited: cinnabar_commands::AclCategories,
}

impl Policy {
    pub(crate) fn new(access: Access, audit: &cinnabar_audit::AuditConfig) -> Self {
        Self {
            access,
            audited: audited_categories(&audit.categories),
        }
    }
}

impl std::ops::Deref for Policy {
    type Target = Access;

    fn deref(&self) -> &Access {
        &self.access
    }
}

/// The ACL categories named in the audit settings (unknown names select nothing).
fn audited_categories(names: &[String]) -> cinnabar_commands::AclCategories {
    let mut mask = cinnabar_commands::AclCategories::EMPTY;
    for name in names {
        for (category, text) in cinnabar_commands::AclCategories::NAMES {
            if name.trim_start_matches('@').eq_ignore_ascii_case(text) {
                mask = mask.union(*category);
            }
        }
    }
    mask
}

/// What a worker is built from (shared with the other workers).
pub(crate) struct Shared {
    pub(crate) config: Arc<ProxyConfig>,
    pub(crate) routes: watch::Receiver<Arc<SlotMap>>,
    pub(crate) refresh: Arc<Notify>,
    pub(crate) freshness: Arc<Freshness>,
    pub(crate) announce: std::net::SocketAddr,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) all_stats: Arc<Stats>,
    pub(crate) access: watch::Receiver<Arc<Policy>>,
    pub(crate) auditor: Auditor,
    pub(crate) gate: Arc<Gate>,
    /// This worker's number (0-based), for the gate's reports.
    pub(crate) index: usize,
    pub(crate) router: Arc<KeyRouter>,
}

/// After this many failed logins in a row from one address, each further failure is answered
/// later and later (doubling from 100 ms up to `SLOWEST_REFUSAL`).
const FREE_LOGIN_FAILURES: u32 = 3;
const SLOWEST_REFUSAL: Duration = Duration::from_secs(5);
/// A failure streak is forgotten after this long without a failure.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);

impl Worker {
    pub(crate) fn new(shared: Shared) -> Rc<Self> {
        let Shared {
            config,
            routes: routes_rx,
            refresh,
            freshness,
            announce,
            stats,
            all_stats,
            access,
            auditor,
            gate,
            index,
            router,
        } = shared;
        let routes = routes_rx.borrow().clone();
        let current_access = access.borrow().clone();
        let worker = Rc::new(Self {
            lanes: config.backend_connections.max(1),
            config,
            parser: RequestParser::new(cinnabar_resp::Limits::default()),
            request: RefCell::new(cinnabar_resp::Request::new()),
            tickets: RefCell::new(Tickets::default()),
            routes_rx: RefCell::new(routes_rx),
            routes: RefCell::new(Arc::new(SlotMap::empty())),
            backends: RefCell::new(HashMap::new()),
            by_master: RefCell::new(Vec::new()),
            refresh,
            freshness,
            announce,
            stats,
            all_stats,
            draining: std::cell::Cell::new(false),
            sleepers: RefCell::new(HashMap::new()),
            access_rx: RefCell::new(access),
            access: RefCell::new(current_access),
            access_generation: std::cell::Cell::new(0),
            auditor,
            login_failures: RefCell::new(HashMap::new()),
            gate,
            index,
            router,
            blocked: RefCell::new(HashMap::new()),
            next_blocked: std::cell::Cell::new(0),
            blocking_starting: std::cell::Cell::new(0),
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
            .flat_map(|addr| {
                (0..self.lanes).map(|lane| self.backend_for(addr, Flavor::default(), lane))
            })
            .collect();
        *self.by_master.borrow_mut() = by_master;
        *self.routes.borrow_mut() = routes;
    }

    /// The backend for `addr` of `flavor` on `lane`, connecting lazily on first use.
    pub(crate) fn backend_for(
        self: &Rc<Self>,
        addr: &NodeAddr,
        flavor: Flavor,
        lane: usize,
    ) -> Rc<Backend> {
        let index = flavor.index() * self.lanes + lane % self.lanes;
        if let Some(b) = self
            .backends
            .borrow()
            .get(addr)
            .and_then(|all| all.get(index))
            .and_then(Option::as_ref)
        {
            return Rc::clone(b);
        }
        let backend = Rc::new(Backend::new(addr.clone(), flavor));
        {
            let mut backends = self.backends.borrow_mut();
            let all = backends
                .entry(addr.clone())
                .or_insert_with(|| vec![None; backend::FLAVORS * self.lanes]);
            all[index] = Some(Rc::clone(&backend));
        }
        tokio::task::spawn_local(backend::run(Rc::clone(&backend), Rc::clone(self)));
        backend
    }

    /// The lane a client's requests use (see `backends`).
    fn lane(&self, affinity: u32) -> usize {
        affinity as usize % self.lanes
    }

    /// The connection prelude for a connection of `flavor` to `node` (each cluster, and each
    /// backend after a switch, has its own credentials).
    pub(crate) fn prelude(&self, node: &NodeAddr, flavor: Flavor) -> (Vec<u8>, usize) {
        self.prelude_in(node, flavor, 0)
    }

    /// As [`prelude`](Self::prelude), for a node of cluster `cluster` the routing table may
    /// not list yet (a redirect's target).
    pub(crate) fn prelude_in(
        &self,
        node: &NodeAddr,
        flavor: Flavor,
        cluster: usize,
    ) -> (Vec<u8>, usize) {
        let routes = self.routes.borrow();
        flavor.prelude(routes.credentials_of(node, cluster), !routes.is_group())
    }

    /// Whether a switch holds new requests now (one atomic load).
    pub(crate) fn holding(&self) -> bool {
        self.gate.is_closed()
    }

    /// A blocking command is about to start; [`blocked_on`](Self::blocked_on) or
    /// [`blocking_ended`](Self::blocking_ended) follows.
    pub(crate) fn blocking_started(&self) {
        self.blocking_starting.set(self.blocking_starting.get() + 1);
    }

    /// The blocking command started with [`blocking_started`](Self::blocking_started) waits on
    /// `node` in connection `client_id`; returns the number to forget it by.
    pub(crate) fn blocked_on(&self, node: NodeAddr, client_id: i64) -> u64 {
        self.blocking_starting
            .set(self.blocking_starting.get().saturating_sub(1));
        let key = self.next_blocked.get();
        self.next_blocked.set(key + 1);
        self.blocked.borrow_mut().insert(key, (node, client_id));
        key
    }

    /// The blocking command ended before it was registered (it failed to connect).
    pub(crate) fn blocking_ended(&self) {
        self.blocking_starting
            .set(self.blocking_starting.get().saturating_sub(1));
    }

    /// The blocking command registered as `key` is answered (or its client left).
    pub(crate) fn unblocked(&self, key: u64) {
        self.blocked.borrow_mut().remove(&key);
    }

    /// Follows the switch gate for this worker, for the life of the worker: wakes every
    /// session when the gate opens, so held requests go on, and drains each hold in a task of
    /// its own (so an opening is never late behind a slow release).
    pub(crate) async fn follow_gate(self: Rc<Self>) {
        let mut gate = self.gate.subscribe();
        while gate.changed().await.is_ok() {
            let state = *gate.borrow_and_update();
            if state.closed {
                tokio::task::spawn_local(Rc::clone(&self).drain_hold(state.generation));
            } else {
                for waker in self.sleepers.borrow().values() {
                    waker.wake_by_ref();
                }
            }
        }
    }

    /// Acknowledges hold `generation` once nothing sent before it is unanswered and every
    /// blocked client was released. Parsing never awaits, so every batch parsed before the gate
    /// closed is dispatched by the time this runs; sessions parse nothing more.
    async fn drain_hold(self: Rc<Self>, generation: u64) {
        let (mut released, mut refused) = Default::default();
        while self.gate.is_closed() {
            self.release_blocked(&mut released, &mut refused).await;
            let unfinished = self.tickets.borrow().unfinished() + self.blocking_starting.get();
            // A command that registered while the releases above were awaited is not released
            // yet: go round again.
            let unreleased = self
                .blocked
                .borrow()
                .keys()
                .any(|key| !released.contains(key));
            if unfinished == 0 && !unreleased {
                self.gate
                    .drained(self.index, generation, released.len() as u64);
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `CLIENT UNBLOCK <id> TIMEOUT` for every blocked client not yet in `released`: the node
    /// decides, so a command that already took its element still returns it. A client the node
    /// does not find blocked yet (`:0`: its command is still on the way) is tried again on the
    /// next round; one the node refuses to release (`-NOPERM`: a backend user without
    /// `CLIENT UNBLOCK`) stays unreleased, so the hold is abandoned rather than leave it
    /// waiting on the old backend.
    async fn release_blocked(
        &self,
        released: &mut std::collections::HashSet<u64>,
        refused: &mut std::collections::HashSet<u64>,
    ) {
        // One connection per node, every release on it in one write: a switch with many
        // blocked clients costs a round trip per node, not per client.
        let mut by_node: std::collections::BTreeMap<String, (NodeAddr, Vec<(u64, i64)>)> =
            std::collections::BTreeMap::new();
        for (key, (node, id)) in self.blocked.borrow().iter() {
            if released.contains(key) || refused.contains(key) {
                continue;
            }
            by_node
                .entry(node.to_string())
                .or_insert_with(|| (node.clone(), Vec::new()))
                .1
                .push((*key, *id));
        }
        for (node, waiting) in by_node.into_values() {
            let prelude = self.prelude(&node, Flavor::default());
            let mut requests = Vec::new();
            for (_, id) in &waiting {
                let id = id.to_string();
                cinnabar_resp::encode::command(
                    &mut requests,
                    &[b"CLIENT", b"UNBLOCK", id.as_bytes(), b"TIMEOUT"],
                );
            }
            let timeout = self.config.connect_timeout;
            let replies =
                backend::private_requests(&node, &prelude, &requests, waiting.len(), timeout).await;
            let replies = match replies {
                Ok(replies) => replies,
                Err(why) => {
                    tracing::warn!(
                        node = %node,
                        reason = %why,
                        "cannot release blocked clients for a switch; the switch waits for them"
                    );
                    continue;
                }
            };
            for ((key, _), reply) in waiting.iter().zip(replies) {
                if reply.starts_with(b":1") {
                    released.insert(*key);
                } else if !reply.starts_with(b":0") {
                    // `:0`: not blocked yet, or answered meanwhile (then it leaves the
                    // registry); anything else is a refusal.
                    refused.insert(*key);
                    tracing::warn!(
                        node = %node,
                        reply = %String::from_utf8_lossy(&reply).trim_end(),
                        "the node refused to release a blocked client for a switch; the switch \
                         waits for it and is abandoned if it stays blocked"
                    );
                }
            }
        }
    }

    /// Starts the drain: every session notices at its next turn, idle ones are woken for it.
    pub(crate) fn begin_drain(&self) {
        self.draining.set(true);
        for (_, waker) in self.sleepers.borrow_mut().drain() {
            waker.wake();
        }
    }

    /// Whether the proxy drains.
    pub(crate) fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Remembers how to wake session `id` when a drain starts (once per connection).
    pub(crate) fn register_sleeper(&self, id: u64, waker: std::task::Waker) {
        self.sleepers.borrow_mut().insert(id, waker);
    }

    /// Forgets session `id`.
    pub(crate) fn forget_sleeper(&self, id: u64) {
        self.sleepers.borrow_mut().remove(&id);
    }

    /// The access set in force, after picking up a reload; and its generation, so that one
    /// comparison tells a session whether its user's permissions may have changed.
    pub(crate) fn access(&self) -> (std::cell::Ref<'_, Arc<Policy>>, u64) {
        let changed = self.access_rx.borrow().has_changed().unwrap_or(false);
        if changed {
            let access = self.access_rx.borrow_mut().borrow_and_update().clone();
            *self.access.borrow_mut() = access;
            self.access_generation.set(self.access_generation.get() + 1);
        }
        (self.access.borrow(), self.access_generation.get())
    }

    /// Notes a failed login from `ip`; returns how long to hold back the refusal.
    pub(crate) fn login_failed(&self, ip: std::net::IpAddr) -> Duration {
        self.stats.login_failures.inc();
        let now = Instant::now();
        let mut failures = self.login_failures.borrow_mut();
        if failures.len() > 10_000 {
            failures.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_MEMORY);
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = now;
        let beyond = entry.0.saturating_sub(FREE_LOGIN_FAILURES);
        if beyond == 0 {
            return Duration::ZERO;
        }
        (Duration::from_millis(100) * 2u32.saturating_pow(beyond - 1).min(64)).min(SLOWEST_REFUSAL)
    }

    /// A successful login from `ip` ends its failure streak.
    pub(crate) fn login_succeeded(&self, ip: std::net::IpAddr) {
        self.login_failures.borrow_mut().remove(&ip);
    }

    /// The current routing table (after picking up any newer one).
    pub(crate) fn routes(self: &Rc<Self>) -> Arc<SlotMap> {
        self.sync_routes();
        Arc::clone(&self.routes.borrow())
    }

    /// The routing table this worker last picked up, without looking for a newer one (for
    /// naming the nodes a request already went to).
    pub(crate) fn routes_in_use(&self) -> Arc<SlotMap> {
        Arc::clone(&self.routes.borrow())
    }

    /// Sends ticket `id` to the master of its slot (any master for keyless commands), or to
    /// one of its replicas when the read policy allows it.
    pub(crate) fn dispatch(self: &Rc<Self>, id: usize) {
        self.sync_routes();
        let (slot, resp3, read_only, affinity, db) = {
            let mut tickets = self.tickets.borrow_mut();
            let t = tickets.get(id);
            (t.slot, t.resp3, t.read_only, t.affinity, t.db)
        };
        // Borrowed, not cloned: no atomic reference count on the hot path. Nothing below
        // installs new routes.
        let routes = self.routes.borrow();
        let index = match slot {
            Some(slot) => routes.owner(slot),
            None => (!routes.masters().is_empty()).then_some(0),
        };
        let Some(index) = index else {
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
            return;
        };
        let policy = self.config.read_from;
        if read_only && slot.is_some() && policy != ReadFrom::Master {
            match self.pick_replica(
                &routes,
                index,
                Flavor {
                    resp3,
                    replica: true,
                    db,
                },
                affinity,
            ) {
                Some(replica) => return self.send(&replica, id, false),
                None if policy == ReadFrom::ReplicaOnly => {
                    let msg = format!(
                        "-ERR cinnabar: no replica of {} can serve reads (read policy replica-only)\r\n",
                        routes.masters()[index]
                    );
                    return self.tickets.borrow_mut().complete(id, msg.as_bytes());
                }
                None => {}
            }
        }
        let backend = if resp3 || db != 0 {
            let flavor = Flavor {
                resp3,
                replica: false,
                db,
            };
            Some(self.backend_for(&routes.masters()[index], flavor, self.lane(affinity)))
        } else {
            let slot = index * self.lanes + self.lane(affinity);
            self.by_master.borrow().get(slot).cloned()
        };
        if let Some(backend) = backend {
            self.send(&backend, id, false);
        }
    }

    /// A replica of master `index` for a read: the client's own (by `affinity`) unless its
    /// connection failed recently, then the next one. `None` when no replica is usable.
    fn pick_replica(
        self: &Rc<Self>,
        routes: &SlotMap,
        index: usize,
        flavor: Flavor,
        affinity: u32,
    ) -> Option<Rc<Backend>> {
        let replicas = routes.replicas(index);
        if replicas.is_empty() {
            return None;
        }
        let now = Instant::now();
        let first = affinity as usize % replicas.len();
        (0..replicas.len())
            .map(|i| {
                let addr = &replicas[(first + i) % replicas.len()];
                self.backend_for(addr, flavor, self.lane(affinity))
            })
            .find(|b| !b.is_down(now))
    }

    /// Sends ticket `id` to the node at `addr` (a replica when `replica`), not by slot.
    pub(crate) fn send_to(self: &Rc<Self>, addr: &NodeAddr, id: usize, replica: bool) {
        let (resp3, affinity, db) = {
            let mut tickets = self.tickets.borrow_mut();
            let ticket = tickets.get(id);
            (ticket.resp3, ticket.affinity, ticket.db)
        };
        let flavor = Flavor { resp3, replica, db };
        let backend = self.backend_for(addr, flavor, self.lane(affinity));
        self.send(&backend, id, false);
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
        let class = error_class(reply);
        match class {
            Some(ErrorClass::Moved) => self.stats.moved.inc(),
            Some(ErrorClass::Ask) => self.stats.ask.inc(),
            Some(ErrorClass::TryAgain) => self.stats.tryagain.inc(),
            Some(ErrorClass::ClusterDown) => self.stats.clusterdown.inc(),
            _ => {}
        }
        match class {
            Some(ErrorClass::Moved | ErrorClass::Ask) => {
                let Some(redirect) = parse_redirect(reply) else {
                    return false;
                };
                let Some((host, port)) = redirect.host_port() else {
                    return false;
                };
                let looping = {
                    let mut tickets = self.tickets.borrow_mut();
                    let ticket = tickets.get(id);
                    let looping = ticket.redirects >= self.config.max_redirects;
                    ticket.redirects = if looping { 0 } else { ticket.redirects + 1 };
                    looping
                };
                if looping {
                    return self.redirect_loop(id, reply);
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
                let (resp3, affinity) = {
                    let mut tickets = self.tickets.borrow_mut();
                    let ticket = tickets.get(id);
                    (ticket.resp3, ticket.affinity)
                };
                // Redirects come from clusters only, where every client is in database 0.
                let flavor = Flavor {
                    resp3,
                    replica: false,
                    db: 0,
                };
                let lane = self.lane(affinity);
                let backend = self.backend_for(&NodeAddr { host, port }, flavor, lane);
                // A node the table does not list yet logs in as its slot's cluster does.
                if let Some(slot) = self.tickets.borrow().peek(id).slot {
                    backend.cluster.set(crate::slotmap::cluster_of_slot(slot));
                }
                self.send(&backend, id, asking);
                true
            }
            // READONLY: a write reached a master that was demoted since the last check (a
            // Sentinel failover); NOREPLICAS: an old master cut off from its replicas refuses
            // writes (`min-replicas-to-write`). Neither ran, so each waits for the new master.
            Some(
                ErrorClass::TryAgain
                | ErrorClass::ClusterDown
                | ErrorClass::MasterDown
                | ErrorClass::Loading
                | ErrorClass::ReadOnly
                | ErrorClass::NoReplicas,
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
        // A read that was sent may be sent again: running it twice changes nothing.
        let read_only = self.tickets.borrow_mut().get(id).read_only;
        if (never_sent || read_only) && self.retry_later(id) {
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

    /// Ticket `id` followed `max_redirects` redirects without reaching an owner: nodes that
    /// disagree for a moment while a slot changes hands (one closed its side of a migration, the
    /// other has not yet). A raw `-MOVED`/`-ASK` naming a backend address means nothing to a
    /// client of the proxy, so start again from a fresh routing table after a pause, within the
    /// retry window, and only then give up with an error that says what happened.
    fn redirect_loop(self: &Rc<Self>, id: usize, reply: &[u8]) -> bool {
        self.refresh.notify_one();
        if self.retry_later(id) {
            return true;
        }
        let slot = self.tickets.borrow().peek(id).slot;
        let last = String::from_utf8_lossy(reply.strip_prefix(b"-").unwrap_or(reply));
        let msg = format!(
            "-TRYAGAIN cinnabar: slot {} kept redirecting for {} ms (last: {}); the cluster is \
             changing, try again\r\n",
            slot.map_or_else(|| "?".to_owned(), |s| s.to_string()),
            self.config.retry_window.as_millis(),
            last.trim_end()
        );
        self.tickets.borrow_mut().complete(id, msg.as_bytes());
        true
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
            self.stats.retries.inc();
            let worker = Rc::clone(self);
            tokio::task::spawn_local(async move {
                tokio::time::sleep(RETRY_PAUSE).await;
                worker.dispatch(id);
            });
        }
        within
    }
}
