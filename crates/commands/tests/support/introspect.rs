//! What a live server says about its commands (`COMMAND INFO`, `COMMAND DOCS`, `INFO server`),
//! read into plain owned structs. Shared by the table generator (`examples/generate_table.rs`)
//! and the drift test.
//!
//! Must never drop a field it does not know: an unknown key in a reply is an error, so a new
//! server feature fails generation loudly instead of vanishing from the table.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use redis::Value;

/// Everything read from one server.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// `redis` or `valkey`.
    pub(crate) flavor: String,
    /// e.g. `7.0.15`.
    pub(crate) version: String,
    /// Top-level commands by name.
    pub(crate) commands: BTreeMap<String, Info>,
    /// Top-level docs by name.
    pub(crate) docs: BTreeMap<String, DocInfo>,
}

/// One `COMMAND INFO` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Info {
    pub(crate) name: String,
    pub(crate) arity: i64,
    pub(crate) flags: BTreeSet<String>,
    pub(crate) first_key: i64,
    pub(crate) last_key: i64,
    pub(crate) key_step: i64,
    pub(crate) acl_categories: BTreeSet<String>,
    pub(crate) tips: Vec<String>,
    pub(crate) key_specs: Vec<KeySpecInfo>,
    pub(crate) subcommands: BTreeMap<String, Info>,
}

impl Info {
    /// The entry without its subcommands (what one table row describes).
    pub(crate) fn own(&self) -> Info {
        Info {
            subcommands: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// One key specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySpecInfo {
    pub(crate) notes: Option<String>,
    pub(crate) flags: BTreeSet<String>,
    pub(crate) begin_search: BeginInfo,
    pub(crate) find_keys: FindInfo,
}

/// `begin_search` of a key spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BeginInfo {
    Index(i64),
    Keyword { keyword: String, start_from: i64 },
    Unknown,
}

/// `find_keys` of a key spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FindInfo {
    Range {
        last_key: i64,
        key_step: i64,
        limit: i64,
    },
    KeyNum {
        key_num_idx: i64,
        first_key: i64,
        key_step: i64,
    },
    Unknown,
}

/// One `COMMAND DOCS` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocInfo {
    pub(crate) summary: String,
    pub(crate) since: String,
    pub(crate) group: String,
    pub(crate) complexity: Option<String>,
    pub(crate) doc_flags: BTreeSet<String>,
    pub(crate) deprecated_since: Option<String>,
    pub(crate) replaced_by: Option<String>,
    pub(crate) history: Vec<(String, String)>,
    pub(crate) arguments: Vec<ArgInfo>,
    pub(crate) subcommands: BTreeMap<String, DocInfo>,
}

impl DocInfo {
    /// The docs without subcommands.
    pub(crate) fn own(&self) -> DocInfo {
        DocInfo {
            subcommands: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// One documented argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArgInfo {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) key_spec_index: Option<i64>,
    pub(crate) token: Option<String>,
    pub(crate) summary: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) flags: BTreeSet<String>,
    pub(crate) deprecated_since: Option<String>,
    pub(crate) display_text: Option<String>,
    pub(crate) arguments: Vec<ArgInfo>,
}

pub(crate) type Result<T> = std::result::Result<T, String>;

impl Snapshot {
    /// Reads `INFO server`, `COMMAND INFO` and `COMMAND DOCS` from the server at `url`.
    pub(crate) fn read(url: &str) -> Result<Snapshot> {
        let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
        let mut conn = client.get_connection().map_err(|e| format!("{url}: {e}"))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut conn)
            .map_err(|e| format!("INFO server: {e}"))?;
        let (flavor, version) = parse_server_info(&info)?;
        let raw_info: Value = redis::cmd("COMMAND")
            .arg("INFO")
            .query(&mut conn)
            .map_err(|e| format!("COMMAND INFO: {e}"))?;
        let raw_docs: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .query(&mut conn)
            .map_err(|e| format!("COMMAND DOCS: {e}"))?;
        let mut commands = BTreeMap::new();
        for entry in list(&raw_info)? {
            let info = parse_info(entry)?;
            commands.insert(info.name.clone(), info);
        }
        Ok(Snapshot {
            flavor,
            version,
            commands,
            docs: parse_docs_map(&raw_docs)?,
        })
    }

    /// Every command and subcommand, flattened, by full name.
    pub(crate) fn flat_commands(&self) -> BTreeMap<String, Info> {
        let mut out = BTreeMap::new();
        for info in self.commands.values() {
            out.insert(info.name.clone(), info.own());
            for sub in info.subcommands.values() {
                out.insert(sub.name.clone(), sub.own());
            }
        }
        out
    }

    /// Every command's and subcommand's docs, flattened, by full name.
    pub(crate) fn flat_docs(&self) -> BTreeMap<String, DocInfo> {
        let mut out = BTreeMap::new();
        for (name, docs) in &self.docs {
            out.insert(name.clone(), docs.own());
            for (sub, docs) in &docs.subcommands {
                out.insert(sub.clone(), docs.own());
            }
        }
        out
    }
}

/// `(flavor, version)` from an `INFO server` reply.
pub(crate) fn parse_server_info(info: &str) -> Result<(String, String)> {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    if let Some(version) = field("valkey_version") {
        Ok(("valkey".into(), version))
    } else if let Some(version) = field("redis_version") {
        Ok(("redis".into(), version))
    } else {
        Err("INFO server has neither valkey_version nor redis_version".into())
    }
}

fn text(value: &Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|e| e.to_string()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        Value::Okay => Ok("OK".into()),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn int(value: &Value) -> Result<i64> {
    match value {
        Value::Int(i) => Ok(*i),
        other => text(other)?
            .parse()
            .map_err(|_| format!("expected an integer, got {other:?}")),
    }
}

fn list(value: &Value) -> Result<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(format!("expected an array, got {other:?}")),
    }
}

fn texts(value: &Value) -> Result<Vec<String>> {
    list(value)?.iter().map(text).collect()
}

/// A RESP3 map, or a RESP2 flat array of alternating keys and values.
fn pairs(value: &Value) -> Result<Vec<(String, &Value)>> {
    match value {
        Value::Map(items) => items.iter().map(|(k, v)| Ok((text(k)?, v))).collect(),
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|pair| Ok((text(&pair[0])?, &pair[1])))
            .collect(),
        other => Err(format!("expected a map, got {other:?}")),
    }
}

fn parse_info(value: &Value) -> Result<Info> {
    let fields = list(value)?;
    if fields.len() != 10 {
        return Err(format!(
            "COMMAND INFO entry with {} fields: {value:?}",
            fields.len()
        ));
    }
    let name = text(&fields[0])?;
    let mut subcommands = BTreeMap::new();
    for sub in list(&fields[9])? {
        let sub = parse_info(sub)?;
        subcommands.insert(sub.name.clone(), sub);
    }
    Ok(Info {
        arity: int(&fields[1])?,
        flags: texts(&fields[2])?.into_iter().collect(),
        first_key: int(&fields[3])?,
        last_key: int(&fields[4])?,
        key_step: int(&fields[5])?,
        acl_categories: texts(&fields[6])?.into_iter().collect(),
        tips: texts(&fields[7])?,
        key_specs: list(&fields[8])?
            .iter()
            .map(parse_key_spec)
            .collect::<Result<_>>()
            .map_err(|e| format!("{name}: {e}"))?,
        subcommands,
        name,
    })
}

fn parse_key_spec(value: &Value) -> Result<KeySpecInfo> {
    let mut spec = KeySpecInfo {
        notes: None,
        flags: BTreeSet::new(),
        begin_search: BeginInfo::Unknown,
        find_keys: FindInfo::Unknown,
    };
    for (key, value) in pairs(value)? {
        match key.as_str() {
            "notes" => spec.notes = Some(text(value)?),
            "flags" => spec.flags = texts(value)?.into_iter().collect(),
            "begin_search" => spec.begin_search = parse_begin(value)?,
            "find_keys" => spec.find_keys = parse_find(value)?,
            other => return Err(format!("unknown key spec field {other:?}")),
        }
    }
    Ok(spec)
}

/// `(type, spec fields)` of a begin_search / find_keys map.
fn typed(value: &Value) -> Result<(String, BTreeMap<String, i64>, Option<String>)> {
    let mut kind = None;
    let mut numbers = BTreeMap::new();
    let mut keyword = None;
    for (key, value) in pairs(value)? {
        match key.as_str() {
            "type" => kind = Some(text(value)?),
            "spec" => {
                for (field, value) in pairs(value)? {
                    if field == "keyword" {
                        keyword = Some(text(value)?);
                    } else {
                        numbers.insert(field, int(value)?);
                    }
                }
            }
            other => return Err(format!("unknown search field {other:?}")),
        }
    }
    Ok((kind.ok_or("search without type")?, numbers, keyword))
}

fn number(fields: &BTreeMap<String, i64>, name: &str) -> Result<i64> {
    fields
        .get(name)
        .copied()
        .ok_or_else(|| format!("missing {name} in {fields:?}"))
}

fn parse_begin(value: &Value) -> Result<BeginInfo> {
    let (kind, fields, keyword) = typed(value)?;
    let expect = |names: &[&str]| -> Result<()> {
        match fields.keys().all(|k| names.contains(&k.as_str())) {
            true => Ok(()),
            false => Err(format!("unexpected begin_search fields {fields:?}")),
        }
    };
    match kind.as_str() {
        "index" => {
            expect(&["index"])?;
            Ok(BeginInfo::Index(number(&fields, "index")?))
        }
        "keyword" => {
            expect(&["startfrom"])?;
            Ok(BeginInfo::Keyword {
                keyword: keyword.ok_or("keyword search without keyword")?,
                start_from: number(&fields, "startfrom")?,
            })
        }
        "unknown" => {
            expect(&[])?;
            Ok(BeginInfo::Unknown)
        }
        other => Err(format!("unknown begin_search type {other:?}")),
    }
}

fn parse_find(value: &Value) -> Result<FindInfo> {
    let (kind, fields, _) = typed(value)?;
    let expect = |names: &[&str]| -> Result<()> {
        match fields.len() == names.len() && names.iter().all(|n| fields.contains_key(*n)) {
            true => Ok(()),
            false => Err(format!("unexpected find_keys fields {fields:?}")),
        }
    };
    match kind.as_str() {
        "range" => {
            expect(&["lastkey", "keystep", "limit"])?;
            Ok(FindInfo::Range {
                last_key: number(&fields, "lastkey")?,
                key_step: number(&fields, "keystep")?,
                limit: number(&fields, "limit")?,
            })
        }
        "keynum" => {
            expect(&["keynumidx", "firstkey", "keystep"])?;
            Ok(FindInfo::KeyNum {
                key_num_idx: number(&fields, "keynumidx")?,
                first_key: number(&fields, "firstkey")?,
                key_step: number(&fields, "keystep")?,
            })
        }
        "unknown" => {
            expect(&[])?;
            Ok(FindInfo::Unknown)
        }
        other => Err(format!("unknown find_keys type {other:?}")),
    }
}

fn parse_docs_map(value: &Value) -> Result<BTreeMap<String, DocInfo>> {
    let mut out = BTreeMap::new();
    for (name, docs) in pairs(value)? {
        let docs = parse_docs(docs).map_err(|e| format!("docs of {name}: {e}"))?;
        out.insert(name, docs);
    }
    Ok(out)
}

fn parse_docs(value: &Value) -> Result<DocInfo> {
    let mut docs = DocInfo {
        summary: String::new(),
        since: String::new(),
        group: String::new(),
        complexity: None,
        doc_flags: BTreeSet::new(),
        deprecated_since: None,
        replaced_by: None,
        history: Vec::new(),
        arguments: Vec::new(),
        subcommands: BTreeMap::new(),
    };
    for (key, value) in pairs(value)? {
        match key.as_str() {
            "summary" => docs.summary = text(value)?,
            "since" => docs.since = text(value)?,
            "group" => docs.group = text(value)?,
            "complexity" => docs.complexity = Some(text(value)?),
            "doc_flags" => docs.doc_flags = texts(value)?.into_iter().collect(),
            "deprecated_since" => docs.deprecated_since = Some(text(value)?),
            "replaced_by" => docs.replaced_by = Some(text(value)?),
            "history" => {
                for entry in list(value)? {
                    match list(entry)? {
                        [version, change] => docs.history.push((text(version)?, text(change)?)),
                        other => return Err(format!("history entry {other:?}")),
                    }
                }
            }
            "arguments" => docs.arguments = parse_args(value)?,
            "subcommands" => docs.subcommands = parse_docs_map(value)?,
            other => return Err(format!("unknown docs field {other:?}")),
        }
    }
    if docs.summary.is_empty() || docs.since.is_empty() || docs.group.is_empty() {
        return Err("docs without summary, since or group".into());
    }
    Ok(docs)
}

fn parse_args(value: &Value) -> Result<Vec<ArgInfo>> {
    list(value)?.iter().map(parse_arg).collect()
}

fn parse_arg(value: &Value) -> Result<ArgInfo> {
    let mut arg = ArgInfo {
        name: String::new(),
        kind: String::new(),
        key_spec_index: None,
        token: None,
        summary: None,
        since: None,
        flags: BTreeSet::new(),
        deprecated_since: None,
        display_text: None,
        arguments: Vec::new(),
    };
    for (key, value) in pairs(value)? {
        match key.as_str() {
            "name" => arg.name = text(value)?,
            "type" => arg.kind = text(value)?,
            "key_spec_index" => arg.key_spec_index = Some(int(value)?),
            "token" => arg.token = Some(text(value)?),
            "summary" => arg.summary = Some(text(value)?),
            "since" => arg.since = Some(text(value)?),
            "flags" => arg.flags = texts(value)?.into_iter().collect(),
            "deprecated_since" => arg.deprecated_since = Some(text(value)?),
            "display_text" => arg.display_text = Some(text(value)?),
            "arguments" => arg.arguments = parse_args(value)?,
            other => return Err(format!("unknown argument field {other:?}")),
        }
    }
    if arg.name.is_empty() || arg.kind.is_empty() {
        return Err("argument without name or type".into());
    }
    Ok(arg)
}
