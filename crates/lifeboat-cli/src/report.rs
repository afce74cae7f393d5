//! `lifeboat sla report` (downtime and credits per tenant) and `lifeboat report` (the
//! post-incident report) (docs/status.md).

use std::path::PathBuf;

use lifeboat_core::sla::Month;
use lifeboat_core::{Error, Result};
use lifeboat_engine::campaign::open_control;
use lifeboat_engine::context::load_config;

use crate::output::print_json;

#[derive(clap::Args)]
pub struct SlaArgs {
    #[command(subcommand)]
    command: SlaCommand,
}

#[derive(clap::Subcommand)]
enum SlaCommand {
    /// Each tenant of an incident: downtime minutes, monthly uptime, tier and credit.
    Report {
        #[arg(long)]
        incident: String,
        /// The month (default: the month the incident started).
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
    },
}

pub async fn sla(config_path: Option<PathBuf>, args: SlaArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let SlaCommand::Report {
        incident,
        month,
        json,
        csv,
    } = args.command;
    let month = month.as_deref().map(Month::parse).transpose()?;
    let sla = config.sla.as_ref().ok_or_else(|| {
        Error::config("no [sla] in the configuration: declare [sla.tiers.NAME] first")
    })?;
    let mut control = open_control(&config, &config_path)?;
    let report = control.sla_report(&incident, sla, month)?;
    if json {
        print_json(&report);
    } else if csv {
        let mut out = csv::Writer::from_writer(Vec::new());
        let header = [
            "tenant",
            "campaign",
            "tier",
            "down_from",
            "down_until",
            "downtime_minutes",
            "downtime_minutes_in_month",
            "uptime_percent",
            "credit_percent",
        ];
        let write = |out: &mut csv::Writer<Vec<u8>>, row: &[String]| {
            out.write_record(row)
                .map_err(|e| Error::source(format!("csv: {e}")))
        };
        write(&mut out, &header.map(String::from))?;
        for l in &report.tenants {
            write(
                &mut out,
                &[
                    l.tenant.clone(),
                    l.campaign.clone(),
                    l.tier.clone().unwrap_or_default(),
                    l.down_from.clone(),
                    l.down_until.clone().unwrap_or_default(),
                    format!("{:.4}", l.downtime_minutes),
                    format!("{:.4}", l.downtime_minutes_in_month),
                    format!("{:.6}", l.uptime_percent),
                    l.credit_percent.to_string(),
                ],
            )?;
        }
        let bytes = out
            .into_inner()
            .map_err(|e| Error::source(format!("csv: {e}")))?;
        crate::say!("{}", String::from_utf8_lossy(&bytes).trim_end());
    } else {
        crate::say!(
            "incident {}, {} ({} minutes); downtime ends when {}",
            report.incident,
            report.month,
            report.month_minutes,
            if report.accept_ends_downtime {
                "the tenant accepts"
            } else {
                "the tenant is restored and verified"
            }
        );
        crate::say!(
            "{:<20} {:<12} {:>16} {:>10} {:>7}",
            "tenant",
            "tier",
            "downtime (min)",
            "uptime %",
            "credit"
        );
        for l in &report.tenants {
            crate::say!(
                "{:<20} {:<12} {:>16} {:>10.4} {:>6}%",
                l.tenant,
                l.tier.as_deref().unwrap_or("-"),
                format!(
                    "{:.2}{}",
                    l.downtime_minutes_in_month,
                    if l.down_until.is_none() { "+" } else { "" }
                ),
                l.uptime_percent,
                l.credit_percent
            );
        }
    }
    Ok(0)
}

#[derive(clap::Args)]
pub struct ReportArgs {
    #[arg(long)]
    incident: String,
    #[arg(long, value_enum, default_value = "md")]
    format: Format,
    /// Write it to this file (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Md,
    Html,
}

pub async fn report(config_path: Option<PathBuf>, args: ReportArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let mut control = open_control(&config, &config_path)?;
    let markdown = lifeboat_engine::report::draft(&config, &mut control, &args.incident)?;
    let text = match args.format {
        Format::Md => markdown,
        Format::Html => {
            let incident = control
                .incident(&args.incident)?
                .ok_or_else(|| Error::usage(format!("unknown incident {}", args.incident)))?;
            lifeboat_engine::report::html_document(&incident, &markdown)
        }
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| Error::usage(format!("cannot write {}: {e}", path.display())))?;
            crate::say!("report written to {}", path.display());
        }
        None => crate::say!("{}", text.trim_end()),
    }
    Ok(0)
}
