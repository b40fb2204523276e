//! Fan-out and merge: requests that go to every master (or every node) and the merging of
//! their replies into the one reply Redis would give (SCAN has a module of its own, `scan`). Allocation is
//! fine here (administration and keyspace-wide commands), never on the keyed path.
//!
//! A fan-out only runs on a routing table that knows every master: one confirmed after the
//! last cluster change announced to the proxy and within `fan_out_max_staleness`
//! (`refresh::Freshness`). Otherwise the request waits, still in the client's input so its
//! order with the client's other requests holds, until a refresh asked for then completes (at
//! most `FAN_OUT_REFRESH_WAIT`, then it goes on with the table in hand). The worker never
//! blocks: the session just stops parsing until the wait resolves.

use std::time::Duration;

use super::{Pending, RequestArgs, Session, write_request};
use crate::info;
use crate::worker::Worker;

use cinnabar_commands::Args;
use cinnabar_resp::{Value, encode, parse_value};

/// The longest a fan-out waits for the refresh it asked for before going on with the routing
/// table in hand: long enough for `CLUSTER NODES` from a live node after a dead one timed out.
const FAN_OUT_REFRESH_WAIT: Duration = Duration::from_secs(2);

impl Session {
    /// Whether the request (a fan-out) may go now. When the routing table is too old, asks for
    /// a refresh and defers the request (it stays in the input) until the refresh is done or
    /// `FAN_OUT_REFRESH_WAIT` passed; handled again then, it goes whatever the table.
    pub(super) fn fresh_routes_or_wait(&mut self) -> bool {
        if std::mem::take(&mut self.topology_waited) {
            return true;
        }
        let freshness = std::sync::Arc::clone(&self.worker.freshness);
        if freshness.fresh_within(self.worker.config.fan_out_max_staleness) {
            return true;
        }
        let ask = freshness.ask();
        self.topology_wait = Some(Box::pin(async move {
            let _ = tokio::time::timeout(FAN_OUT_REFRESH_WAIT, freshness.attempted(ask)).await;
        }));
        self.deferred = true;
        false
    }

    /// Sends the request (or `replacement`) to every master; `merge` combines the replies.
    pub(super) fn fan_out(
        &mut self,
        args: &RequestArgs<'_>,
        replacement: Option<&[&[u8]]>,
        merge: Merge,
    ) {
        let routes = self.worker.routes();
        let masters = routes.masters().len();
        if masters == 0 {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
        }
        for master in 0..masters {
            let id = self.master_ticket(&routes, master, |request| match replacement {
                Some(parts) => encode::command(request, parts),
                None => write_request(args, request),
            });
            self.worker.dispatch(id);
            self.ids.push_back(id);
        }
        self.push_pending(Pending::Split {
            merge,
            parts: masters,
        });
    }

    /// A request about hash slot `slot` to its master in every cluster behind the endpoint
    /// (each has a slot of that number), the replies merged by `merge`; with one cluster, as
    /// any keyed request.
    pub(super) fn in_every_cluster(&mut self, slot: u16, args: &RequestArgs<'_>, merge: Merge) {
        let clusters = self.worker.routes().clusters();
        if clusters <= 1 {
            return self.forward(Some(slot), true, args);
        }
        for cluster in 0..clusters {
            let id = {
                let mut tickets = self.worker.tickets.borrow_mut();
                let id = self.new_ticket(
                    &mut tickets,
                    Some(crate::slotmap::virtual_slot(cluster, slot)),
                    true,
                );
                write_request(args, &mut tickets.get(id).request);
                id
            };
            self.worker.dispatch(id);
            self.ids.push_back(id);
        }
        self.push_pending(Pending::Split {
            merge,
            parts: clusters,
        });
    }

    /// `SCRIPT KILL`/`FUNCTION KILL` to every master over a private connection each (the
    /// shared one may be queued behind the very script to kill), the replies merged by
    /// `any_killed`.
    pub(super) fn kill_scripts(&mut self, args: &RequestArgs<'_>) {
        let masters = self.worker.routes().masters().to_vec();
        if masters.is_empty() {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
        }
        let mut request = Vec::new();
        write_request(args, &mut request);
        let preludes: Vec<_> = masters
            .iter()
            .map(|m| self.worker.prelude(m, self.flavor()))
            .collect();
        let timeout = self.worker.config.connect_timeout;
        self.reply_from_task(async move {
            let mut replies = Vec::with_capacity(masters.len());
            for (master, prelude) in masters.iter().zip(&preludes) {
                let reply = crate::backend::private_request(master, prelude, &request, timeout)
                    .await
                    .unwrap_or_else(|why| {
                        format!("-ERR cinnabar: {master}: {why}\r\n").into_bytes()
                    });
                replies.push(reply);
            }
            let mut out = Vec::new();
            any_killed(&mut out, replies.iter().map(Vec::as_slice));
            out
        });
    }

    /// The request to every master and replica, one ticket each, the replies merged by `merge`.
    pub(super) fn every_node(&mut self, args: &RequestArgs<'_>, merge: Merge) {
        let mut request = Vec::new();
        write_request(args, &mut request);
        self.every_node_request(&request, merge);
    }

    /// `request` (multibulk) to every master and replica, the replies merged by `merge`.
    pub(super) fn every_node_request(&mut self, request: &[u8], merge: Merge) {
        let routes = self.worker.routes();
        let mut nodes = 0;
        for master in 0..routes.masters().len() {
            let replicas = routes.replicas(master).len();
            for replica in 0..=replicas {
                let id = self.master_ticket(&routes, master, |out| out.extend_from_slice(request));
                match replica
                    .checked_sub(1)
                    .map(|r| routes.replicas(master)[r].clone())
                {
                    None => self.worker.dispatch(id),
                    Some(addr) => self.worker.send_to(&addr, id, true),
                }
                self.ids.push_back(id);
                nodes += 1;
            }
        }
        if nodes == 0 {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
        }
        self.push_pending(Pending::Split {
            merge,
            parts: nodes,
        });
    }
}

/// How the replies of a split request become the one reply the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Merge {
    /// `MGET`: each part answered `*1` + element; the client gets one array in key order.
    Array,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: integers added up.
    Sum,
    /// `MSET`: `+OK` when every part said `+OK`.
    AllOk,
    /// `KEYS`: the arrays of every master, concatenated.
    Concat,
    /// `SCRIPT LOAD`: every master answers the same; pass the first.
    First,
    /// `RANDOMKEY`: a random master among those that have a key, so every key can come back.
    RandomNonNil,
    /// EXEC of a relaxed transaction: every reply, errors included, as one array.
    ExecArray,
    /// `LASTSAVE`: the oldest, since that is when everything was last saved.
    Oldest,
    /// `MEMORY STATS|DOCTOR|MALLOC-STATS`, `LATENCY …`, `MODULE LIST` from every node: the one
    /// reply when every node gave the same, else `[node, reply, node, reply …]`.
    PerNode,

    /// `INFO [section…]`: the proxy's own sections plus the keyspace summed over masters; the
    /// mask says which sections were asked for (`info::sections`).
    Info(u16),
    /// `SCRIPT EXISTS`: a script exists when every master has it.
    AllExist,
    /// `CONFIG GET` from every node (masters, each followed by its replicas): one value per
    /// parameter when the nodes agree, else `addr=value` for each node; secrets left out.
    ConfigGet,
    /// `CONFIG SET`/`RESETSTAT` on every node: `+OK` when all agree, else one error naming
    /// every node that refused and what it said.
    NodeReport,
    /// `PUBSUB CHANNELS`/`SHARDCHANNELS`: every master's names, each once.
    Union,
    /// `PUBSUB NUMSUB`/`SHARDNUMSUB`: each channel's counts added up over masters, except a
    /// keyspace or keyevent channel, which the proxy subscribes on every master for each
    /// client (`crate::pubsub`): its count is the largest.
    NumSub,
    /// `PUBSUB NUMPAT`: the largest count. Every pattern through the proxy is on the home
    /// master, and the ones that may match notifications on every other master too, so a
    /// sum would count those once per master.
    Most,
}

/// Writes the one reply a split request owes, from its parts' replies.
pub(super) fn merge_into<'a>(
    out: &mut Vec<u8>,
    merge: Merge,
    parts: impl Iterator<Item = &'a [u8]> + Clone,
    worker: &Worker,
) {
    match merge {
        Merge::NodeReport => return node_report(out, parts, worker),
        Merge::PerNode => return per_node(out, parts, worker),
        Merge::ExecArray => {
            encode::array_header(out, parts.clone().count());
            return parts.for_each(|reply| out.extend_from_slice(reply));
        }
        Merge::ConfigGet => return config_get_report(out, parts, worker),
        _ => {}
    }
    if let Some(error) = parts.clone().find(|r| r.first() == Some(&b'-')) {
        out.extend_from_slice(error);
        return;
    }
    match merge {
        Merge::Array => {
            encode::array_header(out, parts.clone().count());
            for reply in parts {
                // Each part is `*1\r\n<element>`.
                out.extend_from_slice(reply.get(4..).unwrap_or_default());
            }
        }
        Merge::Sum => {
            let sum: i64 = parts.map(parse_integer).sum();
            encode::integer(out, sum);
        }
        Merge::AllOk => match parts.clone().find(|r| *r != b"+OK\r\n") {
            Some(odd) => out.extend_from_slice(odd),
            None => out.extend_from_slice(b"+OK\r\n"),
        },
        Merge::Concat => {
            let total: i64 = parts
                .clone()
                .map(|r| parse_integer(&r[..header_len(r)]))
                .sum();
            encode::array_header(out, usize::try_from(total).unwrap_or(0));
            for reply in parts {
                out.extend_from_slice(&reply[header_len(reply)..]);
            }
        }
        Merge::First => out.extend_from_slice(parts.clone().next().unwrap_or(b"$-1\r\n")),
        Merge::RandomNonNil => {
            let found: Vec<&[u8]> = parts
                .filter(|r| *r != b"$-1\r\n" && *r != b"_\r\n")
                .collect();
            let pick = (random_u64() % found.len().max(1) as u64) as usize;
            out.extend_from_slice(found.get(pick).map_or(b"$-1\r\n".as_slice(), |r| r));
        }
        Merge::Oldest => {
            let oldest = parts.map(parse_integer).min().unwrap_or(0);
            encode::integer(out, oldest);
        }
        Merge::AllExist => {
            let limits = cinnabar_resp::Limits::default();
            let mut all: Option<Vec<bool>> = None;
            for reply in parts {
                let Ok(Some((Value::Array(items), _))) = parse_value(reply, &limits) else {
                    return out.extend_from_slice(reply);
                };
                let here = items.iter().map(|v| matches!(v, Value::Integer(1)));
                all = Some(match all {
                    None => here.collect(),
                    Some(before) => before.iter().zip(here).map(|(a, b)| *a && b).collect(),
                });
            }
            let all = all.unwrap_or_default();
            encode::array_header(out, all.len());
            for exists in all {
                encode::integer(out, i64::from(exists));
            }
        }
        Merge::ConfigGet | Merge::NodeReport | Merge::PerNode | Merge::ExecArray => {}
        Merge::Union => {
            let mut names: Vec<Vec<u8>> = Vec::new();
            for reply in parts {
                for name in bulk_items(reply) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            encode::array_header(out, names.len());
            for name in names {
                encode::bulk(out, &name);
            }
        }
        Merge::NumSub => {
            let limits = cinnabar_resp::Limits::default();
            let mut counts: Vec<(Vec<u8>, i64)> = Vec::new();
            let mut map_reply = false;
            for reply in parts {
                let pairs: Vec<(Value, Value)> = match parse_value(reply, &limits) {
                    Ok(Some((Value::Array(items), _))) => {
                        let mut items = items.into_iter();
                        std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
                    }
                    Ok(Some((Value::Map(pairs), _))) => {
                        map_reply = true;
                        pairs
                    }
                    _ => return out.extend_from_slice(reply),
                };
                for pair in pairs {
                    let (Value::Bulk(channel), Value::Integer(count)) = pair else {
                        continue;
                    };
                    match counts.iter_mut().find(|(c, _)| *c == channel) {
                        Some((_, total)) if crate::pubsub::is_notification_channel(&channel) => {
                            *total = (*total).max(count);
                        }
                        Some((_, total)) => *total += count,
                        None => counts.push((channel, count)),
                    }
                }
            }
            if map_reply {
                out.extend_from_slice(format!("%{}\r\n", counts.len()).as_bytes());
            } else {
                encode::array_header(out, counts.len() * 2);
            }
            for (channel, count) in counts {
                encode::bulk(out, &channel);
                encode::integer(out, count);
            }
        }
        Merge::Most => {
            let most = parts.map(parse_integer).max().unwrap_or(0);
            encode::integer(out, most);
        }
        Merge::Info(sections) => {
            let backends: Vec<info::BackendInfo> = parts
                .map(|r| info::BackendInfo::parse(r.get(header_len(r)..).unwrap_or_default()))
                .collect();
            if let (Some(version), Ok(mut learned)) = (
                info::lowest_version(&backends),
                worker.all_stats.backend_version.lock(),
            ) {
                *learned = Some(version);
            }
            let commands = worker.all_stats.command_totals();
            let facts = info::ProxyFacts {
                announce: worker.announce,
                masters: backends.len(),
                totals: worker.all_stats.totals(),
                commands: &commands,
                max_clients: worker.config.max_clients,
                workers: worker.config.workers,
                config_file: worker.config.config_file.as_deref(),
            };
            info::write(out, &facts, &backends, sections);
        }
    }
}

/// The names of the nodes an every-node request went to, in ticket order (masters, each
/// followed by its replicas), from the current routes. Should the topology have changed in
/// between (the counts differ), nodes are named by position instead.
pub(super) fn every_node_names(worker: &Worker, count: usize) -> Vec<String> {
    let routes = worker.routes_in_use();
    let mut names = Vec::with_capacity(count);
    for (i, master) in routes.masters().iter().enumerate() {
        names.push(master.to_string());
        names.extend(routes.replicas(i).iter().map(ToString::to_string));
    }
    if names.len() != count {
        names = (1..=count).map(|i| format!("node {i}")).collect();
    }
    names
}

/// A node's one-line reply, prefixed with the node's name: `host:port: ERR …`.
pub(super) fn named_reply(name: &str, reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    format!("{name}: {}", text.trim_start_matches(['-', '+']).trim_end())
}

/// A command for every node (`CONFIG SET`, `BGSAVE`, `CLIENT PAUSE` …): the first node's
/// reply when every node accepted, or an error that says on how many nodes it took effect and
/// quotes each refusal with its node.
pub(super) fn node_report<'a>(
    out: &mut Vec<u8>,
    parts: impl Iterator<Item = &'a [u8]> + Clone,
    worker: &Worker,
) {
    let count = parts.clone().count();
    let names = every_node_names(worker, count);
    let refusals: Vec<String> = parts
        .clone()
        .zip(&names)
        .filter(|(reply, _)| reply.first() == Some(&b'-'))
        .map(|(reply, name)| named_reply(name, reply))
        .collect();
    if refusals.is_empty() {
        return out.extend_from_slice(parts.clone().next().unwrap_or(b"+OK\r\n"));
    }
    let message = format!(
        "ERR cinnabar: applied on {} of {count} nodes; refused by {}",
        count - refusals.len(),
        refusals.join("; ")
    );
    encode::error(out, message.as_bytes());
}

/// Every node's reply, named (see [`Merge::PerNode`]).
fn per_node<'a>(out: &mut Vec<u8>, parts: impl Iterator<Item = &'a [u8]> + Clone, worker: &Worker) {
    let mut replies = parts.clone();
    if let Some(first) = replies.next()
        && replies.all(|r| r == first)
    {
        return out.extend_from_slice(first);
    }
    let count = parts.clone().count();
    let names = every_node_names(worker, count);
    encode::array_header(out, count * 2);
    for (reply, name) in parts.zip(&names) {
        encode::bulk(out, name.as_bytes());
        out.extend_from_slice(reply);
    }
}

/// `SCRIPT KILL`/`FUNCTION KILL` over every master: `+OK` when any stopped a script, NOTBUSY
/// only when none was busy, another error (UNKILLABLE) as it came.
fn any_killed<'a>(out: &mut Vec<u8>, parts: impl Iterator<Item = &'a [u8]> + Clone) {
    if parts.clone().any(|r| r.first() == Some(&b'+')) {
        return out.extend_from_slice(b"+OK\r\n");
    }
    let other = parts.clone().find(|r| !r.starts_with(b"-NOTBUSY"));
    let first = parts.clone().next();
    out.extend_from_slice(
        other
            .or(first)
            .unwrap_or(b"-NOTBUSY No scripts in execution right now.\r\n"),
    );
}

/// A random number, for choices that must not favour one node (`RANDOMKEY`): the standard
/// library's per-instance hasher keys, without a dependency.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `CONFIG GET` over every node: each parameter once, with its value when every node agrees,
/// else `addr=value` for each node in one string; secret parameters never appear. A node that
/// refused makes the whole reply its refusal, named.
pub(super) fn config_get_report<'a>(
    out: &mut Vec<u8>,
    parts: impl Iterator<Item = &'a [u8]> + Clone,
    worker: &Worker,
) {
    let count = parts.clone().count();
    let names = every_node_names(worker, count);
    let limits = cinnabar_resp::Limits::default();
    let mut map_reply = false;
    // Parameter → `(node, value)` for each node, in first-seen parameter order.
    type NodeValues = Vec<(usize, Vec<u8>)>;
    let mut params: Vec<(Vec<u8>, NodeValues)> = Vec::new();
    for (node, reply) in parts.enumerate() {
        if reply.first() == Some(&b'-') {
            return encode::error(out, named_reply(&names[node], reply).as_bytes());
        }
        let Ok(Some((value, _))) = parse_value(reply, &limits) else {
            return out.extend_from_slice(reply);
        };
        let pairs: Vec<(&Value, &Value)> = match &value {
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|p| Some((p.first()?, p.get(1)?)))
                .collect(),
            Value::Map(pairs) => {
                map_reply = true;
                pairs.iter().map(|(k, v)| (k, v)).collect()
            }
            _ => return out.extend_from_slice(reply),
        };
        for (name, v) in pairs {
            let (Value::Bulk(name), Value::Bulk(v)) = (name, v) else {
                continue;
            };
            if is_secret_parameter(name) {
                continue;
            }
            match params.iter_mut().find(|(n, _)| n.as_slice() == *name) {
                Some((_, values)) => values.push((node, v.to_vec())),
                None => params.push((name.to_vec(), vec![(node, v.to_vec())])),
            }
        }
    }
    if map_reply {
        out.extend_from_slice(format!("%{}\r\n", params.len()).as_bytes());
    } else {
        encode::array_header(out, params.len() * 2);
    }
    for (name, values) in params {
        encode::bulk(out, &name);
        let agreed = values.len() == count && values.windows(2).all(|w| w[0].1 == w[1].1);
        if agreed {
            encode::bulk(out, &values[0].1);
        } else {
            let per_node: Vec<String> = values
                .iter()
                .map(|(node, v)| format!("{}={}", names[*node], String::from_utf8_lossy(v)))
                .collect();
            encode::bulk(out, per_node.join(" ").as_bytes());
        }
    }
}

/// Configuration parameters whose values are secrets of the backend, never shown to clients.
pub(super) fn is_secret_parameter(name: &[u8]) -> bool {
    const SECRETS: [&[u8]; 5] = [
        b"requirepass",
        b"masterauth",
        b"masteruser",
        b"tls-key-file-pass",
        b"tls-client-key-file-pass",
    ];
    SECRETS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// Length of a reply's first line including its CRLF (`*3\r\n` → 4).
pub(super) fn header_len(reply: &[u8]) -> usize {
    reply
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(reply.len(), |p| p + 2)
}

/// The bulk strings of an array reply (`PUBSUB CHANNELS`), in order.
fn bulk_items(reply: &[u8]) -> Vec<Vec<u8>> {
    match parse_value(reply, &cinnabar_resp::Limits::default()) {
        Ok(Some((Value::Array(items) | Value::Set(items), _))) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Bulk(name) => Some(name.to_vec()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `:42\r\n` → 42 (0 for anything else; error replies were handled before).
pub(super) fn parse_integer(reply: &[u8]) -> i64 {
    let digits = reply
        .get(1..reply.len().saturating_sub(2))
        .unwrap_or_default();
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
