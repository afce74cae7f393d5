//! The pages for people, readable without JavaScript: the public status page, a tenant's
//! private page, and the Atom feed of incident updates, each in one language (every text
//! from the catalogs, `i18n`). Everything interpolated is escaped; times are shown to the
//! minute in UTC with how long ago they were.

use fluent_bundle::FluentValue;
use lifeboat_control::{Component, Incident, IncidentUpdate, Maintenance, Stage};

use crate::i18n::{Arg, Lang};
use crate::snapshot::{PageInfo, Progress, TenantSla, TenantView};
use crate::uptime::{Uptime, DAYS};

/// Escape text for HTML and XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML (the feed): dropped.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

pub(crate) const STYLE: &str =
    "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.6rem}.banner{padding:.8rem 1rem;border-radius:6px;\
background:#e8f5e9}.banner.minor{background:#fff8e1}.banner.major{background:#ffe0b2}\
.banner.critical{background:#ffcdd2}table{width:100%;border-collapse:collapse}\
td{padding:.4rem 0;border-bottom:1px solid #eee}td.s{text-align:right;color:#555}\
.update{margin:.5rem 0 .5rem 1rem}.meta{color:#666;font-size:.85rem}\
progress{width:100%}.stage{font-size:1.3rem;font-weight:600}.fallback{color:#666;\
font-size:.85rem}.langs{text-align:right;font-size:.85rem}.bars{display:flex;gap:1px;\
height:1.6rem;margin:.2rem 0}.bar{flex:1;background:#66bb6a;border-radius:1px}\
.bar.degraded_performance,.bar.under_maintenance{background:#ffca28}\
.bar.partial_outage{background:#ffa726}.bar.major_outage{background:#e53935}\
.axis{display:flex;justify-content:space-between;color:#666;font-size:.75rem}";

/// The Content-Security-Policy of every response: nothing but the inline stylesheet
/// (by its hash), no script, no framing, forms only to this server.
pub fn content_security_policy() -> String {
    use base64::Engine;
    use sha2::Digest;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self'; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'"
    )
}

/// `page` (a rendered public page) with a notice, in `lang`, that it has not been updated
/// for `age`.
pub fn stale_notice(lang: Lang, page: &[u8], age: std::time::Duration) -> String {
    let page = String::from_utf8_lossy(page);
    let notice = format!(
        "<body><p class=\"banner minor\" id=\"stale\">{}</p>",
        t(lang, "stale", &[("seconds", age.as_secs().into())])
    );
    page.replacen("<body>", &notice, 1)
}

/// Message `id` in `lang`, escaped.
fn t(lang: Lang, id: &str, args: &[(&str, Arg)]) -> String {
    escape(&lang.text(id, args))
}

/// Message `id` with the already escaped HTML `html` as its `$name`: markup inside a
/// sentence whose word order the language decides.
fn t_html(lang: Lang, id: &str, name: &str, html: &str) -> String {
    // A marker no catalog text contains stands for the markup while the rest is escaped.
    const MARK: &str = "\u{E000}";
    let text = lang.text(id, &[(name, FluentValue::from(MARK))]);
    escape(&text).replace(MARK, html)
}

/// A stored RFC 3339 time for people: `Apr 12, 14:32 UTC (3 hours ago)`, in a `<time>`
/// element whose machine-readable value is to the second.
fn when(lang: Lang, time: &str, now: i64) -> String {
    match lifeboat_core::time::parse(time) {
        Ok(us) => when_us(lang, us, now),
        Err(_) => String::new(),
    }
}

/// `when` of a time in µs since the epoch.
fn when_us(lang: Lang, us: i64, now: i64) -> String {
    let machine = chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    format!(
        "<time datetime=\"{}\">{}</time> <span class=\"ago\">({})</span>",
        escape(&machine),
        escape(&lang.time(us, now)),
        escape(&lang.relative(us, now))
    )
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0%".to_string()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn head(lang: Lang, title: &str, refresh: u32) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <title>{}</title><style>{STYLE}</style>\
         <link rel=\"alternate\" type=\"application/atom+xml\" href=\"/history.atom?lang={}\">\
         </head><body>",
        lang.code(),
        escape(title),
        lang.code()
    )
}

/// Links to the page in every language, each named in its own language.
fn language_links(lang: Lang) -> String {
    let links: Vec<String> = Lang::ALL
        .into_iter()
        .map(|l| {
            let name = t(l, "language-name", &[]);
            if l == lang {
                format!("<strong lang=\"{}\">{name}</strong>", l.code())
            } else {
                format!(
                    "<a href=\"?lang={0}\" hreflang=\"{0}\" lang=\"{0}\">{name}</a>",
                    l.code()
                )
            }
        })
        .collect();
    format!("<nav class=\"langs\">{}</nav>", links.join(" · "))
}

/// An update's text in `lang`: its translation, or its default text marked as shown in
/// the default language.
fn update_body(lang: Lang, update: &IncidentUpdate) -> String {
    if lang == Lang::DEFAULT {
        return escape(&update.body);
    }
    match update.translations.get(lang.code()) {
        Some(text) => escape(text),
        None => format!(
            "<span lang=\"{}\">{}</span> <span class=\"fallback\">{}</span>",
            Lang::DEFAULT.code(),
            escape(&update.body),
            t(lang, "shown-in-default", &[])
        ),
    }
}

fn updates_html(lang: Lang, incident: &Incident, now: i64) -> String {
    let mut out = String::new();
    for update in &incident.updates {
        out.push_str(&format!(
            "<div class=\"update\"><strong>{}</strong> — {}<div class=\"meta\">{}</div></div>",
            t(
                lang,
                &format!("incident-status-{}", update.status.as_str()),
                &[]
            ),
            update_body(lang, update),
            when(lang, &update.created_at, now)
        ));
    }
    out
}

/// Everything the public page shows, read once per snapshot.
pub struct PublicView<'a> {
    pub page: &'a PageInfo,
    pub components: &'a [Component],
    pub incidents: &'a [Incident],
    pub progress: &'a [Progress],
    pub uptime: &'a [Uptime],
    /// Maintenance going on, and scheduled.
    pub maintenance: (&'a [&'a Maintenance], &'a [&'a Maintenance]),
    /// Statuspage's overall indicator: `none`, `minor`, `major`, `critical`,
    /// `maintenance`.
    pub indicator: &'a str,
    pub now_us: i64,
}

/// The public page in `lang`: overall status, current incidents with their updates and
/// campaign progress, components with their uptime bars, past incidents with theirs.
pub fn public_page(lang: Lang, view: &PublicView) -> String {
    let now = view.now_us;
    let mut out = head(lang, &view.page.name, 30);
    out.push_str(&language_links(lang));
    out.push_str(&format!(
        "<h1>{}</h1><p class=\"banner {indicator}\" id=\"status\">{}</p>",
        escape(&view.page.name),
        t(lang, &format!("indicator-{}", view.indicator), &[]),
        indicator = escape(view.indicator),
    ));
    // Current incidents are headings of the page, past ones of their section.
    let incident_head = |incident: &Incident, level: u8| {
        format!(
            "<h{level}>{}</h{level}><p class=\"meta\">{} · {}</p>",
            escape(&incident.name),
            t(
                lang,
                &format!("incident-status-{}", incident.status.as_str()),
                &[]
            ),
            t(lang, &format!("impact-{}", incident.impact.as_str()), &[])
        )
    };
    for incident in view.incidents.iter().filter(|i| !i.status.is_resolved()) {
        out.push_str(&format!(
            "<section class=\"incident\" id=\"incident-{}\">",
            escape(&incident.id)
        ));
        out.push_str(&incident_head(incident, 2));
        for p in view.progress.iter().filter(|p| p.incident == incident.id) {
            out.push_str(&progress_html(lang, p, now));
        }
        if let Some(due) = view.page.next_update_due_us(incident) {
            let id = if due >= now {
                "next-update"
            } else {
                "next-update-overdue"
            };
            out.push_str(&format!(
                "<p class=\"next-update\">{}</p>",
                t_html(lang, id, "time", &when_us(lang, due, now))
            ));
        }
        out.push_str(&updates_html(lang, incident, now));
        out.push_str("</section>");
    }
    out.push_str(&maintenance_html(
        lang,
        view.maintenance.0,
        view.maintenance.1,
        now,
    ));
    out.push_str(&format!("<h2>{}</h2><table>", t(lang, "components", &[])));
    for c in view.components {
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"s\">{}</td></tr>",
            escape(&c.name),
            t(
                lang,
                &format!("component-status-{}", c.status.as_str()),
                &[]
            )
        ));
        if let Some(uptime) = view.uptime.iter().find(|u| u.component == c.id) {
            out.push_str(&format!(
                "<tr><td colspan=\"2\">{}</td></tr>",
                uptime_html(lang, uptime, now)
            ));
        }
    }
    out.push_str("</table>");
    let past: Vec<&Incident> = view
        .incidents
        .iter()
        .filter(|i| i.status.is_resolved())
        .take(10)
        .collect();
    if !past.is_empty() {
        out.push_str(&format!("<h2>{}</h2>", t(lang, "past-incidents", &[])));
        for incident in past {
            out.push_str(&format!(
                "<section class=\"incident past\" id=\"incident-{}\">",
                escape(&incident.id)
            ));
            out.push_str(&incident_head(incident, 3));
            if let Some(resolved) = &incident.resolved_at {
                out.push_str(&format!(
                    "<p class=\"meta\">{}</p>",
                    t_html(lang, "resolved-at", "time", &when(lang, resolved, now))
                ));
            }
            for p in view.progress.iter().filter(|p| p.incident == incident.id) {
                out.push_str(&progress_html(lang, p, now));
            }
            out.push_str(&updates_html(lang, incident, now));
            if let Some(body) = &incident.postmortem_body {
                out.push_str(&format!(
                    "<section class=\"postmortem\" id=\"postmortem-{}\">{}</section>",
                    escape(&incident.id),
                    crate::markdown::to_html(body)
                ));
            }
            out.push_str("</section>");
        }
    }
    out.push_str(&format!(
        "<h2>{}</h2>{}",
        t(lang, "get-updates", &[]),
        crate::forms::subscribe_form(lang, view.components)
    ));
    out.push_str(&format!(
        "<p class=\"meta\"><a href=\"/history.atom?lang={0}\">{1}</a> · \
         <a href=\"/api/v2/summary.json\">{2}</a> · \
         <a href=\"/support?lang={0}\">{3}</a></p></body></html>\n",
        lang.code(),
        t(lang, "atom-feed", &[]),
        t(lang, "json-feed", &[]),
        t(lang, "contact-support", &[])
    ));
    out
}

/// Maintenance going on, then scheduled: one section each, when there is any.
fn maintenance_html(
    lang: Lang,
    active: &[&Maintenance],
    upcoming: &[&Maintenance],
    now: i64,
) -> String {
    let plain = |time: &str| match lifeboat_core::time::parse(time) {
        Ok(us) => lang.time(us, now),
        Err(_) => time.to_string(),
    };
    let mut out = String::new();
    for (title, list) in [
        ("maintenance-active", active),
        ("maintenance-upcoming", upcoming),
    ] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!("<h2>{}</h2>", t(lang, title, &[])));
        for m in list {
            out.push_str(&format!(
                "<section class=\"maintenance\" id=\"maintenance-{}\"><h3>{}</h3>\
                 <p class=\"meta\">{} · {}</p>",
                escape(&m.id),
                escape(&m.name),
                t(
                    lang,
                    &format!("maintenance-status-{}", m.status.as_str()),
                    &[]
                ),
                t(
                    lang,
                    "maintenance-window",
                    &[
                        ("from", plain(&m.scheduled_for).into()),
                        ("until", plain(&m.scheduled_until).into())
                    ]
                )
            ));
            if let Some(update) = m.updates.first() {
                out.push_str(&format!("<p>{}</p>", escape(&update.body)));
            }
            out.push_str("</section>");
        }
    }
    out
}

/// A component's last days as bars (each titled with its day and outage), then its uptime.
fn uptime_html(lang: Lang, uptime: &Uptime, now: i64) -> String {
    let mut out = String::from("<div class=\"bars\">");
    for day in &uptime.days {
        let name = lang.day(day.start_us, now);
        let minutes = (day.down_us + 59_999_999) / 60_000_000;
        let title = if minutes == 0 {
            t(lang, "uptime-day-up", &[("day", name.into())])
        } else {
            t(
                lang,
                "uptime-day-down",
                &[("day", name.into()), ("minutes", minutes.into())],
            )
        };
        out.push_str(&format!(
            "<span class=\"bar {}\" title=\"{title}\"></span>",
            day.worst.as_str()
        ));
    }
    // Two decimals, never rounded up to a perfect record.
    let percent = (uptime.percent * 100.0).floor() / 100.0;
    out.push_str(&format!(
        "</div><div class=\"axis\"><span>{}</span><span class=\"uptime\">{}</span><span>{}</span></div>",
        t(lang, "uptime-days", &[("days", DAYS.into())]),
        t(lang, "uptime-percent", &[("percent", format!("{percent:.2}").into())]),
        t(lang, "uptime-today", &[])
    ));
    out
}

fn progress_html(lang: Lang, p: &Progress, now: i64) -> String {
    let eta = match (&p.eta, p.tenants_restored + p.tenants_failed == p.tenants) {
        (_, true) => t(lang, "complete", &[]),
        (Some(eta), _) => t_html(lang, "estimated-completion", "time", &when(lang, eta, now)),
        (None, _) => t(lang, "estimating-completion", &[]),
    };
    let failed = if p.tenants_failed > 0 {
        format!(
            " {}",
            t(
                lang,
                "need-attention",
                &[("count", p.tenants_failed.into())]
            )
        )
    } else {
        String::new()
    };
    let phases = if p.phases.is_empty() {
        String::new()
    } else {
        let each: Vec<String> = p
            .phases
            .iter()
            .map(|ph| {
                format!(
                    "<span class=\"phase\">{}</span>",
                    t(
                        lang,
                        "phase-progress",
                        &[
                            ("product", ph.label.as_str().into()),
                            ("percent", percent(ph.tenants_restored, ph.tenants).into()),
                        ]
                    )
                )
            })
            .collect();
        format!(
            "<p class=\"phases\">{} {}</p>",
            t(lang, "phases", &[]),
            each.join(" · ")
        )
    };
    format!(
        "<div class=\"campaign\" id=\"campaign-{id}\"><p>{label} \
         <span class=\"tenants\">{customers}</span> · <span class=\"users\">{users}</span></p>\
         <progress max=\"{t}\" value=\"{tr}\">{tp}</progress>{phases}\
         <p class=\"meta\">{target} {start} {eta}{failed}</p></div>",
        id = escape(&p.campaign),
        label = t(lang, "recovery", &[]),
        customers = t(
            lang,
            "progress-customers",
            &[
                ("restored", p.tenants_restored.into()),
                ("total", p.tenants.into()),
                ("percent", percent(p.tenants_restored, p.tenants).into()),
            ]
        ),
        users = t(
            lang,
            "progress-users",
            &[
                ("restored", p.users_restored.into()),
                ("total", p.users.into()),
                ("percent", percent(p.users_restored, p.users).into()),
            ]
        ),
        tr = p.tenants_restored,
        t = p.tenants,
        tp = percent(p.tenants_restored, p.tenants),
        target = t_html(
            lang,
            "restored-to",
            "time",
            &when(lang, &p.target_time, now)
        ),
        start = t_html(lang, "started", "time", &when(lang, &p.started_at, now)),
    )
}

/// A tenant's private page in `lang`: its own stage, place in the queue, ETA, restore
/// point, and the accept button when its acceptance is awaited.
pub fn tenant_page(
    lang: Lang,
    page: &PageInfo,
    token: &str,
    view: &TenantView,
    now: i64,
    offer_export: bool,
) -> String {
    let mut out = head(
        lang,
        &lang.text("tenant-title", &[("page", page.name.as_str().into())]),
        20,
    );
    out.push_str(&language_links(lang));
    out.push_str(&format!(
        "<h1>{}</h1><p class=\"meta\">{}</p><p class=\"stage\" id=\"stage\">{}</p>",
        t(lang, "tenant-heading", &[]),
        escape(&view.incident_name),
        stage_words(lang, view.stage)
    ));
    if !view.phases.is_empty() {
        let each: Vec<String> = view
            .phases
            .iter()
            .map(|(product, stage)| {
                format!(
                    "<li>{}</li>",
                    t(
                        lang,
                        "phase-stage",
                        &[
                            ("product", product.as_str().into()),
                            (
                                "stage",
                                lang.text(&format!("phase-stage-{}", stage.as_str()), &[])
                                    .into()
                            ),
                        ]
                    )
                )
            })
            .collect();
        out.push_str(&format!(
            "<p>{}</p><ul id=\"phases\">{}</ul>",
            t(lang, "phases", &[]),
            each.concat()
        ));
    }
    if let Some(position) = view.position {
        out.push_str(&format!(
            "<p id=\"position\">{}</p>",
            t(lang, "queue-place", &[("place", position.into())])
        ));
    }
    match &view.eta {
        Some(eta) => out.push_str(&format!(
            "<p id=\"eta\">{}</p>",
            t_html(lang, "eta", "time", &when(lang, eta, now))
        )),
        None if view.position.is_some() => out.push_str(&format!(
            "<p id=\"eta\">{}</p>",
            t(lang, "eta-estimating", &[])
        )),
        None => {}
    }
    out.push_str(&format!(
        "<p id=\"target\">{}</p>",
        t_html(
            lang,
            "tenant-target",
            "time",
            &when(lang, &view.target_time, now)
        )
    ));
    if let Some(sla) = &view.sla {
        out.push_str(&sla_html(lang, sla));
    }
    if view.stage == Stage::AwaitingAcceptance {
        out.push_str(&format!(
            "<form method=\"post\" action=\"/t/{}/accept?lang={}\"><p>{}</p>\
             <button type=\"submit\" id=\"accept\">{}</button></form>",
            escape(token),
            lang.code(),
            t(lang, "accept-prompt", &[]),
            t(lang, "accept-button", &[])
        ));
    }
    if view.stage == Stage::Failed {
        out.push_str(&format!("<p>{}</p>", t(lang, "team-alerted", &[])));
    }
    if offer_export {
        out.push_str(&export_block(lang, token, view, now));
    }
    out.push_str("</body></html>\n");
    out
}

/// The private page's offer of the tenant's data as of the restore point: ask for it,
/// wait for it, or download it through a short-lived link.
fn export_block(lang: Lang, token: &str, view: &TenantView, now: i64) -> String {
    let token = escape(token);
    let target = when(lang, &view.target_time, now);
    // A new archive may be asked for as a zip of CSV files or as an SQLite database; a new
    // link is to the archive already built.
    let ask = |button: &str, note: Option<&str>| {
        let sqlite = if button == "export-new-link" {
            String::new()
        } else {
            format!(
                " <button type=\"submit\" name=\"format\" value=\"sqlite\" \
                 id=\"export-request-sqlite\">{}</button>",
                t(lang, "export-ask-sqlite", &[])
            )
        };
        format!(
            "<form method=\"post\" action=\"/t/{token}/export?lang={}\" id=\"export\"><p>{}{}</p>\
             <button type=\"submit\" name=\"format\" value=\"csv\" id=\"export-request\">{}</button>\
             {sqlite}</form>",
            lang.code(),
            note.map(|n| format!("{} ", t(lang, n, &[])))
                .unwrap_or_default(),
            t_html(lang, "export-offer", "time", &target),
            t(lang, button, &[])
        )
    };
    let Some(export) = &view.export else {
        return ask("export-ask", None);
    };
    match export.state.as_str() {
        "ready" => match (&export.link, export.link_until_us) {
            (Some(link), Some(until)) if until > now => format!(
                "<p id=\"export\"><a id=\"export-link\" href=\"/t/{token}/export/{}\">{}</a> \
                 ({}). {}</p>",
                escape(link),
                t_html(lang, "export-ready", "time", &target),
                t(
                    lang,
                    if export.format == "sqlite" {
                        "export-size-sqlite"
                    } else {
                        "export-size"
                    },
                    &[("bytes", export.bytes.unwrap_or(0).to_string().into())]
                ),
                t_html(lang, "export-until", "time", &when_us(lang, until, now))
            ),
            _ => ask("export-new-link", Some("export-expired")),
        },
        "failed" => ask("export-retry", Some("export-failed")),
        // The archive was deleted after its link expired: it is built again if asked.
        "removed" => ask("export-ask", None),
        _ => format!("<p id=\"export\">{}</p>", t(lang, "export-preparing", &[])),
    }
}

/// A restored tenant's downtime and the credit it earns.
fn sla_html(lang: Lang, sla: &TenantSla) -> String {
    let credit = if sla.credit_percent > 0.0 {
        t(
            lang,
            "sla-credit",
            &[("credit", sla.credit_percent.to_string().into())],
        )
    } else {
        t(lang, "sla-no-credit", &[])
    };
    let tier = match &sla.tier {
        Some(tier) => format!(
            " {}",
            t(lang, "sla-tier", &[("tier", tier.as_str().into())])
        ),
        None => String::new(),
    };
    format!(
        "<div id=\"sla\"><p id=\"downtime\">{}{tier}</p><p id=\"credit\">{credit}</p></div>",
        t(
            lang,
            "sla-downtime",
            &[
                ("minutes", format!("{:.1}", sla.downtime_minutes).into()),
                ("month", sla.month.as_str().into()),
                ("percent", format!("{:.3}", sla.uptime_percent).into()),
            ]
        )
    )
}

/// A stage in words for the tenant, escaped.
pub fn stage_words(lang: Lang, stage: Stage) -> String {
    t(lang, &format!("stage-{}", stage.as_str()), &[])
}

/// The Atom feed in `lang`: one entry per incident update, newest first.
pub fn atom_feed(lang: Lang, page: &PageInfo, incidents: &[Incident], updated: &str) -> String {
    let mut entries: Vec<(&Incident, &IncidentUpdate)> = incidents
        .iter()
        .flat_map(|i| i.updates.iter().map(move |u| (i, u)))
        .collect();
    entries.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <feed xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"{lang}\">\
         <id>tag:lifeboat,{id}:history</id><title>{title}</title>\
         <updated>{updated}</updated><link rel=\"alternate\" type=\"text/html\" href=\"{url}/?lang={lang}\"/>\
         <link rel=\"self\" type=\"application/atom+xml\" href=\"{url}/history.atom?lang={lang}\"/>",
        lang = lang.code(),
        id = escape(&page.id),
        title = t(lang, "feed-title", &[("page", page.name.as_str().into())]),
        updated = escape(updated),
        url = escape(&page.url),
    );
    for (incident, update) in entries.into_iter().take(100) {
        let body = match update.translations.get(lang.code()) {
            Some(text) if lang != Lang::DEFAULT => text.clone(),
            _ => update.body.clone(),
        };
        out.push_str(&format!(
            "<entry><id>tag:lifeboat,{pid}:update:{uid}</id><title>{name}</title>\
             <updated>{at}</updated><published>{at}</published>\
             <link rel=\"alternate\" type=\"text/html\" href=\"{url}/?lang={lang}#incident-{iid}\"/>\
             <content type=\"text\">{status} — {body}</content></entry>",
            pid = escape(&page.id),
            uid = escape(&update.id),
            name = escape(&incident.name),
            at = escape(&update.created_at),
            url = escape(&page.url),
            lang = lang.code(),
            iid = escape(&incident.id),
            status = t(
                lang,
                &format!("incident-status-{}", update.status.as_str()),
                &[]
            ),
            body = escape(&body),
        ));
    }
    out.push_str("</feed>\n");
    out
}
