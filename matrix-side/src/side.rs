//! `MatrixSide`: delivers the hub's outbox into Matrix rooms as ghosts.

use crate::client::{ClientError, Download, MatrixClient, txn_id};
use crate::config::MatrixSettings;
use crate::convert::{
    MediaInfo, edit_content, first_part_content, media_content, part_content, reaction_content,
};
use crate::ids::{GhostNamer, is_user_id, localpart_of};
use async_trait::async_trait;
use bridge_core::ir::{AttachmentKind, EventKind, MembershipChange, Part, Relation};
use bridge_core::{
    Capabilities, Delivered, Fetched, MemberView, OutboxItem, Side, SideError, SideName, Store,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Upload limit assumed when the homeserver does not say (as mautrix does).
const DEFAULT_UPLOAD_LIMIT: u64 = 50 * 1024 * 1024;

/// Items older than this are sent with `?ts=` (catch-up after downtime).
const MASSAGE_TS_AFTER_MS: i64 = 10_000;

/// The Matrix side.
#[derive(Debug)]
pub struct MatrixSide {
    client: MatrixClient,
    namer: GhostNamer,
    store: Store,
    /// Ghosts known to be registered with their current display name: (user id, name).
    ghosts: Mutex<BTreeSet<(String, String)>>,
    /// (room, user) pairs known to be joined.
    joined: Mutex<BTreeSet<(String, String)>>,
    /// The homeserver's upload limit, once read.
    upload_limit: tokio::sync::OnceCell<u64>,
    /// Ghost display name template.
    displayname_template: String,
    /// Largest file fetched from Matrix.
    max_file_bytes: u64,
}

fn media_key(message_uuid: &str, part: &str) -> String {
    format!("matrix.media.{message_uuid}.{part}")
}

/// A size for people: `1.5 MB`, `830 kB`.
fn human_size(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1_000_000.0)
    } else {
        format!("{} kB", n.div_ceil(1000))
    }
}

fn portal_key(chat: i64) -> String {
    format!("matrix.portal.{chat}")
}

fn ghost_key(user: &str) -> String {
    format!("matrix.ghost.{user}")
}

fn store_err(e: bridge_core::StoreError) -> SideError {
    SideError::retry(format!("store: {e}"))
}

/// The `createRoom` body of a portal room: private, named, with `m.bridge` state, inviting `invite`.
/// Power level of the Matrix people a portal is opened for: enough to rename the room, set its
/// topic, invite and remove people (as every member of a Delta Chat group may), not to change the
/// bridge state or power levels.
const MEMBER_POWER: i64 = 50;

pub(crate) fn portal_body(
    namer: &GhostNamer,
    group_id: &str,
    name: &str,
    topic: &str,
    invite: &[&str],
    creator_outside_users: bool,
) -> Value {
    let mut users = serde_json::Map::new();
    if !creator_outside_users {
        users.insert(namer.bot_user_id(), json!(100));
    }
    for u in invite {
        users.insert((*u).to_owned(), json!(MEMBER_POWER));
    }
    let info = json!({
        "bridgebot": namer.bot_user_id(),
        "protocol": {"id": "coi", "displayname": "Email (COI)"},
        "channel": {"id": group_id, "displayname": name},
    });
    let state_key = format!("coi://email/{group_id}");
    let mut body = json!({
        "preset": "private_chat",
        "name": name,
        "invite": invite,
        "power_level_content_override": {
            "users": users,
            "invite": 0,
            "kick": MEMBER_POWER,
            "events": {
                "m.room.name": MEMBER_POWER,
                "m.room.topic": MEMBER_POWER,
                "m.room.avatar": MEMBER_POWER,
                "m.bridge": 100,
                "uk.half-shot.bridge": 100,
                "m.room.power_levels": 100,
            },
        },
        "initial_state": [
            {"type": "m.bridge", "state_key": state_key, "content": info},
            {"type": "uk.half-shot.bridge", "state_key": state_key, "content": info},
        ],
    });
    if !topic.is_empty() {
        body["topic"] = json!(topic);
    }
    body
}

impl MatrixSide {
    /// Builds the side (no I/O).
    pub fn new(settings: &MatrixSettings, store: Store) -> Result<Self, ClientError> {
        Ok(Self {
            client: MatrixClient::new(&settings.homeserver_url, &settings.as_token)?,
            namer: settings.namer.clone(),
            store,
            ghosts: Mutex::new(BTreeSet::new()),
            joined: Mutex::new(BTreeSet::new()),
            upload_limit: tokio::sync::OnceCell::new(),
            displayname_template: settings.displayname_template.clone(),
            max_file_bytes: settings.max_file_bytes,
        })
    }

    /// The largest upload the homeserver takes (asked once; 50 MiB when it does not say).
    async fn upload_limit(&self) -> u64 {
        let found = self
            .upload_limit
            .get_or_try_init(|| async {
                self.client
                    .media_upload_limit()
                    .await
                    .map(|n| n.unwrap_or(DEFAULT_UPLOAD_LIMIT))
            })
            .await;
        match found {
            Ok(n) => *n,
            Err(e) => {
                // Not kept: the next file asks again.
                tracing::warn!(error = %e, "Could not read the media config; assuming 50 MiB this time.");
                DEFAULT_UPLOAD_LIMIT
            }
        }
    }

    /// Uploads an attachment as the sender (once per outbox event and part) and sends it; a file
    /// larger than the homeserver takes becomes a notice that says so.
    async fn send_attachment(
        &self,
        room: &str,
        actor: Option<&str>,
        item: &OutboxItem,
        key: &str,
        part: &Part,
        reply: Option<&Relation>,
    ) -> Result<String, SideError> {
        let Part::Attachment {
            filename,
            mime_type,
            kind,
            data,
            duration_ms,
            ..
        } = part
        else {
            return Err(SideError::Permanent("not an attachment".into()));
        };
        let size = data.len() as u64;
        let limit = self.upload_limit().await;
        let too_large = |limit: u64| {
            json!({"msgtype": "m.notice", "body": format!(
                "📎 {filename} ({}) was not bridged: this homeserver takes files up to {}.",
                human_size(size), human_size(limit))})
        };
        if size > limit {
            tracing::info!(%filename, size, limit, "Attachment larger than the homeserver's limit.");
            return self
                .send(room, actor, item, key, "m.room.message", &too_large(limit))
                .await;
        }
        let mkey = media_key(&item.message_uuid, key);
        let mxc = match self.store.kv_get(&mkey).await.map_err(store_err)? {
            Some(m) => m,
            None => {
                match self
                    .client
                    .upload(actor, filename, mime_type, data.clone())
                    .await
                {
                    Ok(m) => {
                        self.store.kv_set(&mkey, &m).await.map_err(store_err)?;
                        m
                    }
                    Err(ClientError::Http { status: 413, .. }) => {
                        return self
                            .send(room, actor, item, key, "m.room.message", &too_large(limit))
                            .await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let dimensions = matches!(kind, AttachmentKind::Image | AttachmentKind::Sticker)
            .then(|| imagesize::blob_size(data).ok())
            .flatten()
            .map(|d| (d.width as u64, d.height as u64));
        let info = MediaInfo {
            mime_type: mime_type.clone(),
            size,
            dimensions,
            duration_ms: *duration_ms,
        };
        let (event_type, content) = media_content(*kind, filename, &mxc, &info, reply);
        self.send(room, actor, item, key, event_type, &content)
            .await
    }

    /// The client (for start-up and tools).
    pub fn client(&self) -> &MatrixClient {
        &self.client
    }

    /// The ghost that stands for a member, or `None` for people native to Matrix.
    fn ghost_of(&self, m: &MemberView) -> Option<String> {
        if m.origin_side == SideName::MATRIX.as_str() {
            return None;
        }
        Some(match &m.remote_id_here {
            Some(id) if self.namer.is_ours(id) => id.clone(),
            _ => self.namer.user_id(&m.origin_side, &m.native_id),
        })
    }

    /// A ghost's display name from the template (`{name}`: the person's name, or their address
    /// when they have none; `{address}`; `{side}`).
    fn ghost_name(&self, side: &str, native_id: &str, display_name: &str) -> String {
        let name = if display_name.trim().is_empty() {
            native_id
        } else {
            display_name.trim()
        };
        self.displayname_template
            .replace("{name}", name)
            .replace("{address}", native_id)
            .replace("{side}", side)
    }

    /// Registers a ghost and sets its display name, once per name.
    async fn ensure_ghost(&self, user: &str, name: &str) -> Result<(), SideError> {
        let key = (user.to_owned(), name.to_owned());
        if self.ghosts.lock().is_ok_and(|g| g.contains(&key)) {
            return Ok(());
        }
        let stored = self
            .store
            .kv_get(&ghost_key(user))
            .await
            .map_err(store_err)?;
        if stored.as_deref() != Some(name) {
            self.client.register(localpart_of(user)).await?;
            if !name.is_empty() {
                self.client.set_displayname(user, name).await?;
            }
            self.store
                .kv_set(&ghost_key(user), name)
                .await
                .map_err(store_err)?;
        }
        if let Ok(mut g) = self.ghosts.lock() {
            g.insert(key);
        }
        Ok(())
    }

    /// Makes `user` a joined member of `room` (the bot invites it when needed).
    async fn ensure_joined(&self, room: &str, user: &str) -> Result<(), SideError> {
        let key = (room.to_owned(), user.to_owned());
        if self.joined.lock().is_ok_and(|j| j.contains(&key)) {
            return Ok(());
        }
        match self.client.join(room, user).await {
            Ok(()) => {}
            Err(e) if e.errcode() == Some("M_FORBIDDEN") => {
                match self.client.invite(room, None, user).await {
                    Ok(()) => {}
                    // Already invited or joined: the join below tells.
                    Err(e) if e.errcode() == Some("M_FORBIDDEN") => {}
                    Err(e) => return Err(e.into()),
                }
                self.client.join(room, user).await?;
            }
            Err(e) => return Err(e.into()),
        }
        if let Ok(mut j) = self.joined.lock() {
            j.insert(key);
        }
        Ok(())
    }

    /// The chat's room; creates it (as the bot) on first delivery.
    async fn ensure_portal(&self, item: &OutboxItem) -> Result<(String, bool), SideError> {
        if let Some(room) = &item.chat.remote_chat_id {
            return Ok((room.clone(), false));
        }
        let key = portal_key(item.chat.id.0);
        if let Some(room) = self.store.kv_get(&key).await.map_err(store_err)? {
            return Ok((room, true));
        }
        let invite: Vec<&str> = item
            .chat
            .members
            .iter()
            .filter(|m| {
                m.joined && m.origin_side == SideName::MATRIX.as_str() && is_user_id(&m.native_id)
            })
            .map(|m| m.native_id.as_str())
            .collect();
        let body = portal_body(
            &self.namer,
            &item.chat.group_id,
            &item.chat.name,
            &item.chat.topic,
            &invite,
            self.client.creators_outside_users().await,
        );
        let room = self.client.create_room(&body).await?;
        tracing::info!(chat = %item.chat.id, %room, "Portal room created.");
        // Kept before the hub links it, so a crash in between does not open a second room.
        self.store.kv_set(&key, &room).await.map_err(store_err)?;
        Ok((room, true))
    }

    async fn send(
        &self,
        room: &str,
        actor: Option<&str>,
        item: &OutboxItem,
        part: &str,
        event_type: &str,
        content: &Value,
    ) -> Result<String, SideError> {
        let who = actor.map_or_else(|| self.namer.bot_user_id(), str::to_owned);
        let txn = txn_id(&item.message_uuid, part, &who);
        let ts =
            (bridge_core::store::now_ms() - item.ts_ms > MASSAGE_TS_AFTER_MS).then_some(item.ts_ms);
        match self
            .client
            .send(room, actor, event_type, &txn, content, ts)
            .await
        {
            // The ghost was removed behind our back (kicked, or the cache is stale): join again.
            Err(e) if e.errcode() == Some("M_FORBIDDEN") && actor.is_some() => {
                let ghost = actor.unwrap_or_default();
                tracing::info!(%room, %ghost, "Ghost not in the room; joining again.");
                if let Ok(mut j) = self.joined.lock() {
                    j.remove(&(room.to_owned(), ghost.to_owned()));
                }
                self.ensure_joined(room, ghost).await?;
                Ok(self
                    .client
                    .send(room, actor, event_type, &txn, content, ts)
                    .await?)
            }
            r => Ok(r?),
        }
    }
}

#[async_trait]
impl Side for MatrixSide {
    fn name(&self) -> SideName {
        SideName::MATRIX
    }

    async fn fetch_media(&self, source: &str) -> Result<Fetched, SideError> {
        // Through the authenticated media API, as the bot; at most `max_file_bytes`.
        match self.client.download(source, self.max_file_bytes).await {
            Ok(Download::Bytes { data, content_type }) => Ok(Fetched {
                data,
                mime_type: content_type
                    .as_deref()
                    .and_then(|ct| ct.split(';').next())
                    .map(|m| m.trim().to_ascii_lowercase())
                    .filter(|m| m.contains('/')),
            }),
            Ok(Download::TooLarge) => Err(SideError::Permanent(format!(
                "it is larger than the {} this bridge fetches from Matrix (matrix.max_file_bytes)",
                human_size(self.max_file_bytes)
            ))),
            // Gone, forbidden, not a media id: asking again will not help.
            Err(e @ ClientError::Http { status, .. }) if (400..500).contains(&status) => Err(
                SideError::Permanent(format!("it could not be fetched ({e})")),
            ),
            Err(e) => Err(e.into()),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edits: true,
            redactions: true,
            reactions: true,
            attachments: true,
            receipts: true,
            auto_portal: true,
            multiple_reactions: true,
        }
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<Delivered, SideError> {
        let (room, created) = self.ensure_portal(item).await?;
        let mut out = Delivered {
            chat_link: created.then(|| room.clone()),
            ..Delivered::default()
        };
        // Who speaks: the sender's ghost, or the bot for bridge notices and Matrix-native senders.
        let actor = item.sender.as_ref().and_then(|s| self.ghost_of(s));
        if let (Some(ghost), Some(sender)) = (&actor, &item.sender) {
            let name =
                self.ghost_name(&sender.origin_side, &sender.native_id, &sender.display_name);
            self.ensure_ghost(ghost, &name).await?;
            if sender.remote_id_here.as_deref() != Some(ghost.as_str()) {
                out.puppet_links.push((sender.puppet_id, ghost.clone()));
            }
            if !matches!(
                item.event,
                EventKind::Membership {
                    change: MembershipChange::Leave,
                    ..
                }
            ) {
                self.ensure_joined(&room, ghost).await?;
            }
        }
        let actor = actor.as_deref();
        match &item.event {
            EventKind::Message(content) => {
                for (i, part) in content.parts.iter().enumerate() {
                    let key = if i == 0 { String::new() } else { i.to_string() };
                    let reply = if i == 0 {
                        content.reply_to.as_ref()
                    } else {
                        None
                    };
                    let id = if matches!(part, Part::Attachment { .. }) {
                        self.send_attachment(&room, actor, item, &key, part, reply)
                            .await?
                    } else {
                        let c = part_content(part, reply);
                        self.send(&room, actor, item, &key, "m.room.message", &c)
                            .await?
                    };
                    out.links.push((key, id));
                }
            }
            EventKind::Edit { target, content } => {
                let Some(t) = target.remote_id.as_deref() else {
                    return Err(SideError::Ignored("edit target is not on Matrix".into()));
                };
                let c = edit_content(t, &first_part_content(content));
                let id = self
                    .send(&room, actor, item, "", "m.room.message", &c)
                    .await?;
                out.links.push((String::new(), id));
            }
            EventKind::Redaction { target } => {
                let Some(t) = target.remote_id.as_deref() else {
                    return Err(SideError::Ignored(
                        "redaction target is not on Matrix".into(),
                    ));
                };
                let who = actor.map_or_else(|| self.namer.bot_user_id(), str::to_owned);
                let id = self
                    .client
                    .redact(&room, actor, t, &txn_id(&item.message_uuid, "", &who))
                    .await?;
                out.links.push((String::new(), id));
            }
            EventKind::Reaction {
                target,
                key,
                replaces,
            } => {
                // The ghost's earlier reactions that this one replaces (or takes back) are
                // redacted first; each redaction has its own deterministic txn id.
                let who = actor.map_or_else(|| self.namer.bot_user_id(), str::to_owned);
                for (i, old) in replaces.iter().enumerate() {
                    if let Some(old_id) = old.remote_id.as_deref() {
                        let txn = txn_id(&item.message_uuid, &format!("undo{i}"), &who);
                        match self.client.redact(&room, actor, old_id, &txn).await {
                            Ok(_) => {}
                            // Already gone (redacted by someone else): nothing to undo.
                            Err(e) if e.errcode() == Some("M_NOT_FOUND") => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                if key.is_empty() {
                    return if replaces.iter().any(|r| r.remote_id.is_some()) {
                        Ok(out)
                    } else {
                        Err(SideError::Ignored(
                            "no reaction of theirs on Matrix to take back".into(),
                        ))
                    };
                }
                let Some(t) = target.remote_id.as_deref() else {
                    return Err(SideError::Ignored(
                        "reaction target is not on Matrix".into(),
                    ));
                };
                let id = match self
                    .send(
                        &room,
                        actor,
                        item,
                        "",
                        "m.reaction",
                        &reaction_content(t, key),
                    )
                    .await
                {
                    // Synapse refuses a second identical annotation by the same user.
                    Err(SideError::Permanent(m)) if m.contains("M_DUPLICATE_ANNOTATION") => {
                        return Err(SideError::Ignored(
                            "the same reaction is already there".into(),
                        ));
                    }
                    r => r?,
                };
                out.links.push((String::new(), id));
            }
            EventKind::Membership { subject, change } => {
                if subject.side == SideName::MATRIX {
                    return Err(SideError::Ignored(
                        "a Matrix person's own membership".into(),
                    ));
                }
                let ghost = self
                    .namer
                    .user_id(subject.side.as_str(), &subject.remote_id);
                match change {
                    MembershipChange::Join => {
                        let name = self.ghost_name(
                            subject.side.as_str(),
                            &subject.remote_id,
                            subject.display_name.as_deref().unwrap_or(""),
                        );
                        self.ensure_ghost(&ghost, &name).await?;
                        self.ensure_joined(&room, &ghost).await?;
                    }
                    MembershipChange::Leave => {
                        match self.client.leave(&room, &ghost).await {
                            Ok(()) => {}
                            Err(e) if e.errcode() == Some("M_FORBIDDEN") => {}
                            Err(e) => return Err(e.into()),
                        }
                        if let Ok(mut j) = self.joined.lock() {
                            j.remove(&(room.clone(), ghost));
                        }
                    }
                }
            }
            EventKind::ChatInfo { name, topic } => {
                if let Some(n) = name {
                    self.client
                        .state(&room, None, "m.room.name", "", &json!({"name": n}))
                        .await?;
                }
                if let Some(t) = topic {
                    self.client
                        .state(&room, None, "m.room.topic", "", &json!({"topic": t}))
                        .await?;
                }
            }
            EventKind::Receipt { targets } => {
                let Some(a) = actor else {
                    return Err(SideError::Ignored("receipt without a ghost".into()));
                };
                if let Some(t) = targets.iter().rev().find_map(|t| t.remote_id.as_deref()) {
                    self.client.receipt(&room, a, t).await?;
                }
            }
            EventKind::Notice { text } => {
                let c = json!({"msgtype": "m.notice", "body": text});
                let id = self
                    .send(&room, None, item, "", "m.room.message", &c)
                    .await?;
                out.links.push((String::new(), id));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::MatrixConfig;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use bridge_core::ir::{MessageContent, Part};
    use bridge_core::testing::TestBridge;
    use bridge_core::{ChatId, ChatView, MessageId, OutboxId, PuppetId};
    use std::sync::Arc;
    use std::time::Duration;

    /// A scripted homeserver that records every call.
    #[derive(Default)]
    struct FakeHs {
        calls: Mutex<Vec<(String, String, String)>>,
        joins: Mutex<u32>,
        sends: Mutex<u32>,
    }

    async fn handle(
        State(hs): State<Arc<FakeHs>>,
        method: Method,
        uri: Uri,
        body: Bytes,
    ) -> Response {
        let path = uri.path().to_owned();
        hs.calls.lock().unwrap().push((
            method.to_string(),
            format!("{path}?{}", uri.query().unwrap_or("")),
            String::from_utf8_lossy(&body).into_owned(),
        ));
        let err = |s: StatusCode, code: &str| {
            (s, axum::Json(json!({"errcode": code, "error": code}))).into_response()
        };
        if path.ends_with("/register") {
            return err(StatusCode::BAD_REQUEST, "M_USER_IN_USE");
        }
        if path == "/_matrix/client/v1/media/download/matrix.test/cat" {
            let mut r = (StatusCode::OK, b"0123456789".to_vec()).into_response();
            r.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("image/png; charset=binary"),
            );
            return r;
        }
        if path.contains("/media/download/") {
            return err(StatusCode::NOT_FOUND, "M_NOT_FOUND");
        }
        if path.ends_with("/media/config") {
            return axum::Json(json!({"m.upload.size": 100})).into_response();
        }
        if path.ends_with("/upload") {
            return axum::Json(json!({"content_uri": "mxc://matrix.test/up1"})).into_response();
        }
        if path.ends_with("/createRoom") {
            return axum::Json(json!({"room_id": "!new:matrix.test"})).into_response();
        }
        if path.contains("/join/") {
            let mut j = hs.joins.lock().unwrap();
            *j += 1;
            if *j == 1 {
                return err(StatusCode::FORBIDDEN, "M_FORBIDDEN");
            }
            return axum::Json(json!({"room_id": "!new:matrix.test"})).into_response();
        }
        if path.contains("/send/") {
            let mut n = hs.sends.lock().unwrap();
            *n += 1;
            if *n == 1 {
                let mut r = err(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
                r.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("2"));
                return r;
            }
            return axum::Json(json!({"event_id": "$sent"})).into_response();
        }
        axum::Json(json!({})).into_response()
    }

    fn member(id: i64, side: &str, native: &str, name: &str) -> MemberView {
        MemberView {
            puppet_id: PuppetId(id),
            display_name: name.into(),
            origin_side: side.into(),
            native_id: native.into(),
            remote_id_here: None,
            joined: true,
            changed_ts: 0,
        }
    }

    async fn fake_side() -> (Arc<FakeHs>, TestBridge, MatrixSide) {
        let hs = Arc::new(FakeHs::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(handle).with_state(hs.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tb = TestBridge::new(&[]).await.unwrap();
        let settings = MatrixConfig::new(&base, "matrix.test", "as", "hs")
            .validate()
            .unwrap();
        let side = MatrixSide::new(&settings, tb.bridge.store().clone()).unwrap();
        (hs, tb, side)
    }

    fn item(sender: MemberView, parts: Vec<Part>) -> OutboxItem {
        OutboxItem {
            outbox_id: OutboxId(1),
            attempts: 0,
            chat: ChatView {
                id: ChatId(7),
                group_id: "G1".into(),
                name: "Team".into(),
                name_ts: 0,
                topic: String::new(),
                remote_chat_id: Some("!room:matrix.test".into()),
                members: vec![sender.clone()],
                thread_root: None,
                recent: Vec::new(),
            },
            message_id: MessageId(1),
            message_uuid: "uuid-1".into(),
            origin_side: "email".into(),
            sender: Some(sender),
            ts_ms: bridge_core::store::now_ms(),
            event: EventKind::Message(MessageContent {
                parts,
                ..MessageContent::default()
            }),
        }
    }

    #[tokio::test]
    async fn media_are_fetched_through_authenticated_media_within_the_limit() {
        let (_hs, tb, side) = fake_side().await;
        let f = side.fetch_media("mxc://matrix.test/cat").await.unwrap();
        assert_eq!(f.data, b"0123456789");
        assert_eq!(f.mime_type.as_deref(), Some("image/png"));
        let gone = side.fetch_media("mxc://matrix.test/gone").await;
        assert!(
            matches!(&gone, Err(SideError::Permanent(m)) if m.contains("404")),
            "{gone:?}"
        );
        let bad = side.fetch_media("https://example.org/x").await;
        assert!(matches!(bad, Err(SideError::Permanent(_))), "{bad:?}");
        let mut small = MatrixConfig::new(side.client().base_url(), "matrix.test", "as", "hs");
        small.max_file_bytes = 5;
        let tiny = MatrixSide::new(&small.validate().unwrap(), tb.bridge.store().clone()).unwrap();
        let big = tiny.fetch_media("mxc://matrix.test/cat").await;
        assert!(
            matches!(&big, Err(SideError::Permanent(m)) if m.contains("larger than")),
            "{big:?}"
        );
    }

    #[tokio::test]
    async fn ghost_names_follow_the_template() {
        let (_hs, _tb, side) = fake_side().await;
        assert_eq!(
            side.ghost_name("email", "bob@x.org", " Bob "),
            "Bob (email)"
        );
        assert_eq!(
            side.ghost_name("email", "bob@x.org", ""),
            "bob@x.org (email)"
        );
    }

    #[tokio::test]
    async fn attachments_upload_once_and_respect_the_limit() {
        let (hs, _tb, side) = fake_side().await;
        let bob = member(1, "email", "bob@example.org", "Bob");
        // A 1x1 PNG header is enough for the dimensions.
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
        png.extend_from_slice(b"IHDR");
        png.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 3, 8, 6, 0, 0, 0]);
        let small = Part::Attachment {
            filename: "a.png".into(),
            mime_type: "image/png".into(),
            kind: AttachmentKind::Image,
            data: png.clone(),
            duration_ms: None,
            source: None,
        };
        let it = item(bob.clone(), vec![Part::text("look"), small]);
        // The first send is rate limited (the fake's script); the retry must not upload again.
        assert!(side.deliver(&it).await.is_err());
        let done = side.deliver(&it).await.unwrap();
        assert_eq!(done.links.len(), 2);
        let calls = hs.calls.lock().unwrap().clone();
        let uploads: Vec<_> = calls.iter().filter(|c| c.1.contains("/upload")).collect();
        assert_eq!(uploads.len(), 1, "uploaded once");
        assert!(uploads[0].1.contains("filename=a.png"), "{}", uploads[0].1);
        assert!(uploads[0].1.contains("user_id=%40_coi_bob"), "as the ghost");
        let image = calls
            .iter()
            .rfind(|c| c.1.contains("/send/m.room.message/") && c.2.contains("m.image"))
            .unwrap();
        let body: Value = serde_json::from_str(&image.2).unwrap();
        assert_eq!(body["url"], "mxc://matrix.test/up1");
        assert_eq!(
            (body["info"]["w"].as_u64(), body["info"]["h"].as_u64()),
            (Some(2), Some(3))
        );
        assert_eq!(body["info"]["size"], png.len());

        // Larger than the homeserver's 100 bytes: a notice that says so, and no upload.
        let big = Part::Attachment {
            filename: "big.bin".into(),
            mime_type: "application/octet-stream".into(),
            kind: AttachmentKind::File,
            data: vec![0; 101],
            duration_ms: None,
            source: None,
        };
        let mut it = item(bob, vec![big]);
        it.message_uuid = "uuid-2".into();
        side.deliver(&it).await.unwrap();
        let calls = hs.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().filter(|c| c.1.contains("/upload")).count(), 1);
        let last = calls.iter().rfind(|c| c.1.contains("/send/")).unwrap();
        assert!(
            last.2.contains("was not bridged") && last.2.contains("m.notice"),
            "{}",
            last.2
        );
    }

    #[tokio::test]
    async fn deliver_creates_portal_ghost_and_honours_429() {
        let hs = Arc::new(FakeHs::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(handle).with_state(hs.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let tb = TestBridge::new(&[]).await.unwrap();
        let settings = MatrixConfig::new(&base, "matrix.test", "as", "hs")
            .validate()
            .unwrap();
        let side = MatrixSide::new(&settings, tb.bridge.store().clone()).unwrap();
        let bob = member(1, "email", "bob@example.org", "Bob");
        let alice = member(2, "matrix", "@alice:matrix.test", "Alice");
        let item = OutboxItem {
            outbox_id: OutboxId(1),
            attempts: 0,
            chat: ChatView {
                id: ChatId(7),
                group_id: "G1".into(),
                name: "Team".into(),
                name_ts: 0,
                topic: String::new(),
                remote_chat_id: None,
                members: vec![bob.clone(), alice],
                thread_root: None,
                recent: Vec::new(),
            },
            message_id: MessageId(1),
            message_uuid: "uuid-1".into(),
            origin_side: "email".into(),
            sender: Some(bob),
            ts_ms: bridge_core::store::now_ms(),
            event: EventKind::Message(MessageContent {
                parts: vec![Part::text("hello")],
                ..MessageContent::default()
            }),
        };
        let first = side.deliver(&item).await;
        assert!(
            matches!(first, Err(SideError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(2)),
            "{first:?}"
        );
        let done = side.deliver(&item).await.unwrap();
        let ghost = "@_coi_bob=40example.org:matrix.test";
        assert_eq!(done.links, vec![(String::new(), "$sent".to_owned())]);
        assert_eq!(done.chat_link.as_deref(), Some("!new:matrix.test"));
        assert_eq!(done.puppet_links, vec![(PuppetId(1), ghost.to_owned())]);

        let calls = hs.calls.lock().unwrap().clone();
        let count = |needle: &str| calls.iter().filter(|c| c.1.contains(needle)).count();
        assert_eq!(count("/createRoom"), 1, "one room despite the retry");
        assert_eq!(count("/register"), 1, "ghost registered once");
        assert_eq!(
            count("/invite"),
            1,
            "bot invited the ghost after a refused join"
        );
        let create = calls.iter().find(|c| c.1.contains("/createRoom")).unwrap();
        let body: Value = serde_json::from_str(&create.2).unwrap();
        assert_eq!(body["invite"], json!(["@alice:matrix.test"]));
        let pl = &body["power_level_content_override"];
        assert_eq!(
            pl["users"]["@alice:matrix.test"], 50,
            "members may rename and invite"
        );
        assert_eq!(pl["users"]["@coi_bot:matrix.test"], 100);
        assert_eq!(pl["events"]["m.bridge"], 100);
        assert_eq!(body["initial_state"][0]["type"], "m.bridge");
        assert_eq!(body["initial_state"][1]["type"], "uk.half-shot.bridge");
        let sends: Vec<_> = calls.iter().filter(|c| c.1.contains("/send/")).collect();
        assert_eq!(sends.len(), 2);
        assert_eq!(sends[0].1, sends[1].1, "the retry reuses the txn id");
        assert!(
            sends[0]
                .1
                .contains("user_id=%40_coi_bob%3D40example.org%3Amatrix.test")
        );
        let joins: Vec<_> = calls.iter().filter(|c| c.1.contains("/join/")).collect();
        assert_eq!(joins.len(), 2);
    }
}
