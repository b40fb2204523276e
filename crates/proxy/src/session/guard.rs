//! Who may do what: logins (AUTH, HELLO AUTH), per-role permission checks with their audit
//! records, and the nodes an audited request reaches. A refusal is answered and audited here.

use super::route::Route;
use super::{RequestArgs, Session};
use cinnabar_commands::{Args, Command};
use std::time::Instant;

impl Session {
    /// Checks a login; on success the connection acts as that user from its next command. On
    /// failure the refusal is queued (held back after repeated failures from one address, and
    /// audited) and `false` returned.
    pub(super) fn login(&mut self, user: Option<&[u8]>, password: &[u8]) -> bool {
        let result = self.worker.access().0.authenticate(user, password);
        let ip = self.cold.peer.map(|p| p.ip());
        match result {
            Ok(principal) => {
                if let Some(limit) = self.worker.config.max_connections_per_user {
                    let stats = &self.worker.all_stats;
                    if !stats.take_user_place(
                        principal.user(),
                        limit,
                        self.cold.user_place.as_deref(),
                    ) {
                        let msg = format!(
                            "ERR cinnabar: user '{}' already has its maximum of {limit} connections",
                            principal.user()
                        );
                        self.local_error(msg.as_bytes());
                        return false;
                    }
                    self.cold.user_place = Some(principal.user().to_owned());
                }
                if let Some(ip) = ip {
                    self.worker.login_succeeded(ip);
                }
                self.flush_user_counts(Instant::now());
                self.principal = Some(principal);
                true
            }
            Err(cinnabar_access::AuthError::NoPasswordConfigured) => {
                self.local_error(NO_PASSWORD);
                false
            }
            Err(e) => {
                let name = String::from_utf8_lossy(
                    user.unwrap_or(cinnabar_access::DEFAULT_USER.as_bytes()),
                )
                .into_owned();
                if let (Some(peer), true) = (self.cold.peer, self.worker.auditor.is_enabled()) {
                    self.worker
                        .auditor
                        .record(cinnabar_audit::AuditRecord::auth_failure(peer, name));
                }
                let delay = ip.map_or(std::time::Duration::ZERO, |ip| self.worker.login_failed(ip));
                let mut refusal = Vec::with_capacity(96);
                refusal.push(b'-');
                refusal.extend_from_slice(e.to_string().as_bytes());
                refusal.extend_from_slice(b"\r\n");
                if delay.is_zero() {
                    self.local(&refusal);
                } else {
                    self.later(delay, refusal);
                }
                false
            }
        }
    }

    /// Whether this client may run `command` with `args`: logged in (or logging in), and
    /// permitted by its role. A refusal is answered (and audited) here.
    pub(super) fn permitted(&mut self, command: &Command, args: &RequestArgs<'_>) -> bool {
        // One look at the access set for both its generation and what it audits.
        let (generation, audited) = {
            let (access, generation) = self.worker.access();
            (generation, access.audited)
        };
        if generation != self.access_generation {
            // Users or roles were reloaded: the same user, with its new permissions (gone or
            // disabled: logged out).
            self.access_generation = generation;
            let user = self.principal.as_ref().map(|p| p.user().to_owned());
            let access = self.worker.access().0;
            self.principal = match user {
                Some(user) if access.auth_required() => access.principal(&user),
                _ => access.default_principal(),
            };
        }
        let Some(principal) = &self.principal else {
            if cinnabar_access::runs_before_login(command) {
                return true;
            }
            self.local_error(b"NOAUTH Authentication required.");
            return false;
        };
        let Err(denied) = principal.check(command, args) else {
            if command.acl_categories().intersects(audited)
                && self.worker.auditor.is_enabled()
                && let Some(peer) = self.cold.peer
            {
                let record = audit_record(peer, principal, command, args, &self.worker.auditor);
                self.audit_next = Some(Box::new(record));
            }
            return true;
        };
        self.worker.stats.denied.inc();
        let line = denied.to_string();
        if let (Some(peer), true) = (self.cold.peer, self.worker.auditor.is_enabled()) {
            let record = audit_record(peer, principal, command, args, &self.worker.auditor)
                .with_outcome(cinnabar_audit::Outcome::Denied)
                .with_error(line.clone());
            self.worker.auditor.record(record);
        }
        self.local_error(line.as_bytes());
        false
    }

    /// The nodes a request goes to, for its audit record (only audited requests ask: this
    /// allocates).
    pub(super) fn targets(
        &self,
        command: &Command,
        route: Route,
        args: &RequestArgs<'_>,
    ) -> Vec<cinnabar_cluster::NodeAddr> {
        let routes = self.worker.routes();
        let masters = routes.masters();
        match route {
            Route::FanOut(_) | Route::Scan | Route::Wait => masters.to_vec(),
            Route::EveryNode(_) => (0..masters.len())
                .flat_map(|m| {
                    std::iter::once(masters[m].clone()).chain(routes.replicas(m).iter().cloned())
                })
                .collect(),
            Route::Keyed | Route::Split { .. } | Route::Blocking => {
                let mut owners: Vec<usize> = command
                    .keys(args)
                    .filter_map(|i| args.get(i))
                    .filter_map(|key| routes.owner(self.worker.router.slot(key)))
                    .collect();
                if owners.is_empty() && !masters.is_empty() {
                    owners.push(0);
                }
                owners.sort_unstable();
                owners.dedup();
                owners.into_iter().map(|m| masters[m].clone()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// What Redis answers to AUTH when no password is configured.
pub(super) const NO_PASSWORD: &[u8] = b"ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// The audit record of `command` run by `principal`: its name, subcommand and keys (the
/// outcome is added by the caller).
pub(super) fn audit_record(
    peer: std::net::SocketAddr,
    principal: &cinnabar_access::Principal,
    command: &Command,
    args: &RequestArgs<'_>,
    auditor: &cinnabar_audit::Auditor,
) -> cinnabar_audit::AuditRecord {
    let record = cinnabar_audit::AuditRecord::command(
        peer,
        principal.user().to_owned(),
        command.command_name(),
    )
    .with_keys(
        command.keys(args).filter_map(|i| args.get(i)),
        auditor.max_keys(),
    );
    match command.subcommand_name() {
        Some(sub) => record.with_subcommand(sub),
        None => record,
    }
}
