//! Commands the proxy answers itself: PING, ECHO, SELECT 0, HELLO, AUTH, CLIENT …, the
//! smart-client CLUSTER view, SLOWLOG, RESET. Never touches a backend (but for the slot counts
//! of CLUSTER COUNTKEYSINSLOT/GETKEYSINSLOT, forwarded to the slot's master).

use super::{ReplyMode, RequestArgs, Session};
use crate::local;
use cinnabar_commands::{Args, Command};
use cinnabar_resp::encode;

impl Session {
    /// The commands of [`Route::Local`]: the proxy's own view of the connection and the
    /// cluster.
    pub(super) fn answer_locally(&mut self, command: &Command, args: &RequestArgs<'_>) {
        match command.name() {
            "ping" => match args.get(1) {
                None => self.local(b"+PONG\r\n"),
                Some(message) => self.local_bulk(message),
            },
            "echo" => self.local_bulk(args.get(1).unwrap_or_default()),
            "select" => match args.get(1) {
                Some(b"0") => self.local(b"+OK\r\n"),
                _ => self.local(b"-ERR DB index is out of range\r\n"),
            },
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
                if self.name.is_empty() {
                    let protocol = self.protocol();
                    self.local_with(|out, _| encode::null(out, protocol));
                } else {
                    let name = std::mem::take(&mut self.name);
                    self.local_bulk(&name);
                    self.name = name;
                }
            }
            "client|info" | "client|list" => {
                let line = local::client_line(
                    self.id,
                    self.peer,
                    self.worker.announce,
                    &self.name,
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
                match slot {
                    Some(slot) => self.forward(Some(slot), true, args),
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
                return self.local_error(b"ERR Syntax error in HELLO option");
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
            self.name = name.to_vec();
        }
        self.resp3 = resp3;
        let (id, protocol) = (self.id, self.protocol());
        self.local_with(|out, _| local::hello(out, id, protocol));
    }

    /// `RESET`: back to a fresh connection's state (RESP2, no name, no transaction).
    pub(super) fn reset(&mut self) {
        self.transaction = None;
        self.unwatch();
        // As Redis: back to the default user (logged out when logins are required).
        self.principal = self.worker.access().0.default_principal();
        self.name.clear();
        self.resp3 = false;
        // RESET turns replies back on, its own included.
        self.reply_mode = ReplyMode::On;
        self.silent = false;
        self.local(b"+RESET\r\n");
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
        self.name = name.to_vec();
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
