//! What a notification says: the subject, plain text and HTML of an email, written from
//! the facts a delivery's body kept as of its change (docs/status.md, "Notifications").

use lifeboat_control::{Delivery, NoticeEvent, RecipientKind};
use lifeboat_web::html::escape;
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
    let body = &delivery.body;
    let page_url = page_url.trim_end_matches('/');
    let link = field(body, &["token"]).map(|token| format!("{page_url}/t/{token}"));
    let incident_name = field(body, &["incident_name"])
        .or_else(|| field(body, &["incident", "name"]))
        .unwrap_or("an incident");
    let place = body.get("place").and_then(Json::as_i64);
    let tenants = body.get("tenants").and_then(Json::as_i64);
    let restored_to = field(body, &["restored_to"]);
    let (subject, mut lines): (String, Vec<String>) = match delivery.event {
        NoticeEvent::StageQueued => (
            format!("{page}: your data is queued to be restored"),
            vec![
                format!("Your data is queued to be restored after {incident_name}."),
                match (place, tenants) {
                    (Some(p), Some(t)) => format!("Place in the queue: {p} of {t}."),
                    (Some(p), None) => format!("Place in the queue: {p}."),
                    _ => String::new(),
                },
                "Your page shows the estimated time once restores are under way.".into(),
            ],
        ),
        NoticeEvent::StageRestoring => (
            format!("{page}: your data is being restored"),
            vec![format!(
                "We have started restoring your data after {incident_name}."
            )],
        ),
        NoticeEvent::StageAwaitingAcceptance if partly(body) => {
            let (n, of) = phase_of(body).unwrap_or_default();
            (
                format!("{page}: part of your data is restored, please check it"),
                vec![
                    format!(
                        "Part of your data (step {n} of {of}) is restored and checked against \
                         our backup."
                    ),
                    "Please look at it and accept it on your page; the rest is restored \
                     after that."
                        .into(),
                ],
            )
        }
        NoticeEvent::StageAwaitingAcceptance => (
            format!("{page}: your data is restored, please check it"),
            vec![
                "Your data is restored and checked against our backup.".into(),
                "Please look at it and accept it on your page.".into(),
            ],
        ),
        NoticeEvent::StageRestored => (
            format!("{page}: your data is restored"),
            vec!["Your data is restored and handed back to you.".into()],
        ),
        NoticeEvent::StageFailed => (
            format!("{page}: we could not restore your data yet"),
            vec![
                "Restoring your data did not succeed yet. Our operators are on it and \
                 will restore it again."
                    .into(),
            ],
        ),
        NoticeEvent::AcceptanceReminder if partly(body) => (
            format!("{page}: reminder, please check your partly restored data"),
            vec![
                "Part of your data was restored and waits for you to check and accept it; \
                 the rest is restored after that."
                    .into(),
            ],
        ),
        NoticeEvent::AcceptanceReminder => (
            format!("{page}: reminder, please check your restored data"),
            vec!["Your data was restored and waits for you to check and accept it.".into()],
        ),
        NoticeEvent::SubscriptionConfirmation => (
            format!("{page}: confirm your subscription"),
            vec![
                "Someone, probably you, asked to receive incident updates from this status \
                 page at this address."
                    .into(),
                match field(body, &["confirm_url"]) {
                    Some(url) => format!("To confirm, open this link: {url}"),
                    None => String::new(),
                },
                "If it was not you, ignore this message: nothing will be sent.".into(),
            ],
        ),
        NoticeEvent::SupportReply => (
            format!("{page}: about your message to support"),
            vec![
                "We received a message to support about your account. Here is where the \
                 restore of your data stands."
                    .into(),
                match field(body, &["stage"]) {
                    Some("queued") => match place {
                        Some(p) => format!("Your data is queued to be restored (place {p})."),
                        None => "Your data is queued to be restored.".into(),
                    },
                    Some("restoring") | Some("verifying") => {
                        "Your data is being restored right now.".into()
                    }
                    Some("awaiting_acceptance") if partly(body) => {
                        "Part of your data is restored; please check it and accept it on your \
                         page, the rest is restored after that."
                            .into()
                    }
                    Some("awaiting_acceptance") => {
                        "Your data is restored; please check it and accept it on your page.".into()
                    }
                    Some("restored") => "Your data is restored.".into(),
                    Some("failed") => "Restoring your data did not succeed yet. Our \
                                       operators are on it."
                        .into(),
                    _ => String::new(),
                },
            ],
        ),
        NoticeEvent::SupportRequest => (
            format!("{page}: a support request"),
            vec![
                format!(
                    "A support request from {}.",
                    field(body, &["support_request", "email"]).unwrap_or("someone")
                ),
                field(body, &["support_request", "message"])
                    .unwrap_or("")
                    .to_string(),
            ],
        ),
        NoticeEvent::IncidentCreated
        | NoticeEvent::IncidentUpdated
        | NoticeEvent::IncidentResolved => {
            let status = field(body, &["update", "status"])
                .or_else(|| field(body, &["incident", "status"]))
                .unwrap_or("");
            let message = field(body, &["update", "body"]).unwrap_or("");
            (
                format!("{page}: {incident_name} ({})", status.replace('_', " ")),
                vec![message.to_string()],
            )
        }
    };
    if let Some(time) = restored_to {
        lines.push(format!("Restore point: your data as it was at {time}."));
    }
    lines.retain(|l| !l.is_empty());
    let mut text = lines.join("\n\n");
    let mut html: String = lines
        .iter()
        .map(|l| format!("<p>{}</p>", escape(l)))
        .collect();
    match (&link, delivery.recipient) {
        (Some(link), RecipientKind::Contact) => {
            text.push_str(&format!(
                "\n\nYour private status page (do not share it): {link}\n"
            ));
            html.push_str(&format!(
                "<p>Your private status page (do not share it): <a href=\"{0}\">{0}</a></p>",
                escape(link)
            ));
        }
        _ => {
            text.push_str(&format!("\n\nStatus page: {page_url}/\n"));
            html.push_str(&format!(
                "<p>Status page: <a href=\"{0}/\">{0}/</a></p>",
                escape(page_url)
            ));
        }
    }
    if let Some(url) = field(body, &["list_unsubscribe"]) {
        text.push_str(&format!("\nTo stop receiving these messages: {url}\n"));
        html.push_str(&format!(
            "<p><a href=\"{0}\">Unsubscribe</a> from these messages.</p>",
            escape(url)
        ));
    }
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body>{html}</body></html>",
        escape(&subject)
    );
    Written {
        subject,
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use lifeboat_control::{Delivery, DeliveryState, NoticeEvent, RecipientKind};
    use serde_json::json;

    fn awaiting(body: serde_json::Value) -> super::Written {
        written(NoticeEvent::StageAwaitingAcceptance, body)
    }

    fn written(event: NoticeEvent, body: serde_json::Value) -> super::Written {
        let delivery = Delivery {
            id: "d1".into(),
            key: "k1".into(),
            event,
            recipient: RecipientKind::Contact,
            address: "ann@one.example".into(),
            name: None,
            tenant: Some("1".into()),
            campaign: Some("c1".into()),
            body,
            state: DeliveryState::Pending,
            attempts: 0,
            last_error: None,
            next_at_us: 0,
            created_at: String::new(),
            sent_at: None,
            parent: None,
        };
        super::email(&delivery, "Example Status", "https://status.example.com")
    }

    #[test]
    fn a_phase_awaiting_acceptance_says_only_part_is_restored() {
        let part = awaiting(json!({"stage": "awaiting_acceptance", "token": "t",
            "phase": {"number": 1, "of": 2}}));
        assert_eq!(
            part.subject,
            "Example Status: part of your data is restored, please check it"
        );
        assert!(part.text.contains("step 1 of 2"), "{}", part.text);
        assert!(
            !part.text.contains("Your data is restored"),
            "{}",
            part.text
        );
        for body in [
            json!({"stage": "awaiting_acceptance", "phase": {"number": 2, "of": 2}}),
            json!({"stage": "awaiting_acceptance"}),
        ] {
            let whole = awaiting(body);
            assert_eq!(
                whole.subject,
                "Example Status: your data is restored, please check it"
            );
        }
        let part = json!({"stage": "awaiting_acceptance", "phase": {"number": 1, "of": 3}});
        let reminder = written(NoticeEvent::AcceptanceReminder, part.clone());
        assert!(
            reminder.text.contains("Part of your data"),
            "{}",
            reminder.text
        );
        let reply = written(NoticeEvent::SupportReply, part);
        assert!(reply.text.contains("Part of your data"), "{}", reply.text);
        let whole = json!({"stage": "awaiting_acceptance", "phase": {"number": 3, "of": 3}});
        let reply = written(NoticeEvent::SupportReply, whole);
        assert!(
            reply.text.contains("Your data is restored;"),
            "{}",
            reply.text
        );
    }
}
