//! Regenerates `src/generated/` — the command table — from what live servers say about
//! themselves (`COMMAND INFO`, `COMMAND DOCS`, `INFO server`): Redis 7.0 and Valkey 8.0, merged.
//!
//! ```text
//! cargo run -p cinnabar-commands --example generate_table
//!     [--redis-bin PATH] [--valkey-bin PATH]      # servers to start (default: from PATH)
//!     [--redis URL] [--valkey URL]                # or servers already running
//!     [--out DIR]                                 # default: crates/commands/src/generated
//! ```
//!
//! Entries the two servers describe identically are written once for both; entries they
//! describe differently are written once per server, Redis first. The output is formatted with
//! `rustfmt` so `cargo fmt` leaves it alone. Must never invent data: everything written comes from
//! a server reply, except the choice of key procedure (`KeyProc::for_command`).

#[path = "../tests/support/introspect.rs"]
mod introspect;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use cinnabar_commands::{
    AclCategories, ArgFlags, ArgType, CommandFlags, DocFlags, Group, KeyProc, KeySpecFlags,
    Servers, Tips,
};
use cinnabar_local::ServerBinary;
use cinnabar_testkit::{ServerOptions, TestServer};
use introspect::{ArgInfo, BeginInfo, DocInfo, FindInfo, Info, KeySpecInfo, Snapshot};

type Result<T> = std::result::Result<T, String>;

/// Command-line options.
#[derive(Debug, Default)]
struct Options {
    redis_url: Option<String>,
    valkey_url: Option<String>,
    redis_bin: Option<PathBuf>,
    valkey_bin: Option<PathBuf>,
    out: Option<PathBuf>,
}

fn parse_options() -> Result<Options> {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--redis" => options.redis_url = Some(value()?),
            "--valkey" => options.valkey_url = Some(value()?),
            "--redis-bin" => options.redis_bin = Some(value()?.into()),
            "--valkey-bin" => options.valkey_bin = Some(value()?.into()),
            "--out" => options.out = Some(value()?.into()),
            other => return Err(format!("unknown option {other}; see the file's header")),
        }
    }
    Ok(options)
}

/// Reads a snapshot from `url`, or from a server started from `binary` (a name on PATH or a
/// path) for the duration of the read.
fn snapshot(url: Option<&str>, binary: Option<&Path>, default_name: &str) -> Result<Snapshot> {
    if let Some(url) = url {
        return Snapshot::read(url);
    }
    let path = match binary {
        Some(path) => path.to_path_buf(),
        None => find_on_path(default_name).ok_or(format!("{default_name} is not on PATH"))?,
    };
    let binary = ServerBinary::locate(Some(&path)).map_err(|e| e.to_string())?;
    let server = TestServer::start_with(ServerOptions {
        binary: Some(binary),
        ..ServerOptions::default()
    });
    Snapshot::read(&server.url())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn main() -> std::result::Result<(), String> {
    let options = parse_options()?;
    let redis = snapshot(
        options.redis_url.as_deref(),
        options.redis_bin.as_deref(),
        "redis-server",
    )?;
    let valkey = snapshot(
        options.valkey_url.as_deref(),
        options.valkey_bin.as_deref(),
        "valkey-server",
    )?;
    if redis.flavor != "redis" || !redis.version.starts_with("7.0.") {
        return Err(format!(
            "the Redis side must be Redis 7.0, got {} {}",
            redis.flavor, redis.version
        ));
    }
    if valkey.flavor != "valkey" || !valkey.version.starts_with("8.0.") {
        return Err(format!(
            "the Valkey side must be Valkey 8.0, got {} {}",
            valkey.flavor, valkey.version
        ));
    }
    let out = options
        .out
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src/generated"));
    let generated = Generator::new(&redis, &valkey).run()?;
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let files = [
        ("mod.rs", generated.module),
        ("table.rs", generated.table),
        ("docs.rs", generated.docs),
    ];
    let mut paths = Vec::new();
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        paths.push(path);
    }
    let status = Process::new("rustfmt")
        .args(["--edition", "2024"])
        .args(&paths)
        .status()
        .map_err(|e| format!("rustfmt: {e}"))?;
    if !status.success() {
        return Err(format!("rustfmt failed: {status}"));
    }
    println!(
        "wrote {}: {} (redis {}: {} commands + {} subcommands; valkey {}: {} + {}; {} table entries)",
        out.display(),
        paths.len(),
        redis.version,
        redis.commands.len(),
        redis.flat_commands().len() - redis.commands.len(),
        valkey.version,
        valkey.commands.len(),
        valkey.flat_commands().len() - valkey.commands.len(),
        generated.entries,
    );
    Ok(())
}

/// The three generated files.
struct Generated {
    module: String,
    table: String,
    docs: String,
    entries: usize,
}

struct Generator<'s> {
    redis: &'s Snapshot,
    valkey: &'s Snapshot,
    redis_docs: BTreeMap<String, DocInfo>,
    valkey_docs: BTreeMap<String, DocInfo>,
    /// Docs statics already written, by identifier.
    docs_written: BTreeSet<String>,
    docs: String,
    subtables: String,
    entries: usize,
}

const HEADER: &str = "// @generated by `cargo run -p cinnabar-commands --example generate_table` from the\n\
// `COMMAND INFO` and `COMMAND DOCS` replies of live servers. Do not edit by hand: regenerate.\n";

impl<'s> Generator<'s> {
    fn new(redis: &'s Snapshot, valkey: &'s Snapshot) -> Self {
        Generator {
            redis,
            valkey,
            redis_docs: redis.flat_docs(),
            valkey_docs: valkey.flat_docs(),
            docs_written: BTreeSet::new(),
            docs: String::new(),
            subtables: String::new(),
            entries: 0,
        }
    }

    fn run(mut self) -> Result<Generated> {
        let names: BTreeSet<&String> = self
            .redis
            .commands
            .keys()
            .chain(self.valkey.commands.keys())
            .collect();
        let mut rows = String::new();
        let mut count = 0;
        for name in names {
            let redis = self.redis.commands.get(name);
            let valkey = self.valkey.commands.get(name);
            let subtable = self.subtable(name, redis, valkey)?;
            for (servers, info) in variants(redis, valkey) {
                rows.push_str(&self.row(servers, &info, subtable.as_deref())?);
                count += 1;
            }
        }
        let table = format!(
            "{HEADER}//! The command rows (see `crate::table::Command`).\n\n\
             use super::docs;\n\
             use crate::flags::{{AclCategories as A, CommandFlags as F, KeySpecFlags as K, Servers as S}};\n\
             use crate::table::{{BeginSearch, Command, FindKeys, KeyProc, KeySpec}};\n\
             use crate::tips::{{RequestPolicy, ResponsePolicy, Tips}};\n\n\
             /// Every top-level command, sorted by name; entries for different servers adjacent.\n\
             pub(crate) static COMMANDS: [Command; {count}] = [\n{rows}];\n\n{}",
            self.subtables
        );
        let docs = format!(
            "{HEADER}//! Per-server documentation (see `crate::docs::Docs`).\n\n\
             use crate::docs::{{Arg, ArgType, Docs, Group}};\n\
             use crate::flags::{{ArgFlags as AF, DocFlags as DF}};\n\n{}",
            self.docs
        );
        let module = format!(
            "{HEADER}//! The generated command table: `table.rs` (routing data) and `docs.rs` (`COMMAND DOCS`).\n//!\n\
             //! Must never be edited by hand: regenerate it, and the drift test checks it against live servers.\n\n\
             mod docs;\nmod table;\n\npub(crate) use table::COMMANDS;\n\n\
             /// The Redis version the table was read from.\n\
             pub(crate) const REDIS_VERSION: &str = {:?};\n\n\
             /// The Valkey version the table was read from.\n\
             pub(crate) const VALKEY_VERSION: &str = {:?};\n",
            self.redis.version, self.valkey.version
        );
        Ok(Generated {
            module,
            table,
            docs,
            entries: self.entries,
        })
    }

    /// Writes the static holding the subcommands of `name`, returning its identifier.
    fn subtable(
        &mut self,
        name: &str,
        redis: Option<&Info>,
        valkey: Option<&Info>,
    ) -> Result<Option<String>> {
        let empty = BTreeMap::new();
        let redis_subs = redis.map_or(&empty, |i| &i.subcommands);
        let valkey_subs = valkey.map_or(&empty, |i| &i.subcommands);
        let names: BTreeSet<&String> = redis_subs.keys().chain(valkey_subs.keys()).collect();
        if names.is_empty() {
            return Ok(None);
        }
        let mut rows = String::new();
        let mut count = 0;
        for sub in names {
            let (r, v) = (redis_subs.get(sub), valkey_subs.get(sub));
            if r.is_some_and(|i| !i.subcommands.is_empty())
                || v.is_some_and(|i| !i.subcommands.is_empty())
            {
                return Err(format!("{sub}: nested subcommands are not supported"));
            }
            for (servers, info) in variants(r, v) {
                rows.push_str(&self.row(servers, &info, None)?);
                count += 1;
            }
        }
        let ident = format!("SUB_{}", ident(name));
        writeln!(
            self.subtables,
            "/// The subcommands of `{name}`.\nstatic {ident}: [Command; {count}] = [\n{rows}];\n"
        )
        .map_err(|e| e.to_string())?;
        Ok(Some(ident))
    }

    /// One `Command { … }` literal.
    fn row(&mut self, servers: Servers, info: &Info, subtable: Option<&str>) -> Result<String> {
        self.entries += 1;
        let name = &info.name;
        let mut out = String::new();
        let w = &mut out;
        let fmt = |e: std::fmt::Error| e.to_string();
        writeln!(w, "Command {{").map_err(fmt)?;
        writeln!(w, "name: {name:?},").map_err(fmt)?;
        writeln!(w, "arity: {},", info.arity).map_err(fmt)?;
        writeln!(
            w,
            "flags: F::of(&[{}]),",
            members(&info.flags, "F", name, CommandFlags::NAMES)?
        )
        .map_err(fmt)?;
        writeln!(
            w,
            "first_key: {}, last_key: {}, key_step: {},",
            info.first_key, info.last_key, info.key_step
        )
        .map_err(fmt)?;
        writeln!(
            w,
            "acl_categories: A::of(&[{}]),",
            members(&info.acl_categories, "A", name, AclCategories::NAMES)?
        )
        .map_err(fmt)?;
        writeln!(w, "tips: {},", tips(&info.tips, name)?).map_err(fmt)?;
        let specs = info
            .key_specs
            .iter()
            .map(|spec| key_spec(spec, name))
            .collect::<Result<Vec<_>>>()?;
        writeln!(w, "key_specs: &[{}],", specs.join(", ")).map_err(fmt)?;
        writeln!(w, "key_proc: KeyProc::{:?},", KeyProc::for_command(name)).map_err(fmt)?;
        match subtable {
            Some(ident) => writeln!(w, "subcommands: &{ident},"),
            None => writeln!(w, "subcommands: &[],"),
        }
        .map_err(fmt)?;
        let server_names: BTreeSet<String> = servers.names().map(str::to_owned).collect();
        writeln!(
            w,
            "servers: S::of(&[{}]),",
            members(&server_names, "S", name, Servers::NAMES)?
        )
        .map_err(fmt)?;
        let redis_docs = match servers.contains(Servers::REDIS_7) {
            true => self.docs_static(name)?,
            false => "None".into(),
        };
        let valkey_docs = match servers.contains(Servers::VALKEY_8) {
            true => self.docs_static_valkey(name)?,
            false => "None".into(),
        };
        writeln!(
            w,
            "redis_docs: {redis_docs},\nvalkey_docs: {valkey_docs},\n}},"
        )
        .map_err(fmt)?;
        Ok(out)
    }

    /// `Some(&docs::IDENT)` for Redis's docs of `name`, writing the static on first use.
    fn docs_static(&mut self, name: &str) -> Result<String> {
        let docs = self
            .redis_docs
            .get(name)
            .cloned()
            .ok_or(format!("redis has no docs for {name}"))?;
        let same = self.valkey_docs.get(name) == Some(&docs);
        let ident = format!("{}_{}", if same { "B" } else { "R" }, ident(name));
        self.write_docs(&ident, name, &docs)
    }

    /// `Some(&docs::IDENT)` for Valkey's docs of `name`, writing the static on first use.
    fn docs_static_valkey(&mut self, name: &str) -> Result<String> {
        let docs = self
            .valkey_docs
            .get(name)
            .cloned()
            .ok_or(format!("valkey has no docs for {name}"))?;
        let same = self.redis_docs.get(name) == Some(&docs);
        let ident = format!("{}_{}", if same { "B" } else { "V" }, ident(name));
        self.write_docs(&ident, name, &docs)
    }

    fn write_docs(&mut self, ident: &str, name: &str, docs: &DocInfo) -> Result<String> {
        if self.docs_written.insert(ident.to_owned()) {
            let group = Group::from_name(&docs.group)
                .ok_or(format!("{name}: unknown group {:?}", docs.group))?;
            let doc_flags = members(&docs.doc_flags, "DF", name, DocFlags::NAMES)?;
            let history: Vec<String> = docs
                .history
                .iter()
                .map(|(version, change)| format!("({version:?}, {change:?})"))
                .collect();
            let arguments = args(&docs.arguments, name)?;
            writeln!(
                self.docs,
                "/// `{name}`.\npub(super) static {ident}: Docs = Docs {{\n\
                 summary: {:?},\nsince: {:?},\ngroup: Group::{group:?},\ncomplexity: {},\n\
                 doc_flags: DF::of(&[{doc_flags}]),\ndeprecated_since: {},\nreplaced_by: {},\n\
                 history: &[{}],\narguments: {arguments},\n}};\n",
                docs.summary,
                docs.since,
                option(docs.complexity.as_deref()),
                option(docs.deprecated_since.as_deref()),
                option(docs.replaced_by.as_deref()),
                history.join(", "),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(format!("Some(&docs::{ident})"))
    }
}

/// The table entries for one name: one for both servers when they agree, else one per server.
fn variants(redis: Option<&Info>, valkey: Option<&Info>) -> Vec<(Servers, Info)> {
    match (redis.map(Info::own), valkey.map(Info::own)) {
        (Some(r), Some(v)) if r == v => vec![(Servers::REDIS_7 | Servers::VALKEY_8, r)],
        (Some(r), Some(v)) => vec![(Servers::REDIS_7, r), (Servers::VALKEY_8, v)],
        (Some(r), None) => vec![(Servers::REDIS_7, r)],
        (None, Some(v)) => vec![(Servers::VALKEY_8, v)],
        (None, None) => Vec::new(),
    }
}

/// `config|count-failure-reports` → `CONFIG__COUNT_FAILURE_REPORTS`.
fn ident(name: &str) -> String {
    name.to_ascii_uppercase()
        .replace('|', "__")
        .replace(['-', '.'], "_")
}

/// The Rust constant of a flag named by the server: `no_auth` → `NO_AUTH`, `redis-7.0` →
/// `REDIS_7`.
fn const_name(server_name: &str) -> String {
    match server_name {
        "movablekeys" => "MOVABLE_KEYS".into(),
        "redis-7.0" => "REDIS_7".into(),
        "valkey-8.0" => "VALKEY_8".into(),
        other => other.trim_start_matches('@').to_ascii_uppercase(),
    }
}

/// `P::A, P::B` for the server names `names`, in the order of `table` (the server's reply
/// order); an unknown name is an error, so nothing the server says is dropped.
fn members<T>(
    names: &BTreeSet<String>,
    prefix: &str,
    command: &str,
    table: &[(T, &'static str)],
) -> Result<String> {
    let mut found = Vec::new();
    for name in names {
        let bare = name.trim_start_matches('@');
        let position = table
            .iter()
            .position(|(_, known)| known.eq_ignore_ascii_case(bare))
            .ok_or(format!("{command}: unknown flag {name:?}"))?;
        found.push(position);
    }
    found.sort_unstable();
    Ok(found
        .into_iter()
        .map(|i| format!("{prefix}::{}", const_name(table[i].1)))
        .collect::<Vec<_>>()
        .join(", "))
}

fn option(value: Option<&str>) -> String {
    value.map_or("None".into(), |v| format!("Some({v:?})"))
}

fn tips(raw: &[String], command: &str) -> Result<String> {
    if raw.is_empty() {
        return Ok("Tips::NONE".into());
    }
    let leaked: &'static [&'static str] = Box::leak(
        raw.iter()
            .map(|t| &*Box::leak(t.clone().into_boxed_str()))
            .collect::<Vec<&'static str>>()
            .into_boxed_slice(),
    );
    let parsed = Tips::parse(leaked).ok_or(format!("{command}: unknown tip in {raw:?}"))?;
    Ok(format!(
        "Tips {{ raw: &{raw:?}, request_policy: RequestPolicy::{:?}, response_policy: ResponsePolicy::{:?}, \
         nondeterministic_output: {}, nondeterministic_output_order: {} }}",
        parsed.request_policy,
        parsed.response_policy,
        parsed.nondeterministic_output,
        parsed.nondeterministic_output_order
    ))
}

fn key_spec(spec: &KeySpecInfo, command: &str) -> Result<String> {
    let flags = members(&spec.flags, "K", command, KeySpecFlags::NAMES)?;
    let to_i32 = |v: i64| i32::try_from(v).map_err(|_| format!("{command}: {v} out of range"));
    let begin = match &spec.begin_search {
        BeginInfo::Index(pos) => format!("BeginSearch::Index {{ pos: {} }}", to_i32(*pos)?),
        BeginInfo::Keyword {
            keyword,
            start_from,
        } => format!(
            "BeginSearch::Keyword {{ keyword: {keyword:?}, start_from: {} }}",
            to_i32(*start_from)?
        ),
        BeginInfo::Unknown => "BeginSearch::Unknown".into(),
    };
    let find = match &spec.find_keys {
        FindInfo::Range {
            last_key,
            key_step,
            limit,
        } => format!(
            "FindKeys::Range {{ last_key: {}, key_step: {}, limit: {} }}",
            to_i32(*last_key)?,
            to_i32(*key_step)?,
            to_i32(*limit)?
        ),
        FindInfo::KeyNum {
            key_num_idx,
            first_key,
            key_step,
        } => format!(
            "FindKeys::KeyNum {{ key_num_idx: {}, first_key: {}, key_step: {} }}",
            to_i32(*key_num_idx)?,
            to_i32(*first_key)?,
            to_i32(*key_step)?
        ),
        FindInfo::Unknown => "FindKeys::Unknown".into(),
    };
    Ok(format!(
        "KeySpec {{ notes: {}, flags: K::of(&[{flags}]), begin_search: {begin}, find_keys: {find} }}",
        option(spec.notes.as_deref())
    ))
}

fn args(list: &[ArgInfo], command: &str) -> Result<String> {
    let items = list
        .iter()
        .map(|a| arg(a, command))
        .collect::<Result<Vec<_>>>()?;
    Ok(format!("&[{}]", items.join(", ")))
}

fn arg(arg: &ArgInfo, command: &str) -> Result<String> {
    let kind = ArgType::from_name(&arg.kind)
        .ok_or(format!("{command}: unknown argument type {:?}", arg.kind))?;
    let mut fields = vec![
        format!("name: {:?}", arg.name),
        format!("kind: ArgType::{kind:?}"),
    ];
    if let Some(index) = arg.key_spec_index {
        let index =
            u8::try_from(index).map_err(|_| format!("{command}: key_spec_index {index}"))?;
        fields.push(format!("key_spec_index: Some({index})"));
    }
    let optional = [
        ("token", &arg.token),
        ("summary", &arg.summary),
        ("since", &arg.since),
        ("deprecated_since", &arg.deprecated_since),
        ("display_text", &arg.display_text),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            fields.push(format!("{field}: Some({value:?})"));
        }
    }
    if !arg.flags.is_empty() {
        let flags = members(&arg.flags, "AF", command, ArgFlags::NAMES)?;
        fields.push(format!("flags: AF::of(&[{flags}])"));
    }
    if !arg.arguments.is_empty() {
        fields.push(format!("arguments: {}", args(&arg.arguments, command)?));
    }
    Ok(format!("Arg {{ {}, ..Arg::BLANK }}", fields.join(", ")))
}
