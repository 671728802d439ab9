//! HTTP plumbing shared by connectors: the client, URL policy, and status-to-error mapping.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use url::Url;

use super::ConnectorError;

/// Build the HTTP client every connector uses: rustls, timeouts, a clear user agent.
///
/// # Errors
/// Fails only if the TLS backend cannot initialise.
pub fn client(timeout: Duration) -> Result<reqwest::Client, ConnectorError> {
    reqwest::Client::builder()
        .user_agent(concat!("leadsync/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(16)
        .build()
        .map_err(|e| ConnectorError::Config(format!("cannot build http client: {e}")))
}

/// Parse a configured base URL: `https://` anywhere, plain `http://` only to loopback
/// addresses (where the simulators live).
///
/// # Errors
/// Returns a message fit for a config error when the URL is malformed or insecure.
pub fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if !loopback {
                return Err("plain http is only allowed for loopback addresses; use https".into());
            }
        }
        other => return Err(format!("unsupported scheme {other:?}; use https")),
    }
    if url.host().is_none() {
        return Err("URL has no host".into());
    }
    Ok(url)
}

/// `Retry-After` as seconds (the form vendors send); HTTP dates are ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Map a transport error: everything at this level is worth a retry.
pub fn transport(e: &reqwest::Error) -> ConnectorError {
    // reqwest's Display can include the URL, which never carries PII in our calls.
    ConnectorError::Transient(format!("http transport: {e}"))
}

/// The error class of a non-success status that carries no vendor-specific meaning.
pub fn status_error(status: StatusCode, headers: &HeaderMap, code: &str) -> ConnectorError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        ConnectorError::RateLimited { retry_after: retry_after(headers) }
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        ConnectorError::Transient(format!("http {}", status.as_u16()))
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        ConnectorError::Auth(format!("http {}: {code}", status.as_u16()))
    } else {
        ConnectorError::Rejected {
            code: if code.is_empty() { format!("http_{}", status.as_u16()) } else { code.into() },
            message: format!("http {}", status.as_u16()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_on_loopback() {
        assert!(parse_base_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_base_url("http://localhost:1").is_ok());
        assert!(parse_base_url("http://[::1]:1").is_ok());
        assert!(parse_base_url("https://api.hubapi.com").is_ok());
        assert!(parse_base_url("http://api.hubapi.com").is_err());
        assert!(parse_base_url("http://10.0.0.1").is_err());
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("not a url").is_err());
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().expect("valid header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("valid"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
