//! Test hub: the real bridge (email side, store, router) plus a recording side that stands in for Matrix.
//!
//! Used by the integration tests that kill the bridge with SIGKILL. The recording side appends every
//! delivery to a JSON-lines file and is idempotent per outbox row, as a homeserver is per transaction id;
//! events to inject "from Matrix" are read from another JSON-lines file (re-reading it is harmless:
//! the router dedupes by remote id).

use anyhow::Context as _;
use async_trait::async_trait;
use bridge_core::ir::{
    ChatLocator, EventKind, MessageContent, Part, Relation, RemoteEvent, UserRef,
};
use bridge_core::{Capabilities, Delivered, OutboxItem, Router, Side, SideError, SideName};
use clap::Parser;
use coi_bridge::app;
use coi_bridge::config::Config;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// Config file.
    #[arg(short, long)]
    config: PathBuf,
    /// Where deliveries are recorded (JSON lines).
    #[arg(long)]
    record: PathBuf,
    /// Events to inject as the recording side (JSON lines).
    #[arg(long)]
    inject: PathBuf,
}

struct RecordingSide {
    path: PathBuf,
    seen: Mutex<BTreeSet<i64>>,
}

#[async_trait]
impl Side for RecordingSide {
    fn name(&self) -> SideName {
        SideName::MATRIX
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<Delivered, SideError> {
        let link = format!("$rec-{}", item.message_uuid);
        let chat_link = item
            .chat
            .remote_chat_id
            .is_none()
            .then(|| format!("!rec-{}", item.chat.group_id));
        let fresh = self
            .seen
            .lock()
            .map(|mut s| s.insert(item.outbox_id.0))
            .unwrap_or(false);
        if fresh {
            let (text, reply, target, key, files) = describe(&item.event);
            let line = serde_json::json!({
                "outbox_id": item.outbox_id.0,
                "message_uuid": item.message_uuid,
                "link": link,
                "chat": chat_link.clone().or_else(|| item.chat.remote_chat_id.clone()),
                "chat_name": item.chat.name,
                "kind": item.event.name(),
                "sender": item.sender.as_ref().map(|s| s.native_id.clone()),
                "sender_name": item.sender.as_ref().map(|s| s.display_name.clone()),
                "text": text,
                "reply_to": reply,
                "target": target,
                "key": key,
                "files": files,
            });
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| SideError::retry(e.to_string()))?;
            writeln!(f, "{line}").map_err(|e| SideError::retry(e.to_string()))?;
            f.sync_data().map_err(|e| SideError::retry(e.to_string()))?;
        }
        Ok(Delivered {
            links: vec![(String::new(), link)],
            chat_link,
            puppet_links: Vec::new(),
            notices: Vec::new(),
        })
    }
}

type Described = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<serde_json::Value>,
);

fn describe(ev: &EventKind) -> Described {
    let mut files = Vec::new();
    match ev {
        EventKind::Message(c) => {
            for p in &c.parts {
                if let Part::Attachment {
                    filename,
                    mime_type,
                    data,
                    ..
                } = p
                {
                    files.push(serde_json::json!({"filename": filename, "mime": mime_type, "size": data.len()}));
                }
            }
            let reply = c.reply_to.as_ref().and_then(|r| r.remote_id.clone());
            (c.text(), reply, None, None, files)
        }
        EventKind::Edit { target, content } => {
            (content.text(), None, target.remote_id.clone(), None, files)
        }
        EventKind::Reaction { target, key, .. } => (
            String::new(),
            None,
            target.remote_id.clone(),
            Some(key.clone()),
            files,
        ),
        EventKind::Redaction { target } => {
            (String::new(), None, target.remote_id.clone(), None, files)
        }
        EventKind::Membership { subject, change } => (
            format!("{change:?} {}", subject.remote_id),
            None,
            None,
            None,
            files,
        ),
        EventKind::ChatInfo { name, topic } => {
            (format!("{name:?} {topic:?}"), None, None, None, files)
        }
        EventKind::Receipt { targets } => (
            String::new(),
            None,
            targets.first().and_then(|t| t.remote_id.clone()),
            None,
            files,
        ),
        EventKind::Notice { text } => (text.clone(), None, None, None, files),
    }
}

#[derive(Deserialize)]
struct Inject {
    id: String,
    chat: String,
    sender: String,
    #[serde(default)]
    sender_name: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    target: Option<String>,
}

fn to_event(i: Inject) -> RemoteEvent {
    let sender = UserRef::new(SideName::MATRIX, i.sender, i.sender_name);
    let content = MessageContent {
        parts: vec![Part::text(i.text.clone())],
        reply_to: i.reply_to.map(Relation::remote),
        wants_receipt: false,
    };
    let target = Relation::remote(i.target.unwrap_or_default());
    let kind = match i.kind.as_deref() {
        Some("reaction") => EventKind::Reaction {
            target,
            key: i.text,
            replaces: Vec::new(),
        },
        Some("edit") => EventKind::Edit { target, content },
        Some("redaction") => EventKind::Redaction { target },
        _ => EventKind::Message(content),
    };
    RemoteEvent {
        side: SideName::MATRIX,
        remote_id: i.id,
        chat: ChatLocator {
            remote_chat_id: Some(i.chat),
            ..ChatLocator::default()
        },
        sender,
        ts_ms: bridge_core::store::now_ms(),
        kind,
        raw: None,
    }
}

async fn injector(path: PathBuf, router: Router) {
    let mut done = 0usize;
    loop {
        if let Ok(text) = tokio::fs::read_to_string(&path).await {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            while done < lines.len() {
                let Some(line) = lines.get(done) else { break };
                match serde_json::from_str::<Inject>(line) {
                    Ok(i) => match router.ingest(to_event(i)).await {
                        Ok(out) => tracing::info!(?out, "Injected."),
                        Err(e) => {
                            tracing::warn!(error = %e, "Inject failed; retrying.");
                            break;
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "Bad inject line skipped."),
                }
                done += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let v = Config::load(&args.config)?;
    app::init_logging(&v.config.logging.level)?;
    let seen: BTreeSet<i64> = std::fs::read_to_string(&args.record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("outbox_id").and_then(serde_json::Value::as_i64))
        .collect();
    let side = Arc::new(RecordingSide {
        path: args.record.clone(),
        seen: Mutex::new(seen),
    });
    let inject = args.inject.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(async move {
        let hook: Box<dyn FnOnce(Router) + Send> = Box::new(move |router| {
            tokio::spawn(injector(inject, router));
        });
        app::run(v, vec![(side, hook)], app::shutdown_signal()).await
    })
}
