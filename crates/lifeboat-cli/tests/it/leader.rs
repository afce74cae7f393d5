//! One capture per source: two `lifeboat capture` processes of one source, one leads and
//! the other stands by; the standby takes over when the leader is killed; a leader whose
//! lease is taken stops writing; `lifeboat info` lists the leader and the standbys, and
//! the last fault capture met.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fixtures::*;
use crate::vault_checks;

const TENANTS: i64 = 6;
/// The lease time of these tests' configurations.
const LEASE_SECONDS: u64 = 3;

fn sites() -> Vec<i64> {
    (1..=TENANTS).map(site_id).collect()
}

/// The fixtures' configuration with a short lease.
fn short_lease(text: String) -> String {
    text.replace(
        "[capture]\n",
        &format!("[capture]\nlease_seconds = {LEASE_SECONDS}\n"),
    )
}

/// A running `lifeboat capture` whose standard error goes to a file, read as it grows.
pub struct Capture {
    pub child: Child,
    log: PathBuf,
}

impl Capture {
    pub fn spawn(config: &Path, log: PathBuf, pause: Option<&str>) -> Capture {
        let mut command = lifeboat_command(config, &["capture"]);
        if let Some(pause) = pause {
            command.env("LIFEBOAT_PAUSE", pause);
        }
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn capture");
        Capture { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until its log holds `needle` (a minute at most, however loaded the machine).
    pub async fn wait_for(&self, needle: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.log().contains(needle) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

/// Every object name in the source's part of the vault.
fn objects(work: &Workdir, source: &str) -> Vec<String> {
    let root = work.path("vault").join("sources").join(source);
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Capture caught up, every tenant verified, no position stored twice, `check` clean.
async fn assert_whole(config: &Path, source: &str) {
    let config_owned = config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        lifeboat_ok(&config_owned, &["capture", "--until-caught-up"]);
        let out = lifeboat_ok(&config_owned, &as_strs(&verify_args(sites())));
        assert!(out.starts_with("ok:"), "{out}");
        lifeboat_ok(&config_owned, &["check"]);
    })
    .await
    .expect("final checks");
    let stored = vault_checks::assert_no_duplicates(config, source).await;
    assert!(stored > 0, "nothing captured");
}

/// Two captures of one source: one leads, the other stands by naming it; the leader is
/// killed while writers run; the standby takes over within the lease time and resumes
/// from the vault's head: nothing lost, nothing stored twice.
async fn standby_takes_over(work: &Workdir, config: &Path, source: &str, write: Writer) {
    lifeboat_ok(config, &["capture", "--until-caught-up"]);
    let mut first = Capture::spawn(config, work.path("first.log"), None);
    first
        .wait_for(&format!("source {source}: leading capture"))
        .await;
    let second = Capture::spawn(config, work.path("second.log"), None);
    let standing = second
        .wait_for(&format!("source {source}: standing by"))
        .await;
    let log = second.log();
    assert!(
        log.contains(&format!(":{} (epoch", first.pid())),
        "the standby names the leader's host and pid: {log}"
    );
    assert!(log.contains("whose lease expires at 20"), "{log}");
    assert_eq!(
        log.matches("standing by").count(),
        1,
        "one line while standing by: {log}"
    );

    // Writers run across the kill and the takeover.
    let writers = tokio::spawn(write(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !second.log().contains("leading capture"),
        "only one leads: {}",
        second.log()
    );
    let before = Instant::now();
    first.kill();
    let took_over = second
        .wait_for(&format!("source {source}: leading capture"))
        .await;
    let takeover = took_over - before;
    eprintln!(
        "standby took over {source} {} ms after the kill",
        takeover.as_millis()
    );
    assert!(
        takeover < Duration::from_secs(LEASE_SECONDS + 3),
        "took over after {takeover:?}"
    );
    assert!(standing < before);
    writers.await.expect("writers");
    let mut second = second;
    terminate(&mut second.child);
    assert_whole(config, source).await;
}

type Writer =
    Box<dyn FnOnce(Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_standby_takes_over_from_a_killed_leader_losing_and_duplicating_nothing() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&short_lease(config_text(
        &work.vault_url(),
        None,
        None,
        Some(&identity),
    )));
    let path = identity.clone();
    let write: Writer = Box::new(move |duration| {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || write_identity(&path, TENANTS, 7, duration))
                .await
                .expect("writer");
        })
    });
    standby_takes_over(&work, &config, "identity", write).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_standby_takes_over_from_a_killed_leader_losing_and_duplicating_nothing() {
    let work = Workdir::new();
    let tracker = create_database("leader").await;
    setup_tracker(&tracker, TENANTS).await;
    let config = work.init_config(&short_lease(config_text(
        &work.vault_url(),
        Some(&tracker),
        None,
        None,
    )));
    let url = tracker.clone();
    let write: Writer = Box::new(move |duration| {
        Box::pin(async move {
            write_tracker(&url, TENANTS, 8, duration).await;
        })
    });
    standby_takes_over(&work, &config, "tracker", write).await;
    drop_slots(&tracker).await;
}

/// An SQLite source captured once under a short lease, a `lifeboat capture` leading it
/// (epoch 2), and a writer on its tenants for `writing`, under way.
async fn leading_with_writers(
    work: &Workdir,
    writing: Duration,
) -> (PathBuf, Capture, std::thread::JoinHandle<u64>) {
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&short_lease(config_text(
        &work.vault_url(),
        None,
        None,
        Some(&identity),
    )));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let leader = Capture::spawn(&config, work.path("leader.log"), None);
    leader
        .wait_for("source identity: leading capture (epoch 2")
        .await;
    let writers = std::thread::spawn(move || write_identity(&identity, TENANTS, 9, writing));
    tokio::time::sleep(Duration::from_millis(800)).await;
    (config, leader, writers)
}

/// The lease row taken in the control store (as a new leader's grant would): the leader's
/// next write is refused, it stops writing and stands by, naming the new holder; nothing
/// reaches the vault while it does not lead. Given back, it leads again and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_stops_writing() {
    let work = Workdir::new();
    let (config, mut leader, writers) = leading_with_writers(&work, Duration::from_secs(6)).await;

    let control = rusqlite::Connection::open(work.path("lifeboat-control.db")).expect("control");
    control
        .busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    let far = lifeboat_core::time::now_us() + 600_000_000;
    control
        .execute(
            "UPDATE capture_leases SET holder = 'elsewhere:1', epoch = epoch + 1, \
             expires_at_us = ?1 WHERE source = 'identity'",
            [far],
        )
        .expect("take the lease");
    // A write that passed its check before the row changed may still land just after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = objects(&work, "identity");
    leader
        .wait_for("source identity: lost the capture lease (epoch 2); stopped writing")
        .await;
    leader
        .wait_for("source identity: standing by: capture is led by elsewhere:1 (epoch 3)")
        .await;
    // Writers keep committing; the old leader writes nothing more.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        objects(&work, "identity"),
        taken,
        "written after the lease was taken"
    );
    let log = leader.log();
    assert!(!log.contains("error"), "{log}");

    // The new holder goes away (its lease ends): the old leader leads again, epoch 4.
    control
        .execute(
            "UPDATE capture_leases SET expires_at_us = 0 WHERE source = 'identity'",
            [],
        )
        .expect("end the lease");
    leader
        .wait_for("source identity: leading capture (epoch 4")
        .await;
    writers.join().expect("writers");
    terminate(&mut leader.child);
    assert_whole(&config, "identity").await;
}

/// The lease row of `source` in the test's SQLite control store: (epoch, granted at µs).
fn lease_row(work: &Workdir, source: &str) -> Option<(i64, i64)> {
    let control = rusqlite::Connection::open(work.path("lifeboat-control.db")).ok()?;
    control.busy_timeout(Duration::from_secs(30)).ok()?;
    control
        .query_row(
            "SELECT epoch, granted_at_us FROM capture_leases WHERE source = ?1",
            [source],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()
}

/// Every object of the source's part of the vault with when it was written (µs).
fn written_at(work: &Workdir, source: &str) -> Vec<(String, i64)> {
    objects(work, source)
        .into_iter()
        .map(|name| {
            let modified = std::fs::metadata(&name)
                .and_then(|m| m.modified())
                .expect("mtime");
            let us = modified
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_micros() as i64;
            (name, us)
        })
        .collect()
}

/// A leader that cannot renew its lease (its renewal held at a pause) stops writing two
/// thirds into the lease; the lease runs out a third later and only then is it granted
/// again (to the standby, or to the old leader standing by again): while writers commit
/// all along, the vault receives nothing between the old leader's deadline and the next
/// grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_writing_before_the_lease_is_granted_again() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&short_lease(config_text(
        &work.vault_url(),
        None,
        None,
        Some(&identity),
    )));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let pause = work.path("renew.pause");
    let pause_spec = format!("capture.lease-renew:{}", pause.display());
    let mut leader = Capture::spawn(&config, work.path("leader.log"), Some(&pause_spec));
    leader
        .wait_for("source identity: leading capture (epoch 2")
        .await;
    let path = identity.clone();
    let writers =
        std::thread::spawn(move || write_identity(&path, TENANTS, 10, Duration::from_secs(6)));
    let (epoch, granted) = lease_row(&work, "identity").expect("lease");
    assert_eq!(epoch, 2);
    let standby = Capture::spawn(&config, work.path("standby.log"), None);
    standby.wait_for("source identity: standing by").await;

    leader
        .wait_for("source identity: lost the capture lease (epoch 2); stopped writing")
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let granted_again = loop {
        match lease_row(&work, "identity") {
            Some((epoch, at)) if epoch >= 3 => break at,
            _ => assert!(Instant::now() < deadline, "never granted again"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    std::fs::write(&pause, "").expect("release the pause");
    let lease_us = LEASE_SECONDS as i64 * 1_000_000;
    assert!(
        granted_again >= granted + lease_us,
        "granted again before it ran out"
    );
    // The old leader's last moment to start a write, and a little for one to finish.
    let stop = granted + lease_us * 2 / 3 + 100_000;
    let objects = written_at(&work, "identity");
    let during: Vec<&(String, i64)> = objects
        .iter()
        .filter(|(_, at)| *at > granted && *at < stop)
        .collect();
    assert!(!during.is_empty(), "the leader wrote while it led");
    let fenced: Vec<&(String, i64)> = objects
        .iter()
        .filter(|(_, at)| *at >= stop && *at < granted_again)
        .collect();
    assert!(
        fenced.is_empty(),
        "written between the old leader's deadline ({stop}) and the next grant \
         ({granted_again}): {fenced:?}"
    );
    eprintln!(
        "nothing written for {} ms before the lease was granted again",
        (granted_again - stop) / 1000
    );
    writers.join().expect("writers");
    let mut standby = standby;
    terminate(&mut standby.child);
    terminate(&mut leader.child);
    assert_whole(&config, "identity").await;
}

/// A catch-up (`--until-caught-up`, and what apply, undo and undelete run) while another
/// capture leads the source waits for that capture instead of capturing alongside it. A
/// leader that stores nothing in time makes it fail after `[capture] wait_seconds` with one
/// line naming the leader and how far behind it is, changing nothing; a leader that dies
/// while a catch-up waits is taken over by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_waits_for_the_leader_and_gives_up_naming_it() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let text = short_lease(config_text(&work.vault_url(), None, None, Some(&identity)));
    let config = work.init_config(&text);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let mut leader = Capture::spawn(&config, work.path("leader.log"), None);
    leader.wait_for("source identity: leading capture").await;
    let write = |seed: u64| {
        let path = identity.clone();
        tokio::task::spawn_blocking(move || {
            write_identity(&path, TENANTS, seed, Duration::from_millis(200))
        })
    };
    write(3).await.expect("writer");
    let config_owned = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        lifeboat_ok(&config_owned, &["capture", "--until-caught-up"])
    })
    .await
    .expect("catch-up");
    assert!(
        out.contains("identity: 0 transactions"),
        "it captured nothing: {out}"
    );
    terminate(&mut leader.child);
    let log = leader.log();
    assert_eq!(log.matches("leading capture").count(), 1, "{log}");

    // A leader that holds what it reads for a minute before writing it, under a long
    // lease: only the death of its process ends the lease early.
    let slow = |extra: &str| {
        text.replace(
            &format!("[capture]\nlease_seconds = {LEASE_SECONDS}\n"),
            &format!("[capture]\nlease_seconds = 120\n{extra}"),
        )
        .replace("flush_interval_ms = 100\n", "flush_interval_ms = 60000\n")
    };
    let patient = work.path("patient.toml");
    std::fs::write(&patient, slow("")).expect("config");
    let impatient = work.path("impatient.toml");
    std::fs::write(&impatient, slow("wait_seconds = 1\n")).expect("config");
    let mut leader = Capture::spawn(&patient, work.path("slow.log"), None);
    leader.wait_for("source identity: leading capture").await;
    write(4).await.expect("writer");
    let before = objects(&work, "identity");
    let output = lifeboat(&impatient, &["capture", "--until-caught-up"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    let error: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(error.len(), 1, "one line: {err}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert!(
        error[0].contains(&format!(
            "source identity: the running capture (leader {}:{}) did not store it up to ",
            host.trim(),
            leader.pid()
        )) && error[0].contains(" changes behind, the vault holds it up to "),
        "{err}"
    );
    assert!(err.contains("waiting for capture (leader "), "{err}");
    assert_eq!(
        objects(&work, "identity"),
        before,
        "the catch-up wrote nothing"
    );

    // The leader dies while a catch-up waits for it: the catch-up takes the lease over
    // and captures by itself.
    let mut waiting = lifeboat_command(&patient, &["capture", "--until-caught-up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while Instant::now() < started + Duration::from_millis(800) {
        if waiting.try_wait().expect("wait").is_some() {
            let output = waiting.wait_with_output().expect("output");
            panic!("it waits: {}", stderr(&output));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    leader.kill();
    let output = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .expect("join")
        .expect("catch-up");
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("waiting for capture (leader "), "{err}");
    assert!(
        err.contains("source identity: leading capture (epoch"),
        "{err}"
    );
    assert_whole(&config, "identity").await;
}

/// A capture of several sources leads those whose lease it gets and stands by for the
/// others: with `--source identity` leading identity elsewhere, a capture of every source
/// leads tracker and stands by for identity, and leads both once the other is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_of_several_sources_leads_some_and_stands_by_for_the_others() {
    let work = Workdir::new();
    let tracker = create_database("several").await;
    setup_tracker(&tracker, TENANTS).await;
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&short_lease(config_text(
        &work.vault_url(),
        Some(&tracker),
        None,
        Some(&identity),
    )));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let file = std::fs::File::create(work.path("one.log")).expect("log");
    let mut one = Capture {
        child: lifeboat_command(&config, &["capture", "--source", "identity"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn"),
        log: work.path("one.log"),
    };
    one.wait_for("source identity: leading capture").await;
    let all = Capture::spawn(&config, work.path("all.log"), None);
    all.wait_for("source tracker: leading capture").await;
    all.wait_for(&format!(
        "source identity: standing by: capture is led by {}",
        format_args!(
            "{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .expect("hostname")
                .trim(),
            one.pid()
        )
    ))
    .await;
    assert!(
        !all.log().contains("source identity: leading"),
        "{}",
        all.log()
    );
    let path = identity.clone();
    let writers =
        std::thread::spawn(move || write_identity(&path, TENANTS, 11, Duration::from_secs(2)));
    write_tracker(&tracker, TENANTS, 11, Duration::from_secs(2)).await;
    one.kill();
    all.wait_for("source identity: leading capture").await;
    writers.join().expect("writers");
    let mut all = all;
    terminate(&mut all.child);
    let config_owned = config.clone();
    tokio::task::spawn_blocking(move || {
        lifeboat_ok(&config_owned, &["capture", "--until-caught-up"]);
        let out = lifeboat_ok(&config_owned, &as_strs(&verify_args(sites())));
        assert!(out.starts_with("ok:"), "{out}");
    })
    .await
    .expect("final checks");
    vault_checks::assert_no_duplicates(&config, "identity").await;
    vault_checks::assert_no_duplicates(&config, "tracker").await;
    drop_slots(&tracker).await;
}

/// The control store locked for longer than its own wait (30 s) while writers run: the
/// leader, unable to renew, stops writing; it waits the outage out standing by, saying so
/// once, leads again once the store answers, and nothing is lost or stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_store_outage_is_waited_out_and_loses_nothing() {
    let work = Workdir::new();
    let (config, mut leader, writers) = leading_with_writers(&work, Duration::from_secs(8)).await;

    let control = rusqlite::Connection::open(work.path("lifeboat-control.db")).expect("control");
    control.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    leader
        .wait_for("source identity: lost the capture lease (epoch 2); stopped writing")
        .await;
    leader
        .wait_for("source identity: the control store does not answer")
        .await;
    control.execute_batch("COMMIT").expect("unlock");
    leader
        .wait_for("source identity: the control store answers again")
        .await;
    leader
        .wait_for("source identity: leading capture (epoch 3")
        .await;
    writers.join().expect("writers");
    let log = leader.log();
    assert_eq!(
        log.matches("the control store does not answer").count(),
        1,
        "said once per outage: {log}"
    );
    terminate(&mut leader.child);
    assert_whole(&config, "identity").await;
}

/// `lifeboat info --json`'s entry for `source`.
fn info_of(config: &Path, source: &str) -> serde_json::Value {
    let out = lifeboat_ok(config, &["info", "--json", "--source", source]);
    let all: serde_json::Value = serde_json::from_str(&out).expect("info json");
    all["sources"][0].clone()
}

fn holder_of(capture: &Capture) -> String {
    format!(
        "{}:{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("hostname")
            .trim(),
        capture.pid()
    )
}

fn standby_holders(info: &serde_json::Value) -> Vec<String> {
    info["standbys"]
        .as_array()
        .expect("standbys")
        .iter()
        .map(|s| s["holder"].as_str().expect("holder").to_string())
        .collect()
}

/// `info` once its standbys are `expected` (a minute at most); returns it and how long that
/// took.
async fn info_when_standbys(
    config: &Path,
    source: &str,
    expected: &[String],
) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    loop {
        let info = info_of(config, source);
        if standby_holders(&info) == expected {
            return (info, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "standbys never {expected:?}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two captures of the SQLite source `identity` under `config`: `info` lists the leader
/// and the standby by `host:pid`; a standby killed with SIGKILL is still listed until its
/// heartbeat is twice the lease time old, then not; one that takes over is listed as the
/// leader and no longer as a standby; one stopped cleanly is gone at once.
async fn info_lists_the_leader_and_its_standbys(work: &Workdir, config: &Path) {
    lifeboat_ok(config, &["capture", "--until-caught-up"]);
    let mut leader = Capture::spawn(config, work.path("leader.log"), None);
    leader.wait_for("source identity: leading capture").await;
    let mut standby = Capture::spawn(config, work.path("standby.log"), None);
    standby.wait_for("source identity: standing by").await;
    let info = info_of(config, "identity");
    assert_eq!(
        info["lease"]["holder"],
        holder_of(&leader).as_str(),
        "{info}"
    );
    assert_eq!(info["lease"]["live"], true, "{info}");
    assert_eq!(standby_holders(&info), [holder_of(&standby)], "{info}");
    let listed = &info["standbys"][0];
    assert!(
        listed["since"].as_str().expect("since")
            <= listed["heartbeat_at"].as_str().expect("heartbeat")
    );
    let text = lifeboat_ok(config, &["info", "--source", "identity"]);
    assert!(
        text.contains(&format!(
            "  standby          {} (since 20",
            holder_of(&standby)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("  capture lease    {} (epoch", holder_of(&leader))),
        "{text}"
    );

    // Killed: it cannot say it left; it is listed until its heartbeat is stale.
    let killed = holder_of(&standby);
    standby.kill();
    let killed_at = Instant::now();
    assert_eq!(standby_holders(&info_of(config, "identity")), [killed]);
    let (_, _) = info_when_standbys(config, "identity", &[]).await;
    let gone_after = killed_at.elapsed();
    eprintln!(
        "a killed standby left info {} ms after the kill",
        gone_after.as_millis()
    );
    let stale = Duration::from_secs(2 * LEASE_SECONDS);
    assert!(
        gone_after > stale - Duration::from_secs(LEASE_SECONDS) / 3 - Duration::from_secs(1),
        "gone after {gone_after:?}, before its heartbeat was stale"
    );
    assert!(
        gone_after < stale + Duration::from_secs(3),
        "gone after {gone_after:?}"
    );

    // A standby that takes over is the leader, not a standby.
    let next = Capture::spawn(config, work.path("next.log"), None);
    next.wait_for("source identity: standing by").await;
    info_when_standbys(config, "identity", &[holder_of(&next)]).await;
    terminate(&mut leader.child);
    next.wait_for("source identity: leading capture").await;
    let info = info_of(config, "identity");
    assert_eq!(info["lease"]["holder"], holder_of(&next).as_str(), "{info}");
    assert_eq!(standby_holders(&info), Vec::<String>::new(), "{info}");
    let text = lifeboat_ok(config, &["info", "--source", "identity"]);
    assert!(text.contains("  standbys         none"), "{text}");

    // A standby stopped cleanly is gone at once.
    let mut last = Capture::spawn(config, work.path("last.log"), None);
    last.wait_for("source identity: standing by").await;
    assert_eq!(
        standby_holders(&info_of(config, "identity")),
        [holder_of(&last)]
    );
    terminate(&mut last.child);
    assert_eq!(
        standby_holders(&info_of(config, "identity")),
        Vec::<String>::new()
    );
    let mut next = next;
    terminate(&mut next.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_lists_the_leader_and_standbys_on_an_sqlite_control_store() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&short_lease(config_text(
        &work.vault_url(),
        None,
        None,
        Some(&identity),
    )));
    info_lists_the_leader_and_its_standbys(&work, &config).await;
    assert!(work.path("lifeboat-control.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_lists_the_leader_and_standbys_on_a_postgres_control_store() {
    let work = Workdir::new();
    let control = create_database("control").await;
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let text = short_lease(config_text(&work.vault_url(), None, None, Some(&identity)));
    let config = work.init_config(&format!("[control]\nurl = \"{control}\"\n{text}"));
    info_lists_the_leader_and_its_standbys(&work, &config).await;
    assert!(
        !work.path("lifeboat-control.db").exists(),
        "the PostgreSQL store was used"
    );
    let client = pg_connect(&control).await;
    let rows = client
        .query("SELECT holder FROM capture_standbys", &[])
        .await
        .expect("standbys table");
    assert!(rows.is_empty(), "every standby left");
}

/// A vault fault during capture: `info` shows it as the source's last error (kind vault,
/// when it began, retried) while it lasts, then when it ended; a clean stop keeps it. A
/// permanent one stops capture, and `info` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_shows_the_last_vault_fault_of_capture() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&short_lease(config_text(
        &work.vault_url(),
        None,
        None,
        Some(&identity),
    )));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let none = info_of(&config, "identity");
    assert_eq!(none["last_error"], serde_json::Value::Null, "{none}");
    assert_eq!(none["last_error_kind"], serde_json::Value::Null, "{none}");

    let outage = work.path("outage");
    let faults = format!("fail-all@ops=put,while={}", outage.display());
    let log = work.path("capture.log");
    let mut capture = {
        let file = std::fs::File::create(&log).expect("log");
        let child = lifeboat_command(&config, &["capture"])
            .env("LIFEBOAT_VAULT_FAULTS", &faults)
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn");
        Capture { child, log }
    };
    capture.wait_for("source identity: leading capture").await;
    let before = lifeboat_core::time::now_us();
    std::fs::write(&outage, "").expect("start the outage");
    let path = identity.clone();
    tokio::task::spawn_blocking(move || {
        write_identity(&path, TENANTS, 12, Duration::from_millis(500))
    })
    .await
    .expect("writer");
    capture.wait_for("vault fault: injected fault").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let failing = loop {
        let info = info_of(&config, "identity");
        if info["last_error_kind"] == "vault" {
            break info;
        }
        assert!(Instant::now() < deadline, "no last error: {info}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let message = failing["last_error"].as_str().expect("message");
    assert!(message.starts_with("injected fault: put"), "{failing}");
    assert_eq!(failing["last_error_stopped_capture"], false, "{failing}");
    assert_eq!(failing["last_error_recovered_at"], serde_json::Value::Null);
    assert_eq!(failing["last_error_holder"], holder_of(&capture).as_str());
    let at = failing["last_error_at"].as_str().expect("at").to_string();
    let at_us = lifeboat_core::time::parse(&at).expect("RFC 3339");
    assert!(
        at_us >= before && at_us <= lifeboat_core::time::now_us(),
        "{at}"
    );
    let text = lifeboat_ok(&config, &["info", "--source", "identity"]);
    assert!(
        text.contains(&format!("  last error       vault, at {at} ("))
            && text.contains("retried, still failing when last recorded: injected fault: put"),
        "{text}"
    );

    std::fs::remove_file(&outage).expect("end the outage");
    capture.wait_for("vault recovered after").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let recovered = loop {
        let info = info_of(&config, "identity");
        if info["last_error_recovered_at"].is_string() {
            break info;
        }
        assert!(Instant::now() < deadline, "never recovered: {info}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(recovered["last_error_at"], at.as_str(), "the same episode");
    assert_eq!(recovered["last_error_kind"], "vault");
    assert!(
        recovered["last_error_recovered_at"]
            .as_str()
            .expect("recovered")
            >= at.as_str()
    );
    terminate(&mut capture.child);
    // A later success does not erase it.
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let kept = info_of(&config, "identity");
    assert_eq!(kept["last_error_at"], at.as_str(), "{kept}");
    assert!(kept["last_error_age_seconds"].as_f64().expect("age") >= 0.0);
    let text = lifeboat_ok(&config, &["info", "--source", "identity"]);
    assert!(text.contains("retried, recovered at 20"), "{text}");

    // A permanent fault stops capture: recorded as what stopped it.
    let output = lifeboat_command(&config, &["capture"])
        .env("LIFEBOAT_VAULT_FAULTS", "fail-all@ops=put,permanent")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|child| {
            let path = identity.clone();
            std::thread::spawn(move || {
                write_identity(&path, TENANTS, 13, Duration::from_millis(300))
            })
            .join()
            .expect("writer");
            child.wait_with_output()
        })
        .expect("capture");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let stopped = info_of(&config, "identity");
    assert_eq!(stopped["last_error_kind"], "vault", "{stopped}");
    assert_eq!(stopped["last_error_stopped_capture"], true, "{stopped}");
    assert_eq!(stopped["last_error_recovered_at"], serde_json::Value::Null);
    assert!(
        stopped["last_error"]
            .as_str()
            .expect("message")
            .contains("injected fault: put"),
        "{stopped}"
    );
    let text = lifeboat_ok(&config, &["info", "--source", "identity"]);
    assert!(text.contains("stopped capture: "), "{text}");
}
