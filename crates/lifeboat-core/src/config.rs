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
}

impl Default for CampaignConfig {
    fn default() -> Self {
        CampaignConfig {
            acceptance: default_acceptance(),
            auto_accept_minutes: None,
            lease_seconds: default_lease_seconds(),
            max_attempts: default_max_attempts(),
            attributes: BTreeMap::new(),
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
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            flush_interval_ms: default_flush_interval_ms(),
            segment_max_changes: default_segment_max_changes(),
            compact_after_changes: default_compact_after_changes(),
            poll_interval_ms: default_poll_interval_ms(),
            lease_seconds: default_capture_lease_seconds(),
            retry_initial_delay_ms: default_retry_initial_delay_ms(),
            retry_max_delay_ms: default_retry_max_delay_ms(),
            state_dir: None,
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
        self.validate_campaigns()
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

#[cfg(test)]
mod tests {
    use super::*;

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
