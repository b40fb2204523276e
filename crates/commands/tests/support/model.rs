//! The table seen through the same owned structs `introspect` reads from a live server, so a
//! drift test can compare the two with `==` and print readable differences.
//!
//! Must never normalise away a difference: every field the server reports is rebuilt here.

#![allow(dead_code)]

use std::collections::BTreeMap;

use cinnabar_commands::{Arg, BeginSearch, Command, Docs, FindKeys, KeySpec, Server};

use super::introspect::{ArgInfo, BeginInfo, DocInfo, FindInfo, Info, KeySpecInfo};

/// `COMMAND INFO` of `command` on `server`, with the subcommands that server has.
pub(crate) fn info(command: &Command, server: Server) -> Info {
    let mut subcommands = BTreeMap::new();
    for sub in command.subcommands() {
        if sub.is_available_on(server) {
            subcommands.insert(sub.name().to_owned(), info(sub, server));
        }
    }
    let (first_key, last_key, key_step) = command.legacy_key_range();
    Info {
        name: command.name().to_owned(),
        arity: command.arity().into(),
        flags: command.flags().names().map(str::to_owned).collect(),
        first_key: first_key.into(),
        last_key: last_key.into(),
        key_step: key_step.into(),
        acl_categories: command
            .acl_categories()
            .names()
            .map(|n| format!("@{n}"))
            .collect(),
        tips: command.tips().raw.iter().map(|t| (*t).to_owned()).collect(),
        key_specs: command.key_specs().iter().map(key_spec).collect(),
        subcommands,
    }
}

fn key_spec(spec: &KeySpec) -> KeySpecInfo {
    KeySpecInfo {
        notes: spec.notes.map(str::to_owned),
        flags: spec.flags.names().map(str::to_owned).collect(),
        begin_search: match spec.begin_search {
            BeginSearch::Index { pos } => BeginInfo::Index(pos.into()),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => BeginInfo::Keyword {
                keyword: keyword.to_owned(),
                start_from: start_from.into(),
            },
            BeginSearch::Unknown => BeginInfo::Unknown,
        },
        find_keys: match spec.find_keys {
            FindKeys::Range {
                last_key,
                key_step,
                limit,
            } => FindInfo::Range {
                last_key: last_key.into(),
                key_step: key_step.into(),
                limit: limit.into(),
            },
            FindKeys::KeyNum {
                key_num_idx,
                first_key,
                key_step,
            } => FindInfo::KeyNum {
                key_num_idx: key_num_idx.into(),
                first_key: first_key.into(),
                key_step: key_step.into(),
            },
            FindKeys::Unknown => FindInfo::Unknown,
        },
    }
}

/// `COMMAND DOCS` of one entry (without subcommands).
pub(crate) fn docs(docs: &Docs) -> DocInfo {
    DocInfo {
        summary: docs.summary.to_owned(),
        since: docs.since.to_owned(),
        group: docs.group.as_str().to_owned(),
        complexity: docs.complexity.map(str::to_owned),
        doc_flags: docs.doc_flags.names().map(str::to_owned).collect(),
        deprecated_since: docs.deprecated_since.map(str::to_owned),
        replaced_by: docs.replaced_by.map(str::to_owned),
        history: docs
            .history
            .iter()
            .map(|(v, c)| ((*v).to_owned(), (*c).to_owned()))
            .collect(),
        arguments: docs.arguments.iter().map(arg).collect(),
        subcommands: BTreeMap::new(),
    }
}

fn arg(arg: &Arg) -> ArgInfo {
    ArgInfo {
        name: arg.name.to_owned(),
        kind: arg.kind.as_str().to_owned(),
        key_spec_index: arg.key_spec_index.map(i64::from),
        token: arg.token.map(str::to_owned),
        summary: arg.summary.map(str::to_owned),
        since: arg.since.map(str::to_owned),
        flags: arg.flags.names().map(str::to_owned).collect(),
        deprecated_since: arg.deprecated_since.map(str::to_owned),
        display_text: arg.display_text.map(str::to_owned),
        arguments: arg.arguments.iter().map(self::arg).collect(),
    }
}
