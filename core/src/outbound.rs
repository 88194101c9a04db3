//! Every HTTP call that leaves the platform — registries, partners' and
//! event receivers' endpoints — goes through a client built here, with one
//! policy (`[outbound]`):
//!
//! - **No redirect is followed.** A partner call carries a signed body and
//!   decrypted settings, a registry call an API-key header; following a
//!   `Location` would hand them to whoever it names (reqwest's default
//!   follows ten, re-sending the body on 307/308 and every custom header).
//!   A 3xx answer is an error that names where it pointed, so the operator
//!   can fix the URL.
//! - **https only.** Plain http only to a loopback address, and only with
//!   `outbound.allow_plain_http_to_loopback` (local stand-ins, tests).
//! - **No private destination.** Loopback, link-local (cloud metadata at
//!   169.254.169.254), private, shared and other non-public addresses are
//!   refused unless listed in `outbound.allowed_networks`. Names are
//!   checked on the addresses DNS gives at connection time (the resolver
//!   here), so a name pointing at 10.0.0.5, or rebinding to it later, is
//!   refused too; address literals are checked before the request.
//! - **Answers read up to a bound** ([`body_up_to`]): a receiver cannot make
//!   a worker hold gigabytes, and only an excerpt is ever stored.
//!
//! Environment proxies are not used: through a proxy the destination's
//! address is not ours to check.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::OutboundSettings;

/// A call the policy refuses, with how to allow it when it is meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The destinations calls may reach.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    plain_http_to_loopback: bool,
    allowed: Vec<ipnet::IpNet>,
}

impl Policy {
    /// From settings already validated ([`OutboundSettings::problems`]).
    pub fn from_settings(s: &OutboundSettings) -> Policy {
        Policy {
            plain_http_to_loopback: s.allow_plain_http_to_loopback,
            allowed: s
                .allowed_networks
                .iter()
                .filter_map(|n| parse_network(n))
                .collect(),
        }
    }

    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = canonical(ip);
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match non_public(ip) {
            None => Ok(()),
            Some("loopback") if self.plain_http_to_loopback => Ok(()),
            Some(kind) => Err(Refused(format!(
                "{ip} is a {kind} address: calls to non-public networks are refused; if this destination is meant, add it to outbound.allowed_networks"
            ))),
        }
    }

    /// Checks a URL before any connection: its scheme, and its host when
    /// it is an address (names are checked by the resolver).
    pub fn check_url(&self, url: &str) -> Result<url::Url, Refused> {
        let shown = crate::config::redact_url(url);
        let parsed =
            url::Url::parse(url).map_err(|e| Refused(format!("{shown} is not a URL: {e}")))?;
        let host = match parsed.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(Refused(format!("{shown} has no host"))),
        };
        match parsed.scheme() {
            "https" => {}
            "http" => {
                let loopback = match (host, parsed.host_str()) {
                    (Some(ip), _) => canonical(ip).is_loopback(),
                    (None, Some(name)) => name.eq_ignore_ascii_case("localhost"),
                    _ => false,
                };
                if !(loopback && self.plain_http_to_loopback) {
                    return Err(Refused(format!(
                        "{shown}: plain http is refused (the call carries a signature or a key); use https — http only to a loopback address with outbound.allow_plain_http_to_loopback = true"
                    )));
                }
            }
            other => {
                return Err(Refused(format!(
                    "{shown}: scheme `{other}` is not allowed; use https"
                )));
            }
        }
        if let Some(ip) = host {
            self.allows(ip)
                .map_err(|Refused(why)| Refused(format!("{shown}: {why}")))?;
        }
        Ok(parsed)
    }
}

/// A network of `outbound.allowed_networks`: CIDR or a single address.
pub(crate) fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is that IPv4
/// address: checked as such, or it would slip past every IPv4 rule.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of non-public address `ip` is, if it is one.
fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let [o1, o2, ..] = a.octets();
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_link_local() {
                Some("link-local")
            } else if a.is_private() {
                Some("private")
            } else if o1 == 100 && (64..128).contains(&o2) {
                Some("shared (carrier-grade NAT)")
            } else if a.is_unspecified() || o1 == 0 {
                Some("unspecified")
            } else if a.is_broadcast() || a.is_multicast() || o1 >= 240 {
                Some("broadcast, multicast or reserved")
            } else if a.is_documentation() || (o1 == 198 && (o2 == 18 || o2 == 19)) {
                Some("documentation or benchmarking")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_unicast_link_local() {
                Some("link-local")
            } else if a.is_unique_local() {
                Some("private (unique local)")
            } else if a.is_unspecified() {
                Some("unspecified")
            } else if a.is_multicast() {
                Some("broadcast, multicast or reserved")
            } else if first == 0x2001 && a.segments()[1] == 0x0db8 {
                Some("documentation or benchmarking")
            } else if first == 0x0064 && a.segments()[1] == 0xff9b {
                // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address:
                // its last 32 bits.
                let v4 = std::net::Ipv4Addr::from(u128::from(a) as u32);
                non_public(IpAddr::V4(v4))
            } else {
                None
            }
        }
    }
}

/// Resolves names, then keeps only the addresses the policy allows: the
/// check happens on what is connected to, not on what the URL says.
struct Resolver(Arc<Policy>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.allows(a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refusal.get_or_insert(r);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(Refused(why))) => Err(Box::new(Refused(format!("{host}: {why}")))
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// An HTTP client and the policy its calls obey.
#[derive(Debug, Clone)]
pub struct Outbound {
    client: reqwest::Client,
    policy: Arc<Policy>,
}

impl Outbound {
    pub fn new(
        policy: Policy,
        timeout: Duration,
        user_agent: &str,
    ) -> Result<Outbound, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(Resolver(policy.clone())))
            .build()?;
        Ok(Outbound { client, policy })
    }

    /// A request to `url`, if the policy allows it.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, Refused> {
        let url = self.policy.check_url(url)?;
        Ok(self.client.request(method, url))
    }
}

/// The policy's refusal inside a failed request (the resolver's), if that
/// is why it failed: a refusal is final, not worth retrying.
pub fn refusal(e: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return Some(r);
        }
        source = s.source();
    }
    None
}

/// An answer's `Retry-After`, in seconds (the HTTP-date form is rare on the
/// services called and is read as absent).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A 3xx answer as an error: where it pointed (without its query), and
/// why it is not followed.
pub fn redirect_refusal(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Option<String> {
    if !status.is_redirection() {
        return None;
    }
    let to = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| {
            let l = l.split(['?', '#']).next().unwrap_or_default();
            crate::text::printable(&crate::config::redact_url(l))
                .chars()
                .take(200)
                .collect::<String>()
        })
        .unwrap_or_else(|| "nowhere given".into());
    Some(format!(
        "answered {status} with a redirect to {to}: not followed (a signed request or a key is never re-sent to another address); set the URL to the final address"
    ))
}

/// At most `limit` bytes of an answer's body, and whether there was more.
/// Reading stops at the bound: the rest is never buffered.
pub async fn body_up_to(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(loopback: bool, allowed: &[&str]) -> Policy {
        Policy::from_settings(&OutboundSettings {
            allow_plain_http_to_loopback: loopback,
            allowed_networks: allowed.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn non_public_addresses_are_refused_and_public_ones_pass() {
        let p = policy(false, &[]);
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = refused.parse().expect("ip");
            assert!(p.allows(ip).is_err(), "{refused} allowed");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2a01:cb00::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = public.parse().expect("ip");
            assert_eq!(p.allows(ip), Ok(()), "{public} refused");
        }
    }

    #[test]
    fn the_settings_open_loopback_and_listed_networks_only() {
        let p = policy(true, &["10.1.0.0/16", "fd12::7"]);
        assert_eq!(p.allows("127.0.0.1".parse().expect("ip")), Ok(()));
        assert_eq!(p.allows("10.1.2.3".parse().expect("ip")), Ok(()));
        assert_eq!(p.allows("fd12::7".parse().expect("ip")), Ok(()));
        assert!(p.allows("10.2.0.1".parse().expect("ip")).is_err());
        assert!(p.allows("169.254.169.254".parse().expect("ip")).is_err());
        let why = policy(false, &[])
            .allows("169.254.169.254".parse().expect("ip"))
            .expect_err("refused");
        assert!(
            why.0.contains("link-local") && why.0.contains("outbound.allowed_networks"),
            "{why}"
        );
    }

    #[test]
    fn plain_http_only_to_loopback_and_only_when_allowed() {
        let strict = policy(false, &[]);
        let local = policy(true, &[]);
        assert!(strict.check_url("https://partner.example/p").is_ok());
        for url in ["http://partner.example/p", "http://127.0.0.1:9/p"] {
            let why = strict.check_url(url).expect_err(url);
            assert!(why.0.contains("plain http is refused"), "{why}");
        }
        assert!(local.check_url("http://127.0.0.1:9/p").is_ok());
        assert!(local.check_url("http://[::1]:9/p").is_ok());
        assert!(local.check_url("http://localhost:9/p").is_ok());
        assert!(local.check_url("http://partner.example/p").is_err());
        assert!(local.check_url("http://10.0.0.1/p").is_err());
        assert!(strict.check_url("https://10.0.0.1/p").is_err());
        assert!(strict.check_url("https://[::ffff:a9fe:a9fe]/").is_err());
        assert!(strict.check_url("ftp://partner.example/").is_err());
        assert!(strict.check_url("file:///etc/passwd").is_err());
        // The URL's credentials never reach the message.
        let why = strict
            .check_url("http://user:s3cret@partner.example/")
            .expect_err("http");
        assert!(!why.0.contains("s3cret"), "{why}");
    }
}
