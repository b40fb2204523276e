//! SCAN through the proxy: one cursor over every master, which survives topology changes.
//!
//! SCAN walks the slots, not the masters, so it survives scale-outs, scale-ins, migrations
//! and failovers mid-scan. The cursor names a *run*: slots `start..=end`, all served by one
//! master (named by an 8-bit `tag` of its address), and that master's own SCAN cursor. Each
//! step scans the master and keeps only the keys of the run's slots (the others come with
//! their own run). When the master's cursor comes back 0, one more step asks the master
//! itself (`CLUSTER NODES`, its `myself` line) whether it still owns every slot of the run
//! with none half-migrated: the run is then complete, and the next starts at `end + 1`;
//! otherwise the next run starts at the first slot that moved or is moving. A step that finds
//! the run's first slot served by another master (tag differs: a failover, a migration)
//! starts the run again on it from cursor 0, and a run whose later slots left is cut short.
//! So every key present for the whole scan is returned (keys seen before a restart may come
//! again: duplicates, as Redis allows), under MATCH, COUNT and TYPE alike, which pass through.
//! The price: a master holding several runs is scanned once per run, and a master cursor
//! must fit in 28 bits (a node with more than ~2^27 keys gets a clear error).
//!
//! Slots are virtual slots (`crate::slotmap`): with several clusters behind the endpoint the
//! scan walks the first cluster's slots, then the next cluster's, and a key is kept by the run
//! of its own cluster's slot.

use super::{Pending, RequestArgs, Session};
use crate::keyroute::KeyRouter;
use crate::slotmap::{SLOT_BITS, SlotMap, cluster_of_slot, hash_slot, virtual_slot};
use crate::worker::Worker;
use cinnabar_cluster::{NodeAddr, SlotMigration};
use cinnabar_commands::Args;
use cinnabar_resp::{Value, encode, parse_value};

impl Session {
    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`: one step of a run of slots (see the module
    /// documentation): a SCAN on the run's master, or the check that ends the run.
    pub(super) fn scan(&mut self, args: &RequestArgs<'_>) {
        let routes = self.worker.routes();
        let cursor = std::str::from_utf8(args.get(1).unwrap_or_default())
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
            .and_then(ScanCursor::decode);
        let Some(cursor) = cursor else {
            return self.local_error(b"ERR invalid cursor");
        };
        let (master, run, step) = match plan_scan_step(&routes, cursor) {
            ScanStep::Done => return self.local(b"*2\r\n$1\r\n0\r\n*0\r\n"),
            ScanStep::NoMaster => {
                return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
            }
            ScanStep::Scan {
                master,
                run,
                backend,
            } => (master, run, Some(backend)),
            // A group's master owns everything and has no `CLUSTER NODES`: its own cursor
            // came back 0, so the scan is complete.
            ScanStep::Check { .. } if routes.is_group() => {
                return self.local(b"*2\r\n$1\r\n0\r\n*0\r\n");
            }
            ScanStep::Check { master, run } => (master, run, None),
        };
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let id = self.new_ticket(&mut tickets, Some(run.start), false);
            let request = &mut tickets.get(id).request;
            match step {
                Some(backend) => {
                    encode::array_header(request, args.len());
                    encode::bulk(request, b"SCAN");
                    encode::bulk(request, backend.to_string().as_bytes());
                    for i in 2..args.len() {
                        encode::bulk(request, args.get(i).unwrap_or_default());
                    }
                }
                None => encode::command(request, &[b"CLUSTER", b"NODES"]),
            }
            id
        };
        // To that very node, not by slot: the cursor means something on it alone.
        self.worker.send_to(&master, id, false);
        self.ids.push_back(id);
        self.push_pending(match step {
            Some(_) => Pending::Scan(run),
            None => Pending::ScanCheck(run),
        });
    }
}

/// The run of slots one SCAN step covers: `start..=end`, served by the master whose address
/// has tag `tag` when the run began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ScanRun {
    start: u16,
    end: u16,
    tag: u8,
}

/// A proxy SCAN cursor: bits 0–15 the run's first (virtual) slot, 16–29 the hash slot of its
/// last (in the same cluster), 30–35 its master's tag, 36–63 the master's own cursor. With
/// master cursor 0 it means "start a run at `start`" (the other fields ignored; written with
/// the last slot's bits all set so it is never 0), so the client's first cursor, 0, starts at
/// slot 0; the master cursor `CHECK` means "the master is scanned, check the run".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScanCursor {
    run: ScanRun,
    backend: u64,
}

const START_BITS: u32 = 16;
const TAG_BITS: u32 = 6;
const TAG_SHIFT: u32 = START_BITS + SLOT_BITS;
const BACKEND_SHIFT: u32 = TAG_SHIFT + TAG_BITS;
/// Master cursors must be below this (the last value is `CHECK`).
const BACKEND_LIMIT: u64 = 1 << (64 - BACKEND_SHIFT);
const CHECK: u64 = BACKEND_LIMIT - 1;
/// The end field's bits all set: what marks a cursor that starts a run.
const END_MARK: u16 = (1 << SLOT_BITS) - 1;

impl ScanCursor {
    fn starting_at(start: u16) -> Self {
        Self {
            run: ScanRun {
                start,
                end: start,
                tag: 0,
            },
            backend: 0,
        }
    }

    fn encode(self) -> u64 {
        let ScanRun { start, end, tag } = self.run;
        if self.backend == 0 {
            // Never 0, which would tell the client the scan is complete, even for slot 0.
            return u64::from(start) | u64::from(END_MARK) << START_BITS;
        }
        u64::from(start)
            | u64::from(hash_slot(end)) << START_BITS
            | u64::from(tag) << TAG_SHIFT
            | self.backend << BACKEND_SHIFT
    }

    /// `None` for a cursor no step produced (a run that ends before it starts, a start of a run
    /// written differently).
    fn decode(cursor: u64) -> Option<Self> {
        let start = (cursor & ((1u64 << START_BITS) - 1)) as u16;
        let end = ((cursor >> START_BITS) & ((1u64 << SLOT_BITS) - 1)) as u16;
        let run = ScanRun {
            start,
            end: virtual_slot(cluster_of_slot(start), end),
            tag: ((cursor >> TAG_SHIFT) & ((1u64 << TAG_BITS) - 1)) as u8,
        };
        let backend = cursor >> BACKEND_SHIFT;
        if backend == 0 {
            let written = end == END_MARK && run.tag == 0;
            return (cursor == 0 || written).then_some(Self::starting_at(run.start));
        }
        (run.start <= run.end).then_some(Self { run, backend })
    }
}

/// A short fingerprint of a master's address, so a cursor notices that its run moved to
/// another node (FNV-1a, folded: the same in every proxy process, unlike std's hasher).
fn node_tag(addr: &NodeAddr) -> u8 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in addr
        .host
        .bytes()
        .chain([b':'])
        .chain(addr.port.to_be_bytes())
    {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash.to_be_bytes().iter().fold(0, |tag, b| tag ^ b) & ((1 << TAG_BITS) - 1)
}

/// What one SCAN step does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ScanStep {
    /// `SCAN backend …` on `master`, keeping the keys of `run`.
    Scan {
        master: NodeAddr,
        run: ScanRun,
        backend: u64,
    },
    /// `CLUSTER NODES` on `master`, to end `run`.
    Check { master: NodeAddr, run: ScanRun },
    /// No served slot is left: the scan is complete.
    Done,
    /// No slot has a master.
    NoMaster,
}

/// The step `cursor` asks for, on `routes`.
fn plan_scan_step(routes: &SlotMap, cursor: ScanCursor) -> ScanStep {
    let ScanCursor { run, backend } = cursor;
    if backend != 0 {
        let owner = routes.owner(run.start);
        if let Some(index) = owner.filter(|i| node_tag(&routes.masters()[*i]) == run.tag) {
            // Slots that left the run's master since it began come with runs of their own.
            let run = ScanRun {
                end: run.end.min(run_end(routes, index, run.start)),
                ..run
            };
            let master = routes.masters()[index].clone();
            return if backend == CHECK {
                ScanStep::Check { master, run }
            } else {
                ScanStep::Scan {
                    master,
                    run,
                    backend,
                }
            };
        }
        // The run's first slot has another master now: its cursor means nothing there, so the
        // run starts again on it (duplicates, never gaps).
    }
    let Some(start) = (run.start..=routes.last_slot()).find(|s| routes.owner(*s).is_some()) else {
        return if routes.masters().is_empty() {
            ScanStep::NoMaster
        } else {
            ScanStep::Done
        };
    };
    let Some(index) = routes.owner(start) else {
        return ScanStep::NoMaster;
    };
    let master = routes.masters()[index].clone();
    ScanStep::Scan {
        run: ScanRun {
            start,
            end: run_end(routes, index, start),
            tag: node_tag(&master),
        },
        master,
        backend: 0,
    }
}

/// The last slot of the unbroken run of master `index` that starts at `start`.
fn run_end(routes: &SlotMap, index: usize, start: u16) -> u16 {
    let mut end = start;
    while end < routes.last_slot() && routes.owner(end + 1) == Some(index) {
        end += 1;
    }
    end
}

/// Turns one master's `SCAN` reply into the proxy's: only the keys of `run`, and a cursor
/// that continues the run (or checks it, once the master's cursor came back 0).
pub(super) fn rewrite_scan_reply(
    out: &mut Vec<u8>,
    reply: &[u8],
    run: ScanRun,
    router: &KeyRouter,
) {
    let limits = cinnabar_resp::Limits::default();
    let parsed = match parse_value(reply, &limits) {
        Ok(Some((Value::Array(parts), _))) => parts,
        // An error (or anything unexpected) passes through as it is.
        _ => return out.extend_from_slice(reply),
    };
    let (Some(Value::Bulk(cursor)), Some(Value::Array(keys))) = (parsed.first(), parsed.get(1))
    else {
        return out.extend_from_slice(reply);
    };
    let backend = std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok());
    let Some(backend) = backend.filter(|c| *c < CHECK) else {
        return out.extend_from_slice(
            b"-ERR cinnabar: a backend returned a SCAN cursor the proxy cannot carry\r\n",
        );
    };
    let next = ScanCursor {
        run,
        backend: if backend == 0 { CHECK } else { backend },
    };
    let in_run = |key: &&Value| match key {
        Value::Bulk(key) => (run.start..=run.end).contains(&router.slot(key)),
        _ => false,
    };
    // A group's one master holds every key: when its own scan ends, the whole scan does.
    let next = if backend == 0 && router.is_single() {
        0
    } else {
        next.encode()
    };
    out.extend_from_slice(b"*2\r\n");
    encode::bulk(out, next.to_string().as_bytes());
    encode::array_header(out, keys.iter().filter(in_run).count());
    for key in keys.iter().filter(in_run) {
        if let Value::Bulk(key) = key {
            encode::bulk(out, key);
        }
    }
}

/// Ends a run from its master's own `CLUSTER NODES`: no keys, and a cursor to the next run,
/// which starts after the run when the master still owns all of it with nothing in migration,
/// else at the first slot that moved or is moving (its keys may have been missed here).
pub(super) fn end_scan_run(out: &mut Vec<u8>, reply: &[u8], run: ScanRun, worker: &Worker) {
    let limits = cinnabar_resp::Limits::default();
    let text = match parse_value(reply, &limits) {
        Ok(Some((Value::Bulk(text) | Value::Verbatim { text, .. }, _))) => text,
        _ => return out.extend_from_slice(reply),
    };
    let topology = cinnabar_cluster::parse_cluster_nodes(&String::from_utf8_lossy(&text));
    let Some(me) = topology
        .ok()
        .and_then(|t| t.nodes.into_iter().find(|n| n.flags.myself))
    else {
        return out.extend_from_slice(
            b"-ERR cinnabar: a backend answered CLUSTER NODES without itself in it\r\n",
        );
    };
    let unsettled = (run.start..=run.end).find(|slot| {
        // The node knows its own hash slots.
        let slot = hash_slot(*slot);
        let owned = me.slots.iter().any(|r| r.contains(slot));
        let moving = me.migrations.iter().any(|m| match m {
            SlotMigration::Migrating { slot: s, .. } | SlotMigration::Importing { slot: s, .. } => {
                *s == slot
            }
        });
        !owned || moving
    });
    let next = match unsettled {
        Some(slot) => {
            // The routing table may not know yet: the next run should start on the new owner.
            worker.freshness.ask();
            ScanCursor::starting_at(slot).encode()
        }
        None if run.end >= worker.routes_in_use().last_slot() => 0,
        None => ScanCursor::starting_at(run.end + 1).encode(),
    };
    out.extend_from_slice(b"*2\r\n");
    encode::bulk(out, next.to_string().as_bytes());
    out.extend_from_slice(b"*0\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use cinnabar_cluster::parse_cluster_nodes;

    /// Two masters: `a` serves 0–99 and 200–16383, `b` serves 100–199.
    fn routes(a: &str, b: &str) -> SlotMap {
        let text = format!(
            "{a_id} {a}@1 myself,master - 0 0 1 connected 0-99 200-16383\n\
             {b_id} {b}@1 master - 0 0 2 connected 100-199\n",
            a_id = "a".repeat(40),
            b_id = "b".repeat(40),
        );
        SlotMap::from_topology(&parse_cluster_nodes(&text).unwrap(), 1)
    }

    fn addr(text: &str) -> NodeAddr {
        let (host, port) = text.split_once(':').unwrap();
        NodeAddr::new(host, port.parse().unwrap())
    }

    #[test]
    fn cursors_survive_the_round_trip_and_a_restart_is_never_zero() {
        let resume = ScanCursor {
            run: ScanRun {
                start: 100,
                end: 16383,
                tag: 0x2b,
            },
            backend: 12345,
        };
        assert_eq!(ScanCursor::decode(resume.encode()), Some(resume));
        // A run in the second cluster behind the endpoint (virtual slots above 16383).
        let second = ScanCursor {
            run: ScanRun {
                start: virtual_slot(1, 7),
                end: virtual_slot(1, 16383),
                tag: 0x3f,
            },
            backend: 99,
        };
        assert_eq!(ScanCursor::decode(second.encode()), Some(second));
        assert_eq!(
            ScanCursor::decode(ScanCursor::starting_at(virtual_slot(3, 0)).encode()),
            Some(ScanCursor::starting_at(virtual_slot(3, 0)))
        );
        let check = ScanCursor {
            backend: CHECK,
            ..resume
        };
        assert_eq!(ScanCursor::decode(check.encode()), Some(check));
        let restart = ScanCursor::starting_at(0);
        assert_ne!(restart.encode(), 0, "0 would end the client's scan");
        assert_eq!(ScanCursor::decode(restart.encode()), Some(restart));
        assert_eq!(ScanCursor::decode(0), Some(restart));
        // Not written by any step: a run ending before it starts, a start written oddly.
        assert_eq!(
            ScanCursor::decode(5 | 3 << SLOT_BITS | 1 << BACKEND_SHIFT),
            None
        );
        assert_eq!(ScanCursor::decode(1023), None);
    }

    #[test]
    fn a_scan_walks_runs_of_slots_in_order() {
        let routes = routes("10.0.0.1:7000", "10.0.0.2:7000");
        let (a, b) = (addr("10.0.0.1:7000"), addr("10.0.0.2:7000"));
        let first = plan_scan_step(&routes, ScanCursor::starting_at(0));
        let run = ScanRun {
            start: 0,
            end: 99,
            tag: node_tag(&a),
        };
        assert_eq!(
            first,
            ScanStep::Scan {
                master: a.clone(),
                run,
                backend: 0
            }
        );
        let second = plan_scan_step(&routes, ScanCursor::starting_at(100));
        assert!(
            matches!(&second, ScanStep::Scan { master, run, .. } if *master == b && run.end == 199)
        );
        let check = plan_scan_step(
            &routes,
            ScanCursor {
                run,
                backend: CHECK,
            },
        );
        assert_eq!(check, ScanStep::Check { master: a, run });
    }

    #[test]
    fn a_run_whose_master_changed_starts_again_and_one_that_shrank_is_cut() {
        let before = routes("10.0.0.1:7000", "10.0.0.2:7000");
        let a = addr("10.0.0.1:7000");
        let run = ScanRun {
            start: 200,
            end: 16383,
            tag: node_tag(&a),
        };
        // A failover: the same slots, another node. The cursor means nothing there.
        let after = routes("10.0.0.3:7000", "10.0.0.2:7000");
        let step = plan_scan_step(&after, ScanCursor { run, backend: 77 });
        assert!(
            matches!(&step, ScanStep::Scan { master, backend: 0, run: r } if master.host == "10.0.0.3" && r.start == 200),
            "{step:?}"
        );
        // Slots 0–99 moved from `a` to `b`: a run of `a` at 0 starts again on `b`.
        let early = ScanRun {
            start: 0,
            end: 99,
            tag: node_tag(&a),
        };
        let moved = routes("10.0.0.2:7000", "10.0.0.1:7000");
        let step = plan_scan_step(
            &moved,
            ScanCursor {
                run: early,
                backend: 5,
            },
        );
        assert!(
            matches!(&step, ScanStep::Scan { backend: 0, .. }),
            "{step:?}"
        );
        // The run's master lost its later slots: same master, same cursor, shorter run.
        let wide = ScanRun {
            start: 0,
            end: 16383,
            tag: node_tag(&a),
        };
        let step = plan_scan_step(
            &before,
            ScanCursor {
                run: wide,
                backend: 9,
            },
        );
        assert_eq!(
            step,
            ScanStep::Scan {
                master: a,
                run: ScanRun { end: 99, ..wide },
                backend: 9
            }
        );
    }

    #[test]
    fn a_scan_reply_keeps_only_the_keys_of_its_run() {
        // `foo` is in slot 12182, `bar` in 5061.
        let run = ScanRun {
            start: 5000,
            end: 6000,
            tag: 7,
        };
        let reply = b"*2\r\n$2\r\n17\r\n*2\r\n$3\r\nfoo\r\n$3\r\nbar\r\n";
        let mut out = Vec::new();
        rewrite_scan_reply(&mut out, reply, run, &KeyRouter::default());
        let next = ScanCursor { run, backend: 17 }.encode();
        let want = format!(
            "*2\r\n${}\r\n{next}\r\n*1\r\n$3\r\nbar\r\n",
            next.to_string().len()
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
        // The master is done: the next step checks the run.
        let mut out = Vec::new();
        rewrite_scan_reply(
            &mut out,
            b"*2\r\n$1\r\n0\r\n*0\r\n",
            run,
            &KeyRouter::default(),
        );
        let check = ScanCursor {
            run,
            backend: CHECK,
        }
        .encode();
        assert!(String::from_utf8_lossy(&out).contains(&check.to_string()));
        // Errors pass through.
        let mut out = Vec::new();
        rewrite_scan_reply(&mut out, b"-ERR nope\r\n", run, &KeyRouter::default());
        assert_eq!(out, b"-ERR nope\r\n");
    }
}
