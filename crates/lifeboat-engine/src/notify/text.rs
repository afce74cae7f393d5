//! What a notification says: the subject, plain text and HTML of an email, written from
//! the facts a delivery's body kept as of its change (docs/status.md, "Notifications"),
//! in the recipient's language. Every sentence is a `mail-*` message of the status pages'
//! catalogs (`lifeboat_web::i18n`, Fluent files); times are written for people in that
//! language. Messages to operators stay in English.

use lifeboat_control::{Delivery, NoticeEvent, RecipientKind};
use lifeboat_web::html::escape;
use lifeboat_web::i18n::{Arg, Lang};
use serde_json::Value as Json;

/// An email's subject and its two parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn field<'a>(body: &'a Json, path: &[&str]) -> Option<&'a str> {
    let mut value = body;
    for key in path {
        value = value.get(key)?;
    }
    value.as_str()
}

/// One paragraph, and the address in it that the HTML part makes a link.
struct Paragraph {
    text: String,
    link: Option<String>,
}

impl Paragraph {
    fn plain(text: String) -> Paragraph {
        Paragraph { text, link: None }
    }

    fn html(&self) -> String {
        let text = escape(&self.text);
        let text = match &self.link {
            Some(link) => {
                let link = escape(link);
                text.replacen(&link, &format!("<a href=\"{link}\">{link}</a>"), 1)
            }
            None => text,
        };
        format!("<p>{text}</p>")
    }
}

/// The language `delivery` is written in: the recipient's (the body's `lang`, a contact's
/// locale or a subscriber's page language, by its primary subtag) when a catalog has it,
/// else English; a support request, for the operators, is always in English.
pub fn language(delivery: &Delivery) -> Lang {
    if delivery.event == NoticeEvent::SupportRequest || !delivery.recipient.is_email() {
        return Lang::DEFAULT;
    }
    field(&delivery.body, &["lang"])
        .and_then(Lang::from_tag)
        .unwrap_or(Lang::DEFAULT)
}

/// A phased campaign's notice: the phase (1-based) and how many there are.
fn phase_of(body: &Json) -> Option<(i64, i64)> {
    let phase = body.get("phase")?;
    Some((phase.get("number")?.as_i64()?, phase.get("of")?.as_i64()?))
}

/// A phased campaign's notice of a phase before the last: only part of the data is back.
fn partly(body: &Json) -> bool {
    phase_of(body).is_some_and(|(n, of)| n < of)
}

/// The email for `delivery`: `page` is the status page's name, `page_url` its public
/// address (private links are `page_url/t/TOKEN`).
pub fn email(delivery: &Delivery, page: &str, page_url: &str) -> Written {
    email_at(delivery, page, page_url, lifeboat_core::time::now_us())
}

/// `email` written at `now_us` (a time in another year than now's shows its year).
pub fn email_at(delivery: &Delivery, page: &str, page_url: &str, now_us: i64) -> Written {
    let lang = language(delivery);
    let t = |id: &str, args: &[(&str, Arg)]| lang.text(id, args);
    // A time from the body, for people; as stored when it does not parse.
    let readable = |text: &str| match lifeboat_core::time::parse(text) {
        Ok(us) => lang.time(us, now_us),
        Err(_) => text.to_string(),
    };
    let body = &delivery.body;
    let page_url = page_url.trim_end_matches('/');
    // Links to the pages say the language, so they open in it whatever the browser asks.
    let lang_query = if lang == Lang::DEFAULT {
        String::new()
    } else {
        format!("?lang={lang}")
    };
    let link = field(body, &["token"]).map(|token| format!("{page_url}/t/{token}{lang_query}"));
    let unnamed = t("mail-incident-unnamed", &[]);
    let incident_name = field(body, &["incident_name"])
        .or_else(|| field(body, &["incident", "name"]))
        .unwrap_or(&unnamed)
        .to_string();
    let incident: &[(&str, Arg)] = &[("incident", incident_name.as_str().into())];
    let place = body.get("place").and_then(Json::as_i64);
    let tenants = body.get("tenants").and_then(Json::as_i64);
    let restored_to = field(body, &["restored_to"]);
    let subject = |id: &str| t(id, &[("page", page.into())]);
    let line = |id: &str, args: &[(&str, Arg)]| Paragraph::plain(t(id, args));
    let none = || Paragraph::plain(String::new());
    let (subject, mut lines): (String, Vec<Paragraph>) = match delivery.event {
        NoticeEvent::StageQueued => (
            subject("mail-queued-subject"),
            vec![
                line("mail-queued", incident),
                match (place, tenants) {
                    (Some(p), Some(n)) => line(
                        "mail-queued-place-of",
                        &[("place", p.into()), ("tenants", n.into())],
                    ),
                    (Some(p), None) => line("mail-queued-place", &[("place", p.into())]),
                    _ => none(),
                },
                line("mail-queued-eta", &[]),
            ],
        ),
        NoticeEvent::StageRestoring => (
            subject("mail-restoring-subject"),
            vec![line("mail-restoring", incident)],
        ),
        NoticeEvent::StageAwaitingAcceptance if partly(body) => {
            let (step, steps) = phase_of(body).unwrap_or_default();
            (
                subject("mail-awaiting-part-subject"),
                vec![
                    line(
                        "mail-awaiting-part",
                        &[("step", step.into()), ("steps", steps.into())],
                    ),
                    line("mail-awaiting-part-accept", &[]),
                ],
            )
        }
        NoticeEvent::StageAwaitingAcceptance => (
            subject("mail-awaiting-subject"),
            vec![
                line("mail-awaiting", &[]),
                line("mail-awaiting-accept", &[]),
            ],
        ),
        NoticeEvent::StageRestored => (
            subject("mail-restored-subject"),
            vec![line("mail-restored", &[])],
        ),
        NoticeEvent::StageFailed => (
            subject("mail-failed-subject"),
            vec![line("mail-failed", &[])],
        ),
        NoticeEvent::AcceptanceReminder if partly(body) => (
            subject("mail-reminder-subject"),
            vec![
                line("mail-reminder-part", &[]),
                match field(body, &["awaiting_since"]) {
                    Some(since) => line("mail-reminder-since", &[("time", readable(since).into())]),
                    None => none(),
                },
            ],
        ),
        NoticeEvent::AcceptanceReminder => (
            subject("mail-reminder-subject"),
            vec![
                line("mail-reminder", &[]),
                match field(body, &["awaiting_since"]) {
                    Some(since) => line("mail-reminder-since", &[("time", readable(since).into())]),
                    None => none(),
                },
            ],
        ),
        NoticeEvent::SubscriptionConfirmation => (
            subject("mail-confirm-subject"),
            vec![
                line("mail-confirm", &[]),
                match field(body, &["confirm_url"]) {
                    Some(url) => Paragraph {
                        text: t("mail-confirm-link", &[("link", url.into())]),
                        link: Some(url.to_string()),
                    },
                    None => none(),
                },
                line("mail-confirm-ignore", &[]),
            ],
        ),
        NoticeEvent::SupportReply => (
            subject("mail-support-subject"),
            vec![
                line("mail-support", &[]),
                match field(body, &["stage"]) {
                    Some("queued") => match place {
                        Some(p) => line("mail-support-queued-place", &[("place", p.into())]),
                        None => line("mail-support-queued", &[]),
                    },
                    Some("restoring") | Some("verifying") => line("mail-support-restoring", &[]),
                    Some("awaiting_acceptance") if partly(body) => {
                        line("mail-support-awaiting-part", &[])
                    }
                    Some("awaiting_acceptance") => line("mail-support-awaiting", &[]),
                    Some("restored") => line("mail-support-restored", &[]),
                    Some("failed") => line("mail-support-failed", &[]),
                    _ => none(),
                },
            ],
        ),
        // To the operators: English, like every operator message.
        NoticeEvent::SupportRequest => (
            format!("{page}: a support request"),
            vec![
                Paragraph::plain(format!(
                    "A support request from {}.",
                    field(body, &["support_request", "email"]).unwrap_or("someone")
                )),
                Paragraph::plain(
                    field(body, &["support_request", "message"])
                        .unwrap_or("")
                        .to_string(),
                ),
            ],
        ),
        NoticeEvent::DrillFailed => (
            format!("{page}: a live restore drill failed"),
            vec![
                Paragraph::plain(format!(
                    "The live restore drill {} failed.",
                    field(body, &["drill", "run"]).unwrap_or("")
                )),
                Paragraph::plain(field(body, &["drill", "summary"]).unwrap_or("").to_string()),
            ],
        ),
        NoticeEvent::UpdateOverdue => (
            format!("{page}: the public update of {incident_name} is overdue"),
            vec![
                Paragraph::plain(format!(
                    "No public update of {incident_name} has been posted since {}; the next \
                     one was promised by {} (every {} minutes).",
                    field(body, &["update_overdue", "silent_since"]).unwrap_or("its start"),
                    field(body, &["update_overdue", "due_at"]).unwrap_or("now"),
                    body["update_overdue"]["update_every_minutes"]
                )),
                Paragraph::plain(
                    "Post an update (`lifeboat incident update`) to stop this alarm.".to_string(),
                ),
            ],
        ),
        NoticeEvent::IncidentCreated
        | NoticeEvent::IncidentUpdated
        | NoticeEvent::IncidentResolved => {
            let status = field(body, &["update", "status"])
                .or_else(|| field(body, &["incident", "status"]))
                .unwrap_or("");
            let status = if status.is_empty() {
                String::new()
            } else {
                t(&format!("incident-status-{status}"), &[])
            };
            (
                t(
                    "mail-incident-subject",
                    &[
                        ("page", page.into()),
                        ("incident", incident_name.as_str().into()),
                        ("status", status.into()),
                    ],
                ),
                vec![Paragraph::plain(update_text(lang, body))],
            )
        }
    };
    if let Some(time) = restored_to {
        lines.push(line(
            "mail-restore-point",
            &[("time", readable(time).into())],
        ));
    }
    match (&link, delivery.recipient) {
        (Some(link), RecipientKind::Contact) => lines.push(Paragraph {
            text: t("mail-private-link", &[("link", link.as_str().into())]),
            link: Some(link.clone()),
        }),
        _ => {
            let url = format!("{page_url}/{lang_query}");
            lines.push(Paragraph {
                text: t("mail-status-page", &[("link", url.as_str().into())]),
                link: Some(url),
            })
        }
    }
    if let Some(url) = field(body, &["list_unsubscribe"]) {
        lines.push(Paragraph {
            text: t("mail-unsubscribe", &[("link", url.into())]),
            link: Some(url.to_string()),
        });
    }
    lines.retain(|l| !l.text.is_empty());
    let mut text = lines
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    text.push('\n');
    let html = format!(
        "<!DOCTYPE html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <title>{}</title></head><body>{}</body></html>",
        escape(&subject),
        lines.iter().map(Paragraph::html).collect::<String>()
    );
    Written {
        subject,
        text,
        html,
    }
}

/// An incident update's message in `lang`: its translation, else its English text marked
/// as shown in English (in `lang`).
fn update_text(lang: Lang, body: &Json) -> String {
    let english = field(body, &["update", "body"]).unwrap_or("");
    if lang == Lang::DEFAULT || english.is_empty() {
        return english.to_string();
    }
    match field(body, &["update", "translations", lang.code()]) {
        Some(translated) if !translated.trim().is_empty() => translated.to_string(),
        _ => format!("{english} {}", lang.text("shown-in-default", &[])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_control::{DeliveryState, NoticeEvent, RecipientKind};

    fn at(text: &str) -> i64 {
        lifeboat_core::time::parse(text).expect("time")
    }

    fn delivery(event: NoticeEvent, recipient: RecipientKind, body: Json) -> Delivery {
        Delivery {
            id: "d1".into(),
            key: "k".into(),
            event,
            recipient,
            address: "ann@one.example".into(),
            name: None,
            tenant: Some("1".into()),
            campaign: Some("c".into()),
            body,
            state: DeliveryState::Pending,
            attempts: 0,
            last_error: None,
            next_at_us: 0,
            created_at: "2026-04-12T14:00:00Z".into(),
            sent_at: None,
            parent: None,
        }
    }

    fn queued(lang: Option<&str>) -> Written {
        let mut body = serde_json::json!({
            "token": "TOKEN", "place": 2, "tenants": 5, "incident_name": "Sites deleted",
            "restored_to": "2026-04-12T14:32:59.928826Z",
        });
        if let Some(lang) = lang {
            body["lang"] = lang.into();
        }
        let d = delivery(NoticeEvent::StageQueued, RecipientKind::Contact, body);
        email_at(
            &d,
            "Example Status",
            "https://status.example.com/",
            at("2026-04-12T17:40:00Z"),
        )
    }

    #[test]
    fn a_stage_email_is_in_the_contacts_language_with_its_times() {
        let en = queued(None);
        assert_eq!(
            en.subject,
            "Example Status: your data is queued to be restored"
        );
        assert!(
            en.text.contains("Place in the queue: 2 of 5."),
            "{}",
            en.text
        );
        assert!(en.text.contains("Apr 12, 14:32 UTC"), "{}", en.text);
        assert!(
            en.text.contains("https://status.example.com/t/TOKEN\n"),
            "{}",
            en.text
        );
        let de = queued(Some("de-AT"));
        assert_eq!(
            de.subject,
            "Example Status: Ihre Daten stehen zur Wiederherstellung an"
        );
        assert!(
            de.text.contains("Platz in der Warteschlange: 2 von 5."),
            "{}",
            de.text
        );
        assert!(de.text.contains("12. Apr., 14:32 UTC"), "{}", de.text);
        assert!(de.text.contains("/t/TOKEN?lang=de"), "{}", de.text);
        assert!(de.html.starts_with("<!DOCTYPE html><html lang=\"de\">"));
        assert!(de
            .html
            .contains("<a href=\"https://status.example.com/t/TOKEN?lang=de\">"));
        let ja = queued(Some("ja_JP"));
        assert!(ja.subject.contains("復元"), "{}", ja.subject);
        assert!(ja.text.contains("4月12日 14:32 UTC"), "{}", ja.text);
        // A locale no catalog has reads English.
        assert_eq!(queued(Some("fr-CA")), en);
    }

    #[test]
    fn an_update_uses_the_translation_else_the_english_text_marked_as_such() {
        let body = serde_json::json!({
            "lang": "de",
            "incident": {"name": "Sites deleted", "status": "monitoring"},
            "update": {"status": "monitoring", "body": "Half of the sites are back.",
                "translations": {"de": "Die Hälfte der Seiten ist zurück."}},
        });
        let now = at("2026-04-12T17:40:00Z");
        let d = delivery(NoticeEvent::IncidentUpdated, RecipientKind::Address, body);
        let de = email_at(&d, "Example Status", "https://status.example.com", now);
        assert_eq!(
            de.subject,
            "Example Status: Sites deleted (Wird beobachtet)"
        );
        assert!(
            de.text.starts_with("Die Hälfte der Seiten ist zurück."),
            "{}",
            de.text
        );
        assert!(!de.text.contains("Half of the sites"), "{}", de.text);
        let mut ja = d.clone();
        ja.body["lang"] = "ja".into();
        let ja = email_at(&ja, "Example Status", "https://status.example.com", now);
        assert!(
            ja.text
                .starts_with("Half of the sites are back. （英語で表示）"),
            "{}",
            ja.text
        );
        assert!(
            ja.text.contains("https://status.example.com/?lang=ja"),
            "{}",
            ja.text
        );
    }

    #[test]
    fn a_support_request_for_the_operators_stays_english() {
        let body = serde_json::json!({
            "lang": "ja",
            "support_request": {"email": "ann@one.example", "message": "Hilfe"},
        });
        let d = delivery(NoticeEvent::SupportRequest, RecipientKind::Address, body);
        assert_eq!(language(&d), Lang::En);
        let w = email_at(&d, "Example Status", "https://status.example.com", 0);
        assert_eq!(w.subject, "Example Status: a support request");
    }

    #[test]
    fn a_phase_awaiting_acceptance_says_only_part_is_restored() {
        let written = |event: NoticeEvent, body: Json| {
            let d = delivery(event, RecipientKind::Contact, body);
            email_at(&d, "Example Status", "https://status.example.com", 0)
        };
        let part = serde_json::json!({"stage": "awaiting_acceptance", "token": "t",
            "phase": {"number": 1, "of": 2}});
        let w = written(NoticeEvent::StageAwaitingAcceptance, part);
        assert_eq!(
            w.subject,
            "Example Status: part of your data is restored, please check it"
        );
        assert!(w.text.contains("step 1 of 2"), "{}", w.text);
        assert!(!w.text.contains("Your data is restored"), "{}", w.text);
        for body in [
            serde_json::json!({"stage": "awaiting_acceptance", "phase": {"number": 2, "of": 2}}),
            serde_json::json!({"stage": "awaiting_acceptance"}),
        ] {
            let whole = written(NoticeEvent::StageAwaitingAcceptance, body);
            assert_eq!(
                whole.subject,
                "Example Status: your data is restored, please check it"
            );
        }
        let part = serde_json::json!({"stage": "awaiting_acceptance", "lang": "de",
            "phase": {"number": 1, "of": 3}});
        let reminder = written(NoticeEvent::AcceptanceReminder, part.clone());
        assert!(
            reminder.text.contains("Ein Teil Ihrer Daten"),
            "{}",
            reminder.text
        );
        let reply = written(NoticeEvent::SupportReply, part);
        assert!(
            reply.text.contains("Ein Teil Ihrer Daten"),
            "{}",
            reply.text
        );
        let whole = serde_json::json!({"stage": "awaiting_acceptance",
            "phase": {"number": 3, "of": 3}});
        let reply = written(NoticeEvent::SupportReply, whole);
        assert!(
            reply.text.contains("Your data is restored;"),
            "{}",
            reply.text
        );
    }
}
