//! Writing a tenant's restored rows into a PostgreSQL database: in one transaction, remove
//! the tenant's current rows (children first) and COPY the restored rows in (parents
//! first); identity and generated columns as the database wants them; sequences moved
//! past the restored values.
//!
//! Foreign keys: PostgreSQL checks each inserted row through a trigger, one lookup per row
//! and key, which costs about as much as the insert itself. When the role may set
//! `session_replication_role` and the tables written have no triggers of their own (nor a
//! deferrable unique constraint, whose recheck is a trigger too), the rows are copied with
//! those triggers off. Each foreign key of the rows written is then proved in memory when
//! every row it references was written in the same transaction, and otherwise checked in
//! one statement, after taking the `FOR KEY SHARE` locks the triggers would have taken on
//! referenced rows this transaction did not write. A row that references nothing fails
//! the restore, and the transaction is rolled back.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::{Client, SimpleQueryMessage};

use lifeboat_core::model::{Dialect, TenantKey};
use lifeboat_core::tenancy::SourceTenancy;
use lifeboat_core::{Error, Result};

use super::pg_error;
use crate::restore::{copy_text, ForeignKey, TenantRestore, WriteMode, WriteReport, WrittenKeys};
use crate::{quote_ident, quote_literal, tenant_delete, tenant_query};

/// What restore needs to know about the target's schema beyond the tenant map.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub foreign_keys: Vec<ForeignKey>,
    /// (table, column, sequence) for identity and serial columns.
    pub sequences: Vec<(String, String, String)>,
    /// The foreign keys as restore checks them itself, when it may (see the module notes).
    pub key_checks: Option<Vec<KeyCheck>>,
    /// Tables that must be written with triggers on: they have triggers of their own, a
    /// deferrable unique constraint (rechecked by a trigger) or a `MATCH FULL` foreign key.
    pub needs_triggers: BTreeSet<String>,
}

/// A foreign key of a table in the restored schema, with its parent named in SQL.
#[derive(Debug, Clone)]
pub struct KeyCheck {
    pub key: ForeignKey,
    /// The constraint's name.
    pub name: String,
    /// The referenced table, schema-qualified and quoted.
    pub parent_sql: String,
    /// Whether the parent is in the restored schema (so it may be a table written).
    pub same_schema: bool,
    /// Whether both sides' columns have the same types, so that equal text output means
    /// equal values (a `real` and a `double precision` both printed 0.1 are not equal).
    pub same_types: bool,
}

pub(crate) async fn catalog(client: &Client, schema: &str) -> Result<Catalog> {
    let rows = client
        .query(
            "SELECT child.relname::text, parent.relname::text,
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),
                    format('%I.%I', pn.nspname, parent.relname), c.conname::text,
                    c.confmatchtype = 'f', pn.oid = n.oid,
                    ARRAY(SELECT a.atttypid FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i)
                    = ARRAY(SELECT a.atttypid FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
             FROM pg_constraint c
             JOIN pg_class child ON child.oid = c.conrelid
             JOIN pg_class parent ON parent.oid = c.confrelid
             JOIN pg_namespace n ON n.oid = child.relnamespace
             JOIN pg_namespace pn ON pn.oid = parent.relnamespace
             -- A key into a partitioned table has a copy per partition (conparentid set).
             WHERE c.contype = 'f' AND n.nspname = $1 AND c.conparentid = 0
             ORDER BY child.relname, c.conname",
            &[&schema],
        )
        .await
        .map_err(|e| pg_error("cannot read foreign keys", e))?;
    let checks: Vec<KeyCheck> = rows
        .iter()
        .map(|r| KeyCheck {
            key: ForeignKey {
                child: r.get(0),
                parent: r.get(1),
                columns: r.get(2),
                parent_columns: r.get(3),
            },
            name: r.get(5),
            parent_sql: r.get(4),
            same_schema: r.get(7),
            same_types: r.get(8),
        })
        .collect();
    let foreign_keys = checks.iter().map(|c| c.key.clone()).collect();
    let mut needs_triggers: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(6))
        .map(|r| r.get(0))
        .collect();
    let triggered = client
        .query(
            // Triggers of the table's own; deferrable unique, primary key and exclusion
            // constraints, whose deferred recheck is an internal trigger too; and foreign
            // keys of a partition of its own. Anything on a partition counts for the
            // partitioned table at the root, which is what restore writes.
            "WITH owners AS (
                 SELECT t.tgrelid AS rel FROM pg_trigger t
                 WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'
                 UNION
                 SELECT k.conrelid FROM pg_constraint k
                 WHERE k.contype IN ('p', 'u', 'x') AND k.condeferrable
                 UNION
                 SELECT k.conrelid FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                 WHERE k.contype = 'f' AND k.conparentid = 0 AND c.relispartition)
             SELECT DISTINCT root.relname::text FROM owners o
             JOIN pg_class root ON root.oid = COALESCE(pg_partition_root(o.rel), o.rel)
             JOIN pg_namespace n ON n.oid = root.relnamespace
             WHERE n.nspname = $1",
            &[&schema],
        )
        .await
        .map_err(|e| pg_error("cannot read triggers", e))?;
    needs_triggers.extend(triggered.iter().map(|r| r.get::<_, String>(0)));
    // Only a superuser: like the triggers, it reads and locks referenced rows whatever
    // the table privileges and row security (a role granted session_replication_role
    // alone could be refused where the triggers would not be).
    let may_skip_triggers = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    let rows = client
        .query(
            "SELECT c.relname::text, a.attname::text,
                    pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname)
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
               AND pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) IS NOT NULL",
            &[&schema],
        )
        .await
        .map_err(|e| pg_error("cannot read sequences", e))?;
    let sequences = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(Catalog {
        foreign_keys,
        sequences,
        key_checks: may_skip_triggers.then_some(checks),
        needs_triggers,
    })
}

async fn count(client: &Client, sql: &str) -> Result<u64> {
    for message in client
        .simple_query(sql)
        .await
        .map_err(|e| pg_error("cannot count rows", e))?
    {
        if let SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).and_then(|v| v.parse().ok()).unwrap_or(0));
        }
    }
    Ok(0)
}

/// What the thread producing COPY data hands to the connection.
enum Piece {
    /// Rows of table `index`, in COPY's text format.
    Data(usize, Bytes),
    /// Table `index` is complete, with this many rows.
    End(usize, u64),
}

/// Replace `delete_key`'s rows with `restore`'s rows (tables in write order) in one
/// transaction. The rows are turned into COPY data on a blocking thread as they are read
/// from the vault, while the connection sends the previous chunk. `WriteMode::DryRun`: count
/// what would be written and removed; `Trial`: write, then roll back.
pub(crate) async fn write_tenant(
    client: &mut Client,
    tenancy: &SourceTenancy,
    catalog: &Catalog,
    delete_key: &TenantKey,
    mut restore: TenantRestore,
    mode: WriteMode,
) -> Result<(WriteReport, TenantRestore)> {
    let key = quote_literal(delete_key.as_str());
    let mut report = WriteReport::default();
    let vanished = |name: &str| Error::source(format!("table {name} vanished"));
    if mode == WriteMode::DryRun {
        for index in 0..restore.tables.len() {
            let name = restore.tables[index].name.clone();
            let schema = &tenancy.table(&name).ok_or_else(|| vanished(&name))?.schema;
            let removed = count(
                client,
                &format!(
                    "SELECT count(*) FROM ({}) x",
                    tenant_query(tenancy, schema, &key, Dialect::Postgres)?
                ),
            )
            .await?;
            let written = restore.rows(index, |_| Ok(()))?;
            report.tables.insert(name, (written, removed));
        }
        return Ok((report, restore));
    }
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_error("cannot begin the restore transaction", e))?;
    let key_checks = catalog.key_checks.as_ref().filter(|_| {
        restore
            .tables
            .iter()
            .all(|t| !catalog.needs_triggers.contains(&t.name))
    });
    // The current rows go (children first) and the triggers are turned off in one round
    // trip: one statement per table, then the switch.
    let mut statements = Vec::new();
    for table in restore.tables.iter().rev() {
        let schema = &tenancy
            .table(&table.name)
            .ok_or_else(|| vanished(&table.name))?
            .schema;
        statements.push(tenant_delete(tenancy, schema, &key, Dialect::Postgres)?);
    }
    if key_checks.is_some() {
        statements.push("SET LOCAL session_replication_role = replica".to_string());
    }
    if !statements.is_empty() {
        let done = tx
            .simple_query(&statements.join(";\n"))
            .await
            .map_err(|e| {
                pg_error(
                    "cannot remove the tenant's current rows or turn the foreign-key triggers off",
                    e,
                )
            })?;
        let mut removed = done.iter().filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        });
        for table in restore.tables.iter().rev() {
            report
                .tables
                .insert(table.name.clone(), (0, removed.next().unwrap_or(0)));
        }
    }
    let mut written_keys = key_checks.map(|checks| {
        WrittenKeys::new(
            &restore.tables,
            checks.iter().map(|c| {
                (
                    c.key.child.as_str(),
                    c.key.columns.as_slice(),
                    // A parent in another schema is never among the tables written;
                    // columns of different types are left to the database to compare.
                    if c.same_schema && c.same_types {
                        c.key.parent.as_str()
                    } else {
                        ""
                    },
                    c.key.parent_columns.as_slice(),
                )
            }),
            FOLLOWED_KEYS,
        )
    });
    let tables = restore.tables.clone();
    let (send, mut receive) = tokio::sync::mpsc::channel::<Piece>(4);
    let producer = tokio::task::spawn_blocking(move || -> Result<_> {
        let closed = || Error::source("the restore connection stopped taking rows");
        for index in 0..restore.tables.len() {
            let mut buffer = Vec::with_capacity(COPY_CHUNK + 4096);
            let rows = restore.rows(index, |row| {
                if let Some(keys) = written_keys.as_mut() {
                    keys.row(index, row);
                }
                for (i, value) in row.iter().enumerate() {
                    if i > 0 {
                        buffer.push(b'\t');
                    }
                    copy_text(value, &mut buffer);
                }
                buffer.push(b'\n');
                if buffer.len() >= COPY_CHUNK {
                    let chunk = Bytes::from(std::mem::replace(
                        &mut buffer,
                        Vec::with_capacity(COPY_CHUNK + 4096),
                    ));
                    send.blocking_send(Piece::Data(index, chunk))
                        .map_err(|_| closed())?;
                }
                Ok(())
            })?;
            if !buffer.is_empty() {
                send.blocking_send(Piece::Data(index, Bytes::from(buffer)))
                    .map_err(|_| closed())?;
            }
            send.blocking_send(Piece::End(index, rows))
                .map_err(|_| closed())?;
        }
        Ok((restore, written_keys))
    });
    let mut sink = None;
    let copy_error = |name: &str, e| pg_error(&format!("cannot copy into {name}"), e);
    while let Some(piece) = receive.recv().await {
        match piece {
            Piece::Data(index, chunk) => {
                let name = &tables[index].name;
                if sink.is_none() {
                    let columns: Vec<String> = tables[index]
                        .columns
                        .iter()
                        .map(|c| quote_ident(c))
                        .collect();
                    let sql = format!(
                        "COPY {} ({}) FROM STDIN",
                        quote_ident(name),
                        columns.join(", ")
                    );
                    let opened = tx
                        .copy_in::<_, Bytes>(sql.as_str())
                        .await
                        .map_err(|e| copy_error(name, e))?;
                    sink = Some(Box::pin(opened));
                }
                if let Some(sink) = sink.as_mut() {
                    sink.send(chunk).await.map_err(|e| copy_error(name, e))?;
                }
            }
            Piece::End(index, rows) => {
                let name = &tables[index].name;
                let mut written = 0;
                if let Some(mut sink) = sink.take() {
                    written = sink
                        .as_mut()
                        .finish()
                        .await
                        .map_err(|e| copy_error(name, e))?;
                }
                if written != rows {
                    return Err(Error::source(format!(
                        "COPY into {name} took {written} rows of the {rows} sent"
                    )));
                }
                if let Some(entry) = report.tables.get_mut(name) {
                    entry.0 = written;
                }
            }
        }
    }
    let (restore, written_keys) = producer
        .await
        .map_err(|e| Error::source(format!("the restore's row reader failed: {e}")))??;
    if let (Some(checks), Some(written_keys)) = (key_checks, written_keys) {
        tx.batch_execute("SET LOCAL session_replication_role = origin")
            .await
            .map_err(|e| pg_error("cannot turn the foreign-key triggers back on", e))?;
        check_keys(&tx, tenancy, checks, &written_keys, &report, &key).await?;
    }
    // setval is not undone by a rollback: a trial leaves the sequences alone.
    let sequences = if mode == WriteMode::Trial {
        &[][..]
    } else {
        &catalog.sequences[..]
    };
    // Every sequence moved in one round trip.
    let mut moves = Vec::new();
    for (table, column, sequence) in sequences {
        if report.tables.get(table).is_none_or(|t| t.0 == 0) {
            continue;
        }
        // The next value must come after m: a fresh sequence (is_called false) would
        // hand out last_value itself.
        moves.push(format!(
            "SELECT setval({seq}, m, true) FROM (SELECT max({col}) AS m FROM {tbl}) x, \
             {sequence_ident} s WHERE m IS NOT NULL AND \
             m >= CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END",
            seq = quote_literal(sequence),
            col = quote_ident(column),
            tbl = quote_ident(table),
            sequence_ident = sequence,
        ));
    }
    if !moves.is_empty() {
        tx.batch_execute(&moves.join(";\n"))
            .await
            .map_err(|e| pg_error("cannot move the sequences past the restored values", e))?;
    }
    if mode == WriteMode::Trial {
        tx.rollback()
            .await
            .map_err(|e| pg_error("cannot roll the trial back", e))?;
        return Ok((report, restore));
    }
    lifeboat_core::failpoint::hit("restore.before-commit");
    tx.commit()
        .await
        .map_err(|e| pg_error("cannot commit the restore transaction", e))?;
    Ok((report, restore))
}

/// Check every foreign key of the rows just written with the triggers off. A key whose
/// referenced rows were all written in this transaction holds (they cannot be deleted by
/// anyone else before it commits). Any other key is checked in the database: first lock the referenced rows this transaction did not write, as the triggers
/// would (`FOR KEY SHARE`, so they cannot be deleted before this commits), then look for
/// written rows whose referenced row is not there. `MATCH SIMPLE`: a key with a NULL in
/// it references nothing.
async fn check_keys(
    tx: &tokio_postgres::Transaction<'_>,
    tenancy: &SourceTenancy,
    checks: &[KeyCheck],
    written_keys: &WrittenKeys,
    report: &WriteReport,
    key: &str,
) -> Result<()> {
    for (n, check) in checks.iter().enumerate() {
        let fk = &check.key;
        if report.tables.get(&fk.child).is_none_or(|t| t.0 == 0) || written_keys.holds(n) {
            continue;
        }
        let Some(child) = tenancy.table(&fk.child) else {
            continue;
        };
        let rows = tenant_query(tenancy, &child.schema, key, Dialect::Postgres)?;
        let list = |alias: &str, columns: &[String]| {
            columns
                .iter()
                .map(|c| format!("{alias}.{}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let written = list("c", &fk.columns);
        let referenced = list("p", &fk.parent_columns);
        let present = fk
            .columns
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let matches = fk
            .columns
            .iter()
            .zip(&fk.parent_columns)
            .map(|(c, p)| format!("p.{} = c.{}", quote_ident(p), quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let failed = |e| {
            pg_error(
                &format!("cannot check foreign key {} of {}", check.name, fk.child),
                e,
            )
        };
        // One statement, one snapshot: the referenced rows this transaction did not write
        // are locked (all of them: `held` is counted), and a key counts as present only
        // if its row was locked or written here, so a row deleted meanwhile is missing.
        let check_sql = format!(
            "WITH tenant_rows AS MATERIALIZED ({rows}),
                  wanted AS MATERIALIZED (SELECT DISTINCT {written} FROM tenant_rows c WHERE {present}),
                  me AS (SELECT (txid_current() % 4294967296)::text::xid AS xid),
                  held AS MATERIALIZED (SELECT {referenced} FROM {parent} p, me
                      WHERE ({referenced}) IN (SELECT * FROM wanted) AND p.xmin <> me.xid
                      FOR KEY SHARE OF p),
                  mine AS MATERIALIZED (SELECT {referenced} FROM {parent} p, me
                      WHERE ({referenced}) IN (SELECT * FROM wanted) AND p.xmin = me.xid)
             SELECT (SELECT count(*) FROM held), (SELECT count(*) FROM tenant_rows),
                    count(*), min(ROW({written})::text)
             FROM wanted c
             WHERE NOT EXISTS (SELECT 1 FROM held p WHERE {matches})
               AND NOT EXISTS (SELECT 1 FROM mine p WHERE {matches})",
            parent = check.parent_sql,
        );
        let row = tx
            .query_one(check_sql.as_str(), &[])
            .await
            .map_err(failed)?;
        // Rows found through a parent (`tenant_via`) are found only if the parent is there:
        // every row written must be among the tenant's rows.
        let (found, count): (i64, i64) = (row.get(1), row.get(2));
        let written_rows = report.tables.get(&fk.child).map_or(0, |t| t.0);
        if found as u64 != written_rows {
            return Err(Error::source(format!(
                "{} of the {written_rows} restored rows of {} are not found under the tenant \
                 (a parent they hang from is missing); nothing was written",
                written_rows.saturating_sub(found as u64),
                fk.child,
            )));
        }
        if count > 0 {
            let example: Option<String> = row.get(3);
            return Err(Error::source(format!(
                "{count} restored rows of {} reference rows of {} that are not there \
                 (foreign key {}; for example ({}) = {}); nothing was written",
                fk.child,
                fk.parent,
                check.name,
                fk.columns.join(", "),
                example.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// How many distinct keys of one foreign key a tenant's restore follows in memory before
/// it leaves the check to the database.
const FOLLOWED_KEYS: usize = 1 << 18;

/// How much COPY data is sent at a time.
const COPY_CHUNK: usize = 256 * 1024;
