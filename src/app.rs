//! Start-up: open the store, build the sides, run ingest and the hub until shutdown.

use crate::config::Validated;
use anyhow::Context as _;
use bridge_core::{Bridge, Side, Store};
use coi_side::EmailSide;
use matrix_side::MatrixSide;
use std::future::Future;
use std::sync::Arc;

/// Sets up `tracing` with a filter such as `info` or `coi_side=debug,info`.
pub fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .context("Invalid config key `logging.level`")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .try_init()
        .ok();
    Ok(())
}

/// Hooks for extra sides (tests and tools): each gets the router once the bridge is built.
pub type ExtraSide = (Arc<dyn Side>, Box<dyn FnOnce(bridge_core::Router) + Send>);

/// Runs the bridge until `shutdown` completes.
pub async fn run(
    v: Validated,
    extra: Vec<ExtraSide>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = Store::open(&v.config.database.url, v.config.database.max_connections)
        .await
        .with_context(|| format!("Cannot open the database {}", v.config.database.url))?;
    let email_cfg = Arc::new(v.config.email.clone());
    let email = Arc::new(
        EmailSide::new(email_cfg.clone(), &v.email).context("Cannot set up the email side")?,
    );
    let mut builder = Bridge::builder(store.clone()).side(email);
    let matrix = match &v.matrix {
        Some(settings) => {
            let side = Arc::new(
                MatrixSide::new(settings, store.clone())
                    .context("Cannot set up the Matrix side")?,
            );
            builder = builder.side(side.clone());
            Some((settings.clone(), side))
        }
        None => None,
    };
    let mut hooks = Vec::new();
    for (side, hook) in extra {
        builder = builder.side(side);
        hooks.push(hook);
    }
    let bridge = Arc::new(builder.build());
    for hook in hooks {
        hook(bridge.router());
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let listener = match &matrix {
        Some((settings, side)) => {
            let (task, info) =
                matrix_side::start(settings, side, bridge.router(), stopped(stop_rx.clone()))
                    .await
                    .context("Matrix start-up failed")?;
            tracing::info!(ping_ms = info.ping_ms, versions = ?info.versions, "Matrix side ready.");
            Some(task)
        }
        None => None,
    };
    let ingest = tokio::spawn(coi_side::run_ingest(
        email_cfg,
        v.email.clone(),
        bridge.router(),
        stopped(stop_rx.clone()),
    ));
    let hub = tokio::spawn(bridge.clone().run(stopped(stop_rx)));
    tracing::info!("coi-bridge running.");
    shutdown.await;
    tracing::info!("Shutting down.");
    let _ = stop_tx.send(true);
    ingest.await.context("ingest task")??;
    hub.await.context("hub task")?;
    if let Some(task) = listener {
        task.await
            .context("Matrix listener task")?
            .context("Matrix listener")?;
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
