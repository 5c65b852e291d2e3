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

/// The store and the sides as the config describes them, not started (no network I/O).
struct Parts {
    store: Store,
    email_cfg: Arc<coi_side::EmailConfig>,
    builder: bridge_core::BridgeBuilder,
    matrix: Option<(matrix_side::MatrixSettings, Arc<MatrixSide>)>,
}

async fn parts(v: &Validated) -> anyhow::Result<Parts> {
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
    Ok(Parts {
        store,
        email_cfg,
        builder,
        matrix,
    })
}

/// Replays kept mail (`ids`, or every kept mail when `None`) through the inbound pipeline with
/// this config, with the same sides as `run`, so what is placed now is queued for them (a running
/// bridge picks the rows up within its 30 s outbox poll). Returns each entry's outcome.
pub async fn replay_quarantine(
    v: Validated,
    ids: Option<Vec<i64>>,
) -> anyhow::Result<Vec<(i64, Result<coi_side::Replayed, String>)>> {
    let p = parts(&v).await?;
    let bridge = p.builder.build();
    let sink = coi_side::MailSink::new(p.email_cfg, bridge.router());
    let ids = match ids {
        Some(ids) => ids,
        None => {
            // One replay per kept mail (a mail kept for two reasons has two entries).
            let mut seen = std::collections::BTreeSet::new();
            let mut all = p.store.quarantine_list(i64::MAX).await?;
            all.reverse();
            all.into_iter()
                .filter(|e| e.side == bridge_core::SideName::EMAIL.as_str() && e.raw_bytes > 0)
                .filter(|e| seen.insert(e.remote_id.clone()))
                .map(|e| e.id)
                .collect()
        }
    };
    let mut out = Vec::new();
    for id in ids {
        out.push((id, sink.replay(id).await.map_err(|e| e.to_string())));
    }
    p.store.close().await;
    Ok(out)
}

/// Runs the bridge until `shutdown` completes.
pub async fn run(
    v: Validated,
    extra: Vec<ExtraSide>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Parts {
        store: _,
        email_cfg,
        mut builder,
        matrix,
    } = parts(&v).await?;
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
