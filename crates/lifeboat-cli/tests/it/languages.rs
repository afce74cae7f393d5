//! The status pages in the reader's language, as headless Chromium shows them: chosen by
//! `?lang=` and by the browser's Accept-Language, incident updates with their
//! translations (or the English text, marked), readable times; and the translations'
//! refusals.

use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;

use crate::campaign::{delete_sites, now, setup, start};
use crate::common::*;

/// Headless Chromium with `extra` arguments, then `url`: its standard output.
fn chromium(url: &str, profile: &Path, extra: &[String]) -> String {
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
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium: {}", stderr(&output));
    stdout(&output)
}

/// The page at `url` as Chromium renders it for a browser set to the languages
/// `accept_language` (a plain list: Chromium sends it with falling q-values), its DOM, and
/// a screenshot of it saved in the test's directory as `png`.
fn read_page(url: &str, accept_language: &str, work: &Workdir, png: &str) -> String {
    let profile = work.path(&format!("chromium-{png}"));
    let lang = format!("--accept-lang={accept_language}");
    let shot = work.path(png);
    chromium(
        url,
        &profile,
        &[
            lang.clone(),
            format!("--screenshot={}", shot.display()),
            "--window-size=1000,1800".to_string(),
        ],
    );
    let bytes = std::fs::read(&shot).expect("screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{png}: not a screenshot of a page ({} bytes)",
        bytes.len()
    );
    chromium(url, &profile, &[lang, "--dump-dom".to_string()])
}

/// RFC 3339 with microseconds, as stored.
fn has_raw_time(text: &str) -> bool {
    text.as_bytes()
        .windows(8)
        .any(|w| w[0] == b'.' && w[1..7].iter().all(u8::is_ascii_digit) && w[7] == b'Z')
}

#[test]
fn pages_in_german_and_japanese_by_query_and_by_the_browsers_language() {
    let work = Workdir::new();
    let config = setup(&work);
    let db = work.path("tracker.db");
    let t = now(&db);
    delete_sites(&db, &[2, 4]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let campaign = start(&config, &work, &[2, 4], &t, &[]);
    let incidents: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    let incident = incidents[0]["id"].as_str().expect("id").to_string();
    // An update translated by flag (German) and by file (Japanese).
    let file = work.path("messages.toml");
    std::fs::write(&file, "ja = \"削除されたサイトを復元しています。\"\n").expect("file");
    lifeboat_ok(
        &config,
        &[
            "incident",
            "update",
            &incident,
            "--status",
            "monitoring",
            "--message",
            "Every deleted site is being restored.",
            "--message-de",
            "Alle gelöschten Sites werden wiederhergestellt.",
            "--messages",
            file.to_str().expect("path"),
        ],
    );
    lifeboat_ok(
        &config,
        &["worker", "--campaign", &campaign, "--until-done"],
    );

    let mut server = lifeboat_command(&config, &["serve", "--listen", "127.0.0.1:0"])
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

    // German by query, whatever the browser asks for; Japanese by the browser's language.
    let de = read_page(
        &format!("{base}/?lang=de"),
        "en-US,en",
        &work,
        "de-by-query.png",
    );
    let de_header = read_page(&format!("{base}/"), "de-DE,de", &work, "de-by-header.png");
    let ja = read_page(&format!("{base}/"), "ja,en-US", &work, "ja-by-header.png");
    let ja_query = read_page(&format!("{base}/?lang=ja"), "de", &work, "ja-by-query.png");
    let en = read_page(&format!("{base}/"), "fr-FR,fr", &work, "en.png");
    for page in [&de, &de_header, &ja, &ja_query, &en] {
        assert!(!has_raw_time(page), "a raw time on the page: {page}");
    }
    for page in [&de, &de_header] {
        assert!(page.contains("<html lang=\"de\">"), "{page}");
        assert!(page.contains("Schwerer Dienstausfall"), "{page}");
        assert!(
            page.contains("2 von 2 Kunden wiederhergestellt (100%)"),
            "{page}"
        );
        // The drill's sites 2 and 4 have 2 and 4 issues: their "users".
        assert!(page.contains("6 von 6 Benutzern (100%)"), "{page}");
        assert!(
            page.contains("Alle gelöschten Sites werden wiederhergestellt."),
            "{page}"
        );
        assert!(
            page.contains(
                "We are restoring the deleted sites.</span> \
                 <span class=\"fallback\">(auf Englisch angezeigt)</span>"
            ),
            "{page}"
        );
        assert!(page.contains("Wird beobachtet"), "{page}");
        assert!(page.contains(" UTC</time>"), "{page}");
        // How long ago, in German: the update was posted moments before.
        assert!(
            page.contains("(gerade eben)") || page.contains("(vor "),
            "{page}"
        );
    }
    for page in [&ja, &ja_query] {
        assert!(page.contains("<html lang=\"ja\">"), "{page}");
        assert!(page.contains("重大なサービス障害"), "{page}");
        assert!(
            page.contains("2 件中 2 件のお客様を復元済み (100%)"),
            "{page}"
        );
        assert!(
            page.contains("削除されたサイトを復元しています。"),
            "{page}"
        );
        assert!(page.contains("（英語で表示）"), "{page}");
        assert!(page.contains("経過観察中"), "{page}");
    }
    assert!(en.contains("<html lang=\"en\">"), "{en}");
    assert!(en.contains("2 of 2 customers restored (100%)"), "{en}");
    assert!(en.contains("Every deleted site is being restored."), "{en}");
    assert!(!en.contains("shown in English"), "{en}");

    // A tenant's private page, in Japanese by the browser's language.
    let links: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &[
            "campaign",
            "links",
            &campaign,
            "--base-url",
            &base,
            "--json",
        ],
    ))
    .expect("links");
    let link = links[0]["link"].as_str().expect("link");
    let private = read_page(link, "ja", &work, "private-ja.png");
    assert!(
        private.contains("復元済み: ご確認をお待ちしています"),
        "{private}"
    );
    assert!(private.contains("復元したデータを承認する"), "{private}");
    assert!(!has_raw_time(&private), "{private}");

    // The subscribe and support forms, by the browser's language and by query.
    let subscribe = read_page(
        &format!("{base}/subscribe"),
        "ja",
        &work,
        "subscribe-ja.png",
    );
    assert!(subscribe.contains("<html lang=\"ja\">"), "{subscribe}");
    assert!(subscribe.contains("更新情報を購読する"), "{subscribe}");
    assert!(subscribe.contains("購読する</button>"), "{subscribe}");
    let support = read_page(
        &format!("{base}/support?lang=de"),
        "en-US,en",
        &work,
        "support-de.png",
    );
    assert!(support.contains("<html lang=\"de\">"), "{support}");
    assert!(support.contains("Support kontaktieren"), "{support}");
    assert!(support.contains("Firma (optional)"), "{support}");

    // The JSON keeps the English text and RFC 3339.
    let (code, summary) = http_get(&base, "/api/v2/incidents.json?lang=de");
    assert_eq!(code, 200);
    assert!(
        summary.contains("Every deleted site is being restored."),
        "{summary}"
    );
    assert!(!summary.contains("gelöschten"), "{summary}");

    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let status = server.wait().expect("server");
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn a_translation_into_an_unknown_language_changes_nothing() {
    let work = Workdir::new();
    let config = setup(&work);
    let incident = lifeboat_ok(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Slow pages",
            "--message",
            "Pages are slow.",
            "--message-de",
            "Seiten sind langsam.",
        ],
    )
    .trim()
    .to_string();
    let before = lifeboat_ok(&config, &["incident", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&before).expect("json");
    assert_eq!(
        listed[0]["updates"][0]["translations"]["de"],
        "Seiten sind langsam."
    );
    let refused = |args: &[&str], why: &str| {
        let output = lifeboat(&config, args);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains(why), "{}", stderr(&output));
    };
    let fr = work.path("fr.json");
    std::fs::write(&fr, r#"{"fr": "Les pages sont lentes."}"#).expect("file");
    let update = |extra: &[&str]| {
        let mut args = vec![
            "incident",
            "update",
            incident.as_str(),
            "--status",
            "identified",
            "--message",
            "Found it.",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let fr_path = fr.to_str().expect("path").to_string();
    for (extra, why) in [
        (
            vec!["--messages", fr_path.as_str()],
            "translations may be in de, ja",
        ),
        (
            vec!["--message-ja", " "],
            "translation of the message is empty",
        ),
    ] {
        let args = update(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, why);
    }
    let both = work.path("both.toml");
    std::fs::write(&both, "de = \"Gefunden.\"\n").expect("file");
    let args = update(&[
        "--messages",
        both.to_str().expect("path"),
        "--message-de",
        "Da.",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, "two translations into de");
    let broken = work.path("broken.toml");
    std::fs::write(&broken, "de = [1, 2]\n").expect("file");
    let args = update(&["--messages", broken.to_str().expect("path")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, "not a table of language code = text");
    assert_eq!(
        lifeboat_ok(&config, &["incident", "list", "--json"]),
        before,
        "a refused update wrote something"
    );
}
