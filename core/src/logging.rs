//! Log set-up shared by both binaries: text for people, JSON for machines.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber (once; later calls are ignored). Logs go
/// to stderr so that command output on stdout stays parseable.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in log files and journald
    // are noise (and cost time on every job's span).
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = match settings.format {
        LogFormat::Text => builder
            .with_writer(OneLine {
                inner: std::io::stderr,
                keep_escape: ansi,
            })
            .try_init(),
        // JSON escapes every control character itself.
        LogFormat::Json => builder
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .try_init(),
    };
}

/// Installs the global subscriber writing text lines to `path` (created,
/// or appended to), for a command whose own output is the point (the
/// demo): its warnings about the jobs it makes fail on purpose would bury
/// the summary.
pub fn init_to_file(settings: &LogSettings, path: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(OneLine {
            inner: std::sync::Mutex::new(file),
            keep_escape: false,
        })
        .try_init();
    Ok(())
}

/// A text-log writer that keeps each event on one line: a line break or
/// other control character inside a field (a path parameter `%0A…`, a
/// partner's error message) is written as `\u{a}`, so nobody can forge a
/// log line. The formatter hands over one whole event per write; only its
/// final line break is kept. With colours on, ESC is the formatter's own
/// and is kept too (text fields reaching a colour terminal are checked at
/// the door by [`crate::text`]).
#[derive(Clone, Copy)]
pub struct OneLine<M> {
    pub inner: M,
    pub keep_escape: bool,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter {
            inner: self.inner.make_writer(),
            keep_escape: self.keep_escape,
        }
    }
}

pub struct OneLineWriter<W> {
    inner: W,
    keep_escape: bool,
}

impl<W: Write> Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        let needs = body
            .iter()
            .any(|b| b.is_ascii_control() && !(*b == 0x1b && self.keep_escape) && *b != b'\t');
        if !needs {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let text = String::from_utf8_lossy(body);
        let mut out = String::with_capacity(text.len() + 16);
        for c in text.chars() {
            let keep = !c.is_ascii_control() || c == '\t' || (c == '\u{1b}' && self.keep_escape);
            if keep {
                out.push(c);
            } else {
                out.extend(c.escape_unicode());
            }
        }
        if body.len() < buf.len() {
            out.push('\n');
        }
        self.inner.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_field_cannot_forge_a_line() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(OneLine {
                inner: move || sink.clone(),
                keep_escape: false,
            })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let id = "x\n2026-12-01T00:00:00Z  INFO forged: admin logged in\u{1b}[2J";
            tracing::info!(job_id = %id, "retried from the dashboard");
            tracing::info!("second");
        });
        let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("x\\u{a}2026-12-01T00:00:00Z  INFO forged"),
            "{text}"
        );
        assert!(lines[0].contains("\\u{1b}[2J"), "{text}");
        assert!(!text.contains('\u{1b}'));
    }
}
