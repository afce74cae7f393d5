//! The post-incident report (docs/status.md, "The post-incident report"), drafted from
//! what the control store recorded: the guarded plans whose waves touched the incident's
//! tenants, the public updates, the campaigns and their batches; the numbers (tenants and
//! users affected, recovery time per tenant, recovery point); the communication record
//! (updates against the promised cadence, alarms, notifications by channel);
//! and the SLA credits owed. Markdown, for the operator to edit, or HTML.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use lifeboat_control::{
    ControlStore, DeliveryState, Downtime, Incident, NoticeEvent, RecipientKind, Stage,
};
use lifeboat_core::config::Config;
use lifeboat_core::time::{format_us, parse};
use lifeboat_core::{Error, Result};

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
struct Moment {
    at_us: i64,
    text: String,
}

/// A duration for people: `2 h 05 min`, `3 min 12 s`, `4.2 s`.
pub fn duration(us: i64) -> String {
    let seconds = us as f64 / 1e6;
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        let s = seconds as i64;
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (seconds / 60.0) as i64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

/// The `p`-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Text from the store in a Markdown line or table cell: one line, `|` escaped.
fn inline(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn stored_time(text: &str) -> Result<i64> {
    parse(text).map_err(|e| Error::source(format!("control store: {}", e.message())))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The guarded plans whose waves touched `tenants`: their audit entries, oldest first.
fn plan_moments(control: &mut ControlStore, tenants: &BTreeSet<&str>) -> Result<Vec<Moment>> {
    let entries = control.entries()?;
    let plans: BTreeSet<String> = entries
        .iter()
        .filter(|e| matches!(e.action.as_str(), "wave" | "wave-recovered"))
        .filter(|e| {
            e.details["tenants"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t.as_str().is_some_and(|t| tenants.contains(t)))
            })
        })
        .map(|e| e.subject.clone())
        .collect();
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| plans.contains(&e.subject)) {
        let short = &e.subject[..e.subject.len().min(12)];
        let d = &e.details;
        let text = match e.action.as_str() {
            "plan" => format!(
                "Plan {short} ({}) written and signed by {}: {} IDs, {} measured: {}",
                inline(d["operation"].as_str().unwrap_or("operation")),
                inline(&e.actor),
                d["ids"],
                plural(d["tenants"].as_u64().unwrap_or(0), "tenant", "tenants"),
                inline(&d["totals"].to_string())
            ),
            "approve" => format!("Plan {short} approved by {}", inline(&e.actor)),
            "restore-point" => format!(
                "Restore point of plan {short} taken: {}",
                inline(&d["positions"].to_string())
            ),
            "apply" => format!(
                "Apply of plan {short} started by {}: {} in waves {}",
                inline(&e.actor),
                plural(d["tenants"].as_u64().unwrap_or(0), "tenant", "tenants"),
                inline(d["waves"].as_str().unwrap_or(""))
            ),
            "wave" | "wave-recovered" => format!(
                "Wave {} of plan {short} committed: {}, {} changed (measured, as planned)",
                d["wave"],
                plural(
                    d["tenants"].as_array().map_or(0, |t| t.len() as u64),
                    "tenant",
                    "tenants"
                ),
                match d["rows"].as_u64() {
                    Some(rows) => plural(rows, "row", "rows"),
                    None => "rows".to_string(),
                }
            ),
            "wave-rolled-back" => format!("Wave {} of plan {short} rolled back", d["wave"]),
            "halted" => format!(
                "Apply of plan {short} halted before wave {} by {}",
                d["before_wave"],
                inline(d["by"].as_str().unwrap_or(&e.actor))
            ),
            "diverged" => format!(
                "Wave {} of plan {short} diverged from the plan and was rolled back: {}",
                d["wave"],
                inline(&d["differences"].to_string())
            ),
            "applied" => format!("Apply of plan {short} finished: every wave applied"),
            "undo" | "undone" => format!("Plan {short} undone by {}", inline(&e.actor)),
            _ => continue,
        };
        out.push(Moment {
            at_us: stored_time(&e.at)?,
            text,
        });
    }
    Ok(out)
}

/// The report of incident `id` as Markdown.
pub fn draft(config: &Config, control: &mut ControlStore, id: &str) -> Result<String> {
    let incident = control
        .incident(id)?
        .ok_or_else(|| Error::usage(format!("unknown incident {id}: `lifeboat incident list`")))?;
    let campaigns: Vec<_> = control
        .campaigns()?
        .into_iter()
        .rev()
        .filter(|c| c.incident == incident.id)
        .collect();
    let mut campaign_tenants = Vec::new();
    for c in &campaigns {
        campaign_tenants.extend(control.campaign_tenants(Some(&c.id))?);
    }
    let downtimes = control.downtimes(&incident, false)?;
    let tenant_keys: BTreeSet<&str> = campaign_tenants.iter().map(|t| t.tenant.as_str()).collect();

    // The timeline.
    let mut moments = plan_moments(control, &tenant_keys)?;
    for e in control.entries()? {
        if e.action.starts_with("alarm") && e.subject == format!("incident:{}", incident.id) {
            moments.push(Moment {
                at_us: stored_time(&e.at)?,
                text: format!("Alarm: {}", inline(&e.details.to_string())),
            });
        }
    }
    let deliveries = control.incident_deliveries(&incident.id)?;
    let alarms: Vec<&lifeboat_control::Delivery> = deliveries
        .iter()
        .filter(|d| {
            d.event == NoticeEvent::UpdateOverdue && d.recipient == RecipientKind::Operators
        })
        .collect();
    for alarm in &alarms {
        let facts = &alarm.body["update_overdue"];
        moments.push(Moment {
            at_us: stored_time(&alarm.created_at)?,
            text: format!(
                "Alarm to the operators: no public update since {}, one was due by {}",
                inline(facts["silent_since"].as_str().unwrap_or("?")),
                inline(facts["due_at"].as_str().unwrap_or("?"))
            ),
        });
    }
    if let Some(first) = downtimes.iter().map(|d| d.start_us).min() {
        let how = downtimes
            .iter()
            .find(|d| d.start_us == first)
            .map(|d| d.start_from.describe())
            .unwrap_or("");
        moments.push(Moment {
            at_us: first,
            text: format!("Tenants' data went missing (from the {how})"),
        });
    }
    for u in incident.updates.iter().rev() {
        moments.push(Moment {
            at_us: stored_time(&u.created_at)?,
            text: format!("Public update ({}): \"{}\"", u.status, inline(&u.body)),
        });
    }
    for c in &campaigns {
        let mine: Vec<_> = campaign_tenants
            .iter()
            .filter(|t| t.campaign == c.id)
            .collect();
        moments.push(Moment {
            at_us: c.created_at_us,
            text: format!(
                "Campaign {} started by {}: {} ({}) to restore as they were at {}, in \
                 batches of {}",
                c.id,
                inline(&c.created_by),
                plural(mine.len() as u64, "tenant", "tenants"),
                plural(
                    mine.iter().map(|t| t.users.max(0) as u64).sum(),
                    "user",
                    "users"
                ),
                c.target_time,
                c.batch_size
            ),
        });
        let mut batches: BTreeMap<i64, Vec<_>> = BTreeMap::new();
        for t in &mine {
            if let Some(started) = t.started_at_us {
                batches.entry(started).or_default().push(*t);
            }
        }
        for (number, (started, batch)) in batches.iter().enumerate() {
            let done: Vec<i64> = batch.iter().filter_map(|t| t.done_at_us).collect();
            let restored = batch
                .iter()
                .filter(|t| matches!(t.stage, Stage::AwaitingAcceptance | Stage::Restored))
                .count() as u64;
            let rows: i64 = batch.iter().filter_map(|t| t.rows).sum();
            let finished = done.iter().max().copied();
            moments.push(Moment {
                at_us: finished.unwrap_or(*started),
                text: format!(
                    "Batch {} of campaign {}: {} of {} restored and verified ({}, {}){}",
                    number + 1,
                    c.id,
                    restored,
                    plural(batch.len() as u64, "tenant", "tenants"),
                    plural(
                        batch.iter().map(|t| t.users.max(0) as u64).sum(),
                        "user",
                        "users"
                    ),
                    plural(rows.max(0) as u64, "row", "rows"),
                    match finished {
                        Some(end) => format!(", in {} from its claim", duration(end - started)),
                        None => ", not finished".to_string(),
                    }
                ),
            });
        }
    }
    let restored: Vec<&Downtime> = downtimes
        .iter()
        .filter(|d| d.restored_us.is_some())
        .collect();
    let all_restored = !downtimes.is_empty() && restored.len() == downtimes.len();
    if let Some(last) = restored.iter().filter_map(|d| d.restored_us).max() {
        moments.push(Moment {
            at_us: last,
            text: if all_restored {
                format!(
                    "Last tenant restored and verified: all {} restored",
                    downtimes.len()
                )
            } else {
                format!(
                    "Latest tenant restored and verified: {} of {} restored so far",
                    restored.len(),
                    downtimes.len()
                )
            },
        });
    }
    moments.sort_by_key(|m| m.at_us);

    let mut md = String::new();
    let _ = writeln!(md, "# Post-incident report: {}\n", inline(&incident.name));
    let _ = writeln!(
        md,
        "Incident {} · impact {} · status {} · started {}{}\n",
        incident.id,
        incident.impact,
        incident.status,
        incident.started_at,
        match &incident.resolved_at {
            Some(at) => format!(" · resolved {at}"),
            None => String::new(),
        }
    );
    let _ = writeln!(
        md,
        "_Drafted by Lifeboat from what it recorded. Edit before publishing: the SLA \
         section names tenants._\n"
    );
    let _ = writeln!(md, "## Timeline (UTC)\n");
    for m in &moments {
        let _ = writeln!(md, "- **{}** {}", format_us(m.at_us), m.text);
    }

    // The numbers.
    let _ = writeln!(md, "\n## Numbers\n");
    let users: i64 = campaign_tenants.iter().map(|t| t.users.max(0)).sum();
    let failed = campaign_tenants
        .iter()
        .filter(|t| t.stage == Stage::Failed)
        .count() as u64;
    let _ = writeln!(
        md,
        "- Affected: {} and {} (the tenants of the incident's campaigns).",
        plural(tenant_keys.len() as u64, "tenant", "tenants"),
        plural(users as u64, "user", "users")
    );
    let _ = writeln!(
        md,
        "- Restored and verified: {} of {}{}.",
        restored.len(),
        downtimes.len(),
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        }
    );
    let mut recovery: Vec<i64> = restored
        .iter()
        .filter_map(|d| d.restored_us.map(|r| r - d.start_us))
        .collect();
    recovery.sort_unstable();
    if recovery.is_empty() {
        let _ = writeln!(md, "- Recovery time per tenant: no tenant restored yet.");
    } else {
        let _ = writeln!(
            md,
            "- Recovery time per tenant (from its data going missing to restored and \
             verified): min {}, median {}, p95 {}, max {}.",
            duration(recovery[0]),
            duration(percentile(&recovery, 50.0)),
            duration(percentile(&recovery, 95.0)),
            duration(recovery[recovery.len() - 1])
        );
    }
    let rows: i64 = campaign_tenants.iter().filter_map(|t| t.rows).sum();
    let _ = writeln!(
        md,
        "- Rows restored and verified against the vault: {}.",
        rows.max(0)
    );
    for c in &campaigns {
        match c.target.get("before_tx").and_then(|t| t.as_str()) {
            Some(tx) => {
                let _ = writeln!(
                    md,
                    "- Recovery point of campaign {}: just before transaction {tx} ({}). Every \
                     change committed before it is restored: 0 rows lost by construction; \
                     changes made after it are not restored.",
                    c.id, c.target_time
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "- Recovery point of campaign {}: {} (a chosen time). Changes committed \
                     between it and the loss are not restored; Lifeboat did not measure \
                     them.",
                    c.id, c.target_time
                );
            }
        }
    }

    // Communication.
    let _ = writeln!(md, "\n## Communication\n");
    let mut posted: Vec<i64> = incident
        .updates
        .iter()
        .map(|u| stored_time(&u.created_at))
        .collect::<Result<_>>()?;
    posted.sort_unstable();
    let _ = writeln!(md, "- Public updates posted: {}.", posted.len());
    let mut gaps: Vec<i64> = posted.windows(2).map(|w| w[1] - w[0]).collect();
    if !incident.status.is_resolved() {
        if let Some(last) = posted.last() {
            gaps.push(lifeboat_core::time::clock_us() - last);
        }
    }
    if let Some(longest) = gaps.iter().max() {
        let _ = writeln!(
            md,
            "- Longest time without a public update: {}.",
            duration(*longest)
        );
    }
    if let (Some(first_loss), Some(first_post)) =
        (downtimes.iter().map(|d| d.start_us).min(), posted.first())
    {
        let _ = writeln!(
            md,
            "- First public word after the data went missing: {}.",
            duration((first_post - first_loss).max(0))
        );
    }
    match config.status.update_every(incident.impact.as_str()) {
        None => {
            let _ = writeln!(
                md,
                "- Promised update cadence: none for impact {} (`[status] update_every`).",
                incident.impact
            );
        }
        Some(every) => {
            let every_us = i64::try_from(every.as_micros()).unwrap_or(i64::MAX);
            let missed: i64 = gaps
                .iter()
                .map(|g| lifeboat_control::missed_periods(*g, every_us))
                .sum();
            let _ = writeln!(
                md,
                "- Promised update cadence (impact {}): every {}. Promised updates missed: {}{}.",
                incident.impact,
                duration(every_us),
                missed,
                match gaps.iter().max() {
                    Some(longest) if missed > 0 => {
                        format!(" (longest silence {})", duration(*longest))
                    }
                    _ => String::new(),
                }
            );
        }
    }
    let _ = writeln!(
        md,
        "- Overdue-update alarms to the operators: {}.",
        alarms.len()
    );
    // Notifications by channel, from the outbox.
    let mut channels: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for d in &deliveries {
        let channel = match d.recipient {
            RecipientKind::Contact => "Email to tenant contacts",
            RecipientKind::Address => "Email to subscribers and operators",
            RecipientKind::Operator => "Operator webhooks",
            RecipientKind::Webhook => "Subscriber webhooks",
            RecipientKind::Operators => continue,
        };
        let column = match d.state {
            DeliveryState::Sent => 0,
            DeliveryState::Dead => 1,
            DeliveryState::Pending | DeliveryState::Sending => 2,
            DeliveryState::Withdrawn => 3,
            DeliveryState::Expanded => continue,
        };
        channels.entry(channel).or_default()[column] += 1;
    }
    if channels.is_empty() {
        let _ = writeln!(md, "- Notifications about the incident: none were written.");
    } else {
        let _ = writeln!(
            md,
            "\n| Notifications | Delivered | Failed | Pending | Withdrawn |\n\
             |---|---:|---:|---:|---:|"
        );
        for (channel, [sent, dead, pending, withdrawn]) in &channels {
            let _ = writeln!(
                md,
                "| {channel} | {sent} | {dead} | {pending} | {withdrawn} |"
            );
        }
    }

    // Credits.
    let _ = writeln!(md, "\n## SLA credits owed\n");
    match &config.sla {
        None => {
            let _ = writeln!(md, "No service levels are configured (`[sla]`).");
        }
        Some(sla) => {
            let report = control.sla_report(&incident.id, sla, None)?;
            let owed: Vec<_> = report
                .tenants
                .iter()
                .filter(|l| l.credit_percent > 0.0)
                .collect();
            let _ = writeln!(
                md,
                "{} of {} tenants are owed a credit for {} (downtime {}).\n",
                owed.len(),
                report.tenants.len(),
                report.month,
                if sla.accept_ends_downtime {
                    "until accepted"
                } else {
                    "until restored and verified"
                }
            );
            if !report.tenants.is_empty() {
                let _ = writeln!(
                    md,
                    "| Tenant | Tier | Downtime (min) | Uptime | Credit |\n|---|---|---:|---:|---:|"
                );
                for l in &report.tenants {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {:.1}{} | {:.4}% | {}% |",
                        inline(&l.tenant),
                        inline(l.tier.as_deref().unwrap_or("-")),
                        l.downtime_minutes_in_month,
                        if l.down_until.is_none() {
                            " (ongoing)"
                        } else {
                            ""
                        },
                        l.uptime_percent,
                        l.credit_percent
                    );
                }
            }
        }
    }
    Ok(md)
}

/// The report as a whole HTML document.
pub fn html_document(incident: &Incident, markdown: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Post-incident report: {}</title><style>body{{font-family:system-ui,\
         sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}table{{border-collapse:\
         collapse}}td,th{{padding:.2rem .6rem;border-bottom:1px solid #ddd}}</style></head>\
         <body>\n{}</body></html>\n",
        lifeboat_web::html::escape(&incident.name),
        lifeboat_web::markdown::to_html(markdown)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_durations() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 50.0), 5);
        assert_eq!(percentile(&v, 95.0), 10);
        assert_eq!(percentile(&[7], 95.0), 7);
        assert_eq!(duration(4_200_000), "4.2 s");
        assert_eq!(duration(192_000_000), "3 min 12 s");
        assert_eq!(duration(7_500_000_000), "2 h 05 min");
        assert_eq!(inline("a |\n b"), "a \\| b");
    }
}
