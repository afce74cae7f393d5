//! SLA credits, the post-incident report and postmortems, on a real SQLite source with
//! times set by the control store's test clock (`LIFEBOAT_TEST_CLOCK`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::*;

/// The incident starts here (the test clock): January 2099 has 31 days, 44 640 minutes;
/// 99.9% of it up leaves 44.64 minutes (2 678.4 s) down, 99% leaves 446.4 minutes.
const START: &str = "2099-01-10T00:00:00Z";

const SLA: &str = r#"
[sla]
tier_attribute = "edition"
default_tier = "silver"
[sla.tiers.gold]
target = 99.9
credits = [[99.9, 10], [99.0, 25], [95.0, 50]]
[sla.tiers.silver]
target = 99.95
credits = [[99.95, 5], [99.9, 10]]
"#;

/// Sites 1..=8, each with two issues; `[sla]` as above, acceptance skipped.
fn setup(work: &Workdir) -> PathBuf {
    let db = work.path("tracker.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "CREATE TABLE sites (id INTEGER PRIMARY KEY, url TEXT NOT NULL);
         CREATE TABLE issues (id INTEGER PRIMARY KEY,
             site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE, title TEXT);",
    )
    .expect("schema");
    for s in 1..=8 {
        conn.execute(
            "INSERT INTO sites VALUES (?1, ?2)",
            rusqlite::params![s, format!("https://site{s}.example.net")],
        )
        .expect("site");
        for i in 0..2 {
            conn.execute(
                "INSERT INTO issues VALUES (?1, ?2, 'an issue')",
                rusqlite::params![s * 10 + i, s],
            )
            .expect("issue");
        }
    }
    let people = People::new(work).toml();
    let config = work.init_config(&format!(
        r#"
{people}
[vault]
url = "{vault}"
[sources.tracker]
url = "sqlite://{db}"
tenant_column = "site_id"
[sources.tracker.tables.sites]
tenant_column = "id"
[guard]
approvals_required = 1
users = "tracker.issues"
[campaigns]
acceptance = "skip"
{SLA}"#,
        vault = work.vault_url(),
        db = db.display()
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let attributes = work.path("attributes.csv");
    std::fs::write(
        &attributes,
        "tenant,edition\n2,gold\n3,silver\n4,free\n5,gold\n6,gold\n",
    )
    .expect("attributes");
    lifeboat_ok(
        &config,
        &[
            "campaign",
            "import-attributes",
            attributes.to_str().expect("path"),
        ],
    );
    config
}

/// The time now by SQLite's clock (the one capture's triggers use), then a short pause.
fn sqlite_now(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open");
    let t: String = conn
        .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
            r.get(0)
        })
        .expect("now");
    std::thread::sleep(std::time::Duration::from_millis(20));
    t
}

/// `lifeboat ARGS` with the control store's clock at `clock`; exit code 0 required.
fn at_clock(config: &Path, clock: &str, args: &[&str]) -> String {
    let output = lifeboat_command(config, args)
        .env("LIFEBOAT_TEST_CLOCK", clock)
        .output()
        .expect("run lifeboat");
    assert!(
        output.status.success(),
        "lifeboat {args:?} at {clock}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// `START` plus `seconds` (with fractions), RFC 3339.
fn after_start(micros: i64) -> String {
    let start = chrono::DateTime::parse_from_rfc3339(START).expect("start");
    (start + chrono::Duration::microseconds(micros))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A campaign of `sites` under `incident`, restored by a worker whose clock reads `START`
/// plus `down_us`.
fn restore_at(
    config: &Path,
    work: &Workdir,
    incident: &str,
    at: &str,
    sites: &[i64],
    down_us: i64,
) {
    let file = work.path("tenants.txt");
    let list: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
    std::fs::write(&file, list.join("\n")).expect("tenants");
    let campaign = at_clock(
        config,
        START,
        &[
            "campaign",
            "start",
            "--incident",
            incident,
            "--tenants-from",
            file.to_str().expect("path"),
            "--at",
            at,
        ],
    );
    at_clock(
        config,
        &after_start(down_us),
        &["worker", "--campaign", campaign.trim(), "--until-done"],
    );
}

fn open_incident(config: &Path) -> String {
    at_clock(
        config,
        START,
        &[
            "incident",
            "create",
            "--name",
            "Sites deleted",
            "--status",
            "identified",
            "--impact",
            "critical",
            "--component",
            "tracker=partial_outage",
            "--message",
            "We are restoring the deleted sites.",
        ],
    )
    .trim()
    .to_string()
}

fn sla_json(config: &Path, incident: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["sla", "report", "--incident", incident, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&lifeboat_ok(config, &args)).expect("json")
}

fn line<'a>(report: &'a serde_json::Value, tenant: &str) -> &'a serde_json::Value {
    report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|l| l["tenant"] == tenant)
        .unwrap_or_else(|| panic!("no tenant {tenant} in {report}"))
}

/// Sites 2..=6 deleted; the incident opened at `START`; sites 2, 3, 4 restored 44.64
/// minutes later (exactly 99.9% up), site 5 one microsecond later than that, site 6
/// exactly 446.4 minutes later (99.0% up).
fn known_downtimes(work: &Workdir) -> (PathBuf, String) {
    let config = setup(work);
    let db = work.path("tracker.db");
    let t = sqlite_now(&db);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM sites WHERE id BETWEEN 2 AND 6")
        .expect("delete");
    drop(conn);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let incident = open_incident(&config);
    restore_at(&config, work, &incident, &t, &[2, 3, 4], 2_678_400_000);
    restore_at(&config, work, &incident, &t, &[5], 2_678_400_001);
    restore_at(&config, work, &incident, &t, &[6], 26_784_000_000);
    (config, incident)
}

#[test]
fn the_sla_report_gives_the_expected_minutes_and_credits_at_each_tier_boundary() {
    let work = Workdir::new();
    let (config, incident) = known_downtimes(&work);
    let report = sla_json(&config, &incident, &[]);
    assert_eq!(report["month"], "2099-01", "{report}");
    assert_eq!(report["month_minutes"], 44640.0);
    assert_eq!(report["tenants"].as_array().expect("tenants").len(), 5);
    // (tenant, tier, downtime minutes, credit): gold at exactly 99.9% owes nothing; silver
    // is below 99.95 but not below 99.9; "free" is no tier, so the default (silver).
    for (tenant, tier, minutes, credit) in [
        ("2", "gold", 44.64, 0.0),
        ("3", "silver", 44.64, 5.0),
        ("4", "silver", 44.64, 5.0),
        ("5", "gold", 44.640_000_016_666_67, 10.0),
        ("6", "gold", 446.4, 10.0),
    ] {
        let l = line(&report, tenant);
        assert_eq!(l["tier"], tier, "{l}");
        let got = l["downtime_minutes"].as_f64().expect("minutes");
        assert!(
            (got - minutes).abs() < 1e-9,
            "tenant {tenant}: {got} minutes"
        );
        assert_eq!(l["credit_percent"], credit, "tenant {tenant}: {l}");
        assert_eq!(l["down_from"], "2099-01-10T00:00:00.000000Z", "{l}");
        assert_eq!(l["down_from_source"], "incident_start", "{l}");
    }
    assert_eq!(line(&report, "2")["target_missed"], false);
    assert_eq!(line(&report, "5")["target_missed"], true);
    assert!(
        (line(&report, "2")["uptime_percent"]
            .as_f64()
            .expect("uptime")
            - 99.9)
            .abs()
            < 1e-9
    );
    assert_eq!(
        line(&report, "6")["down_until"],
        "2099-01-10T07:26:24.000000Z"
    );

    // Another month: none of it was down.
    let february = sla_json(&config, &incident, &["--month", "2099-02"]);
    for l in february["tenants"].as_array().expect("tenants") {
        assert_eq!(l["downtime_minutes_in_month"], 0.0, "{l}");
        assert_eq!(l["uptime_percent"], 100.0, "{l}");
        assert_eq!(l["credit_percent"], 0.0, "{l}");
    }

    let csv = lifeboat_ok(
        &config,
        &["sla", "report", "--incident", &incident, "--csv"],
    );
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some(
            "tenant,campaign,tier,down_from,down_until,downtime_minutes,\
             downtime_minutes_in_month,uptime_percent,credit_percent"
        )
    );
    let six = rows
        .find(|r| r.starts_with("6,"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(six.ends_with(",446.4000,446.4000,99.000000,10"), "{six}");
    let human = lifeboat_ok(&config, &["sla", "report", "--incident", &incident]);
    assert!(human.contains("2099-01 (44640 minutes)"), "{human}");

    // The tenant's private page shows its own downtime and credit.
    let links: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &[
            "campaign",
            "links",
            line(&report, "5")["campaign"].as_str().expect("id"),
            "--json",
        ],
    ))
    .expect("links");
    let link = links[0]["link"].as_str().expect("link");
    let token_path = &link[link.find("/t/").expect("a private link")..];
    let (mut server, base) = serve(&config);
    let (code, page) = http_get(&base, token_path);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("unavailable for 44.6 minutes"), "{page}");
    assert!(page.contains("Uptime in 2099-01: 99.900%"), "{page}");
    assert!(
        page.contains("A service credit of 10% is owed to you."),
        "{page}"
    );
    let (_, json) = http_get(&base, &format!("{token_path}/status.json"));
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["sla"]["credit_percent"], 10.0, "{json}");
    assert_eq!(json["sla"]["tier"], "gold", "{json}");
    terminate(&mut server);
}

/// `lifeboat serve` on a free port: the process and its address.
fn serve(config: &Path) -> (std::process::Child, String) {
    serve_at(config, None)
}

/// `lifeboat serve`, its control store's clock at `clock` if given.
fn serve_at(config: &Path, clock: Option<&str>) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut command = lifeboat_command(config, &["serve", "--listen", "127.0.0.1:0"]);
    if let Some(clock) = clock {
        command.env("LIFEBOAT_TEST_CLOCK", clock);
    }
    let mut server = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = std::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf8");
    let base = first
        .strip_prefix("serving the status page on ")
        .expect(&first)
        .trim_end_matches('/')
        .to_string();
    (server, base)
}

#[test]
fn sla_and_postmortem_refuse_bad_input_and_change_nothing() {
    let work = Workdir::new();
    let config = setup(&work);
    let incident = open_incident(&config);
    let refused = |args: &[&str], wanted: &str| {
        let output = lifeboat(&config, args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert!(err.contains(wanted), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    };
    refused(
        &["sla", "report", "--incident", "nosuchincident"],
        "unknown incident nosuchincident",
    );
    for month in ["2099-13", "2099-1", "january", "2099/01"] {
        refused(
            &["sla", "report", "--incident", &incident, "--month", month],
            "use YYYY-MM",
        );
    }
    refused(
        &["report", "--incident", "nosuchincident"],
        "unknown incident nosuchincident",
    );
    let file = work.path("postmortem.md");
    std::fs::write(&file, "# What happened\n").expect("file");
    let path = file.to_str().expect("path");
    refused(
        &["incident", "postmortem", "nosuchincident", "--file", path],
        "unknown incident nosuchincident",
    );
    refused(
        &["incident", "postmortem", &incident, "--file", path],
        "resolve it",
    );
    std::fs::write(&file, "  \n").expect("file");
    lifeboat_ok(
        &config,
        &["incident", "resolve", &incident, "--message", "Restored."],
    );
    let audit_before = lifeboat_ok(&config, &["audit", "--json"]);
    refused(
        &["incident", "postmortem", &incident, "--file", path],
        "the postmortem is empty",
    );
    refused(
        &[
            "incident",
            "postmortem",
            &incident,
            "--file",
            "/nonexistent/report.md",
        ],
        "cannot read",
    );
    assert_eq!(lifeboat_ok(&config, &["audit", "--json"]), audit_before);
    let incidents: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    assert_eq!(incidents[0]["status"], "resolved");
    assert_eq!(incidents[0]["postmortem_body"], serde_json::Value::Null);

    // A credit table out of order: the configuration is refused, naming the tier.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("[[99.95, 5], [99.9, 10]]", "[[99.9, 10], [99.95, 5]]"),
    )
    .expect("config");
    refused(
        &["sla", "report", "--incident", &incident],
        "[sla.tiers.silver] credits: threshold 99.95 after 99.9",
    );
    std::fs::write(&config, text.replace("target = 99.95", "target = 120")).expect("config");
    refused(
        &["sla", "report", "--incident", &incident],
        "[sla.tiers.silver] target = 120",
    );
}

#[test]
fn a_postmortem_is_published_on_the_page_and_in_the_json_and_audited() {
    let work = Workdir::new();
    let (config, incident) = known_downtimes(&work);
    at_clock(
        &config,
        &after_start(30_000_000_000),
        &[
            "incident",
            "resolve",
            &incident,
            "--message",
            "Every site is back.",
        ],
    );

    // The drafted report, as Markdown and as HTML.
    let md = lifeboat_ok(&config, &["report", "--incident", &incident]);
    assert!(md.contains("# Post-incident report: Sites deleted"), "{md}");
    assert!(md.contains("Affected: 5 tenants and 10 users"), "{md}");
    assert!(
        md.contains("Recovery time per tenant (from its data going missing to restored and verified): min 44 min 38 s, median 44 min 38 s, p95 7 h 26 min, max 7 h 26 min."),
        "{md}"
    );
    assert!(
        md.contains("4 of 5 tenants are owed a credit for 2099-01"),
        "{md}"
    );
    assert!(md.contains("| 6 | gold | 446.4 | 99.0000% | 10% |"), "{md}");
    assert!(md.contains("Public updates posted: 2."), "{md}");
    assert!(
        md.contains("Longest time without a public update: 8 h 20 min."),
        "{md}"
    );
    let html_file = work.path("report.html");
    lifeboat_ok(
        &config,
        &[
            "report",
            "--incident",
            &incident,
            "--format",
            "html",
            "-o",
            html_file.to_str().expect("path"),
        ],
    );
    let html = std::fs::read_to_string(&html_file).expect("html");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<h2>Timeline (UTC)</h2>"), "{html}");
    assert!(html.contains("<td>gold</td>"), "{html}");

    // The operator edits it (with markup that must not reach the page as markup).
    let edited =
        format!("{md}\n## Lessons <script>alert(1)</script>\n\nWe now *guard* cleanup scripts.\n");
    let file = work.path("postmortem.md");
    std::fs::write(&file, &edited).expect("file");
    let out = lifeboat_ok(
        &config,
        &[
            "incident",
            "postmortem",
            &incident,
            "--file",
            file.to_str().expect("path"),
            "--by",
            "erin",
        ],
    );
    assert_eq!(out.trim(), format!("{incident} postmortem published"));
    let incidents: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    assert_eq!(incidents[0]["status"], "postmortem");
    assert_eq!(incidents[0]["postmortem_body"], edited.as_str());
    let audit: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["audit", "--json"])).expect("json");
    let entry = audit
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "incident-postmortem")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(entry["actor"], "erin");
    assert_eq!(entry["subject"], format!("incident:{incident}"));
    assert_eq!(entry["details"]["bytes"], edited.len());

    let (mut server, base) = serve(&config);
    let (_, json) = http_get(&base, "/api/v2/incidents.json");
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    let published = &json["incidents"][0];
    assert_eq!(published["status"], "postmortem", "{published}");
    assert_eq!(published["postmortem_body"], edited.as_str());
    let (_, page) = http_get(&base, "/");
    let section = &page[page
        .find(&format!("id=\"postmortem-{incident}\""))
        .unwrap_or_else(|| panic!("{page}"))..];
    assert!(
        section.contains("<h1>Post-incident report: Sites deleted</h1>"),
        "{section}"
    );
    assert!(section.contains("<em>guard</em>"), "{section}");
    assert!(
        section.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{section}"
    );
    assert!(!page.contains("<script"), "{page}");
    terminate(&mut server);
}

#[test]
fn the_report_of_a_drill_incident_has_every_timeline_entry_with_measured_figures() {
    let work = Workdir::new();
    let dir = work.path("drill");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args([
            "drill",
            "--tenants",
            "20",
            "--json",
            "--dir",
            dir.to_str().expect("path"),
            "--serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("drill");
    assert!(output.status.success(), "{}", stderr(&output));
    let drill: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    let deleted = drill["tenants_deleted"].as_u64().expect("deleted");
    let config = dir.join("lifeboat.toml");
    let incidents: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    let incident = incidents[0]["id"].as_str().expect("id").to_string();
    let campaign: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["campaign", "status", "--json"]))
            .expect("json");
    let campaign = &campaign[0];
    let md = lifeboat_ok(&config, &["report", "--incident", &incident]);
    let timeline =
        &md[md.find("## Timeline").expect("timeline")..md.find("## Numbers").expect("numbers")];
    let entries: Vec<&str> = timeline.lines().filter(|l| l.starts_with("- **")).collect();
    let position = |needle: &str| {
        entries
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {timeline}"))
    };
    let missing = position("Tenants' data went missing (from the deleting transaction)");
    let opened = position("Public update (identified): \"A maintenance script deleted the data of");
    let users = campaign["users"].as_u64().expect("users");
    assert!(
        users > 0,
        "the drill's campaign counts its users: {campaign}"
    );
    let started = position(&format!(
        "started by drill: {deleted} tenants ({users} users) to restore as they were at {}",
        campaign["restored_to"].as_str().expect("restored to")
    ));
    let batch = position("Batch 1 of campaign");
    let last = position(&format!(
        "Last tenant restored and verified: all {deleted} restored"
    ));
    let resolved = position(&format!(
        "Public update (resolved): \"{deleted} of {deleted} customers' data is restored and verified.\""
    ));
    assert!(
        missing < opened && opened <= started && started < batch,
        "{timeline}"
    );
    assert!(batch < last && last <= resolved, "{timeline}");
    // Every batch, and every tenant in one.
    let batch_size = (deleted / 10).clamp(1, 60);
    let batches: Vec<&&str> = entries.iter().filter(|l| l.contains("Batch ")).collect();
    assert_eq!(
        batches.len() as u64,
        deleted.div_ceil(batch_size),
        "{timeline}"
    );
    let rows: u64 = drill["rows_restored"].as_u64().expect("rows");
    assert!(
        md.contains(&format!(
            "- Rows restored and verified against the vault: {rows}."
        )),
        "{md}"
    );
    assert!(
        md.contains(&format!("- Affected: {deleted} tenants and {users} users")),
        "{md}"
    );
    assert!(
        md.contains(&format!("- Restored and verified: {deleted} of {deleted}.")),
        "{md}"
    );
    assert!(md.contains("- Recovery time per tenant (from its data going missing to restored and verified): min "), "{md}");
    assert!(md.contains("0 rows lost by construction"), "{md}");
    assert!(md.contains("- Public updates posted: 2."), "{md}");
    assert!(md.contains("No service levels are configured"), "{md}");
}

#[test]
fn a_guarded_tenant_delete_starts_the_downtime_and_its_plan_is_in_the_report() {
    a_guarded_tenant_delete_starts_the_downtime_and_its_plan_is_in_the_report_in(Mode::Stopped);
}

#[test]
fn a_guarded_tenant_delete_starts_the_downtime_and_its_plan_is_in_the_report_while_capture_runs() {
    a_guarded_tenant_delete_starts_the_downtime_and_its_plan_is_in_the_report_in(Mode::Running);
}

fn a_guarded_tenant_delete_starts_the_downtime_and_its_plan_is_in_the_report_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let t = sqlite_now(&db);
    let plan = work.path("delete.json");
    let plan_arg = plan.to_str().expect("path");
    lifeboat_ok(
        &config,
        &[
            "tenant",
            "delete",
            "7",
            "8",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    lifeboat_ok(
        &config,
        &["approve", plan_arg, "--key", &key_of(&config, "bob")],
    );
    at_clock(&config, START, &["apply", plan_arg, "--by", "carol"]);
    let incident = at_clock(
        &config,
        &after_start(600_000_000),
        &[
            "incident",
            "create",
            "--name",
            "Sites deleted by mistake",
            "--status",
            "identified",
            "--message",
            "Two sites were deleted by mistake.",
        ],
    )
    .trim()
    .to_string();
    let campaign = at_clock(
        &config,
        &after_start(900_000_000),
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--plan",
            plan_arg,
            "--at",
            &t,
        ],
    );
    // Restored an hour after the wave deleted them.
    at_clock(
        &config,
        &after_start(3_600_000_000),
        &["worker", "--campaign", campaign.trim(), "--until-done"],
    );
    let report = sla_json(&config, &incident, &[]);
    for tenant in ["7", "8"] {
        let l = line(&report, tenant);
        assert_eq!(l["down_from_source"], "tenant_deleted", "{l}");
        assert_eq!(l["down_from"], "2099-01-10T00:00:00.000000Z", "{l}");
        assert_eq!(l["downtime_minutes"], 60.0, "{l}");
        // Silver (the default tier): 60 of 44 640 minutes is below 99.9 (10%).
        assert_eq!(l["credit_percent"], 10.0, "{l}");
    }

    let md = lifeboat_ok(&config, &["report", "--incident", &incident]);
    let timeline =
        &md[md.find("## Timeline").expect("timeline")..md.find("## Numbers").expect("numbers")];
    let entries: Vec<&str> = timeline.lines().filter(|l| l.starts_with("- **")).collect();
    let position = |needle: &str| {
        entries
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {timeline}"))
    };
    let written = position("written and signed by alice: 2 IDs, 2 tenants measured");
    let approved = position("approved by bob");
    let applied = position("started by carol: 2 tenants in waves");
    // One tenant in the first wave, the other in the next; each site: itself and two
    // issues.
    let wave = position("Wave 1 of plan");
    assert!(
        entries[wave].contains("1 tenant, 3 rows changed (measured, as planned)"),
        "{timeline}"
    );
    assert!(
        entries[wave].starts_with("- **2099-01-10T00:00:00.000000Z**"),
        "{timeline}"
    );
    let second = position("Wave 2 of plan");
    assert!(
        entries[second].contains("1 tenant, 3 rows changed"),
        "{timeline}"
    );
    let done = position("finished: every wave applied");
    assert!(wave < second && second < done, "{timeline}");
    let missing = position("Tenants' data went missing (from the tenant deleted (guarded wave))");
    let opened = position("Public update (identified): \"Two sites were deleted by mistake.\"");
    let started = position("Campaign ");
    let last = position("Last tenant restored and verified: all 2 restored");
    assert!(
        written < approved && approved < applied && applied < opened,
        "{timeline}"
    );
    assert!(
        wave < opened && missing < opened && opened < started && started < last,
        "{timeline}"
    );
    assert!(
        entries[last].starts_with("- **2099-01-10T01:00:00.000000Z**"),
        "{timeline}"
    );
    assert!(
        md.contains("min 1 h 00 min, median 1 h 00 min, p95 1 h 00 min, max 1 h 00 min"),
        "{md}"
    );
    assert!(
        md.contains("First public word after the data went missing: 10 min 00 s."),
        "{md}"
    );
    background.finish();
}

#[test]
fn with_accept_ends_downtime_the_downtime_runs_until_the_admin_accepts() {
    with_accept_ends_downtime_the_downtime_runs_until_the_admin_accepts_in(Mode::Stopped);
}

#[test]
fn with_accept_ends_downtime_the_downtime_runs_until_the_admin_accepts_while_capture_runs() {
    with_accept_ends_downtime_the_downtime_runs_until_the_admin_accepts_in(Mode::Running);
}

fn with_accept_ends_downtime_the_downtime_runs_until_the_admin_accepts_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let text = std::fs::read_to_string(&config).expect("config");
    let accepting = text
        .replace("acceptance = \"skip\"", "acceptance = \"customer\"")
        .replace(
            "default_tier = \"silver\"",
            "default_tier = \"silver\"\naccept_ends_downtime = true",
        );
    std::fs::write(&config, &accepting).expect("config");
    let db = work.path("tracker.db");
    let t = sqlite_now(&db);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM sites WHERE id = 2")
        .expect("delete");
    drop(conn);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let incident = open_incident(&config);
    // Restored and verified after 10 minutes; still awaiting acceptance 20 minutes in.
    restore_at(&config, &work, &incident, &t, &[2], 600_000_000);
    let report = serde_json::from_str::<serde_json::Value>(&at_clock(
        &config,
        &after_start(1_200_000_000),
        &["sla", "report", "--incident", &incident, "--json"],
    ))
    .expect("json");
    let l = line(&report, "2");
    assert_eq!(l["down_until"], serde_json::Value::Null, "{l}");
    assert_eq!(l["downtime_minutes"], 20.0, "{l}");

    // The admin accepts 44.64 minutes in: exactly 99.9% up, no credit for gold.
    let campaign = l["campaign"].as_str().expect("campaign").to_string();
    let links: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &["campaign", "links", &campaign, "--json"],
    ))
    .expect("links");
    let link = links[0]["link"].as_str().expect("link");
    let token_path = link[link.find("/t/").expect("a private link")..].to_string();
    let (mut server, base) = serve_at(&config, Some(&after_start(2_678_400_000)));
    let (_, before) = http_get(&base, &format!("{token_path}/status.json"));
    let before: serde_json::Value = serde_json::from_str(&before).expect("json");
    assert_eq!(
        before["sla"],
        serde_json::Value::Null,
        "not shown while down: {before}"
    );
    let (code, _) = crate::campaign::http_post(&base, &format!("{token_path}/accept"), None, "");
    assert_eq!(code, 303);
    terminate(&mut server);
    let report = sla_json(&config, &incident, &[]);
    let l = line(&report, "2");
    assert_eq!(l["down_until"], "2099-01-10T00:44:38.400000Z", "{l}");
    assert!(
        (l["downtime_minutes"].as_f64().expect("minutes") - 44.64).abs() < 1e-9,
        "{l}"
    );
    assert_eq!(l["credit_percent"], 0.0, "{l}");

    // Without the policy, the same tenant was down until it was restored: 10 minutes.
    std::fs::write(
        &config,
        accepting.replace("accept_ends_downtime = true", ""),
    )
    .expect("config");
    let l = sla_json(&config, &incident, &[])["tenants"][0].clone();
    assert_eq!(l["down_until"], "2099-01-10T00:10:00.000000Z", "{l}");
    assert_eq!(l["downtime_minutes"], 10.0, "{l}");
    background.finish();
}

#[test]
fn template_updates_are_filled_with_the_campaigns_measured_numbers() {
    template_updates_are_filled_with_the_campaigns_measured_numbers_in(Mode::Stopped);
}

#[test]
fn template_updates_are_filled_with_the_campaigns_measured_numbers_while_capture_runs() {
    template_updates_are_filled_with_the_campaigns_measured_numbers_in(Mode::Running);
}

fn template_updates_are_filled_with_the_campaigns_measured_numbers_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let text = std::fs::read_to_string(&config).expect("config");
    let templates = r#"
[templates.progress]
status = "monitoring"
message = "{incident}: {tenants_restored} of {tenants} customers restored ({tenants_percent}%), {users_restored} of {users} users ({users_percent}%); {tenants_remaining} to go. Now: {now}. Data as of {restored_to}. {{ETA}}: {eta}."
"#;
    std::fs::write(&config, format!("{text}{templates}")).expect("config");
    let listed = lifeboat_ok(&config, &["incident", "templates"]);
    assert!(
        listed.starts_with("progress (monitoring): {incident}:"),
        "{listed}"
    );
    assert!(
        listed.contains("  {users_percent}  users restored, percent"),
        "{listed}"
    );

    let db = work.path("tracker.db");
    let t = sqlite_now(&db);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM sites WHERE id IN (2, 3, 4)")
        .expect("delete");
    drop(conn);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // Opened at the real time: its updates follow in order.
    let incident = lifeboat_ok(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Sites deleted",
            "--status",
            "identified",
            "--message",
            "We are restoring the deleted sites.",
        ],
    );
    let incident = incident.trim();
    let refused = |args: &[&str], wanted: &str| {
        let output = lifeboat(&config, args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(wanted),
            "{args:?}: {}",
            stderr(&output)
        );
    };
    refused(
        &["incident", "update", incident, "--template", "progress"],
        "has no campaign",
    );
    refused(
        &["incident", "update", incident, "--template", "nosuch"],
        "unknown template \"nosuch\"; templates: progress",
    );
    let file = work.path("tenants.txt");
    std::fs::write(&file, "2\n3\n4\n").expect("tenants");
    let campaign = lifeboat_ok(
        &config,
        &[
            "campaign",
            "start",
            "--incident",
            incident,
            "--tenants-from",
            file.to_str().expect("path"),
            "--at",
            &t,
        ],
    );
    let campaign = campaign.trim();
    let latest = |config: &Path| -> serde_json::Value {
        let incidents: serde_json::Value =
            serde_json::from_str(&lifeboat_ok(config, &["incident", "list", "--json"]))
                .expect("json");
        incidents[0]["updates"][0].clone()
    };
    lifeboat_ok(
        &config,
        &["incident", "update", incident, "--template", "progress"],
    );
    let restored_to = status_of(&config, campaign)["restored_to"]
        .as_str()
        .expect("restored to")
        .to_string();
    let update = latest(&config);
    assert_eq!(update["status"], "monitoring");
    assert_eq!(
        update["body"],
        format!(
            "Sites deleted: 0 of 3 customers restored (0%), 0 of 6 users (0%); 3 to go. \
             Now: 3 customers are queued for restoring. Data as of {restored_to}. {{ETA}}: \
             unknown."
        )
    );
    lifeboat_ok(&config, &["worker", "--until-done"]);
    lifeboat_ok(
        &config,
        &[
            "incident",
            "update",
            incident,
            "--template",
            "progress",
            "--campaign",
            campaign,
            "--status",
            "identified",
        ],
    );
    let update = latest(&config);
    assert_eq!(update["status"], "identified");
    assert!(
        update["body"].as_str().expect("body").starts_with(
            "Sites deleted: 3 of 3 customers restored (100%), 6 of 6 users (100%); 0 to go. \
             Now: every customer's data is restored and verified."
        ),
        "{update}"
    );
    background.finish();

    // A template naming an unknown field refuses the configuration.
    std::fs::write(
        &config,
        format!("{text}[templates.bad]\nmessage = \"{{tenants_done}} done\"\n"),
    )
    .expect("config");
    refused(
        &["incident", "templates"],
        "[templates.bad] message: unknown field {tenants_done}; fields: incident, tenants",
    );
}

fn status_of(config: &Path, id: &str) -> serde_json::Value {
    let out = lifeboat_ok(config, &["campaign", "status", id, "--json"]);
    serde_json::from_str::<serde_json::Value>(&out).expect("json")[0].clone()
}

#[test]
fn a_campaign_with_auto_progress_posts_its_numbers_at_each_quarter() {
    a_campaign_with_auto_progress_posts_its_numbers_at_each_quarter_in(Mode::Stopped);
}

#[test]
fn a_campaign_with_auto_progress_posts_its_numbers_at_each_quarter_while_capture_runs() {
    a_campaign_with_auto_progress_posts_its_numbers_at_each_quarter_in(Mode::Running);
}

fn a_campaign_with_auto_progress_posts_its_numbers_at_each_quarter_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let text = std::fs::read_to_string(&config).expect("config");
    let templates = r#"
[templates.quarterly]
message = "{tenants_restored} of {tenants} customers restored ({tenants_percent}%)."
"#;
    std::fs::write(&config, format!("{text}{templates}")).expect("config");
    let db = work.path("tracker.db");
    let t = sqlite_now(&db);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM sites WHERE id IN (2, 3, 4, 5)")
        .expect("delete");
    drop(conn);
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
            "--message",
            "We are restoring the deleted sites.",
        ],
    );
    let incident = incident.trim();
    let file = work.path("tenants.txt");
    std::fs::write(&file, "2\n3\n4\n5\n").expect("tenants");
    let tenants = file.to_str().expect("path");
    let start = |extra: &[&str]| {
        let mut args = vec![
            "campaign",
            "start",
            "--incident",
            incident,
            "--tenants-from",
            tenants,
            "--at",
            &t,
            "--batch-size",
            "1",
        ];
        args.extend_from_slice(extra);
        lifeboat(&config, &args)
    };
    let refused = start(&["--auto-progress", "nosuch"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("no [templates.nosuch] in the configuration"),
        "{}",
        stderr(&refused)
    );
    let started = start(&["--auto-progress", "quarterly"]);
    assert!(started.status.success(), "{}", stderr(&started));
    lifeboat_ok(&config, &["worker", "--until-done", "--name", "w1"]);
    let incidents: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    let mut bodies: Vec<&str> = incidents[0]["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .map(|u| u["body"].as_str().expect("body"))
        .collect();
    bodies.reverse();
    assert_eq!(
        bodies,
        [
            "We are restoring the deleted sites.",
            "1 of 4 customers restored (25%).",
            "2 of 4 customers restored (50%).",
            "3 of 4 customers restored (75%).",
            "4 of 4 customers restored (100%).",
        ]
    );
    for u in incidents[0]["updates"].as_array().expect("updates") {
        assert_eq!(u["status"], "identified", "{u}");
    }
    let audit: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["audit", "--json"])).expect("json");
    let by_lifeboat = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "incident-update" && e["actor"] == "lifeboat")
        .count();
    assert_eq!(by_lifeboat, 4);
    background.finish();
}

#[test]
fn auto_progress_also_posts_when_its_cadence_is_due() {
    auto_progress_also_posts_when_its_cadence_is_due_in(Mode::Stopped);
}

#[test]
fn auto_progress_also_posts_when_its_cadence_is_due_while_capture_runs() {
    auto_progress_also_posts_when_its_cadence_is_due_in(Mode::Running);
}

fn auto_progress_also_posts_when_its_cadence_is_due_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{text}[templates.p]\nmessage = \"{{tenants_restored}} of {{tenants}}\"\n"),
    )
    .expect("config");
    let db = work.path("tracker.db");
    let t = sqlite_now(&db);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM sites")
        .expect("delete");
    drop(conn);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let incident = open_incident(&config);
    let file = work.path("tenants.txt");
    std::fs::write(&file, "1\n2\n3\n4\n5\n6\n7\n8\n").expect("tenants");
    let campaign = at_clock(
        &config,
        START,
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--tenants-from",
            file.to_str().expect("path"),
            "--at",
            &t,
            "--batch-size",
            "1",
            "--auto-progress",
            "p",
            "--progress-every",
            "1",
        ],
    );
    // The worker's clock stands two minutes after the start: the cadence is due once (after
    // the first tenant), then only the quarters post.
    at_clock(
        &config,
        &after_start(120_000_000),
        &["worker", "--campaign", campaign.trim(), "--until-done"],
    );
    let incidents: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    let mut bodies: Vec<&str> = incidents[0]["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .map(|u| u["body"].as_str().expect("body"))
        .filter(|b| b.contains(" of 8"))
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["1 of 8", "2 of 8", "4 of 8", "6 of 8", "8 of 8"]);
    background.finish();
}

/// Without `--progress-every`, auto progress posts on the cadence `[status] update_every`
/// promises for the incident's impact (here one minute for every impact): the same posts
/// as with `--progress-every 1`.
#[test]
fn auto_progress_without_its_own_cadence_keeps_the_promised_one() {
    let work = Workdir::new();
    let config = setup(&work);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!(
            "{text}[templates.p]\nmessage = \"{{tenants_restored}} of {{tenants}}\"\n\
             [status]\nupdate_every = \"1m\"\n"
        ),
    )
    .expect("config");
    let db = work.path("tracker.db");
    let t = sqlite_now(&db);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM sites")
        .expect("delete");
    drop(conn);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let incident = open_incident(&config);
    let file = work.path("tenants.txt");
    std::fs::write(&file, "1\n2\n3\n4\n5\n6\n7\n8\n").expect("tenants");
    let campaign = at_clock(
        &config,
        START,
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--tenants-from",
            file.to_str().expect("path"),
            "--at",
            &t,
            "--batch-size",
            "1",
            "--auto-progress",
            "p",
        ],
    );
    let audit: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["audit", "--json"])).expect("json");
    let entry = audit
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "campaign-auto-progress")
        .expect("audited");
    assert_eq!(entry["details"]["every_minutes"], 1, "{entry}");
    at_clock(
        &config,
        &after_start(120_000_000),
        &["worker", "--campaign", campaign.trim(), "--until-done"],
    );
    let incidents: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    let mut bodies: Vec<&str> = incidents[0]["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .map(|u| u["body"].as_str().expect("body"))
        .filter(|b| b.contains(" of 8"))
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["1 of 8", "2 of 8", "4 of 8", "6 of 8", "8 of 8"]);
}
