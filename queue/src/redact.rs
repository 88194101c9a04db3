//! URLs made safe to show.

/// Hides the password of a URL before it is shown or logged.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            // set_password only fails on URLs that cannot have one.
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_string(),
    }
}
