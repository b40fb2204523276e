//! MULTI/EXEC and WATCH. A transaction is queued in the proxy and sent to its slot's master as
//! one contiguous `MULTI … EXEC` chunk, so it stays atomic there; WATCH pins a private
//! connection to the watched slot's master, where EXEC then runs. In `relaxed` mode
//! (`crate::config::Transactions`) a transaction over several slots runs command by command.

use super::fanout::Merge;
use super::route::Route;
use super::{Pending, RequestArgs, Session, write_request};
use crate::backend::Backend;
use crate::config::Transactions;
use cinnabar_cluster::NodeAddr;
use cinnabar_commands::Command;
use cinnabar_resp::encode;
use std::rc::Rc;

impl Session {
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    pub(super) fn transaction_command(&mut self, command: &Command, args: &RequestArgs<'_>) {
        match command.name() {
            "multi" => self.multi(),
            "exec" => self.exec(),
            "discard" => match self.transaction.take() {
                Some(tx) => {
                    self.recycle(tx);
                    self.unwatch();
                    self.local(b"+OK\r\n");
                }
                None => self.local_error(b"ERR DISCARD without MULTI"),
            },
            "watch" if self.transaction.is_some() => {
                self.local_error(b"ERR WATCH inside MULTI is not allowed");
            }
            "watch" => self.watch(command, args),
            _ => {
                self.unwatch();
                self.local(b"+OK\r\n");
            }
        }
    }

    /// `WATCH key…`: runs on a connection of this client's own to the slot's master, which
    /// the following EXEC uses too. All watched keys (and the transaction's) share one slot.
    pub(super) fn watch(&mut self, command: &Command, args: &RequestArgs<'_>) {
        let slot = match self.slot_of(command, args) {
            Ok(Some(slot)) => slot,
            Ok(None) => {
                return self.local_error(b"ERR wrong number of arguments for 'watch' command");
            }
            Err(e) => return self.local_error(&e),
        };
        if self.watch.as_ref().is_some_and(|w| w.slot != slot) {
            return self.local_error(
                b"CROSSSLOT Keys in request don't hash to the same slot (cinnabar: all WATCHed keys must share one slot)",
            );
        }
        if self.watch.is_none() {
            let routes = self.worker.routes();
            let Some(addr) = routes.owner(slot).map(|m| routes.masters()[m].clone()) else {
                return self.local_error(b"CLUSTERDOWN Hash slot not served");
            };
            let backend = Rc::new(Backend::new_pinned(addr, self.flavor()));
            tokio::task::spawn_local(crate::backend::run(
                Rc::clone(&backend),
                Rc::clone(&self.worker),
            ));
            self.watch = Some(Box::new(Watch::new(
                slot,
                backend,
                &routes,
                &self.worker.gate,
            )));
        }
        let Some(watch) = &self.watch else { return };
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let id = self.new_ticket(&mut tickets, Some(slot), false);
            let ticket = tickets.get(id);
            write_request(args, &mut ticket.request);
            watch.backend.enqueue(&ticket.request, id, false, 0);
            id
        };
        self.ids.push_back(id);
        self.push_pending(Pending::One);
    }

    /// Forgets WATCHed keys: their connection closes once idle.
    pub(super) fn unwatch(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.backend.retire();
        }
    }

    pub(super) fn multi(&mut self) {
        if self.transaction.is_some() {
            return self.local_error(b"ERR MULTI calls can not be nested");
        }
        let mut tx = self.cold.spare_transaction.take().unwrap_or_default();
        tx.slot = self.watch.as_ref().map(|w| w.slot);
        tx.in_group = self.worker.router.is_single();
        encode::command(&mut tx.request, &[b"MULTI"]);
        self.transaction = Some(tx);
        self.local(b"+OK\r\n");
    }

    /// Queues one command of a transaction, refusing (and dooming the transaction) what cannot
    /// run atomically on one master.
    pub(super) fn queue(&mut self, command: &Command, route: Route, args: &RequestArgs<'_>) {
        // EXEC runs on a shared backend connection: nothing that changes connection state may
        // ride along (SELECT 1 would move every other client to db 1). Inside MULTI a blocking
        // command does not block, so it may ride along too.
        let carried = matches!(route, Route::Keyed | Route::Split { .. } | Route::Blocking)
            || matches!(command.name(), "ping" | "echo");
        let slot = if carried {
            self.slot_of(command, args)
        } else {
            Err(format!(
                "ERR cinnabar: '{}' cannot run inside a transaction through the proxy",
                command.name()
            )
            .into_bytes())
        };
        let Some(tx) = self.transaction.as_mut() else {
            return;
        };
        // Relaxed mode spreads a transaction over slots, but never one that WATCHed: its EXEC
        // must run where the WATCH did.
        let mode = self
            .principal
            .as_ref()
            .and_then(cinnabar_access::Principal::transactions)
            .unwrap_or(self.worker.config.transactions);
        let relaxed = mode == Transactions::Relaxed && self.watch.is_none();
        let accepted = match slot {
            Ok(Some(slot)) if tx.slot.is_some_and(|s| s != slot) && relaxed => {
                tx.cross_slot = true;
                Ok(Some(slot))
            }
            Ok(Some(slot)) if tx.slot.is_some_and(|s| s != slot) => {
                let (first, this) = (tx.slot.unwrap_or(slot), slot);
                let (a, b) = (
                    crate::slotmap::cluster_of_slot(first),
                    crate::slotmap::cluster_of_slot(this),
                );
                Err(if a == b {
                    b"CROSSSLOT Keys in request don't hash to the same slot".to_vec()
                } else {
                    let routes = self.worker.routes_in_use();
                    format!(
                        "CROSSSLOT Keys in request don't hash to the same slot (cinnabar: the \
                         transaction spans clusters {} and {}; a transaction runs on one)",
                        routes.cluster_name(a),
                        routes.cluster_name(b)
                    )
                    .into_bytes()
                })
            }
            Ok(slot) => {
                tx.slot = tx.slot.or(slot);
                Ok(slot)
            }
            Err(e) => Err(e),
        };
        match accepted {
            Ok(slot) => {
                let start = tx.request.len();
                write_request(args, &mut tx.request);
                tx.commands.push((slot, start..tx.request.len()));
                tx.queued += 1;
                self.local(b"+QUEUED\r\n");
            }
            Err(line) => {
                tx.aborted = true;
                self.local_error(&line);
            }
        }
    }

    pub(super) fn exec(&mut self) {
        let Some(mut tx) = self.transaction.take() else {
            return self.local_error(b"ERR EXEC without MULTI");
        };
        self.run_exec(&mut tx);
        self.recycle(tx);
    }

    /// Keeps an ended transaction's buffers, emptied, for the next MULTI; a transaction that
    /// grew them past [`KEPT_TRANSACTION_BYTES`] gives its memory back instead, so an idle
    /// client does not hold on to its largest transaction.
    fn recycle(&mut self, mut tx: Box<Transaction>) {
        if tx.request.capacity() > KEPT_TRANSACTION_BYTES
            || tx.commands.capacity() * std::mem::size_of::<QueuedCommand>()
                > KEPT_TRANSACTION_BYTES
        {
            return;
        }
        let mut request = std::mem::take(&mut tx.request);
        let mut commands = std::mem::take(&mut tx.commands);
        request.clear();
        commands.clear();
        *tx = Transaction {
            request,
            commands,
            ..Transaction::default()
        };
        self.cold.spare_transaction = Some(tx);
    }

    fn run_exec(&mut self, tx: &mut Transaction) {
        let watch = self.watch.take();
        if tx.aborted {
            if let Some(watch) = watch {
                watch.backend.retire();
            }
            return self
                .local_error(b"EXECABORT Transaction discarded because of previous errors.");
        }
        if tx.in_group && !self.worker.router.is_single() {
            // Queued for a Sentinel group, where any keys go together; the endpoint serves a
            // cluster now, where they may not (see `crate::switch`). Nothing ran.
            if let Some(watch) = watch {
                watch.backend.retire();
            }
            return self.local_error(
                b"EXECABORT Transaction discarded because the endpoint moved from a Sentinel                   group to a Redis Cluster while it was queued; run it again",
            );
        }
        if let Some(watch) = &watch
            && (watch.backend.is_closed()
                || watch.upstream
                    != self
                        .worker
                        .routes()
                        .cluster_upstream(crate::slotmap::cluster_of_slot(watch.slot)))
        {
            // The connection that held the WATCH is gone, or the proxy switched to another
            // backend since (see `crate::switch`), so a watched key may have changed unseen:
            // answer as Redis does when one did (the transaction did not run).
            let protocol = self.protocol();
            return self.local_with(|out, _| encode::null_array(out, protocol));
        }
        if tx.cross_slot {
            return self.exec_relaxed(tx);
        }
        encode::command(&mut tx.request, &[b"EXEC"]);
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let id = self.new_ticket(&mut tickets, tx.slot, false);
            let ticket = tickets.get(id);
            ticket.request.extend_from_slice(&tx.request);
            // The replies of MULTI and of every queued command; only EXEC's goes to the client.
            ticket.discard = tx.queued + 1;
            if let Some(watch) = &watch {
                watch
                    .backend
                    .enqueue(&ticket.request, id, false, ticket.discard);
            }
            id
        };
        match watch {
            Some(watch) => watch.backend.retire(),
            None => self.worker.dispatch(id),
        }
        self.ids.push_back(id);
        self.push_pending(Pending::One);
    }
}

impl Session {
    /// EXEC of a relaxed transaction over several slots: each queued command on its slot's
    /// master, sent in order (so commands on one master run in queue order), and the replies
    /// gathered into the array EXEC answers. Not atomic across slots; counted and audited.
    fn exec_relaxed(&mut self, tx: &Transaction) {
        self.worker.stats.relaxed_transactions.inc();
        if let (Some(peer), Some(principal), true) = (
            self.cold.peer,
            self.principal.as_ref(),
            self.worker.auditor.is_enabled(),
        ) {
            let routes = self.worker.routes();
            let mut targets: Vec<NodeAddr> = tx
                .commands
                .iter()
                .filter_map(|(slot, _)| routes.owner((*slot)?))
                .map(|m| routes.masters()[m].clone())
                .collect();
            targets.sort_by_key(ToString::to_string);
            targets.dedup();
            let record =
                cinnabar_audit::AuditRecord::command(peer, principal.user().to_owned(), "exec")
                    .with_subcommand("relaxed")
                    .with_targets(targets)
                    .with_outcome(cinnabar_audit::Outcome::Ok);
            self.worker.auditor.record(record);
        }
        for (slot, range) in &tx.commands {
            let id = {
                let mut tickets = self.worker.tickets.borrow_mut();
                let id = self.new_ticket(&mut tickets, *slot, false);
                let ticket = tickets.get(id);
                ticket.request.extend_from_slice(&tx.request[range.clone()]);
                id
            };
            self.worker.dispatch(id);
            self.ids.push_back(id);
        }
        self.push_pending(Pending::Split {
            merge: Merge::ExecArray,
            parts: tx.commands.len(),
        });
    }
}

/// WATCHed keys: one slot, one private connection.
#[derive(Debug)]
pub(super) struct Watch {
    pub(super) slot: u16,
    pub(super) backend: Rc<Backend>,
    /// The switches of the watched slot's cluster when the WATCH ran
    /// (`SlotMap::cluster_upstream`).
    pub(super) upstream: u64,
    /// Counts open WATCHes, for a switch's report.
    gate: std::sync::Arc<crate::switch::Gate>,
}

impl Watch {
    fn new(
        slot: u16,
        backend: Rc<Backend>,
        routes: &crate::slotmap::SlotMap,
        gate: &std::sync::Arc<crate::switch::Gate>,
    ) -> Self {
        gate.watching
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            slot,
            backend,
            upstream: routes.cluster_upstream(crate::slotmap::cluster_of_slot(slot)),
            gate: std::sync::Arc::clone(gate),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.gate
            .watching
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The most bytes each of a spare transaction's buffers may keep (see `Session::recycle`).
const KEPT_TRANSACTION_BYTES: usize = 4096;

/// One queued command of a transaction: its slot and its bytes in `Transaction::request`.
type QueuedCommand = (Option<u16>, std::ops::Range<usize>);

/// A transaction being queued by the proxy. At EXEC it goes to the slot's master as one
/// contiguous `MULTI … EXEC` chunk, so it runs atomically there.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    /// The one slot all keyed commands must share.
    pub(super) slot: Option<u16>,
    /// `MULTI` followed by the queued commands, as multibulk.
    pub(super) request: Vec<u8>,
    pub(super) queued: u16,
    /// A queued command was refused: EXEC answers EXECABORT, as Redis does.
    pub(super) aborted: bool,
    /// Each queued command's slot and its bytes in `request` (after `MULTI`).
    pub(super) commands: Vec<QueuedCommand>,
    /// Relaxed mode: the commands span several slots, so EXEC runs them one by one.
    pub(super) cross_slot: bool,
    /// Queued in front of a Sentinel group (every key in one slot).
    pub(super) in_group: bool,
}
