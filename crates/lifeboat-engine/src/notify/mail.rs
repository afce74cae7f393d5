//! Email: a delivery written as a `multipart/alternative` message (plain text and HTML)
//! with a `Message-ID` made from the delivery's id, sent through SMTP (`[notify.smtp]`)
//! or written into a directory (the drill), with `lettre`.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{
    Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};

use lifeboat_control::Delivery;
use lifeboat_core::config::{SmtpConfig, SmtpTls};
use lifeboat_core::{Error, Result};

use super::text::Written;

/// How long an SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The `From` of the drill's emails when no `[notify.smtp]` names one.
const DRILL_FROM: &str = "Lifeboat drill <drill@lifeboat.invalid>";

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Directory(AsyncFileTransport<Tokio1Executor>),
}

/// Where emails go, and what they are sent as.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    id_domain: String,
}

fn parse_from(from: &str) -> Result<Mailbox> {
    from.parse()
        .map_err(|e| Error::config(format!("[notify.smtp] from = {from:?}: {e}")))
}

fn id_domain(smtp: Option<&SmtpConfig>) -> String {
    smtp.and_then(|s| s.message_id_domain.clone())
        .unwrap_or_else(|| "lifeboat".to_string())
}

impl Mailer {
    /// SMTP as `[notify.smtp]` says: TLS, STARTTLS or plain; a password from
    /// `password_file` or `LIFEBOAT_SMTP_PASSWORD` when `username` is set.
    pub fn smtp(smtp: &SmtpConfig) -> Result<Mailer> {
        let endpoint = smtp.endpoint()?;
        let refused = |e: lettre::transport::smtp::Error| {
            Error::config(format!("[notify.smtp] url = {:?}: {e}", smtp.url))
        };
        let builder = match endpoint.tls {
            SmtpTls::Wrapper => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&endpoint.host).map_err(refused)?
            }
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&endpoint.host)
                    .map_err(refused)?
            }
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(endpoint.host.as_str())
            }
        };
        let mut builder = builder.port(endpoint.port).timeout(Some(SMTP_TIMEOUT));
        if let Some(user) = &smtp.username {
            let password = match &smtp.password_file {
                Some(file) => std::fs::read_to_string(file)
                    .map_err(|e| {
                        Error::config(format!(
                            "[notify.smtp] password_file {}: {e}",
                            file.display()
                        ))
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                None => std::env::var("LIFEBOAT_SMTP_PASSWORD").map_err(|_| {
                    Error::config(
                        "[notify.smtp] username is set without a password: set password_file \
                         or LIFEBOAT_SMTP_PASSWORD",
                    )
                })?,
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mailer {
            transport: Transport::Smtp(builder.build()),
            from: parse_from(&smtp.from)?,
            id_domain: id_domain(Some(smtp)),
        })
    }

    /// Emails written as `.eml` files into `dir` (made if missing) instead of sent.
    pub fn directory(dir: &Path, smtp: Option<&SmtpConfig>) -> Result<Mailer> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(format!(
                "mail directory {}: cannot create: {e}",
                dir.display()
            ))
        })?;
        Ok(Mailer {
            transport: Transport::Directory(AsyncFileTransport::<Tokio1Executor>::new(dir)),
            from: parse_from(smtp.map_or(DRILL_FROM, |s| s.from.as_str()))?,
            id_domain: id_domain(smtp),
        })
    }

    /// The `Message-ID` of a delivery: the same for every attempt.
    pub fn message_id(&self, delivery: &Delivery) -> String {
        format!("<{}@{}>", delivery.id, self.id_domain)
    }

    /// The message for `delivery`, from `written`. Err: why it cannot be written (an
    /// address that does not parse: retrying will not help, but it is kept and listed).
    pub fn message(
        &self,
        delivery: &Delivery,
        written: &Written,
    ) -> std::result::Result<Message, String> {
        let address: Address = delivery
            .address
            .parse()
            .map_err(|e| format!("address {:?}: {e}", delivery.address))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(delivery.name.clone(), address))
            .subject(written.subject.clone())
            .message_id(Some(self.message_id(delivery)))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Lifeboat-Delivery"),
                delivery.id.clone(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Lifeboat-Event"),
                delivery.event.as_str().to_string(),
            ));
        // Subscriber mail names its one-click unsubscribe link (RFC 8058).
        if let Some(url) = delivery.body["list_unsubscribe"].as_str() {
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_string(),
                ));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                written.text.clone(),
                written.html.clone(),
            ))
            .map_err(|e| format!("message: {e}"))
    }

    /// Hand `message` to the mail server (or the directory). Err: why it was not taken.
    pub async fn send(&self, message: Message) -> std::result::Result<(), String> {
        match &self.transport {
            Transport::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                text
            }),
            Transport::Directory(dir) => dir
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}
