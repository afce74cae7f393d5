//! Lifeboat's error type: a kind, a one-line message that says what to do next, and
//! whether retrying may help.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration file is malformed or does not match the databases.
    Config,
    /// The command line asked for something that cannot be done (unknown tenant, …).
    Usage,
    /// The vault cannot be reached or written.
    Vault,
    /// A vault object does not match its checksum or cannot be decoded.
    Corrupt,
    /// A source database refused or failed an operation.
    Source,
    /// A target outside the restorable window.
    OutOfWindow,
}

#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    transient: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            transient: false,
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Usage, message)
    }

    pub fn vault(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Vault, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    pub fn source(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Source, message)
    }

    /// Mark the error as worth retrying (a connection dropped, a server restarting).
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// Prefix the message with what was being done.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
