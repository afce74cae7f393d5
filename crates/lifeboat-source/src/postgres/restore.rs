//! Writing a tenant's restored rows into a PostgreSQL database: in one transaction, remove
//! the tenant's current rows (children first) and COPY the restored rows in (parents
//! first); identity and generated columns as the database wants them; sequences moved
//! past the restored values.

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::{Client, SimpleQueryMessage};

use lifeboat_core::model::TenantKey;
use lifeboat_core::tenancy::SourceTenancy;
use lifeboat_core::{Error, Result};

use super::pg_error;
use crate::restore::{copy_text, ForeignKey, TenantRestore, WriteReport};
use crate::{quote_ident, quote_literal, tenant_delete, tenant_query};

/// What restore needs to know about the target's schema beyond the tenant map.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub foreign_keys: Vec<ForeignKey>,
    /// (table, column, sequence) for identity and serial columns.
    pub sequences: Vec<(String, String, String)>,
}

pub async fn catalog(client: &Client, schema: &str) -> Result<Catalog> {
    let rows = client
        .query(
            "SELECT child.relname::text, parent.relname::text,
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
             FROM pg_constraint c
             JOIN pg_class child ON child.oid = c.conrelid
             JOIN pg_class parent ON parent.oid = c.confrelid
             JOIN pg_namespace n ON n.oid = child.relnamespace
             WHERE c.contype = 'f' AND n.nspname = $1",
            &[&schema],
        )
        .await
        .map_err(|e| pg_error("cannot read foreign keys", e))?;
    let foreign_keys = rows
        .iter()
        .map(|r| ForeignKey {
            child: r.get(0),
            parent: r.get(1),
            columns: r.get(2),
            parent_columns: r.get(3),
        })
        .collect();
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
/// from the vault, while the connection sends the previous chunk. With `dry_run`, count
/// what would be written and removed, and change nothing.
pub async fn write_tenant(
    client: &mut Client,
    tenancy: &SourceTenancy,
    catalog: &Catalog,
    delete_key: &TenantKey,
    mut restore: TenantRestore,
    dry_run: bool,
) -> Result<(WriteReport, TenantRestore)> {
    let key = quote_literal(delete_key.as_str());
    let mut report = WriteReport::default();
    let vanished = |name: &str| Error::source(format!("table {name} vanished"));
    if dry_run {
        for index in 0..restore.tables.len() {
            let name = restore.tables[index].name.clone();
            let schema = &tenancy.table(&name).ok_or_else(|| vanished(&name))?.schema;
            let removed = count(
                client,
                &format!(
                    "SELECT count(*) FROM ({}) x",
                    tenant_query(tenancy, schema, &key, true)?
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
    for table in restore.tables.iter().rev() {
        let schema = &tenancy
            .table(&table.name)
            .ok_or_else(|| vanished(&table.name))?
            .schema;
        let sql = tenant_delete(tenancy, schema, &key, true)?;
        let removed = tx.execute(sql.as_str(), &[]).await.map_err(|e| {
            pg_error(
                &format!("cannot remove the current rows of {}", table.name),
                e,
            )
        })?;
        report.tables.insert(table.name.clone(), (0, removed));
    }
    let tables = restore.tables.clone();
    let (send, mut receive) = tokio::sync::mpsc::channel::<Piece>(4);
    let producer = tokio::task::spawn_blocking(move || -> Result<TenantRestore> {
        let closed = || Error::source("the restore connection stopped taking rows");
        for index in 0..restore.tables.len() {
            let mut buffer = Vec::with_capacity(COPY_CHUNK + 4096);
            let rows = restore.rows(index, |row| {
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
        Ok(restore)
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
    let restore = producer
        .await
        .map_err(|e| Error::source(format!("the restore's row reader failed: {e}")))??;
    for (table, column, sequence) in &catalog.sequences {
        if report.tables.get(table).is_none_or(|t| t.0 == 0) {
            continue;
        }
        // The next value must come after m: a fresh sequence (is_called false) would
        // hand out last_value itself.
        let sql = format!(
            "SELECT setval({seq}, m, true) FROM (SELECT max({col}) AS m FROM {tbl}) x, \
             {sequence_ident} s WHERE m IS NOT NULL AND \
             m >= CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END",
            seq = quote_literal(sequence),
            col = quote_ident(column),
            tbl = quote_ident(table),
            sequence_ident = sequence,
        );
        tx.batch_execute(&sql)
            .await
            .map_err(|e| pg_error(&format!("cannot move sequence {sequence}"), e))?;
    }
    lifeboat_core::failpoint::hit("restore.before-commit");
    tx.commit()
        .await
        .map_err(|e| pg_error("cannot commit the restore transaction", e))?;
    Ok((report, restore))
}

/// How much COPY data is sent at a time.
const COPY_CHUNK: usize = 256 * 1024;
