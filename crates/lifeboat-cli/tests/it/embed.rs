//! `/embed/banner.js` in a real browser: a page served from another origin includes the
//! script with one tag; headless Chromium shows the open incident's name, status and link,
//! and nothing once the incident is resolved.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A product page on its own port (another origin) that includes the banner script.
fn serve_host_page(script_src: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let page = format!(
                "<!doctype html><html><head><title>Forum</title></head><body>\
                 <main id=\"forum\">Community forum</main>\
                 <script src=\"{script_src}\" async></script></body></html>"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    format!("http://{address}/")
}

/// The DOM of `url` once its scripts ran (virtual time lets the fetch finish).
fn rendered(url: &str, profile: &Path) -> String {
    let chromium = std::env::var("LIFEBOAT_TEST_CHROMIUM").expect(
        "LIFEBOAT_TEST_CHROMIUM is not set: run the tests with scripts/test, which installs \
         Chromium",
    );
    let output = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium: {}", stderr(&output));
    stdout(&output)
}

/// Load `url` until the banner script has marked its tag with `state`.
fn rendered_until(url: &str, profile: &Path, state: &str) -> String {
    let needle = format!("data-lifeboat-banner=\"{state}\"");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dom = rendered(url, profile);
        if dom.contains(&needle) {
            return dom;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never showed {needle:?}; last page:\n{dom}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn start_server(config: &Path) -> (Child, String) {
    let mut server = lifeboat_command(config, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut first = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    let base = first
        .trim()
        .strip_prefix("serving the status page on ")
        .unwrap_or_else(|| panic!("{first}"))
        .trim_end_matches('/')
        .to_string();
    (server, base)
}

#[test]
fn the_banner_on_another_origin_shows_the_open_incident_and_nothing_when_operational() {
    let work = Workdir::new();
    let db = work.path("tracker.db");
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute_batch("CREATE TABLE sites (id INTEGER PRIMARY KEY, name TEXT);")
        .expect("schema");
    let config = work.init_config(&format!(
        "[vault]\nurl = \"{}\"\n\n[sources.tracker]\nurl = \"sqlite://{}\"\n\
         tenant_column = \"id\"\n\n[server]\npublic_url = \"https://status.example.com\"\n",
        work.vault_url(),
        db.display()
    ));
    let (mut server, base) = start_server(&config);
    let host = serve_host_page(format!("{base}/embed/banner.js"));
    assert_ne!(host.trim_end_matches('/'), base, "two origins");
    let profile = work.path("chromium-profile");

    // All operational: the script ran and shows nothing.
    let dom = rendered_until(&host, &profile, "none");
    assert!(dom.contains("Community forum"), "{dom}");
    assert!(!dom.contains("lifeboat-banner\""), "{dom}");

    let id = lifeboat_ok(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Sites deleted by a cleanup <script>",
            "--status",
            "identified",
            "--message",
            "We are restoring them.",
        ],
    )
    .trim()
    .to_string();
    let dom = rendered_until(&host, &profile, "shown");
    assert!(dom.contains("id=\"lifeboat-banner\""), "{dom}");
    // The name is shown as text, never as markup.
    assert!(
        dom.contains("Sites deleted by a cleanup &lt;script&gt;"),
        "{dom}"
    );
    assert!(dom.contains("Identified"), "{dom}");
    assert!(
        dom.contains(&format!(
            "href=\"https://status.example.com/#incident-{id}\""
        )),
        "{dom}"
    );
    assert!(!dom.contains("We are restoring them."), "{dom}");

    lifeboat_ok(
        &config,
        &[
            "incident",
            "resolve",
            &id,
            "--message",
            "All sites are back.",
        ],
    );
    let dom = rendered_until(&host, &profile, "none");
    assert!(!dom.contains("id=\"lifeboat-banner\""), "{dom}");
    assert!(dom.contains("Community forum"), "{dom}");

    let _ = server.kill();
    let mut rest = String::new();
    if let Some(mut err) = server.stderr.take() {
        let _ = err.read_to_string(&mut rest);
    }
    let _ = server.wait();
}
