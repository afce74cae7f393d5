//! Shared fixtures: real PostgreSQL databases on the test cluster (scripts/test-services.sh),
//! real SQLite files, the real `lifeboat` binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn pg_base_url() -> String {
    std::env::var("LIFEBOAT_TEST_PG_URL").expect(
        "LIFEBOAT_TEST_PG_URL is not set: run the tests with scripts/test, which starts \
         PostgreSQL and the S3 server",
    )
}

/// The URL of database `name` on the test cluster.
pub fn pg_url(name: &str) -> String {
    let base = pg_base_url();
    let (server, _) = base.rsplit_once('/').expect("URL with a database");
    format!("{server}/{name}")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A fresh database on the test cluster; returns its URL.
pub async fn create_database(prefix: &str) -> String {
    let name = unique(prefix);
    let admin = pg_connect(&pg_base_url()).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    pg_url(&name)
}

/// Drop what capture left on the server for a database (its slot holds WAL).
pub async fn drop_slots(url: &str) {
    let client = pg_connect(url).await;
    let _ = client
        .batch_execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE database = current_database() AND NOT active",
        )
        .await;
}

pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn vault_url(&self) -> String {
        format!("file://{}", self.path("vault").display())
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.path("lifeboat.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Write the config and create its vault (`lifeboat init`), as a user does before the
    /// first capture; a vault that is already there is kept.
    pub fn init_config(&self, text: &str) -> PathBuf {
        let path = self.write_config(text);
        let output = lifeboat(&path, &["init"]);
        assert!(
            output.status.success() || stderr(&output).contains("a vault already exists"),
            "lifeboat init failed: {}",
            stderr(&output)
        );
        path
    }
}

pub fn lifeboat_command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("LIFEBOAT_FAILPOINT")
        .env_remove("LIFEBOAT_PAUSE")
        .stdin(Stdio::null());
    command
}

pub fn lifeboat(config: &Path, args: &[&str]) -> Output {
    lifeboat_command(config, args)
        .output()
        .expect("run lifeboat")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Run and require exit code 0.
pub fn lifeboat_ok(config: &Path, args: &[&str]) -> String {
    let output = lifeboat(config, args);
    assert!(
        output.status.success(),
        "lifeboat {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Start `lifeboat capture` running continuously.
pub fn spawn_capture(config: &Path, failpoint: Option<&str>) -> Child {
    let mut command = lifeboat_command(config, &["capture"]);
    if let Some(failpoint) = failpoint {
        command.env("LIFEBOAT_FAILPOINT", failpoint);
    }
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn capture")
}

/// SIGTERM and wait: a clean stop.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("capture did not stop within 30 s of SIGTERM");
}

/// A small deterministic random generator (splitmix64), so that failing runs replay.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Tenants 1..=n as strings, for `--tenant` arguments.
pub fn tenant_args(tenants: impl IntoIterator<Item = i64>) -> Vec<String> {
    tenants
        .into_iter()
        .flat_map(|t| ["--tenant".to_string(), t.to_string()])
        .collect()
}

pub fn verify_args(tenants: impl IntoIterator<Item = i64>) -> Vec<String> {
    let mut args = vec!["verify".to_string()];
    args.extend(tenant_args(tenants));
    args
}

pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The people of the guard, with ed25519 keys made by `ssh-keygen` in the workdir: alice
/// writes plans and approves others', bob and carol approve, mallory is declared nowhere.
pub struct People {
    dir: PathBuf,
}

pub const PEOPLE: [&str; 4] = ["alice", "bob", "carol", "mallory"];

impl People {
    /// The keys in `work` (made once; the same keys when called again).
    pub fn new(work: &Workdir) -> People {
        let dir = work.path("keys");
        std::fs::create_dir_all(&dir).expect("keys dir");
        let people = People { dir };
        for name in PEOPLE {
            if people.dir.join(name).exists() {
                continue;
            }
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("{name}@example.net"))
                .arg("-f")
                .arg(people.dir.join(name))
                .stdin(Stdio::null())
                .status()
                .expect("ssh-keygen (openssh-client) is installed");
            assert!(status.success(), "ssh-keygen for {name}");
        }
        people
    }

    /// The private key file of `name`, for `--key`.
    pub fn key(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The public key line of `name`.
    pub fn public(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.pub")))
            .expect("public key")
            .trim()
            .to_string()
    }

    /// `[authors]` and `[approvers]` for a configuration.
    pub fn toml(&self) -> String {
        format!(
            "[authors]\nalice = \"{a}\"\n[approvers]\nalice = \"{a}\"\nbob = \"{b}\"\n\
             carol = \"{c}\"\n",
            a = self.public("alice"),
            b = self.public("bob"),
            c = self.public("carol"),
        )
    }

    /// `ssh-keygen -Y sign` of `message` with `name`'s key in `namespace`: the armored
    /// signature.
    pub fn ssh_keygen_sign(&self, name: &str, namespace: &str, message: &str) -> String {
        let mut child = Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", namespace, "-f"])
            .arg(self.dir.join(name))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh-keygen");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(message.as_bytes()).expect("write message");
        }
        let output = child.wait_with_output().expect("ssh-keygen -Y sign");
        assert!(
            output.status.success(),
            "ssh-keygen -Y sign: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }
}

/// The private key of `name` made by `People` beside the configuration at `config`.
pub fn key_of(config: &Path, name: &str) -> String {
    config
        .parent()
        .expect("config dir")
        .join("keys")
        .join(name)
        .display()
        .to_string()
}

/// `GET base + path` over one HTTP/1.1 connection: the status code and the body.
pub fn http_get(base: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("{host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    (status, body.to_string())
}

/// The value of the sample `series` (name and labels, exactly as exposed) in `text`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Whether `lifeboat capture` leads the sources in the background while a test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Stopped,
    Running,
}

/// A continuous `lifeboat capture` for the length of a test (`Mode::Running`), or none.
pub struct Background {
    capture: Option<crate::leader::Capture>,
    config: PathBuf,
    source: String,
}

impl Background {
    /// Start capture in `mode` and, running, wait until it leads `source`.
    pub fn start(mode: Mode, config: &Path, work: &Workdir, source: &str) -> Background {
        let capture = (mode == Mode::Running).then(|| {
            let capture =
                crate::leader::Capture::spawn(config, work.path("background-capture.log"), None);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(capture.wait_for(&format!("source {source}: leading capture")));
            capture
        });
        Background {
            capture,
            config: config.to_path_buf(),
            source: source.to_string(),
        }
    }

    /// Running: store the source up to now, stop capture with SIGTERM, and check that it
    /// led alone all along, that `lifeboat check` passes and that the vault holds no
    /// position twice. Stopped: nothing.
    pub fn finish(mut self) {
        let Some(mut capture) = self.capture.take() else {
            return;
        };
        lifeboat_ok(&self.config, &["capture", "--until-caught-up"]);
        terminate(&mut capture.child);
        let log = capture.log();
        assert_eq!(
            log.matches(&format!("source {}: leading capture", self.source))
                .count(),
            1,
            "one capture led all along:\n{log}"
        );
        assert!(!log.contains("lost the capture lease"), "{log}");
        lifeboat_ok(&self.config, &["check"]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(crate::vault_checks::assert_no_duplicates(
            &self.config,
            &self.source,
        ));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(capture) = &mut self.capture {
            let _ = capture.child.kill();
            let _ = capture.child.wait();
        }
    }
}
