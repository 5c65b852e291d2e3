//! The router: dedupe, chat and puppet assignment, relation resolution, and the outbox, in one transaction.
//!
//! **Architecture Invariant:** an input is acknowledged to its source (HTTP 200, IMAP checkpoint, LMTP 250)
//! only after [`Router::ingest`] returned, i.e. after the event and its outbox rows were committed.

use crate::ids::{ChatId, MessageId, PuppetId, SideName};
use crate::ir::{EventKind, MembershipChange, Relation, RemoteEvent, UserRef};
use crate::side::Capabilities;
use crate::store::{Store, StoreError, StoreTx};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::Notify;

/// Router errors. All are retryable from the caller's view (nothing was committed).
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to an ingested event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored and queued for the other sides.
    Committed {
        /// The chat it went to.
        chat: ChatId,
        /// The stored event.
        message: MessageId,
        /// Whether the chat was created for it.
        new_chat: bool,
    },
    /// Already known (same remote id seen before): nothing done.
    Duplicate {
        /// The event stored earlier.
        message: MessageId,
    },
    /// No chat matches and the sender may not open one: kept in quarantine with the reason.
    Quarantined {
        /// Why.
        reason: String,
    },
}

/// A registered side as the router sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SideEntry {
    pub(crate) name: SideName,
    pub(crate) caps: Capabilities,
}

/// The router. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Router {
    store: Store,
    sides: Arc<Vec<SideEntry>>,
    wake: Arc<BTreeMap<&'static str, Arc<Notify>>>,
}

/// Length of relation excerpts handed to sides.
const EXCERPT_CHARS: usize = 300;

impl Router {
    pub(crate) fn new(
        store: Store,
        sides: Vec<SideEntry>,
        wake: BTreeMap<&'static str, Arc<Notify>>,
    ) -> Self {
        Self {
            store,
            sides: Arc::new(sides),
            wake: Arc::new(wake),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Takes one event from a side. Returns once it is committed (or known to be a duplicate, or kept).
    pub async fn ingest(&self, ev: RemoteEvent) -> Result<IngestOutcome, RouterError> {
        let mut attempt = 0;
        loop {
            match self.try_ingest(&ev).await {
                Err(RouterError::Store(e)) if e.is_unique_violation() && attempt < 3 => {
                    // A concurrent ingest of the same input (or chat) won the race; try again and see it.
                    attempt += 1;
                    tracing::debug!(remote_id = %ev.remote_id, "Retrying ingest after a unique violation.");
                }
                other => return other,
            }
        }
    }

    async fn try_ingest(&self, ev: &RemoteEvent) -> Result<IngestOutcome, RouterError> {
        let mut tx = self.store.begin().await?;
        if let Some(message) = tx.message_by_link(ev.side, &ev.remote_id).await? {
            tx.commit().await?;
            return Ok(IngestOutcome::Duplicate { message });
        }
        let (chat, new_chat) = match locate_chat(&mut tx, ev).await? {
            Some(c) => (c, false),
            None => match &ev.chat.create {
                Some(nc) => {
                    let group_id = new_group_id();
                    let chat = tx
                        .create_chat(&group_id, &nc.name, &nc.topic, ev.ts_ms / 1000)
                        .await?;
                    // The chat is linked on the side it came from: by the side's id, or by its own group id.
                    let link = nc.remote_chat_id.as_deref().unwrap_or(group_id.as_str());
                    tx.link_chat(chat, ev.side, link).await?;
                    let ts = ev.ts_ms / 1000;
                    for m in &nc.members {
                        let p = tx.ensure_puppet(m).await?;
                        tx.set_member(chat, p, true, ts).await?;
                    }
                    (chat, true)
                }
                None => {
                    let reason =
                        "no chat matches and the sender may not open a new chat".to_owned();
                    tx.quarantine(ev.side, &ev.remote_id, &reason, ev.raw.as_deref())
                        .await?;
                    tx.commit().await?;
                    tracing::warn!(side = %ev.side, remote_id = %ev.remote_id, sender = %ev.sender.remote_id, %reason, "Input kept in quarantine.");
                    return Ok(IngestOutcome::Quarantined { reason });
                }
            },
        };
        if !new_chat
            && let Some(rc) = &ev.chat.remote_chat_id
            && tx.chat_link_of(chat, ev.side).await?.is_none()
        {
            tx.link_chat(chat, ev.side, rc).await?;
        }
        let sender = tx.ensure_puppet(&ev.sender).await?;
        let ts_s = ev.ts_ms / 1000;
        // A sender becomes a member when a chat opens with them or when they first write in it.
        let is_message = matches!(ev.kind, EventKind::Message(_));
        if new_chat || (is_message && !tx.member_set(chat).await?.contains(&sender)) {
            tx.set_member(chat, sender, true, ts_s).await?;
        }

        let mut event = ev.kind.clone();
        let mut target = None;
        let mut deliverable = true;
        let mut replaced_info = None;
        if let EventKind::Redaction { target: r } | EventKind::Reaction { target: r, .. } =
            &mut event
        {
            target = resolve(&mut tx, ev.side, r, chat).await?;
            if target.is_none() {
                tracing::warn!(remote_id = %ev.remote_id, kind = ev.kind.name(), "Target unknown; stored, not bridged.");
                deliverable = false;
            }
        }
        match &mut event {
            EventKind::Message(content) => {
                if let Some(r) = content.reply_to.as_mut()
                    && resolve(&mut tx, ev.side, r, chat).await?.is_none()
                {
                    tracing::info!(remote_id = %ev.remote_id, "Reply target unknown; bridging as a plain message.");
                    content.reply_to = None;
                }
            }
            EventKind::Edit { target: r, content } => {
                match resolve_original(&mut tx, ev.side, r, chat).await? {
                    Some(orig) => target = Some(orig),
                    None => {
                        tracing::info!(remote_id = %ev.remote_id, "Edit target unknown; bridging the new text as a message.");
                        event = EventKind::Message(std::mem::take(content));
                    }
                }
            }
            EventKind::Redaction { .. } => {
                if let Some(t) = target {
                    // Deleting one's own reaction takes it back: the other sides get a
                    // reaction change (what the person still holds on the message, or none).
                    let stored = tx.message(t).await?;
                    if let (
                        EventKind::Reaction {
                            target: rt, key, ..
                        },
                        Some(by),
                    ) = (&stored.event, stored.sender)
                        && by == sender
                        && let Some(reacted) = rt.message_id
                    {
                        tx.remove_reaction(reacted, sender, key).await?;
                        let still = tx.reactions_by(reacted, sender).await?;
                        event = EventKind::Reaction {
                            target: Relation {
                                message_id: Some(reacted),
                                ..Relation::default()
                            },
                            key: still.last().map(|(k, _)| k.clone()).unwrap_or_default(),
                            replaces: vec![Relation {
                                message_id: Some(t),
                                ..Relation::default()
                            }],
                        };
                        target = Some(reacted);
                    }
                }
            }
            EventKind::Reaction { key, replaces, .. } => {
                if let Some(t) = target {
                    // Where a person holds one reaction per message, a new one replaces the
                    // earlier ones; an empty key takes them all back.
                    let single = !self
                        .sides
                        .iter()
                        .find(|s| s.name == ev.side)
                        .is_some_and(|s| s.caps.multiple_reactions);
                    let held = tx.reactions_by(t, sender).await?;
                    let repeat = !key.is_empty() && held.iter().any(|(k, _)| k == key);
                    if single && repeat {
                        // The same reaction again (a second device): nothing changes.
                        deliverable = false;
                    } else {
                        *replaces = held
                            .iter()
                            .filter(|(k, _)| key.is_empty() || (single && k != key))
                            .map(|(_, m)| Relation {
                                message_id: Some(*m),
                                ..Relation::default()
                            })
                            .collect();
                        if single {
                            tx.clear_reactions(t, sender).await?;
                        }
                    }
                }
            }
            EventKind::Receipt { targets } => {
                let mut seen = Vec::with_capacity(targets.len());
                for mut r in std::mem::take(targets) {
                    // Known targets the reader had not seen yet: one receipt per reader and message.
                    if let Some(m) = resolve(&mut tx, ev.side, &mut r, chat).await?
                        && tx.mark_seen(m, sender).await?
                    {
                        seen.push(r);
                    }
                }
                *targets = seen;
                deliverable = !targets.is_empty();
            }
            EventKind::Membership { subject, change } => {
                let p = tx.ensure_puppet(subject).await?;
                let changed = tx
                    .set_member(chat, p, *change == MembershipChange::Join, ts_s)
                    .await?;
                deliverable = changed;
            }
            EventKind::ChatInfo { name, topic } => {
                let current = tx.chat(chat).await?;
                if name.as_deref() == Some(current.name.as_str()) {
                    *name = None;
                }
                if topic.as_deref() == Some(current.topic.as_str()) {
                    *topic = None;
                }
                tx.update_chat_info(chat, name.as_deref(), topic.as_deref(), ts_s)
                    .await?;
                deliverable = name.is_some() || topic.is_some();
                if deliverable {
                    replaced_info = Some(current);
                }
            }
            EventKind::Notice { .. } => {}
        }

        let message = tx
            .insert_message(
                &new_uuid(),
                chat,
                Some(sender),
                ev.side.as_str(),
                &event,
                target,
                ev.ts_ms,
            )
            .await?;
        tx.link_message(message, ev.side, &ev.remote_id, "").await?;
        if let Some(before) = &replaced_info {
            tx.record_chat_info_change(message, before).await?;
        }
        if let (EventKind::Reaction { key, .. }, Some(t)) = (&event, target) {
            tx.set_reaction(t, sender, key, message).await?;
        }
        let mut woken = Vec::new();
        if deliverable {
            // A side takes part when the chat is linked there, when it has members from there
            // (a chat opened on Matrix with email members reaches email before email links it),
            // or when the event is about one of its people (the last one leaving).
            let mut linked: BTreeSet<String> = tx.chat_sides(chat).await?.into_iter().collect();
            linked.extend(tx.member_sides(chat).await?);
            if let EventKind::Membership { subject, .. } = &event {
                linked.insert(subject.side.as_str().to_owned());
            }
            for s in self.sides.iter() {
                if s.name == ev.side || !wants(s, &event) {
                    continue;
                }
                if s.caps.auto_portal || linked.contains(s.name.as_str()) {
                    tx.enqueue(s.name.as_str(), chat, message).await?;
                    woken.push(s.name.as_str());
                }
            }
        }
        tx.commit().await?;
        // The commit instant of an input (benches/matrix_e2e.rs times ingest by this line).
        tracing::debug!(side = %ev.side, remote_id = %ev.remote_id, %chat, "Committed.");
        for w in woken {
            if let Some(n) = self.wake.get(w) {
                n.notify_one();
            }
        }
        Ok(IngestOutcome::Committed {
            chat,
            message,
            new_chat,
        })
    }

    /// Posts a notice from the bridge into a chat, for one side only.
    pub async fn notice(
        &self,
        chat: ChatId,
        side: SideName,
        text: &str,
    ) -> Result<MessageId, RouterError> {
        let mut tx = self.store.begin().await?;
        let event = EventKind::Notice {
            text: text.to_owned(),
        };
        let message = tx
            .insert_message(
                &new_uuid(),
                chat,
                None,
                "bridge",
                &event,
                None,
                crate::store::now_ms(),
            )
            .await?;
        tx.enqueue(side.as_str(), chat, message).await?;
        tx.commit().await?;
        if let Some(n) = self.wake.get(side.as_str()) {
            n.notify_one();
        }
        Ok(message)
    }

    /// Opens a chat from the bridge itself (e.g. a `create` command), linked on `side` if given,
    /// with the given members. Returns the chat.
    pub async fn create_chat(
        &self,
        name: &str,
        topic: &str,
        link: Option<(SideName, &str)>,
        members: &[UserRef],
    ) -> Result<ChatId, RouterError> {
        let mut tx = self.store.begin().await?;
        let ts = crate::store::now_ms() / 1000;
        let chat = tx.create_chat(&new_group_id(), name, topic, ts).await?;
        if let Some((side, remote)) = link {
            tx.link_chat(chat, side, remote).await?;
        }
        for m in members {
            let p = tx.ensure_puppet(m).await?;
            tx.set_member(chat, p, true, ts).await?;
        }
        tx.commit().await?;
        Ok(chat)
    }

    /// Wakes a side's drainer (e.g. after linking a chat).
    pub fn wake(&self, side: SideName) {
        if let Some(n) = self.wake.get(side.as_str()) {
            n.notify_one();
        }
    }
}

fn wants(side: &SideEntry, event: &EventKind) -> bool {
    match event {
        EventKind::Receipt { .. } => side.caps.receipts,
        EventKind::Notice { .. } => false,
        _ => true,
    }
}

async fn locate_chat(tx: &mut StoreTx, ev: &RemoteEvent) -> Result<Option<ChatId>, StoreError> {
    if let Some(rc) = &ev.chat.remote_chat_id
        && let Some(c) = tx.chat_by_link(ev.side, rc).await?
    {
        return Ok(Some(c));
    }
    for mid in &ev.chat.via_messages {
        if let Some(m) = tx.message_by_link(ev.side, mid).await?
            && let Some(c) = tx.chat_of_message(m).await?
        {
            return Ok(Some(c));
        }
    }
    if let Some((name, members)) = &ev.chat.name_and_members {
        let mut wanted = BTreeSet::new();
        for u in members {
            match tx.puppet_by_link(u.side, &u.remote_id).await? {
                Some(p) => {
                    wanted.insert(p);
                }
                None => return Ok(None),
            }
        }
        for c in tx.chats_named(name).await? {
            let have: BTreeSet<PuppetId> = tx.member_set(c).await?;
            if have == wanted {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Fills `message_id`; returns it if the target is known and in the same chat.
async fn resolve(
    tx: &mut StoreTx,
    side: SideName,
    r: &mut Relation,
    chat: ChatId,
) -> Result<Option<MessageId>, StoreError> {
    let Some(rid) = r.remote_id.as_deref() else {
        return Ok(r.message_id);
    };
    let Some(m) = tx.message_by_link(side, rid).await? else {
        return Ok(None);
    };
    if tx.chat_of_message(m).await? != Some(chat) {
        return Ok(None);
    }
    r.message_id = Some(m);
    r.remote_id = None;
    Ok(Some(m))
}

/// Like [`resolve`], but an edit of an edit points at the original message.
async fn resolve_original(
    tx: &mut StoreTx,
    side: SideName,
    r: &mut Relation,
    chat: ChatId,
) -> Result<Option<MessageId>, StoreError> {
    let Some(mut m) = resolve(tx, side, r, chat).await? else {
        return Ok(None);
    };
    for _ in 0..8 {
        let stored = tx.message(m).await?;
        match stored.event {
            EventKind::Edit { target, .. } => match target.message_id {
                Some(t) => m = t,
                None => break,
            },
            _ => break,
        }
    }
    r.message_id = Some(m);
    Ok(Some(m))
}

/// Fills a relation for delivery on `side`: the target's remote id there, its excerpt, its sender
/// (name, and id on `side`) and whether that sender asked for a read receipt.
pub(crate) async fn resolve_for_side(
    tx: &mut StoreTx,
    side: SideName,
    r: &mut Relation,
) -> Result<(), StoreError> {
    let Some(m) = r.message_id else {
        return Ok(());
    };
    r.remote_id = tx.link_of_message(m, side).await?;
    let stored = tx.message(m).await?;
    if let EventKind::Message(c) = &stored.event {
        let text = c.text();
        r.excerpt = Some(text.chars().take(EXCERPT_CHARS).collect());
        r.wants_receipt = c.wants_receipt;
    }
    if let Some(p) = stored.sender {
        let who = tx.member_view(p, side).await?;
        r.sender_name = Some(who.display_name);
        r.sender_remote_id = who.remote_id_here;
    }
    Ok(())
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new Chat-Group-ID: 24 characters of the URL-safe base64 alphabet, as Delta Chat makes them.
pub fn new_group_id() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| {
            let i = rng.random_range(0..ALPHABET.len());
            char::from(ALPHABET.get(i).copied().unwrap_or(b'A'))
        })
        .collect()
}
