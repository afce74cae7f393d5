//! Incidents, scheduled maintenance, recovery campaigns, workers and the status server
//! (docs/status.md): `incident`, `maintenance`, `campaign`, `worker` and `serve`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use lifeboat_control::{IncidentChange, IncidentStatus, MaintenanceStatus, NewMaintenance};
use lifeboat_core::target::Target;
use lifeboat_core::{Error, Result};
use lifeboat_engine::campaign::{
    self, campaign_tenants, component_pairs, open_audited, open_control, read_attributes,
    start_campaign, worker, StartRequest,
};
use lifeboat_engine::context::{control_url, load_config};
use lifeboat_engine::guard::login;
use lifeboat_source::Stop;

use crate::output::print_json;
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct IncidentArgs {
    #[command(subcommand)]
    command: IncidentCommand,
}

#[derive(clap::Subcommand)]
enum IncidentCommand {
    /// Open an incident; prints its id.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "investigating")]
        status: String,
        #[arg(long, default_value = "major")]
        impact: String,
        /// `SOURCE=STATUS` (repeatable).
        #[arg(long = "component", value_name = "SOURCE=STATUS")]
        components: Vec<String>,
        #[arg(long)]
        message: String,
        #[command(flatten)]
        translations: Translations,
        /// Who opens it, for the audit log (default: the login name).
        #[arg(long)]
        by: Option<String>,
    },
    /// Post an update: a message, or a template filled from the incident's campaign.
    Update {
        id: String,
        /// The new status (default: the template's, or the incident's current status).
        #[arg(long)]
        status: Option<String>,
        #[arg(
            long,
            required_unless_present = "template",
            conflicts_with = "template"
        )]
        message: Option<String>,
        /// A `[templates.NAME]` of the configuration (`lifeboat incident templates`).
        #[arg(long, value_name = "NAME")]
        template: Option<String>,
        /// The campaign whose numbers fill the template (default: the incident's latest).
        #[arg(long, value_name = "ID", requires = "template")]
        campaign: Option<String>,
        #[command(flatten)]
        translations: Translations,
        #[arg(long)]
        impact: Option<String>,
        #[arg(long = "component", value_name = "SOURCE=STATUS")]
        components: Vec<String>,
        #[arg(long)]
        by: Option<String>,
    },
    /// Resolve: its components go back to operational.
    Resolve {
        id: String,
        #[arg(long)]
        message: String,
        #[command(flatten)]
        translations: Translations,
        #[arg(long)]
        by: Option<String>,
    },
    /// Publish the post-incident report of a resolved incident (Markdown): the incident
    /// moves to `postmortem` and the page shows the report.
    Postmortem {
        id: String,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[arg(long)]
        by: Option<String>,
    },
    /// The update templates of the configuration, with the fields they may use.
    Templates {
        #[arg(long)]
        json: bool,
    },
    /// Every incident, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// The message of an incident change in the page's other languages (the message itself is
/// in English).
#[derive(clap::Args)]
struct Translations {
    /// The message in German.
    #[arg(long = "message-de", value_name = "TEXT")]
    de: Option<String>,
    /// The message in Japanese.
    #[arg(long = "message-ja", value_name = "TEXT")]
    ja: Option<String>,
    /// Translations from a file: a TOML or JSON (`.json`) table of language code = text.
    #[arg(long = "messages", value_name = "FILE")]
    file: Option<PathBuf>,
}

impl Translations {
    /// Language code -> text, checked (lifeboat_web::i18n::check_translations): a language
    /// given twice, by a flag and the file, is refused.
    fn read(self) -> Result<BTreeMap<String, String>> {
        let mut given: Vec<(String, String)> = Vec::new();
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
            let table: BTreeMap<String, String> = if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            {
                serde_json::from_str(&text).map_err(|e| e.to_string())
            } else {
                toml::from_str(&text).map_err(|e| e.to_string())
            }
            .map_err(|e| {
                Error::usage(format!(
                    "{}: not a table of language code = text: {}",
                    path.display(),
                    e.trim()
                ))
            })?;
            given.extend(table);
        }
        given.extend(self.de.map(|t| ("de".to_string(), t)));
        given.extend(self.ja.map(|t| ("ja".to_string(), t)));
        lifeboat_web::i18n::check_translations(given)
    }
}

pub async fn incident(config_path: Option<PathBuf>, args: IncidentArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    if let IncidentCommand::Templates { json } = args.command {
        print_templates(&config, json);
        return Ok(0);
    }
    if let IncidentCommand::List { json } = args.command {
        let incidents = open_control(&config, &config_path)?.incidents()?;
        // When each unresolved incident's next public update is due (`[status]
        // update_every`), as the page and its JSON show it.
        let mut due = Vec::new();
        for i in &incidents {
            let every = config.status.update_every(i.impact.as_str());
            due.push(match every {
                Some(every) => i
                    .next_update_due_us(i64::try_from(every.as_micros()).unwrap_or(i64::MAX))?
                    .map(lifeboat_core::time::format_us),
                None => None,
            });
        }
        if json {
            let mut listed = json!(incidents);
            if config.status.update_every.is_some() {
                if let Some(list) = listed.as_array_mut() {
                    for (object, due) in list.iter_mut().zip(&due) {
                        object["next_update_at"] = json!(due);
                    }
                }
            }
            print_json(&listed);
        } else {
            for (i, due) in incidents.iter().zip(&due) {
                crate::say!(
                    "{}  {:<13} {:<8} {}  {}{}",
                    i.id,
                    i.status,
                    i.impact,
                    i.created_at,
                    i.name,
                    match due {
                        Some(at) => format!("  (next update due by {at})"),
                        None => String::new(),
                    }
                );
            }
        }
        return Ok(0);
    }
    let mut control = open_audited(&config, &config_path).await?;
    match args.command {
        IncidentCommand::Create {
            name,
            status,
            impact,
            components,
            message,
            translations,
            by,
        } => {
            let translations = translations.read()?;
            let id = control.change_incident(
                None,
                &IncidentChange {
                    name: Some(name),
                    status: status.parse()?,
                    impact: Some(impact.parse()?),
                    message,
                    translations,
                    components: component_pairs(&components)?,
                },
                &login(by),
            )?;
            control.anchor().await?;
            crate::say!("{id}");
        }
        IncidentCommand::Update {
            id,
            status,
            message,
            template,
            campaign,
            translations,
            impact,
            components,
            by,
        } => {
            let current = control.incident(&id)?.ok_or_else(|| {
                Error::usage(format!("unknown incident {id}: `lifeboat incident list`"))
            })?;
            let (message, template_status) = match &template {
                Some(name) => {
                    let template = config.templates.get(name).ok_or_else(|| {
                        let known: Vec<&str> =
                            config.templates.keys().map(String::as_str).collect();
                        Error::usage(format!(
                            "unknown template {name:?}; templates: {}",
                            if known.is_empty() {
                                "(none in the configuration)".to_string()
                            } else {
                                known.join(", ")
                            }
                        ))
                    })?;
                    let fields = campaign::template_fields(&mut control, &id, campaign.as_deref())?;
                    (template.render(&fields)?, template.status.clone())
                }
                None => (message.unwrap_or_default(), None),
            };
            let status = match status.or(template_status) {
                Some(status) => status.parse()?,
                None => current.status,
            };
            let translations = translations.read()?;
            control.change_incident(
                Some(&id),
                &IncidentChange {
                    name: None,
                    status,
                    impact: impact.as_deref().map(str::parse).transpose()?,
                    message,
                    translations,
                    components: component_pairs(&components)?,
                },
                &login(by),
            )?;
            control.anchor().await?;
            crate::say!("{id} updated");
        }
        IncidentCommand::Resolve {
            id,
            message,
            translations,
            by,
        } => {
            let translations = translations.read()?;
            control.change_incident(
                Some(&id),
                &IncidentChange {
                    name: None,
                    status: IncidentStatus::Resolved,
                    impact: None,
                    message,
                    translations,
                    components: BTreeMap::new(),
                },
                &login(by),
            )?;
            control.anchor().await?;
            crate::say!("{id} resolved");
        }
        IncidentCommand::Postmortem { id, file, by } => {
            control.publish_postmortem(&id, &read_postmortem(&file)?, &login(by))?;
            control.anchor().await?;
            crate::say!("{id} postmortem published");
        }
        // Listed above, without the vault.
        IncidentCommand::List { .. } | IncidentCommand::Templates { .. } => {}
    }
    Ok(0)
}

/// `incident templates`: each template (name, status, message), then the fields.
fn print_templates(config: &lifeboat_core::config::Config, as_json: bool) {
    use lifeboat_core::config::TEMPLATE_FIELDS;
    if as_json {
        print_json(&json!({
            "templates": config.templates.iter().map(|(name, t)| json!({
                "name": name, "status": t.status, "message": t.message,
            })).collect::<Vec<_>>(),
            "fields": TEMPLATE_FIELDS.iter().map(|(f, what)| json!({"field": f, "meaning": what}))
                .collect::<Vec<_>>(),
        }));
        return;
    }
    if config.templates.is_empty() {
        crate::say!("no [templates.NAME] in the configuration");
    }
    for (name, t) in &config.templates {
        crate::say!(
            "{name} ({}): {}",
            t.status.as_deref().unwrap_or("status unchanged"),
            t.message
        );
    }
    crate::say!("fields:");
    for (field, what) in TEMPLATE_FIELDS {
        crate::say!("  {{{field}}}  {what}");
    }
}

/// A postmortem file: UTF-8 text, at most `MAX_POSTMORTEM_BYTES`.
fn read_postmortem(file: &std::path::Path) -> Result<String> {
    let size = std::fs::metadata(file)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?
        .len();
    if size > lifeboat_control::MAX_POSTMORTEM_BYTES as u64 {
        return Err(Error::usage(format!(
            "{}: {size} bytes; a postmortem has at most {} bytes",
            file.display(),
            lifeboat_control::MAX_POSTMORTEM_BYTES
        )));
    }
    let bytes = std::fs::read(file)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::usage(format!("{}: not UTF-8 text", file.display())))
}

#[derive(clap::Args)]
pub struct MaintenanceArgs {
    #[command(subcommand)]
    command: MaintenanceCommand,
}

#[derive(clap::Subcommand)]
enum MaintenanceCommand {
    /// Announce a maintenance window; prints its id. It starts and completes by itself at
    /// --starts and --ends unless told not to.
    Schedule {
        #[arg(long)]
        name: String,
        /// When it starts (RFC 3339).
        #[arg(long, value_name = "TIME")]
        starts: String,
        /// When it ends (RFC 3339, after --starts).
        #[arg(long, value_name = "TIME")]
        ends: String,
        /// A component it concerns, by source or component name (repeatable).
        #[arg(long = "component", value_name = "NAME")]
        components: Vec<String>,
        #[arg(long)]
        message: Option<String>,
        /// Do not start it by itself at --starts (`maintenance start` starts it).
        #[arg(long)]
        no_auto_start: bool,
        /// Do not complete it by itself at --ends (`maintenance complete` completes it).
        #[arg(long)]
        no_auto_complete: bool,
        /// Who schedules it, for the audit log (default: the login name).
        #[arg(long)]
        by: Option<String>,
    },
    /// It began: in progress; its components show under maintenance.
    Start {
        id: String,
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        by: Option<String>,
    },
    /// The work is done and being checked: verifying.
    Verify {
        id: String,
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        by: Option<String>,
    },
    /// It is over: completed.
    Complete {
        id: String,
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        by: Option<String>,
    },
    /// Every maintenance, latest window first.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn maintenance(config_path: Option<PathBuf>, args: MaintenanceArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    if let MaintenanceCommand::List { json } = args.command {
        let maintenances = open_control(&config, &config_path)?.maintenances()?;
        if json {
            print_json(&json!(maintenances));
        } else {
            for m in &maintenances {
                crate::say!(
                    "{}  {:<11} {} .. {}  {}",
                    m.id,
                    m.status,
                    m.scheduled_for,
                    m.scheduled_until,
                    m.name
                );
            }
        }
        return Ok(0);
    }
    let mut control = open_audited(&config, &config_path).await?;
    let (id, status, message, by) = match args.command {
        MaintenanceCommand::Schedule {
            name,
            starts,
            ends,
            components,
            message,
            no_auto_start,
            no_auto_complete,
            by,
        } => {
            let id = control.schedule_maintenance(
                &NewMaintenance {
                    name,
                    scheduled_for: starts,
                    scheduled_until: ends,
                    components,
                    message: message.unwrap_or_default(),
                    auto_start: !no_auto_start,
                    auto_complete: !no_auto_complete,
                },
                &login(by),
            )?;
            control.anchor().await?;
            crate::say!("{id}");
            return Ok(0);
        }
        MaintenanceCommand::Start { id, message, by } => {
            (id, MaintenanceStatus::InProgress, message, by)
        }
        MaintenanceCommand::Verify { id, message, by } => {
            (id, MaintenanceStatus::Verifying, message, by)
        }
        MaintenanceCommand::Complete { id, message, by } => {
            (id, MaintenanceStatus::Completed, message, by)
        }
        // Listed above, without the vault.
        MaintenanceCommand::List { .. } => return Ok(0),
    };
    control.advance_maintenance(&id, status, message.as_deref(), &login(by))?;
    control.anchor().await?;
    crate::say!("{id} {status}");
    Ok(0)
}

#[derive(clap::Args)]
pub struct CampaignArgs {
    #[command(subcommand)]
    command: CampaignCommand,
}

#[derive(clap::Subcommand)]
enum CampaignCommand {
    /// Queue tenants for recovery under an incident; prints the campaign id.
    Start {
        #[arg(long)]
        incident: String,
        /// One tenant key per line.
        #[arg(long, value_name = "FILE", conflicts_with = "plan")]
        tenants_from: Option<PathBuf>,
        /// The tenants of a plan file.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
        #[arg(long, value_name = "TIME", conflicts_with = "before_tx")]
        at: Option<String>,
        #[arg(long, value_name = "SOURCE:TXID")]
        before_tx: Option<String>,
        /// Tenants a worker claims and restores together.
        #[arg(long, default_value_t = 60)]
        batch_size: u32,
        /// Priority keys from tenant attributes, e.g. "edition desc, users desc".
        #[arg(long, default_value = "")]
        priority: String,
        /// Post progress updates from this `[templates.NAME]` by itself, at 25, 50, 75 and
        /// 100% of the tenants finished.
        #[arg(long, value_name = "TEMPLATE")]
        auto_progress: Option<String>,
        /// Also post one every so many minutes (default: the cadence `[status]
        /// update_every` promises for the incident's impact, if any).
        #[arg(long, value_name = "MINUTES", requires = "auto_progress")]
        progress_every: Option<u64>,
        /// Restore the sources in phases, e.g. "wiki; tracker, identity": every tenant's
        /// first phase is restored and verified before any tenant's second begins. Every
        /// source in exactly one phase (default: one phase of every source).
        #[arg(long, value_name = "PHASES")]
        phases: Option<String>,
        #[arg(long)]
        by: Option<String>,
    },
    /// Progress of one campaign (or all).
    Status {
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Each tenant's private status link (for operators to send).
    Links {
        id: String,
        /// The page's public address (default: [server] public_url).
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Import tenant attributes (priority keys) from a CSV file: a header `tenant,NAME…`,
    /// then one row per tenant.
    ImportAttributes {
        file: PathBuf,
        #[arg(long)]
        by: Option<String>,
    },
    /// Queue a campaign's failed tenants again (all, or those named).
    Retry {
        id: String,
        #[arg(long = "tenant", value_name = "KEY")]
        tenants: Vec<String>,
        #[arg(long)]
        by: Option<String>,
    },
}

pub async fn campaign(config_path: Option<PathBuf>, args: CampaignArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    match args.command {
        CampaignCommand::Start {
            incident,
            tenants_from,
            plan,
            at,
            before_tx,
            batch_size,
            priority,
            auto_progress,
            progress_every,
            phases,
            by,
        } => {
            let target = Target::parse(at.as_deref(), before_tx.as_deref())?;
            let target_json = match (&at, &before_tx) {
                (Some(at), _) => json!({"at": at}),
                (_, Some(tx)) => json!({"before_tx": tx}),
                _ => json!(null),
            };
            let tenants = campaign_tenants(tenants_from.as_deref(), plan.as_deref())?;
            let mut control = open_audited(&config, &config_path).await?;
            let start = StartRequest {
                incident,
                target,
                target_json,
                tenants,
                batch_size,
                priority,
                by: login(by),
                auto_progress: auto_progress.map(|t| (t, progress_every)),
                phases,
            };
            let (id, count) = start_campaign(&config, &mut control, start).await?;
            crate::say!("{id}");
            tracing::info!("campaign {id}: {count} tenants queued");
            Ok(0)
        }
        CampaignCommand::Status { id, json } => {
            let mut control = open_control(&config, &config_path)?;
            print_status(&campaign::status(&mut control, id.as_deref())?, json);
            Ok(0)
        }
        CampaignCommand::Links { id, base_url, json } => {
            let mut control = open_control(&config, &config_path)?;
            let base = base_url
                .or_else(|| config.server.public_url.clone())
                .unwrap_or_else(|| format!("http://{}", config.server.listen));
            let links = campaign::links(&mut control, &id, &base)?;
            if json {
                print_json(&json!(links
                    .iter()
                    .map(|(t, l)| json!({"tenant": t, "link": l}))
                    .collect::<Vec<_>>()));
            } else {
                for (tenant, link) in links {
                    crate::say!("{tenant}\t{link}");
                }
            }
            Ok(0)
        }
        CampaignCommand::Retry { id, tenants, by } => {
            let requeued = campaign::retry(&config, &config_path, &id, &tenants, by).await?;
            crate::say!("{} failed tenants queued again", requeued.len());
            Ok(0)
        }
        CampaignCommand::ImportAttributes { file, by } => {
            let attributes = read_attributes(&file)?;
            let mut control = open_audited(&config, &config_path).await?;
            control.set_attributes(&attributes, &login(by))?;
            control.anchor().await?;
            crate::say!("attributes of {} tenants imported", attributes.len());
            Ok(0)
        }
    }
}

/// `campaign status`, for people or as JSON.
fn print_status(report: &[serde_json::Value], as_json: bool) {
    if as_json {
        print_json(&json!(report));
    } else {
        for r in report {
            crate::say!(
                "campaign {} (incident {}): {} of {} tenants restored, {} of {} users; restored to {}",
                r["id"].as_str().unwrap_or(""),
                r["incident"].as_str().unwrap_or(""),
                r["tenants_restored"],
                r["tenants"],
                r["users_restored"],
                r["users"],
                r["restored_to"].as_str().unwrap_or("")
            );
            if let Some(stages) = r["stages"].as_object() {
                let line: Vec<String> = stages
                    .iter()
                    .filter(|(_, n)| n.as_u64() != Some(0))
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect();
                crate::say!("  {}", line.join(", "));
            }
            for p in r["phases"].as_array().into_iter().flatten() {
                crate::say!(
                    "  phase {} ({}): {} of {} tenants restored{}",
                    p["phase"],
                    p["sources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    p["tenants_restored"],
                    p["tenants"],
                    if p["open"].as_bool() == Some(true) {
                        ""
                    } else {
                        ", waiting for the phase before"
                    }
                );
            }
            if let Some(eta) = r["estimated_completion"].as_str() {
                crate::say!("  estimated completion {eta}");
            }
            for f in r["failed"].as_array().into_iter().flatten() {
                crate::say!(
                    "  FAILED {}: {}",
                    f["tenant"].as_str().unwrap_or(""),
                    f["reason"].as_str().unwrap_or("")
                );
            }
        }
    }
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Only this campaign's tenants.
    #[arg(long)]
    campaign: Option<String>,
    /// Exit when no tenant is left to restore (instead of waiting for new campaigns).
    #[arg(long)]
    until_done: bool,
    /// Tenants restored at once within a batch.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// This worker's name (default: host and process id).
    #[arg(long)]
    name: Option<String>,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

pub async fn worker(config_path: Option<PathBuf>, args: WorkerArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let name = args.name.clone().unwrap_or_else(worker::default_name);
    if let Some(address) = &args.metrics_listen {
        crate::observe::listen_for_metrics(address, &config, &[]).await?;
    }
    let stop = Stop::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::signal::shutdown().await;
            stop.set();
        });
    }
    let worked = worker::run(
        &config,
        &config_path,
        &name,
        args.campaign.as_deref(),
        args.until_done,
        args.jobs,
        &stop,
    )
    .await?;
    crate::say!(
        "worker {name}: {} tenants restored and verified, {} failed attempts",
        worked.restored,
        worked.failed
    );
    Ok(if worked.failed > 0 { EXIT_PROBLEM } else { 0 })
}

// ---------------------------------------------------------------------------------------
// serve

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (default: [server] listen, 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Do not deliver the notification outbox from this process (run `lifeboat
    /// notifier` elsewhere).
    #[arg(long)]
    no_notifier: bool,
}

pub async fn serve(config_path: Option<PathBuf>, args: ServeArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let token = match std::env::var("LIFEBOAT_TOKEN") {
        Ok(token) => {
            lifeboat_core::config::check_server_token(&token, "LIFEBOAT_TOKEN")?;
            Some(token)
        }
        Err(_) => config.server.token.clone(),
    };
    open_control(&config, &config_path)?;
    let listen = args.listen.unwrap_or_else(|| config.server.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| Error::usage(format!("cannot listen on {listen}: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::source(format!("listener: {e}")))?;
    let public_url = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let policy = worker::acceptance(&config);
    let state = lifeboat_web::AppState::new(
        &control_url(&config, &config_path)?,
        lifeboat_web::PageInfo::new(&config.server.page_name, &public_url)
            .with_sla(config.sla.clone())
            .with_update_every(config.status.clone()),
        token,
        policy.auto_after_us.filter(|_| policy.customer),
        lifeboat_web::Limits::from_config(&config.server),
    )?
    .with_exports(
        lifeboat_engine::campaign::export_dir(&config, &config_path)?,
        (config.campaigns.export_link_seconds as i64).saturating_mul(1_000_000),
    );
    crate::say!("serving the status page on http://{address}/");
    // Acceptances and the operator API write audit entries without the vault: anchor them.
    let anchoring = tokio::spawn(lifeboat_engine::guard::anchor_loop(
        config.clone(),
        control_url(&config, &config_path)?,
        std::time::Duration::from_secs(2),
    ));
    // The outbox is delivered from here too, unless told not to.
    let stop = Stop::new();
    let notifying = if args.no_notifier {
        None
    } else {
        let notifier = lifeboat_engine::notify::Notifier::from_config(
            &config,
            &lifeboat_engine::notify::default_name(),
            None,
        )?;
        let url = control_url(&config, &config_path)?;
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            lifeboat_engine::notify::run_with(&notifier, &url, false, &stop).await
        }))
    };
    let served = lifeboat_web::serve(listener, state, crate::signal::shutdown()).await;
    anchoring.abort();
    stop.set();
    if let Some(notifying) = notifying {
        match notifying.await {
            Ok(Err(e)) => tracing::warn!("notifier: {e}"),
            Err(e) => tracing::warn!("notifier task: {e}"),
            Ok(Ok(_)) => {}
        }
    }
    served.map_err(|e| Error::source(format!("server: {e}")))?;
    crate::say!("stopped");
    Ok(0)
}
