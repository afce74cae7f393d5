//! Running Lifeboat as a service: logs as JSON lines, and a clean stop on SIGTERM for the
//! long-running commands (what systemd and container runtimes send).

use std::time::{Duration, Instant};

use crate::common::*;
use crate::fixtures::*;

fn identity_config(work: &Workdir) -> std::path::PathBuf {
    let identity = work.path("identity.db");
    setup_identity(&identity, 5);
    work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)))
}

#[test]
fn logs_are_json_lines_when_asked_and_an_unknown_format_is_refused() {
    let work = Workdir::new();
    let config = identity_config(&work);
    let output = lifeboat_command(&config, &["capture", "--until-caught-up"])
        .env("LIFEBOAT_LOG", "debug")
        .env("LIFEBOAT_LOG_FORMAT", "json")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines: Vec<&str> = std::str::from_utf8(&output.stderr)
        .expect("utf-8")
        .lines()
        .collect();
    assert!(!lines.is_empty(), "no log lines at debug level");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
    let output = lifeboat_command(&config, &["tenants"])
        .env("LIFEBOAT_LOG_FORMAT", "xml")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("LIFEBOAT_LOG_FORMAT"),
        "{}",
        stderr(&output)
    );
}

/// `capture`, `worker` and `serve` stop cleanly (exit 0) on SIGTERM.
#[test]
fn long_running_commands_stop_cleanly_on_sigterm() {
    let work = Workdir::new();
    let config = identity_config(&work);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    for args in [
        vec!["capture"],
        vec!["worker"],
        vec!["serve", "--listen", listen.as_str()],
    ] {
        let mut child = lifeboat_command(&config, &args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            child.try_wait().expect("wait").is_none(),
            "lifeboat {args:?} ended before SIGTERM"
        );
        let sent = Instant::now();
        terminate(&mut child);
        let status = child.wait().expect("status");
        assert_eq!(status.code(), Some(0), "lifeboat {args:?} after SIGTERM");
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "{args:?} took long to stop"
        );
    }
}
