//! The disaster the drill rehearses, on real databases: three product databases (identity,
//! tracker, wiki) with tenants and realistic rows, a workload that keeps writing to the
//! tenants the disaster spares, and the mistaken cleanup script — meant to remove one
//! app, but given site IDs, it deletes whole tenants from every database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::Client;

use lifeboat_core::{Error, Result};

use crate::postgres;
use crate::Stop;

/// The three product databases, in SQL both SQLite and PostgreSQL accept.
const SCHEMAS: [(&str, &str); 3] = [
    (
        "identity",
        "CREATE TABLE sites (id BIGINT PRIMARY KEY, url TEXT NOT NULL, edition TEXT, created_at TEXT);
         CREATE TABLE users (id BIGINT PRIMARY KEY, site_id BIGINT NOT NULL, email TEXT, name TEXT, last_seen TEXT);
         CREATE TABLE app_installations (id BIGINT PRIMARY KEY, site_id BIGINT NOT NULL, app_key TEXT NOT NULL);",
    ),
    (
        "tracker",
        "CREATE TABLE issues (id BIGINT PRIMARY KEY, site_id BIGINT NOT NULL, title TEXT, body TEXT, status TEXT, estimate DOUBLE PRECISION);
         CREATE TABLE comments (id BIGINT PRIMARY KEY, issue_id BIGINT NOT NULL REFERENCES issues(id) ON DELETE CASCADE, body TEXT);",
    ),
    (
        "wiki",
        "CREATE TABLE spaces (id BIGINT PRIMARY KEY, site_id BIGINT NOT NULL, name TEXT);
         CREATE TABLE pages (id BIGINT PRIMARY KEY, space_id BIGINT NOT NULL REFERENCES spaces(id) ON DELETE CASCADE, title TEXT, body TEXT);",
    ),
];

/// The configuration of the drill's three sources.
pub fn config_text(vault_url: &str, urls: &[(String, String)]) -> String {
    let mut text =
        format!("[vault]\nurl = \"{vault_url}\"\n\n[capture]\nflush_interval_ms = 100\n");
    // A site's users: campaigns and plans count them.
    text.push_str("\n[guard]\nusers = \"identity.users\"\n");
    for (name, url) in urls {
        text.push_str(&format!(
            "\n[sources.{name}]\nurl = \"{url}\"\ntenant_column = \"site_id\"\n"
        ));
        match name.as_str() {
            "identity" => {
                text.push_str("[sources.identity.tables.sites]\ntenant_column = \"id\"\n")
            }
            "tracker" => text.push_str(
                "[sources.tracker.tables.comments]\ntenant_via = \"issue_id -> issues.id\"\n",
            ),
            _ => text
                .push_str("[sources.wiki.tables.pages]\ntenant_via = \"space_id -> spaces.id\"\n"),
        }
    }
    text
}

/// A product database the drill writes to.
pub enum Product {
    Sqlite(PathBuf, std::sync::Mutex<rusqlite::Connection>),
    Postgres(String, Client),
}

impl Product {
    pub fn url(&self) -> String {
        match self {
            Product::Sqlite(path, _) => format!("sqlite://{}", path.display()),
            Product::Postgres(url, _) => url.clone(),
        }
    }

    pub async fn execute(&self, sql: &str) -> Result<()> {
        match self {
            Product::Sqlite(path, conn) => conn
                .lock()
                .map_err(|_| Error::source("sqlite connection poisoned"))?
                .execute_batch(sql)
                .map_err(|e| Error::source(format!("sqlite {}: {e}", path.display()))),
            Product::Postgres(_, client) => client
                .batch_execute(sql)
                .await
                .map_err(|e| postgres::pg_error("drill", e)),
        }
    }

    /// Run `sql` (statements, no result) as one transaction and return its id as
    /// `--before-tx` wants it: the PostgreSQL xid, or the first SQLite changelog entry.
    pub async fn transaction_with_id(&self, sql: &str) -> Result<u64> {
        match self {
            Product::Sqlite(path, conn) => {
                let mut conn = conn
                    .lock()
                    .map_err(|_| Error::source("sqlite connection poisoned"))?;
                let err =
                    |e: rusqlite::Error| Error::source(format!("sqlite {}: {e}", path.display()));
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(err)?;
                let last = crate::sqlite::issued(&tx).map_err(err)?;
                tx.execute_batch(sql).map_err(err)?;
                tx.commit().map_err(err)?;
                Ok(last + 1)
            }
            Product::Postgres(_, client) => {
                let rows = client
                    .simple_query(&format!(
                        "BEGIN; {sql}; SELECT txid_current()::text; COMMIT;"
                    ))
                    .await
                    .map_err(|e| postgres::pg_error("drill", e))?;
                rows.iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            r.get(0).and_then(|v| v.parse().ok())
                        }
                        _ => None,
                    })
                    .ok_or_else(|| Error::source("drill: no transaction id"))
            }
        }
    }
}

/// Drop the drill's databases on the PostgreSQL server, and their replication slots.
pub async fn drop_postgres(server: &str) -> Result<()> {
    let admin = postgres::connect(server, "public").await?;
    for (name, _) in SCHEMAS {
        let database = format!("lifeboat_drill_{name}");
        for slot in admin
            .query(
                "SELECT slot_name::text FROM pg_replication_slots WHERE database = $1",
                &[&database],
            )
            .await
            .map_err(|e| postgres::pg_error("drill", e))?
        {
            let slot: String = slot.get(0);
            let _ = admin
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await;
        }
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .await
            .map_err(|e| postgres::pg_error(&format!("drill: cannot drop {database}"), e))?;
    }
    Ok(())
}

/// Create the three databases (SQLite files in `dir`, or databases on the PostgreSQL
/// server at `postgres_url`) with `tenants` tenants.
pub async fn create(
    dir: &Path,
    postgres_url: Option<&str>,
    tenants: u64,
) -> Result<Vec<(String, Product)>> {
    let mut out = Vec::new();
    for (name, schema) in SCHEMAS {
        let product = match postgres_url {
            None => {
                let path = dir.join(format!("{name}.db"));
                let conn = rusqlite::Connection::open(&path)
                    .map_err(|e| Error::source(format!("sqlite {}: {e}", path.display())))?;
                conn.busy_timeout(Duration::from_secs(30))
                    .and_then(|_| {
                        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
                    })
                    .map_err(|e| Error::source(format!("sqlite {}: {e}", path.display())))?;
                Product::Sqlite(path, std::sync::Mutex::new(conn))
            }
            Some(server) => {
                if out.is_empty() {
                    drop_postgres(server).await?;
                }
                let admin = postgres::connect(server, "public").await?;
                let database = format!("lifeboat_drill_{name}");
                admin
                    .batch_execute(&format!("CREATE DATABASE {database}"))
                    .await
                    .map_err(|e| {
                        postgres::pg_error(&format!("drill: cannot create database {database}"), e)
                    })?;
                let url = database_url(server, &database)?;
                let client = postgres::connect(&url, "public").await?;
                Product::Postgres(url, client)
            }
        };
        product.execute(schema).await?;
        product.execute(&seed(name, tenants)).await?;
        out.push((name.to_string(), product));
    }
    Ok(out)
}

fn database_url(server: &str, database: &str) -> Result<String> {
    let mut url =
        url::Url::parse(server).map_err(|e| Error::usage(format!("--postgres {server:?}: {e}")))?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

const EDITIONS: [&str; 3] = ["free", "standard", "enterprise"];

/// Rows for every tenant: a site with users and apps; issues with comments; wiki spaces
/// with pages. Ids are derived from the tenant so that every database agrees.
fn seed(database: &str, tenants: u64) -> String {
    let mut sql = String::from("BEGIN;\n");
    for site in 1..=tenants {
        let rows = 5 + site % 11;
        match database {
            "identity" => {
                sql.push_str(&format!(
                    "INSERT INTO sites VALUES ({site}, 'https://site{site}.example.net', '{}', '2024-01-{:02}T10:00:00Z');\n",
                    EDITIONS[(site % 3) as usize],
                    1 + site % 28
                ));
                for u in 0..rows {
                    let id = site * 1000 + u;
                    sql.push_str(&format!(
                        "INSERT INTO users VALUES ({id}, {site}, 'user{u}@site{site}.example.net', 'User {u}', NULL);\n"
                    ));
                }
                for a in 0..2 {
                    sql.push_str(&format!(
                        "INSERT INTO app_installations VALUES ({}, {site}, '{}');\n",
                        site * 10 + a,
                        ["legacy-gadget", "calendar"][a as usize]
                    ));
                }
            }
            "tracker" => {
                for i in 0..rows * 2 {
                    let id = site * 1000 + i;
                    sql.push_str(&format!(
                        "INSERT INTO issues VALUES ({id}, {site}, 'Issue {i}', 'Steps to reproduce: it''s broken\nagain', '{}', {});\n",
                        ["open", "closed"][(i % 2) as usize],
                        (i as f64) * 0.5
                    ));
                    for c in 0..2 {
                        sql.push_str(&format!(
                            "INSERT INTO comments VALUES ({}, {id}, 'Comment {c} on issue {i}');\n",
                            id * 10 + c
                        ));
                    }
                }
            }
            _ => {
                for s in 0..2 {
                    let space = site * 10 + s;
                    sql.push_str(&format!(
                        "INSERT INTO spaces VALUES ({space}, {site}, 'Space {s}');\n"
                    ));
                    for p in 0..rows {
                        sql.push_str(&format!(
                            "INSERT INTO pages VALUES ({}, {space}, 'Page {p}', 'Welcome to page {p} of site {site}.');\n",
                            space * 1000 + p
                        ));
                    }
                }
            }
        }
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// The mistaken cleanup: meant to remove one app from some sites, it was given site IDs
/// and runs the "delete site" path — every row of those tenants, in every database, one
/// transaction per database. Returns each database's transaction id.
pub async fn mistaken_cleanup(
    products: &[(String, Product)],
    sites: &[u64],
) -> Result<Vec<(String, u64)>> {
    let list = sites
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut ids = Vec::new();
    for (name, product) in products {
        let sql = match name.as_str() {
            "identity" => format!(
                "DELETE FROM app_installations WHERE site_id IN ({list}); \
                 DELETE FROM users WHERE site_id IN ({list}); DELETE FROM sites WHERE id IN ({list})"
            ),
            "tracker" => format!("DELETE FROM issues WHERE site_id IN ({list})"),
            _ => format!("DELETE FROM spaces WHERE site_id IN ({list})"),
        };
        ids.push((name.clone(), product.transaction_with_id(&sql).await?));
    }
    Ok(ids)
}

/// Keep writing to every tenant in `sites` but the `frozen` ones, until `stop`: new issues
/// and comments, edits, new pages, users seen. A write holds the read side of `frozen`,
/// so once a writer has taken the write side no write to a frozen tenant is under way.
/// Returns the transactions committed.
pub async fn workload(
    products: &[(String, Product)],
    sites: &[u64],
    frozen: &tokio::sync::RwLock<std::collections::BTreeSet<u64>>,
    stop: &Stop,
) -> Result<u64> {
    let mut n: u64 = 0;
    let mut committed = 0;
    while !stop.is_set() && !sites.is_empty() {
        n += 1;
        let site = sites[(n.wrapping_mul(2_654_435_761) % sites.len() as u64) as usize];
        let frozen = frozen.read().await;
        if frozen.contains(&site) {
            continue;
        }
        let id = 900_000_000 + n;
        let (name, sql) = match n % 4 {
            0 => ("tracker", format!(
                "BEGIN; INSERT INTO issues VALUES ({id}, {site}, 'New issue {n}', 'written during the incident', 'open', 1.0); \
                 INSERT INTO comments VALUES ({id}, {id}, 'first'); COMMIT;"
            )),
            1 => ("tracker", format!("UPDATE issues SET status = 'closed' WHERE site_id = {site} AND status = 'open' AND id = (SELECT min(id) FROM issues WHERE site_id = {site} AND status = 'open')")),
            2 => ("wiki", format!("INSERT INTO pages VALUES ({id}, {}, 'Incident notes {n}', 'still writing')", site * 10)),
            _ => ("identity", format!("UPDATE users SET last_seen = '2026-04-05T07:{:02}:00Z' WHERE id = {}", n % 60, site * 1000)),
        };
        if let Some((_, product)) = products.iter().find(|(p, _)| p == name) {
            product.execute(&sql).await?;
            committed += 1;
        }
        drop(frozen);
        if n.is_multiple_of(8) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(committed)
}
