//! `lifeboat export` end to end: a tenant deleted from a PostgreSQL and an SQLite source is
//! exported from the vault as of a time before the deletion, as a zip of CSV files and as
//! an SQLite database. The archives' rows are read back by the documented encoding
//! (docs/export.md) and compared with the rows the databases held; their digests,
//! recomputed from the archive, equal the manifest's and `verify`'s for the same point.
//! Bad requests are refused with nothing written.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use lifeboat_core::checksum::TableDigest;
use lifeboat_core::model::Value;

use crate::common::*;
use crate::fixtures::*;

async fn run(config: &Path, args: &[&str]) -> Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || lifeboat(&config, &as_strs(&args)))
        .await
        .expect("join")
}

async fn run_ok(config: &Path, args: &[&str]) -> String {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || lifeboat_ok(&config, &as_strs(&args)))
        .await
        .expect("join")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The database's current time, RFC 3339 in UTC.
async fn pg_now(url: &str) -> String {
    pg_connect(url)
        .await
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .expect("now")
        .get(0)
}

/// Parse a CSV file of an export (docs/export.md): quoted fields are text; unquoted ones
/// NULL (empty), bytes (`\x`), integers, or reals.
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<Value>>) {
    let mut records: Vec<Vec<Value>> = Vec::new();
    let mut record: Vec<Value> = Vec::new();
    let mut chars = text.chars().peekable();
    let bare = |field: &str| -> Value {
        if field.is_empty() {
            Value::Null
        } else if let Some(hex) = field.strip_prefix("\\x") {
            Value::Blob(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect(),
            )
        } else if let Ok(v) = field.parse::<i64>() {
            Value::Int(v)
        } else {
            Value::Real(match field {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                other => other
                    .parse()
                    .unwrap_or_else(|_| panic!("bad field {other:?}")),
            })
        }
    };
    while chars.peek().is_some() {
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next().expect("closing quote") {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        s.push('"');
                    }
                    '"' => break,
                    c => s.push(c),
                }
            }
            Value::Text(s)
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '\n' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            bare(&s)
        };
        record.push(value);
        match chars.next() {
            Some(',') => {}
            Some('\n') | None => records.push(std::mem::take(&mut record)),
            Some(c) => panic!("unexpected {c:?} after a field"),
        }
    }
    let header = records.remove(0);
    let columns = header
        .into_iter()
        .map(|v| match v {
            Value::Text(s) => s,
            other => panic!("header field not quoted: {other:?}"),
        })
        .collect();
    (columns, records)
}

/// "source.table" -> (columns, rows) of a zip export, and its manifest.
type Tables = BTreeMap<String, (Vec<String>, Vec<Vec<Value>>)>;

fn read_zip(path: &Path) -> (serde_json::Value, Tables) {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).expect("open zip")).expect("zip");
    let mut text = String::new();
    zip.by_name("manifest.json")
        .expect("manifest.json")
        .read_to_string(&mut text)
        .expect("read manifest");
    let manifest = json(&text);
    let mut tables = Tables::new();
    for source in manifest["sources"].as_array().expect("sources") {
        for table in source["tables"].as_array().expect("tables") {
            let mut csv = String::new();
            zip.by_name(table["file"].as_str().expect("file"))
                .expect("the manifest's file is in the zip")
                .read_to_string(&mut csv)
                .expect("read csv");
            let key = format!(
                "{}.{}",
                source["source"].as_str().unwrap_or(""),
                table["table"].as_str().unwrap_or("")
            );
            tables.insert(key, parse_csv(&csv));
        }
    }
    (manifest, tables)
}

fn read_sqlite(path: &Path) -> (serde_json::Value, Tables) {
    let conn = rusqlite::Connection::open(path).expect("open export");
    let text: String = conn
        .query_row("SELECT manifest FROM _lifeboat_manifest", [], |r| r.get(0))
        .expect("manifest row");
    let manifest = json(&text);
    let mut tables = Tables::new();
    for source in manifest["sources"].as_array().expect("sources") {
        for table in source["tables"].as_array().expect("tables") {
            let name = table["file"].as_str().expect("file");
            let mut statement = conn
                .prepare(&format!("SELECT * FROM \"{name}\""))
                .expect("the manifest's table is in the database");
            let columns: Vec<String> = statement.column_names().map(|c| c.to_string()).collect();
            let n = columns.len();
            let rows: Vec<Vec<Value>> = statement
                .query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => Value::Null,
                                rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                                rusqlite::types::ValueRef::Real(v) => Value::Real(v),
                                rusqlite::types::ValueRef::Text(t) => {
                                    Value::Text(String::from_utf8_lossy(t).into_owned())
                                }
                                rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                            })
                        })
                        .collect()
                })
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            let key = format!(
                "{}.{}",
                source["source"].as_str().unwrap_or(""),
                table["table"].as_str().unwrap_or("")
            );
            tables.insert(key, (columns, rows));
        }
    }
    (manifest, tables)
}

/// "source.table" -> (rows, checksum) from a manifest.
fn manifest_digests(manifest: &serde_json::Value) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    for source in manifest["sources"].as_array().expect("sources") {
        for table in source["tables"].as_array().expect("tables") {
            out.insert(
                format!(
                    "{}.{}",
                    source["source"].as_str().unwrap_or(""),
                    table["table"].as_str().unwrap_or("")
                ),
                (
                    table["rows"].as_u64().expect("rows"),
                    table["checksum"].as_str().expect("checksum").to_string(),
                ),
            );
        }
    }
    out
}

/// The digests recomputed from the archive's rows: the encoding lost nothing.
fn archive_digests(tables: &Tables) -> BTreeMap<String, (u64, String)> {
    tables
        .iter()
        .map(|(name, (columns, rows))| {
            let digest = TableDigest::of(columns, rows);
            (name.clone(), (digest.rows, format!("{:032x}", digest.sum)))
        })
        .collect()
}

/// identity.users rows of site `site`, typed, sorted by id.
fn identity_users(path: &Path, site: i64) -> Vec<Vec<Value>> {
    let conn = rusqlite::Connection::open(path).expect("open identity");
    let mut statement = conn
        .prepare("SELECT id, site_id, email, avatar, score, misc FROM users WHERE site_id = ?1 ORDER BY id")
        .expect("prepare");
    statement
        .query_map([site], |r| {
            (0..6)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => Value::Null,
                        rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                        rusqlite::types::ValueRef::Real(v) => Value::Real(v),
                        rusqlite::types::ValueRef::Text(t) => {
                            Value::Text(String::from_utf8_lossy(t).into_owned())
                        }
                        rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                    })
                })
                .collect()
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Some tracker.issues columns of `site` as PostgreSQL prints them (text, json, arrays,
/// bytea, special floats), sorted.
async fn tracker_issue_texts(url: &str, site: i64) -> Vec<Vec<Option<String>>> {
    let client = pg_connect(url).await;
    let rows = client
        .query(
            &format!(
                "SELECT id::text, title, body, meta::text, labels::text, votes::text, \
                 attachment::text, score::text FROM issues WHERE site_id = {site} ORDER BY issues.id"
            ),
            &[],
        )
        .await
        .expect("issues");
    rows.iter()
        .map(|r| (0..8).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect()
}

/// The same columns from an archive's tracker.issues.
fn archive_issue_texts(tables: &Tables) -> Vec<Vec<Option<String>>> {
    let (columns, rows) = &tables["tracker.issues"];
    let wanted = [
        "id",
        "title",
        "body",
        "meta",
        "labels",
        "votes",
        "attachment",
        "score",
    ];
    let index: Vec<usize> = wanted
        .iter()
        .map(|w| columns.iter().position(|c| c == w).expect("column"))
        .collect();
    let mut out: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|row| {
            index
                .iter()
                .map(|&i| match &row[i] {
                    Value::Null => None,
                    Value::Text(s) => Some(s.clone()),
                    other => panic!("a PostgreSQL value that is not text: {other:?}"),
                })
                .collect()
        })
        .collect();
    out.sort_by_key(|r| r[0].as_deref().and_then(|id| id.parse::<i64>().ok()));
    out
}

fn no_partial_files(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lifeboat-export"))
        .collect();
    assert!(left.is_empty(), "partial files left: {left:?}");
}

fn assert_refused(output: &Output, needle: &str) {
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(output));
    let err = stderr(output);
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenant_is_exported_from_the_vault_with_verifys_checksums() {
    let work = Workdir::new();
    let tracker = create_database("ex_tenant").await;
    let identity = work.path("identity.db");
    setup_tracker(&tracker, 5).await;
    setup_identity(&identity, 5);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        None,
        Some(&identity),
    ));
    run_ok(&config, &["capture", "--until-caught-up"]).await;
    let site = site_id(3);
    let issues_before = tracker_issue_texts(&tracker, site).await;
    let users_before = identity_users(&identity, site);
    assert_eq!(issues_before.len(), 4);
    assert_eq!(users_before.len(), 3);
    let t = pg_now(&tracker).await;

    // Later the tenant changes, then is deleted from every database.
    let client = pg_connect(&tracker).await;
    client
        .batch_execute(&format!(
            "UPDATE issues SET title = 'later' WHERE site_id = {site}; \
             DELETE FROM sites WHERE id = {site};"
        ))
        .await
        .expect("delete tracker tenant");
    {
        let conn = rusqlite::Connection::open(&identity).expect("identity");
        conn.execute_batch(&format!(
            "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE site_id = {site}); \
             DELETE FROM memberships WHERE site_id = {site}; DELETE FROM users WHERE site_id = {site};"
        ))
        .expect("delete identity tenant");
    }
    run_ok(&config, &["capture", "--until-caught-up"]).await;
    assert!(tracker_issue_texts(&tracker, site).await.is_empty());

    // verify's digests of the vault's side at t (the live side differs now: exit 1).
    let output = run(&config, &["verify", "--tenant", "3", "--at", &t, "--json"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let verified = json(&stdout(&output));
    let verify_digests: BTreeMap<String, (u64, String)> = verified["tables"]
        .as_array()
        .expect("verify lists its tables")
        .iter()
        .map(|t| {
            (
                format!(
                    "{}.{}",
                    t["source"].as_str().unwrap_or(""),
                    t["table"].as_str().unwrap_or("")
                ),
                (
                    t["rows"].as_u64().expect("rows"),
                    t["checksum"].as_str().expect("checksum").to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(verify_digests["tracker.issues"].0, 4, "{verified}");

    // A zip of CSV files.
    let zip_path = work.path("tenant-3.zip");
    let out = run_ok(
        &config,
        &[
            "export",
            "--tenant",
            "3",
            "--at",
            &t,
            "-o",
            zip_path.to_str().expect("path"),
            "--json",
            "--by",
            "alice",
        ],
    )
    .await;
    let reported = json(&out);
    let (manifest, tables) = read_zip(&zip_path);
    assert_eq!(reported["manifest"], manifest);
    assert_eq!(manifest["format"], "lifeboat-export");
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["tenant"], "3");
    assert_eq!(manifest_digests(&manifest), verify_digests);
    assert_eq!(archive_digests(&tables), verify_digests);
    assert_eq!(archive_issue_texts(&tables), issues_before);
    let mut users = tables["identity.users"].1.clone();
    users.sort_by_key(|r| match r[0] {
        Value::Int(id) => id,
        _ => 0,
    });
    assert_eq!(users, users_before);
    assert_eq!(
        tables["identity.users"].0,
        ["id", "site_id", "email", "avatar", "score", "misc"]
    );

    // One SQLite database: the same rows and digests.
    let db_path = work.path("tenant-3.sqlite");
    run_ok(
        &config,
        &[
            "export",
            "--tenant",
            "3",
            "--at",
            &t,
            "--format",
            "sqlite",
            "-o",
            db_path.to_str().expect("path"),
        ],
    )
    .await;
    let (db_manifest, db_tables) = read_sqlite(&db_path);
    assert_eq!(manifest_digests(&db_manifest), verify_digests);
    assert_eq!(archive_digests(&db_tables), verify_digests);
    assert_eq!(db_tables["tracker.issues"].1.len(), 4);
    assert_eq!(archive_issue_texts(&db_tables), issues_before);

    // Just before the transaction that changed and deleted the tenant in the tracker: the
    // same rows as at t.
    let history = json(
        &run_ok(
            &config,
            &["history", "--tenant", "3", "--source", "tracker", "--json"],
        )
        .await,
    );
    let deletion = history[0]["transaction"].as_str().expect("transaction");
    let before_path = work.path("before-tx.sqlite");
    run_ok(
        &config,
        &[
            "export",
            "--tenant",
            "3",
            "--before-tx",
            deletion,
            "--source",
            "tracker",
            "--format",
            "sqlite",
            "-o",
            before_path.to_str().expect("path"),
        ],
    )
    .await;
    let (before_manifest, before_tables) = read_sqlite(&before_path);
    let tracker_digests: BTreeMap<String, (u64, String)> = verify_digests
        .iter()
        .filter(|(k, _)| k.starts_with("tracker."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(manifest_digests(&before_manifest), tracker_digests);
    assert_eq!(archive_digests(&before_tables), tracker_digests);

    // Each export is in the audit log.
    let audit = json(&run_ok(&config, &["audit", "--json"]).await);
    let exports: Vec<&serde_json::Value> = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "export")
        .collect();
    assert_eq!(exports.len(), 3, "{audit}");
    assert_eq!(exports[0]["subject"], "tenant:3");
    assert_eq!(exports[0]["actor"], "alice");
    assert_eq!(exports[0]["details"]["format"], "csv");
    assert_eq!(exports[1]["details"]["format"], "sqlite");

    // Refusals: nothing written, nothing replaced.
    let zip_bytes = std::fs::read(&zip_path).expect("zip");
    let zip_arg = zip_path.to_str().expect("path");
    let output = run(
        &config,
        &["export", "--tenant", "3", "--at", &t, "-o", zip_arg],
    )
    .await;
    assert_refused(&output, "already exists");
    assert_eq!(std::fs::read(&zip_path).expect("zip"), zip_bytes);
    let fresh = work.path("fresh.zip");
    let fresh_arg = fresh.to_str().expect("path");
    let output = run(
        &config,
        &["export", "--tenant", "404", "--at", &t, "-o", fresh_arg],
    )
    .await;
    assert_refused(&output, "unknown tenant 404");
    let output = run(
        &config,
        &[
            "export",
            "--tenant",
            "3",
            "--at",
            "2001-01-01T00:00:00Z",
            "-o",
            fresh_arg,
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = run(
        &config,
        &[
            "export", "--tenant", "3", "--at", &t, "--format", "xml", "-o", fresh_arg,
        ],
    )
    .await;
    assert_refused(&output, "expected csv or sqlite");
    assert!(!fresh.exists());
    no_partial_files(work.dir.path());
    let audit = json(&run_ok(&config, &["audit", "--json"]).await);
    let count = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "export")
        .count();
    assert_eq!(count, 3, "a refused export is not audited");

    // --force replaces the file, here with an export of one source.
    run_ok(
        &config,
        &[
            "export", "--tenant", "3", "--at", &t, "--source", "identity", "-o", zip_arg, "--force",
        ],
    )
    .await;
    let (manifest, tables) = read_zip(&zip_path);
    assert_eq!(manifest["sources"].as_array().map(Vec::len), Some(1));
    assert!(
        tables.keys().all(|k| k.starts_with("identity.")),
        "{tables:?}"
    );
    drop_slots(&tracker).await;
}

/// GET `path` on `base`: the status and the body's bytes.
fn http_get_bytes(base: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::Write;
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{head}"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the archive is sent with its length: {head}"
    );
    (status, response[end + 4..].to_vec())
}

/// The rows of a campaign test site in an archive, as `campaign::site_rows` prints them.
fn archive_site_rows(tables: &Tables) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::Int(i) => i.to_string(),
        Value::Text(s) => s.clone(),
        other => panic!("unexpected value {other:?}"),
    };
    let mut out = Vec::new();
    for (table, tag, columns) in [
        ("tracker.sites", "site", &["id", "url", "edition"][..]),
        ("tracker.issues", "issue", &["id", "title"][..]),
        ("tracker.comments", "comment", &["id", "body"][..]),
    ] {
        let (names, rows) = &tables[table];
        let index: Vec<usize> = columns
            .iter()
            .map(|c| names.iter().position(|n| n == c).expect("column"))
            .collect();
        for row in rows {
            let mut fields = vec![tag.to_string()];
            fields.extend(index.iter().map(|&i| text(&row[i])));
            out.push(fields.join("|"));
        }
    }
    out.sort();
    out
}

#[test]
fn a_deleted_tenant_downloads_its_data_from_its_private_page() {
    a_deleted_tenant_downloads_its_data_from_its_private_page_in(Mode::Stopped);
}

#[test]
fn a_deleted_tenant_downloads_its_data_from_its_private_page_while_capture_runs() {
    a_deleted_tenant_downloads_its_data_from_its_private_page_in(Mode::Running);
}

fn a_deleted_tenant_downloads_its_data_from_its_private_page_in(mode: Mode) {
    use crate::campaign::{
        audit_entries, browse_until, delete_sites, now, setup, site_rows, start,
    };
    use std::io::BufRead;
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "lease_seconds = 1",
            "lease_seconds = 1\nmax_attempts = 1\nexport_link_seconds = 6",
        ),
    )
    .expect("config");
    let db = work.path("tracker.db");
    let before = site_rows(&db, 2);
    assert!(!before.is_empty());
    let t = now(&db);
    delete_sites(&db, &[2, 4]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // Site 2's restore is refused by the database: it stays deleted everywhere.
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute_batch(
            "CREATE TRIGGER maintenance_lock BEFORE INSERT ON sites WHEN NEW.id = 2
             BEGIN SELECT RAISE(ABORT, 'maintenance lock'); END;",
        )
        .expect("trigger");
    let id = start(&config, &work, &[2, 4], &t, &[]);

    let mut server = lifeboat_command(&config, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = std::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf8");
    let base = first
        .strip_prefix("serving the status page on ")
        .expect(&first)
        .trim_end_matches('/')
        .to_string();
    let links = json(&lifeboat_ok(
        &config,
        &["campaign", "links", &id, "--base-url", &base, "--json"],
    ));
    let token_of = |tenant: &str| -> String {
        let link = links
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l["tenant"] == tenant)
            .expect("tenant's link")["link"]
            .as_str()
            .expect("link")
            .to_string();
        link.rsplit('/').next().expect("token").to_string()
    };
    let (two, four) = (token_of("2"), token_of("4"));
    let profile = work.path("chromium-profile");
    let page = format!("{base}/t/{two}");
    browse_until(&page, &profile, "Prepare a download of my data");

    // The person clicks the page's button; a worker builds the archive from the vault.
    let after_click = browser(&["click", &page, "#export-request"]);
    assert!(
        after_click.contains("Your download is being prepared"),
        "{after_click}"
    );
    lifeboat(&config, &["worker", "--campaign", &id, "--until-done"]);
    assert!(site_rows(&db, 2).is_empty(), "site 2 is still deleted");
    let dom = browse_until(&page, &profile, "id=\"export-link\"");
    let start_at = dom.find(&format!("/t/{two}/export/")).expect("the link");
    let href: String = dom[start_at..].chars().take_while(|&c| c != '"').collect();

    // ... then clicks the link, and Chromium saves the archive.
    let downloads = work.path("downloads");
    let archive = PathBuf::from(
        browser(&[
            "download",
            &page,
            "#export-link",
            downloads.to_str().expect("utf8"),
        ])
        .trim(),
    );
    assert_eq!(
        archive.extension().and_then(|e| e.to_str()),
        Some("zip"),
        "{archive:?}"
    );
    let (manifest, tables) = read_zip(&archive);
    assert_eq!(manifest["tenant"], "2");
    assert_eq!(archive_site_rows(&tables), before);
    let output = lifeboat(&config, &["verify", "--tenant", "2", "--at", &t, "--json"]);
    let verified = json(&stdout(&output));
    let vault: BTreeMap<String, (u64, String)> = verified["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                format!(
                    "{}.{}",
                    t["source"].as_str().unwrap_or(""),
                    t["table"].as_str().unwrap_or("")
                ),
                (
                    t["rows"].as_u64().expect("rows"),
                    t["checksum"].as_str().expect("sum").to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(manifest_digests(&manifest), vault);
    assert_eq!(archive_digests(&tables), vault);

    // Another tenant's page cannot reach it, nor can a made-up link.
    let link = href.rsplit('/').next().expect("link");
    let (status, _) = http_get_bytes(&base, &format!("/t/{four}/export/{link}"));
    assert_eq!(status, 404);
    let (status, _) = http_get_bytes(
        &base,
        &format!("/t/{two}/export/{}", "x".repeat(link.len())),
    );
    assert_eq!(status, 404);

    // Once the link has expired it is refused; the page offers a new one.
    std::thread::sleep(std::time::Duration::from_secs(7));
    let (status, _) = http_get_bytes(&base, &href);
    assert_eq!(status, 410);
    browse_until(&page, &profile, "Get a new download link");

    let entries = audit_entries(&config);
    let of_two = |action: &str| {
        entries
            .iter()
            .filter(|(_, a, s, _)| a == action && s == "tenant:2")
            .count()
    };
    assert_eq!(of_two("export-request"), 1);
    assert_eq!(of_two("export-build"), 1);
    assert_eq!(of_two("export-download"), 1);
    let _ = server.kill();
    let _ = server.wait();
    background.finish();
}

/// The archives (zip or SQLite) in the export directory (beside the configuration file).
fn archives(config: &Path) -> Vec<String> {
    let dir = config.parent().expect("dir").join("exports");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".zip") || n.ends_with(".sqlite"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The private page's current download link and the page, once the page shows a link
/// other than `not` (the server's snapshot follows the store within moments).
fn page_link(base: &str, token: &str, not: Option<&str>) -> (String, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let marker = "id=\"export-link\" href=\"";
    loop {
        let (_, page) = http_get(base, &format!("/t/{token}"));
        if let Some(at) = page.find(marker) {
            let link: String = page[at + marker.len()..]
                .chars()
                .take_while(|&c| c != '"')
                .collect();
            if Some(link.as_str()) != not {
                return (link, page);
            }
        }
        assert!(std::time::Instant::now() < deadline, "no new link: {page}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The private page once it offers to prepare the download.
fn page_offering_export(base: &str, token: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, page) = http_get(base, &format!("/t/{token}"));
        if page.contains("id=\"export-request\"") {
            return page;
        }
        assert!(std::time::Instant::now() < deadline, "no offer: {page}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// An archive whose link expired more than the grace (an hour) ago is deleted by the next
/// worker (here with the test clock two hours on), its export marked removed and audited;
/// the old link then answers 410, the page offers the download again (as a zip of CSV
/// files or an SQLite database), and a new request builds a new archive in the format
/// asked for.
#[test]
fn an_archive_is_removed_after_its_link_expired_and_built_again_when_asked() {
    use crate::campaign::{audit_entries, delete_sites, http_post, now, setup, start};
    let work = Workdir::new();
    let config = setup(&work);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "lease_seconds = 1",
            "lease_seconds = 1\nexport_link_seconds = 60",
        ),
    )
    .expect("config");
    let db = work.path("tracker.db");
    let t = now(&db);
    delete_sites(&db, &[2]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let id = start(&config, &work, &[2], &t, &[]);
    let mut server = lifeboat_command(&config, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let base = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a line").expect("utf8");
        first
            .strip_prefix("serving the status page on ")
            .expect(&first)
            .trim_end_matches('/')
            .to_string()
    };
    let links = json(&lifeboat_ok(
        &config,
        &["campaign", "links", &id, "--base-url", &base, "--json"],
    ));
    let two = links[0]["link"]
        .as_str()
        .expect("link")
        .rsplit('/')
        .next()
        .expect("token")
        .to_string();

    let (status, _) = http_post(&base, &format!("/t/{two}/export"), None, "");
    assert_eq!(status, 303);
    lifeboat_ok(&config, &["worker", "--campaign", &id, "--until-done"]);
    let first = archives(&config);
    assert_eq!(first.len(), 1, "{first:?}");
    let (href, _) = page_link(&base, &two, None);
    let (status, _) = http_get_bytes(&base, &href);
    assert_eq!(status, 200);

    // While the link is valid the archive stays; two hours on, the worker removes it.
    lifeboat_ok(&config, &["worker", "--campaign", &id, "--until-done"]);
    assert_eq!(archives(&config), first);
    let later = lifeboat_core::time::format_us(lifeboat_core::time::now_us() + 7_200_000_000);
    let output = lifeboat_command(&config, &["worker", "--campaign", &id, "--until-done"])
        .env("LIFEBOAT_TEST_CLOCK", &later)
        .output()
        .expect("worker");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(archives(&config), Vec::<String>::new(), "the file is gone");
    let removals: Vec<_> = audit_entries(&config)
        .into_iter()
        .filter(|(_, action, _, _)| action == "export-remove")
        .collect();
    assert_eq!(removals.len(), 1, "{removals:?}");
    assert_eq!(removals[0].2, "tenant:2");
    assert_eq!(removals[0].3["file"], first[0].as_str());
    // Once more: nothing more to remove.
    let output = lifeboat_command(&config, &["worker", "--campaign", &id, "--until-done"])
        .env("LIFEBOAT_TEST_CLOCK", &later)
        .output()
        .expect("worker");
    assert!(output.status.success(), "{}", stderr(&output));

    // The old link is gone for good; the page offers to prepare the download again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _) = http_get_bytes(&base, &href);
        if status == 410 {
            break;
        }
        assert_eq!(status, 200, "before the snapshot moves on");
        assert!(std::time::Instant::now() < deadline, "still {status}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let page = page_offering_export(&base, &two);
    assert!(page.contains("id=\"export-request-sqlite\""), "{page}");
    assert!(!page.contains("id=\"export-link\""), "{page}");

    // An unknown format is refused and asks for nothing.
    let audited = audit_entries(&config).len();
    let (status, _) = http_post(&base, &format!("/t/{two}/export"), None, "format=pdf");
    assert_eq!(status, 400);
    assert_eq!(audit_entries(&config).len(), audited);

    // Asked again, as an SQLite database: built again, a new archive behind a new link.
    let (status, _) = http_post(&base, &format!("/t/{two}/export"), None, "format=sqlite");
    assert_eq!(status, 303);
    lifeboat_ok(&config, &["worker", "--campaign", &id, "--until-done"]);
    let second = archives(&config);
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(second[0].ends_with(".sqlite"), "{second:?}");
    let (fresh, page) = page_link(&base, &two, Some(&href));
    assert!(page.contains("SQLite database,"), "{page}");
    let (status, bytes) = http_get_bytes(&base, &fresh);
    assert_eq!(status, 200);
    let archive = work.path("again.sqlite");
    std::fs::write(&archive, &bytes).expect("save");
    let (manifest, tables) = read_sqlite(&archive);
    assert_eq!(manifest["tenant"], "2");
    assert_eq!(archive_digests(&tables), manifest_digests(&manifest));
    let entries = audit_entries(&config);
    let count = |action: &str| entries.iter().filter(|(_, a, _, _)| a == action).count();
    assert_eq!(count("export-request"), 2);
    assert_eq!(count("export-build"), 2);
    assert_eq!(count("export-remove"), 1);
    let _ = server.kill();
    let _ = server.wait();
}

/// `python3 tests/it/browser.py ARGS` (headless Chromium driven through its DevTools
/// protocol): what it printed; exit code 0 required.
fn browser(args: &[&str]) -> String {
    let script = format!("{}/tests/it/browser.py", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "browser.py {args:?}: {}",
        stderr(&output)
    );
    stdout(&output)
}
