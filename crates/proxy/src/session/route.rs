//! Which way each command goes (`Route`), and `handle`, which checks a request and sends it
//! that way. The one place that classifies commands; everything else acts on the route.

use super::fanout::Merge;
use super::{RequestArgs, Session};
use crate::info;
use crate::stats::Category;
use cinnabar_commands::{Args, Command, RequestPolicy};
use std::sync::LazyLock;

impl Session {
    /// Decides what to do with one complete request.
    pub(super) fn handle(&mut self, args: &RequestArgs<'_>) {
        if self.db != 0 && !self.worker.router.is_single() {
            // The endpoint was switched from a Sentinel group to a cluster, which has only
            // database 0: this client's requests cannot go on where it thinks they go. End the
            // connection with the reason; a client library reconnects (and its SELECT is then
            // refused in so many words).
            self.local_error(
                b"ERR cinnabar: this endpoint now serves a Redis Cluster, which has only \
                  database 0; this connection selected another and is closed",
            );
            self.closing = true;
            return;
        }
        let command = match self.resolve(args) {
            Ok(command) => command,
            Err(e) => {
                let line = e.to_bytes();
                // A refused EXEC (`EXEC x`) ends the transaction, in Redis's words.
                if args.get(0).is_some_and(|n| n.eq_ignore_ascii_case(b"exec")) {
                    self.transaction = None;
                    let mut msg = b"EXECABORT Transaction discarded because of: ".to_vec();
                    msg.extend_from_slice(line.strip_prefix(b"ERR ").unwrap_or(&line));
                    return self.local_error(&msg);
                }
                if let Some(tx) = &mut self.transaction {
                    tx.aborted = true;
                }
                self.category = Category::Other;
                self.command = None;
                self.command_index = u16::MAX;
                return self.local_error(&line);
            }
        };
        let profile = Profile::get(command);
        self.category = profile.category;
        self.command = Some(command);
        self.command_index = profile.index;
        // A record left by a request that queued no reply (deferred, or subscribed) must not
        // describe this one.
        self.audit_next = None;
        if !self.permitted(command, args) {
            if let Some(tx) = &mut self.transaction {
                tx.aborted = true;
            }
            return;
        }
        let route = match profile.route {
            // A group keeps every database on its one master: MOVE and SWAPDB run there.
            Route::Unsupported
                if self.worker.router.is_single()
                    && matches!(command.name(), "move" | "swapdb") =>
            {
                Route::Keyed
            }
            route => route,
        };
        if let Some(record) = self.audit_next.take() {
            let targets = self.targets(command, route, args);
            self.audit_next = Some(Box::new((*record).with_targets(targets)));
        }
        // QUIT acts at once, even inside a transaction (as in Redis): never queued, never sent.
        if route == Route::Quit {
            self.local(b"+OK\r\n");
            self.closing = true;
            return;
        }
        if self.transaction.is_some() && route != Route::Transaction {
            return self.queue(command, route, args);
        }
        // WATCH and EXEC run on the client's own connection, other requests on shared ones,
        // and two connections keep no order between them. So the one waits for the other, as
        // a Redis connection runs requests in order: after WATCH, a request for a shared
        // connection waits until the WATCH has run (else it could change a watched key before
        // the WATCH looks); a WATCH, and the EXEC of a watched transaction, wait until every
        // earlier request has run (else the WATCH looks too late, or the EXEC runs before a
        // write that should have failed it).
        let own_connection = route == Route::Transaction
            && (command.name() == "watch" || (command.name() == "exec" && self.watch.is_some()));
        let shared_after_watch =
            self.watch.is_some() && !matches!(route, Route::Local | Route::Transaction);
        if (own_connection || shared_after_watch) && !self.pending.is_empty() {
            self.deferred = true;
            return;
        }
        // Fan-outs must not leave out a master the table in hand does not know yet.
        if matches!(
            route,
            Route::FanOut(_) | Route::Scan | Route::EveryNode(_) | Route::Wait | Route::KillScripts
        ) && !self.fresh_routes_or_wait()
        {
            return;
        }
        match route {
            Route::Quit => {}
            Route::Local => self.answer_locally(command, args),
            Route::Keyed => match self.slot_of(command, args) {
                // Where every classic subscription through the proxy lives, so the count it
                // returns is theirs (see `crate::pubsub`).
                Ok(None) if command.name() == "publish" => {
                    self.forward(Some(crate::pubsub::HOME_SLOT), false, args);
                }
                Ok(slot) => self.forward(slot, command.is_readonly(), args),
                Err(e) => self.local_error(&e),
            },
            Route::Split { merge, step } => self.split(command, args, merge, step),
            Route::FanOut(Merge::Info(_)) => {
                let sections = info::sections((1..args.len()).filter_map(|i| args.get(i)));
                self.fan_out(args, Some(&info::BACKEND_REQUEST), Merge::Info(sections));
            }
            Route::FanOut(merge) => self.fan_out(args, None, merge),
            Route::Scan => self.scan(args),
            Route::EveryNode(merge) => self.every_node(args, merge),
            Route::KillScripts => self.kill_scripts(args),
            // A blocking command runs on a connection of its own, so it must not start before
            // this client's earlier requests have run on theirs.
            Route::Blocking | Route::Wait if !self.pending.is_empty() => self.deferred = true,
            Route::Blocking => match self.slot_of(command, args) {
                Ok(slot) => {
                    self.set_blocked(true);
                    self.blocking(slot, args);
                }
                Err(e) => self.local_error(&e),
            },
            Route::Transaction => self.transaction_command(command, args),
            Route::Subscribe => self.enter_pubsub(command, args),
            Route::Unsubscribe => self.unsubscribe_unsubscribed(command, args),
            Route::Wait => {
                self.set_blocked(true);
                self.wait(args);
            }
            Route::Unsupported => {
                let msg = format!(
                    "-ERR cinnabar: '{}' is not supported through the proxy\r\n",
                    command.name().replace('|', " ")
                );
                self.local(msg.as_bytes());
            }
        }
    }
}

impl Session {
    /// `cinnabar_commands::resolve`, trying first the last command this session resolved:
    /// clients mostly send runs of one command (a pipeline of GETs), and comparing a name of a
    /// few bytes costs a fraction of hashing it and probing the table. Containers (`CLIENT`,
    /// `CONFIG` …) always take the full lookup, which finds their subcommand.
    fn resolve(
        &mut self,
        args: &RequestArgs<'_>,
    ) -> Result<&'static Command, cinnabar_commands::CommandError> {
        if let (Some(last), Some(name)) = (self.last_command, args.get(0))
            && name.eq_ignore_ascii_case(last.name().as_bytes())
        {
            last.check_arity(args.len())?;
            return Ok(last);
        }
        let command = cinnabar_commands::resolve(args)?;
        self.last_command =
            (!command.is_container() && command.subcommand_name().is_none()).then_some(command);
        Ok(command)
    }
}

/// What `handle` needs to know of a command on every request: its route, its metrics category
/// and its row in the command statistics. All three depend on the command alone, and working
/// them out (`route` is a match over a hundred names, the category a walk over ACL categories)
/// cost some hundred instructions per request (`bench/proxy-instructions.sh`), so they are
/// worked out once per top-level command, on first use. Subcommands (`CLIENT ID`, `CONFIG
/// GET` …) are rare on the hot path and are worked out each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Profile {
    route: Route,
    category: Category,
    index: u16,
}

impl Profile {
    fn of(command: &Command) -> Self {
        Self {
            route: route(command),
            category: Category::of(command),
            index: crate::stats::CommandStats::index_of(command),
        }
    }

    fn get(command: &Command) -> Self {
        static TOP_LEVEL: LazyLock<Vec<Profile>> = LazyLock::new(|| {
            cinnabar_commands::commands()
                .iter()
                .map(Profile::of)
                .collect()
        });
        cinnabar_commands::top_level_index(command)
            .and_then(|row| TOP_LEVEL.get(row))
            .copied()
            .unwrap_or_else(|| Self::of(command))
    }
}

/// How the proxy carries a command. The one place that classifies commands: `handle` acts on
/// it, and `queue` uses it to decide what may run inside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// QUIT: answered, then the connection closes.
    Quit,
    /// Answered by the proxy itself (PING, ECHO, SELECT, HELLO, CLIENT …, CLUSTER …).
    Local,
    /// Sent whole to the master of its slot (any master when it has no keys; PUBLISH to the
    /// pub/sub home, `crate::pubsub::HOME_SLOT`'s owner).
    Keyed,
    /// Multi-key: sent whole when the keys share a slot, else one request per key (`step`
    /// arguments per key) with the replies merged.
    Split { merge: Merge, step: usize },
    /// Sent to every master, the replies merged.
    FanOut(Merge),
    /// `SCAN`, one master after the other.
    Scan,
    /// BLPOP & co.: a private connection each, so they never stall the shared one.
    Blocking,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    Transaction,
    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: the connection enters subscribed mode.
    Subscribe,
    /// UNSUBSCRIBE & co. while not subscribed.
    Unsubscribe,
    /// `WAIT numreplicas timeout`, over every master.
    Wait,
    /// Sent to every master and every replica (`CONFIG`), the replies merged with the node
    /// names at hand (masters, each followed by its replicas).
    EveryNode(Merge),
    /// `SCRIPT KILL`, `FUNCTION KILL`: every master, each over a connection of its own.
    KillScripts,
    /// Not carried: a clear error naming the command, never a wrong answer.
    Unsupported,
}

pub(super) fn route(command: &Command) -> Route {
    match command.name() {
        "quit" => Route::Quit,
        "ping" | "echo" | "select" | "hello" | "auth" | "asking" | "readonly" | "readwrite"
        | "reset" => Route::Local,
        "client|id" | "client|setname" | "client|getname" | "client|info" | "client|list"
        | "client|setinfo" | "client|reply" => Route::Local,
        "slowlog|get" | "slowlog|len" | "slowlog|reset" => Route::Local,
        "cluster|slots"
        | "cluster|shards"
        | "cluster|nodes"
        | "cluster|info"
        | "cluster|myid"
        | "cluster|keyslot"
        | "cluster|countkeysinslot"
        | "cluster|getkeysinslot" => Route::Local,
        "multi" | "exec" | "discard" | "watch" | "unwatch" => Route::Transaction,
        "subscribe" | "psubscribe" | "ssubscribe" => Route::Subscribe,
        "unsubscribe" | "punsubscribe" | "sunsubscribe" => Route::Unsubscribe,
        "pubsub|channels" | "pubsub|shardchannels" => Route::FanOut(Merge::Union),
        "pubsub|numsub" | "pubsub|shardnumsub" => Route::FanOut(Merge::NumSub),
        "pubsub|numpat" => Route::FanOut(Merge::Most),
        "mget" => Route::Split {
            merge: Merge::Array,
            step: 1,
        },
        "del" | "unlink" | "exists" | "touch" => Route::Split {
            merge: Merge::Sum,
            step: 1,
        },
        "mset" => Route::Split {
            merge: Merge::AllOk,
            step: 2,
        },
        "dbsize" => Route::FanOut(Merge::Sum),
        "keys" => Route::FanOut(Merge::Concat),
        "flushdb" | "flushall" | "script|flush" => Route::FanOut(Merge::AllOk),
        "script|load" | "function|load" => Route::FanOut(Merge::First),
        "script|exists" => Route::FanOut(Merge::AllExist),
        "function|delete" | "function|flush" | "function|restore" => Route::FanOut(Merge::AllOk),
        "function|list" | "function|dump" => Route::Keyed,
        // Only `admin` may run these (the default deny list); they reach every node.
        "config|get" => Route::EveryNode(Merge::ConfigGet),
        "config|set" | "config|resetstat" => Route::EveryNode(Merge::NodeReport),
        "randomkey" => Route::FanOut(Merge::RandomNonNil),
        "lastsave" => Route::FanOut(Merge::Oldest),
        // Administration over every node (only `admin` may run these by default).
        "bgsave" | "bgrewriteaof" | "client|pause" | "client|unpause" => {
            Route::EveryNode(Merge::NodeReport)
        }
        "memory|stats"
        | "memory|doctor"
        | "memory|malloc-stats"
        | "module|list"
        | "latency|latest"
        | "latency|history"
        | "latency|doctor"
        | "latency|graph"
        | "latency|histogram" => Route::EveryNode(Merge::PerNode),
        "latency|reset" => Route::EveryNode(Merge::Sum),
        "memory|usage" => Route::Keyed,
        // A running script blocks its connection: the kill needs connections of its own.
        "script|kill" | "function|kill" => Route::KillScripts,
        // Users and roles are the proxy's; the category list is every node's, and the same.
        "acl|whoami" | "acl|users" | "acl|list" | "acl|getuser" | "acl|dryrun" | "acl|setuser"
        | "acl|deluser" => Route::Local,
        "acl|cat" => Route::Keyed,
        "info" => Route::FanOut(Merge::Info(0)),
        "scan" => Route::Scan,
        "wait" => Route::Wait,
        "waitaof" => Route::Unsupported,
        _ if command.is_blocking() => Route::Blocking,
        // Containers whose carried subcommands are listed above, administration, commands that
        // need per-node or per-connection state the proxy does not keep, and the rest of
        // pub/sub (PUBLISH and SPUBLISH are keyed commands, PUBSUB's carried subcommands are
        // listed above).
        _ if command.is_admin()
            || (command.is_pubsub() && !matches!(command.name(), "publish" | "spublish"))
            || matches!(
                command.request_policy(),
                RequestPolicy::AllNodes | RequestPolicy::AllShards
            )
            || matches!(
                command.command_name(),
                "client" | "cluster" | "reset" | "swapdb" | "move" | "function" | "script"
            ) =>
        {
            Route::Unsupported
        }
        _ => Route::Keyed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profiles_worked_out_once_are_what_each_command_would_get() {
        for command in cinnabar_commands::commands() {
            assert_eq!(
                Profile::get(command),
                Profile::of(command),
                "{}",
                command.name()
            );
            for sub in command.subcommands() {
                assert_eq!(Profile::get(sub), Profile::of(sub), "{}", sub.name());
            }
        }
        let get = cinnabar_commands::lookup(b"get").unwrap_or_else(|| panic!("GET"));
        assert_eq!(Profile::get(get).route, Route::Keyed);
        assert_eq!(Profile::get(get).category, Category::Read);
        let mset = cinnabar_commands::lookup(b"mset").unwrap_or_else(|| panic!("MSET"));
        assert!(matches!(
            Profile::get(mset).route,
            Route::Split { step: 2, .. }
        ));
    }
}
