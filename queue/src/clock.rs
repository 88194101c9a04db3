//! Time as the queues store it: milliseconds since the Unix epoch.
//!
//! One integer is compared in SQL, in Lua and in Rust alike, so every backend
//! agrees on "due" without parsing dates.

use chrono::{DateTime, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Renders a stored timestamp for people (RFC 3339, UTC, milliseconds).
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}
