//! The pages for people, readable without JavaScript: the public status page, a tenant's
//! private page, and the Atom feed of incident updates. Everything interpolated is
//! escaped.

use lifeboat_control::{Component, Incident, IncidentUpdate, Maintenance, Stage};

use crate::snapshot::{PageInfo, Progress, TenantSla, TenantView};

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
progress{width:100%}.stage{font-size:1.3rem;font-weight:600}";

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

/// `page` (a rendered public page) with a notice that it has not been updated for `age`.
pub fn stale_notice(page: &[u8], age: std::time::Duration) -> String {
    let page = String::from_utf8_lossy(page);
    let notice = format!(
        "<body><p class=\"banner minor\" id=\"stale\">This page could not be updated for \
         {} s; it shows the status as it was then.</p>",
        age.as_secs()
    );
    page.replacen("<body>", &notice, 1)
}

fn words(status: &str) -> String {
    let text = status.replace('_', " ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0%".to_string()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn head(title: &str, refresh: u32) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <title>{}</title><style>{STYLE}</style>\
         <link rel=\"alternate\" type=\"application/atom+xml\" href=\"/history.atom\">\
         </head><body>",
        escape(title)
    )
}

/// The public page: overall status, components, current incidents with their updates,
/// maintenance going on and scheduled, and every campaign's progress as counts.
pub fn public_page(
    page: &PageInfo,
    components: &[Component],
    incidents: &[Incident],
    (active, upcoming): (&[&Maintenance], &[&Maintenance]),
    progress: &[Progress],
    (indicator, description): (&str, &str),
) -> String {
    let mut out = head(&page.name, 30);
    out.push_str(&format!(
        "<h1>{}</h1><p class=\"banner {indicator}\" id=\"status\">{}</p>",
        escape(&page.name),
        escape(description)
    ));
    let open: Vec<&Incident> = incidents
        .iter()
        .filter(|i| !i.status.is_resolved())
        .collect();
    for incident in &open {
        out.push_str(&format!(
            "<section class=\"incident\" id=\"incident-{}\"><h2>{}</h2>\
             <p class=\"meta\">{} · impact {}</p>",
            escape(&incident.id),
            escape(&incident.name),
            escape(&words(incident.status.as_str())),
            escape(incident.impact.as_str())
        ));
        for p in progress.iter().filter(|p| p.incident == incident.id) {
            out.push_str(&progress_html(p));
        }
        for update in &incident.updates {
            out.push_str(&format!(
                "<div class=\"update\"><strong>{}</strong> — {}<div class=\"meta\">{}</div></div>",
                escape(&words(update.status.as_str())),
                escape(&update.body),
                escape(&update.created_at)
            ));
        }
        out.push_str("</section>");
    }
    out.push_str(&maintenance_html(active, upcoming));
    out.push_str("<h2>Components</h2><table>");
    for c in components {
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"s\">{}</td></tr>",
            escape(&c.name),
            escape(&words(c.status.as_str()))
        ));
    }
    out.push_str("</table>");
    let past: Vec<&Incident> = incidents
        .iter()
        .filter(|i| i.status.is_resolved())
        .take(10)
        .collect();
    if !past.is_empty() {
        out.push_str("<h2>Past incidents</h2>");
        for incident in past {
            out.push_str(&format!(
                "<p id=\"incident-{}\"><strong>{}</strong> \
                 <span class=\"meta\">resolved {}</span></p>",
                escape(&incident.id),
                escape(&incident.name),
                escape(incident.resolved_at.as_deref().unwrap_or(""))
            ));
            for p in progress.iter().filter(|p| p.incident == incident.id) {
                out.push_str(&progress_html(p));
            }
            if let Some(body) = &incident.postmortem_body {
                out.push_str(&format!(
                    "<section class=\"postmortem\" id=\"postmortem-{}\">{}</section>",
                    escape(&incident.id),
                    crate::markdown::to_html(body)
                ));
            }
        }
    }
    out.push_str(&format!(
        "<h2>Get updates</h2>{}",
        crate::forms::subscribe_form(components)
    ));
    out.push_str(
        "<p class=\"meta\"><a href=\"/history.atom\">Atom feed</a> · \
                  <a href=\"/api/v2/summary.json\">JSON</a> · \
                  <a href=\"/support\">Contact support</a></p></body></html>\n",
    );
    out
}

/// Maintenance going on, then scheduled: one section each, when there is any.
fn maintenance_html(active: &[&Maintenance], upcoming: &[&Maintenance]) -> String {
    let mut out = String::new();
    for (title, list) in [
        ("Maintenance in progress", active),
        ("Scheduled maintenance", upcoming),
    ] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!("<h2>{title}</h2>"));
        for m in list {
            out.push_str(&format!(
                "<section class=\"maintenance\" id=\"maintenance-{}\"><h3>{}</h3>\
                 <p class=\"meta\">{} · {} to {}</p>",
                escape(&m.id),
                escape(&m.name),
                escape(&words(m.status.as_str())),
                escape(&m.scheduled_for),
                escape(&m.scheduled_until)
            ));
            if let Some(update) = m.updates.first() {
                out.push_str(&format!("<p>{}</p>", escape(&update.body)));
            }
            out.push_str("</section>");
        }
    }
    out
}

fn progress_html(p: &Progress) -> String {
    format!(
        "<div class=\"campaign\" id=\"campaign-{id}\"><p>Recovery: \
         <span class=\"tenants\">{tr} of {t} customers restored ({tp})</span>, \
         <span class=\"users\">{ur} of {u} users ({up})</span>.</p>\
         <progress max=\"{t}\" value=\"{tr}\">{tp}</progress>\
         <p class=\"meta\">Data restored to {target}. Started {start}. {eta}{failed}</p></div>",
        id = escape(&p.campaign),
        tr = p.tenants_restored,
        t = p.tenants,
        tp = percent(p.tenants_restored, p.tenants),
        ur = p.users_restored,
        u = p.users,
        up = percent(p.users_restored, p.users),
        target = escape(&p.target_time),
        start = escape(&p.started_at),
        eta = match (&p.eta, p.tenants_restored + p.tenants_failed == p.tenants) {
            (_, true) => "Complete.".to_string(),
            (Some(eta), _) => format!("Estimated completion {}.", escape(eta)),
            (None, _) => "Estimating completion time.".to_string(),
        },
        failed = if p.tenants_failed > 0 {
            format!(" {} need attention from our team.", p.tenants_failed)
        } else {
            String::new()
        },
    )
}

/// A tenant's private page: its own stage, place in the queue, ETA, restore point, and
/// the accept button when its acceptance is awaited.
pub fn tenant_page(page: &PageInfo, token: &str, view: &TenantView, offer_export: bool) -> String {
    let mut out = head(&format!("{} — your recovery", page.name), 20);
    out.push_str(&format!(
        "<h1>Your data recovery</h1><p class=\"meta\">{}</p>\
         <p class=\"stage\" id=\"stage\">{}</p>",
        escape(&view.incident_name),
        escape(&stage_words(view.stage))
    ));
    if let Some(position) = view.position {
        out.push_str(&format!(
            "<p id=\"position\">Place in the recovery queue: {position}</p>"
        ));
    }
    match &view.eta {
        Some(eta) => out.push_str(&format!(
            "<p id=\"eta\">Estimated time of restoration: {}</p>",
            escape(eta)
        )),
        None if view.position.is_some() => {
            out.push_str("<p id=\"eta\">Estimating the time of restoration.</p>")
        }
        None => {}
    }
    out.push_str(&format!(
        "<p id=\"target\">Your data is restored as it was at {}.</p>",
        escape(&view.target_time)
    ));
    if let Some(sla) = &view.sla {
        out.push_str(&sla_html(sla));
    }
    if view.stage == Stage::AwaitingAcceptance {
        out.push_str(&format!(
            "<form method=\"post\" action=\"/t/{}/accept\"><p>Please check your data and \
             confirm that it is complete.</p><button type=\"submit\" id=\"accept\">\
             Accept the restored data</button></form>",
            escape(token)
        ));
    }
    if view.stage == Stage::Failed {
        out.push_str("<p>Our team has been alerted and is working on your recovery.</p>");
    }
    if offer_export {
        out.push_str(&export_block(token, view, lifeboat_core::time::now_us()));
    }
    out.push_str("</body></html>\n");
    out
}

/// The private page's offer of the tenant's data as of the restore point: ask for it,
/// wait for it, or download it through a short-lived link.
fn export_block(token: &str, view: &TenantView, now_us: i64) -> String {
    let token = escape(token);
    let ask = |button: &str, note: &str| {
        format!(
            "<form method=\"post\" action=\"/t/{token}/export\" id=\"export\"><p>{note}\
             You can download your data as it was at {}, while you wait.</p>\
             <button type=\"submit\" id=\"export-request\">{button}</button></form>",
            escape(&view.target_time)
        )
    };
    let Some(export) = &view.export else {
        return ask("Prepare a download of my data", "");
    };
    match export.state.as_str() {
        "ready" => match (&export.link, export.link_until_us) {
            (Some(link), Some(until)) if until > now_us => format!(
                "<p id=\"export\"><a id=\"export-link\" href=\"/t/{token}/export/{}\">\
                 Download your data as it was at {} (zip, {} bytes)</a>. This link works \
                 until {}.</p>",
                escape(link),
                escape(&view.target_time),
                export.bytes.unwrap_or(0),
                escape(&lifeboat_core::time::format_us(until))
            ),
            _ => ask(
                "Get a new download link",
                "Your download link has expired. ",
            ),
        },
        "failed" => ask("Try again", "We could not prepare your download. "),
        _ => "<p id=\"export\">Your download is being prepared. This page refreshes by \
              itself.</p>"
            .to_string(),
    }
}

/// A restored tenant's downtime and the credit it earns.
fn sla_html(sla: &TenantSla) -> String {
    let credit = if sla.credit_percent > 0.0 {
        format!(
            "A service credit of {}% is owed to you.",
            escape(&sla.credit_percent.to_string())
        )
    } else {
        "Your monthly uptime stays within your service level: no credit is due.".to_string()
    };
    format!(
        "<div id=\"sla\"><p id=\"downtime\">Your data was unavailable for {:.1} minutes. \
         Uptime in {}: {:.3}%{}.</p><p id=\"credit\">{credit}</p></div>",
        sla.downtime_minutes,
        escape(&sla.month),
        sla.uptime_percent,
        match &sla.tier {
            Some(tier) => format!(" (service level {})", escape(tier)),
            None => String::new(),
        }
    )
}

pub fn stage_words(stage: Stage) -> String {
    match stage {
        Stage::Queued => "Queued for recovery",
        Stage::Restoring => "Restoring your data",
        Stage::Verifying => "Verifying your restored data",
        Stage::AwaitingAcceptance => "Restored: awaiting your acceptance",
        Stage::Restored => "Restored",
        Stage::Failed => "Recovery needs attention",
    }
    .to_string()
}

/// The Atom feed: one entry per incident update, newest first.
pub fn atom_feed(page: &PageInfo, incidents: &[Incident], updated: &str) -> String {
    let mut entries: Vec<(&Incident, &IncidentUpdate)> = incidents
        .iter()
        .flat_map(|i| i.updates.iter().map(move |u| (i, u)))
        .collect();
    entries.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <feed xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"en\">\
         <id>tag:lifeboat,{id}:history</id><title>{name} status history</title>\
         <updated>{updated}</updated><link rel=\"alternate\" type=\"text/html\" href=\"{url}/\"/>\
         <link rel=\"self\" type=\"application/atom+xml\" href=\"{url}/history.atom\"/>",
        id = escape(&page.id),
        name = escape(&page.name),
        updated = escape(updated),
        url = escape(&page.url),
    );
    for (incident, update) in entries.into_iter().take(100) {
        out.push_str(&format!(
            "<entry><id>tag:lifeboat,{pid}:update:{uid}</id><title>{name}</title>\
             <updated>{at}</updated><published>{at}</published>\
             <link rel=\"alternate\" type=\"text/html\" href=\"{url}/#incident-{iid}\"/>\
             <content type=\"text\">{status} — {body}</content></entry>",
            pid = escape(&page.id),
            uid = escape(&update.id),
            name = escape(&incident.name),
            at = escape(&update.created_at),
            url = escape(&page.url),
            iid = escape(&incident.id),
            status = escape(&words(update.status.as_str())),
            body = escape(&update.body),
        ));
    }
    out.push_str("</feed>\n");
    out
}
