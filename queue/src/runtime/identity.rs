//! Worker names: unique per process, so that a restarted worker never
//! inherits (or is refused because of) its predecessor's leases.

use rand::distr::{Alphanumeric, SampleString};

/// `{prefix}-{host}-{pid}-{random}`, e.g. `dossier-worker-web1-4711-k3x9qa`.
pub fn worker_name(prefix: &str) -> String {
    let suffix = Alphanumeric
        .sample_string(&mut rand::rng(), 6)
        .to_lowercase();
    format!("{prefix}-{}-{}-{suffix}", host_name(), std::process::id())
}

pub fn host_name() -> String {
    gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_carry_pid() {
        let a = worker_name("w");
        let b = worker_name("w");
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())));
    }
}
