//! LMTP listener (RFC 2033) for the bridge's mail domain.
//!
//! The operator's MTA delivers mail for the puppet addresses straight to the bridge, which
//! avoids the IMAP IDLE notification delay. Protocol logic lives in the sans-I/O
//! [`proto`] module; this file only moves bytes, enforces timeouts and the connection limit,
//! and calls the sink.
//!
//! One message → one [`InboundSink::accept`] call → one reply per accepted recipient. `250` is
//! sent only after `accept` returned `Ok`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::transport::{InboundMail, InboundSink, InboundSource, one_line};

mod proto;

use proto::{Limits, Output, Server};

/// LMTP listener settings.
#[derive(Clone, Debug)]
pub struct LmtpConfig {
    /// Name used in the greeting and the LHLO reply.
    pub hostname: String,
    /// Largest accepted message (after dot-unstuffing); bigger ones get `552`.
    pub max_message_bytes: usize,
    /// Recipient domains accepted (case-insensitive); others get `550 5.1.1`. Empty: any domain.
    pub accept_domains: Vec<String>,
    /// Concurrent connections; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Recipients per transaction; further ones get `452 4.5.3`.
    pub max_recipients: usize,
    /// How long to wait for the next command (or the next chunk of message data).
    pub command_timeout: Duration,
}

impl LmtpConfig {
    /// Defaults: 50 MiB messages, 64 connections, 100 recipients, 5 min per command.
    pub fn new(hostname: impl Into<String>, accept_domains: Vec<String>) -> Self {
        Self {
            hostname: hostname.into(),
            max_message_bytes: 50 * 1024 * 1024,
            accept_domains,
            max_connections: 64,
            max_recipients: 100,
            command_timeout: Duration::from_secs(300),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            hostname: one_line(&self.hostname, 255),
            max_message_bytes: self.max_message_bytes,
            max_recipients: self.max_recipients.max(1),
            accept_domains: self
                .accept_domains
                .iter()
                .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
        }
    }
}

/// Serves LMTP on `listener` until `shutdown` resolves.
///
/// On shutdown the listener stops accepting; idle connections get `421 4.3.2` and are closed;
/// a connection that is inside `sink.accept` finishes that delivery (and its replies) first.
/// Returns once every connection has ended.
pub async fn serve<F>(
    listener: TcpListener,
    cfg: LmtpConfig,
    sink: Arc<dyn InboundSink>,
    shutdown: F,
) where
    F: Future<Output = ()> + Send,
{
    let limits = Arc::new(cfg.limits());
    let command_timeout = cfg.command_timeout;
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "LMTP listener started");
    }

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %e, "LMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let limits = limits.clone();
        let sink = sink.clone();
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(stream, peer, &limits, command_timeout, &*sink, stop).await {
                tracing::debug!(%peer, error = %e, "LMTP connection ended with an error");
            }
        });
        while tasks.try_join_next().is_some() {}
    }

    let _ = stop_tx.send(true);
    tracing::info!(
        connections = tasks.len(),
        "LMTP listener stopping, waiting for connections"
    );
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    limits: &Limits,
    command_timeout: Duration,
    sink: &dyn InboundSink,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let mut wr = BufWriter::new(wr);
    let mut server = Server::new(limits.clone());
    let mut buf = vec![0u8; 8 * 1024];
    tracing::debug!(%peer, "LMTP connection");

    wr.write_all(server.greeting().to_wire().as_bytes()).await?;
    wr.flush().await?;

    loop {
        while let Some(out) = server.poll() {
            match out {
                Output::Reply(r) => wr.write_all(r.to_wire().as_bytes()).await?,
                Output::Deliver(d) => {
                    wr.flush().await?;
                    let bytes = d.raw.len();
                    let rcpts = d.rcpt_to.len();
                    let result = sink
                        .accept(InboundMail {
                            raw: d.raw,
                            source: InboundSource::Lmtp {
                                mail_from: d.mail_from,
                                rcpt_to: d.rcpt_to,
                            },
                        })
                        .await;
                    match &result {
                        Ok(()) => tracing::debug!(%peer, bytes, rcpts, "LMTP mail accepted"),
                        Err(e) => {
                            tracing::warn!(%peer, bytes, rcpts, error = %e, "LMTP mail not accepted")
                        }
                    }
                    server.delivered(&result);
                }
                Output::Close => {
                    wr.flush().await?;
                    let _ = wr.shutdown().await;
                    return Ok(());
                }
            }
        }
        wr.flush().await?;

        let read = tokio::select! {
            r = tokio::time::timeout(command_timeout, rd.read(&mut buf)) => r,
            () = stopped(&mut stop) => {
                wr.write_all(server.shutdown_reply().to_wire().as_bytes()).await?;
                wr.flush().await?;
                let _ = wr.shutdown().await;
                return Ok(());
            }
        };
        match read {
            Err(_elapsed) => {
                tracing::debug!(%peer, in_data = server.in_data(), "LMTP client timed out");
                wr.write_all(server.timeout_reply().to_wire().as_bytes())
                    .await?;
                wr.flush().await?;
                let _ = wr.shutdown().await;
                return Ok(());
            }
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => server.receive(&buf[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
