//! `cinnabar switch`: switch every proxy of an endpoint, on any platform, to another cluster at
//! once (the two-phase switch of `cinnabar-switch`), once a running `cinnabar sync` has
//! applied everything they acknowledged.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

/// Flags of `cinnabar switch`.
#[derive(Debug, Args)]
pub(crate) struct SwitchArgs {
    /// A proxy's admin listener, HOST:PORT (repeat for every proxy of the endpoint)
    #[arg(long = "proxy-admin", value_name = "HOST:PORT", required = true)]
    proxies: Vec<String>,
    /// File holding the proxies' admin token (their `admin_token_file`)
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// A node of the cluster to switch to (repeat for more)
    #[arg(long = "to", value_name = "HOST:PORT", required = true)]
    seeds: Vec<String>,
    /// ACL user on the new cluster
    #[arg(long, value_name = "USER")]
    to_user: Option<String>,
    /// File holding the new cluster's password (its first line)
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// The running sync's admin listener (`cinnabar sync --admin-listen`), HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    sync: String,
    /// The endpoint's cluster to switch, when it serves several ([[clusters]] name)
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// The longest the proxies hold their clients
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    max_pause_ms: u64,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

/// Runs `cinnabar switch`: exit 0 switched, 1 not switched (every proxy serves the source), 3
/// switched in part (a person must act: the report says which proxies).
pub(crate) fn run(args: &SwitchArgs) -> Result<ExitCode> {
    let first_line = |path: &PathBuf| -> Result<String> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(text.lines().next().unwrap_or_default().to_owned())
    };
    let token = first_line(&args.token_file)?;
    let proxies: Vec<cinnabar_switch::ProxyAdmin> = args
        .proxies
        .iter()
        .map(|addr| cinnabar_switch::ProxyAdmin {
            addr: addr.clone(),
            token: token.clone(),
        })
        .collect();
    let target = cinnabar_switch::Target {
        cluster: args.cluster.clone(),
        seeds: args.seeds.clone(),
        user: args.to_user.clone(),
        password: args.to_password_file.as_ref().map(first_line).transpose()?,
        max_pause_ms: args.max_pause_ms,
    };
    let outcome =
        crate::runtime()?.block_on(cinnabar_switch::switch_all(&proxies, &target, &args.sync));
    match outcome {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "switched {} prox{} to {}: clients held {:.1} ms (catch-up {:.1} ms)",
                    report.proxies.len(),
                    if report.proxies.len() == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    args.seeds.join(", "),
                    report.hold_ms,
                    report.catch_up_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ cinnabar_switch::SwitchError::Partial { .. }) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(3))
        }
        Err(e) => {
            eprintln!("not switched: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
