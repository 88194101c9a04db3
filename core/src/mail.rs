//! Delivering one message: to an SMTP server (lettre's connection, driven
//! step by step) or to a file in an outbox directory; and signing it with
//! DKIM ([`Signer`]).
//!
//! SMTP cannot say whether a message whose final reply was lost was taken
//! (RFC 1047). [`Transport::deliver`] therefore calls `commit` at the last
//! moment before the point of no return — after the server accepted the
//! sender, the recipient and the DATA command, just before the body and its
//! final dot — so the caller can record that the outcome is from then on
//! uncertain. A failure before `commit` means nothing was delivered; after
//! it, an explicit 4xx/5xx reply still means nothing was delivered, and only
//! a lost connection or a timeout leaves the outcome unknown. The caller
//! then sends the identical message again (`jobs::invitation`): a copy too
//! many is recognisable by its Message-ID, a lost one is not seen at all.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;

use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;

use crate::config::{DkimAlgorithm, DkimSettings, MailSettings, MailTransportKind, SmtpSecurity};

/// Signs messages with DKIM (RFC 6376) for `mail.dkim.domain`.
pub struct Signer(DkimConfig);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

/// The headers signed: those a forger would change, each present once in
/// every message we send (lettre signs one header of each name). Not
/// Content-Type: lettre 0.11 canonicalizes its folded `boundary=` line
/// otherwise than verifiers do (dkimpy fails the signature); the body hash
/// covers the parts and their boundaries anyway.
const SIGNED_HEADERS: [&str; 7] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
];

impl Signer {
    /// `None` while DKIM is off (no selector); an error names what is wrong
    /// with the key, never the key.
    pub fn from_settings(d: &DkimSettings) -> Result<Option<Signer>, String> {
        if !d.enabled() {
            return Ok(None);
        }
        let key = d.private_key.as_ref().ok_or_else(|| {
            "mail.dkim.private_key: set DOSSIER__MAIL__DKIM__PRIVATE_KEY or …_FILE".to_string()
        })?;
        let (algorithm, form) = match d.algorithm {
            DkimAlgorithm::Rsa => (
                DkimSigningAlgorithm::Rsa,
                "an RSA key in PKCS#1 PEM (-----BEGIN RSA PRIVATE KEY-----; `openssl rsa -traditional` converts one)",
            ),
            DkimAlgorithm::Ed25519 => (
                DkimSigningAlgorithm::Ed25519,
                "the base64 of a 32-byte Ed25519 key",
            ),
        };
        let key = DkimSigningKey::new(key.expose().trim(), algorithm)
            .map_err(|e| format!("mail.dkim.private_key is not {form}: {e}"))?;
        Ok(Some(Signer(DkimConfig::new(
            d.selector.clone(),
            d.domain.to_ascii_lowercase(),
            key,
            SIGNED_HEADERS
                .iter()
                .map(|h| HeaderName::new_from_ascii_str(h))
                .collect(),
            // Relaxed: survives the header folding and trailing-space
            // changes relays make.
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        ))))
    }

    pub fn sign(&self, message: &mut lettre::Message) {
        message.sign(&self.0);
    }
}

/// A message ready to go: its envelope and its bytes (RFC 5322).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Without angle brackets; also the outbox file's name.
    pub message_id: String,
    pub from: Address,
    pub to: Address,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Not delivered; worth trying again (4xx, refused connection, timeout
    /// before the body was sent).
    #[error("{0}")]
    Transient(String),
    /// Not delivered and never will be as is (5xx: unknown mailbox, refused).
    #[error("{0}")]
    Permanent(String),
    /// The body went out but the server's answer was lost.
    #[error("{0}")]
    Uncertain(String),
    /// `commit` failed: nothing was sent.
    #[error("{0}")]
    Commit(String),
}

impl DeliveryError {
    /// A short name of the failure, for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            DeliveryError::Transient(_) => "transient",
            DeliveryError::Permanent(_) => "permanent",
            DeliveryError::Uncertain(_) => "uncertain",
            DeliveryError::Commit(_) => "commit",
        }
    }
}

/// Deletes the regular files of the file transport's folder `dir` (not
/// links, nothing below it) that `doomed` picks: how erasure and retention
/// remove sent messages. A folder that does not exist holds none.
pub(crate) fn remove_files(
    dir: &std::path::Path,
    mut doomed: impl FnMut(&std::path::Path, &std::fs::Metadata) -> std::io::Result<bool>,
) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry?;
        // The entry's own type: a link is never followed.
        let meta = entry.metadata()?;
        if meta.file_type().is_file() && doomed(&entry.path(), &meta)? {
            std::fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Transport {
    File { dir: PathBuf },
    Smtp(SmtpTarget),
}

#[derive(Debug, Clone)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    credentials: Option<(String, String)>,
    pub timeout: Duration,
}

impl Transport {
    pub fn from_settings(mail: &MailSettings) -> Transport {
        match mail.transport {
            MailTransportKind::File => Transport::File {
                dir: PathBuf::from(&mail.outbox_dir),
            },
            MailTransportKind::Smtp => Transport::Smtp(SmtpTarget {
                host: mail.smtp.host.clone(),
                port: mail.smtp.port,
                security: mail.smtp.security,
                credentials: mail
                    .smtp
                    .username
                    .clone()
                    .zip(mail.smtp.password.as_ref().map(|p| p.expose().to_string())),
                timeout: Duration::from_millis(mail.smtp.timeout_ms),
            }),
        }
    }

    /// Delivers `mail`, calling `commit` just before the point of no return.
    /// Returns the server's answer (for a file, where it was written).
    pub async fn deliver<F, Fut>(&self, mail: &Outgoing, commit: F) -> Result<String, DeliveryError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        match self {
            Transport::File { dir } => deliver_file(dir, mail, commit).await,
            Transport::Smtp(target) => {
                let started = std::time::Instant::now();
                let sent = deliver_smtp(target, mail, commit).await;
                match &sent {
                    Ok(_) => crate::metrics::smtp_sent(started.elapsed().as_secs_f64()),
                    Err(e) => crate::metrics::smtp_failed(e.class()),
                }
                sent
            }
        }
    }
}

/// One file per Message-ID, written under a temporary name and renamed:
/// a message is in the outbox whole or not at all, and never twice.
async fn deliver_file<F, Fut>(
    dir: &PathBuf,
    mail: &Outgoing,
    commit: F,
) -> Result<String, DeliveryError>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let io = |e: std::io::Error| DeliveryError::Transient(format!("outbox {}: {e}", dir.display()));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let name: String = mail
        .message_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{name}.eml"));
    let reply = format!("in the outbox as {name}.eml");
    if tokio::fs::try_exists(&path).await.map_err(io)? {
        return Ok(reply);
    }
    commit().await.map_err(DeliveryError::Commit)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, &mail.bytes).await.map_err(io)?;
    tokio::fs::rename(&tmp, &path).await.map_err(io)?;
    Ok(reply)
}

/// What is kept of a server's answer: one line, addresses and control
/// characters out, short (`250 2.0.0 Ok: queued as 4Xk3Yz1abc`).
fn reply_text(r: &lettre::transport::smtp::response::Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    let text = redact_addresses(&format!("{} {}", r.code(), lines.join(" ")));
    let printable: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    printable
}

/// `text` with every email address replaced by `<address>`: servers echo
/// the recipient in their replies (`550 <x@y.fr>: mailbox unavailable`),
/// and those replies become job errors and log lines.
pub fn redact_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let core = word.trim_matches(|c: char| "<>(),;:\"'[]".contains(c));
        let looks_like_address = core
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if looks_like_address {
            out.push_str(
                &word
                    .replace(core, "<address>")
                    .replace("<<address>>", "<address>"),
            );
        } else {
            out.push_str(word);
        }
    }
    out
}

fn classify(step: &str, e: lettre::transport::smtp::Error) -> DeliveryError {
    let text = redact_addresses(&format!("SMTP {step}: {e}"));
    if e.is_permanent() {
        DeliveryError::Permanent(text)
    } else {
        DeliveryError::Transient(text)
    }
}

async fn timed<T>(
    timeout: Duration,
    step: &str,
    f: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, DeliveryError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(|e| classify(step, e)),
        Err(_) => Err(DeliveryError::Transient(format!(
            "SMTP {step}: no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

async fn deliver_smtp<F, Fut>(
    t: &SmtpTarget,
    mail: &Outgoing,
    commit: F,
) -> Result<String, DeliveryError>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let hello = ClientId::default();
    let tls = |host: &str| {
        TlsParameters::new(host.to_string())
            .map_err(|e| DeliveryError::Permanent(format!("TLS set-up for {host}: {e}")))
    };
    let wrapper = match t.security {
        SmtpSecurity::Tls => Some(tls(&t.host)?),
        _ => None,
    };
    let mut conn = timed(
        t.timeout,
        "connect",
        AsyncSmtpConnection::connect_tokio1(
            (t.host.as_str(), t.port),
            Some(t.timeout),
            &hello,
            wrapper,
            None,
        ),
    )
    .await?;
    if t.security == SmtpSecurity::Starttls {
        if !conn.can_starttls() {
            return Err(DeliveryError::Permanent(format!(
                "{}:{} does not offer STARTTLS, which mail.smtp.security requires",
                t.host, t.port
            )));
        }
        timed(t.timeout, "STARTTLS", conn.starttls(tls(&t.host)?, &hello)).await?;
    }
    if let Some((user, password)) = &t.credentials {
        let creds = Credentials::new(user.clone(), password.clone());
        timed(
            t.timeout,
            "AUTH",
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds),
        )
        .await?;
    }
    timed(
        t.timeout,
        "MAIL FROM",
        conn.command(Mail::new(Some(mail.from.clone()), vec![])),
    )
    .await?;
    timed(
        t.timeout,
        "RCPT TO",
        conn.command(Rcpt::new(mail.to.clone(), vec![])),
    )
    .await?;
    timed(t.timeout, "DATA", conn.command(Data)).await?;
    // From here a lost answer leaves the outcome unknown: say so first.
    commit().await.map_err(DeliveryError::Commit)?;
    match tokio::time::timeout(t.timeout, conn.message(&mail.bytes)).await {
        Ok(Ok(response)) => {
            // Taken: say so now. Waiting for QUIT's answer first would
            // widen the window in which a crash makes the retry send a
            // second copy.
            let timeout = t.timeout;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(timeout, conn.quit()).await;
            });
            Ok(reply_text(&response))
        }
        // The server answered: not taken, whatever the class.
        Ok(Err(e)) if e.is_permanent() => Err(classify("message", e)),
        Ok(Err(e)) if e.is_transient() => Err(classify("message", e)),
        Ok(Err(e)) => Err(DeliveryError::Uncertain(redact_addresses(&format!(
            "SMTP message: {e}; the server may have taken it"
        )))),
        Err(_) => Err(DeliveryError::Uncertain(format!(
            "SMTP message: no answer within {} ms; the server may have taken it",
            t.timeout.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_replies_lose_their_addresses() {
        assert_eq!(
            redact_addresses(
                "SMTP recipient: permanent error (550): 5.1.1 <reject.gerant@sci-tilleuls.fr>: mailbox unavailable"
            ),
            "SMTP recipient: permanent error (550): 5.1.1 <address>: mailbox unavailable"
        );
        assert_eq!(redact_addresses("to a.b@c.fr, now"), "to <address>, now");
        assert_eq!(redact_addresses("no @ here, nor x@y"), "no @ here, nor x@y");
    }
}
