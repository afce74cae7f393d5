//! Tenant contacts: read from the vault at a campaign's restore point (so deleted
//! tenants' admins are still found), imported all or nothing, listed.

use crate::common::*;

fn now() -> String {
    let t = chrono_now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    t
}

fn chrono_now() -> String {
    let conn = rusqlite::Connection::open_in_memory().expect("memory");
    conn.query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
        r.get(0)
    })
    .expect("now")
}

#[test]
fn deleted_tenants_admins_are_found_at_the_restore_point() {
    let work = Workdir::new();
    let db = work.path("identity.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL,
             email TEXT, display_name TEXT, role TEXT);
         INSERT INTO users VALUES (1, 1, 'ann@one.example', 'Ann', 'admin'),
             (2, 1, 'joe@one.example', 'Joe', 'member'),
             (3, 2, 'bea@two.example', 'Bea', 'admin');",
    )
    .expect("schema");
    let config = work.init_config(&format!(
        r#"
[vault]
url = "{vault}"
[sources.identity]
url = "sqlite://{db}"
tenant_column = "site_id"
[contacts]
source = "identity"
table = "users"
email_column = "email"
name_column = "display_name"
where = "role = 'admin'"
"#,
        vault = work.vault_url(),
        db = db.display()
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let point = now();
    conn.execute_batch(
        "UPDATE users SET email = 'new@one.example' WHERE id = 1;
         DELETE FROM users WHERE site_id = 2;",
    )
    .expect("change");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let incident = lifeboat_ok(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Sites deleted",
            "--status",
            "identified",
            "--impact",
            "critical",
            "--message",
            "Restoring.",
        ],
    )
    .trim()
    .to_string();
    let file = work.path("tenants.txt");
    std::fs::write(&file, "1\n2\n").expect("tenants");
    let id = lifeboat_ok(
        &config,
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--tenants-from",
            file.to_str().expect("path"),
            "--at",
            &point,
        ],
    )
    .trim()
    .to_string();
    let listed: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &["contacts", "list", "--campaign", &id, "--json"],
    ))
    .expect("json");
    let pairs: Vec<(String, String, String)> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|c| {
            (
                c["tenant"].as_str().unwrap_or("").to_string(),
                c["email"].as_str().unwrap_or("").to_string(),
                c["origin"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("1".into(), "ann@one.example".into(), "vault".into()),
            ("2".into(), "bea@two.example".into(), "vault".into()),
        ]
    );

    // Import: a bad row refuses the whole file, naming its line; nothing is imported.
    let csv = work.path("contacts.csv");
    std::fs::write(
        &csv,
        "tenant,email,name,locale\n1,ops@one.example,\"Ops, One\",de\n2,not-an-address,X,\n",
    )
    .expect("csv");
    let out = lifeboat(
        &config,
        &["contacts", "import", csv.to_str().expect("path")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    std::fs::write(&csv, "tenant,email,name,locale\n9,x@nine.example,X,\n").expect("csv");
    let out = lifeboat(
        &config,
        &["contacts", "import", csv.to_str().expect("path")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown tenant 9"),
        "{}",
        stderr(&out)
    );
    let before = lifeboat_ok(&config, &["contacts", "list", "--json"]);
    assert!(!before.contains("ops@one.example"), "{before}");
    // A good file, twice: one imported contact.
    std::fs::write(
        &csv,
        "tenant,email,name,locale\n1,ops@one.example,\"Ops, One\",de\n",
    )
    .expect("csv");
    for _ in 0..2 {
        lifeboat_ok(
            &config,
            &["contacts", "import", csv.to_str().expect("path")],
        );
    }
    let one: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &["contacts", "list", "--tenant", "1", "--json"],
    ))
    .expect("json");
    let imported: Vec<_> = one
        .as_array()
        .expect("array")
        .iter()
        .filter(|c| c["origin"] == "import")
        .collect();
    assert_eq!(imported.len(), 1, "{one}");
    assert_eq!(imported[0]["name"], "Ops, One");
    assert_eq!(imported[0]["locale"], "de");
}
