//! The SQL store: SQLite (embedded, default) or PostgreSQL, through sqlx's `Any` driver.
//!
//! **Architecture Invariant:** this is the only module that writes SQL.
//! Every query is written once, in the dialect both databases accept (`$n` placeholders, `RETURNING`).

use crate::ids::{ChatId, MessageId, OutboxId, PuppetId, SideName};
use crate::ir::{EventKind, UserRef};
use crate::side::{ChatView, MemberView};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Row, Transaction};
use std::collections::BTreeSet;
use std::time::Duration;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON value did not decode.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The URL names no supported database.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// A row that must exist does not.
    #[error("not found: {0}")]
    NotFound(String),
}

impl StoreError {
    /// Whether the error is a UNIQUE violation (a concurrent writer won a race).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => {
                e.is_unique_violation() || e.message().contains("UNIQUE constraint failed")
            }
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// Which SQL dialect the pool speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// One pending outbox row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id.
    pub id: OutboxId,
    /// Chat.
    pub chat_id: ChatId,
    /// Event.
    pub message_id: MessageId,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Not before (Unix ms).
    pub next_attempt_at: i64,
}

/// An input kept in quarantine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// Row id.
    pub id: i64,
    /// Side it came from.
    pub side: String,
    /// Its id there (Message-ID, or a digest for unparsable mail).
    pub remote_id: String,
    /// Why it was kept.
    pub reason: String,
    /// Size of the kept raw input.
    pub raw_bytes: i64,
    /// When, Unix ms.
    pub created_at: i64,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Id.
    pub id: MessageId,
    /// Random stable id.
    pub uuid: String,
    /// Chat.
    pub chat_id: ChatId,
    /// Sender.
    pub sender: Option<PuppetId>,
    /// Origin side.
    pub origin_side: String,
    /// The event.
    pub event: EventKind,
    /// Unix ms.
    pub ts_ms: i64,
}

/// A stored chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChat {
    /// Id.
    pub id: ChatId,
    /// Stable group id.
    pub group_id: String,
    /// Name.
    pub name: String,
    /// Name timestamp (Unix s).
    pub name_ts: i64,
    /// Topic.
    pub topic: String,
}

/// The store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Connects to `url` (`sqlite://path`, `sqlite::memory:`, `postgres://…`) and applies migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store> {
        install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let url =
            if dialect == Dialect::Sqlite && !url.contains("mode=") && !url.contains(":memory:") {
                if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                }
            } else {
                url.to_owned()
            };
        let mut opts = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30));
        if dialect == Dialect::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(&url).await?;
        if dialect == Dialect::Sqlite {
            // WAL lets readers run beside the single writer; it is a property of the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let store = Store { pool, dialect };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the embedded migrations of this dialect.
    pub async fn migrate(&self) -> Result<()> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATOR.run(&self.pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATOR.run(&self.pool).await?,
        }
        Ok(())
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Versions of the migrations embedded for a dialect.
    pub fn migration_versions(dialect: Dialect) -> Vec<i64> {
        let m = match dialect {
            Dialect::Sqlite => &SQLITE_MIGRATOR,
            Dialect::Postgres => &POSTGRES_MIGRATOR,
        };
        m.iter().map(|m| m.version).collect()
    }

    /// Starts a transaction.
    ///
    /// On SQLite the transaction takes the write lock at once (`BEGIN IMMEDIATE`): a deferred transaction
    /// that reads first and writes later fails with "database is locked" instead of waiting when another
    /// writer got in between, which concurrent ingest (LMTP) would hit.
    pub async fn begin(&self) -> Result<StoreTx> {
        let tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        };
        Ok(StoreTx { tx })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- key-value ----

    /// Reads a key.
    pub async fn kv_get(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM kv WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Writes a key.
    pub async fn kv_set(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- ingest checkpoints ----

    /// Loads the IMAP checkpoint of a mailbox: (UIDVALIDITY, last committed UID).
    pub async fn checkpoint(&self, mailbox: &str) -> Result<Option<(i64, i64)>> {
        let row =
            sqlx::query("SELECT uidvalidity, last_uid FROM ingest_checkpoint WHERE mailbox = $1")
                .bind(mailbox)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
            None => Ok(None),
        }
    }

    /// Saves the IMAP checkpoint of a mailbox.
    pub async fn save_checkpoint(
        &self,
        mailbox: &str,
        uidvalidity: i64,
        last_uid: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ingest_checkpoint (mailbox, uidvalidity, last_uid, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, updated_at = excluded.updated_at",
        )
        .bind(mailbox)
        .bind(uidvalidity)
        .bind(last_uid)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- Autocrypt ----

    /// Keeps the newest Autocrypt key of an address (`ts` in Unix seconds; older headers do not win).
    pub async fn save_autocrypt(
        &self,
        addr: &str,
        keydata: &[u8],
        prefer_encrypt_mutual: bool,
        ts: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO autocrypt_peer (addr, keydata, prefer_encrypt_mutual, last_seen) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (addr) DO UPDATE SET keydata = excluded.keydata, prefer_encrypt_mutual = excluded.prefer_encrypt_mutual, \
             last_seen = excluded.last_seen WHERE autocrypt_peer.last_seen <= excluded.last_seen",
        )
        .bind(addr)
        .bind(keydata.to_vec())
        .bind(i64::from(prefer_encrypt_mutual))
        .bind(ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored Autocrypt key of an address: (keydata, prefer-encrypt=mutual).
    pub async fn autocrypt(&self, addr: &str) -> Result<Option<(Vec<u8>, bool)>> {
        let row = sqlx::query(
            "SELECT keydata, prefer_encrypt_mutual FROM autocrypt_peer WHERE addr = $1",
        )
        .bind(addr)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((r.try_get(0)?, r.try_get::<i64, _>(1)? != 0))),
            None => Ok(None),
        }
    }

    // ---- quarantine ----

    /// Keeps an input that could not be placed. Returns false if the same (side, remote id, reason) is already kept.
    pub async fn quarantine(
        &self,
        side: SideName,
        remote_id: &str,
        reason: &str,
        raw: Option<&[u8]>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let kept = tx.quarantine(side, remote_id, reason, raw).await?;
        tx.commit().await?;
        Ok(kept)
    }

    /// Number of kept inputs for a side.
    pub async fn quarantine_count(&self, side: SideName) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM quarantine WHERE side = $1")
            .bind(side.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Kept inputs, newest first: (id, side, remote id, reason, raw size in bytes, kept at Unix ms).
    pub async fn quarantine_list(&self, limit: i64) -> Result<Vec<QuarantineEntry>> {
        let rows = sqlx::query(
            "SELECT id, side, remote_id, reason, COALESCE(LENGTH(raw), 0), created_at FROM quarantine ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(quarantine_row).collect()
    }

    /// The raw bytes of a kept input.
    pub async fn quarantine_raw(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT raw FROM quarantine WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(r.try_get::<Option<Vec<u8>>, _>(0)?),
            None => Err(StoreError::NotFound(format!("quarantine entry {id}"))),
        }
    }

    /// One kept input with its raw bytes.
    pub async fn quarantine_entry(&self, id: i64) -> Result<(QuarantineEntry, Option<Vec<u8>>)> {
        let row = sqlx::query(
            "SELECT id, side, remote_id, reason, COALESCE(LENGTH(raw), 0), created_at, raw FROM quarantine WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("quarantine entry {id}")))?;
        Ok((quarantine_row(&row)?, row.try_get::<Option<Vec<u8>>, _>(6)?))
    }

    /// Forgets every kept input of a remote id (it has been placed since); returns how many.
    pub async fn quarantine_remove(&self, side: SideName, remote_id: &str) -> Result<u64> {
        let r = sqlx::query("DELETE FROM quarantine WHERE side = $1 AND remote_id = $2")
            .bind(side.as_str())
            .bind(remote_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Reasons of kept inputs for a remote id.
    pub async fn quarantine_reasons(&self, side: SideName, remote_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT reason FROM quarantine WHERE side = $1 AND remote_id = $2 ORDER BY id",
        )
        .bind(side.as_str())
        .bind(remote_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    // ---- lookups ----

    /// The event linked to a remote id on a side.
    pub async fn message_by_link(
        &self,
        side: SideName,
        remote_id: &str,
    ) -> Result<Option<MessageId>> {
        let mut tx = self.begin().await?;
        let r = tx.message_by_link(side, remote_id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// The chat linked to a remote chat id on a side.
    pub async fn chat_by_link(
        &self,
        side: SideName,
        remote_chat_id: &str,
    ) -> Result<Option<ChatId>> {
        let mut tx = self.begin().await?;
        let r = tx.chat_by_link(side, remote_chat_id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// A chat's remote id on a side.
    pub async fn chat_link(&self, chat: ChatId, side: SideName) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT remote_chat_id FROM chat_link WHERE chat_id = $1 AND side = $2")
                .bind(chat.0)
                .bind(side.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Links a chat to a remote chat id (idempotent for the same pair).
    pub async fn link_chat(
        &self,
        chat: ChatId,
        side: SideName,
        remote_chat_id: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.link_chat(chat, side, remote_chat_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a chat's link on a side.
    pub async fn unlink_chat(&self, chat: ChatId, side: SideName) -> Result<()> {
        sqlx::query("DELETE FROM chat_link WHERE chat_id = $1 AND side = $2")
            .bind(chat.0)
            .bind(side.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A stored chat.
    pub async fn chat(&self, chat: ChatId) -> Result<StoredChat> {
        let mut tx = self.begin().await?;
        let r = tx.chat(chat).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// All chats, oldest first.
    pub async fn chats(&self) -> Result<Vec<StoredChat>> {
        let rows = sqlx::query("SELECT id, group_id, name, name_ts, topic FROM chat ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(chat_from_row).collect()
    }

    /// A stored event.
    pub async fn message(&self, id: MessageId) -> Result<StoredMessage> {
        let mut tx = self.begin().await?;
        let r = tx.message(id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// All events of a chat, oldest first.
    pub async fn chat_messages(&self, chat: ChatId) -> Result<Vec<StoredMessage>> {
        let rows = sqlx::query(
            "SELECT id, uuid, chat_id, sender_puppet_id, origin_side, content, ts FROM message WHERE chat_id = $1 ORDER BY id",
        )
        .bind(chat.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// Remote ids of an event on a side: (part, remote id).
    pub async fn message_links(
        &self,
        id: MessageId,
        side: SideName,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT part, remote_msg_id FROM message_link WHERE message_id = $1 AND side = $2 ORDER BY id")
            .bind(id.0)
            .bind(side.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The puppet linked to a remote user on a side.
    pub async fn puppet_by_link(
        &self,
        side: SideName,
        remote_user_id: &str,
    ) -> Result<Option<PuppetId>> {
        let mut tx = self.begin().await?;
        let r = tx.puppet_by_link(side, remote_user_id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Members of a chat as seen from a side.
    pub async fn members(&self, chat: ChatId, side: SideName) -> Result<Vec<MemberView>> {
        let mut tx = self.begin().await?;
        let r = tx.members(chat, side).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Reactions on an event: (puppet, key).
    pub async fn reactions(&self, message: MessageId) -> Result<Vec<(PuppetId, String)>> {
        let rows = sqlx::query(
            "SELECT puppet_id, reaction_key FROM reaction WHERE message_id = $1 ORDER BY id",
        )
        .bind(message.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((PuppetId(r.try_get(0)?), r.try_get(1)?)))
            .collect()
    }

    // ---- outbox ----

    /// Pending rows of a side, oldest first.
    pub async fn pending_outbox(&self, side: SideName, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, chat_id, message_id, attempts, next_attempt_at FROM outbox \
             WHERE side = $1 AND state = 'pending' ORDER BY id LIMIT $2",
        )
        .bind(side.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Pending rows of one chat for a side, oldest first.
    pub async fn pending_outbox_for_chat(
        &self,
        side: SideName,
        chat: ChatId,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, chat_id, message_id, attempts, next_attempt_at FROM outbox \
             WHERE side = $1 AND state = 'pending' AND chat_id = $2 ORDER BY id LIMIT $3",
        )
        .bind(side.as_str())
        .bind(chat.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Counts outbox rows of a side in a state (`pending`, `done`, `failed`, `skipped`).
    pub async fn outbox_count(&self, side: SideName, state: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM outbox WHERE side = $1 AND state = $2")
            .bind(side.as_str())
            .bind(state)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Marks a row delivered and links what the side reported, in one transaction.
    pub async fn complete_outbox(
        &self,
        row: &OutboxRow,
        side: SideName,
        links: &[(String, String)],
        chat_link: Option<&str>,
        puppet_links: &[(PuppetId, String)],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        for (p, remote) in puppet_links {
            tx.link_puppet(*p, side, remote).await?;
        }
        for (part, remote) in links {
            tx.link_message(row.message_id, side, remote, part).await?;
        }
        if let Some(remote_chat) = chat_link {
            tx.link_chat(row.chat_id, side, remote_chat).await?;
        }
        sqlx::query(
            "UPDATE outbox SET state = 'done', done_at = $1, last_error = '' WHERE id = $2",
        )
        .bind(now_ms())
        .bind(row.id.0)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Schedules another attempt.
    pub async fn retry_outbox(
        &self,
        row: &OutboxRow,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3")
            .bind(next_attempt_at)
            .bind(error)
            .bind(row.id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives up on a row (`failed`) or records that it has no meaning on the side (`skipped`).
    pub async fn finish_outbox(&self, row: &OutboxRow, state: &str, error: &str) -> Result<()> {
        sqlx::query("UPDATE outbox SET state = $1, attempts = attempts + 1, last_error = $2, done_at = $3 WHERE id = $4")
            .bind(state)
            .bind(error)
            .bind(now_ms())
            .bind(row.id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The resolved chat view for a side, as of just before `before` (exclusive): name, name timestamp,
    /// topic and the recent ids are those `before` saw (so a rename's view holds the old name); the
    /// members are the current ones.
    pub async fn chat_view(
        &self,
        chat: ChatId,
        side: SideName,
        before: MessageId,
    ) -> Result<ChatView> {
        let mut tx = self.begin().await?;
        let mut c = tx.chat(chat).await?;
        // The first name/topic change at or after `before` recorded what the chat looked like before it.
        let replaced = sqlx::query(
            "SELECT old_name, old_name_ts, old_topic FROM chat_info_change \
             WHERE chat_id = $1 AND message_id >= $2 ORDER BY message_id LIMIT 1",
        )
        .bind(chat.0)
        .bind(before.0)
        .fetch_optional(&mut *tx.tx)
        .await?;
        if let Some(r) = replaced {
            c.name = r.try_get(0)?;
            c.name_ts = r.try_get(1)?;
            c.topic = r.try_get(2)?;
        }
        let remote_chat_id = tx.chat_link_of(chat, side).await?;
        let members = tx.members(chat, side).await?;
        let root = sqlx::query(
            // CROSS JOIN keeps SQLite walking the chat's messages in order instead of every link of the side.
            "SELECT l.remote_msg_id FROM message m CROSS JOIN message_link l \
             WHERE l.message_id = m.id AND m.chat_id = $1 AND l.side = $2 ORDER BY m.id, l.id LIMIT 1",
        )
        .bind(chat.0)
        .bind(side.as_str())
        .fetch_optional(&mut *tx.tx)
        .await?
        .map(|r| r.try_get::<String, _>(0))
        .transpose()?;
        let recent_rows = sqlx::query(
            "SELECT l.remote_msg_id FROM message_link l JOIN message m ON m.id = l.message_id \
             WHERE m.chat_id = $1 AND l.side = $2 AND m.id < $3 AND l.part = '' \
             AND m.kind IN ('message', 'edit', 'membership', 'chat_info') ORDER BY m.id DESC, l.id DESC LIMIT 3",
        )
        .bind(chat.0)
        .bind(side.as_str())
        .bind(before.0)
        .fetch_all(&mut *tx.tx)
        .await?;
        let mut recent = recent_rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        recent.reverse();
        tx.commit().await?;
        Ok(ChatView {
            id: chat,
            group_id: c.group_id,
            name: c.name,
            name_ts: c.name_ts,
            topic: c.topic,
            remote_chat_id,
            members,
            thread_root: root,
            recent,
        })
    }
}

/// A quarantine entry from `id, side, remote_id, reason, raw size, created_at` columns.
fn quarantine_row(r: &sqlx::any::AnyRow) -> Result<QuarantineEntry> {
    Ok(QuarantineEntry {
        id: r.try_get(0)?,
        side: r.try_get(1)?,
        remote_id: r.try_get(2)?,
        reason: r.try_get(3)?,
        raw_bytes: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

fn outbox_row(r: &sqlx::any::AnyRow) -> Result<OutboxRow> {
    Ok(OutboxRow {
        id: OutboxId(r.try_get(0)?),
        chat_id: ChatId(r.try_get(1)?),
        message_id: MessageId(r.try_get(2)?),
        attempts: r.try_get(3)?,
        next_attempt_at: r.try_get(4)?,
    })
}

fn chat_from_row(r: &sqlx::any::AnyRow) -> Result<StoredChat> {
    Ok(StoredChat {
        id: ChatId(r.try_get(0)?),
        group_id: r.try_get(1)?,
        name: r.try_get(2)?,
        name_ts: r.try_get(3)?,
        topic: r.try_get(4)?,
    })
}

fn message_from_row(r: &sqlx::any::AnyRow) -> Result<StoredMessage> {
    let content: String = r.try_get(5)?;
    let event: EventKind =
        serde_json::from_str(&content).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(StoredMessage {
        id: MessageId(r.try_get(0)?),
        uuid: r.try_get(1)?,
        chat_id: ChatId(r.try_get(2)?),
        sender: r.try_get::<Option<i64>, _>(3)?.map(PuppetId),
        origin_side: r.try_get(4)?,
        event,
        ts_ms: r.try_get(6)?,
    })
}

/// A store transaction. Dropping it without [`StoreTx::commit`] rolls back.
pub struct StoreTx {
    tx: Transaction<'static, Any>,
}

impl std::fmt::Debug for StoreTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreTx")
    }
}

impl StoreTx {
    /// Commits.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// See [`Store::quarantine`].
    pub async fn quarantine(
        &mut self,
        side: SideName,
        remote_id: &str,
        reason: &str,
        raw: Option<&[u8]>,
    ) -> Result<bool> {
        let exists = sqlx::query(
            "SELECT id FROM quarantine WHERE side = $1 AND remote_id = $2 AND reason = $3",
        )
        .bind(side.as_str())
        .bind(remote_id)
        .bind(reason)
        .fetch_optional(&mut *self.tx)
        .await?;
        if exists.is_some() {
            return Ok(false);
        }
        sqlx::query("INSERT INTO quarantine (side, remote_id, reason, raw, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(side.as_str())
            .bind(remote_id)
            .bind(reason)
            .bind(raw.map(<[u8]>::to_vec))
            .bind(now_ms())
            .execute(&mut *self.tx)
            .await?;
        Ok(true)
    }

    /// The event linked to a remote id on a side (any part).
    pub async fn message_by_link(
        &mut self,
        side: SideName,
        remote_id: &str,
    ) -> Result<Option<MessageId>> {
        let row = sqlx::query("SELECT message_id FROM message_link WHERE side = $1 AND remote_msg_id = $2 ORDER BY id LIMIT 1")
            .bind(side.as_str())
            .bind(remote_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(MessageId))
    }

    /// The chat linked to a remote chat id.
    pub async fn chat_by_link(
        &mut self,
        side: SideName,
        remote_chat_id: &str,
    ) -> Result<Option<ChatId>> {
        let row =
            sqlx::query("SELECT chat_id FROM chat_link WHERE side = $1 AND remote_chat_id = $2")
                .bind(side.as_str())
                .bind(remote_chat_id)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.map(ChatId))
    }

    /// A chat's remote id on a side.
    pub async fn chat_link_of(&mut self, chat: ChatId, side: SideName) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT remote_chat_id FROM chat_link WHERE chat_id = $1 AND side = $2")
                .bind(chat.0)
                .bind(side.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// The chat of an event.
    pub async fn chat_of_message(&mut self, id: MessageId) -> Result<Option<ChatId>> {
        let row = sqlx::query("SELECT chat_id FROM message WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.map(ChatId))
    }

    /// Chats with exactly this name.
    pub async fn chats_named(&mut self, name: &str) -> Result<Vec<ChatId>> {
        let rows = sqlx::query("SELECT id FROM chat WHERE name = $1 ORDER BY id DESC")
            .bind(name)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(|r| Ok(ChatId(r.try_get(0)?))).collect()
    }

    /// Current members of a chat.
    pub async fn member_set(&mut self, chat: ChatId) -> Result<BTreeSet<PuppetId>> {
        let rows =
            sqlx::query("SELECT puppet_id FROM chat_member WHERE chat_id = $1 AND joined = 1")
                .bind(chat.0)
                .fetch_all(&mut *self.tx)
                .await?;
        rows.iter().map(|r| Ok(PuppetId(r.try_get(0)?))).collect()
    }

    /// Members of a chat as seen from a side, current and past, in join order.
    pub async fn members(&mut self, chat: ChatId, side: SideName) -> Result<Vec<MemberView>> {
        let rows = sqlx::query(
            "SELECT p.id, p.display_name, p.origin_side, \
               (SELECT remote_user_id FROM puppet_link o WHERE o.puppet_id = p.id AND o.side = p.origin_side ORDER BY o.id LIMIT 1), \
               (SELECT remote_user_id FROM puppet_link h WHERE h.puppet_id = p.id AND h.side = $2 ORDER BY h.id LIMIT 1), \
               m.joined, m.changed_ts \
             FROM chat_member m JOIN puppet p ON p.id = m.puppet_id WHERE m.chat_id = $1 ORDER BY m.joined DESC, m.changed_ts, p.id",
        )
        .bind(chat.0)
        .bind(side.as_str())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberView {
                    puppet_id: PuppetId(r.try_get(0)?),
                    display_name: r.try_get(1)?,
                    origin_side: r.try_get(2)?,
                    native_id: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                    remote_id_here: r.try_get(4)?,
                    joined: r.try_get::<i64, _>(5)? != 0,
                    changed_ts: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// One member as seen from a side.
    pub async fn member_view(&mut self, puppet: PuppetId, side: SideName) -> Result<MemberView> {
        let row = sqlx::query(
            "SELECT p.id, p.display_name, p.origin_side, \
               (SELECT remote_user_id FROM puppet_link o WHERE o.puppet_id = p.id AND o.side = p.origin_side ORDER BY o.id LIMIT 1), \
               (SELECT remote_user_id FROM puppet_link h WHERE h.puppet_id = p.id AND h.side = $2 ORDER BY h.id LIMIT 1) \
             FROM puppet p WHERE p.id = $1",
        )
        .bind(puppet.0)
        .bind(side.as_str())
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("puppet {puppet}")))?;
        Ok(MemberView {
            puppet_id: PuppetId(row.try_get(0)?),
            display_name: row.try_get(1)?,
            origin_side: row.try_get(2)?,
            native_id: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
            remote_id_here: row.try_get(4)?,
            joined: true,
            changed_ts: 0,
        })
    }

    /// The puppet linked to a remote user.
    pub async fn puppet_by_link(
        &mut self,
        side: SideName,
        remote_user_id: &str,
    ) -> Result<Option<PuppetId>> {
        let row = sqlx::query(
            "SELECT puppet_id FROM puppet_link WHERE side = $1 AND remote_user_id = $2",
        )
        .bind(side.as_str())
        .bind(remote_user_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(PuppetId))
    }

    /// Finds or creates the puppet for a person; updates a changed display name.
    pub async fn ensure_puppet(&mut self, user: &UserRef) -> Result<PuppetId> {
        if let Some(id) = self.puppet_by_link(user.side, &user.remote_id).await? {
            if let Some(name) = user.display_name.as_deref().filter(|n| !n.is_empty()) {
                sqlx::query(
                    "UPDATE puppet SET display_name = $1 WHERE id = $2 AND display_name <> $1",
                )
                .bind(name)
                .bind(id.0)
                .execute(&mut *self.tx)
                .await?;
            }
            return Ok(id);
        }
        let name = user.display_name.clone().unwrap_or_default();
        let row = sqlx::query("INSERT INTO puppet (origin_side, display_name, created_at) VALUES ($1, $2, $3) RETURNING id")
            .bind(user.side.as_str())
            .bind(name)
            .bind(now_ms())
            .fetch_one(&mut *self.tx)
            .await?;
        let id = PuppetId(row.try_get(0)?);
        self.link_puppet(id, user.side, &user.remote_id).await?;
        Ok(id)
    }

    /// Links a puppet to a remote user id on a side (idempotent).
    pub async fn link_puppet(
        &mut self,
        puppet: PuppetId,
        side: SideName,
        remote_user_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO puppet_link (puppet_id, side, remote_user_id) VALUES ($1, $2, $3) \
             ON CONFLICT (side, remote_user_id) DO NOTHING",
        )
        .bind(puppet.0)
        .bind(side.as_str())
        .bind(remote_user_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Creates a chat.
    pub async fn create_chat(
        &mut self,
        group_id: &str,
        name: &str,
        topic: &str,
        name_ts: i64,
    ) -> Result<ChatId> {
        let row = sqlx::query(
            "INSERT INTO chat (group_id, name, name_ts, topic, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(group_id)
        .bind(name)
        .bind(name_ts)
        .bind(topic)
        .bind(now_ms())
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(ChatId(row.try_get(0)?))
    }

    /// A stored chat.
    pub async fn chat(&mut self, chat: ChatId) -> Result<StoredChat> {
        let row = sqlx::query("SELECT id, group_id, name, name_ts, topic FROM chat WHERE id = $1")
            .bind(chat.0)
            .fetch_optional(&mut *self.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("chat {chat}")))?;
        chat_from_row(&row)
    }

    /// Updates name and/or topic.
    pub async fn update_chat_info(
        &mut self,
        chat: ChatId,
        name: Option<&str>,
        topic: Option<&str>,
        ts_s: i64,
    ) -> Result<()> {
        if let Some(name) = name {
            sqlx::query("UPDATE chat SET name = $1, name_ts = $2 WHERE id = $3")
                .bind(name)
                .bind(ts_s)
                .bind(chat.0)
                .execute(&mut *self.tx)
                .await?;
        }
        if let Some(topic) = topic {
            sqlx::query("UPDATE chat SET topic = $1 WHERE id = $2")
                .bind(topic)
                .bind(chat.0)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Records what a chat-info event replaced, so later views as of that event show the old state.
    pub async fn record_chat_info_change(
        &mut self,
        message: MessageId,
        before: &StoredChat,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO chat_info_change (message_id, chat_id, old_name, old_name_ts, old_topic) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(message.0)
        .bind(before.id.0)
        .bind(before.name.as_str())
        .bind(before.name_ts)
        .bind(before.topic.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records that `reader` has seen `message`; false if that was already recorded.
    pub async fn mark_seen(&mut self, message: MessageId, reader: PuppetId) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO receipt (message_id, puppet_id) VALUES ($1, $2) \
             ON CONFLICT (message_id, puppet_id) DO NOTHING",
        )
        .bind(message.0)
        .bind(reader.0)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Links a chat to a remote chat id (idempotent for the same pair).
    pub async fn link_chat(
        &mut self,
        chat: ChatId,
        side: SideName,
        remote_chat_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO chat_link (chat_id, side, remote_chat_id) VALUES ($1, $2, $3) ON CONFLICT (side, remote_chat_id) DO NOTHING",
        )
        .bind(chat.0)
        .bind(side.as_str())
        .bind(remote_chat_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Sides a chat is linked on.
    pub async fn chat_sides(&mut self, chat: ChatId) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT side FROM chat_link WHERE chat_id = $1 ORDER BY side")
            .bind(chat.0)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The sides the chat's joined members come from.
    pub async fn member_sides(&mut self, chat: ChatId) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT p.origin_side FROM chat_member m JOIN puppet p ON p.id = m.puppet_id \
             WHERE m.chat_id = $1 AND m.joined = 1 ORDER BY p.origin_side",
        )
        .bind(chat.0)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Sets a member's state; returns true if it changed.
    pub async fn set_member(
        &mut self,
        chat: ChatId,
        puppet: PuppetId,
        joined: bool,
        ts_s: i64,
    ) -> Result<bool> {
        let j = i64::from(joined);
        let row =
            sqlx::query("SELECT joined FROM chat_member WHERE chat_id = $1 AND puppet_id = $2")
                .bind(chat.0)
                .bind(puppet.0)
                .fetch_optional(&mut *self.tx)
                .await?;
        match row {
            Some(r) if r.try_get::<i64, _>(0)? == j => Ok(false),
            Some(_) => {
                sqlx::query("UPDATE chat_member SET joined = $1, changed_ts = $2 WHERE chat_id = $3 AND puppet_id = $4")
                    .bind(j)
                    .bind(ts_s)
                    .bind(chat.0)
                    .bind(puppet.0)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(true)
            }
            None => {
                sqlx::query("INSERT INTO chat_member (chat_id, puppet_id, joined, changed_ts) VALUES ($1, $2, $3, $4)")
                    .bind(chat.0)
                    .bind(puppet.0)
                    .bind(j)
                    .bind(ts_s)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(true)
            }
        }
    }

    /// Stores an event.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_message(
        &mut self,
        uuid: &str,
        chat: ChatId,
        sender: Option<PuppetId>,
        origin_side: &str,
        event: &EventKind,
        target: Option<MessageId>,
        ts_ms: i64,
    ) -> Result<MessageId> {
        let content =
            serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = sqlx::query(
            "INSERT INTO message (uuid, chat_id, sender_puppet_id, origin_side, kind, target_message_id, ts, content, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(uuid)
        .bind(chat.0)
        .bind(sender.map(|p| p.0))
        .bind(origin_side)
        .bind(event.name())
        .bind(target.map(|m| m.0))
        .bind(ts_ms)
        .bind(content)
        .bind(now_ms())
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(MessageId(row.try_get(0)?))
    }

    /// A stored event.
    pub async fn message(&mut self, id: MessageId) -> Result<StoredMessage> {
        let row = sqlx::query("SELECT id, uuid, chat_id, sender_puppet_id, origin_side, content, ts FROM message WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&mut *self.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("message {id}")))?;
        message_from_row(&row)
    }

    /// The remote id of an event on a side (whole-message part first).
    pub async fn link_of_message(
        &mut self,
        id: MessageId,
        side: SideName,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT remote_msg_id FROM message_link WHERE message_id = $1 AND side = $2 ORDER BY CASE WHEN part = '' THEN 0 ELSE 1 END, id LIMIT 1",
        )
        .bind(id.0)
        .bind(side.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Links an event to a remote id (idempotent for the same triple).
    pub async fn link_message(
        &mut self,
        id: MessageId,
        side: SideName,
        remote_id: &str,
        part: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO message_link (message_id, side, remote_msg_id, part) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (side, remote_msg_id, part) DO NOTHING",
        )
        .bind(id.0)
        .bind(side.as_str())
        .bind(remote_id)
        .bind(part)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The reactions a puppet holds on a message: (key, the reaction's event), oldest first.
    pub async fn reactions_by(
        &mut self,
        target: MessageId,
        puppet: PuppetId,
    ) -> Result<Vec<(String, MessageId)>> {
        let rows = sqlx::query(
            "SELECT reaction_key, event_message_id FROM reaction WHERE message_id = $1 AND puppet_id = $2 ORDER BY id",
        )
        .bind(target.0)
        .bind(puppet.0)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, MessageId(r.try_get(1)?))))
            .collect()
    }

    /// Removes one reaction of a puppet.
    pub async fn remove_reaction(
        &mut self,
        target: MessageId,
        puppet: PuppetId,
        key: &str,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM reaction WHERE message_id = $1 AND puppet_id = $2 AND reaction_key = $3",
        )
        .bind(target.0)
        .bind(puppet.0)
        .bind(key)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Removes all of a puppet's reactions on a message.
    pub async fn clear_reactions(&mut self, target: MessageId, puppet: PuppetId) -> Result<()> {
        sqlx::query("DELETE FROM reaction WHERE message_id = $1 AND puppet_id = $2")
            .bind(target.0)
            .bind(puppet.0)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records a reaction; an empty key removes all of the puppet's reactions on the target.
    pub async fn set_reaction(
        &mut self,
        target: MessageId,
        puppet: PuppetId,
        key: &str,
        event: MessageId,
    ) -> Result<()> {
        if key.is_empty() {
            return self.clear_reactions(target, puppet).await;
        }
        sqlx::query(
            "INSERT INTO reaction (message_id, puppet_id, reaction_key, event_message_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (message_id, puppet_id, reaction_key) DO NOTHING",
        )
        .bind(target.0)
        .bind(puppet.0)
        .bind(key)
        .bind(event.0)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Queues an event for a side.
    pub async fn enqueue(&mut self, side: &str, chat: ChatId, message: MessageId) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (side, chat_id, message_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (side, message_id) DO NOTHING",
        )
        .bind(side)
        .bind(chat.0)
        .bind(message.0)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
