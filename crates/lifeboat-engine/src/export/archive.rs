//! The two archive formats of docs/export.md: a zip of one CSV file per table plus
//! `manifest.json`, or one SQLite database with one table per exported table plus
//! `_lifeboat_manifest`. Both are written table by table, row by row.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use lifeboat_core::model::Value;
use lifeboat_core::{Error, Result};

use super::Format;

/// Where an export's tables go, one table at a time.
pub(super) enum Archive {
    Zip(Box<zip::ZipWriter<File>>),
    Sqlite(rusqlite::Connection),
}

/// One table being written.
pub(super) struct TableWriter<'a> {
    archive: &'a mut Archive,
    line: Vec<u8>,
    insert: Option<String>,
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::source(format!("writing the export {}: {e}", path.display()))
}

impl Archive {
    /// Start an archive in `file` (empty, at `path`).
    pub(super) fn create(format: Format, file: File, path: &Path) -> Result<Archive> {
        match format {
            Format::Csv => Ok(Archive::Zip(Box::new(zip::ZipWriter::new(file)))),
            Format::Sqlite => {
                drop(file);
                let connection =
                    rusqlite::Connection::open(path).map_err(|e| write_error(path, e))?;
                // One transaction for the whole file; the file is synced and renamed into
                // place by the caller, so the database's own journal adds nothing.
                connection
                    .execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; BEGIN;")
                    .map_err(|e| write_error(path, e))?;
                Ok(Archive::Sqlite(connection))
            }
        }
    }

    /// The name a table has in the archive: a file of the zip, or a table of the database.
    pub(super) fn entry_name(format: Format, source: &str, table: &str) -> String {
        match format {
            Format::Csv => format!("{source}/{table}.csv"),
            Format::Sqlite => format!("{source}.{table}"),
        }
    }

    /// Start the table `name` with `columns`.
    pub(super) fn table<'a>(
        &'a mut self,
        name: &str,
        columns: &[String],
        path: &Path,
    ) -> Result<TableWriter<'a>> {
        let mut line = Vec::new();
        let insert = match self {
            Archive::Zip(zip) => {
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .large_file(true);
                zip.start_file(name, options)
                    .map_err(|e| write_error(path, e))?;
                for (i, column) in columns.iter().enumerate() {
                    if i > 0 {
                        line.push(b',');
                    }
                    quote(&mut line, column);
                }
                line.push(b'\n');
                zip.write_all(&line).map_err(|e| write_error(path, e))?;
                None
            }
            Archive::Sqlite(connection) => {
                let table = quote_identifier(name);
                let list: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
                connection
                    .execute(&format!("CREATE TABLE {table} ({})", list.join(", ")), [])
                    .map_err(|e| write_error(path, e))?;
                let marks = vec!["?"; columns.len()].join(", ");
                Some(format!("INSERT INTO {table} VALUES ({marks})"))
            }
        };
        Ok(TableWriter {
            archive: self,
            line,
            insert,
        })
    }

    /// Write the manifest and close the archive (the file is not synced yet).
    pub(super) fn finish(self, manifest_json: &str, path: &Path) -> Result<()> {
        match self {
            Archive::Zip(mut zip) => {
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated);
                zip.start_file("manifest.json", options)
                    .map_err(|e| write_error(path, e))?;
                zip.write_all(manifest_json.as_bytes())
                    .map_err(|e| write_error(path, e))?;
                zip.finish().map_err(|e| write_error(path, e))?;
                Ok(())
            }
            Archive::Sqlite(connection) => {
                connection
                    .execute_batch("CREATE TABLE _lifeboat_manifest (manifest TEXT NOT NULL)")
                    .map_err(|e| write_error(path, e))?;
                connection
                    .execute(
                        "INSERT INTO _lifeboat_manifest (manifest) VALUES (?1)",
                        [manifest_json],
                    )
                    .map_err(|e| write_error(path, e))?;
                connection
                    .execute_batch("COMMIT")
                    .map_err(|e| write_error(path, e))?;
                connection.close().map_err(|(_, e)| write_error(path, e))?;
                Ok(())
            }
        }
    }
}

impl TableWriter<'_> {
    /// Write one row (values in the table's column order).
    pub(super) fn row(&mut self, row: &[Value], path: &Path) -> Result<()> {
        match (&mut *self.archive, &self.insert) {
            (Archive::Zip(zip), _) => {
                self.line.clear();
                for (i, value) in row.iter().enumerate() {
                    if i > 0 {
                        self.line.push(b',');
                    }
                    csv_field(&mut self.line, value);
                }
                self.line.push(b'\n');
                zip.write_all(&self.line).map_err(|e| write_error(path, e))
            }
            (Archive::Sqlite(connection), Some(insert)) => {
                let mut statement = connection
                    .prepare_cached(insert)
                    .map_err(|e| write_error(path, e))?;
                let values = row.iter().map(sqlite_value);
                statement
                    .execute(rusqlite::params_from_iter(values))
                    .map_err(|e| write_error(path, e))?;
                Ok(())
            }
            (Archive::Sqlite(_), None) => Err(Error::source("export: a table was not started")),
        }
    }
}

/// `value` as one CSV field (docs/export.md): NULL empty, text always quoted, numbers and
/// bytes bare.
pub(super) fn csv_field(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => {}
        Value::Int(v) => out.extend_from_slice(v.to_string().as_bytes()),
        Value::Real(v) => out.extend_from_slice(real(*v).as_bytes()),
        Value::Text(s) => quote(out, s),
        Value::Blob(b) => {
            out.extend_from_slice(b"\\x");
            out.extend_from_slice(hex(b).as_bytes());
        }
    }
}

/// A real as the shortest decimal that reads back to it, always with a `.` or an
/// exponent so that it is never taken for an integer.
fn real(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else {
        // `Debug` is the shortest round-trip form and keeps `.0` on whole numbers.
        format!("{v:?}")
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn quote(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &b in text.as_bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn sqlite_value(value: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match value {
        Value::Null => V::Null,
        Value::Int(v) => V::Integer(*v),
        Value::Real(v) => V::Real(*v),
        Value::Text(s) => V::Text(s.clone()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: Value) -> String {
        let mut out = Vec::new();
        csv_field(&mut out, &value);
        String::from_utf8(out).expect("CSV fields are UTF-8")
    }

    #[test]
    fn every_kind_of_value_is_told_apart() {
        assert_eq!(field(Value::Null), "");
        assert_eq!(field(Value::Text(String::new())), "\"\"");
        assert_eq!(
            field(Value::Text("say \"hi\", ok".into())),
            "\"say \"\"hi\"\", ok\""
        );
        assert_eq!(field(Value::Text("{1,2}".into())), "\"{1,2}\"");
        assert_eq!(field(Value::Int(-42)), "-42");
        assert_eq!(field(Value::Real(1.0)), "1.0");
        assert_eq!(field(Value::Real(0.1)), "0.1");
        assert_eq!(field(Value::Real(1e300)), "1e300");
        assert_eq!(field(Value::Real(f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(field(Value::Real(f64::NAN)), "NaN");
        assert_eq!(field(Value::Blob(vec![0xde, 0xad, 0x00])), "\\xdead00");
        assert_eq!(field(Value::Text("\\xdead00".into())), "\"\\xdead00\"");
    }

    #[test]
    fn reals_read_back_to_the_same_bits() {
        for v in [0.1, -0.0, 1.0 / 3.0, 123456789.0, 5e-324, f64::MAX] {
            let text = real(v);
            let back: f64 = text.parse().expect("a real reads back");
            assert_eq!(back.to_bits(), v.to_bits(), "{text}");
        }
    }
}
