//! The control store's database: SQLite (the embedded default) or PostgreSQL (shared by
//! workers on several machines). One small interface over both: statements written with
//! `?N` placeholders, values that are integers, text or NULL, and transactions that take
//! the write lock up front (SQLite `BEGIN IMMEDIATE`; PostgreSQL row locks taken with
//! `FOR UPDATE`, which `Db::lock` and `Db::skip_locked` spell per database).

use std::path::PathBuf;
use std::sync::mpsc;

use lifeboat_core::{Error, Result};

/// A value bound into a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}

impl From<u32> for Val {
    fn from(v: u32) -> Val {
        Val::Int(i64::from(v))
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_string())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}

impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(v.clone())
    }
}

impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// One row of a result.
#[derive(Debug, Clone)]
pub struct Row(Vec<Val>);

impl Row {
    fn at(&self, i: usize) -> Result<&Val> {
        self.0
            .get(i)
            .ok_or_else(|| Error::source(format!("control store: no column {i} in a row")))
    }

    pub fn text(&self, i: usize) -> Result<String> {
        Ok(self.opt_text(i)?.unwrap_or_default())
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(match self.at(i)? {
            Val::Null => None,
            Val::Text(t) => Some(t.clone()),
            Val::Int(n) => Some(n.to_string()),
        })
    }

    /// A word of a vocabulary (`Stage`, `IncidentStatus`, …); an unknown one is an error.
    pub fn word<T: std::str::FromStr<Err = Error>>(&self, i: usize) -> Result<T> {
        self.text(i)?
            .parse()
            .map_err(|e: Error| Error::source(format!("control store: {}", e.message())))
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        Ok(self.opt_int(i)?.unwrap_or(0))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.at(i)? {
            Val::Null => Ok(None),
            Val::Int(n) => Ok(Some(*n)),
            Val::Text(t) => t
                .parse()
                .map(Some)
                .map_err(|_| Error::source(format!("control store: {t:?} is not an integer"))),
        }
    }
}

pub(crate) enum Db {
    Sqlite {
        conn: rusqlite::Connection,
        path: PathBuf,
    },
    Postgres {
        client: PgClient,
        url: String,
    },
}

impl Db {
    /// `sqlite:///abs/file`, a plain path, or `postgres://…`.
    pub(crate) fn open(url: &str) -> Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Db::Postgres {
                client: PgClient::connect(url)?,
                url: lifeboat_core::config::redact_url(url),
            });
        }
        let path = if url.starts_with("sqlite:") {
            lifeboat_core::config::sqlite_path(url)?
        } else {
            PathBuf::from(url)
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::config(format!(
                    "control store {}: cannot create its directory: {e}",
                    path.display()
                ))
            })?;
        }
        let conn = rusqlite::Connection::open(&path).map_err(|e| {
            Error::config(format!(
                "control store {}: cannot open: {e}",
                path.display()
            ))
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| Error::config(format!("control store {}: {e}", path.display())))?;
        Ok(Db::Sqlite { conn, path })
    }

    /// Wait at most `wait` for another connection's lock (SQLite's busy timeout,
    /// PostgreSQL's `lock_timeout`), then fail the statement.
    pub(crate) fn limit_lock_waits(&mut self, wait: std::time::Duration) -> Result<()> {
        match self {
            Db::Sqlite { conn, .. } => conn.busy_timeout(wait).map_err(|e| e.to_string()),
            Db::Postgres { .. } => {
                return self.batch(&format!("SET lock_timeout = {}", wait.as_millis().max(1)));
            }
        }
        .map_err(|e| self.err(e))
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Db::Sqlite { path, .. } => path.display().to_string(),
            Db::Postgres { url, .. } => url.clone(),
        }
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres { .. })
    }

    /// ` FOR UPDATE` on PostgreSQL (SQLite's write transaction already excludes others).
    pub(crate) fn lock(&self) -> &'static str {
        if self.is_postgres() {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    /// ` FOR UPDATE SKIP LOCKED` on PostgreSQL: rows another worker holds are passed over.
    pub(crate) fn skip_locked(&self) -> &'static str {
        if self.is_postgres() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::source(format!("control store {}: {e}", self.describe()))
    }

    /// Run statements separated by `;` (the schema).
    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        let result = match self {
            Db::Sqlite { conn, .. } => conn.execute_batch(sql).map_err(|e| e.to_string()),
            Db::Postgres { client, .. } => {
                let sql = sql.to_string();
                client.call(move |c| c.batch_execute(&sql).map_err(|e| e.to_string()))?
            }
        };
        result.map_err(|e| self.err(e))
    }

    /// Add `column` (declared as `declaration`) to `table` unless it is there: how a store
    /// made by an earlier version gets a newer column on its first open. Safe when several
    /// processes open the store at once (PostgreSQL's `IF NOT EXISTS`; on SQLite the check
    /// and the change share one write transaction).
    pub(crate) fn add_column(
        &mut self,
        table: &str,
        column: &str,
        declaration: &str,
    ) -> Result<()> {
        if self.is_postgres() {
            // Looked up first: the ALTER takes the table's strongest lock even when the
            // column is there.
            let present = self
                .query_one(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema =
                     current_schema() AND table_name = ?1 AND column_name = ?2",
                    &[table.into(), column.into()],
                )?
                .is_some();
            if present {
                return Ok(());
            }
            return self.batch(&format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {declaration}"
            ));
        }
        self.transaction(|db| {
            let present = db
                .query_one(
                    "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2",
                    &[table.into(), column.into()],
                )?
                .is_some();
            if !present {
                db.batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
                ))?;
            }
            Ok(())
        })
    }

    pub(crate) fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>> {
        let result = match self {
            Db::Sqlite { conn, .. } => sqlite_query(conn, sql, params).map_err(|e| e.to_string()),
            Db::Postgres { client, .. } => {
                let sql = postgres_sql(sql);
                let params = params.to_vec();
                client.call(move |c| {
                    c.query(sql.as_str(), &pg_params(&params))
                        .map(|rows| rows.iter().map(pg_row).collect())
                        .map_err(|e| pg_message(&e))
                })?
            }
        };
        result.map_err(|e| self.err(e))
    }

    pub(crate) fn query_one(&mut self, sql: &str, params: &[Val]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub(crate) fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let result = match self {
            Db::Sqlite { conn, .. } => {
                let values: Vec<rusqlite::types::Value> = params.iter().map(sqlite_value).collect();
                conn.execute(sql, rusqlite::params_from_iter(values))
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string())
            }
            Db::Postgres { client, .. } => {
                let sql = postgres_sql(sql);
                let params = params.to_vec();
                client.call(move |c| {
                    c.execute(sql.as_str(), &pg_params(&params))
                        .map_err(|e| pg_message(&e))
                })?
            }
        };
        result.map_err(|e| self.err(e))
    }

    /// Run `work` in a write transaction; commit when it succeeds, roll back otherwise.
    pub(crate) fn transaction<T>(&mut self, work: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        let begin = if self.is_postgres() {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        };
        self.batch(begin)?;
        let result = work(self).and_then(|out| self.batch("COMMIT").map(|()| out));
        if result.is_err() {
            // After a failed statement or COMMIT the transaction may still be open.
            let _ = self.batch("ROLLBACK");
        }
        result
    }
}

fn sqlite_value(v: &Val) -> rusqlite::types::Value {
    match v {
        Val::Null => rusqlite::types::Value::Null,
        Val::Int(n) => rusqlite::types::Value::Integer(*n),
        Val::Text(t) => rusqlite::types::Value::Text(t.clone()),
    }
}

fn sqlite_query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Val],
) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let values: Vec<rusqlite::types::Value> = params.iter().map(sqlite_value).collect();
    let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
        let mut row = Vec::with_capacity(columns);
        for i in 0..columns {
            row.push(match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Val::Null,
                rusqlite::types::ValueRef::Integer(n) => Val::Int(n),
                rusqlite::types::ValueRef::Real(f) => Val::Text(f.to_string()),
                rusqlite::types::ValueRef::Text(t) => {
                    Val::Text(String::from_utf8_lossy(t).into_owned())
                }
                rusqlite::types::ValueRef::Blob(b) => {
                    Val::Text(String::from_utf8_lossy(b).into_owned())
                }
            });
        }
        Ok(Row(row))
    })?;
    rows.collect()
}

/// `?N` placeholders become `$N`.
fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn pg_params(params: &[Val]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

fn pg_row(row: &postgres::Row) -> Row {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.get::<_, Option<i64>>(i).map(Val::Int),
            Type::INT4 => row.get::<_, Option<i32>>(i).map(|n| Val::Int(i64::from(n))),
            Type::INT2 => row.get::<_, Option<i16>>(i).map(|n| Val::Int(i64::from(n))),
            Type::BOOL => row
                .get::<_, Option<bool>>(i)
                .map(|b| Val::Int(i64::from(b))),
            _ => row
                .try_get::<_, Option<String>>(i)
                .ok()
                .flatten()
                .map(Val::Text),
        };
        out.push(value.unwrap_or(Val::Null));
    }
    Row(out)
}

impl postgres::types::ToSql for Val {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use postgres::types::Type;
        match (self, ty) {
            (Val::Null, _) => Ok(postgres::types::IsNull::Yes),
            (Val::Int(n), &Type::INT8) => n.to_sql(ty, out),
            (Val::Int(n), &Type::INT4) => i32::try_from(*n)?.to_sql(ty, out),
            (Val::Int(n), &Type::INT2) => i16::try_from(*n)?.to_sql(ty, out),
            (Val::Int(n), _) => n.to_string().to_sql(ty, out),
            (Val::Text(t), &Type::INT8) => t.parse::<i64>()?.to_sql(ty, out),
            (Val::Text(t), _) => t.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A PostgreSQL connection owned by its own thread: the synchronous client runs its own
/// runtime, which must not be entered from the async tasks that call the control store.
pub(crate) struct PgClient {
    jobs: mpsc::Sender<Job>,
}

/// Work for the connection's thread.
type Job = Box<dyn FnOnce(&mut postgres::Client) + Send>;

/// A synchronous connection, TLS and password read the libpq way (`lifeboat_core::pg`).
fn connect_postgres(url: &str) -> std::result::Result<postgres::Client, String> {
    let settings = lifeboat_core::pg::settings(url, None).map_err(|e| e.to_string())?;
    let mut config: postgres::Config = settings.url.parse().map_err(|e| format!("{e}"))?;
    if let Some(password) = &settings.password {
        config.password(password);
    }
    if config.get_user().is_none() {
        config.user(&settings.user);
    }
    let explain = |e: postgres::Error| {
        lifeboat_core::pg::explain_tls_error(&format!("{e:?}"), &settings)
            .unwrap_or_else(|| pg_message(&e))
    };
    match lifeboat_core::pg::tls_config(&settings).map_err(|e| e.to_string())? {
        None => {
            config.ssl_mode(postgres::config::SslMode::Disable);
            config.connect(postgres::NoTls).map_err(explain)
        }
        Some(tls) => {
            config.ssl_mode(if settings.sslmode.requires_tls() {
                postgres::config::SslMode::Require
            } else {
                postgres::config::SslMode::Prefer
            });
            config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .map_err(explain)
        }
    }
}

impl PgClient {
    fn connect(url: &str) -> Result<PgClient> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready, connected) = mpsc::sync_channel::<std::result::Result<(), String>>(1);
        let shown = lifeboat_core::config::redact_url(url);
        let url = url.to_string();
        std::thread::Builder::new()
            .name("lifeboat-control".into())
            .spawn(move || {
                let mut client = match connect_postgres(&url) {
                    Ok(c) => {
                        let _ = ready.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = inbox.recv() {
                    job(&mut client);
                }
            })
            .map_err(|e| Error::source(format!("control store: cannot start a thread: {e}")))?;
        match connected.recv() {
            Ok(Ok(())) => Ok(PgClient { jobs }),
            Ok(Err(e)) => Err(Error::config(format!(
                "control store {shown}: cannot connect: {e}"
            ))),
            Err(_) => Err(Error::source(
                "control store: the connection thread stopped",
            )),
        }
    }

    fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
    ) -> Result<T> {
        let (send, receive) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |c| {
                let _ = send.send(work(c));
            }))
            .map_err(|_| Error::source("control store: the connection thread stopped"))?;
        receive
            .recv()
            .map_err(|_| Error::source("control store: the connection thread stopped"))
    }
}
