//! The bridge: the router plus one outbox drainer per side.
//!
//! Each side's outbox is drained in per-chat order; chats proceed independently, and a side that is
//! down only delays its own outbox.

use crate::ids::{ChatId, SideName};
use crate::ir::{EventKind, Part};
use crate::router::{Router, SideEntry, resolve_for_side};
use crate::side::{OutboxItem, Side, SideError};
use crate::store::{OutboxRow, Store, StoreError, now_ms};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Retry policy of the outbox.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Attempts before a row is given up (and the chat told).
    pub max_attempts: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
            max_attempts: 40,
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempts: i64) -> Duration {
        let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        self.initial
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.max)
    }
}

/// Builder for [`Bridge`].
pub struct BridgeBuilder {
    store: Store,
    sides: Vec<Arc<dyn Side>>,
    retry: RetryPolicy,
}

impl BridgeBuilder {
    /// Registers a side.
    pub fn side(mut self, side: Arc<dyn Side>) -> Self {
        self.sides.push(side);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Builds the bridge.
    pub fn build(self) -> Bridge {
        let mut wake = BTreeMap::new();
        let mut entries = Vec::new();
        for s in &self.sides {
            wake.insert(s.name().as_str(), Arc::new(Notify::new()));
            entries.push(SideEntry {
                name: s.name(),
                caps: s.capabilities(),
            });
        }
        let router = Router::new(self.store.clone(), entries, wake.clone());
        Bridge {
            store: self.store,
            router,
            sides: self.sides,
            wake,
            retry: self.retry,
        }
    }
}

/// The running hub.
pub struct Bridge {
    store: Store,
    router: Router,
    sides: Vec<Arc<dyn Side>>,
    wake: BTreeMap<&'static str, Arc<Notify>>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("sides", &self.sides.len())
            .finish()
    }
}

/// What one drain pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Delivered rows.
    pub delivered: usize,
    /// Rows scheduled for another attempt.
    pub retried: usize,
    /// Rows given up or skipped.
    pub finished: usize,
}

impl Bridge {
    /// Starts building a bridge over a store.
    pub fn builder(store: Store) -> BridgeBuilder {
        BridgeBuilder {
            store,
            sides: Vec::new(),
            retry: RetryPolicy::default(),
        }
    }

    /// The router (hand it to the sides' ingest loops).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs every side's drainer until `shutdown` completes.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for side in self.sides.clone() {
            let me = self.clone();
            let rx = rx.clone();
            tasks.spawn(async move { me.drain_loop(side, rx).await });
        }
        shutdown.await;
        let _ = tx.send(true);
        while tasks.join_next().await.is_some() {}
    }

    async fn drain_loop(
        self: Arc<Self>,
        side: Arc<dyn Side>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let name = side.name();
        let Some(wake) = self.wake.get(name.as_str()).cloned() else {
            return;
        };
        let busy: Arc<Mutex<BTreeSet<ChatId>>> = Arc::new(Mutex::new(BTreeSet::new()));
        let done = Arc::new(Notify::new());
        let mut workers = tokio::task::JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let mut next_wake = Duration::from_secs(30);
            match self.store.pending_outbox(name, 1000).await {
                Ok(rows) => {
                    let now = now_ms();
                    let mut seen = BTreeSet::new();
                    for row in rows {
                        if !seen.insert(row.chat_id) {
                            continue;
                        }
                        if row.next_attempt_at > now {
                            let wait = u64::try_from(row.next_attempt_at - now).unwrap_or(0);
                            next_wake = next_wake.min(Duration::from_millis(wait));
                            continue;
                        }
                        let start = match busy.lock() {
                            Ok(mut b) => b.insert(row.chat_id),
                            Err(_) => false,
                        };
                        if !start {
                            continue;
                        }
                        let me = self.clone();
                        let side = side.clone();
                        let busy = busy.clone();
                        let done = done.clone();
                        let chat = row.chat_id;
                        workers.spawn(async move {
                            if let Err(e) = me.drain_chat(side.as_ref(), chat).await {
                                tracing::warn!(side = %side.name(), %chat, error = %e, "Outbox drain failed; will retry.");
                            }
                            if let Ok(mut b) = busy.lock() {
                                b.remove(&chat);
                            }
                            done.notify_one();
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(side = %name, error = %e, "Cannot read the outbox; retrying.");
                    next_wake = Duration::from_secs(2);
                }
            }
            while workers.try_join_next().is_some() {}
            tokio::select! {
                _ = wake.notified() => {}
                _ = done.notified() => {}
                _ = tokio::time::sleep(next_wake) => {}
                _ = stop.changed() => {}
            }
        }
        while workers.join_next().await.is_some() {}
    }

    /// Delivers the due rows of one chat in order; stops at the first row that must wait.
    async fn drain_chat(&self, side: &dyn Side, chat: ChatId) -> Result<DrainStats, StoreError> {
        let mut stats = DrainStats::default();
        loop {
            let rows = self
                .store
                .pending_outbox_for_chat(side.name(), chat, 50)
                .await?;
            if rows.is_empty() {
                return Ok(stats);
            }
            for row in rows {
                if row.next_attempt_at > now_ms() {
                    return Ok(stats);
                }
                if !self.deliver_row(side, &row, &mut stats).await? {
                    return Ok(stats);
                }
            }
        }
    }

    /// Delivers one row; returns whether the chat may go on.
    async fn deliver_row(
        &self,
        side: &dyn Side,
        row: &OutboxRow,
        stats: &mut DrainStats,
    ) -> Result<bool, StoreError> {
        let mut item = self.load_item(side.name(), row).await?;
        let kind = item.event.name();
        let last_attempt = row.attempts + 1 >= self.retry.max_attempts;
        let mut refused = Vec::new();
        let result = match self.fill_media(side, row, &mut item, last_attempt).await {
            Ok(r) => {
                refused = r;
                side.deliver(&item).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(d) => {
                self.store
                    .complete_outbox(
                        row,
                        side.name(),
                        &d.links,
                        d.chat_link.as_deref(),
                        &d.puppet_links,
                    )
                    .await?;
                stats.delivered += 1;
                // Told once, after the row is done (a retried row would tell again otherwise).
                for n in refused.iter().chain(&d.notices) {
                    self.notify_origin(side, row, &item, n).await;
                }
                tracing::debug!(side = %side.name(), outbox = %row.id, kind, "Delivered.");
                Ok(true)
            }
            Err(SideError::Retryable {
                message,
                retry_after,
            }) => {
                if row.attempts + 1 >= self.retry.max_attempts {
                    self.give_up(side, row, &item, &message).await?;
                    stats.finished += 1;
                    return Ok(true);
                }
                let delay = retry_after.unwrap_or_else(|| self.retry.delay(row.attempts));
                let at =
                    now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                tracing::info!(side = %side.name(), outbox = %row.id, kind, attempts = row.attempts + 1, delay_ms = delay.as_millis() as u64, error = %message, "Delivery failed; will retry.");
                self.store.retry_outbox(row, at, &message).await?;
                stats.retried += 1;
                Ok(false)
            }
            Err(SideError::Permanent(message)) => {
                self.give_up(side, row, &item, &message).await?;
                stats.finished += 1;
                Ok(true)
            }
            Err(SideError::Unsupported(message)) => {
                tracing::info!(side = %side.name(), outbox = %row.id, kind, %message, "Not expressible on this side.");
                self.store.finish_outbox(row, "skipped", &message).await?;
                stats.finished += 1;
                Ok(true)
            }
            Err(SideError::Ignored(message)) => {
                self.store.finish_outbox(row, "skipped", &message).await?;
                stats.finished += 1;
                Ok(true)
            }
        }
    }

    /// Fetches the files of `item` that are still at their origin (`Part::Attachment::source`).
    /// A file that cannot be had becomes a line naming it, returned for a notice to the origin
    /// once the item is delivered. A retryable failure is returned (the delivery is retried),
    /// except on the last attempt, where the file is named instead so the rest still arrives.
    async fn fill_media(
        &self,
        side: &dyn Side,
        row: &OutboxRow,
        item: &mut OutboxItem,
        last_attempt: bool,
    ) -> Result<Vec<String>, SideError> {
        let parts = match &mut item.event {
            EventKind::Message(c) => &mut c.parts,
            EventKind::Edit { content, .. } => &mut content.parts,
            _ => return Ok(Vec::new()),
        };
        let mut refused = Vec::new();
        for part in parts.iter_mut() {
            let Part::Attachment {
                filename,
                mime_type,
                data,
                source: Some(source),
                ..
            } = part
            else {
                continue;
            };
            if !data.is_empty() {
                continue;
            }
            let origin = self
                .sides
                .iter()
                .find(|s| s.name().as_str() == item.origin_side);
            let fetched = match origin {
                Some(o) => o.fetch_media(source).await,
                None => Err(SideError::Unsupported(format!(
                    "the {} side is not running",
                    item.origin_side
                ))),
            };
            let why = match fetched {
                Ok(f) if !f.data.is_empty() => {
                    *data = f.data;
                    if let Some(m) = f.mime_type
                        && mime_type == "application/octet-stream"
                    {
                        *mime_type = m;
                    }
                    continue;
                }
                Ok(_) => "the file is empty".to_owned(),
                Err(e @ SideError::Retryable { .. }) if !last_attempt => return Err(e),
                Err(SideError::Retryable { message, .. }) => {
                    format!("it could not be fetched after many attempts ({message})")
                }
                Err(
                    SideError::Permanent(m) | SideError::Unsupported(m) | SideError::Ignored(m),
                ) => m,
            };
            tracing::warn!(side = %side.name(), outbox = %row.id, file = %filename, reason = %why, "Attachment not bridged.");
            refused.push(format!("📎 {filename} was not bridged: {why}"));
            *part = Part::text(format!("📎 {filename} (not bridged: {why})"));
        }
        Ok(refused)
    }

    async fn give_up(
        &self,
        side: &dyn Side,
        row: &OutboxRow,
        item: &OutboxItem,
        message: &str,
    ) -> Result<(), StoreError> {
        tracing::warn!(side = %side.name(), outbox = %row.id, error = %message, "Delivery failed permanently.");
        self.store.finish_outbox(row, "failed", message).await?;
        self.notify_origin(side, row, item, message).await;
        Ok(())
    }

    /// Tells the people on the side an event came from that it could not (fully) reach `side`.
    async fn notify_origin(
        &self,
        side: &dyn Side,
        row: &OutboxRow,
        item: &OutboxItem,
        message: &str,
    ) {
        if matches!(item.event, EventKind::Notice { .. }) {
            return;
        }
        let Some(origin) = self
            .sides
            .iter()
            .find(|s| s.name().as_str() == item.origin_side)
        else {
            return;
        };
        let text = format!(
            "⚠️ Could not deliver a message to {}: {message}",
            side.name()
        );
        if let Err(e) = self.router.notice(row.chat_id, origin.name(), &text).await {
            tracing::warn!(error = %e, "Could not queue the failure notice.");
        }
    }

    async fn load_item(&self, side: SideName, row: &OutboxRow) -> Result<OutboxItem, StoreError> {
        let msg = self.store.message(row.message_id).await?;
        let chat = self
            .store
            .chat_view(row.chat_id, side, row.message_id)
            .await?;
        let mut tx = self.store.begin().await?;
        let sender = match msg.sender {
            Some(p) => Some(tx.member_view(p, side).await?),
            None => None,
        };
        let mut event = msg.event;
        match &mut event {
            EventKind::Message(c) => {
                if let Some(r) = c.reply_to.as_mut() {
                    resolve_for_side(&mut tx, side, r).await?;
                }
            }
            EventKind::Edit { target, content } => {
                resolve_for_side(&mut tx, side, target).await?;
                if let Some(r) = content.reply_to.as_mut() {
                    resolve_for_side(&mut tx, side, r).await?;
                }
            }
            EventKind::Redaction { target } => {
                resolve_for_side(&mut tx, side, target).await?;
            }
            EventKind::Reaction {
                target, replaces, ..
            } => {
                resolve_for_side(&mut tx, side, target).await?;
                for r in replaces.iter_mut() {
                    resolve_for_side(&mut tx, side, r).await?;
                }
            }
            EventKind::Receipt { targets } => {
                for t in targets.iter_mut() {
                    resolve_for_side(&mut tx, side, t).await?;
                }
            }
            EventKind::Membership { .. }
            | EventKind::ChatInfo { .. }
            | EventKind::Notice { .. } => {}
        }
        tx.commit().await?;
        Ok(OutboxItem {
            outbox_id: row.id,
            attempts: row.attempts,
            chat,
            message_id: msg.id,
            message_uuid: msg.uuid,
            origin_side: msg.origin_side,
            sender,
            ts_ms: msg.ts_ms,
            event,
        })
    }

    /// Delivers every due row of a side once, chat by chat (for tests and tools).
    pub async fn drain_once(&self, side: SideName) -> Result<DrainStats, StoreError> {
        let Some(s) = self.sides.iter().find(|s| s.name() == side).cloned() else {
            return Ok(DrainStats::default());
        };
        let rows = self.store.pending_outbox(side, 100_000).await?;
        let chats: BTreeSet<ChatId> = rows.iter().map(|r| r.chat_id).collect();
        let mut total = DrainStats::default();
        for chat in chats {
            let st = self.drain_chat(s.as_ref(), chat).await?;
            total.delivered += st.delivered;
            total.retried += st.retried;
            total.finished += st.finished;
        }
        Ok(total)
    }
}
