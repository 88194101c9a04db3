//! File operations for folders that other people write into (the drop
//! folders of scheduled imports): nothing here follows a symbolic link,
//! blocks on a FIFO, reads past a size limit, or writes through an
//! existing name. Whoever can drop a file must not be able to make the
//! worker read `/etc/shadow` into a report, or overwrite a file with a line
//! of their choosing.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Linux's `O_NOFOLLOW` and `O_NONBLOCK` (x86-64 and aarch64 share them):
/// opening a link fails with ELOOP, opening a FIFO does not wait for a
/// writer.
const O_NOFOLLOW: i32 = 0o400_000;
const O_NONBLOCK: i32 = 0o4_000;

/// What a directory entry is, looked at without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular {
        bytes: u64,
    },
    Directory,
    /// A symbolic link, FIFO, socket or device: never read.
    Other(&'static str),
}

impl Kind {
    pub fn of(path: &Path) -> io::Result<Kind> {
        let meta = std::fs::symlink_metadata(path)?;
        let t = meta.file_type();
        Ok(if t.is_file() {
            Kind::Regular { bytes: meta.len() }
        } else if t.is_dir() {
            Kind::Directory
        } else if t.is_symlink() {
            Kind::Other("a symbolic link")
        } else if t.is_fifo() {
            Kind::Other("a named pipe (FIFO)")
        } else if t.is_socket() {
            Kind::Other("a socket")
        } else {
            Kind::Other("a device")
        })
    }
}

/// Why a dropped entry cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("it is {0}, not a file: drop the file itself")]
    NotAFile(&'static str),
    #[error(
        "the file is {bytes} bytes, over the limit of {limit} (imports.max_file_bytes): split it"
    )]
    TooLarge { bytes: u64, limit: usize },
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
}

/// The content of the regular file at `path`, at most `limit` bytes.
/// Opened without following a link and without blocking, then checked on
/// the open descriptor, so swapping the entry between the look and the
/// open gains nothing.
pub fn read_regular(path: &Path, limit: usize) -> Result<Vec<u8>, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // ELOOP: the entry is a symbolic link.
            Some(40) => ReadError::NotAFile("a symbolic link"),
            _ => ReadError::Io(e),
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        let kind = if meta.file_type().is_fifo() {
            "a named pipe (FIFO)"
        } else if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(ReadError::NotAFile(kind));
    }
    let bytes = meta.len();
    if bytes > limit as u64 {
        return Err(ReadError::TooLarge { bytes, limit });
    }
    let mut content = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
    // A file growing while read stops at the limit all the same.
    file.take(limit as u64 + 1).read_to_end(&mut content)?;
    if content.len() > limit {
        return Err(ReadError::TooLarge {
            bytes: content.len() as u64,
            limit,
        });
    }
    Ok(content)
}

/// Writes `bytes` to a new file `dir/name`, or `dir/ID--name` when that
/// name is taken; never through an existing file or link.
pub fn create_new(dir: &Path, name: &str, id: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let mut last = None;
    for candidate in [name.to_string(), format!("{id}--{name}")] {
        let path = dir.join(&candidate);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(O_NOFOLLOW)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(bytes)?;
                f.sync_all()?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free name")))
}

/// Moves the entry `from` into `dir` as `name`, or `ID--name` when that
/// name is taken, never replacing anything there. A regular file is
/// linked then unlinked (a link never replaces its target); anything else
/// is renamed under the `ID--` name, which nobody can have guessed.
pub fn file_away(from: &Path, dir: &Path, name: &str, id: &str) -> io::Result<PathBuf> {
    let regular = matches!(Kind::of(from)?, Kind::Regular { .. });
    if regular {
        for candidate in [name.to_string(), format!("{id}--{name}")] {
            let to = dir.join(&candidate);
            match std::fs::hard_link(from, &to) {
                Ok(()) => {
                    std::fs::remove_file(from)?;
                    return Ok(to);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }
    let to = dir.join(format!("{id}--{name}"));
    if std::fs::symlink_metadata(&to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        ));
    }
    std::fs::rename(from, &to)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_large_files_are_not_read() {
        let dir = tempfile::tempdir().expect("dir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root:x:0:0").expect("write");
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&secret, &link).expect("symlink");
        assert!(matches!(
            read_regular(&link, 100),
            Err(ReadError::NotAFile("a symbolic link"))
        ));
        assert_eq!(Kind::of(&link).ok(), Some(Kind::Other("a symbolic link")));
        assert!(matches!(
            read_regular(&secret, 5),
            Err(ReadError::TooLarge {
                bytes: 10,
                limit: 5
            })
        ));
        assert_eq!(read_regular(&secret, 10).ok(), Some(b"root:x:0:0".to_vec()));
        let fifo = dir.path().join("pipe.csv");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // Would block forever without O_NONBLOCK.
            assert!(matches!(
                read_regular(&fifo, 100),
                Err(ReadError::NotAFile("a named pipe (FIFO)"))
            ));
        }
        let sub = dir.path().join("sub.csv");
        std::fs::create_dir(&sub).expect("dir");
        assert!(matches!(
            read_regular(&sub, 100),
            Err(ReadError::NotAFile(_))
        ));
    }

    #[test]
    fn new_files_never_write_through_a_name_or_link() {
        let dir = tempfile::tempdir().expect("dir");
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").expect("write");
        std::os::unix::fs::symlink(&target, dir.path().join("r.txt")).expect("symlink");
        let written = create_new(dir.path(), "r.txt", "ID", b"report").expect("written");
        assert_eq!(written, dir.path().join("ID--r.txt"));
        assert_eq!(
            std::fs::read_to_string(&target).ok().as_deref(),
            Some("keep")
        );
        std::fs::write(dir.path().join("ID--x"), "taken").expect("write");
        std::fs::write(dir.path().join("x"), "taken").expect("write");
        assert!(create_new(dir.path(), "x", "ID", b"y").is_err());
    }

    #[test]
    fn filing_away_never_replaces() {
        let dir = tempfile::tempdir().expect("dir");
        let done = dir.path().join("done");
        std::fs::create_dir(&done).expect("dir");
        let from = dir.path().join("a.csv");
        std::fs::write(&from, "new").expect("write");
        std::fs::write(done.join("a.csv"), "old").expect("write");
        let to = file_away(&from, &done, "a.csv", "ID").expect("moved");
        assert_eq!(to, done.join("ID--a.csv"));
        assert_eq!(
            std::fs::read_to_string(done.join("a.csv")).ok().as_deref(),
            Some("old")
        );
        assert!(!from.exists());
        let link = dir.path().join("l.csv");
        std::os::unix::fs::symlink("/etc/passwd", &link).expect("symlink");
        let to = file_away(&link, &done, "l.csv", "ID2").expect("moved");
        assert_eq!(Kind::of(&to).ok(), Some(Kind::Other("a symbolic link")));
    }
}
