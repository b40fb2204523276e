//! The applier: writes what the source sends — the RDB of a full sync, then the command
//! stream — to a Redis Cluster (or to a Cinnabar proxy, which presents itself as a one-node
//! cluster), and tells the caller how far the target has acknowledged.
//!
//! It must never report an offset as acknowledged before every write up to it has been
//! answered with success, never reorder two writes to one key, never flush the target unless
//! allowed, and never guess where a keyless or unsplittable cross-slot write should go: those
//! are typed refusals. It knows nothing of PSYNC or checkpoints (the replication client's job).
//!
//! # How it writes
//!
//! One blocking TCP connection per master, written from the caller's thread: commands are
//! pipelined, at most [`ApplyOptions::window`] commands (and [`ApplyOptions::window_bytes`]
//! bytes) in flight per connection; when a connection's window is full its replies are read
//! until half of it is free. Every reply is checked. A redirect (`MOVED`, `ASK`) or `TRYAGAIN`
//! stops the pipeline: every connection's in-flight replies are read first, then the map is
//! refreshed and the redirected writes are resent in their original order, so no older write
//! can land after a newer one to the same key.
//!
//! # Progress
//!
//! Every item carries the source offset it ends at ([`Applier::apply_command`],
//! [`Applier::mark_offset`] after an RDB); [`Applier::acknowledged_offset`] is the highest
//! offset with everything up to it answered OK. RDB keys carry no offset of their own: the
//! caller marks the RDB's `repl-offset` after its `End` event.
//!
//! # Routing decisions
//!
//! | command | where |
//! |---|---|
//! | one slot | the slot's master |
//! | `MSET`, `DEL`, `UNLINK`, `TOUCH`, `EXISTS` across slots | split per slot, in order (each part atomic, the whole not) |
//! | other cross-slot (`MSETNX`, `RENAME`, `SMOVE`, `*STORE` …) | refused: [`ApplyError::CrossSlotUnsplittable`] |
//! | `FLUSHALL`, `FLUSHDB` | every master if [`ApplyOptions::allow_flush`], else [`ApplyError::FlushRefused`] |
//! | `FUNCTION LOAD/DELETE/FLUSH/RESTORE`, `SCRIPT LOAD/FLUSH` | every master |
//! | `PUBLISH` | one master (the cluster bus spreads it) |
//! | `PING` | nowhere (acknowledged at once) |
//! | `SELECT n` | changes the source database, checked against [`ApplyOptions::db_map`] |
//! | other keyless (`SWAPDB`, `MULTI`, …) | refused: [`ApplyError::UnroutableCommand`] |
//!
//! [`Applier::apply_transaction`] sends a `MULTI … EXEC` group as one transaction when all its
//! commands share a slot; otherwise one by one in order, without atomicity.

mod error;
pub(crate) mod target;
mod values;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use cinnabar_commands::{CommandError, key_slot, resolve};
use cinnabar_resp::{RedirectKind, encode, parse_redirect};

pub use error::ApplyError;
use error::{quote_key, reply_text};
use target::{ConnectSettings, Link, Pending, SlotMap, cluster_slots, info_field, rdb_version_of};
use values::{CommandSink, KeyWriter};

use crate::error::SinkError;
use crate::event::{Event, EventSink};
use crate::reader::{ReaderOptions, ValuePieces};

/// What happens to a source database's keys and commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbRoute {
    /// Written to the cluster's only database.
    Merge,
    /// Dropped (still acknowledged, so progress continues).
    Skip,
}

/// How to reach and write to the target.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// `AUTH` user (ACL); `None` for the default user.
    pub user: Option<String>,
    /// `AUTH` password; `None` for no `AUTH`.
    pub password: Option<String>,
    /// Most commands in flight per master connection.
    pub window: usize,
    /// Most request bytes in flight per master connection (kept for resending on redirect).
    pub window_bytes: usize,
    /// Whether a source `FLUSHALL`/`FLUSHDB` may flush every target master.
    pub allow_flush: bool,
    /// Where each source database goes; a database not listed is an error. Default: db 0
    /// merged.
    pub db_map: BTreeMap<u64, DbRoute>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long one read or write may block.
    pub io_timeout: Duration,
    /// How many times one write may be sent (redirects and `TRYAGAIN` included).
    pub max_attempts: u32,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            user: None,
            password: None,
            window: 1024,
            window_bytes: 8 * 1024 * 1024,
            allow_flush: false,
            db_map: BTreeMap::from([(0, DbRoute::Merge)]),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            max_attempts: 50,
        }
    }
}

/// What the applier has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounters {
    /// RDB keys fully written and acknowledged.
    pub keys_applied: u64,
    /// Commands acknowledged by the target (each command of a transaction counts).
    pub commands_applied: u64,
    /// Request bytes written to the target (resends included).
    pub bytes_sent: u64,
    /// Writes resent after `MOVED`, `ASK` or `TRYAGAIN`.
    pub redirects: u64,
}

/// A run of writes ending at one source offset (or an RDB key, with none).
#[derive(Debug)]
struct Unit {
    offset: Option<u64>,
    /// Items sent and not yet answered.
    remaining: u64,
    /// Whether more items may still join it.
    open: bool,
    is_key: bool,
}

/// What one item's replies meant.
#[derive(Debug)]
enum Outcome {
    Ok,
    Redirect {
        kind: RedirectKind,
        slot: u16,
        addr: String,
    },
    TryAgain,
    Failed(String),
}

/// Pause before resending writes a node asked to try again (a slot migration in progress).
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(20);

/// Writes a source's data to a Redis Cluster. See the [module docs](self).
#[derive(Debug)]
pub struct Applier {
    options: ApplyOptions,
    settings: ConnectSettings,
    seed: String,
    links: Vec<Link>,
    by_addr: HashMap<String, usize>,
    map: SlotMap,
    /// Links that own slots, in map order.
    masters: Vec<usize>,
    target_rdb_version: u16,
    units: VecDeque<Unit>,
    /// The id of `units[0]`.
    first_unit: u64,
    acknowledged: Option<u64>,
    next_order: u64,
    /// Redirected items waiting to be resent.
    retries: Vec<(Pending, Outcome)>,
    /// The RDB key being written, and its unit.
    key: Option<(KeyWriter, u64)>,
    /// How the RDB's current database is routed.
    rdb_db: DbRoute,
    /// The source database of the command stream (after `SELECT`).
    command_db: u64,
    counters: ApplyCounters,
    failed: Option<String>,
}

impl Applier {
    /// Connects to the cluster that `seed` (`host:port` of any node or a Cinnabar proxy)
    /// belongs to: learns the slot map, opens one connection per master, and reads every
    /// master's version.
    ///
    /// # Errors
    /// A node that cannot be reached or authenticated, or that answers setup requests with
    /// errors.
    pub fn connect(seed: &str, options: ApplyOptions) -> Result<Self, ApplyError> {
        let settings = ConnectSettings {
            auth: options
                .password
                .clone()
                .map(|password| (options.user.clone(), password)),
            connect_timeout: options.connect_timeout,
            io_timeout: options.io_timeout,
        };
        let mut applier = Self {
            options,
            settings,
            seed: seed.to_owned(),
            links: Vec::new(),
            by_addr: HashMap::new(),
            map: SlotMap::empty(),
            masters: Vec::new(),
            target_rdb_version: 0,
            units: VecDeque::new(),
            first_unit: 0,
            acknowledged: None,
            next_order: 0,
            retries: Vec::new(),
            key: None,
            rdb_db: DbRoute::Merge,
            command_db: 0,
            counters: ApplyCounters::default(),
            failed: None,
        };
        let seed_link = applier.link_for(seed)?;
        applier.refresh_map(Some(seed_link))?;
        let mut version = u16::MAX;
        for &master in &applier.masters.clone() {
            let link = &mut applier.links[master];
            let redis_version =
                info_field(link, "server", "redis_version")?.ok_or_else(|| ApplyError::Setup {
                    node: link.addr.clone(),
                    command: "INFO server",
                    reply: "no redis_version field".to_owned(),
                })?;
            version = version.min(rdb_version_of(&redis_version));
        }
        applier.target_rdb_version = version;
        Ok(applier)
    }

    /// The masters' addresses, as the map names them.
    pub fn masters(&self) -> Vec<String> {
        self.masters
            .iter()
            .map(|&i| self.links[i].addr.clone())
            .collect()
    }

    /// The newest RDB version every target master reads (`RESTORE` payloads up to it work).
    pub fn target_rdb_version(&self) -> u16 {
        self.target_rdb_version
    }

    /// Reader options for an RDB of `source_rdb_version`: captured values are restored when
    /// the target reads that version; otherwise every value arrives as pieces and is written
    /// with ordinary commands.
    pub fn reader_options(&self, source_rdb_version: u32) -> ReaderOptions {
        let restorable = u32::from(self.target_rdb_version) >= source_rdb_version;
        ReaderOptions {
            raw_capture_limit: if restorable { 64 * 1024 } else { 0 },
            value_pieces: if restorable {
                ValuePieces::OnlyUncaptured
            } else {
                ValuePieces::Always
            },
            ..ReaderOptions::default()
        }
    }

    /// Fails unless every slot 0–16383 has a master.
    ///
    /// # Errors
    /// [`ApplyError::UncoveredSlots`] naming the first uncovered range.
    pub fn check_slot_coverage(&self) -> Result<(), ApplyError> {
        match self.map.first_uncovered() {
            Some((first, last)) => Err(ApplyError::UncoveredSlots { first, last }),
            None => Ok(()),
        }
    }

    /// Fails when the source's `used_memory` exceeds the sum of the target masters'
    /// `maxmemory` (any master without a limit makes the target unlimited).
    ///
    /// # Errors
    /// [`ApplyError::InsufficientCapacity`] with both numbers, or a setup error reading
    /// `INFO memory`.
    pub fn check_capacity(&mut self, source_used_memory: u64) -> Result<(), ApplyError> {
        self.flush()?;
        let mut total: u64 = 0;
        for &master in &self.masters.clone() {
            let link = &mut self.links[master];
            let maxmemory = info_field(link, "memory", "maxmemory")?
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if maxmemory == 0 {
                return Ok(());
            }
            total = total.saturating_add(maxmemory);
        }
        if source_used_memory > total {
            return Err(ApplyError::InsufficientCapacity {
                source_used_memory,
                target_maxmemory: total,
            });
        }
        Ok(())
    }

    /// Both checks a full sync needs first: [`check_slot_coverage`](Self::check_slot_coverage)
    /// and [`check_capacity`](Self::check_capacity).
    ///
    /// # Errors
    /// As those two.
    pub fn check_full_sync(&mut self, source_used_memory: u64) -> Result<(), ApplyError> {
        self.check_slot_coverage()?;
        self.check_capacity(source_used_memory)
    }

    /// The highest source offset up to which every write has been answered OK.
    pub fn acknowledged_offset(&self) -> Option<u64> {
        self.acknowledged
    }

    /// The counters so far.
    pub fn counters(&self) -> ApplyCounters {
        self.counters
    }

    /// Writes one RDB event. Keys become `RESTORE` or chunked commands (see `values`);
    /// functions are loaded on every master; `SelectDb` is checked against the db map.
    ///
    /// # Errors
    /// A refusal ([`ApplyError::UnmappedDb`], [`ApplyError::RestoreUnsupported`]), a rejected
    /// write, or a connection failure.
    pub fn apply_rdb_event(&mut self, event: Event) -> Result<(), ApplyError> {
        self.guarded(|this| this.rdb_event(event))
    }

    /// Records that everything submitted so far ends at source offset `offset` (after an RDB
    /// ends, or for source commands that write nothing, such as `PING`).
    pub fn mark_offset(&mut self, offset: u64) {
        let unit = self.open_unit(Some(offset), false);
        self.close_unit(unit);
    }

    /// Writes one source command ending at `source_offset`. See the module docs for routing.
    ///
    /// # Errors
    /// A refusal (nothing of the command was sent), a rejected write, or a failure.
    pub fn apply_command<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
        source_offset: u64,
    ) -> Result<(), ApplyError> {
        self.guarded(|this| {
            let plan = this.plan(args)?;
            let unit = this.open_unit(Some(source_offset), false);
            let sent = this.send_plan(unit, plan);
            this.close_unit(unit);
            sent
        })
    }

    /// Writes a source `MULTI … EXEC` group (without the `MULTI` and `EXEC`) ending at
    /// `source_offset`: as one transaction when every command has keys in one shared slot,
    /// else command by command in order (not atomic on the target).
    ///
    /// # Errors
    /// As [`apply_command`](Self::apply_command); a refusal of any command refuses the group
    /// before anything is sent.
    pub fn apply_transaction<A: AsRef<[u8]>>(
        &mut self,
        commands: &[Vec<A>],
        source_offset: u64,
    ) -> Result<(), ApplyError> {
        self.guarded(|this| {
            let mut plans = Vec::with_capacity(commands.len());
            for args in commands {
                plans.push(this.plan(args)?);
            }
            let shared_slot = plans.iter().try_fold(None, |shared, plan| match plan {
                Plan::Slot { slot, .. } if shared.is_none_or(|s| s == *slot) => Some(Some(*slot)),
                _ => None,
            });
            let unit = this.open_unit(Some(source_offset), false);
            let sent = match shared_slot.flatten() {
                Some(slot) if plans.len() > 1 => this.send_transaction(unit, slot, plans),
                _ => plans
                    .into_iter()
                    .try_for_each(|plan| this.send_plan(unit, plan)),
            };
            this.close_unit(unit);
            sent
        })
    }

    /// Sends everything buffered and waits until every write is answered.
    ///
    /// # Errors
    /// A rejected write or a failure.
    pub fn flush(&mut self) -> Result<(), ApplyError> {
        self.guarded(|this| {
            for i in 0..this.links.len() {
                this.drain(i, 0)?;
            }
            this.settle_retries()
        })
    }

    // ---- internals ----

    /// Runs `f` unless poisoned; poisons on any failure that is not a clean refusal.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ApplyError>,
    ) -> Result<T, ApplyError> {
        if let Some(first) = &self.failed {
            return Err(ApplyError::Poisoned {
                first: first.clone(),
            });
        }
        let result = f(self);
        if let Err(e) = &result
            && !is_refusal(e)
        {
            self.failed = Some(e.to_string());
        }
        result
    }

    fn rdb_event(&mut self, event: Event) -> Result<(), ApplyError> {
        match event {
            Event::SelectDb { db } => {
                self.rdb_db = self.route_db(db)?;
                Ok(())
            }
            Event::KeyStart(start) => {
                if self.key.is_some() {
                    return Err(ApplyError::UnexpectedEvent {
                        what: "a key started inside another key",
                    });
                }
                if self.rdb_db == DbRoute::Skip {
                    return Ok(());
                }
                // A key's own db wins over the last SelectDb (they agree in a valid RDB).
                if self.route_db(start.db)? == DbRoute::Skip {
                    return Ok(());
                }
                let unit = self.open_unit(None, true);
                self.key = Some((KeyWriter::new(start), unit));
                Ok(())
            }
            Event::KeyEnd { raw } => {
                let Some((writer, unit)) = self.key.take() else {
                    // A skipped database's key.
                    return Ok(());
                };
                let version = self.target_rdb_version;
                let slot = key_slot(writer.key());
                let mut sink = KeySink {
                    applier: self,
                    unit,
                    slot,
                    key: writer.key().to_vec(),
                };
                let ended = writer.end(raw, version, &mut sink);
                self.close_unit(unit);
                ended
            }
            Event::Function { code } => {
                let unit = self.open_unit(None, false);
                let sent = self.every_master(
                    unit,
                    "FUNCTION LOAD",
                    &[b"FUNCTION", b"LOAD", b"REPLACE", &code],
                );
                self.close_unit(unit);
                sent
            }
            Event::Header { .. }
            | Event::Aux { .. }
            | Event::ResizeDb { .. }
            | Event::SlotInfo { .. }
            | Event::End { .. } => Ok(()),
            piece => {
                let Some((mut writer, unit)) = self.key.take() else {
                    if self.rdb_db == DbRoute::Skip {
                        return Ok(());
                    }
                    return Err(ApplyError::UnexpectedEvent {
                        what: "a value piece outside a key",
                    });
                };
                let slot = key_slot(writer.key());
                let mut sink = KeySink {
                    applier: self,
                    unit,
                    slot,
                    key: writer.key().to_vec(),
                };
                let written = writer.piece(piece, &mut sink);
                self.key = Some((writer, unit));
                written
            }
        }
    }

    fn route_db(&self, db: u64) -> Result<DbRoute, ApplyError> {
        self.options
            .db_map
            .get(&db)
            .copied()
            .ok_or(ApplyError::UnmappedDb { db })
    }

    /// Decides where a command goes without sending anything, so refusals leave no trace.
    fn plan<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Plan, ApplyError> {
        let command = resolve(args).map_err(|e| unroutable(args, e))?;
        let name = command.name();
        let encoded = || {
            let mut bytes = Vec::new();
            encode_args(&mut bytes, args);
            bytes
        };
        let first_key = || {
            command
                .keys(args)
                .next()
                .and_then(|i| args.get(i))
                .map(|k| k.as_ref().to_vec())
        };
        if name == "select" {
            let db = args
                .get(1)
                .and_then(|a| std::str::from_utf8(a.as_ref()).ok())
                .and_then(|a| a.parse::<u64>().ok())
                .ok_or_else(|| ApplyError::UnroutableCommand {
                    command: "select".to_owned(),
                    why: "the database is not a number",
                })?;
            self.route_db(db)?;
            return Ok(Plan::Select { db });
        }
        if self.route_db(self.command_db)? == DbRoute::Skip {
            return Ok(Plan::Nothing);
        }
        match command.slot(args) {
            Ok(Some(slot)) => Ok(Plan::Slot {
                slot,
                command: name,
                key: first_key(),
                bytes: encoded(),
                commands: 1,
            }),
            Ok(None) => match name {
                "flushall" | "flushdb" if !self.options.allow_flush => {
                    Err(ApplyError::FlushRefused { command: name })
                }
                "flushall" | "flushdb" | "function|load" | "function|delete" | "function|flush"
                | "function|restore" | "script|load" | "script|flush" => Ok(Plan::EveryMaster {
                    command: name,
                    bytes: encoded(),
                }),
                "publish" => Ok(Plan::AnyMaster {
                    command: name,
                    bytes: encoded(),
                }),
                "ping" => Ok(Plan::Nothing),
                "multi" | "exec" | "discard" => Err(ApplyError::UnroutableCommand {
                    command: name.to_owned(),
                    why: "transactions are applied whole with apply_transaction",
                }),
                _ => Err(ApplyError::UnroutableCommand {
                    command: name.to_owned(),
                    why: "a keyless command the applier does not know where to send",
                }),
            },
            Err(CommandError::CrossSlot) => self.split(name, args),
            Err(e) => Err(unroutable(args, e)),
        }
    }

    /// Splits a cross-slot command into one command per slot (first-appearance order).
    fn split<A: AsRef<[u8]>>(&self, name: &'static str, args: &[A]) -> Result<Plan, ApplyError> {
        let stride = match name {
            "mset" => 2,
            "del" | "unlink" | "touch" | "exists" => 1,
            _ => return Err(ApplyError::CrossSlotUnsplittable { command: name }),
        };
        let mut groups: Vec<(u16, Vec<&[u8]>)> = Vec::new();
        for chunk in args[1..].chunks(stride) {
            let Some(key) = chunk.first() else { continue };
            let slot = key_slot(key.as_ref());
            let group = match groups.iter().position(|(s, _)| *s == slot) {
                Some(i) => &mut groups[i].1,
                None => {
                    groups.push((slot, vec![args[0].as_ref()]));
                    let last = groups.len() - 1;
                    &mut groups[last].1
                }
            };
            group.extend(chunk.iter().map(AsRef::as_ref));
        }
        let parts = groups
            .into_iter()
            .map(|(slot, part)| {
                let mut bytes = Vec::new();
                encode::command(&mut bytes, &part);
                Plan::Slot {
                    slot,
                    command: name,
                    key: part.get(1).map(|k| k.to_vec()),
                    bytes,
                    commands: 1,
                }
            })
            .collect();
        Ok(Plan::Several(parts))
    }

    fn send_plan(&mut self, unit: u64, plan: Plan) -> Result<(), ApplyError> {
        match plan {
            Plan::Nothing => Ok(()),
            Plan::Select { db } => {
                self.command_db = db;
                Ok(())
            }
            Plan::Slot {
                slot,
                command,
                key,
                bytes,
                commands,
            } => self.submit(unit, Some(slot), command, key, bytes, 1, commands, false),
            Plan::EveryMaster { command, bytes } => {
                self.submit_to_every_master(unit, command, &bytes)
            }
            Plan::AnyMaster { command, bytes } => {
                let master = self.owner(0)?;
                self.submit_to(master, unit, None, command, None, bytes, 1, 1, false)
            }
            Plan::Several(parts) => parts
                .into_iter()
                .try_for_each(|part| self.send_plan(unit, part)),
        }
    }

    fn send_transaction(
        &mut self,
        unit: u64,
        slot: u16,
        plans: Vec<Plan>,
    ) -> Result<(), ApplyError> {
        let mut bytes = Vec::new();
        encode::command(&mut bytes, &[b"MULTI"]);
        let mut first_key = None;
        let mut count = 0;
        for plan in plans {
            if let Plan::Slot {
                key, bytes: part, ..
            } = plan
            {
                bytes.extend_from_slice(&part);
                first_key = first_key.or(key);
                count += 1;
            }
        }
        encode::command(&mut bytes, &[b"EXEC"]);
        self.submit(
            unit,
            Some(slot),
            "multi",
            first_key,
            bytes,
            count + 2,
            u32::try_from(count).unwrap_or(u32::MAX),
            true,
        )
    }

    fn every_master(
        &mut self,
        unit: u64,
        command: &'static str,
        args: &[&[u8]],
    ) -> Result<(), ApplyError> {
        let mut bytes = Vec::new();
        encode::command(&mut bytes, args);
        self.submit_to_every_master(unit, command, &bytes)
    }

    /// One keyless command (already encoded) to every master, as part of `unit`.
    fn submit_to_every_master(
        &mut self,
        unit: u64,
        command: &'static str,
        bytes: &[u8],
    ) -> Result<(), ApplyError> {
        for master in self.masters.clone() {
            self.submit_to(
                master,
                unit,
                None,
                command,
                None,
                bytes.to_vec(),
                1,
                1,
                false,
            )?;
        }
        Ok(())
    }

    fn owner(&self, slot: u16) -> Result<usize, ApplyError> {
        self.map.owner(slot).ok_or(ApplyError::NoOwner { slot })
    }

    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        unit: u64,
        slot: Option<u16>,
        command: &'static str,
        key: Option<Vec<u8>>,
        bytes: Vec<u8>,
        replies: usize,
        commands: u32,
        transaction: bool,
    ) -> Result<(), ApplyError> {
        let link = match slot {
            Some(slot) => self.owner(slot)?,
            None => self.owner(0)?,
        };
        self.submit_to(
            link,
            unit,
            slot,
            command,
            key,
            bytes,
            replies,
            commands,
            transaction,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn submit_to(
        &mut self,
        link: usize,
        unit: u64,
        slot: Option<u16>,
        command: &'static str,
        key: Option<Vec<u8>>,
        bytes: Vec<u8>,
        replies: usize,
        commands: u32,
        transaction: bool,
    ) -> Result<(), ApplyError> {
        if let Some(u) = self.unit_mut(unit) {
            u.remaining += 1;
        }
        self.counters.bytes_sent += bytes.len() as u64;
        let order = self.next_order;
        self.next_order += 1;
        self.links[link].send(Pending {
            order,
            unit,
            bytes,
            replies,
            commands,
            slot,
            transaction,
            command,
            key,
            attempts: 1,
            asking: false,
            seen: 0,
            first_failure: None,
        })?;
        let l = &self.links[link];
        if l.in_flight.len() >= self.options.window
            || l.in_flight_bytes >= self.options.window_bytes
        {
            self.drain(link, self.options.window / 2)?;
            self.settle_retries()?;
        }
        Ok(())
    }

    /// Reads replies on `link` until at most `keep` items (and half the byte window) remain.
    fn drain(&mut self, link: usize, keep: usize) -> Result<(), ApplyError> {
        self.links[link].flush()?;
        loop {
            let l = &self.links[link];
            let over_bytes = keep > 0 && l.in_flight_bytes > self.options.window_bytes / 2;
            if l.in_flight.len() <= keep && !over_bytes {
                return Ok(());
            }
            self.read_one(link)?;
        }
    }

    /// Reads one reply on `link` and acts on it when it completes an item.
    fn read_one(&mut self, link: usize) -> Result<(), ApplyError> {
        let Some((item, outcome)) = take_reply(&mut self.links[link])? else {
            return Ok(());
        };
        match outcome {
            Outcome::Ok => {
                self.counters.commands_applied += u64::from(item.commands);
                self.item_done(item.unit);
                Ok(())
            }
            Outcome::Failed(reply) => Err(ApplyError::Rejected {
                node: self.links[link].addr.clone(),
                command: item.command,
                key: item.key.as_deref().map(quote_key),
                reply,
            }),
            redirect => {
                self.retries.push((item, redirect));
                Ok(())
            }
        }
    }

    /// Resends redirected writes until none is left: each round first reads every in-flight
    /// reply on every link (so nothing older is still on its way anywhere), then refreshes the
    /// map if a slot moved, then resends in original order.
    fn settle_retries(&mut self) -> Result<(), ApplyError> {
        loop {
            if self.retries.is_empty() {
                return Ok(());
            }
            for i in 0..self.links.len() {
                self.drain(i, 0)?;
            }
            let mut batch = std::mem::take(&mut self.retries);
            batch.sort_by_key(|(item, _)| item.order);
            let moved: Vec<(u16, String)> = batch
                .iter()
                .filter_map(|(_, o)| match o {
                    Outcome::Redirect {
                        kind: RedirectKind::Moved,
                        slot,
                        addr,
                    } => Some((*slot, addr.clone())),
                    _ => None,
                })
                .collect();
            if let Some((_, addr)) = moved.first() {
                let authority = self.link_for(addr)?;
                self.refresh_map(Some(authority))?;
                // The redirect is authoritative for its slot even if the map answer lags.
                for (slot, addr) in &moved {
                    let link = self.link_for(addr)?;
                    self.map.set(*slot, link);
                }
            }
            if batch.iter().any(|(_, o)| matches!(o, Outcome::TryAgain)) {
                std::thread::sleep(TRYAGAIN_PAUSE);
            }
            for (mut item, outcome) in batch {
                if item.attempts >= self.options.max_attempts {
                    return Err(ApplyError::RedirectLoop {
                        command: item.command,
                        key: item.key.as_deref().map(quote_key),
                        attempts: item.attempts,
                        reply: outcome_text(&outcome),
                    });
                }
                let (link, asking) = match &outcome {
                    Outcome::Redirect {
                        kind: RedirectKind::Ask,
                        addr,
                        ..
                    } => (self.link_for(addr)?, true),
                    Outcome::Redirect { slot, .. } => {
                        (self.owner(item.slot.unwrap_or(*slot))?, false)
                    }
                    _ => match item.slot {
                        Some(slot) => (self.owner(slot)?, false),
                        None => {
                            return Err(ApplyError::RedirectLoop {
                                command: item.command,
                                key: None,
                                attempts: item.attempts,
                                reply: outcome_text(&outcome),
                            });
                        }
                    },
                };
                item.attempts += 1;
                item.asking = asking;
                item.seen = 0;
                item.first_failure = None;
                self.counters.redirects += 1;
                self.counters.bytes_sent += item.bytes.len() as u64;
                self.links[link].send(item)?;
            }
            for i in 0..self.links.len() {
                self.drain(i, 0)?;
            }
        }
    }

    /// The link to `addr`, opened on first use.
    fn link_for(&mut self, addr: &str) -> Result<usize, ApplyError> {
        if let Some(&i) = self.by_addr.get(addr) {
            return Ok(i);
        }
        let link = Link::open(addr, &self.settings)?;
        self.links.push(link);
        let i = self.links.len() - 1;
        self.by_addr.insert(addr.to_owned(), i);
        Ok(i)
    }

    /// Relearns the slot map from `from` (idle), falling back to the seed.
    fn refresh_map(&mut self, from: Option<usize>) -> Result<(), ApplyError> {
        let source = match from {
            Some(i) => i,
            None => self.link_for(&self.seed.clone())?,
        };
        let ranges = cluster_slots(&mut self.links[source])?;
        let mut map = SlotMap::empty();
        let mut masters = Vec::new();
        for range in ranges {
            let link = self.link_for(&range.master)?;
            if !masters.contains(&link) {
                masters.push(link);
            }
            for slot in range.first..=range.last {
                map.set(slot, link);
            }
        }
        self.map = map;
        self.masters = masters;
        Ok(())
    }

    fn open_unit(&mut self, offset: Option<u64>, is_key: bool) -> u64 {
        self.units.push_back(Unit {
            offset,
            remaining: 0,
            open: true,
            is_key,
        });
        self.first_unit + self.units.len() as u64 - 1
    }

    fn unit_mut(&mut self, unit: u64) -> Option<&mut Unit> {
        let index = usize::try_from(unit.checked_sub(self.first_unit)?).ok()?;
        self.units.get_mut(index)
    }

    fn close_unit(&mut self, unit: u64) {
        if let Some(u) = self.unit_mut(unit) {
            u.open = false;
        }
        self.advance();
    }

    fn item_done(&mut self, unit: u64) {
        if let Some(u) = self.unit_mut(unit) {
            u.remaining = u.remaining.saturating_sub(1);
        }
        self.advance();
    }

    /// Retires finished units from the front: progress is only ever contiguous.
    fn advance(&mut self) {
        while let Some(front) = self.units.front() {
            if front.open || front.remaining > 0 {
                break;
            }
            if let Some(offset) = front.offset {
                self.acknowledged = Some(offset);
            }
            if front.is_key {
                self.counters.keys_applied += 1;
            }
            self.units.pop_front();
            self.first_unit += 1;
        }
    }
}

impl EventSink for Applier {
    fn event(&mut self, event: Event) -> Result<(), SinkError> {
        self.apply_rdb_event(event).map_err(Into::into)
    }
}

/// Where a command goes, decided before anything is sent.
#[derive(Debug)]
enum Plan {
    Nothing,
    Select {
        db: u64,
    },
    Slot {
        slot: u16,
        command: &'static str,
        key: Option<Vec<u8>>,
        bytes: Vec<u8>,
        commands: u32,
    },
    EveryMaster {
        command: &'static str,
        bytes: Vec<u8>,
    },
    AnyMaster {
        command: &'static str,
        bytes: Vec<u8>,
    },
    Several(Vec<Plan>),
}

/// Routes a key's commands by its slot, into its unit.
struct KeySink<'a> {
    applier: &'a mut Applier,
    unit: u64,
    slot: u16,
    key: Vec<u8>,
}

impl CommandSink for KeySink<'_> {
    fn command(&mut self, name: &'static str, args: &[&[u8]]) -> Result<(), ApplyError> {
        let mut bytes = Vec::new();
        encode::command(&mut bytes, args);
        self.applier.submit(
            self.unit,
            Some(self.slot),
            name,
            Some(self.key.clone()),
            bytes,
            1,
            1,
            false,
        )
    }
}

/// Reads one reply on `link`; returns the item it completes, with what its replies meant.
fn take_reply(link: &mut Link) -> Result<Option<(Pending, Outcome)>, ApplyError> {
    let len = link.next_reply()?;
    let Some(item) = link.in_flight.front_mut() else {
        return Err(ApplyError::Setup {
            node: link.addr.clone(),
            command: "(pipeline)",
            reply: "a reply nothing was waiting for".to_owned(),
        });
    };
    item.seen += 1;
    let is_exec = item.transaction && item.seen == item.expected();
    let reply = link.reply(len);
    let failure = if reply.first() == Some(&b'-') {
        Some(reply.to_vec())
    } else if is_exec {
        exec_failure(reply)
    } else {
        None
    };
    link.consume(len);
    if let Some(item) = link.in_flight.front_mut()
        && item.first_failure.is_none()
    {
        item.first_failure = failure;
    }
    let Some(item) = link.in_flight.front() else {
        return Ok(None);
    };
    if item.seen < item.expected() {
        return Ok(None);
    }
    let Some(item) = link.in_flight.pop_front() else {
        return Ok(None);
    };
    link.in_flight_bytes = link.in_flight_bytes.saturating_sub(item.bytes.len());
    let outcome = match &item.first_failure {
        None => Outcome::Ok,
        Some(reply) => match parse_redirect(reply) {
            Some(redirect) => Outcome::Redirect {
                kind: redirect.kind,
                slot: redirect.slot,
                addr: redirect_addr(redirect.addr, &link.addr),
            },
            None if reply.starts_with(b"-TRYAGAIN") => Outcome::TryAgain,
            None => Outcome::Failed(reply_text(reply)),
        },
    };
    Ok(Some((item, outcome)))
}

/// The first error inside an `EXEC` reply, as an error line; a null `EXEC` (aborted) too.
fn exec_failure(reply: &[u8]) -> Option<Vec<u8>> {
    use cinnabar_resp::{Limits, Value, parse_value};
    match parse_value(reply, &Limits::default()) {
        Ok(Some((Value::Array(items), _))) => items.into_iter().find_map(|v| match v {
            Value::Error(text) => {
                let mut line = b"-".to_vec();
                line.extend_from_slice(&text);
                Some(line)
            }
            _ => None,
        }),
        Ok(Some((Value::NullArray | Value::Null, _))) => Some(b"-EXEC aborted".to_vec()),
        _ => None,
    }
}

/// A redirect's address, with Redis's empty host ("same host as me") filled in.
fn redirect_addr(addr: &[u8], from: &str) -> String {
    let addr = String::from_utf8_lossy(addr).into_owned();
    match addr.strip_prefix(':') {
        Some(port) => {
            let host = from.rsplit_once(':').map_or("", |(h, _)| h);
            format!("{host}:{port}")
        }
        None => addr,
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok => "OK".to_owned(),
        Outcome::Redirect { kind, slot, addr } => format!("{kind:?} {slot} {addr}"),
        Outcome::TryAgain => "TRYAGAIN".to_owned(),
        Outcome::Failed(text) => text.clone(),
    }
}

fn is_refusal(error: &ApplyError) -> bool {
    matches!(
        error,
        ApplyError::FlushRefused { .. }
            | ApplyError::UnmappedDb { .. }
            | ApplyError::CrossSlotUnsplittable { .. }
            | ApplyError::UnroutableCommand { .. }
            | ApplyError::InsufficientCapacity { .. }
            | ApplyError::UncoveredSlots { .. }
    )
}

fn unroutable<A: AsRef<[u8]>>(args: &[A], error: CommandError) -> ApplyError {
    let name = args
        .first()
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .unwrap_or_default();
    ApplyError::UnroutableCommand {
        command: name,
        why: match error {
            CommandError::Empty => "an empty command",
            CommandError::UnknownCommand { .. } | CommandError::UnknownSubcommand { .. } => {
                "unknown to the command table"
            }
            CommandError::WrongArity { .. } => "wrong number of arguments",
            CommandError::CrossSlot => "keys in different slots",
        },
    }
}

fn encode_args<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    let refs: Vec<&[u8]> = args.iter().map(AsRef::as_ref).collect();
    encode::command(out, &refs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_without_host_means_the_answering_host() {
        assert_eq!(redirect_addr(b":7001", "10.1.2.3:7000"), "10.1.2.3:7001");
        assert_eq!(
            redirect_addr(b"10.9.9.9:7001", "10.1.2.3:7000"),
            "10.9.9.9:7001"
        );
    }

    #[test]
    fn errors_inside_exec_fail_the_transaction() {
        let reply = b"*2\r\n+OK\r\n-WRONGTYPE Operation against a key\r\n";
        assert_eq!(
            exec_failure(reply).as_deref(),
            Some(&b"-WRONGTYPE Operation against a key"[..])
        );
        assert_eq!(exec_failure(b"*1\r\n:1\r\n"), None);
        assert!(exec_failure(b"*-1\r\n").is_some());
    }
}
