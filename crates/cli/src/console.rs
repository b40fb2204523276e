//! `cinnabar console --listen HOST:PORT --root DIR` (or `--kubernetes [--namespace NS]`):
//! serves the web console and its JSON API (`cinnabar-console`) until Ctrl-C. Wiring only: the console's actions run this
//! same binary's subcommands, so it needs to know where the binary is.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Flags of `cinnabar console`.
#[derive(Debug, Args)]
pub(crate) struct ConsoleArgs {
    /// Address the console listens on (plain HTTP: keep it on loopback or a private network,
    /// or put a TLS proxy in front)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The state root: each subdirectory is one cluster (`cinnabar up --dir ROOT/NAME`);
    /// created clusters go there too. With --kubernetes, only where the users file and the
    /// audit trail are by default [default with --kubernetes: the current directory]
    #[arg(long, value_name = "DIR", required_unless_present = "kubernetes")]
    root: Option<PathBuf>,
    /// Show the RedisCluster resources of a namespace instead (kubeconfig or in-cluster
    /// credentials): read-only, but for scale, which edits the resource's spec
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: the namespace [default: the kubeconfig context's, or the pod's]
    #[arg(long, value_name = "NS", requires = "kubernetes")]
    namespace: Option<String>,
    /// Users file, in the proxy's users_file format ([[users]] with name, password_sha256 and
    /// role viewer | operator | admin; the proxy's readonly and readwrite count as viewer and
    /// operator) [default: ROOT/console-users.toml, created on the first start with an admin
    /// user whose password is printed once]
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Audit trail (JSON lines, rotated by size) [default: ROOT/console-audit.jsonl]
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Ports new clusters take, FIRST-LAST (each cluster a consecutive block with room to
    /// grow; bus ports are +10000)
    #[arg(long, value_name = "FIRST-LAST", default_value = "7000-7999", value_parser = parse_ports)]
    ports: cinnabar_console::actions::PortRange,
    /// Where "back up now" writes: s3://BUCKET/PREFIX or file:///PATH, one folder per cluster
    /// [default: file://ROOT/.backups]
    #[arg(long, value_name = "URL")]
    backup_to: Option<String>,
    /// redis-server or valkey-server binary for new clusters [default: first found on PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
}

fn parse_ports(text: &str) -> Result<cinnabar_console::actions::PortRange, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("expected FIRST-LAST, got {text:?}"))?;
    let first: u16 = first.trim().parse().map_err(|e| format!("{first}: {e}"))?;
    let last: u16 = last.trim().parse().map_err(|e| format!("{last}: {e}"))?;
    if first == 0 || first > last || u32::from(last) + 10_000 > 65_535 {
        return Err(format!(
            "{text}: need 0 < FIRST <= LAST and LAST + 10000 <= 65535 (bus ports)"
        ));
    }
    Ok(cinnabar_console::actions::PortRange { first, last })
}

/// Runs the console until Ctrl-C or SIGTERM.
pub(crate) fn run(args: &ConsoleArgs) -> Result<()> {
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("."));
    let root =
        std::path::absolute(&root).with_context(|| format!("resolving {}", root.display()))?;
    if !root.is_dir() {
        bail!(
            "{} is not a directory: create it (the console puts new clusters there)",
            root.display()
        );
    }
    let default_users = root.join("console-users.toml");
    // A first start with no users file at all: make one with an admin, so the console can be
    // used at once; the password is shown here, once, and only its digest is stored.
    if args.users.is_none() && !default_users.exists() {
        let password = cinnabar_console::auth::create_first_users_file(&default_users)?;
        eprintln!(
            "first start: created {} with the user \"admin\" (role admin) and the password\n\n    \
             {password}\n\nshown only now; add users or change it in that file (password_sha256 = \
             the SHA-256 of the password)",
            default_users.display()
        );
    }
    let config = cinnabar_console::ConsoleConfig {
        listen: args.listen,
        users_file: args.users.clone().unwrap_or(default_users),
        audit_file: args
            .audit
            .clone()
            .unwrap_or_else(|| root.join("console-audit.jsonl")),
        cinnabar: std::env::current_exe().context("finding the cinnabar binary")?,
        ports: args.ports,
        backup_to: args.backup_to.clone(),
        redis_server: args.redis_server.clone(),
        kubernetes: args.kubernetes.then(|| cinnabar_console::KubernetesConfig {
            namespace: args.namespace.clone(),
        }),
        root,
    };
    // A few threads: status reads block on node answers, and several browsers poll at once.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (console, warnings) = cinnabar_console::Console::start(config)
            .await
            .context("starting the console")?;
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
        println!("http://{}/", console.local_addr());
        eprintln!("console serving; press Ctrl-C to stop");
        crate::shutdown_signal().await;
        console.stop().await;
        eprintln!("console stopped (operations it started go on; see `cinnabar status`)");
        Ok(())
    })
}
