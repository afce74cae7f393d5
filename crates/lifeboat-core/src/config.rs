//! The configuration file (one TOML file, see lifeboat.example.toml) and its validation.
//! Parsing checks the shape; `tenancy::resolve` later checks it against the live schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::Dialect;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub vault: VaultConfig,
    #[serde(default)]
    pub control: Option<ControlConfig>,
    #[serde(default)]
    pub capture: CaptureConfig,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub guard: GuardConfig,
    /// Who may write plans: name -> OpenSSH public key (docs/guard.md, "People").
    #[serde(default)]
    pub authors: BTreeMap<String, String>,
    /// Who may approve plans: name -> OpenSSH public key.
    #[serde(default)]
    pub approvers: BTreeMap<String, String>,
    /// ID kinds: what a typed parameter's IDs must be.
    #[serde(default)]
    pub kinds: BTreeMap<String, KindConfig>,
    /// Destructive operations run through plan, approve and apply.
    #[serde(default)]
    pub operations: BTreeMap<String, OperationConfig>,
    /// The status page and operator API (`lifeboat serve`).
    #[serde(default)]
    pub server: ServerConfig,
    /// Recovery campaigns and their workers.
    #[serde(default)]
    pub campaigns: CampaignConfig,
    /// Tenant contacts read from the vault (docs/status.md, "Contacts").
    #[serde(default)]
    pub contacts: Option<ContactsConfig>,
    /// `[notify]`: how the outbox is delivered (docs/status.md, "Notifications").
    #[serde(default)]
    pub notify: NotifyConfig,
    /// Service levels and the credits owed when they are missed (docs/status.md, "SLA and
    /// credits").
    #[serde(default)]
    pub sla: Option<SlaConfig>,
    /// Incident update templates, filled from a campaign's measured progress
    /// (`lifeboat incident update ID --template NAME`).
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateConfig>,
    /// `[status]`: what the status page promises its readers (docs/status.md, "The
    /// update cadence").
    #[serde(default)]
    pub status: StatusConfig,
}

/// `[status]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// The promised time between two public updates of an unresolved incident: one
    /// duration for every incident, or one per impact (none: no promise, no alarm).
    #[serde(default)]
    pub update_every: Option<UpdateEvery>,
}

impl StatusConfig {
    /// The promised cadence of an incident of `impact` (`none`, `minor`, `major`,
    /// `critical`), if one is promised.
    pub fn update_every(&self, impact: &str) -> Option<std::time::Duration> {
        self.update_every
            .as_ref()
            .and_then(|u| u.for_impact(impact))
    }
}

/// The impacts `[status.update_every]` may name, and `default` for the others.
pub const UPDATE_EVERY_KEYS: [&str; 5] = ["critical", "major", "minor", "none", "default"];
/// The shortest promised cadence.
pub const MIN_UPDATE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest promised cadence (a week).
pub const MAX_UPDATE_EVERY: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// `update_every = "60m"`, or `[status.update_every]` with a duration per impact and
/// `default` for the impacts not named. Durations as people write them: `30m`, `2h`,
/// `1h 30m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateEvery {
    /// Impact (or `default`) -> cadence.
    pub by_impact: BTreeMap<String, std::time::Duration>,
}

impl UpdateEvery {
    /// The cadence of `impact`: its own, else `default`, else none.
    pub fn for_impact(&self, impact: &str) -> Option<std::time::Duration> {
        self.by_impact
            .get(impact)
            .or_else(|| self.by_impact.get("default"))
            .copied()
    }
}

/// A promised cadence as written at `key`: a duration from 1 minute to 7 days.
pub fn parse_update_every(key: &str, text: &str) -> Result<std::time::Duration> {
    let refuse = |why: String| {
        Error::config(format!(
            "{key} = {text:?}: {why} (write a duration such as \"30m\", \"2h\" or \"1h 30m\", \
             from 1m to 7d)"
        ))
    };
    let every = humantime::parse_duration(text.trim()).map_err(|e| refuse(e.to_string()))?;
    if every < MIN_UPDATE_EVERY {
        return Err(refuse("shorter than a minute".into()));
    }
    if every > MAX_UPDATE_EVERY {
        return Err(refuse("longer than a week".into()));
    }
    Ok(every)
}

impl<'de> Deserialize<'de> for UpdateEvery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = toml::Value::deserialize(d)?;
        let mut by_impact = BTreeMap::new();
        match value {
            toml::Value::String(text) => {
                let every = parse_update_every("[status] update_every", &text)
                    .map_err(|e| D::Error::custom(e.message()))?;
                by_impact.insert("default".to_string(), every);
            }
            toml::Value::Table(table) => {
                for (impact, text) in table {
                    let key = format!("[status.update_every] {impact}");
                    if !UPDATE_EVERY_KEYS.contains(&impact.as_str()) {
                        return Err(D::Error::custom(format!(
                            "{key}: unknown impact; use {}",
                            UPDATE_EVERY_KEYS.join(", ")
                        )));
                    }
                    let toml::Value::String(text) = text else {
                        return Err(D::Error::custom(format!(
                            "{key} = {text}: write the duration as a string, e.g. \"30m\""
                        )));
                    };
                    let every = parse_update_every(&key, &text)
                        .map_err(|e| D::Error::custom(e.message()))?;
                    by_impact.insert(impact, every);
                }
            }
            other => {
                return Err(D::Error::custom(format!(
                    "[status] update_every = {other}: write a duration such as \"60m\", or a \
                     table [status.update_every] with one per impact"
                )))
            }
        }
        Ok(UpdateEvery { by_impact })
    }
}

/// `[templates.NAME]`: an incident update's text with `{field}` placeholders (`{{` and `}}`
/// for braces), and optionally the status it posts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub message: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// The fields a template may name, each filled from the incident's campaign.
pub const TEMPLATE_FIELDS: [(&str, &str); 12] = [
    ("incident", "the incident's name"),
    ("tenants", "tenants in the campaign"),
    ("tenants_restored", "tenants restored and verified"),
    ("tenants_percent", "tenants restored, percent (whole)"),
    ("tenants_failed", "tenants whose restore failed"),
    ("tenants_remaining", "tenants not restored yet"),
    ("users", "users of the campaign's tenants"),
    ("users_restored", "users of the tenants restored"),
    ("users_percent", "users restored, percent (whole)"),
    (
        "eta",
        "estimated completion (RFC 3339), or \"unknown\" until measured",
    ),
    (
        "restored_to",
        "the instant the data is restored to (RFC 3339)",
    ),
    ("now", "what is being done now, in words"),
];

/// The parts of a template: text and `{field}` names, in order.
pub enum TemplatePart<'a> {
    Text(std::borrow::Cow<'a, str>),
    Field(&'a str),
}

/// Split a template's text into parts; an unclosed brace or an unknown field is an error.
pub fn template_parts(text: &str) -> Result<Vec<TemplatePart<'_>>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut literal = String::new();
    while let Some(i) = rest.find(['{', '}']) {
        literal.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            literal.push(tail.as_bytes()[0] as char);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(Error::config(
                "a lone '}': write '}}' for a brace".to_string(),
            ));
        }
        let end = tail
            .find('}')
            .ok_or_else(|| Error::config("a '{' without its '}'; write '{{' for a brace"))?;
        let name = &tail[1..end];
        if !TEMPLATE_FIELDS.iter().any(|(field, _)| *field == name) {
            let known: Vec<&str> = TEMPLATE_FIELDS.iter().map(|(f, _)| *f).collect();
            return Err(Error::config(format!(
                "unknown field {{{name}}}; fields: {}",
                known.join(", ")
            )));
        }
        if !literal.is_empty() {
            out.push(TemplatePart::Text(std::mem::take(&mut literal).into()));
        }
        out.push(TemplatePart::Field(name));
        rest = &tail[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        out.push(TemplatePart::Text(literal.into()));
    }
    Ok(out)
}

impl TemplateConfig {
    /// The message with every field filled from `fields` (a field without a value: empty).
    pub fn render(&self, fields: &BTreeMap<&str, String>) -> Result<String> {
        let mut out = String::new();
        for part in template_parts(&self.message)? {
            match part {
                TemplatePart::Text(text) => out.push_str(&text),
                TemplatePart::Field(name) => {
                    out.push_str(fields.get(name).map(String::as_str).unwrap_or(""))
                }
            }
        }
        Ok(out)
    }
}

/// `[sla]`: each tenant's tier comes from a tenant attribute; a tier's credit table turns
/// a month's uptime into a credit.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    /// The tenant attribute (`lifeboat campaign import-attributes`, `[campaigns.attributes]`)
    /// that names a tenant's tier.
    #[serde(default = "default_tier_attribute")]
    pub tier_attribute: String,
    /// The tier of a tenant without the attribute, or whose attribute names no tier.
    #[serde(default)]
    pub default_tier: Option<String>,
    /// A tenant's downtime ends when its admin accepts the restored data, not when it is
    /// restored and verified.
    #[serde(default)]
    pub accept_ends_downtime: bool,
    #[serde(default)]
    pub tiers: BTreeMap<String, TierConfig>,
}

/// `[sla.tiers.NAME]`: the promised monthly uptime (percent) and the credit table:
/// `[threshold, credit]` pairs, thresholds descending; a month whose uptime is below a
/// threshold earns that row's credit (the lowest such threshold's).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub target: f64,
    #[serde(default)]
    pub credits: Vec<(f64, f64)>,
}

fn default_tier_attribute() -> String {
    "edition".to_string()
}

impl SlaConfig {
    fn validate(&self) -> Result<()> {
        if self.tier_attribute.trim().is_empty() {
            return Err(Error::config("[sla] tier_attribute must not be empty"));
        }
        if self.tiers.is_empty() {
            return Err(Error::config(
                "[sla] declares no tier: add [sla.tiers.NAME] with target and credits",
            ));
        }
        if let Some(default) = &self.default_tier {
            if !self.tiers.contains_key(default) {
                let known: Vec<&str> = self.tiers.keys().map(String::as_str).collect();
                return Err(Error::config(format!(
                    "[sla] default_tier = {default:?}: not a tier; tiers: {}",
                    known.join(", ")
                )));
            }
        }
        let percent = |p: f64| p.is_finite() && (0.0..=100.0).contains(&p);
        for (name, tier) in &self.tiers {
            if !percent(tier.target) || tier.target == 0.0 {
                return Err(Error::config(format!(
                    "[sla.tiers.{name}] target = {}: use a percentage above 0 and at most 100",
                    tier.target
                )));
            }
            let mut last: Option<(f64, f64)> = None;
            for (threshold, credit) in &tier.credits {
                if !percent(*threshold) || *threshold == 0.0 || !percent(*credit) {
                    return Err(Error::config(format!(
                        "[sla.tiers.{name}] credits: [{threshold}, {credit}]: the threshold \
                         must be above 0 and at most 100, the credit from 0 to 100 (percent)"
                    )));
                }
                if let Some((before, before_credit)) = last {
                    if *threshold >= before {
                        return Err(Error::config(format!(
                            "[sla.tiers.{name}] credits: threshold {threshold} after \
                             {before}: list thresholds in descending order, for example \
                             [[99.9, 10], [99.0, 25], [95.0, 50]]"
                        )));
                    }
                    if *credit < before_credit {
                        return Err(Error::config(format!(
                            "[sla.tiers.{name}] credits: {credit}% below {threshold} is less \
                             than {before_credit}% below {before}: a lower uptime never \
                             earns a smaller credit"
                        )));
                    }
                }
                last = Some((*threshold, *credit));
            }
        }
        Ok(())
    }
}

/// `[contacts]`: each tenant's contacts are the rows of one table of one source, read
/// from the vault at a point in time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsConfig {
    pub source: String,
    pub table: String,
    pub email_column: String,
    #[serde(default)]
    pub name_column: Option<String>,
    #[serde(default)]
    pub locale_column: Option<String>,
    /// A filter: `column = 'literal'` and `column IN ('a', 'b')` conditions joined by AND.
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
}

/// One condition of `[contacts] where`: the column's value is one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactCondition {
    pub column: String,
    pub values: Vec<String>,
}

impl ContactsConfig {
    /// The `where` filter, parsed: every condition must hold.
    pub fn conditions(&self) -> Result<Vec<ContactCondition>> {
        match &self.filter {
            None => Ok(Vec::new()),
            Some(text) => parse_contact_filter(text),
        }
    }
}

/// `a = 'x' AND b IN ('y', 'z')`, parsed with sqlparser; anything else is refused.
pub fn parse_contact_filter(text: &str) -> Result<Vec<ContactCondition>> {
    use sqlparser::ast::{BinaryOperator, Expr, InTarget, Value};
    let refuse = |why: &str| {
        Error::config(format!(
            "[contacts] where = {text:?}: {why}; use `column = 'text'` or \
             `column IN ('a', 'b')` conditions joined by AND"
        ))
    };
    let dialect = sqlparser::dialect::GenericDialect {};
    let expr = sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(text)
        .and_then(|mut p| {
            let e = p.parse_expr()?;
            p.expect_token(&sqlparser::tokenizer::Token::EOF)?;
            Ok(e)
        })
        .map_err(|e| refuse(&format!("cannot parse it ({e})")))?;
    fn column(e: &Expr) -> Option<String> {
        match e {
            Expr::Identifier(id) => Some(id.value.clone()),
            _ => None,
        }
    }
    fn literal(e: &Expr) -> Option<String> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                Value::Number(n, _) => Some(n.clone()),
                _ => None,
            },
            _ => None,
        }
    }
    let mut out = Vec::new();
    let mut pending = vec![expr];
    while let Some(e) = pending.pop() {
        match e {
            Expr::Nested(inner) => pending.push(*inner),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                pending.push(*right);
                pending.push(*left);
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let (Some(c), Some(v)) = (column(&left), literal(&right)) else {
                    return Err(refuse("a condition must compare a column with a literal"));
                };
                out.push(ContactCondition {
                    column: c,
                    values: vec![v],
                });
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated: false,
                global: false,
            } => {
                let c = column(&expr).ok_or_else(|| refuse("IN must follow a column"))?;
                let values = list
                    .iter()
                    .map(literal)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| refuse("IN takes literals only"))?;
                out.push(ContactCondition { column: c, values });
            }
            _ => return Err(refuse("unsupported condition")),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where `lifeboat serve` listens (`--listen` overrides it).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The operator API's bearer token (`LIFEBOAT_TOKEN` overrides it). Without one the
    /// operator API refuses every request.
    #[serde(default)]
    pub token: Option<String>,
    /// The status page's name, as the Statuspage JSON's `page.name`.
    #[serde(default = "default_page_name")]
    pub page_name: String,
    /// The page's public address, for links in JSON, the feed and private links.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Source -> the component's display name (default: the source's name).
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// A request's headers must arrive within this many seconds of the connection's first
    /// byte (or of its previous answer); a slower client is disconnected.
    #[serde(default = "default_header_timeout_seconds")]
    pub header_timeout_seconds: u64,
    /// A whole request, its body included, must be answered within this many seconds
    /// (408 otherwise).
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// Connections served at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The largest request body (operator API); a larger one is refused with 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a request waits for the control store before answering 503.
    #[serde(default = "default_control_timeout_ms")]
    pub control_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            token: None,
            page_name: default_page_name(),
            public_url: None,
            components: BTreeMap::new(),
            header_timeout_seconds: default_header_timeout_seconds(),
            request_timeout_seconds: default_request_timeout_seconds(),
            max_connections: default_max_connections(),
            max_body_bytes: default_max_body_bytes(),
            control_timeout_ms: default_control_timeout_ms(),
        }
    }
}

fn default_header_timeout_seconds() -> u64 {
    10
}

fn default_request_timeout_seconds() -> u64 {
    30
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_control_timeout_ms() -> u64 {
    500
}

/// `[server]` limits: each name, its value and the range it must fall in.
pub const SERVER_LIMITS: [(&str, u64, u64); 5] = [
    ("header_timeout_seconds", 1, 300),
    ("request_timeout_seconds", 1, 3600),
    ("max_connections", 1, 65_536),
    ("max_body_bytes", 1024, 16 * 1024 * 1024),
    ("control_timeout_ms", 10, 60_000),
];

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}

fn default_page_name() -> String {
    "Status".to_string()
}

/// `[notify]`: the notifier's retries, claims and reminders, and where it delivers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Attempts per delivery before it is marked dead.
    #[serde(default = "default_notify_max_attempts")]
    pub max_attempts: u32,
    /// A notifier's claim on a delivery lasts this long; a delivery still being sent after
    /// it (its notifier died) is sent again.
    #[serde(default = "default_notify_claim_seconds")]
    pub claim_seconds: u64,
    /// The longest wait between two attempts of a delivery.
    #[serde(default = "default_notify_max_delay_seconds")]
    pub max_delay_seconds: u64,
    /// Remind a tenant's contacts once when it has awaited acceptance this long (none: no
    /// reminder).
    #[serde(default)]
    pub remind_after_minutes: Option<u64>,
    /// Email through SMTP; without it email deliveries wait (and are listed) until it is
    /// configured.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// Operator webhooks.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// The operators' addresses: the overdue-update alarm is also emailed to each.
    #[serde(default)]
    pub operator_emails: Vec<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            max_attempts: default_notify_max_attempts(),
            claim_seconds: default_notify_claim_seconds(),
            max_delay_seconds: default_notify_max_delay_seconds(),
            remind_after_minutes: None,
            smtp: None,
            webhooks: Vec::new(),
            operator_emails: Vec::new(),
        }
    }
}

fn default_notify_max_attempts() -> u32 {
    10
}

fn default_notify_claim_seconds() -> u64 {
    120
}

fn default_notify_max_delay_seconds() -> u64 {
    900
}

/// `[notify.smtp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtps://host[:465]` (TLS), `smtp://host[:587]` (STARTTLS required), or
    /// `smtp://host:port?tls=none` (plain).
    pub url: String,
    /// The `From` mailbox: `Name <address>` or an address.
    pub from: String,
    #[serde(default)]
    pub username: Option<String>,
    /// The password, in a file (else `LIFEBOAT_SMTP_PASSWORD`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The host part of each `Message-ID` (default `lifeboat`).
    #[serde(default)]
    pub message_id_domain: Option<String>,
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// TLS from the first byte (`smtps://`).
    Wrapper,
    /// `STARTTLS`, required (`smtp://`, or `?tls=starttls`).
    StartTls,
    /// None (`smtp://…?tls=none`): for a relay on the same host, or tests.
    None,
}

/// An SMTP URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
}

impl SmtpConfig {
    /// The URL's host, port and TLS mode; anything else is a configuration error.
    pub fn endpoint(&self) -> Result<SmtpEndpoint> {
        let refuse = |why: &str| {
            Error::config(format!(
                "[notify.smtp] url = {:?}: {why} (use smtps://host:465, smtp://host:587 or \
                 smtp://host:port?tls=none)",
                self.url
            ))
        };
        let url = url::Url::parse(&self.url).map_err(|e| refuse(&e.to_string()))?;
        let wrapper = match url.scheme() {
            "smtps" => true,
            "smtp" => false,
            other => return Err(refuse(&format!("unknown scheme {other:?}"))),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| refuse("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(
                "credentials go in username and password_file, not in the URL",
            ));
        }
        let mut tls = if wrapper {
            SmtpTls::Wrapper
        } else {
            SmtpTls::StartTls
        };
        for (name, value) in url.query_pairs() {
            match (name.as_ref(), value.as_ref(), wrapper) {
                ("tls", "starttls", false) => tls = SmtpTls::StartTls,
                ("tls", "none", false) => tls = SmtpTls::None,
                ("tls", _, true) => return Err(refuse("smtps:// is always TLS")),
                _ => return Err(refuse(&format!("unknown parameter {name}={value}"))),
            }
        }
        let port = url.port().unwrap_or(if wrapper { 465 } else { 587 });
        Ok(SmtpEndpoint { host, port, tls })
    }
}

/// `[[notify.webhooks]]`: an operator endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` (or `http://…`).
    pub url: String,
    /// The HMAC-SHA256 secret, in a file (its content without the trailing newline).
    pub secret_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// `customer`: a restored tenant waits for its admin to accept on the private page;
    /// `skip`: it is restored as soon as it is verified.
    #[serde(default = "default_acceptance")]
    pub acceptance: String,
    /// With `customer` acceptance, accept automatically after this many minutes (none:
    /// wait for the admin).
    #[serde(default)]
    pub auto_accept_minutes: Option<u64>,
    /// With `customer` acceptance and a phased campaign (`--phases`): the tenant's admin
    /// accepts after each phase, and its next phase waits for that acceptance; false
    /// (the default): once, after its last phase.
    #[serde(default)]
    pub accept_per_phase: bool,
    /// A worker's claim on its tenants lasts this long unless renewed; a worker that
    /// stops renewing (killed) loses its tenants to another worker after it.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// Attempts per tenant before it is marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Attribute name -> `SOURCE.TABLE.COLUMN` of a tenant's row, read from the vault at
    /// the campaign's target: priority keys (`--priority "edition desc"`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Where workers write the archives tenants ask for on their private page and
    /// `serve` reads them from (default: `exports` beside the configuration file).
    #[serde(default)]
    pub export_dir: Option<PathBuf>,
    /// How long a download link of such an archive works.
    #[serde(default = "default_export_link_seconds")]
    pub export_link_seconds: u64,
}

/// The longest life of a download link (a day).
pub const MAX_EXPORT_LINK_SECONDS: u64 = 86_400;

fn default_export_link_seconds() -> u64 {
    900
}

impl Default for CampaignConfig {
    fn default() -> Self {
        CampaignConfig {
            acceptance: default_acceptance(),
            auto_accept_minutes: None,
            accept_per_phase: false,
            lease_seconds: default_lease_seconds(),
            max_attempts: default_max_attempts(),
            attributes: BTreeMap::new(),
            export_dir: None,
            export_link_seconds: default_export_link_seconds(),
        }
    }
}

fn default_acceptance() -> String {
    "customer".to_string()
}

/// The longest campaign lease: its microseconds, added to now, stay far inside 64 bits.
pub const MAX_LEASE_SECONDS: u64 = 86_400;
/// The longest automatic acceptance delay (a year).
pub const MAX_AUTO_ACCEPT_MINUTES: u64 = 525_600;
/// The shortest operator API token.
pub const MIN_TOKEN_CHARS: usize = 32;

/// Refuse an operator API token shorter than `MIN_TOKEN_CHARS` (`what` names where it
/// came from).
pub fn check_server_token(token: &str, what: &str) -> Result<()> {
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(Error::config(format!(
            "{what} is {} characters: use at least {MIN_TOKEN_CHARS} (for example: openssl \
             rand -hex 32)",
            token.chars().count()
        )));
    }
    Ok(())
}

fn default_lease_seconds() -> u64 {
    60
}

fn default_max_attempts() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Approvals a plan needs (by people other than its author) before it is applied.
    #[serde(default = "default_approvals_required")]
    pub approvals_required: u32,
    /// A softly deleted tenant cannot be purged before this many days.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// `SOURCE.TABLE` whose rows are a tenant's users: plans count the users affected.
    #[serde(default)]
    pub users: Option<String>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            approvals_required: default_approvals_required(),
            retention_days: default_retention_days(),
            users: None,
        }
    }
}

fn default_approvals_required() -> u32 {
    1
}

/// A kind of ID: the rows of `source.table` identified by `column`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindConfig {
    pub source: String,
    pub table: String,
    pub column: String,
    /// A column with a human name to show beside each ID.
    #[serde(default)]
    pub label: Option<String>,
}

/// A declared destructive operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationConfig {
    /// Parameter name -> ID kind. Steps refer to a parameter as `$name`, bound as an array.
    pub params: BTreeMap<String, String>,
    /// `SOURCE.TABLE` -> the most the operation may touch there.
    #[serde(default)]
    pub effect: BTreeMap<String, EffectLimit>,
    pub steps: Vec<StepConfig>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectLimit {
    /// Rows touched per ID given.
    #[serde(default)]
    pub max_rows_per_id: Option<u64>,
    /// Rows touched in all.
    #[serde(default)]
    pub max_rows: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub source: String,
    pub sql: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `file:///abs/dir` or `s3://bucket/prefix`.
    pub url: String,
    /// S3 endpoint for S3-compatible servers (also `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region (also `AWS_REGION`); default `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// How long every tenant stays restorable.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

fn default_retention_days() -> u32 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// `sqlite:///abs/file`, or `postgres://…` for a control store shared by machines.
    pub url: String,
    /// PostgreSQL: a file whose first line is the password (for example a mounted secret),
    /// used when the URL has none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Longest time a committed change waits before its segment is written.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// A segment is written once it holds this many changes.
    #[serde(default = "default_segment_max_changes")]
    pub segment_max_changes: usize,
    /// A tenant gets a new base once this many of its changes follow its latest base.
    #[serde(default = "default_compact_after_changes")]
    pub compact_after_changes: u64,
    /// SQLite sources: how often the changelog is read.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// A source's capture lease lasts this long unless renewed: one capture per source
    /// writes (the leader); a standby takes over within this time after the leader dies.
    #[serde(default = "default_capture_lease_seconds")]
    pub lease_seconds: u64,
    /// How long a command that needs the vault to hold everything up to now (apply, undo,
    /// undelete) waits for the running capture leader to store it before it gives up.
    #[serde(default = "default_capture_wait_seconds")]
    pub wait_seconds: u64,
    /// The first wait after a transient fault (docs/faults.md); each further failure of
    /// the same episode doubles it, with jitter.
    #[serde(default = "default_retry_initial_delay_ms")]
    pub retry_initial_delay_ms: u64,
    /// The longest wait between two attempts during a fault (before jitter).
    #[serde(default = "default_retry_max_delay_ms")]
    pub retry_max_delay_ms: u64,
    /// Where capture keeps its local index of the `tenant_via` key maps (one file per
    /// vault and source, rebuilt from the vault when missing). Default: `lifeboat-state`
    /// beside the configuration file.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The first snapshot's rows held in memory, by tenant, before they are written sorted
    /// to a temporary file under `state_dir` and merged back when the bases are written.
    #[serde(default = "default_snapshot_buffer_bytes")]
    pub snapshot_buffer_bytes: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            flush_interval_ms: default_flush_interval_ms(),
            segment_max_changes: default_segment_max_changes(),
            compact_after_changes: default_compact_after_changes(),
            poll_interval_ms: default_poll_interval_ms(),
            lease_seconds: default_capture_lease_seconds(),
            wait_seconds: default_capture_wait_seconds(),
            retry_initial_delay_ms: default_retry_initial_delay_ms(),
            retry_max_delay_ms: default_retry_max_delay_ms(),
            state_dir: None,
            snapshot_buffer_bytes: default_snapshot_buffer_bytes(),
        }
    }
}

fn default_flush_interval_ms() -> u64 {
    200
}
fn default_segment_max_changes() -> usize {
    20_000
}
fn default_compact_after_changes() -> u64 {
    50_000
}
fn default_poll_interval_ms() -> u64 {
    20
}
fn default_capture_lease_seconds() -> u64 {
    15
}
fn default_capture_wait_seconds() -> u64 {
    120
}

/// The shortest and longest capture lease: a leader stops writing two thirds into it
/// without a renewal, so a shorter one leaves no room for a slow write; a longer one keeps
/// a dead leader's sources uncaptured for too long.
pub const CAPTURE_LEASE_SECONDS: std::ops::RangeInclusive<u64> = 2..=3600;

fn default_retry_initial_delay_ms() -> u64 {
    250
}
fn default_retry_max_delay_ms() -> u64 {
    30_000
}
fn default_snapshot_buffer_bytes() -> u64 {
    32 << 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `postgres://…` or `sqlite:///abs/file`.
    pub url: String,
    /// The column that holds the tenant key, for tables that declare nothing else.
    #[serde(default)]
    pub tenant_column: Option<String>,
    /// PostgreSQL schema whose tables are protected (default `public`).
    #[serde(default)]
    pub schema: Option<String>,
    /// PostgreSQL: a file whose first line is the password (for example a mounted secret),
    /// used when the URL has none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tables: BTreeMap<String, TableConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    #[serde(default)]
    pub tenant_column: Option<String>,
    #[serde(default)]
    pub tenant_via: Option<String>,
    #[serde(default)]
    pub global: bool,
}

/// What kind of database a source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Postgres { url: String },
    Sqlite { path: PathBuf },
}

impl SourceKind {
    pub fn dialect(&self) -> Dialect {
        match self {
            SourceKind::Postgres { .. } => Dialect::Postgres,
            SourceKind::Sqlite { .. } => Dialect::Sqlite,
        }
    }
}

/// A table's declared tenancy, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRule {
    Column(String),
    Via {
        column: String,
        parent: String,
        parent_column: String,
    },
    Global,
}

impl Config {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Config::parse(&text)
            .map_err(|e| Error::config(format!("config file {}: {}", path.display(), e.message())))
    }

    /// Parse and validate configuration text.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let mut message = e.message().to_string();
            if let Some(span) = e.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                message = format!("line {line}: {message}");
            }
            Error::config(message)
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        crate::vault::VaultUrl::parse(&self.vault.url)?;
        if let Some(control) = &self.control {
            let postgres =
                control.url.starts_with("postgres://") || control.url.starts_with("postgresql://");
            if !postgres {
                sqlite_path(&control.url).map_err(|e| {
                    Error::config(format!(
                        "[control] url: {} (or use postgres://…)",
                        e.message()
                    ))
                })?;
            }
        }
        if self.capture.segment_max_changes == 0 {
            return Err(Error::config(
                "[capture] segment_max_changes must be at least 1",
            ));
        }
        if !CAPTURE_LEASE_SECONDS.contains(&self.capture.lease_seconds) {
            return Err(Error::config(format!(
                "[capture] lease_seconds = {}: use {} to {} (a standby takes over within it \
                 after the leader dies)",
                self.capture.lease_seconds,
                CAPTURE_LEASE_SECONDS.start(),
                CAPTURE_LEASE_SECONDS.end()
            )));
        }
        let capture = &self.capture;
        if !(1..=86_400).contains(&capture.wait_seconds) {
            return Err(Error::config(format!(
                "[capture] wait_seconds = {}: use 1 to 86400 (how long apply, undo and \
                 undelete wait for the running capture to store the source up to now)",
                capture.wait_seconds
            )));
        }
        if capture.retry_initial_delay_ms == 0
            || capture.retry_max_delay_ms < capture.retry_initial_delay_ms
            || capture.retry_max_delay_ms > 3_600_000
        {
            return Err(Error::config(format!(
                "[capture] retry_initial_delay_ms ({}) must be at least 1 and at most \
                 retry_max_delay_ms ({}), which must be at most 3600000 (an hour)",
                capture.retry_initial_delay_ms, capture.retry_max_delay_ms
            )));
        }
        for (name, source) in &self.sources {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(Error::config(format!(
                    "source name {name:?}: use letters, digits, '_' and '-' only"
                )));
            }
            source
                .kind()
                .map_err(|e| Error::config(format!("[sources.{name}] {}", e.message())))?;
            for (table, decl) in &source.tables {
                decl.rule().map_err(|e| {
                    Error::config(format!("[sources.{name}.tables.{table}] {}", e.message()))
                })?;
            }
        }
        self.validate_guard()?;
        self.validate_server()?;
        if let Some(sla) = &self.sla {
            sla.validate()?;
        }
        for (name, template) in &self.templates {
            if template.message.trim().is_empty() {
                return Err(Error::config(format!(
                    "[templates.{name}] message is empty"
                )));
            }
            template_parts(&template.message).map_err(|e| {
                Error::config(format!("[templates.{name}] message: {}", e.message()))
            })?;
            const STATUSES: [&str; 5] = [
                "investigating",
                "identified",
                "monitoring",
                "resolved",
                "postmortem",
            ];
            if let Some(status) = &template.status {
                if !STATUSES.contains(&status.as_str()) {
                    return Err(Error::config(format!(
                        "[templates.{name}] status = {status:?}: use one of {}",
                        STATUSES.join(", ")
                    )));
                }
            }
        }
        self.validate_notify()?;
        self.validate_campaigns()
    }

    /// `[notify]` values in their ranges, its URLs well formed.
    fn validate_notify(&self) -> Result<()> {
        let n = &self.notify;
        if !(1..=100).contains(&n.max_attempts) {
            return Err(Error::config(format!(
                "[notify] max_attempts = {}: use 1 to 100",
                n.max_attempts
            )));
        }
        if !(10..=86_400).contains(&n.claim_seconds) {
            return Err(Error::config(format!(
                "[notify] claim_seconds = {}: use 10 to 86400 (longer than a send takes: 30 s)",
                n.claim_seconds
            )));
        }
        if !(10..=86_400).contains(&n.max_delay_seconds) {
            return Err(Error::config(format!(
                "[notify] max_delay_seconds = {}: use 10 to 86400",
                n.max_delay_seconds
            )));
        }
        for email in &n.operator_emails {
            let plain = email.split_once('@').is_some_and(|(user, domain)| {
                !user.is_empty() && domain.contains('.') && !domain.contains('@')
            }) && !email.contains(|c: char| c.is_whitespace() || c == '<' || c == '>');
            if !plain {
                return Err(Error::config(format!(
                    "[notify] operator_emails: {email:?} is not an email address \
                     (write name@example.com)"
                )));
            }
        }
        if let Some(minutes) = n.remind_after_minutes {
            if !(1..=MAX_AUTO_ACCEPT_MINUTES).contains(&minutes) {
                return Err(Error::config(format!(
                    "[notify] remind_after_minutes = {minutes}: use 1 to \
                     {MAX_AUTO_ACCEPT_MINUTES}; leave it out for no reminder"
                )));
            }
        }
        if let Some(smtp) = &n.smtp {
            smtp.endpoint()?;
            if smtp.from.trim().is_empty() {
                return Err(Error::config("[notify.smtp] from is empty"));
            }
        }
        for hook in &n.webhooks {
            let ok = url::Url::parse(&hook.url)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(Error::config(format!(
                    "[[notify.webhooks]] url = {:?}: use an http:// or https:// URL",
                    hook.url
                )));
            }
        }
        Ok(())
    }

    /// `[server]` timeouts and limits fall in their ranges.
    fn validate_server(&self) -> Result<()> {
        let s = &self.server;
        let values = [
            s.header_timeout_seconds,
            s.request_timeout_seconds,
            s.max_connections as u64,
            s.max_body_bytes as u64,
            s.control_timeout_ms,
        ];
        for ((name, low, high), value) in SERVER_LIMITS.into_iter().zip(values) {
            if !(low..=high).contains(&value) {
                return Err(Error::config(format!(
                    "[server] {name} = {value}: use {low} to {high}"
                )));
            }
        }
        Ok(())
    }

    /// `[server]` and `[campaigns]` name known sources and words.
    fn validate_campaigns(&self) -> Result<()> {
        for source in self.server.components.keys() {
            if !self.sources.contains_key(source) {
                return Err(Error::config(format!(
                    "[server.components] names unknown source {source:?}"
                )));
            }
        }
        if !["customer", "skip"].contains(&self.campaigns.acceptance.as_str()) {
            return Err(Error::config(format!(
                "[campaigns] acceptance = {:?}: use \"customer\" or \"skip\"",
                self.campaigns.acceptance
            )));
        }
        if self.campaigns.lease_seconds == 0 || self.campaigns.max_attempts == 0 {
            return Err(Error::config(
                "[campaigns] lease_seconds and max_attempts must be at least 1",
            ));
        }
        if self.campaigns.lease_seconds > MAX_LEASE_SECONDS {
            return Err(Error::config(format!(
                "[campaigns] lease_seconds = {}: at most {MAX_LEASE_SECONDS} (a day); a \
                 worker renews its lease while it works",
                self.campaigns.lease_seconds
            )));
        }
        if !(1..=MAX_EXPORT_LINK_SECONDS).contains(&self.campaigns.export_link_seconds) {
            return Err(Error::config(format!(
                "[campaigns] export_link_seconds = {}: use 1 to {MAX_EXPORT_LINK_SECONDS}",
                self.campaigns.export_link_seconds
            )));
        }
        if let Some(minutes) = self.campaigns.auto_accept_minutes {
            if minutes > MAX_AUTO_ACCEPT_MINUTES {
                return Err(Error::config(format!(
                    "[campaigns] auto_accept_minutes = {minutes}: at most \
                     {MAX_AUTO_ACCEPT_MINUTES} (a year); leave it out to wait for the admin"
                )));
            }
        }
        if let Some(token) = &self.server.token {
            check_server_token(token, "[server] token")?;
        }
        if let Some(contacts) = &self.contacts {
            if !self.sources.contains_key(&contacts.source) {
                return Err(Error::config(format!(
                    "[contacts] source = {:?}: not a configured source",
                    contacts.source
                )));
            }
            contacts.conditions()?;
        }
        for (name, column) in &self.campaigns.attributes {
            let parts: Vec<&str> = column.split('.').collect();
            if parts.len() != 3 || !self.sources.contains_key(parts[0]) {
                return Err(Error::config(format!(
                    "[campaigns.attributes] {name} = {column:?}: use SOURCE.TABLE.COLUMN of a \
                     configured source"
                )));
            }
        }
        Ok(())
    }

    /// Kinds and operations name sources, tables and kinds that exist; each operation
    /// has one typed parameter and at least one step.
    fn validate_guard(&self) -> Result<()> {
        if self.guard.approvals_required == 0 {
            return Err(Error::config(
                "[guard] approvals_required = 0 would let a plan be applied without anyone \
                 but its author: use 1 or more",
            ));
        }
        let source_named = |what: &str, source: &str| -> Result<()> {
            if self.sources.contains_key(source) {
                Ok(())
            } else {
                Err(Error::config(format!("{what}: unknown source {source:?}")))
            }
        };
        if let Some(users) = &self.guard.users {
            let (source, _) = split_table(users)
                .map_err(|e| Error::config(format!("[guard] users: {}", e.message())))?;
            source_named("[guard] users", source)?;
        }
        crate::people::validate(self)?;
        for (name, kind) in &self.kinds {
            source_named(&format!("[kinds.{name}]"), &kind.source)?;
        }
        for (name, op) in &self.operations {
            let at = format!("[operations.{name}]");
            if op.params.len() != 1 {
                return Err(Error::config(format!(
                    "{at} params: declare exactly one typed parameter, for example \
                     params = {{ ids = \"app\" }}"
                )));
            }
            for (param, kind) in &op.params {
                if !self.kinds.contains_key(kind) {
                    let known: Vec<&str> = self.kinds.keys().map(String::as_str).collect();
                    return Err(Error::config(format!(
                        "{at} params.{param}: unknown kind {kind:?}; declared kinds: {}",
                        known.join(", ")
                    )));
                }
            }
            for table in op.effect.keys() {
                let (source, _) = split_table(table)
                    .map_err(|e| Error::config(format!("{at} effect: {}", e.message())))?;
                source_named(&format!("{at} effect"), source)?;
            }
            if op.steps.is_empty() {
                return Err(Error::config(format!("{at}: no steps")));
            }
            for step in &op.steps {
                source_named(&format!("{at} steps"), &step.source)?;
            }
        }
        Ok(())
    }

    pub fn operation(&self, name: &str) -> Result<&OperationConfig> {
        self.operations.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.operations.keys().map(String::as_str).collect();
            Error::usage(format!(
                "unknown operation {name:?}; declared operations: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    pub fn source(&self, name: &str) -> Result<&SourceConfig> {
        self.sources.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            Error::usage(format!(
                "unknown source {name:?}; configured sources: {}",
                known.join(", ")
            ))
        })
    }
}

/// `SOURCE.TABLE` split in two.
pub fn split_table(text: &str) -> Result<(&str, &str)> {
    match text.split_once('.') {
        Some((source, table)) if !source.is_empty() && !table.is_empty() => Ok((source, table)),
        _ => Err(Error::config(format!(
            "{text:?}: expected SOURCE.TABLE, for example \"tracker.app_installations\""
        ))),
    }
}

impl SourceConfig {
    /// The source's SQL dialect, from its URL (see `kind`).
    pub fn dialect(&self) -> Result<Dialect> {
        self.kind().map(|kind| kind.dialect())
    }

    pub fn kind(&self) -> Result<SourceKind> {
        if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            Ok(SourceKind::Postgres {
                url: self.url.clone(),
            })
        } else if self.url.starts_with("sqlite:") {
            Ok(SourceKind::Sqlite {
                path: sqlite_path(&self.url)?,
            })
        } else {
            Err(Error::config(format!(
                "url {:?}: expected postgres://… or sqlite:///absolute/path",
                self.url
            )))
        }
    }

    /// The rule for `table`: its own declaration, or the source's tenant column.
    pub fn declared_rule(&self, table: &str) -> Result<Option<TableRule>> {
        match self.tables.get(table) {
            Some(decl) => decl.rule().map(Some),
            None => Ok(None),
        }
    }
}

impl TableConfig {
    pub fn rule(&self) -> Result<TableRule> {
        let declared = [
            self.tenant_column.is_some(),
            self.tenant_via.is_some(),
            self.global,
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        if declared != 1 {
            return Err(Error::config(
                "declare exactly one of tenant_column, tenant_via or global = true",
            ));
        }
        if self.global {
            return Ok(TableRule::Global);
        }
        if let Some(column) = &self.tenant_column {
            return Ok(TableRule::Column(column.clone()));
        }
        let via = self.tenant_via.as_deref().unwrap_or_default();
        parse_tenant_via(via)
    }
}

/// Parse `col -> parent_table.col`.
pub fn parse_tenant_via(text: &str) -> Result<TableRule> {
    let bad = || {
        Error::config(format!(
            "tenant_via {text:?}: expected \"column -> parent_table.column\""
        ))
    };
    let (column, target) = text.split_once("->").ok_or_else(bad)?;
    let (parent, parent_column) = target.trim().split_once('.').ok_or_else(bad)?;
    let (column, parent, parent_column) = (column.trim(), parent.trim(), parent_column.trim());
    if column.is_empty() || parent.is_empty() || parent_column.is_empty() {
        return Err(bad());
    }
    Ok(TableRule::Via {
        column: column.to_string(),
        parent: parent.to_string(),
        parent_column: parent_column.to_string(),
    })
}

/// The file path of a `sqlite:///abs/path` URL.
pub fn sqlite_path(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| Error::config(format!("url {url:?}: expected sqlite:///absolute/path")))?;
    if !rest.starts_with('/') {
        return Err(Error::config(format!(
            "url {url:?}: the path must be absolute (sqlite:///absolute/path)"
        )));
    }
    Ok(PathBuf::from(rest))
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL (a file path): nothing in it to hide.
        return url.to_string();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// `text` with every URL in it (`scheme://…`, up to white space or a quote) shown as
/// `redact_url` shows it: for messages kept or shown beyond the one that made them.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_a_message_lose_their_passwords() {
        let text = "cannot connect to \"postgres://app:s3cret@db:5432/x?sslmode=require\": \
                    refused; also mysql://u:pw2@h/d and https://h/p?password=pw3 (file:///tmp/a)";
        let shown = redact_urls_in(text);
        for secret in ["s3cret", "pw2", "pw3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("postgres://app:***@db:5432/x?sslmode=require"),
            "{shown}"
        );
        assert!(shown.ends_with("(file:///tmp/a)"), "{shown}");
        assert_eq!(redact_urls_in("no url here"), "no url here");
    }

    const GOOD: &str = r#"
        [vault]
        url = "file:///tmp/vault"
        [control]
        url = "sqlite:///tmp/control.db"
        [sources.tracker]
        url = "postgres://lifeboat@127.0.0.1:5432/tracker"
        tenant_column = "site_id"
        [sources.tracker.tables.sites]
        tenant_column = "id"
        [sources.tracker.tables.comments]
        tenant_via = "issue_id -> issues.id"
        [sources.tracker.tables.schema_migrations]
        global = true
    "#;

    #[test]
    fn the_example_configuration_is_valid() {
        let config = Config::parse(include_str!("../../../lifeboat.example.toml"))
            .expect("lifeboat.example.toml");
        assert_eq!(config.campaigns.lease_seconds, 60);
        assert_eq!(config.server.components["tracker"], "Issue tracker");
        let bad = format!("{GOOD}\n[campaigns]\nacceptance = \"maybe\"\n");
        let err = Config::parse(&bad).expect_err("refused");
        assert!(err.to_string().contains("acceptance"), "{err}");
        let bad = format!("{GOOD}\n[campaigns.attributes]\nedition = \"mail.sites.edition\"\n");
        assert!(Config::parse(&bad).is_err());
    }

    #[test]
    fn export_links_last_15_minutes_unless_set_and_bounded() {
        let config = Config::parse(GOOD).expect("valid");
        assert_eq!(config.campaigns.export_link_seconds, 900);
        assert_eq!(config.campaigns.export_dir, None);
        let set = format!("{GOOD}\n[campaigns]\nexport_link_seconds = 60\nexport_dir = \"/x\"\n");
        let config = Config::parse(&set).expect("valid");
        assert_eq!(config.campaigns.export_link_seconds, 60);
        assert_eq!(config.campaigns.export_dir, Some(PathBuf::from("/x")));
        for bad in ["0", "86401"] {
            let text = format!("{GOOD}\n[campaigns]\nexport_link_seconds = {bad}\n");
            let err = Config::parse(&text).expect_err(bad);
            assert!(err.to_string().contains("export_link_seconds"), "{err}");
        }
    }

    #[test]
    fn templates_name_known_fields_and_escape_braces() {
        let t = TemplateConfig {
            message: "{{{tenants_restored}}} of {tenants} ({tenants_percent}%) {now}".into(),
            status: None,
        };
        let fields = BTreeMap::from([
            ("tenants_restored", "3".to_string()),
            ("tenants", "4".to_string()),
            ("tenants_percent", "75".to_string()),
        ]);
        assert_eq!(t.render(&fields).expect("render"), "{3} of 4 (75%) ");
        for (bad, wanted) in [
            ("{tenants", "without its '}'"),
            ("tenants}", "lone '}'"),
            ("{nope}", "unknown field {nope}"),
        ] {
            let err = template_parts(bad).err().expect(bad);
            assert!(err.to_string().contains(wanted), "{bad}: {err}");
        }
        let text = format!("{GOOD}\n[templates.p]\nmessage = \"x\"\nstatus = \"done\"\n");
        let err = Config::parse(&text).expect_err("bad status");
        assert!(
            err.to_string().contains("[templates.p] status = \"done\""),
            "{err}"
        );
    }

    #[test]
    fn the_update_cadence_is_one_duration_or_one_per_impact() {
        let config = Config::parse(GOOD).expect("valid");
        assert_eq!(config.status.update_every("critical"), None);
        let one = format!("{GOOD}\n[status]\nupdate_every = \"1h 30m\"\n");
        let config = Config::parse(&one).expect("one cadence");
        assert_eq!(
            config.status.update_every("minor"),
            Some(std::time::Duration::from_secs(5400))
        );
        let per = format!("{GOOD}\n[status.update_every]\ncritical = \"30m\"\nmajor = \"2h\"\n");
        let config = Config::parse(&per).expect("per impact");
        assert_eq!(
            config.status.update_every("critical"),
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(
            config.status.update_every("major"),
            Some(std::time::Duration::from_secs(7200))
        );
        assert_eq!(config.status.update_every("minor"), None);
        let with_default = format!("{per}default = \"4h\"\n");
        let config = Config::parse(&with_default).expect("with default");
        assert_eq!(
            config.status.update_every("none"),
            Some(std::time::Duration::from_secs(14_400))
        );
        for (bad, wanted) in [
            ("update_every = \"90x\"", "[status] update_every = \"90x\""),
            ("update_every = \"30s\"", "shorter than a minute"),
            ("update_every = \"9d\"", "longer than a week"),
            ("update_every = 30", "[status] update_every = 30"),
            (
                "[status.update_every]\nmajor = \"soon\"",
                "[status.update_every] major = \"soon\"",
            ),
            ("[status.update_every]\nhuge = \"1h\"", "unknown impact"),
            ("[status.update_every]\nmajor = 60", "as a string"),
        ] {
            let text = if bad.starts_with('[') {
                format!("{GOOD}\n{bad}\n")
            } else {
                format!("{GOOD}\n[status]\n{bad}\n")
            };
            let err = Config::parse(&text).expect_err(bad).to_string();
            assert!(err.contains(wanted), "{bad}: {err}");
            assert!(!err.contains('\n'), "{bad}: one line: {err}");
        }
    }

    #[test]
    fn operator_emails_are_addresses() {
        let good = format!("{GOOD}\n[notify]\noperator_emails = [\"oncall@example.com\"]\n");
        let config = Config::parse(&good).expect("valid");
        assert_eq!(config.notify.operator_emails, ["oncall@example.com"]);
        for bad in ["oncall", "Ops <ops@example.com>", "a@b"] {
            let text = format!("{GOOD}\n[notify]\noperator_emails = [\"{bad}\"]\n");
            let err = Config::parse(&text).expect_err(bad).to_string();
            assert!(err.contains("[notify] operator_emails"), "{bad}: {err}");
        }
    }

    #[test]
    fn sla_tiers_are_checked() {
        let sla = r#"
            [sla]
            default_tier = "standard"
            [sla.tiers.standard]
            target = 99.9
            credits = [[99.9, 10], [99.0, 25], [95, 50]]
        "#;
        let config = Config::parse(&format!("{GOOD}{sla}")).expect("valid [sla]");
        let sla = config.sla.expect("[sla]");
        assert_eq!(sla.tier_attribute, "edition");
        assert!(!sla.accept_ends_downtime);
        assert_eq!(
            sla.tiers["standard"].credits,
            vec![(99.9, 10.0), (99.0, 25.0), (95.0, 50.0)]
        );
        for (tier, wanted) in [
            (
                "target = 99.9\ncredits = [[99.0, 10], [99.9, 25]]",
                "descending",
            ),
            (
                "target = 99.9\ncredits = [[99.9, 10], [99.9, 25]]",
                "descending",
            ),
            (
                "target = 99.9\ncredits = [[99.9, 25], [99.0, 10]]",
                "smaller credit",
            ),
            ("target = 99.9\ncredits = [[99.9, 120]]", "from 0 to 100"),
            ("target = 99.9\ncredits = [[101, 10]]", "at most 100"),
            ("target = 0\ncredits = []", "target = 0"),
            ("target = 99.9\ncredits = [[99.9]]", "size 2"),
            ("target = 99.9\ncredit = [[99.9, 10]]", "unknown field"),
        ] {
            let text = format!("{GOOD}\n[sla]\n[sla.tiers.gold]\n{tier}\n");
            let err = Config::parse(&text).expect_err(tier);
            assert!(err.to_string().contains(wanted), "{tier}: {err}");
        }
        let text =
            format!("{GOOD}\n[sla]\ndefault_tier = \"silver\"\n[sla.tiers.gold]\ntarget = 99.9\n");
        let err = Config::parse(&text).expect_err("unknown default tier");
        assert!(err.to_string().contains("default_tier"), "{err}");
        let err = Config::parse(&format!("{GOOD}\n[sla]\n")).expect_err("no tier");
        assert!(err.to_string().contains("no tier"), "{err}");
    }

    #[test]
    fn the_capture_lease_is_15_seconds_unless_set_and_bounded() {
        assert_eq!(
            Config::parse(GOOD).expect("valid").capture.lease_seconds,
            15
        );
        let set = format!("{GOOD}\n[capture]\nlease_seconds = 4\n");
        assert_eq!(Config::parse(&set).expect("valid").capture.lease_seconds, 4);
        for bad in ["0", "1", "3601"] {
            let text = format!("{GOOD}\n[capture]\nlease_seconds = {bad}\n");
            let err = Config::parse(&text).expect_err(bad);
            assert!(err.to_string().contains("lease_seconds"), "{bad}: {err}");
        }
        for bad in ["-5", "\"15s\""] {
            let text = format!("{GOOD}\n[capture]\nlease_seconds = {bad}\n");
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_the_design_shape() {
        let config = Config::parse(GOOD).expect("valid");
        let tracker = config.source("tracker").expect("tracker");
        assert_eq!(tracker.tenant_column.as_deref(), Some("site_id"));
        assert_eq!(
            tracker.declared_rule("comments").expect("rule"),
            Some(TableRule::Via {
                column: "issue_id".into(),
                parent: "issues".into(),
                parent_column: "id".into()
            })
        );
        assert_eq!(
            tracker.declared_rule("schema_migrations").expect("rule"),
            Some(TableRule::Global)
        );
    }

    #[test]
    fn contact_filters_are_simple_conditions() {
        let parsed =
            parse_contact_filter("role = 'admin' AND (lang IN ('de', 'fr'))").expect("parsed");
        assert_eq!(
            parsed,
            [
                ContactCondition {
                    column: "role".into(),
                    values: vec!["admin".into()]
                },
                ContactCondition {
                    column: "lang".into(),
                    values: vec!["de".into(), "fr".into()]
                }
            ]
        );
        for bad in [
            "role = 'admin' OR 1 = 1",
            "role <> 'admin'",
            "lower(role) = 'admin'",
            "role = other",
            "role NOT IN ('a')",
            "role = 'a'; DROP TABLE users",
            "",
        ] {
            let err = parse_contact_filter(bad).expect_err(bad);
            assert!(err.to_string().contains("[contacts] where"), "{bad}: {err}");
            assert!(!err.to_string().contains('\n'), "{bad}: {err}");
        }
        let config = format!(
            "{GOOD}\n[contacts]\nsource = \"tracker\"\ntable = \"users\"\n\
             email_column = \"email\"\nwhere = \"role > 'a'\"\n"
        );
        let err = Config::parse(&config).expect_err("refused");
        assert!(err.to_string().contains("[contacts] where"), "{err}");
        let config = format!(
            "{GOOD}\n[contacts]\nsource = \"nope\"\ntable = \"users\"\nemail_column = \"email\"\n"
        );
        let err = Config::parse(&config).expect_err("refused");
        assert!(err.to_string().contains("[contacts] source"), "{err}");
    }

    #[test]
    fn refuses_malformed_config() {
        let cases = [
            ("[vault]\nurl = 3\n", "line"),
            ("[vault]\nurl = \"ftp://x\"\n", "vault url"),
            (
                "[vault]\nurl = \"file:///v\"\n[sources.a]\nurl = \"mysql://x\"\n",
                "[sources.a]",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[sources.a]\nurl = \"sqlite:///a.db\"\n[sources.a.tables.t]\ntenant_via = \"x\"\n",
                "tenant_via",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[sources.a]\nurl = \"sqlite:///a.db\"\n[sources.a.tables.t]\nglobal = true\ntenant_column = \"x\"\n",
                "exactly one",
            ),
            ("[vault]\nurl = \"file:///v\"\nsurprise = 1\n", "unknown field"),
            ("[vault]\nurl = \"file:///v\"\n[sources.a]\nurl = \"sqlite://rel.db\"\n", "absolute"),
            (
                "[vault]\nurl = \"file:///v\"\n[guard]\napprovals_required = 0\n",
                "[guard] approvals_required = 0",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[server]\ntoken = \"secret\"\n",
                "[server] token is 6 characters: use at least 32",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[campaigns]\nlease_seconds = 9223372036854775807\n",
                "lease_seconds = 9223372036854775807: at most 86400",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[campaigns]\nauto_accept_minutes = 18446744073709551615\n",
                "auto_accept_minutes = 18446744073709551615: at most 525600",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[capture]\nretry_initial_delay_ms = 0\n",
                "[capture] retry_initial_delay_ms (0) must be at least 1",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[capture]\nretry_initial_delay_ms = 500\nretry_max_delay_ms = 100\n",
                "at most retry_max_delay_ms (100)",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[server]\nheader_timeout_seconds = 0\n",
                "[server] header_timeout_seconds = 0: use 1 to 300",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[server]\nmax_connections = 0\n",
                "[server] max_connections = 0: use 1 to 65536",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[server]\nmax_body_bytes = 100\n",
                "[server] max_body_bytes = 100: use 1024 to 16777216",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[server]\ncontrol_timeout_ms = 600000\n",
                "[server] control_timeout_ms = 600000: use 10 to 60000",
            ),
            (
                "[vault]\nurl = \"file:///v\"\n[server]\nrequest_timeout_seconds = -1\n",
                "line 4",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
        }
    }
}
