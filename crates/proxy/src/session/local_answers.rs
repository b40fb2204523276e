//! Commands the proxy answers itself: PING, ECHO, SELECT 0, HELLO, AUTH, CLIENT …, the
//! smart-client CLUSTER view, SLOWLOG, RESET. Never touches a backend (but for the slot counts
//! of CLUSTER COUNTKEYSINSLOT/GETKEYSINSLOT, forwarded to the slot's master in every cluster
//! behind the endpoint, counts added up and key lists joined).

use super::{ReplyMode, RequestArgs, Session};
use crate::local;
use cinnabar_commands::{Args, Command};
use cinnabar_resp::encode;

impl Session {
    /// The commands of [`Route::Local`]: the proxy's own view of the connection and the
    /// cluster.
    pub(super) fn answer_locally(&mut self, command: &Command, args: &RequestArgs<'_>) {
        match command.name() {
            // The table says "at least one argument"; Redis's handler takes at most one more.
            "ping" => match (args.len(), args.get(1)) {
                (1, _) => self.local(b"+PONG\r\n"),
                (2, Some(message)) => self.local_bulk(message),
                _ => self.local_error(b"ERR wrong number of arguments for 'ping' command"),
            },
            "echo" => self.local_bulk(args.get(1).unwrap_or_default()),
            "select" => self.select(args.get(1).unwrap_or_default()),
            "hello" => self.hello(args),
            "auth" => match (args.len(), args.get(1), args.get(2)) {
                (2, Some(password), _) => {
                    if self.login(None, password) {
                        self.local(b"+OK\r\n");
                    }
                }
                (3, Some(user), Some(password)) => {
                    if self.login(Some(user), password) {
                        self.local(b"+OK\r\n");
                    }
                }
                _ => self.local_error(b"ERR syntax error"),
            },
            "client|id" => self.local_integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            "client|setname" => self.set_name(args.get(2).unwrap_or_default()),
            "client|reply" => self.client_reply(args.get(2).unwrap_or_default()),
            "reset" => self.reset(),
            "slowlog|len" => {
                let len = self.worker.all_stats.slowlog.len();
                self.local_integer(i64::try_from(len).unwrap_or(i64::MAX));
            }
            "slowlog|reset" => {
                self.worker.all_stats.slowlog.reset();
                self.local(b"+OK\r\n");
            }
            // `SLOWLOG GET count NODES`: the nodes' own slow logs, named per node, instead of
            // the proxy's (an admin looking for a slow node, not a slow client).
            "slowlog|get"
                if args.len() == 4
                    && args.get(3).is_some_and(|a| a.eq_ignore_ascii_case(b"NODES")) =>
            {
                let mut request = Vec::new();
                let count = args.get(2).unwrap_or_default();
                encode::command(&mut request, &[b"SLOWLOG", b"GET", count]);
                self.every_node_request(&request, super::fanout::Merge::PerNode);
            }
            "slowlog|get" if args.len() > 3 => {
                let line = format!(
                    "ERR unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
                    String::from_utf8_lossy(args.get(1).unwrap_or_default())
                );
                self.local_error(line.as_bytes());
            }
            "slowlog|get" => {
                let count = match args.get(2).map(|c| {
                    std::str::from_utf8(c)
                        .ok()
                        .and_then(|c| c.parse::<i64>().ok())
                }) {
                    None => Some(10),
                    Some(Some(n)) if n >= -1 => Some(n),
                    Some(_) => None,
                };
                match count {
                    None => self.local_error(b"ERR count should be greater than or equal to -1"),
                    Some(n) => {
                        let n = usize::try_from(n).unwrap_or(usize::MAX);
                        let log = &self.worker.all_stats.slowlog;
                        let mut reply = Vec::with_capacity(256);
                        log.write(&mut reply, n);
                        self.local(&reply);
                    }
                }
            }
            "client|getname" => {
                if self.cold.name.is_empty() {
                    let protocol = self.protocol();
                    self.local_with(|out, _| encode::null(out, protocol));
                } else {
                    let name = std::mem::take(&mut self.cold.name);
                    self.local_bulk(&name);
                    self.cold.name = name;
                }
            }
            "acl|whoami" => {
                let user = self.principal.as_ref().map_or(cinnabar_access::DEFAULT_USER, |p| p.user()).to_owned();
                self.local_bulk(user.as_bytes());
            }
            "acl|users" | "acl|list" => {
                let users = self.worker.access().0.users();
                let list = command.name() == "acl|list";
                self.local_with(|out, _| {
                    encode::array_header(out, users.len());
                    for (user, enabled) in &users {
                        if list {
                            let state = if *enabled { "on" } else { "off" };
                            let line = format!("user {} {state} {}", user.user(), user.acl_rules().line());
                            encode::bulk(out, line.as_bytes());
                        } else {
                            encode::bulk(out, user.user().as_bytes());
                        }
                    }
                });
            }
            "acl|getuser" => self.acl_getuser(args.get(2).unwrap_or_default()),
            "acl|dryrun" => self.acl_dryrun(args),
            "acl|setuser" | "acl|deluser" => self.local_error(
                b"ERR cinnabar: proxy users and roles come from its settings ([access] in cinnabar.toml, or the users_file it names), not from ACL SETUSER/DELUSER; edit them there and reload (SIGHUP or POST /reload)",
            ),
            "client|list" if args.len() > 2 => self.client_list_filtered(args),
            "client|info" | "client|list" => {
                let line = local::client_line(
                    self.id,
                    self.cold.peer,
                    self.worker.announce,
                    &self.cold.name,
                    self.protocol(),
                );
                self.local_bulk(line.as_bytes());
            }
            "cluster|slots" => self.local_with(local::cluster_slots),
            "cluster|shards" => {
                let protocol = self.protocol();
                self.local_with(|out, announce| local::cluster_shards(out, announce, protocol));
            }
            "cluster|nodes" => self.local_with(local::cluster_nodes),
            "cluster|info" => self.local_with(|out, _| local::cluster_info(out)),
            "cluster|myid" => self.local_bulk(local::node_id(self.worker.announce).as_bytes()),
            "cluster|keyslot" => {
                let slot = cinnabar_commands::key_slot(args.get(2).unwrap_or_default());
                self.local_integer(i64::from(slot));
            }
            "cluster|countkeysinslot" | "cluster|getkeysinslot" => {
                let slot = std::str::from_utf8(args.get(2).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .filter(|slot| *slot < 16384);
                let merge = if subcommand_is(args, b"countkeysinslot") {
                    super::fanout::Merge::Sum
                } else {
                    // Up to COUNT keys from each cluster.
                    super::fanout::Merge::Concat
                };
                match slot {
                    Some(slot) => self.in_every_cluster(slot, args, merge),
                    None => self.local_error(b"ERR Invalid or out of range slot"),
                }
            }
            // ASKING: redirects are the proxy's business; a client's ASKING must never reach a
            // shared connection, where it would apply to someone else's next command.
            // READONLY/READWRITE: where reads go is the proxy's read policy.
            // CLIENT SETINFO: library name and version, nothing to act on.
            _ => self.local(b"+OK\r\n"),
        }
    }

    /// `HELLO [2|3 [AUTH user password] [SETNAME name]]`. Logging in comes first; the protocol
    /// and name change only when the whole command succeeds.
    pub(super) fn hello(&mut self, args: &RequestArgs<'_>) {
        let resp3 = match args.get(1) {
            None => self.resp3,
            Some(b"2") => false,
            Some(b"3") => true,
            Some(version)
                if std::str::from_utf8(version).is_ok_and(|v| v.parse::<i64>().is_ok()) =>
            {
                return self.local_error(b"NOPROTO unsupported protocol version");
            }
            Some(_) => {
                return self.local_error(b"ERR Protocol version is not an integer or out of range");
            }
        };
        let mut name = None;
        let mut login = None;
        let mut i = 2;
        while let Some(option) = args.get(i) {
            if option.eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
                let candidate = args.get(i + 1).unwrap_or_default();
                if !valid_client_name(candidate) {
                    return self.local_error(BAD_NAME);
                }
                name = Some(candidate);
                i += 2;
            } else if option.eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
                login = Some((
                    args.get(i + 1).unwrap_or_default(),
                    args.get(i + 2).unwrap_or_default(),
                ));
                i += 3;
            } else {
                let line = format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                );
                return self.local_error(line.as_bytes());
            }
        }
        if let Some((user, password)) = login {
            if !self.login(Some(user), password) {
                return;
            }
        } else if self.principal.is_none() {
            return self.local_error(b"NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if let Some(name) = name {
            self.cold.name = name.to_vec();
        }
        self.resp3 = resp3;
        let (id, protocol) = (self.id, self.protocol());
        let version = self
            .worker
            .all_stats
            .backend_version
            .lock()
            .ok()
            .and_then(|v| v.clone());
        let version = version
            .as_deref()
            .unwrap_or(crate::info::FALLBACK_REDIS_VERSION);
        self.local_with(|out, _| local::hello(out, id, version, protocol));
    }

    /// `ACL GETUSER name` from the proxy's users: Redis's shape (flags, passwords, commands,
    /// keys, channels, selectors); password hashes are never shown.
    fn acl_getuser(&mut self, name: &[u8]) {
        let Some((user, enabled)) = self.configured_user(name) else {
            let protocol = self.protocol();
            return self.local_with(|out, _| encode::null(out, protocol));
        };
        let rules = user.acl_rules();
        let (keys, channels, commands) = (
            rules.keys.join(" "),
            rules.channels.join(" "),
            rules.commands.join(" "),
        );
        let flag: &[u8] = if enabled { b"on" } else { b"off" };
        let protocol = self.protocol();
        self.local_with(|out, _| {
            encode::map_header(out, 6, protocol);
            encode::bulk(out, b"flags");
            encode::array_header(out, 1);
            encode::bulk(out, flag);
            encode::bulk(out, b"passwords");
            encode::array_header(out, 0);
            for (field, value) in [
                ("commands", &commands),
                ("keys", &keys),
                ("channels", &channels),
            ] {
                encode::bulk(out, field.as_bytes());
                encode::bulk(out, value.as_bytes());
            }
            encode::bulk(out, b"selectors");
            encode::array_header(out, 0);
        });
    }

    /// The proxy's user named `name`, and whether it is enabled.
    fn configured_user(&self, name: &[u8]) -> Option<(cinnabar_access::Principal, bool)> {
        let users = self.worker.access().0.users();
        users.into_iter().find(|(u, _)| u.user().as_bytes() == name)
    }

    /// `ACL DRYRUN user command [arg…]`: whether the proxy would let `user` run it.
    fn acl_dryrun(&mut self, args: &RequestArgs<'_>) {
        let name = args.get(2).unwrap_or_default();
        let Some((user, _)) = self.configured_user(name) else {
            let line = format!("ERR User '{}' not found", String::from_utf8_lossy(name));
            return self.local_error(line.as_bytes());
        };
        let request = Skipped { args, skip: 3 };
        match cinnabar_commands::resolve(&request) {
            Err(e) => self.local_error(&e.to_bytes()),
            Ok(command) => match user.check(command, &request) {
                Ok(()) => self.local(b"+OK\r\n"),
                Err(denied) => self.local_bulk(denied.to_string().as_bytes()),
            },
        }
    }

    /// `CLIENT LIST TYPE type` or `CLIENT LIST ID id…`: this connection's line when it
    /// matches (a proxy client is of type `normal`, or `pubsub` while subscribed, which is
    /// never the case here), else nothing; anything else is refused in Redis's words.
    fn client_list_filtered(&mut self, args: &RequestArgs<'_>) {
        let option = args.get(2).unwrap_or_default();
        let matches = if option.eq_ignore_ascii_case(b"TYPE") && args.len() == 4 {
            let kind = args.get(3).unwrap_or_default().to_ascii_lowercase();
            match kind.as_slice() {
                b"normal" => true,
                b"master" | b"replica" | b"slave" | b"pubsub" => false,
                _ => {
                    let line = format!(
                        "ERR Unknown client type '{}'",
                        String::from_utf8_lossy(args.get(3).unwrap_or_default())
                    );
                    return self.local_error(line.as_bytes());
                }
            }
        } else if option.eq_ignore_ascii_case(b"ID") && args.len() > 3 {
            let mut found = false;
            for i in 3..args.len() {
                let id = std::str::from_utf8(args.get(i).unwrap_or_default())
                    .ok()
                    .and_then(|id| id.parse::<u64>().ok())
                    .filter(|id| *id > 0);
                match id {
                    Some(id) => found |= id == self.id,
                    None => return self.local_error(b"ERR Invalid client ID"),
                }
            }
            found
        } else {
            return self.local_error(b"ERR syntax error");
        };
        let line = if matches {
            local::client_line(
                self.id,
                self.cold.peer,
                self.worker.announce,
                &self.cold.name,
                self.protocol(),
            )
        } else {
            String::new()
        };
        self.local_bulk(line.as_bytes());
    }

    /// `RESET`: back to a fresh connection's state (RESP2, no name, no transaction).
    pub(super) fn reset(&mut self) {
        self.transaction = None;
        self.unwatch();
        // As Redis: back to the default user (logged out when logins are required).
        self.principal = self.worker.access().0.default_principal();
        self.cold.name.clear();
        self.resp3 = false;
        // As Redis: back to database 0. Requests in flight on the other database's
        // connections may still run after later ones: RESET is rare, and Redis itself makes
        // no promise across a RESET beyond the order of replies, which holds.
        self.db = 0;
        // RESET turns replies back on, its own included.
        self.reply_mode = ReplyMode::On;
        self.silent = false;
        self.local(b"+RESET\r\n");
    }

    /// `SELECT db`: database 0 only in front of a cluster (it has no other); any below
    /// `DATABASES` in front of a Sentinel group. The client's later requests then use
    /// connections opened in that database. Requests to two databases travel on two
    /// connections, which keep no order between them, so a change waits for the replies to
    /// everything sent before it (as a blocking command does).
    fn select(&mut self, index: &[u8]) {
        if !self.worker.routes_in_use().is_group() {
            return match index {
                b"0" => self.local(b"+OK\r\n"),
                _ => self.local(b"-ERR DB index is out of range\r\n"),
            };
        }
        let Some(db) = std::str::from_utf8(index)
            .ok()
            .and_then(|i| i.parse::<i64>().ok())
        else {
            return self.local_error(b"ERR value is not an integer or out of range");
        };
        let Some(db) = u8::try_from(db)
            .ok()
            .filter(|db| *db < crate::backend::DATABASES)
        else {
            return self.local_error(b"ERR DB index is out of range");
        };
        if db == self.db {
            return self.local(b"+OK\r\n");
        }
        if self.watch.is_some() {
            // The WATCH ran on a connection of the old database, where EXEC would run too.
            return self.local_error(b"ERR cinnabar: SELECT after WATCH; UNWATCH first");
        }
        if !self.pending.is_empty() {
            self.deferred = true;
            return;
        }
        self.db = db;
        self.cold.other_database = (db != 0).then(|| OtherDatabase::new(&self.worker.gate));
        self.local(b"+OK\r\n");
    }

    /// `CLIENT REPLY ON|OFF|SKIP`: only ON has a reply, even after OFF.
    fn client_reply(&mut self, mode: &[u8]) {
        if mode.eq_ignore_ascii_case(b"on") {
            self.reply_mode = ReplyMode::On;
            self.silent = false;
            self.local(b"+OK\r\n");
        } else if mode.eq_ignore_ascii_case(b"off") {
            self.reply_mode = ReplyMode::Off;
        } else if mode.eq_ignore_ascii_case(b"skip") {
            // As in Redis, SKIP changes nothing while replies are off.
            if self.reply_mode != ReplyMode::Off {
                self.reply_mode = ReplyMode::SkipNext;
            }
        } else {
            self.local_error(b"ERR syntax error");
        }
    }

    pub(super) fn set_name(&mut self, name: &[u8]) {
        if !valid_client_name(name) {
            return self.local_error(BAD_NAME);
        }
        self.cold.name = name.to_vec();
        self.local(b"+OK\r\n");
    }
}

/// Redis refuses client names with spaces or control characters.
pub(super) fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// Redis's answer to such a name.
pub(super) const BAD_NAME: &[u8] =
    b"ERR Client names cannot contain spaces, newlines or special characters.";

/// A request's arguments after the first `skip` (the command inside `ACL DRYRUN user …`).
struct Skipped<'a, 'b> {
    args: &'a RequestArgs<'b>,
    skip: usize,
}

impl Args for Skipped<'_, '_> {
    fn len(&self) -> usize {
        self.args.len().saturating_sub(self.skip)
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        self.args.get(index + self.skip)
    }
}

/// Counts, for a switch's report, the connections using a database other than 0: a cluster
/// has none, so a switch from a Sentinel group to a cluster ends them (see `Session::handle`).
#[derive(Debug)]
pub(super) struct OtherDatabase(std::sync::Arc<crate::switch::Gate>);

impl OtherDatabase {
    fn new(gate: &std::sync::Arc<crate::switch::Gate>) -> Self {
        gate.other_database
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(std::sync::Arc::clone(gate))
    }
}

impl Drop for OtherDatabase {
    fn drop(&mut self) {
        self.0
            .other_database
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn subcommand_is(args: &RequestArgs<'_>, name: &[u8]) -> bool {
    args.get(1).is_some_and(|a| a.eq_ignore_ascii_case(name))
}
