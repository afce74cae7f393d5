//! How Lifeboat connects to PostgreSQL, the libpq way, for every connection it makes (a
//! source, its replication stream, the control store, `--into-url`): TLS from the URL's
//! `sslmode`, `sslrootcert`, `sslcert` and `sslkey`, and the password from the URL, a
//! `password_file`, `PGPASSWORD` or a password file (`PGPASSFILE`, default `~/.pgpass`).
//!
//! This module reads settings and builds the TLS configuration (rustls, with the one crypto
//! provider of the whole binary); the crates that hold database drivers connect with them.
//! No password is ever shown: `redact_url` is how a URL appears in messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::redact_url;
use crate::{Error, Result};

/// libpq's `sslmode`. The default, as in libpq, is `prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, not verified; plain otherwise.
    #[default]
    Prefer,
    /// TLS, not verified (with `sslrootcert`, verified as `verify-ca`).
    Require,
    /// TLS, the certificate chain verified against `sslrootcert`.
    VerifyCa,
    /// TLS, the chain verified and the server's name checked against the host.
    VerifyFull,
}

impl SslMode {
    fn parse(word: &str) -> Result<SslMode> {
        Ok(match word {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::config(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                )))
            }
        })
    }

    /// Whether a plain connection is refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// A PostgreSQL URL read for connecting.
#[derive(Clone)]
pub struct Settings {
    /// The URL without the TLS parameters (the drivers read the rest), password included
    /// when it came with the URL.
    pub url: String,
    /// The password to use: from the URL, `password_file`, `PGPASSWORD` or a password
    /// file, in that order (`None`: connect without one).
    pub password: Option<String>,
    pub sslmode: SslMode,
    pub root_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

/// Read `url` (`postgres://…` or `postgresql://…`), with `password_file` (a file whose
/// first line is the password) as the configuration's own source of a password.
pub fn settings(url: &str, password_file: Option<&Path>) -> Result<Settings> {
    let shown = redact_url(url);
    let mut parsed =
        url::Url::parse(url).map_err(|e| Error::config(format!("postgres url {shown}: {e}")))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(Error::config(format!(
            "postgres url {shown}: expected postgres://"
        )));
    }
    let mut sslmode = SslMode::default();
    let (mut root_cert, mut client_cert, mut client_key) = (None, None, None);
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" => sslmode = SslMode::parse(&value)?,
            "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
            "sslcert" => client_cert = Some(PathBuf::from(value.as_ref())),
            "sslkey" => client_key = Some(PathBuf::from(value.as_ref())),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    if client_cert.is_some() != client_key.is_some() {
        return Err(Error::config(format!(
            "postgres url {shown}: sslcert and sslkey go together (a client certificate \
             and its key)"
        )));
    }
    let host = parsed.host_str().unwrap_or("localhost").to_string();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map(str::to_string)
        .unwrap_or(host);
    let port = parsed.port().unwrap_or(5432);
    let user = match parsed.username() {
        "" => std::env::var("PGUSER").unwrap_or_else(|_| "postgres".to_string()),
        user => percent_decode(user),
    };
    let dbname = match parsed.path().trim_start_matches('/') {
        "" => user.clone(),
        db => percent_decode(db),
    };
    let password = match parsed.password() {
        Some(p) => Some(percent_decode(p)),
        None => match password_file {
            Some(path) => Some(read_password_file(path)?),
            None => std::env::var("PGPASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
                .or_else(|| pgpass_lookup(&host, port, &dbname, &user)),
        },
    };
    Ok(Settings {
        url: parsed.to_string(),
        password,
        sslmode,
        root_cert,
        client_cert,
        client_key,
        host,
        port,
        user,
        dbname,
    })
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// `url` with the password of `password_file` in it, unless it names one already: how a
/// configured `password_file` reaches every connection made from that URL. The result
/// holds a password: show it only through `redact_url`.
pub fn with_password_file(url: &str, password_file: Option<&Path>) -> Result<String> {
    let Some(path) = password_file else {
        return Ok(url.to_string());
    };
    let mut parsed = url::Url::parse(url)
        .map_err(|e| Error::config(format!("postgres url {}: {e}", redact_url(url))))?;
    if parsed.password().is_some() {
        return Ok(url.to_string());
    }
    let password = read_password_file(path)?;
    parsed.set_password(Some(&password)).map_err(|_| {
        Error::config(format!(
            "postgres url {}: cannot carry a password",
            redact_url(url)
        ))
    })?;
    Ok(parsed.to_string())
}

/// The first line of `path`, without its line end.
pub fn read_password_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read password_file {}: {e}", path.display())))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(Error::config(format!(
            "password_file {} is empty",
            path.display()
        )));
    }
    Ok(password)
}

/// The password for this connection from the password file (`PGPASSFILE`, or `.pgpass` in
/// the home directory): lines `host:port:database:user:password`, `*` matching anything,
/// `\` escaping `:` and `\`. As libpq does, a file others may read is ignored.
fn pgpass_lookup(host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let text = std::fs::read_to_string(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "password file {} is readable by others (chmod 0600 it): ignored",
                path.display()
            );
            return None;
        }
    }
    pgpass_match(&text, host, port, dbname, user)
}

fn pgpass_match(text: &str, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() != 5 {
            continue;
        }
        let wanted = [host, port.as_str(), dbname, user];
        let matches = fields[..4]
            .iter()
            .zip(wanted)
            .all(|(f, w)| f == "*" || f == w || (w == "127.0.0.1" && f == "localhost"));
        if matches {
            return Some(fields[4].clone());
        }
    }
    None
}

/// Install the binary's one crypto provider (aws-lc-rs, as the S3 client uses) as the
/// process default, before any TLS configuration is built. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The TLS configuration for `settings` (`None` with `sslmode=disable`).
pub fn tls_config(settings: &Settings) -> Result<Option<ClientConfig>> {
    install_crypto_provider();
    let mode = match (settings.sslmode, &settings.root_cert) {
        (SslMode::Disable, _) => return Ok(None),
        // As libpq: `require` with a root certificate verifies like `verify-ca`.
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?;
    let builder = match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider))),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let path = settings.root_cert.as_ref().ok_or_else(|| {
                Error::config(format!(
                    "postgres url {}: sslmode={} needs sslrootcert=PATH (the CA that signed \
                     the server's certificate)",
                    redact_url(&settings.url),
                    if mode == SslMode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    }
                ))
            })?;
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(path, "sslrootcert")? {
                roots
                    .add(cert)
                    .map_err(|e| Error::config(format!("sslrootcert {}: {e}", path.display())))?;
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| Error::config(format!("sslrootcert {}: {e}", path.display())))?;
            if mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(verifier)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
            }
        }
    };
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert, "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::config(format!("sslkey {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::config(format!("sslcert/sslkey: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(config))
}

fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect())
        .map_err(|e| Error::config(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{what} {}: no certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// Words that say why a TLS connection failed, from a driver's error text.
pub fn explain_tls_error(message: &str, settings: &Settings) -> Option<String> {
    let root = settings
        .root_cert
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if message.contains("UnknownIssuer") || message.contains("unknown issuer") {
        Some(format!(
            "the server's certificate is not signed by the CA in sslrootcert {root}"
        ))
    } else if message.contains("NotValidForName") || message.contains("not valid for name") {
        Some(format!(
            "the server's certificate is not valid for the host name {} (sslmode=verify-full \
             checks it; connect by a name the certificate names)",
            settings.host
        ))
    } else if message.contains("server does not support TLS")
        || message.contains("server does not support SSL")
    {
        Some(format!(
            "the server does not offer TLS, and sslmode={} requires it",
            match settings.sslmode {
                SslMode::VerifyFull => "verify-full",
                SslMode::VerifyCa => "verify-ca",
                _ => "require",
            }
        ))
    } else {
        None
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require`: encrypted, the certificate not checked (libpq's meaning). The
/// handshake's signatures are still verified.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_read_and_left_out_of_the_url() {
        let s = settings(
            "postgres://app:s%3Acret@db.example.net:6543/tracker?sslmode=verify-full\
             &sslrootcert=/etc/ca.pem&application_name=x",
            None,
        )
        .expect("settings");
        assert_eq!(s.sslmode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(s.password.as_deref(), Some("s:cret"));
        assert_eq!(
            (s.host.as_str(), s.port, s.user.as_str(), s.dbname.as_str()),
            ("db.example.net", 6543, "app", "tracker")
        );
        assert_eq!(
            s.url,
            "postgres://app:s%3Acret@db.example.net:6543/tracker?application_name=x"
        );
        assert!(!format!("{s:?}").contains("cret"));
        assert_eq!(
            settings("postgres://a@h/d", None)
                .expect("settings")
                .sslmode,
            SslMode::Prefer
        );
    }

    #[test]
    fn bad_tls_settings_are_refused_with_the_reason() {
        let err = settings("postgres://a@h/d?sslmode=sometimes", None).expect_err("refused");
        assert!(err.to_string().contains("sslmode=sometimes"), "{err}");
        let err = settings("postgres://a@h/d?sslcert=/c.pem", None).expect_err("refused");
        assert!(err.to_string().contains("sslcert and sslkey"), "{err}");
        let s = settings("postgres://a@h/d?sslmode=verify-full", None).expect("settings");
        let err = tls_config(&s).expect_err("refused");
        assert!(err.to_string().contains("needs sslrootcert"), "{err}");
    }

    #[test]
    fn the_password_file_matches_like_libpq() {
        let text = "# comment\n\
                    other:5432:*:app:nope\n\
                    db.example.net:5432:tracker:app:first\\:part\n\
                    *:*:*:app:fallback\n";
        assert_eq!(
            pgpass_match(text, "db.example.net", 5432, "tracker", "app").as_deref(),
            Some("first:part")
        );
        assert_eq!(
            pgpass_match(text, "db.example.net", 5432, "wiki", "app").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_match(text, "h", 5432, "d", "someone"), None);
    }

    #[test]
    fn a_password_file_fills_a_url_without_a_password_and_is_never_shown() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "p@ss:word\n").expect("write");
        let url = with_password_file("postgres://app@db/tracker", Some(&path)).expect("url");
        assert_eq!(
            settings(&url, None).expect("settings").password.as_deref(),
            Some("p@ss:word")
        );
        assert!(!redact_url(&url).contains("word"), "{}", redact_url(&url));
        let kept = with_password_file("postgres://app:given@db/t", Some(&path)).expect("url");
        assert_eq!(kept, "postgres://app:given@db/t");
    }

    #[test]
    fn a_password_file_key_is_read_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "hunter2\n").expect("write");
        let s = settings("postgres://a@h/d", Some(&path)).expect("settings");
        assert_eq!(s.password.as_deref(), Some("hunter2"));
        std::fs::write(&path, "").expect("write");
        let err = settings("postgres://a@h/d", Some(&path)).expect_err("refused");
        assert!(err.to_string().contains("is empty"), "{err}");
    }
}
