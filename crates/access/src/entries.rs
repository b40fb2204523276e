//! A dense number for every entry of the command table (commands and subcommands, each
//! server's variant separately), so permissions are a bitset indexed by that number instead
//! of a map keyed by name.
//!
//! Must never allocate after the first use: [`Entries::id_of`] finds an entry's number from its
//! address (every `Command` lives in the table's statics) with a few comparisons.

use std::sync::LazyLock;

use cinnabar_commands::{Command, commands};

/// Where a command's Pub/Sub channels are among its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channels {
    /// The command names no channel.
    None,
    /// `PUBLISH channel message`, `SPUBLISH channel message`.
    First,
    /// `SUBSCRIBE channel …`, `SSUBSCRIBE channel …`.
    All,
    /// `PSUBSCRIBE pattern …`: patterns, compared literally with the permitted patterns.
    AllPatterns,
}

impl Channels {
    /// The channel arguments of the top-level command `name`. Unsubscribing never needs a
    /// permission (Redis does not check it either).
    fn of(name: &str) -> Channels {
        match name {
            "publish" | "spublish" => Channels::First,
            "subscribe" | "ssubscribe" => Channels::All,
            "psubscribe" => Channels::AllPatterns,
            _ => Channels::None,
        }
    }
}

/// Every entry of the command table, numbered.
pub(crate) struct Entries {
    /// Each distinct static slice of the table with the number of its first entry; the
    /// top-level slice comes first because most requests are top-level commands.
    slices: Vec<(&'static [Command], usize)>,
    /// The entries in number order.
    all: Vec<&'static Command>,
    /// The channel arguments of each entry, by number.
    channels: Vec<Channels>,
}

static ENTRIES: LazyLock<Entries> = LazyLock::new(Entries::build);

/// The numbered table (built on first use, then shared by every [`Access`](crate::Access)).
pub(crate) fn entries() -> &'static Entries {
    &ENTRIES
}

impl Entries {
    fn build() -> Entries {
        let mut slices: Vec<(&'static [Command], usize)> = vec![(commands(), 0)];
        let mut count = commands().len();
        for command in commands() {
            let subs = command.subcommands();
            // Variants of one container (one per server) share one slice of subcommands.
            let known = slices.iter().any(|(s, _)| std::ptr::eq(*s, subs));
            if !subs.is_empty() && !known {
                slices.push((subs, count));
                count += subs.len();
            }
        }
        let all: Vec<&'static Command> = slices.iter().flat_map(|(s, _)| s.iter()).collect();
        let channels = all
            .iter()
            .map(|command| Channels::of(command.name()))
            .collect();
        Entries {
            slices,
            all,
            channels,
        }
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// Every entry with its number.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &'static Command)> + '_ {
        self.all.iter().copied().enumerate()
    }

    /// The number of `command`, found by its address; `None` for a `Command` that is not in the
    /// table (impossible through `cinnabar_commands`' API, and refused by the caller).
    #[inline]
    pub(crate) fn id_of(&self, command: &Command) -> Option<usize> {
        let address = std::ptr::from_ref(command).addr();
        for &(slice, first) in &self.slices {
            let Some(offset) = address.checked_sub(slice.as_ptr().addr()) else {
                continue;
            };
            let index = offset / size_of::<Command>();
            if index < slice.len() && std::ptr::eq(&slice[index], command) {
                return Some(first + index);
            }
        }
        None
    }

    /// Where the channels of entry `id` are.
    #[inline]
    pub(crate) fn channels(&self, id: usize) -> Channels {
        self.channels.get(id).copied().unwrap_or(Channels::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cinnabar_commands::{Server, resolve, resolve_for};

    #[test]
    fn every_entry_has_a_distinct_number_found_from_its_address() {
        let table = entries();
        for (id, command) in table.iter() {
            assert_eq!(table.id_of(command), Some(id), "{}", command.name());
        }
        // Top-level rows plus each container's subcommands once.
        assert!(table.len() > commands().len() + 100);
    }

    #[test]
    fn resolved_requests_map_to_their_entries() {
        let table = entries();
        let config_set: [&[u8]; 4] = [b"CONFIG", b"SET", b"maxmemory", b"0"];
        let command = resolve(&config_set).expect("config set");
        let id = table.id_of(command).expect("in the table");
        assert_eq!(
            table.iter().nth(id).map(|(_, c)| c.name()),
            Some("config|set")
        );
        let capa: [&[u8]; 3] = [b"CLIENT", b"CAPA", b"redirect"];
        let valkey_only = resolve_for(Server::Valkey8, &capa).expect("client capa");
        assert!(table.id_of(valkey_only).is_some());
    }

    #[test]
    fn channel_arguments_are_known_for_pubsub_commands() {
        let table = entries();
        let channels_of = |name: &[u8]| {
            let args: [&[u8]; 3] = [name, b"c", b"m"];
            let command = resolve(&args).expect("resolves");
            table.channels(table.id_of(command).expect("id"))
        };
        assert_eq!(channels_of(b"publish"), Channels::First);
        assert_eq!(channels_of(b"SPUBLISH"), Channels::First);
        assert_eq!(channels_of(b"subscribe"), Channels::All);
        assert_eq!(channels_of(b"ssubscribe"), Channels::All);
        assert_eq!(channels_of(b"psubscribe"), Channels::AllPatterns);
        assert_eq!(channels_of(b"unsubscribe"), Channels::None);
        assert_eq!(channels_of(b"mget"), Channels::None);
    }
}
