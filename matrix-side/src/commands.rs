//! The bot's management room and its commands.
//!
//! A DM with the bot (the inviter is its only other member, or the invite says `is_direct`) is
//! that user's management room (`matrix.mgmt.<user>` = room id in the store). In any room a
//! message starting with `!coi ` is a command; in the management room the prefix is optional.
//! Every command is answered with an `m.notice` from the bot.
//!
//! End-to-bridge encryption is not supported: in an encrypted management room or a room to be
//! linked the bot says so plainly and refuses, rather than going silent.

use crate::client::{MatrixClient, txn_id};
use crate::ids::GhostNamer;
use bridge_core::ir::{ChatLocator, EventKind, MembershipChange, RemoteEvent, UserRef};
use bridge_core::{ChatId, IngestOutcome, Router, SideName};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

/// What a Matrix user may do with the bot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    None,
    /// Talk in portal rooms only (no commands beyond `help`/`status`/`members`).
    Relay,
    /// `create`, `invite`, `link`, and `unlink` of chats they are in.
    User,
    /// Everything, including `unlink` of any room.
    Admin,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "none" => Some(Level::None),
            "relay" => Some(Level::Relay),
            "user" => Some(Level::User),
            "admin" => Some(Level::Admin),
            _ => None,
        }
    }
}

/// The `[matrix] permissions` map: an mxid's entry wins, then its domain's; otherwise `"*"`,
/// but users of the homeserver's own server name are at least `user`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    server_name: String,
    rules: BTreeMap<String, Level>,
    /// How many email people one Matrix user (below admin) may add per hour (`create`, `invite`,
    /// ghost invites): each one gets a mail from this bridge's domain.
    pub email_adds_per_hour: u32,
}

/// Default of [`Permissions::email_adds_per_hour`].
pub const DEFAULT_EMAIL_ADDS_PER_HOUR: u32 = 30;

impl Permissions {
    /// Parses the config map.
    pub fn parse(server_name: &str, map: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut rules = BTreeMap::new();
        for (who, level) in map {
            let l = Level::parse(level).ok_or_else(|| {
                format!("`{who}` = `{level}`: use one of none, relay, user, admin")
            })?;
            rules.insert(who.clone(), l);
        }
        Ok(Self {
            server_name: server_name.to_owned(),
            rules,
            email_adds_per_hour: DEFAULT_EMAIL_ADDS_PER_HOUR,
        })
    }

    /// The level of a Matrix user.
    pub fn level(&self, mxid: &str) -> Level {
        if let Some(l) = self.rules.get(mxid) {
            return *l;
        }
        let domain = mxid.split_once(':').map_or("", |(_, d)| d);
        if let Some(l) = self.rules.get(domain) {
            return *l;
        }
        let own = if !domain.is_empty() && domain == self.server_name {
            Level::User
        } else {
            Level::None
        };
        self.rules.get("*").map_or(own, |l| (*l).max(own))
    }
}

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `help`.
    Help,
    /// `status`.
    Status,
    /// `create <name> <email addresses…>`.
    Create {
        /// Chat name.
        name: String,
        /// Email people.
        emails: Vec<String>,
    },
    /// `invite <email address>`.
    Invite {
        /// The address.
        email: String,
    },
    /// `members`.
    Members,
    /// `link <chat group id or name>`.
    Link {
        /// Group id or name.
        target: String,
    },
    /// `unlink`.
    Unlink,
}

/// The prefix of commands outside the management room.
pub const PREFIX: &str = "!coi";

/// The help text.
pub const HELP: &str = "coi-bridge commands (prefix `!coi ` outside your management room):\n\
help — this text\n\
status — homeserver, number of chats, this room's link\n\
create <name> <email addresses…> — a new chat with these email people, in a new room\n\
invite <email address> — (in a portal room) add an email person\n\
members — (in a portal room) who is in the chat\n\
link <chat group id or name> — bridge this room to an existing chat\n\
unlink — stop bridging this room\n\
Encrypted rooms are not supported yet: use an unencrypted room.";

/// The refusal said in encrypted rooms.
pub const E2EE_REFUSAL: &str = "This room is end-to-end encrypted, and end-to-bridge encryption \
is not supported yet: the bridge cannot read or bridge messages here. Please create an \
unencrypted room (or a DM with encryption turned off) and invite the bot there.";

/// A plausible email address (one `@`, a dotted domain, no spaces or brackets).
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || "<>,;\"()[]".contains(c))
}

/// Parses a message body: `None` when it is not a command, `Some(Err(text))` when it is a
/// command with a problem.
pub fn parse(body: &str, management_room: bool) -> Option<Result<Command, String>> {
    let body = body.trim();
    let rest = match body.strip_prefix(PREFIX) {
        Some(r) if r.is_empty() || r.starts_with(char::is_whitespace) => r.trim(),
        _ if management_room => body,
        _ => return None,
    };
    let mut words = rest.split_whitespace();
    let verb = words.next().unwrap_or("help").to_lowercase();
    let args: Vec<&str> = words.collect();
    Some(match verb.as_str() {
        "help" => Ok(Command::Help),
        "status" => Ok(Command::Status),
        "members" => Ok(Command::Members),
        "unlink" => Ok(Command::Unlink),
        "create" => {
            let split = args.iter().position(|a| a.contains('@'));
            let (name, emails) = args.split_at(split.unwrap_or(args.len()));
            if name.is_empty() {
                Err("usage: create <name> <email addresses…>".into())
            } else if emails.is_empty() {
                Err(
                    "create needs at least one email address: create <name> <email addresses…>"
                        .into(),
                )
            } else if let Some(bad) = emails.iter().find(|e| !is_email(e)) {
                Err(format!("`{bad}` is not an email address"))
            } else {
                Ok(Command::Create {
                    name: name.join(" "),
                    emails: emails.iter().map(|e| e.to_lowercase()).collect(),
                })
            }
        }
        "invite" => match args.as_slice() {
            [e] if is_email(e) => Ok(Command::Invite {
                email: e.to_lowercase(),
            }),
            [e] => Err(format!("`{e}` is not an email address")),
            _ => Err("usage: invite <email address>".into()),
        },
        "link" => {
            if args.is_empty() {
                Err("usage: link <chat group id or name>".into())
            } else {
                Ok(Command::Link {
                    target: args.join(" "),
                })
            }
        }
        other => Err(format!(
            "unknown command `{other}`; say `help` for the list"
        )),
    })
}

/// The key of a user's management room.
pub fn mgmt_key(user: &str) -> String {
    format!("matrix.mgmt.{user}")
}

fn mgmt_room_key(room: &str) -> String {
    format!("matrix.mgmtroom.{room}")
}

fn cmd_key(event_id: &str) -> String {
    format!("matrix.cmd.{event_id}")
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Runs the commands.
/// An event that could not be handled yet; the transaction must be retried.
#[derive(Debug, thiserror::Error)]
#[error("retry later: {0}")]
pub struct RetryLater(pub String);

/// A homeserver error during a ghost invite: `Err` for transient ones (retried with the
/// transaction), `Ok(false)` for the rest (logged; the invite is left alone).
/// An entry of the stripped room state an invite carries (`unsigned.invite_room_state`).
fn invite_state<'a>(ev: &'a Value, kind: &str) -> Option<&'a Value> {
    ev.pointer("/unsigned/invite_room_state")?
        .as_array()?
        .iter()
        .find(|e| str_of(e, "type") == Some(kind))
}

fn transient(e: &crate::client::ClientError, what: &str) -> Result<bool, RetryLater> {
    if e.is_retryable() {
        return Err(RetryLater(format!("{what}: {e}")));
    }
    tracing::warn!(error = %e, "Ghost invite given up: {what}.");
    Ok(false)
}

#[derive(Debug)]
pub struct Commands {
    client: MatrixClient,
    namer: GhostNamer,
    router: Router,
    permissions: Permissions,
    /// When each Matrix user added email people, for the hourly limit (kept in memory).
    email_adds: std::sync::Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Commands {
    /// The command handler.
    pub fn new(
        client: MatrixClient,
        namer: GhostNamer,
        router: Router,
        permissions: Permissions,
    ) -> Self {
        Self {
            client,
            namer,
            router,
            permissions,
            email_adds: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` of `sender`'s hourly allowance for adding email people, or says why not.
    fn take_email_adds(&self, sender: &str, n: usize) -> Result<(), String> {
        if self.permissions.level(sender) >= Level::Admin || n == 0 {
            return Ok(());
        }
        let limit = self.permissions.email_adds_per_hour as usize;
        let now = Instant::now();
        let hour = std::time::Duration::from_secs(3600);
        let mut all = self
            .email_adds
            .lock()
            .map_err(|_| "the limit bookkeeping failed; try again".to_owned())?;
        let mine = all.entry(sender.to_owned()).or_default();
        while mine.front().is_some_and(|t| now.duration_since(*t) >= hour) {
            mine.pop_front();
        }
        if mine.len() + n > limit {
            return Err(format!(
                "you have added {} email people in the last hour; the limit is {limit} \
                 (matrix.email_adds_per_hour), so try again later",
                mine.len()
            ));
        }
        mine.extend(std::iter::repeat_n(now, n));
        Ok(())
    }

    /// Looks at one transaction event. Returns `true` when the event was a command (or an
    /// invite of the bot or of a ghost) and must not be bridged; [`RetryLater`] when it could not
    /// be handled yet (the homeserver must send the transaction again).
    pub async fn handle(&self, ev: &Value) -> Result<bool, RetryLater> {
        let (Some(kind), Some(room), Some(sender)) = (
            str_of(ev, "type"),
            str_of(ev, "room_id"),
            str_of(ev, "sender"),
        ) else {
            return Ok(false);
        };
        if self.namer.is_ours(sender) {
            return Ok(false);
        }
        let event_id = str_of(ev, "event_id").unwrap_or("");
        let bot = self.namer.bot_user_id();
        match kind {
            "m.room.member"
                if str_of(ev, "state_key") == Some(bot.as_str())
                    && ev.pointer("/content/membership").and_then(Value::as_str)
                        == Some("invite") =>
            {
                if self.first_time(event_id).await {
                    self.invited(ev, room, sender, event_id).await;
                }
                Ok(true)
            }
            "m.room.member"
                if ev.pointer("/content/membership").and_then(Value::as_str) == Some("invite")
                    && str_of(ev, "state_key")
                        .is_some_and(|u| u != bot && self.namer.is_ours(u)) =>
            {
                let ghost = str_of(ev, "state_key").unwrap_or_default();
                // Marked done only once it worked: a failure is retried with the transaction.
                if !self.done(event_id).await {
                    self.ghost_invited(ev, room, sender, ghost).await?;
                    self.mark_done(event_id).await;
                }
                Ok(true)
            }
            "m.room.encryption" => {
                if self.first_time(event_id).await && self.cares_about(room).await {
                    self.say(room, event_id, E2EE_REFUSAL).await;
                }
                Ok(false)
            }
            "m.room.encrypted" => {
                if self.first_time(event_id).await && self.is_mgmt(room).await {
                    self.say(room, event_id, E2EE_REFUSAL).await;
                }
                Ok(false)
            }
            "m.room.message" => {
                let Some(body) = ev.pointer("/content/body").and_then(Value::as_str) else {
                    return Ok(false);
                };
                let mgmt = self.is_mgmt(room).await;
                let Some(parsed) = parse(body, mgmt) else {
                    return Ok(false);
                };
                if self.first_time(event_id).await {
                    let answer = match parsed {
                        Ok(cmd) => self.run(cmd, room, sender, event_id, mgmt).await,
                        Err(e) => e,
                    };
                    self.say(room, event_id, &answer).await;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Whether the event was handled already.
    async fn done(&self, event_id: &str) -> bool {
        !event_id.is_empty()
            && matches!(
                self.router.store().kv_get(&cmd_key(event_id)).await,
                Ok(Some(_))
            )
    }

    /// Records that the event was handled.
    async fn mark_done(&self, event_id: &str) {
        if event_id.is_empty() {
            return;
        }
        if let Err(e) = self.router.store().kv_set(&cmd_key(event_id), "1").await {
            tracing::warn!(error = %e, "Could not record a handled event.");
        }
    }

    /// Records the event id; `false` if it was already handled (a retried transaction).
    async fn first_time(&self, event_id: &str) -> bool {
        if self.done(event_id).await {
            return false;
        }
        self.mark_done(event_id).await;
        true
    }

    async fn is_mgmt(&self, room: &str) -> bool {
        matches!(
            self.router.store().kv_get(&mgmt_room_key(room)).await,
            Ok(Some(_))
        )
    }

    /// A management room or a portal room.
    async fn cares_about(&self, room: &str) -> bool {
        self.is_mgmt(room).await
            || matches!(
                self.router
                    .store()
                    .chat_by_link(SideName::MATRIX, room)
                    .await,
                Ok(Some(_))
            )
    }

    async fn say(&self, room: &str, event_id: &str, text: &str) {
        let bot = self.namer.bot_user_id();
        let txn = txn_id(&format!("cmd.{event_id}"), "", &bot);
        let content = json!({"msgtype": "m.notice", "body": text});
        if let Err(e) = self
            .client
            .send(room, None, "m.room.message", &txn, &content, None)
            .await
        {
            tracing::warn!(%room, error = %e, "Could not answer a command.");
        }
    }

    /// Whether a room is encrypted: from the stripped state an invite `ev` carries, else read as
    /// `user` (the bot when `None`).
    async fn encryption(
        &self,
        room: &str,
        ev: Option<&Value>,
        user: Option<&str>,
    ) -> Result<bool, crate::client::ClientError> {
        if ev
            .and_then(|e| invite_state(e, "m.room.encryption"))
            .is_some()
        {
            return Ok(true);
        }
        self.client
            .get_state(room, user, "m.room.encryption", "")
            .await
            .map(|found| found.is_some())
    }

    /// [`Self::encryption`] as the bot; a room it cannot read counts as unencrypted (logged).
    async fn encrypted(&self, room: &str, ev: Option<&Value>) -> bool {
        self.encryption(room, ev, None).await.unwrap_or_else(|e| {
            tracing::warn!(%room, error = %e, "Could not read the room's encryption state.");
            false
        })
    }

    /// An invited ghost says why it cannot stay, and leaves.
    async fn ghost_refuses(&self, room: &str, ghost: &str, invite_id: &str, why: &str) {
        let txn = txn_id(&format!("ghost-refusal.{invite_id}"), "", ghost);
        let content = json!({"msgtype": "m.notice", "body": why});
        if let Err(e) = self
            .client
            .send(room, Some(ghost), "m.room.message", &txn, &content, None)
            .await
        {
            tracing::warn!(%room, %ghost, error = %e, "The ghost could not say why it leaves.");
        }
        if let Err(e) = self.client.leave(room, ghost).await {
            tracing::warn!(%room, %ghost, error = %e, "The ghost could not leave.");
        }
    }

    /// A Matrix person invited a ghost: in a portal room the email person becomes a member (they
    /// get a "member added" mail); elsewhere (a DM with the ghost, a new room) the room becomes a
    /// new chat with them, and the ghost brings the bot in. Invites by people who may not add
    /// email people, or of ghosts that are no email address, are left alone: no account is made
    /// and no room joined for them. In an encrypted room the ghost says why it cannot stay.
    async fn ghost_invited(
        &self,
        ev: &Value,
        room: &str,
        sender: &str,
        ghost: &str,
    ) -> Result<(), RetryLater> {
        let Some((side, addr)) = self.namer.parse(ghost) else {
            return Ok(());
        };
        let addr = addr.to_ascii_lowercase();
        if side != SideName::EMAIL.as_str() || !is_email(&addr) {
            tracing::info!(%room, %ghost, %sender, "Invite of a ghost that is no email address ignored.");
            return Ok(());
        }
        if self.permissions.level(sender) < Level::User {
            tracing::info!(%room, %ghost, %sender, "Ghost invite by someone who may not add email people ignored.");
            return Ok(());
        }
        if let Err(e) = self.client.register(crate::ids::localpart_of(ghost)).await
            && !transient(&e, "register the ghost")?
        {
            return Ok(());
        }
        if let Err(e) = self.client.join(room, ghost).await
            && !transient(&e, "join the ghost")?
        {
            return Ok(());
        }
        let invite_id = str_of(ev, "event_id").unwrap_or(room);
        if let Err(why) = self.take_email_adds(sender, 1) {
            tracing::info!(%room, %ghost, %sender, "Ghost invite over the hourly limit.");
            self.ghost_refuses(
                room,
                ghost,
                invite_id,
                &format!("{addr} was not added: {why}."),
            )
            .await;
            return Ok(());
        }
        // What the invite does not show, the joined ghost reads; unreadable counts as encrypted.
        let encrypted = match self.encryption(room, Some(ev), Some(ghost)).await {
            Ok(e) => e,
            Err(e) => !transient(&e, "read the room's encryption state")?,
        };
        if encrypted {
            tracing::info!(%room, %ghost, %sender, "Ghost invited to an encrypted room; it explains and leaves.");
            self.ghost_refuses(room, ghost, invite_id, E2EE_REFUSAL)
                .await;
            return Ok(());
        }
        let store = self.router.store();
        let chat = match store
            .chat_by_link(SideName::MATRIX, room)
            .await
            .map_err(|e| RetryLater(e.to_string()))?
        {
            Some(chat) => chat,
            None => {
                // A new chat for this room, named like the room (the invite carries its stripped
                // state), or after the two people.
                let name = invite_state(ev, "m.room.name")
                    .and_then(|e| e.pointer("/content/name"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                let name = if name.is_empty() {
                    let who = sender
                        .trim_start_matches('@')
                        .split(':')
                        .next()
                        .unwrap_or(sender);
                    format!("{who} & {addr}")
                } else {
                    name
                };
                let me = UserRef::new(SideName::MATRIX, sender, None);
                let chat = self
                    .router
                    .create_chat(&name, "", Some((SideName::MATRIX, room)), &[me])
                    .await
                    .map_err(|e| RetryLater(e.to_string()))?;
                // The bot comes along, so it can invite further ghosts and post notices here.
                let bot = self.namer.bot_user_id();
                if let Err(e) = self.client.invite(room, Some(ghost), &bot).await {
                    tracing::warn!(%room, error = %e, "The ghost could not invite the bot.");
                } else if let Err(e) = self.client.join(room, &bot).await {
                    tracing::warn!(%room, error = %e, "The bot could not join a room opened by a ghost invite.");
                }
                chat
            }
        };
        self.add_email(chat, room, sender, &addr, &format!("{invite_id}#ghost"))
            .await
            .map_err(RetryLater)?;
        tracing::info!(%room, %ghost, %sender, "Email person added by inviting their ghost.");
        self.router.wake(SideName::MATRIX);
        Ok(())
    }

    async fn invited(&self, ev: &Value, room: &str, sender: &str, event_id: &str) {
        let bot = self.namer.bot_user_id();
        if let Err(e) = self.client.join(room, &bot).await {
            tracing::warn!(%room, %sender, error = %e, "Could not join a room the bot was invited to.");
            return;
        }
        let is_direct = ev.pointer("/content/is_direct").and_then(Value::as_bool) == Some(true);
        let members = self.client.joined_members(room).await.unwrap_or_default();
        let two = members.len() == 2 && members.iter().any(|m| m == sender);
        let encrypted = self.encrypted(room, Some(ev)).await;
        if is_direct || two {
            let store = self.router.store();
            let saved = async {
                store.kv_set(&mgmt_key(sender), room).await?;
                store.kv_set(&mgmt_room_key(room), sender).await
            };
            if let Err(e) = saved.await {
                tracing::warn!(%room, error = %e, "Could not remember the management room.");
            }
            tracing::info!(%room, user = %sender, encrypted, "Management room joined.");
            if encrypted {
                self.say(room, event_id, E2EE_REFUSAL).await;
            } else {
                self.say(
                    room,
                    event_id,
                    &format!("Hello! This is your coi-bridge management room.\n{HELP}"),
                )
                .await;
            }
        } else if encrypted {
            self.say(room, event_id, E2EE_REFUSAL).await;
        } else {
            self.say(
                room,
                event_id,
                "Hello! Say `!coi link <chat group id or name>` to bridge this room, or `!coi help`.",
            )
            .await;
        }
    }

    async fn run(
        &self,
        cmd: Command,
        room: &str,
        sender: &str,
        event_id: &str,
        mgmt: bool,
    ) -> String {
        let level = self.permissions.level(sender);
        let needs = match cmd {
            Command::Help => Level::None,
            Command::Status | Command::Members => Level::Relay,
            _ => Level::User,
        };
        if level < needs {
            return format!(
                "Sorry, {sender} may not use this command (permission {needs:?} needed)."
            );
        }
        let r = match cmd {
            Command::Help => Ok(HELP.to_owned()),
            Command::Status => self.status(room, mgmt).await,
            Command::Create { name, emails } => self.create(sender, &name, &emails, event_id).await,
            Command::Invite { email } => self.invite(room, sender, &email, event_id).await,
            Command::Members => self.members(room).await,
            Command::Link { target } => self.link(room, &target, mgmt).await,
            Command::Unlink => self.unlink(room, sender, level).await,
        };
        r.unwrap_or_else(|e| format!("Error: {e}"))
    }

    async fn portal_chat(&self, room: &str) -> Result<ChatId, String> {
        self.router
            .store()
            .chat_by_link(SideName::MATRIX, room)
            .await
            .map_err(|e| format!("store: {e}"))?
            .ok_or_else(|| "this room is not bridged to a chat".to_owned())
    }

    async fn status(&self, room: &str, mgmt: bool) -> Result<String, String> {
        let hs = match self.client.versions().await {
            Ok(_) => "reachable".to_owned(),
            Err(e) => format!("NOT reachable ({e})"),
        };
        let store = self.router.store();
        let chats = store.chats().await.map_err(|e| format!("store: {e}"))?;
        let here = match store.chat_by_link(SideName::MATRIX, room).await {
            Ok(Some(c)) => match chats.iter().find(|x| x.id == c) {
                Some(x) => format!("bridged to chat \"{}\" ({})", x.name, x.group_id),
                None => format!("bridged to chat {c}"),
            },
            Ok(None) if mgmt => "your management room".to_owned(),
            Ok(None) => "not bridged".to_owned(),
            Err(e) => return Err(format!("store: {e}")),
        };
        // What waits or failed, per side, and what is kept: an operator's first questions.
        let mut queues = Vec::new();
        for side in [SideName::EMAIL, SideName::MATRIX] {
            let pending = store
                .outbox_count(side, "pending")
                .await
                .map_err(|e| format!("store: {e}"))?;
            let failed = store
                .outbox_count(side, "failed")
                .await
                .map_err(|e| format!("store: {e}"))?;
            queues.push(format!("{side}: {pending} waiting, {failed} failed"));
        }
        let kept = store
            .quarantine_count(SideName::EMAIL)
            .await
            .map_err(|e| format!("store: {e}"))?;
        Ok(format!(
            "Homeserver: {hs}\nChats: {}\nThis room: {here}\nOutbox: {}\nMail kept in quarantine: {kept} (`coi-bridge quarantine` lists it)",
            chats.len(),
            queues.join("; ")
        ))
    }

    async fn create(
        &self,
        sender: &str,
        name: &str,
        emails: &[String],
        event_id: &str,
    ) -> Result<String, String> {
        self.take_email_adds(sender, emails.len())?;
        let me = UserRef::new(SideName::MATRIX, sender, None);
        let chat = self
            .router
            .create_chat(name, "", None, std::slice::from_ref(&me))
            .await
            .map_err(|e| format!("could not create the chat: {e}"))?;
        let store = self.router.store();
        let stored = store.chat(chat).await.map_err(|e| format!("store: {e}"))?;
        let body = crate::side::portal_body(
            &self.namer,
            &stored.group_id,
            name,
            "",
            &[sender],
            self.client.creators_outside_users().await,
        );
        let room = self
            .client
            .create_room(&body)
            .await
            .map_err(|e| format!("could not create the room: {e}"))?;
        store
            .link_chat(chat, SideName::MATRIX, &room)
            .await
            .map_err(|e| format!("store: {e}"))?;
        for (i, email) in emails.iter().enumerate() {
            self.add_email(chat, &room, sender, email, &format!("{event_id}#create{i}"))
                .await?;
        }
        self.router.wake(SideName::MATRIX);
        Ok(format!(
            "Created chat \"{name}\" ({}) in room {room}; you are invited. {} {} a \
             \"member added\" email from the bridge and can answer it to talk in the room.",
            stored.group_id,
            emails.join(", "),
            if emails.len() == 1 {
                "gets"
            } else {
                "each get"
            }
        ))
    }

    /// Adds an email person as if the Matrix user added them: the email side mails "member added".
    async fn add_email(
        &self,
        chat: ChatId,
        room: &str,
        sender: &str,
        email: &str,
        remote_id: &str,
    ) -> Result<bool, String> {
        let ev = RemoteEvent {
            side: SideName::MATRIX,
            remote_id: remote_id.to_owned(),
            chat: ChatLocator {
                remote_chat_id: Some(room.to_owned()),
                ..ChatLocator::default()
            },
            sender: UserRef::new(SideName::MATRIX, sender, None),
            ts_ms: bridge_core::store::now_ms(),
            kind: EventKind::Membership {
                subject: UserRef::new(SideName::EMAIL, email, None),
                change: MembershipChange::Join,
            },
            raw: None,
        };
        match self.router.ingest(ev).await {
            Ok(IngestOutcome::Committed { chat: c, .. }) if c == chat => Ok(true),
            Ok(IngestOutcome::Committed { .. }) => Err("the event went to another chat".into()),
            Ok(IngestOutcome::Duplicate { .. }) => Ok(false),
            Ok(other) => Err(format!("not added: {other:?}")),
            Err(e) => Err(format!("could not add {email}: {e}")),
        }
    }

    async fn invite(
        &self,
        room: &str,
        sender: &str,
        email: &str,
        event_id: &str,
    ) -> Result<String, String> {
        let chat = self.portal_chat(room).await?;
        let members = self
            .router
            .store()
            .members(chat, SideName::MATRIX)
            .await
            .map_err(|e| format!("store: {e}"))?;
        if members
            .iter()
            .any(|m| m.joined && m.origin_side == SideName::EMAIL.as_str() && m.native_id == email)
        {
            return Ok(format!("{email} is already a member."));
        }
        self.take_email_adds(sender, 1)?;
        self.add_email(chat, room, sender, email, &format!("{event_id}#invite"))
            .await?;
        Ok(format!(
            "Added {email}: they get a \"member added\" email and can answer it to talk here."
        ))
    }

    async fn members(&self, room: &str) -> Result<String, String> {
        let chat = self.portal_chat(room).await?;
        let members = self
            .router
            .store()
            .members(chat, SideName::MATRIX)
            .await
            .map_err(|e| format!("store: {e}"))?;
        let lines: Vec<String> = members
            .iter()
            .filter(|m| m.joined)
            .map(|m| {
                if m.display_name.is_empty() {
                    format!("- {} ({})", m.native_id, m.origin_side)
                } else {
                    format!("- {} <{}> ({})", m.display_name, m.native_id, m.origin_side)
                }
            })
            .collect();
        Ok(format!("Members ({}):\n{}", lines.len(), lines.join("\n")))
    }

    async fn link(&self, room: &str, target: &str, mgmt: bool) -> Result<String, String> {
        if mgmt {
            return Err("this is your management room; invite the bot to the room to bridge and say `!coi link …` there".into());
        }
        let store = self.router.store();
        if let Ok(Some(_)) = store.chat_by_link(SideName::MATRIX, room).await {
            return Err("this room is already bridged; `!coi unlink` first".into());
        }
        if self.encrypted(room, None).await {
            return Ok(E2EE_REFUSAL.to_owned());
        }
        let chats = store.chats().await.map_err(|e| format!("store: {e}"))?;
        let found: Vec<_> = chats
            .iter()
            .filter(|c| c.group_id == target || c.name == target)
            .collect();
        let chat = match found.as_slice() {
            [c] => *c,
            [] => return Err(format!("no chat has the group id or name `{target}`")),
            _ => {
                return Err(format!(
                    "several chats are named `{target}`; use the group id: {}",
                    found
                        .iter()
                        .map(|c| c.group_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        };
        if let Ok(Some(other)) = store.chat_link(chat.id, SideName::MATRIX).await {
            return Err(format!(
                "chat \"{}\" is already bridged to room {other}",
                chat.name
            ));
        }
        store
            .link_chat(chat.id, SideName::MATRIX, room)
            .await
            .map_err(|e| format!("store: {e}"))?;
        self.router.wake(SideName::MATRIX);
        Ok(format!(
            "This room is now bridged to chat \"{}\" ({}).",
            chat.name, chat.group_id
        ))
    }

    async fn unlink(&self, room: &str, sender: &str, level: Level) -> Result<String, String> {
        let chat = self.portal_chat(room).await?;
        let store = self.router.store();
        if level < Level::Admin {
            let members = store
                .members(chat, SideName::MATRIX)
                .await
                .map_err(|e| format!("store: {e}"))?;
            if !members.iter().any(|m| m.native_id == sender) {
                return Err("only members of the chat or admins may unlink it".into());
            }
        }
        store
            .unlink_chat(chat, SideName::MATRIX)
            .await
            .map_err(|e| format!("store: {e}"))?;
        Ok("This room is no longer bridged; the chat itself stays.".into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(parse("hello", false), None);
        assert_eq!(parse("!coifoo", false), None);
        assert_eq!(parse("!coi help", false), Some(Ok(Command::Help)));
        assert_eq!(parse("!coi", false), Some(Ok(Command::Help)));
        assert_eq!(parse("help", true), Some(Ok(Command::Help)));
        assert_eq!(parse(" STATUS ", true), Some(Ok(Command::Status)));
        assert_eq!(
            parse("create Lunch bob@example.test", true),
            Some(Ok(Command::Create {
                name: "Lunch".into(),
                emails: vec!["bob@example.test".into()]
            }))
        );
        assert_eq!(
            parse("!coi create Team lunch A@x.org c@y.org", false),
            Some(Ok(Command::Create {
                name: "Team lunch".into(),
                emails: vec!["a@x.org".into(), "c@y.org".into()]
            }))
        );
        assert!(matches!(parse("create Lunch", true), Some(Err(e)) if e.contains("email")));
        assert!(matches!(parse("create bob@x.org", true), Some(Err(e)) if e.contains("usage")));
        assert!(matches!(parse("create L bob@x", true), Some(Err(e)) if e.contains("bob@x")));
        assert_eq!(
            parse("!coi invite bob@example.test", false),
            Some(Ok(Command::Invite {
                email: "bob@example.test".into()
            }))
        );
        assert!(matches!(parse("invite", true), Some(Err(e)) if e.contains("usage")));
        assert_eq!(
            parse("link My chat", true),
            Some(Ok(Command::Link {
                target: "My chat".into()
            }))
        );
        assert_eq!(parse("!coi unlink", false), Some(Ok(Command::Unlink)));
        assert_eq!(parse("members", true), Some(Ok(Command::Members)));
        assert!(matches!(parse("frobnicate", true), Some(Err(e)) if e.contains("unknown")));
    }

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use bridge_core::testing::TestBridge;
    use std::sync::{Arc, Mutex};

    /// A scripted homeserver recording (method, path, body); `!enc:` rooms are encrypted.
    #[derive(Default)]
    struct FakeHs {
        calls: Mutex<Vec<(String, String, String)>>,
    }

    async fn handle_hs(
        State(hs): State<Arc<FakeHs>>,
        method: Method,
        uri: Uri,
        body: Bytes,
    ) -> Response {
        let path = uri.path().to_owned();
        hs.calls.lock().unwrap().push((
            method.to_string(),
            path.clone(),
            String::from_utf8_lossy(&body).into_owned(),
        ));
        if path.ends_with("/createRoom") {
            return axum::Json(json!({"room_id": "!portal:matrix.test"})).into_response();
        }
        if path.contains("/join/") {
            return axum::Json(json!({"room_id": "!x:matrix.test"})).into_response();
        }
        if path.ends_with("/joined_members") {
            return axum::Json(
                json!({"joined": {"@alice:matrix.test": {}, "@coi_bot:matrix.test": {}}}),
            )
            .into_response();
        }
        if path.contains("/state/m.room.encryption") {
            if path.contains("%21enc") {
                return axum::Json(json!({"algorithm": "m.megolm.v1.aes-sha2"})).into_response();
            }
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"errcode": "M_NOT_FOUND", "error": "no"})),
            )
                .into_response();
        }
        if path.contains("/send/") {
            return axum::Json(json!({"event_id": "$answer"})).into_response();
        }
        axum::Json(json!({"versions": ["v1.11"]})).into_response()
    }

    /// Commands with the default permissions, talking to a scripted homeserver.
    async fn commands_on_fake_hs() -> (Arc<FakeHs>, TestBridge, Commands) {
        let hs = Arc::new(FakeHs::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle_hs)
            .with_state(hs.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tb = TestBridge::new(&["email"]).await.unwrap();
        let perms = Permissions::parse("matrix.test", &BTreeMap::new()).unwrap();
        let c = Commands::new(
            MatrixClient::new(&base, "as").unwrap(),
            namer(),
            tb.router(),
            perms,
        );
        (hs, tb, c)
    }

    fn namer() -> GhostNamer {
        GhostNamer {
            prefix: "_coi_".into(),
            server_name: "matrix.test".into(),
            bot_localpart: "coi_bot".into(),
        }
    }

    fn invite(id: &str, room: &str) -> Value {
        json!({"type": "m.room.member", "event_id": id, "room_id": room,
               "sender": "@alice:matrix.test", "state_key": "@coi_bot:matrix.test",
               "content": {"membership": "invite", "is_direct": true}})
    }

    fn text(id: &str, room: &str, sender: &str, body: &str) -> Value {
        json!({"type": "m.room.message", "event_id": id, "room_id": room, "sender": sender,
               "content": {"msgtype": "m.text", "body": body}})
    }

    #[tokio::test]
    async fn adding_email_people_is_limited_per_user_and_hour() {
        let tb = TestBridge::new(&["email"]).await.unwrap();
        let mut perms = Permissions::parse(
            "matrix.test",
            &BTreeMap::from([("@root:matrix.test".to_owned(), "admin".to_owned())]),
        )
        .unwrap();
        perms.email_adds_per_hour = 2;
        let c = Commands::new(
            MatrixClient::new("http://127.0.0.1:1", "as").unwrap(),
            namer(),
            tb.router(),
            perms,
        );
        assert!(c.take_email_adds("@alice:matrix.test", 2).is_ok());
        let err = c.take_email_adds("@alice:matrix.test", 1).unwrap_err();
        assert!(
            err.contains("limit is 2") && err.contains("email_adds_per_hour"),
            "{err}"
        );
        assert!(c.take_email_adds("@bob:matrix.test", 1).is_ok(), "per user");
        assert!(
            c.take_email_adds("@root:matrix.test", 50).is_ok(),
            "admins are not limited"
        );
        // `create` with more addresses than allowed opens nothing.
        let answer = c
            .create(
                "@carol:matrix.test",
                "Big",
                &["a@x.org".into(), "b@x.org".into(), "c@x.org".into()],
                "$c",
            )
            .await
            .unwrap_err();
        assert!(answer.contains("limit"), "{answer}");
        assert!(tb.bridge.store().chats().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ghost_invites_are_checked_before_anything_is_made() {
        let (hs, tb, c) = commands_on_fake_hs().await;
        let ghost_invite = |id: &str, room: &str, sender: &str, ghost: &str| {
            json!({"type": "m.room.member", "event_id": id, "room_id": room, "sender": sender,
                   "state_key": ghost, "content": {"membership": "invite"}})
        };
        let ghost = "@_coi_bob=40example.org:matrix.test";
        // A remote user (no permission) and a ghost that is no address: consumed, nothing made.
        assert!(
            c.handle(&ghost_invite(
                "$r",
                "!big:evil.test",
                "@mallory:evil.test",
                ghost
            ))
            .await
            .unwrap()
        );
        assert!(
            c.handle(&ghost_invite(
                "$n",
                "!x:matrix.test",
                "@alice:matrix.test",
                "@_coi_notanaddress:matrix.test"
            ))
            .await
            .unwrap()
        );
        assert!(
            hs.calls.lock().unwrap().is_empty(),
            "no account, no join: {:?}",
            hs.calls.lock().unwrap()
        );
        // Alice may: the ghost is made and joins, the room becomes a chat with bob, the bot comes.
        assert!(
            c.handle(&ghost_invite(
                "$ok",
                "!dm:matrix.test",
                "@alice:matrix.test",
                ghost
            ))
            .await
            .unwrap()
        );
        let calls: Vec<String> = hs
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.1.clone())
            .collect();
        assert!(calls.iter().any(|p| p.ends_with("/register")), "{calls:?}");
        assert!(
            calls.iter().any(|p| p.ends_with("/invite")),
            "the ghost invites the bot: {calls:?}"
        );
        let chat = tb
            .bridge
            .store()
            .chat_by_link(SideName::MATRIX, "!dm:matrix.test")
            .await
            .unwrap()
            .expect("a chat for the room");
        let members = tb
            .bridge
            .store()
            .members(chat, SideName::MATRIX)
            .await
            .unwrap();
        assert!(
            members
                .iter()
                .any(|m| m.native_id == "bob@example.org" && m.joined)
        );
        // Handled once: the same event again does nothing more.
        let n = hs.calls.lock().unwrap().len();
        assert!(
            c.handle(&ghost_invite(
                "$ok",
                "!dm:matrix.test",
                "@alice:matrix.test",
                ghost
            ))
            .await
            .unwrap()
        );
        assert_eq!(hs.calls.lock().unwrap().len(), n);
    }

    #[tokio::test]
    async fn management_room_commands_and_encryption() {
        let (hs, tb, c) = commands_on_fake_hs().await;
        let answers = |hs: &FakeHs| -> Vec<(String, String)> {
            hs.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.1.contains("/send/"))
                .map(|c| {
                    let v: Value = serde_json::from_str(&c.2).unwrap();
                    (c.1.clone(), v["body"].as_str().unwrap().to_owned())
                })
                .collect()
        };
        let dm = "!dm:matrix.test";
        // The invite: the bot joins, remembers the management room and greets.
        assert!(c.handle(&invite("$i1", dm)).await.unwrap());
        let store = tb.router().store().clone();
        assert_eq!(
            store
                .kv_get(&mgmt_key("@alice:matrix.test"))
                .await
                .unwrap()
                .as_deref(),
            Some(dm)
        );
        let calls = hs.calls.lock().unwrap().clone();
        assert!(
            answers(&hs).last().unwrap().1.contains("management room"),
            "{calls:?}"
        );
        // No prefix needed here; a retried event is not answered twice.
        assert!(
            c.handle(&text("$h", dm, "@alice:matrix.test", "help"))
                .await
                .unwrap()
        );
        assert!(
            c.handle(&text("$h", dm, "@alice:matrix.test", "help"))
                .await
                .unwrap()
        );
        assert_eq!(answers(&hs).len(), 2);
        assert!(answers(&hs)[1].1.starts_with("coi-bridge commands"));
        // `status` tells an operator what waits, what failed and what is kept.
        assert!(
            c.handle(&text("$s", dm, "@alice:matrix.test", "status"))
                .await
                .unwrap()
        );
        let status = answers(&hs)[2].1.clone();
        assert!(
            status.contains("Outbox: email: 0 waiting, 0 failed; matrix: 0 waiting, 0 failed")
                && status.contains("Mail kept in quarantine: 0")
                && status.contains("your management room"),
            "{status}"
        );
        // Ordinary talk elsewhere is not a command.
        assert!(
            !c.handle(&text(
                "$t",
                "!other:matrix.test",
                "@alice:matrix.test",
                "hi"
            ))
            .await
            .unwrap()
        );
        // create: a chat, a portal room inviting alice, a member-added event for email.
        assert!(
            c.handle(&text(
                "$c",
                dm,
                "@alice:matrix.test",
                "create Lunch bob@example.test"
            ))
            .await
            .unwrap()
        );
        let last = answers(&hs).last().unwrap().1.clone();
        assert!(last.contains("Created chat \"Lunch\""), "{last}");
        let create = hs
            .calls
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.1.ends_with("/createRoom"))
            .cloned()
            .unwrap();
        let body: Value = serde_json::from_str(&create.2).unwrap();
        assert_eq!(body["invite"], json!(["@alice:matrix.test"]));
        assert_eq!(body["initial_state"][0]["type"], "m.bridge");
        let chat = store
            .chat_by_link(SideName::MATRIX, "!portal:matrix.test")
            .await
            .unwrap()
            .unwrap();
        let pending = store.pending_outbox(SideName::EMAIL, 10).await.unwrap();
        assert_eq!(pending.len(), 1, "one member-added for email");
        // members / invite in the portal room.
        let portal = "!portal:matrix.test";
        c.handle(&text("$m", portal, "@alice:matrix.test", "!coi members"))
            .await
            .unwrap();
        let last = answers(&hs).last().unwrap().1.clone();
        assert!(
            last.contains("bob@example.test (email)")
                && last.contains("@alice:matrix.test (matrix)"),
            "{last}"
        );
        c.handle(&text(
            "$v",
            portal,
            "@alice:matrix.test",
            "!coi invite carol@example.test",
        ))
        .await
        .unwrap();
        assert!(
            answers(&hs)
                .last()
                .unwrap()
                .1
                .starts_with("Added carol@example.test")
        );
        assert_eq!(
            store.members(chat, SideName::MATRIX).await.unwrap().len(),
            3
        );
        // Permissions: a foreign user may not create.
        c.handle(&text(
            "$e",
            portal,
            "@eve:elsewhere.test",
            "!coi invite x@y.org",
        ))
        .await
        .unwrap();
        assert!(answers(&hs).last().unwrap().1.contains("may not"));
        // unlink, then link again by name.
        c.handle(&text("$u", portal, "@alice:matrix.test", "!coi unlink"))
            .await
            .unwrap();
        assert_eq!(
            store.chat_by_link(SideName::MATRIX, portal).await.unwrap(),
            None
        );
        c.handle(&text("$l", portal, "@alice:matrix.test", "!coi link Lunch"))
            .await
            .unwrap();
        assert_eq!(
            store.chat_by_link(SideName::MATRIX, portal).await.unwrap(),
            Some(chat)
        );
        // Encrypted: a DM and a room to be linked get the refusal; nothing is linked.
        c.handle(&invite("$i2", "!enc1:matrix.test")).await.unwrap();
        assert!(answers(&hs).last().unwrap().1.contains("not supported yet"));
        c.handle(&text("$u2", portal, "@alice:matrix.test", "!coi unlink"))
            .await
            .unwrap();
        c.handle(&text(
            "$l2",
            "!enc2:matrix.test",
            "@alice:matrix.test",
            "!coi link Lunch",
        ))
        .await
        .unwrap();
        let last = answers(&hs).last().unwrap().clone();
        assert!(
            last.0.contains("enc2") && last.1.contains("not supported yet"),
            "{last:?}"
        );
        assert_eq!(store.chat_link(chat, SideName::MATRIX).await.unwrap(), None);
    }

    #[test]
    fn emails() {
        assert!(is_email("bob@example.test"));
        assert!(!is_email("bob"));
        assert!(!is_email("bob@localhost"));
        assert!(!is_email("<bob@x.org>"));
        assert!(!is_email("@x.org"));
    }

    #[test]
    fn permissions() {
        let p = Permissions::parse("hs.test", &BTreeMap::new()).unwrap();
        assert_eq!(p.level("@alice:hs.test"), Level::User);
        assert_eq!(p.level("@eve:other.test"), Level::None);

        let map: BTreeMap<String, String> = [
            ("*", "relay"),
            ("friends.test", "user"),
            ("@root:hs.test", "admin"),
            ("@banned:friends.test", "none"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let p = Permissions::parse("hs.test", &map).unwrap();
        assert_eq!(p.level("@root:hs.test"), Level::Admin);
        assert_eq!(p.level("@bob:friends.test"), Level::User);
        assert_eq!(p.level("@banned:friends.test"), Level::None);
        assert_eq!(p.level("@eve:other.test"), Level::Relay);
        // "*" never lowers the home server's own users below `user`.
        assert_eq!(p.level("@alice:hs.test"), Level::User);
        assert!(Level::Admin > Level::User && Level::User > Level::Relay);

        let bad: BTreeMap<String, String> = [("*".to_owned(), "god".to_owned())].into();
        assert!(Permissions::parse("hs.test", &bad).is_err());
    }
}
