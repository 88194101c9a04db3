//! A real SMTP server for the suites: aiosmtpd, run from
//! `support/smtp_capture.py` on a free loopback port, storing each accepted
//! message as a file. `scripts/test` installs aiosmtpd.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct SmtpCapture {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl SmtpCapture {
    /// A server on a free port, already listening.
    pub fn start(dir: &Path) -> SmtpCapture {
        let mut s = SmtpCapture::reserve(dir);
        s.up();
        s
    }

    /// A port for a server that is not running yet (see [`SmtpCapture::up`]).
    pub fn reserve(dir: &Path) -> SmtpCapture {
        SmtpCapture {
            port: crate::free_port(),
            dir: dir.join("smtp-captured"),
            child: None,
        }
    }

    pub fn up(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/smtp_capture.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(self.port.to_string())
            .arg(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (scripts/test installs aiosmtpd)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("smtp_capture.py starts");
        assert_eq!(
            line.trim(),
            "ready",
            "aiosmtpd did not start: is it installed?"
        );
        self.child = Some(child);
    }

    /// Stops the server (its port refuses connections until [`SmtpCapture::up`]).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let n = p.file_stem()?.to_str()?.parse().ok()?;
                (p.extension()? == "eml").then_some((n, p))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .collect()
    }
}

impl Drop for SmtpCapture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The decoded text of a message's parts (quoted-printable soft breaks and
/// escapes undone), for content checks.
pub fn decoded(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
