//! The inventory: every certificate the CA has signed, in SQLite (`inventory.db`).
//!
//! A certificate is recorded `pending` in a committed transaction *before* its key leaves memory,
//! and becomes `active` only after its bundle is written (or its card flashed). So a process
//! killed at any point leaves either nothing (killed before the row: the key died with the
//! process) or a `pending` row (`list` shows it; the next issuance for that device revokes it),
//! never a certificate without a row nor an `active` row for a bundle that was never written.
//!
//! Concurrency: WAL, `BEGIN IMMEDIATE` for every write (so two `autoprov` processes serialise
//! instead of failing half-way) and a busy timeout. Durability: `synchronous = FULL`, so a
//! committed row survives power loss — with NORMAL, WAL commits can be lost on power failure while
//! the bundle written after them (fsynced) survives: a certificate nobody knows about. Bulk
//! issuance amortises the fsync by recording many certificates per transaction.
//!
//! Schema changes are numbered migrations applied in order (`PRAGMA user_version`). No private key
//! is ever stored here; the certificate itself (public) is, as DER.

use std::path::{Path, PathBuf};
use std::time::Duration;

use autoprov_bundle::DeviceId;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde::Serialize;

/// The migrations, in order; `user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: devices, certificates, flashes, and a key/value table for CA facts and the CRL number.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE devices (
        id         TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    );
    CREATE TABLE certificates (
        serial            TEXT PRIMARY KEY,
        kind              TEXT NOT NULL CHECK (kind IN ('device', 'server')),
        subject           TEXT NOT NULL,
        device_id         TEXT REFERENCES devices(id),
        fingerprint       TEXT NOT NULL UNIQUE,
        key_type          TEXT NOT NULL,
        not_before        TEXT NOT NULL,
        not_after         TEXT NOT NULL,
        status            TEXT NOT NULL
                          CHECK (status IN ('pending', 'active', 'superseded', 'revoked')),
        issued_at         TEXT NOT NULL,
        activated_at      TEXT,
        superseded_at     TEXT,
        revoked_at        TEXT,
        revocation_reason TEXT,
        note              TEXT,
        der               BLOB NOT NULL,
        CHECK ((kind = 'device') = (device_id IS NOT NULL))
    );
    CREATE INDEX certificates_by_subject ON certificates (kind, subject, status);
    CREATE TABLE flashes (
        id           INTEGER PRIMARY KEY,
        device_id    TEXT NOT NULL REFERENCES devices(id),
        serial       TEXT REFERENCES certificates(serial),
        image_sha256 TEXT NOT NULL,
        target       TEXT NOT NULL,
        started_at   TEXT NOT NULL,
        finished_at  TEXT,
        result       TEXT NOT NULL CHECK (result IN ('started', 'ok', 'failed')),
        detail       TEXT
    );
    "#,
    // 2: whether a record is a whole-image flash or an in-place inject of the bundle.
    r#"
    ALTER TABLE flashes ADD COLUMN kind TEXT NOT NULL DEFAULT 'flash'
        CHECK (kind IN ('flash', 'inject'));
    "#,
];

/// Why the inventory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file is missing although the CA exists.
    #[error(
        "{0} is missing: restore it from your backup, or run `autoprov ca init` to start an empty one (certificates issued before will not be listed)"
    )]
    Missing(PathBuf),
    /// Another process holds the database longer than the lock timeout.
    #[error(
        "{0} is locked by another process (still busy after the lock timeout); wait for it to finish, or raise --lock-timeout"
    )]
    Locked(PathBuf),
    /// The file is not a usable SQLite database.
    #[error(
        "{0} is corrupted or not an autoprov inventory ({1}); restore it from your backup. Nothing was changed"
    )]
    Corrupt(PathBuf, String),
    /// The schema is newer than this build.
    #[error(
        "{path} has schema version {found}, newer than this autoprov ({known}); update autoprov"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: usize,
    },
    /// The device already has an active certificate.
    #[error(
        "{device} already has an active certificate (serial {serial}); use `autoprov rotate {device} --out DIR` to replace it"
    )]
    DeviceActive {
        /// The device.
        device: DeviceId,
        /// Its active serial.
        serial: String,
    },
    /// The device has no active certificate to rotate.
    #[error("{0} has no active certificate to rotate; use `autoprov issue {0} --out DIR`")]
    NothingToRotate(DeviceId),
    /// No such device or certificate.
    #[error("{0}")]
    NotFound(String),
    /// The pending certificate was revoked meanwhile (a concurrent issuance for the same device).
    #[error(
        "certificate {0} is no longer pending: another autoprov process issued for the same device meanwhile; discard this bundle and check `autoprov list`"
    )]
    NoLongerPending(String),
    /// Any other database error.
    #[error("{0}: {1}")]
    Sqlite(PathBuf, rusqlite::Error),
}

/// Status of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Signed and recorded; its bundle is being written (or the writer was interrupted).
    Pending,
    /// Delivered and current.
    Active,
    /// Replaced by a newer certificate; still valid until it expires (the old card keeps working).
    Superseded,
    /// Revoked: listed in the CRL.
    Revoked,
}

impl Status {
    /// The name stored in the database and printed.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Superseded => "superseded",
            Status::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "active" => Status::Active,
            "superseded" => Status::Superseded,
            "revoked" => Status::Revoked,
            _ => Status::Pending,
        }
    }
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A device's client certificate.
    Device,
    /// A broker's server certificate.
    Server,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Server => "server",
        }
    }
}

/// What a new certificate row holds.
#[derive(Clone, Debug)]
pub struct NewCert {
    /// Serial, lower-case hex.
    pub serial: String,
    /// Device or server.
    pub kind: Kind,
    /// Device id or server name (the CN).
    pub subject: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// Key type name.
    pub key_type: String,
    /// Validity start, RFC 3339.
    pub not_before: String,
    /// Validity end, RFC 3339.
    pub not_after: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// Whether a device may already have an active certificate when a new one is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `issue`: refuse a device with an active certificate.
    NoActive,
    /// `rotate`: require one.
    Active,
    /// Servers, and callers that decide themselves.
    Any,
}

/// One row of `list`.
#[derive(Clone, Debug, Serialize)]
pub struct CertRow {
    /// Device id or server name.
    pub id: String,
    /// Device or server.
    pub kind: Kind,
    /// Serial, lower-case hex.
    pub serial: String,
    /// Status.
    pub status: Status,
    /// Validity end, RFC 3339.
    pub not_after: String,
    /// SHA-256 of the DER, hex (the AWS certificate id).
    pub fingerprint: String,
    /// When it was signed.
    pub issued_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Why it was revoked.
    pub revocation_reason: Option<String>,
}

/// A revoked certificate, for the CRL.
#[derive(Clone, Debug)]
pub struct RevokedRow {
    /// Serial, lower-case hex.
    pub serial: String,
    /// When, RFC 3339.
    pub revoked_at: String,
    /// Reason name as given to `revoke`.
    pub reason: String,
}

/// The open inventory.
pub struct Inventory {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("path", &self.path)
            .finish()
    }
}

/// Default time to wait for another process's transaction.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

impl Inventory {
    /// Opens (creating it if `create`) the inventory at `path` and brings its schema up to date.
    pub fn open(path: &Path, create: bool, lock_timeout: Duration) -> Result<Self, InventoryError> {
        if !create && !path.exists() {
            return Err(InventoryError::Missing(path.to_owned()));
        }
        let conn = Connection::open(path).map_err(|e| classify(path, e))?;
        let mut inv = Inventory {
            conn,
            path: path.to_owned(),
        };
        inv.configure(lock_timeout)?;
        inv.migrate()?;
        Ok(inv)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> InventoryError + '_ {
        move |e| classify(&self.path, e)
    }

    /// Runs `body` in an immediate (write-locked) transaction and commits what it did; an error
    /// from `body` rolls all of it back. `body` gets the file's path for [`classify`].
    fn in_transaction<T>(
        &mut self,
        body: impl FnOnce(&Transaction<'_>, &Path) -> Result<T, InventoryError>,
    ) -> Result<T, InventoryError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, e))?;
        let out = body(&tx, &path)?;
        tx.commit().map_err(|e| classify(&path, e))?;
        Ok(out)
    }

    fn configure(&mut self, lock_timeout: Duration) -> Result<(), InventoryError> {
        self.conn.busy_timeout(lock_timeout).map_err(self.err())?;
        // The first statement to touch the file: a non-database shows up here.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(self.err())?;
        if !mode.eq_ignore_ascii_case("wal") {
            self.conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
                .map_err(self.err())?;
        }
        self.conn
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(self.err())
    }

    /// Switches `synchronous` (FULL by default); for the benchmark's comparison only.
    pub fn set_synchronous_normal(&mut self, normal: bool) -> Result<(), InventoryError> {
        let mode = if normal { "NORMAL" } else { "FULL" };
        self.conn
            .execute_batch(&format!("PRAGMA synchronous = {mode}"))
            .map_err(self.err())
    }

    fn migrate(&mut self) -> Result<(), InventoryError> {
        self.in_transaction(|tx, path| {
            let version: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| classify(path, e))?;
            if version > MIGRATIONS.len() as i64 {
                return Err(InventoryError::TooNew {
                    path: path.to_path_buf(),
                    found: version,
                    known: MIGRATIONS.len(),
                });
            }
            if version == MIGRATIONS.len() as i64 {
                return Ok(());
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.execute_batch(sql).map_err(|e| classify(path, e))?;
                tx.pragma_update(None, "user_version", i as i64 + 1)
                    .map_err(|e| classify(path, e))?;
            }
            Ok(())
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A value of the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, InventoryError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    /// Sets a value of the `meta` table.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), InventoryError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Records certificates as `pending`, all in one transaction, after checking each device
    /// against `expect`. Nothing is recorded if any check fails.
    pub fn record_pending(
        &mut self,
        certs: &[NewCert],
        expect: Expect,
        now: &str,
    ) -> Result<(), InventoryError> {
        self.in_transaction(|tx, path| {
            let e = |e| classify(path, e);
            {
                let mut active = tx
                    .prepare_cached(
                        "SELECT serial FROM certificates
                     WHERE kind = 'device' AND subject = ?1 AND status = 'active' LIMIT 1",
                    )
                    .map_err(e)?;
                let mut device = tx
                .prepare_cached(
                    "INSERT INTO devices (id, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                )
                .map_err(e)?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO certificates (serial, kind, subject, device_id, fingerprint,
                         key_type, not_before, not_after, status, issued_at, der)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10)",
                    )
                    .map_err(e)?;
                for c in certs {
                    let device_id = match c.kind {
                        Kind::Device => {
                            let id = DeviceId::new(c.subject.clone())
                                .map_err(|err| InventoryError::NotFound(err.to_string()))?;
                            let current: Option<String> = active
                                .query_row([&c.subject], |r| r.get(0))
                                .optional()
                                .map_err(e)?;
                            match (expect, current) {
                                (Expect::NoActive, Some(serial)) => {
                                    return Err(InventoryError::DeviceActive {
                                        device: id,
                                        serial,
                                    });
                                }
                                (Expect::Active, None) => {
                                    return Err(InventoryError::NothingToRotate(id));
                                }
                                _ => {}
                            }
                            device.execute(params![c.subject, now]).map_err(e)?;
                            Some(c.subject.as_str())
                        }
                        Kind::Server => None,
                    };
                    insert
                        .execute(params![
                            c.serial,
                            c.kind.name(),
                            c.subject,
                            device_id,
                            c.fingerprint,
                            c.key_type,
                            c.not_before,
                            c.not_after,
                            now,
                            c.der
                        ])
                        .map_err(e)?;
                }
            }
            Ok(())
        })
    }

    /// Marks pending certificates `active` (their bundles are written), in one transaction. The
    /// subject's previous active certificate becomes `superseded` (or `revoked` with reason
    /// `superseded` if `revoke_previous`), and older pending ones — interrupted issuances whose
    /// bundles may or may not exist — are revoked. Returns the serials revoked on the way.
    pub fn activate(
        &mut self,
        serials: &[&str],
        revoke_previous: bool,
        now: &str,
    ) -> Result<Vec<String>, InventoryError> {
        self.in_transaction(|tx, path| activate_in(tx, path, serials, revoke_previous, now))
    }

    /// Revokes a pending certificate whose delivery failed (its bundle may or may not exist, so
    /// the safe end is the CRL, not deletion).
    pub fn abandon(&mut self, serial: &str, why: &str, now: &str) -> Result<(), InventoryError> {
        self.conn
            .execute(ABANDON, params![serial, now, why])
            .map(|_| ())
            .map_err(self.err())
    }

    /// Revokes a subject's certificates that are not revoked yet — or only `serial` — and returns
    /// the rows revoked. An unknown device or serial is an error.
    pub fn revoke(
        &mut self,
        kind: Kind,
        subject: &str,
        serial: Option<&str>,
        reason: &str,
        now: &str,
    ) -> Result<Vec<CertRow>, InventoryError> {
        self.in_transaction(|tx, path| {
            let e = |e| classify(path, e);
            let rows: Vec<CertRow> = {
                let mut q = tx
                    .prepare(&format!(
                        "SELECT {ROW_COLUMNS} FROM certificates WHERE kind = ?1 AND subject = ?2
                     AND (?3 IS NULL OR serial = ?3) ORDER BY rowid"
                    ))
                    .map_err(e)?;
                q.query_map(params![kind.name(), subject, serial], row)
                    .map_err(e)?
                    .collect::<Result<_, _>>()
                    .map_err(e)?
            };
            if rows.is_empty() {
                return Err(InventoryError::NotFound(match serial {
                    Some(s) => {
                        format!("{subject} has no certificate with serial {s}; see `autoprov list`")
                    }
                    None => format!("{subject} is not in the inventory; see `autoprov list`"),
                }));
            }
            let todo: Vec<CertRow> = rows
                .into_iter()
                .filter(|r| r.status != Status::Revoked)
                .collect();
            for r in &todo {
                tx.execute(
                    "UPDATE certificates SET status = 'revoked', revoked_at = ?2,
                     revocation_reason = ?3 WHERE serial = ?1",
                    params![r.serial, now, reason],
                )
                .map_err(e)?;
            }
            Ok(todo)
        })
    }

    /// Every certificate, by subject then in the order they were recorded.
    pub fn list(&self) -> Result<Vec<CertRow>, InventoryError> {
        let mut q = self
            .conn
            .prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM certificates ORDER BY kind, subject, rowid"
            ))
            .map_err(self.err())?;
        q.query_map([], row)
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())
    }

    /// The DER of a certificate.
    pub fn certificate_der(&self, serial: &str) -> Result<Option<Vec<u8>>, InventoryError> {
        self.conn
            .query_row(
                "SELECT der FROM certificates WHERE serial = ?1",
                [serial],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Every revoked certificate, for the CRL.
    pub fn revoked(&self) -> Result<Vec<RevokedRow>, InventoryError> {
        let mut q = self
            .conn
            .prepare(
                "SELECT serial, revoked_at, revocation_reason FROM certificates
                 WHERE status = 'revoked' ORDER BY revoked_at, serial",
            )
            .map_err(self.err())?;
        q.query_map([], |r| {
            Ok(RevokedRow {
                serial: r.get(0)?,
                revoked_at: r.get(1)?,
                reason: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            })
        })
        .map_err(self.err())?
        .collect::<Result<_, _>>()
        .map_err(self.err())
    }

    /// Draws the next CRL number (1, 2, …), durably.
    pub fn next_crl_number(&mut self) -> Result<u64, InventoryError> {
        self.in_transaction(|tx, path| {
            let e = |e| classify(path, e);
            let current: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = 'crl_number'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(e)?;
            let next = current.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('crl_number', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [next.to_string()],
            )
            .map_err(e)?;
            Ok(next)
        })
    }

    /// Records that writing a card for `device` started and returns the record's id for
    /// [`Self::flash_finished`]. Earlier records of the same device still `started` belong to
    /// runs that were killed before they could record a result; they become `failed`.
    pub fn flash_started(
        &mut self,
        device: &DeviceId,
        serial: Option<&str>,
        kind: FlashKind,
        target: &str,
        now: &str,
    ) -> Result<i64, InventoryError> {
        self.in_transaction(|tx, path| {
            let e = |e| classify(path, e);
            tx.execute(
                "INSERT INTO devices (id, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![device.as_str(), now],
            )
            .map_err(e)?;
            tx.execute(
                "UPDATE flashes SET result = 'failed', finished_at = ?2,
                 detail = 'interrupted: autoprov stopped before it could record a result'
             WHERE device_id = ?1 AND result = 'started'",
                params![device.as_str(), now],
            )
            .map_err(e)?;
            // The image digest is known only once the whole image has been read.
            tx.execute(
            "INSERT INTO flashes (device_id, serial, image_sha256, target, started_at, result, kind)
             VALUES (?1, ?2, '', ?3, ?4, 'started', ?5)",
            params![device.as_str(), serial, target, now, kind.name()],
        )
        .map_err(e)?;
            let id = tx.last_insert_rowid();
            Ok(id)
        })
    }

    /// Records how a flash ended, together with what it means for its certificate, in one
    /// transaction: on success the pending certificate `activate` becomes active (see
    /// [`Self::activate`]); on failure the pending certificate `abandon` is revoked. Returns the
    /// serials revoked on the way, for the CRL.
    pub fn flash_finished(
        &mut self,
        id: i64,
        end: &FlashEnd<'_>,
        now: &str,
    ) -> Result<Vec<String>, InventoryError> {
        self.in_transaction(|tx, path| {
            let e = |e| classify(path, e);
            tx.execute(
                "UPDATE flashes SET finished_at = ?2, result = ?3, image_sha256 = ?4, detail = ?5
             WHERE id = ?1",
                params![
                    id,
                    now,
                    if end.ok { "ok" } else { "failed" },
                    end.image_sha256,
                    end.detail
                ],
            )
            .map_err(e)?;
            let mut revoked = Vec::new();
            if let Some((serial, revoke_previous)) = end.activate {
                revoked = activate_in(tx, path, &[serial], revoke_previous, now)?;
            }
            if let Some((serial, why)) = end.abandon
                && tx.execute(ABANDON, params![serial, now, why]).map_err(e)? > 0
            {
                revoked.push(serial.to_owned());
            }
            Ok(revoked)
        })
    }

    /// Every flash and inject, oldest first, or only those of `device`.
    pub fn flashes(&self, device: Option<&DeviceId>) -> Result<Vec<FlashRow>, InventoryError> {
        let mut q = self
            .conn
            .prepare(
                "SELECT id, device_id, kind, serial, image_sha256, target, started_at,
                        finished_at, result, detail
                 FROM flashes WHERE ?1 IS NULL OR device_id = ?1 ORDER BY id",
            )
            .map_err(self.err())?;
        q.query_map([device.map(DeviceId::as_str)], |r| {
            Ok(FlashRow {
                id: r.get(0)?,
                device: r.get(1)?,
                kind: r.get(2)?,
                serial: r.get(3)?,
                image_sha256: r.get(4)?,
                target: r.get(5)?,
                started_at: r.get(6)?,
                finished_at: r.get(7)?,
                result: r.get(8)?,
                detail: r.get(9)?,
            })
        })
        .map_err(self.err())?
        .collect::<Result<_, _>>()
        .map_err(self.err())
    }
}

/// [`Inventory::activate`] inside a transaction the caller commits.
fn activate_in(
    tx: &Transaction<'_>,
    path: &Path,
    serials: &[&str],
    revoke_previous: bool,
    now: &str,
) -> Result<Vec<String>, InventoryError> {
    let e = |e| classify(path, e);
    let mut revoked = Vec::new();
    {
        let mut subject_of = tx
            .prepare_cached(
                "SELECT kind, subject, issued_at FROM certificates
                     WHERE serial = ?1 AND status = 'pending'",
            )
            .map_err(e)?;
        let mut older_pending = tx
            .prepare_cached(
                "SELECT serial FROM certificates WHERE kind = ?1 AND subject = ?2
                     AND status = 'pending' AND serial <> ?3 AND issued_at <= ?4",
            )
            .map_err(e)?;
        let mut previous = tx
            .prepare_cached(
                "SELECT serial FROM certificates
                     WHERE kind = ?1 AND subject = ?2 AND status = 'active'",
            )
            .map_err(e)?;
        let mut revoke = tx
            .prepare_cached(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?2,
                         revocation_reason = 'superseded', note = ?3
                     WHERE serial = ?1",
            )
            .map_err(e)?;
        let mut supersede = tx
            .prepare_cached(
                "UPDATE certificates SET status = 'superseded', superseded_at = ?2
                     WHERE serial = ?1",
            )
            .map_err(e)?;
        let mut activate = tx
            .prepare_cached(
                "UPDATE certificates SET status = 'active', activated_at = ?2
                     WHERE serial = ?1",
            )
            .map_err(e)?;
        for serial in serials {
            let (kind, subject, issued_at): (String, String, String) = subject_of
                .query_row([serial], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(e)?
                .ok_or_else(|| InventoryError::NoLongerPending((*serial).to_owned()))?;
            let stale: Vec<String> = older_pending
                .query_map(params![kind, subject, serial, issued_at], |r| r.get(0))
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?;
            for s in stale {
                revoke
                    .execute(params![s, now, "issuance interrupted; superseded"])
                    .map_err(e)?;
                revoked.push(s);
            }
            let old: Vec<String> = previous
                .query_map(params![kind, subject], |r| r.get(0))
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?;
            for s in old {
                if revoke_previous {
                    revoke
                        .execute(params![s, now, format!("rotated to {serial}")])
                        .map_err(e)?;
                    revoked.push(s);
                } else {
                    supersede.execute(params![s, now]).map_err(e)?;
                }
            }
            activate.execute(params![serial, now]).map_err(e)?;
        }
    }
    Ok(revoked)
}

/// Revokes a pending certificate whose delivery failed: ?1 serial, ?2 time, ?3 why.
const ABANDON: &str = "UPDATE certificates SET status = 'revoked', revoked_at = ?2,
         revocation_reason = 'cessation-of-operation', note = ?3
     WHERE serial = ?1 AND status = 'pending'";

/// What wrote a card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashKind {
    /// `autoprov flash`: the whole image.
    Flash,
    /// `autoprov inject`: only the bundle, in place.
    Inject,
}

impl FlashKind {
    fn name(self) -> &'static str {
        match self {
            FlashKind::Flash => "flash",
            FlashKind::Inject => "inject",
        }
    }
}

/// How a flash ended, for [`Inventory::flash_finished`].
#[derive(Clone, Debug, Default)]
pub struct FlashEnd<'a> {
    /// Written and verified.
    pub ok: bool,
    /// SHA-256 of the image file (flash) or of the boot partition as written (inject), hex;
    /// empty if the image was not read to its end.
    pub image_sha256: &'a str,
    /// What happened, for the operator.
    pub detail: Option<&'a str>,
    /// A pending certificate to activate: serial, and whether to revoke the previous one.
    pub activate: Option<(&'a str, bool)>,
    /// A pending certificate to revoke because its card was not delivered: serial, why.
    pub abandon: Option<(&'a str, &'a str)>,
}

/// One flash or inject, as recorded.
#[derive(Clone, Debug, Serialize)]
pub struct FlashRow {
    /// Record number.
    pub id: i64,
    /// The device.
    pub device: String,
    /// `flash` or `inject`.
    pub kind: String,
    /// The certificate written, if any.
    pub serial: Option<String>,
    /// SHA-256 of the image file (flash) or of the boot partition written (inject).
    pub image_sha256: String,
    /// The target, as described when written.
    pub target: String,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// `started` (still running, or killed), `ok` or `failed`.
    pub result: String,
    /// What happened.
    pub detail: Option<String>,
}

const ROW_COLUMNS: &str = "subject, kind, serial, status, not_after, fingerprint, issued_at, revoked_at, revocation_reason";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertRow> {
    Ok(CertRow {
        id: r.get(0)?,
        kind: if r.get::<_, String>(1)? == "server" {
            Kind::Server
        } else {
            Kind::Device
        },
        serial: r.get(2)?,
        status: Status::parse(&r.get::<_, String>(3)?),
        not_after: r.get(4)?,
        fingerprint: r.get(5)?,
        issued_at: r.get(6)?,
        revoked_at: r.get(7)?,
        revocation_reason: r.get(8)?,
    })
}

/// Turns SQLite's codes into the errors an operator can act on.
fn classify(path: &Path, e: rusqlite::Error) -> InventoryError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            InventoryError::Locked(path.to_owned())
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            InventoryError::Corrupt(path.to_owned(), e.to_string())
        }
        _ => InventoryError::Sqlite(path.to_owned(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: &str, subject: &str) -> NewCert {
        NewCert {
            serial: serial.into(),
            kind: Kind::Device,
            subject: subject.into(),
            fingerprint: format!("fp-{serial}"),
            key_type: "ecdsa-p256".into(),
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: "2028-01-01T00:00:00Z".into(),
            der: vec![1, 2, 3],
        }
    }

    fn open(dir: &Path) -> Inventory {
        Inventory::open(&dir.join("inventory.db"), true, DEFAULT_LOCK_TIMEOUT).unwrap()
    }

    fn statuses(inv: &Inventory) -> Vec<(String, Status)> {
        inv.list()
            .unwrap()
            .into_iter()
            .map(|r| (r.serial, r.status))
            .collect()
    }

    #[test]
    fn pending_becomes_active_and_rotation_supersedes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inv = open(tmp.path());
        let t = "2026-01-01T00:00:00Z";
        inv.record_pending(&[cert("01", "d1")], Expect::NoActive, t)
            .unwrap();
        assert_eq!(statuses(&inv), [("01".into(), Status::Pending)]);
        inv.activate(&["01"], false, t).unwrap();
        let err = inv
            .record_pending(&[cert("02", "d1")], Expect::NoActive, t)
            .unwrap_err();
        assert!(matches!(err, InventoryError::DeviceActive { .. }), "{err}");
        inv.record_pending(&[cert("02", "d1")], Expect::Active, t)
            .unwrap();
        inv.activate(&["02"], false, t).unwrap();
        assert_eq!(
            statuses(&inv),
            [
                ("01".into(), Status::Superseded),
                ("02".into(), Status::Active)
            ]
        );
    }

    #[test]
    fn interrupted_pending_is_revoked_when_the_device_is_issued_again() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inv = open(tmp.path());
        inv.record_pending(
            &[cert("01", "d1")],
            Expect::NoActive,
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        inv.record_pending(
            &[cert("02", "d1")],
            Expect::NoActive,
            "2026-01-01T00:00:01Z",
        )
        .unwrap();
        let revoked = inv
            .activate(&["02"], false, "2026-01-01T00:00:02Z")
            .unwrap();
        assert_eq!(revoked, ["01"]);
        assert_eq!(inv.revoked().unwrap()[0].serial, "01");
        let err = inv
            .activate(&["01"], false, "2026-01-01T00:00:03Z")
            .unwrap_err();
        assert!(matches!(err, InventoryError::NoLongerPending(_)), "{err}");
    }

    #[test]
    fn duplicate_serial_is_refused_and_nothing_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inv = open(tmp.path());
        let t = "2026-01-01T00:00:00Z";
        let mut dup = cert("01", "d2");
        dup.fingerprint = "other".into();
        assert!(
            inv.record_pending(&[cert("01", "d1"), dup], Expect::Any, t)
                .is_err()
        );
        assert!(inv.list().unwrap().is_empty());
    }

    #[test]
    fn reopening_keeps_the_schema_version() {
        let tmp = tempfile::tempdir().unwrap();
        drop(open(tmp.path()));
        let inv = open(tmp.path());
        let v: i64 = inv
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    #[test]
    fn garbage_file_is_reported_as_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("inventory.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = Inventory::open(&path, false, DEFAULT_LOCK_TIMEOUT).unwrap_err();
        assert!(matches!(err, InventoryError::Corrupt(..)), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 8192]);
    }

    #[test]
    fn a_flash_records_its_certificate_outcome_in_the_same_transaction() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inv = open(tmp.path());
        let t = "2026-01-01T00:00:00Z";
        let d1 = DeviceId::new("d1").unwrap();
        inv.record_pending(&[cert("01", "d1")], Expect::NoActive, t)
            .unwrap();
        let ok = inv
            .flash_started(&d1, Some("01"), FlashKind::Flash, "card.img", t)
            .unwrap();
        let end = FlashEnd {
            ok: true,
            image_sha256: "abc",
            detail: Some("verified"),
            activate: Some(("01", false)),
            abandon: None,
        };
        assert!(inv.flash_finished(ok, &end, t).unwrap().is_empty());
        inv.record_pending(&[cert("02", "d1")], Expect::Active, t)
            .unwrap();
        let failed = inv
            .flash_started(&d1, Some("02"), FlashKind::Inject, "/dev/sdb", t)
            .unwrap();
        let end = FlashEnd {
            ok: false,
            detail: Some("read back differs"),
            abandon: Some(("02", "card not written")),
            ..FlashEnd::default()
        };
        assert_eq!(inv.flash_finished(failed, &end, t).unwrap(), ["02"]);
        assert_eq!(
            statuses(&inv),
            [
                ("01".into(), Status::Active),
                ("02".into(), Status::Revoked)
            ]
        );
        let rows = inv.flashes(Some(&d1)).unwrap();
        let summary: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.kind.as_str(), r.result.as_str(), r.image_sha256.as_str()))
            .collect();
        assert_eq!(summary, [("flash", "ok", "abc"), ("inject", "failed", "")]);
    }

    #[test]
    fn a_flash_left_started_by_a_killed_run_is_marked_failed_by_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inv = open(tmp.path());
        let t = "2026-01-01T00:00:00Z";
        let d1 = DeviceId::new("d1").unwrap();
        let d2 = DeviceId::new("d2").unwrap();
        inv.flash_started(&d1, None, FlashKind::Flash, "a", t)
            .unwrap();
        let other = inv
            .flash_started(&d2, None, FlashKind::Flash, "b", t)
            .unwrap();
        inv.flash_started(&d1, None, FlashKind::Flash, "c", t)
            .unwrap();
        let rows = inv.flashes(None).unwrap();
        assert_eq!(rows[0].result, "failed");
        assert!(rows[0].detail.as_deref().unwrap().contains("interrupted"));
        // Another device's flash, perhaps running in parallel, is left alone.
        assert_eq!(rows[1].id, other);
        assert_eq!(rows[1].result, "started");
        assert_eq!(rows[2].result, "started");
    }

    #[test]
    fn crl_numbers_increase() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inv = open(tmp.path());
        assert_eq!(inv.next_crl_number().unwrap(), 1);
        assert_eq!(inv.next_crl_number().unwrap(), 2);
    }
}
