//! What a guarded step may say (docs/guard.md, "What a step may say"): its SQL, with the
//! parameter bound as it will run, is parsed with the source's SQL dialect, and only
//! `INSERT`, `UPDATE` and `DELETE` of tables of the source's tenant map pass. DDL, `SET`,
//! trigger changes, `session_replication_role` and `set_config` (which would switch the
//! measuring triggers off), Lifeboat's own tables (`_lifeboat_*`) and tables the tenant map
//! does not know are refused, naming the step and the statement.

use std::ops::ControlFlow;

use sqlparser::ast::{visit_relations, ObjectNamePart, Statement};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use lifeboat_core::model::{Dialect, Value};
use lifeboat_core::tenancy::SourceTenancy;
use lifeboat_core::{Error, Result};
use lifeboat_source::guard::bind_array;

/// One step as the check sees it.
pub struct StepSql<'a> {
    /// How errors call the step: `operation remove-app, step 2 (tracker)`.
    pub name: String,
    pub sql: &'a str,
    pub param: &'a str,
    pub dialect: Dialect,
    /// The source's schema (PostgreSQL; `main` for SQLite): the only qualifier allowed.
    pub schema: &'a str,
    pub tenancy: &'a SourceTenancy,
}

/// Words that may appear nowhere in a step, in any case: they reach Lifeboat's own tables
/// or switch off the triggers that measure a step.
const FORBIDDEN: [(&str, &str); 3] = [
    (
        "_lifeboat",
        "Lifeboat's own tables (_lifeboat_*) may not be touched",
    ),
    (
        "session_replication_role",
        "session_replication_role would switch off the triggers that measure the step",
    ),
    (
        "set_config",
        "set_config changes session settings, which a step may not do",
    ),
];

/// Refuse the step unless every statement in it is DML on tables of the tenant map.
pub fn check_step(step: &StepSql) -> Result<()> {
    let shown = shown(step.sql);
    let refuse = |why: String| {
        Error::config(format!(
            "{}: refused `{shown}`: {why}; a step may only INSERT, UPDATE or DELETE rows of \
             tables of the source's tenant map",
            step.name
        ))
    };
    let lower = step.sql.to_ascii_lowercase();
    for (word, why) in FORBIDDEN {
        if lower.contains(word) {
            return Err(refuse(why.to_string()));
        }
    }
    // Parse what will run: the parameter bound as it is for this kind of database.
    let bound = bind_array(step.sql, step.param, &[Value::Int(0)], step.dialect);
    let statements = match step.dialect {
        Dialect::Postgres => Parser::parse_sql(&PostgreSqlDialect {}, &bound),
        Dialect::Sqlite => Parser::parse_sql(&SQLiteDialect {}, &bound),
    }
    .map_err(|e| refuse(format!("it does not parse as SQL ({e})")))?;
    if statements.is_empty() {
        return Err(refuse("it has no statement".to_string()));
    }
    for statement in &statements {
        let what = match statement {
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => None,
            Statement::Set(_) => Some("SET changes session settings".to_string()),
            Statement::CreateTrigger(_) | Statement::DropTrigger(_) => {
                Some("it changes triggers".to_string())
            }
            Statement::Query(_) => Some("it is a query, not a change".to_string()),
            other => Some(format!(
                "`{}` is not INSERT, UPDATE or DELETE",
                first_words(&other.to_string())
            )),
        };
        if let Some(why) = what {
            return Err(refuse(why));
        }
        let flow = visit_relations(statement, |name| {
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|p| match p {
                    ObjectNamePart::Identifier(i) => i.value.clone(),
                    ObjectNamePart::Function(f) => f.name.value.clone(),
                })
                .collect();
            let (qualifier, table) = match parts.as_slice() {
                [table] => (None, table.as_str()),
                [qualifier, table] => (Some(qualifier.as_str()), table.as_str()),
                _ => return ControlFlow::Break(format!("{name} names another database")),
            };
            if let Some(q) = qualifier {
                if q != step.schema {
                    return ControlFlow::Break(format!(
                        "{name} is outside the source's schema {}",
                        step.schema
                    ));
                }
            }
            // SQLite's bound parameter reads json_each(…), a table function.
            if step.dialect == Dialect::Sqlite && table.eq_ignore_ascii_case("json_each") {
                return ControlFlow::Continue(());
            }
            if step.tenancy.table(table).is_none() {
                return ControlFlow::Break(format!(
                    "table {name} is not in the source's tenant map"
                ));
            }
            ControlFlow::Continue(())
        });
        if let ControlFlow::Break(why) = flow {
            return Err(refuse(why));
        }
    }
    Ok(())
}

/// The step's SQL on one line, cut at 160 characters.
fn shown(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 160 {
        one_line.chars().take(160).collect::<String>() + "…"
    } else {
        one_line
    }
}

/// The first three words of a statement, to name what kind it is.
fn first_words(text: &str) -> String {
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::model::TableSchema;
    use lifeboat_core::tenancy::LiveTable;

    fn tenancy() -> SourceTenancy {
        let config = lifeboat_core::config::Config::parse(
            "[vault]\nurl = \"file:///tmp/v\"\n\
             [sources.tracker]\nurl = \"sqlite:///x.db\"\ntenant_column = \"site_id\"\n\
             [sources.tracker.tables.sites]\ntenant_column = \"id\"\n\
             [sources.tracker.tables.schema_migrations]\nglobal = true\n",
        )
        .expect("config");
        let table = |name: &str, columns: &[&str]| LiveTable {
            schema: TableSchema {
                name: name.to_string(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
                key: vec![0],
            },
        };
        lifeboat_core::tenancy::resolve(
            "tracker",
            &config.sources["tracker"],
            &[
                table("sites", &["id"]),
                table("apps", &["id", "site_id"]),
                table("schema_migrations", &["id"]),
            ],
        )
        .expect("resolves")
    }

    fn check(sql: &str, dialect: Dialect) -> Result<()> {
        let tenancy = tenancy();
        check_step(&StepSql {
            name: "operation op, step 1 (tracker)".into(),
            sql,
            param: "ids",
            dialect,
            schema: if dialect == Dialect::Sqlite {
                "main"
            } else {
                "public"
            },
            tenancy: &tenancy,
        })
    }

    fn refused(sql: &str, dialect: Dialect, why: &str) {
        let err = check(sql, dialect).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains(why), "{text} lacks {why:?}");
        assert!(text.contains("step 1 (tracker)"), "{text}");
    }

    #[test]
    fn dml_on_mapped_tables_passes_in_both_dialects() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            check("DELETE FROM apps WHERE id = ANY($ids)", dialect).expect("delete");
            check(
                "DELETE FROM sites WHERE id IN (SELECT site_id FROM apps WHERE id IN $ids)",
                dialect,
            )
            .expect("subquery");
            check("UPDATE apps SET site_id = 0 WHERE id = ANY($ids)", dialect).expect("update");
            check(
                "INSERT INTO apps (id, site_id) SELECT id + 1000, site_id FROM apps \
                 WHERE id = ANY($ids)",
                dialect,
            )
            .expect("insert");
        }
        check(
            "DELETE FROM public.apps WHERE id = ANY($ids)",
            Dialect::Postgres,
        )
        .expect("qualified with the source's schema");
    }

    #[test]
    fn ddl_settings_triggers_own_tables_and_unmapped_tables_are_refused() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            refused(
                "DROP TABLE apps",
                dialect,
                "is not INSERT, UPDATE or DELETE",
            );
            refused(
                "DELETE FROM apps WHERE id = ANY($ids); DROP TABLE sites",
                dialect,
                "`DROP TABLE sites` is not INSERT",
            );
            refused(
                "DELETE FROM _lifeboat_changelog",
                dialect,
                "Lifeboat's own tables",
            );
            refused(
                "DELETE FROM users WHERE id = ANY($ids)",
                dialect,
                "table users is not in the source's tenant map",
            );
            refused(
                "DELETE FROM apps WHERE id IN (SELECT id FROM secrets)",
                dialect,
                "table secrets is not in the source's tenant map",
            );
            refused("SELECT * FROM apps", dialect, "a query, not a change");
            refused("DELETE FROM apps WHERE", dialect, "does not parse");
        }
        refused(
            "SET session_replication_role = replica",
            Dialect::Postgres,
            "session_replication_role",
        );
        refused("SET search_path = x", Dialect::Postgres, "SET changes");
        refused(
            "DELETE FROM apps WHERE id IN (SELECT set_config('a.b', 'c', true)::int)",
            Dialect::Postgres,
            "set_config",
        );
        refused(
            "ALTER TABLE apps DISABLE TRIGGER ALL",
            Dialect::Postgres,
            "`ALTER TABLE apps` is not",
        );
        refused(
            "DROP TRIGGER apps_audit ON apps",
            Dialect::Postgres,
            "changes triggers",
        );
        refused(
            "DELETE FROM other.apps WHERE id = ANY($ids)",
            Dialect::Postgres,
            "outside the source's schema public",
        );
        refused(
            "DELETE FROM sqlite_master",
            Dialect::Sqlite,
            "table sqlite_master is not in the source's tenant map",
        );
    }
}
