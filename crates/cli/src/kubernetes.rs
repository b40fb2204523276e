//! `cinnabar crd` and `cinnabar operator`: the Kubernetes side of the binary (wiring only; the
//! operator lives in `cinnabar-operator`).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;

/// Flags of `cinnabar operator`.
#[derive(Debug, Clone, Args)]
pub(crate) struct OperatorArgs {
    /// Watch only this namespace [default: every namespace]
    #[arg(long, value_name = "NS", env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace of the leader-election Lease (the operator's own)
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "cinnabar-system"
    )]
    lease_namespace: String,
    /// This replica's identity in the Lease (the pod name)
    #[arg(
        long,
        value_name = "NAME",
        env = "POD_NAME",
        default_value = "cinnabar-operator"
    )]
    identity: String,
    /// Image of the proxy pods: the operator's own image, which holds this binary
    #[arg(
        long,
        value_name = "IMAGE",
        env = "CINNABAR_IMAGE",
        default_value = "cinnabar:latest"
    )]
    proxy_image: String,
    /// Where /healthz, /readyz and /metrics listen
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,
}

/// Prints the CRD YAML (what `deploy/crds/` holds).
pub(crate) fn crd() -> Result<()> {
    let yaml = cinnabar_operator::crd::crd_yaml().context("writing the CRD as YAML")?;
    print!("{yaml}");
    Ok(())
}

/// Runs the operator until it is stopped or loses its Lease.
pub(crate) fn operator(args: &OperatorArgs) -> Result<()> {
    let options = cinnabar_operator::controller::OperatorOptions {
        namespace: args.namespace.clone(),
        lease_namespace: args.lease_namespace.clone(),
        identity: args.identity.clone(),
        proxy_image: args.proxy_image.clone(),
        http_listen: args.http_listen,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime
        .block_on(cinnabar_operator::controller::run(options))
        .context("the operator stopped")
}
