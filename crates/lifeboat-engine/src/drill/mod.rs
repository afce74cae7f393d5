//! The drill: rehearse the disaster end to end and measure recovery. Three product
//! databases with tenants; capture running; a workload writing; the mistaken cleanup
//! script deleting 40% of the tenants from every database; then restore of every deleted
//! tenant to just before the mistaken transaction, checked against checksums taken before
//! the deletion, with the other tenants' later writes left intact.

pub mod live;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_control::{ComponentStatus, Impact, IncidentChange, IncidentStatus, Stage};
use lifeboat_core::checksum::TableDigest;
use lifeboat_core::config::Config;
use lifeboat_core::model::TenantKey;
use lifeboat_core::target::Target;
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};
use lifeboat_source::drill;
use lifeboat_source::live::LiveSource;
use lifeboat_source::Stop;

use crate::compare::live_digests;
use crate::progress::{silent, thousands, Event, Progress};
use crate::restore::{execute, Request};

/// What to rehearse.
#[derive(Debug, Clone)]
pub struct Args {
    /// Tenants in the product databases (at least 5).
    pub tenants: u64,
    /// A PostgreSQL server to create the product databases on (SQLite files otherwise).
    pub postgres: Option<String>,
    /// Where to keep everything (a temporary directory, removed after, otherwise).
    pub dir: Option<PathBuf>,
    /// Tenants restored at once.
    pub jobs: usize,
    /// Recover as a campaign behind the status page, served on `listen`.
    pub serve: bool,
    pub listen: String,
}

/// What the drill measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub ok: bool,
    pub backend: &'static str,
    pub tenants: u64,
    pub tenants_deleted: usize,
    pub rows_deleted: u64,
    pub bad_transaction: String,
    pub tenants_restored: usize,
    pub rows_restored: u64,
    pub restore_seconds: f64,
    pub rows_per_second: f64,
    pub recovery_time_seconds: f64,
    pub recovery_point_rows_lost: u64,
    pub tenants_differing: Vec<u64>,
    pub spared_tenants_changed: Vec<u64>,
    pub workload_transactions: u64,
    pub status_page: Option<String>,
    /// With `serve`: the directory the campaign's emails were written to, and each one.
    pub mail_dir: Option<String>,
    pub notifications: Vec<DrillNotification>,
    /// Tenants never deleted.
    #[serde(skip)]
    pub tenants_spared: usize,
}

/// One notification the drill's campaign delivered (to its mail directory).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillNotification {
    pub id: String,
    pub event: String,
    pub to: String,
    pub tenant: Option<String>,
    pub state: String,
}

/// The status page a drill with `serve` leaves running: stop it with `stop`.
pub struct Server {
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    cleanup: Option<Cleanup>,
    pub address: std::net::SocketAddr,
}

impl Server {
    /// Stop serving, then remove what a drill in a temporary directory made.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
        if let Some(cleanup) = self.cleanup {
            cleanup.run().await;
        }
    }
}

type Digests = BTreeMap<(String, String), TableDigest>;

async fn digests(sources: &[LiveSource], tenant: &TenantKey) -> Result<Digests> {
    let mut out = Digests::new();
    for source in sources {
        for (table, digest) in live_digests(source, tenant, &BTreeMap::new()).await? {
            out.insert((source.name.clone(), table), digest);
        }
    }
    Ok(out)
}

/// Run the drill. Its stages go to `progress`; with `serve`, the status page is left
/// running for the caller to stop.
pub async fn run(args: &Args, progress: &dyn Progress) -> Result<(Report, Option<Server>)> {
    if args.tenants < 5 {
        return Err(Error::usage("--tenants must be at least 5"));
    }
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::usage(format!("cannot create {}: {e}", dir.display())))?;
            dir.canonicalize()
                .map_err(|e| Error::usage(format!("{}: {e}", dir.display())))?
        }
        None => {
            temp = tempfile_dir()?;
            temp.clone()
        }
    };
    let cleanup = args.dir.is_none().then(|| Cleanup {
        dir: dir.clone(),
        postgres: args.postgres.clone(),
    });
    match drill(&dir, args, progress).await {
        // The page reads the drill's control store: the files go when it stops.
        Ok((report, Some(mut server))) => {
            server.cleanup = cleanup;
            Ok((report, Some(server)))
        }
        outcome => {
            if let Some(cleanup) = cleanup {
                cleanup.run().await;
            }
            outcome
        }
    }
}

/// What a drill in a temporary directory leaves to remove.
struct Cleanup {
    dir: PathBuf,
    postgres: Option<String>,
}

impl Cleanup {
    async fn run(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(server) = &self.postgres {
            if let Err(e) = drill::drop_postgres(server).await {
                tracing::warn!("{e}");
            }
        }
    }
}

fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir().join(format!(
        "lifeboat-drill-{}-{}",
        std::process::id(),
        lifeboat_core::time::now_us()
    ));
    std::fs::create_dir_all(&base)
        .map_err(|e| Error::usage(format!("cannot create {}: {e}", base.display())))?;
    Ok(base)
}

async fn drill(
    dir: &Path,
    args: &Args,
    progress: &dyn Progress,
) -> Result<(Report, Option<Server>)> {
    let kind = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    progress.event(Event::Step(format!(
        "drill: {} tenants on {kind}, in {}",
        args.tenants,
        dir.display()
    )));
    let products = Arc::new(drill::create(dir, args.postgres.as_deref(), args.tenants).await?);
    let vault_dir = dir.join("vault");
    let _ = std::fs::remove_dir_all(&vault_dir);
    let urls: Vec<(String, String)> = products.iter().map(|(n, p)| (n.clone(), p.url())).collect();
    let text = drill::config_text(&format!("file://{}", vault_dir.display()), &urls);
    std::fs::write(dir.join("lifeboat.toml"), &text)
        .map_err(|e| Error::usage(format!("cannot write the drill's config: {e}")))?;
    let mut config = Config::parse(&text)?;
    // Capture takes each source's lease in the drill's own control store.
    config.control = Some(lifeboat_core::config::ControlConfig {
        url: format!("sqlite://{}", dir.join("lifeboat-control.db").display()),
        password_file: None,
    });
    // A new vault, as `lifeboat init` makes it.
    let vault = Vault::init(Vault::store_for(&config.vault)?).await?;

    // Capture runs from the start, as it would in production.
    let stop_capture = Stop::new();
    let capture = spawn_capture(&config, &stop_capture, false).await?;
    wait_for_history(&vault, &config).await?;

    let (affected, spared): (Vec<u64>, Vec<u64>) =
        (1..=args.tenants).partition(|site| (site * 7919) % 100 < 40);
    // Every tenant writes until the moment the script runs; then the tenants it hits stop
    // (their checksums are taken in between) while the others keep writing.
    let stop_workload = Stop::new();
    let frozen = Arc::new(tokio::sync::RwLock::new(std::collections::BTreeSet::new()));
    let workload = {
        let products = products.clone();
        let sites: Vec<u64> = (1..=args.tenants).collect();
        let frozen = frozen.clone();
        let stop = stop_workload.clone();
        tokio::spawn(async move { drill::workload(&products, &sites, &frozen, &stop).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    frozen.write().await.extend(affected.iter().copied());

    // Checksums of the tenants about to be hit, taken just before the deletion.
    let readers = open_readers(&config).await?;
    let mut before: BTreeMap<u64, Digests> = BTreeMap::new();
    for site in &affected {
        before.insert(
            *site,
            digests(&readers, &TenantKey::new(site.to_string())).await?,
        );
    }
    let rows_at_risk: u64 = before
        .values()
        .flat_map(|d| d.values())
        .map(|d| d.rows)
        .sum();

    progress.event(Event::Step(format!(
        "the mistaken cleanup: meant to remove the legacy app, given {} site IDs, it deletes those tenants from every database",
        affected.len()
    )));
    let deleted_at = Instant::now();
    let transactions = drill::mistaken_cleanup(&products, &affected).await?;
    // The script's first transaction is where the damage starts: restore to just
    // before it, and every other database to the same instant.
    let (bad_source, bad) = transactions
        .first()
        .cloned()
        .ok_or_else(|| Error::source("the drill has no product database"))?;
    // The other tenants keep writing while the incident unfolds.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop_workload.set();
    let writes = workload
        .await
        .map_err(|e| Error::source(format!("workload task: {e}")))??;
    stop_capture.set();
    join_capture(capture).await?;
    join_capture(spawn_capture(&config, &Stop::new(), true).await?).await?;
    progress.event(Event::Detail(format!(
        "{} tenants deleted ({} rows) starting with transaction {bad_source}:{bad}; the workload committed {} transactions, to every tenant until the script ran and to the other {} after",
        affected.len(),
        thousands(rows_at_risk),
        thousands(writes),
        spared.len()
    )));

    let mut spared_before: BTreeMap<u64, Digests> = BTreeMap::new();
    for site in &spared {
        spared_before.insert(
            *site,
            digests(&readers, &TenantKey::new(site.to_string())).await?,
        );
    }

    progress.event(Event::Step(format!(
        "restoring {} tenants to just before {bad_source}:{bad}",
        affected.len()
    )));
    let tenants: Vec<String> = affected.iter().map(u64::to_string).collect();
    let target = Target::BeforeTx {
        source: bad_source.clone(),
        txid: bad,
    };
    let mut server = None;
    let mut mailed = None;
    let (rows, failures, elapsed) = if args.serve {
        let (recovery, running, sent) =
            recover_as_campaign(dir, &config, &tenants, &bad_source, bad, args, progress).await?;
        server = Some(running);
        mailed = Some(sent);
        recovery
    } else {
        let request = Request {
            tenants,
            target,
            sources: Vec::new(),
            as_key: None,
            into_url: None,
            dry_run: false,
            jobs: args.jobs,
        };
        let summary = execute(&config, &request, silent()).await?;
        (summary.rows_written(), summary.failures(), summary.elapsed)
    };
    let recovered_after = deleted_at.elapsed();

    // Every restored tenant against its checksums from before the deletion.
    let mut rows_lost: u64 = 0;
    let mut tenants_differing = Vec::new();
    for (site, wanted) in &before {
        let got = digests(&readers, &TenantKey::new(site.to_string())).await?;
        let mut differs = false;
        for (table, want) in wanted {
            let have = got.get(table).copied().unwrap_or_default();
            if have != *want {
                differs = true;
                rows_lost += want.rows.saturating_sub(have.rows).max(1);
            }
        }
        if differs {
            tenants_differing.push(*site);
        }
    }
    // The other tenants' later writes, untouched by the restore.
    let mut spared_changed = Vec::new();
    for (site, wanted) in &spared_before {
        if digests(&readers, &TenantKey::new(site.to_string())).await? != *wanted {
            spared_changed.push(*site);
        }
    }

    let seconds = elapsed.as_secs_f64().max(1e-9);
    let ok = failures == 0 && tenants_differing.is_empty() && spared_changed.is_empty();
    let report = Report {
        ok,
        backend: kind,
        tenants: args.tenants,
        tenants_deleted: affected.len(),
        rows_deleted: rows_at_risk,
        bad_transaction: format!("{bad_source}:{bad}"),
        tenants_restored: affected.len() - tenants_differing.len(),
        rows_restored: rows,
        restore_seconds: seconds,
        rows_per_second: rows as f64 / seconds,
        recovery_time_seconds: recovered_after.as_secs_f64(),
        recovery_point_rows_lost: rows_lost,
        tenants_differing,
        spared_tenants_changed: spared_changed,
        workload_transactions: writes,
        status_page: server.as_ref().map(|s| format!("http://{}/", s.address)),
        mail_dir: mailed
            .as_ref()
            .map(|_| crate::notify::mail_dir(dir).display().to_string()),
        notifications: mailed.unwrap_or_default(),
        tenants_spared: spared.len(),
    };
    Ok((report, server))
}

/// The recovery as it runs in production: an incident, a campaign over the deleted
/// tenants (each with one imported contact, `admin@siteN.example`), two workers, the
/// status page served meanwhile, and the notifier writing every email into the drill's
/// mail directory. Returns rows restored, tenants failed and the time the campaign took,
/// the running server and the notifications delivered.
async fn recover_as_campaign(
    dir: &Path,
    config: &Config,
    tenants: &[String],
    bad_source: &str,
    bad: u64,
    args: &Args,
    progress: &dyn Progress,
) -> Result<((u64, usize, Duration), Server, Vec<DrillNotification>)> {
    // The drill's control store, which capture's leases are in already.
    let mut config = config.clone();
    // Nobody is there to accept in a drill.
    config.campaigns.acceptance = "skip".to_string();
    let url = crate::context::control_url(&config, &None)?;
    let mut control = crate::campaign::open_audited(&config, &None).await?;
    let incident = control.change_incident(
        None,
        &IncidentChange {
            name: Some("Customer data deleted by a cleanup script".into()),
            status: IncidentStatus::Identified,
            impact: Some(Impact::Critical),
            message: format!(
                "A maintenance script deleted the data of {} customers. We are restoring \
                 every one of them to just before the deletion.",
                tenants.len()
            ),
            translations: Default::default(),
            components: config
                .sources
                .keys()
                .map(|s| (s.clone(), ComponentStatus::PartialOutage))
                .collect(),
        },
        "drill",
    )?;
    control.anchor().await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Error::usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::source(format!("listener: {e}")))?;
    let state = lifeboat_web::AppState::new(
        &url,
        lifeboat_web::PageInfo::new("Lifeboat drill", &format!("http://{address}")),
        None,
        None,
        lifeboat_web::Limits::default(),
    )?;
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(lifeboat_web::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    progress.event(Event::Detail(format!("status page: http://{address}/")));
    let request = crate::campaign::StartRequest {
        incident: incident.clone(),
        target: Target::BeforeTx {
            source: bad_source.to_string(),
            txid: bad,
        },
        target_json: serde_json::json!({"before_tx": format!("{bad_source}:{bad}")}),
        tenants: tenants.to_vec(),
        batch_size: (tenants.len() / 10).clamp(1, 60) as u32,
        priority: String::new(),
        by: "drill".to_string(),
        auto_progress: None,
        phases: None,
    };
    let contacts: Vec<lifeboat_control::Contact> = tenants
        .iter()
        .map(|t| lifeboat_control::Contact {
            tenant: t.clone(),
            email: format!("admin@site{t}.example"),
            name: Some(format!("Site {t} admin")),
            locale: None,
            origin: lifeboat_control::ContactOrigin::Import,
            read_at: None,
        })
        .collect();
    control.import_contacts(&contacts)?;
    let started = Instant::now();
    let (campaign, _) = crate::campaign::start_campaign(&config, &mut control, request).await?;
    crate::campaign::worker::run_workers(&config, &url, &campaign, 2, args.jobs.div_ceil(2))
        .await?;
    let elapsed = started.elapsed();
    let outcome = control.campaign_tenants(Some(&campaign))?;
    let rows: u64 = outcome
        .iter()
        .filter_map(|t| t.rows)
        .map(|r| r.max(0) as u64)
        .sum();
    let failed = outcome
        .iter()
        .filter(|t| t.stage != Stage::Restored)
        .count();
    control.change_incident(
        Some(&incident),
        &IncidentChange {
            status: if failed == 0 {
                IncidentStatus::Resolved
            } else {
                IncidentStatus::Monitoring
            },
            message: format!(
                "{} of {} customers' data is restored and verified.",
                tenants.len() - failed,
                tenants.len()
            ),
            ..Default::default()
        },
        "drill",
    )?;
    control.anchor().await?;
    // Every notification of the recovery, written to the mail directory.
    let mail_dir = crate::notify::mail_dir(dir);
    let notifier = crate::notify::Notifier::from_config(&config, "drill", Some(&mail_dir))?;
    crate::notify::run_with(&notifier, &url, true, &Stop::new()).await?;
    let notifications = control
        .deliveries(false)?
        .into_iter()
        .map(|d| DrillNotification {
            id: d.id,
            event: d.event.to_string(),
            to: d.address,
            tenant: d.tenant,
            state: d.state.to_string(),
        })
        .collect();
    progress.event(Event::Detail(format!(
        "notifications written to {}",
        mail_dir.display()
    )));
    Ok((
        (rows, failed, elapsed),
        Server {
            task,
            shutdown,
            cleanup: None,
            address,
        },
        notifications,
    ))
}

async fn open_readers(config: &Config) -> Result<Vec<LiveSource>> {
    let mut out = Vec::new();
    for (name, source) in &config.sources {
        out.push(LiveSource::open(name, source, false).await?);
    }
    Ok(out)
}

type CaptureTask = tokio::task::JoinHandle<Result<crate::capture::Run>>;

/// Capture every source of the drill as `lifeboat capture` does: each under its lease in
/// the drill's control store, never two captures of one source at once.
async fn spawn_capture(config: &Config, stop: &Stop, until_caught_up: bool) -> Result<CaptureTask> {
    let (config, stop) = (config.clone(), stop.clone());
    Ok(tokio::spawn(async move {
        crate::capture::run(
            &config,
            &None,
            &[],
            until_caught_up,
            &stop,
            &crate::progress::Silent,
            lifeboat_core::metrics::Metrics::global(),
        )
        .await
    }))
}

async fn join_capture(task: CaptureTask) -> Result<()> {
    let run = task
        .await
        .map_err(|e| Error::source(format!("capture task: {e}")))??;
    match run.errors.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Wait until every source's first snapshot is in the vault.
async fn wait_for_history(vault: &Vault, config: &Config) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    for name in config.sources.keys() {
        while vault.list_checkpoints(name).await?.is_empty() {
            if Instant::now() > deadline {
                return Err(Error::source(format!("capture of {name} did not start")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
