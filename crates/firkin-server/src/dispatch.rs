//! Demultiplexing one listener: control plane vs sandbox traffic. Pure logic.
//!
//! Sandbox traffic is recognised, in order, by the `E2b-Sandbox-Id` (+ `E2b-Sandbox-Port`)
//! headers, by a `Host` of the form `{port}-{sandboxId}.{domain}`, or — for signed `/files`
//! URLs opened by a plain client — by a `signature` query parameter on `/files`.

use axum::http::HeaderMap;
use firkin_wire::agent::ENVD_PORT;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    ControlPlane,
    /// Traffic for a named sandbox and port.
    Sandbox {
        id: String,
        port: u16,
    },
    /// A signed `/files` URL without routing headers: find the sandbox by signature.
    SignedFiles,
    /// A routing header that cannot be parsed.
    BadRoute(String),
}

/// Classifies a request from its headers, path and query.
pub fn classify(headers: &HeaderMap, path: &str, query: Option<&str>) -> Destination {
    if let Some(id) = header_str(headers, "e2b-sandbox-id") {
        let port = match header_str(headers, "e2b-sandbox-port") {
            None => ENVD_PORT,
            Some(p) => match p.trim().parse::<u16>() {
                Ok(p) => p,
                Err(_) => return Destination::BadRoute(format!("invalid E2b-Sandbox-Port header {p:?}")),
            },
        };
        return Destination::Sandbox { id: id.trim().to_owned(), port };
    }
    if let Some((port, id)) = header_str(headers, "host").and_then(parse_sandbox_host) {
        return Destination::Sandbox { id, port };
    }
    if path == "/files" && query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("signature="))) {
        return Destination::SignedFiles;
    }
    Destination::ControlPlane
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parses `{port}-{sandboxId}.{domain}[:hostport]`.
pub fn parse_sandbox_host(host: &str) -> Option<(u16, String)> {
    let first = host.split('.').next()?;
    if first.len() == host.len() {
        return None; // no domain part: plain "localhost" or an IP literal
    }
    let (port, id) = first.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return None;
    }
    Some((port, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn headers_win() {
        let d = classify(&h(&[("e2b-sandbox-id", "abc"), ("e2b-sandbox-port", "49999")]), "/execute", None);
        assert_eq!(d, Destination::Sandbox { id: "abc".into(), port: 49999 });
        let d = classify(&h(&[("e2b-sandbox-id", "abc")]), "/health", None);
        assert_eq!(d, Destination::Sandbox { id: "abc".into(), port: 49983 });
        let d = classify(&h(&[("e2b-sandbox-id", "abc"), ("e2b-sandbox-port", "x")]), "/", None);
        assert!(matches!(d, Destination::BadRoute(_)));
    }

    #[test]
    fn host_routing() {
        let d = classify(&h(&[("host", "49983-abc123.localhost:3000")]), "/health", None);
        assert_eq!(d, Destination::Sandbox { id: "abc123".into(), port: 49983 });
        assert_eq!(
            classify(&h(&[("host", "127.0.0.1:3000")]), "/v2/sandboxes", None),
            Destination::ControlPlane
        );
        assert_eq!(
            classify(&h(&[("host", "localhost:3000")]), "/v2/sandboxes", None),
            Destination::ControlPlane
        );
        assert_eq!(parse_sandbox_host("api.example.com"), None);
        assert_eq!(parse_sandbox_host("80-ABC.example.com"), None);
    }

    #[test]
    fn signed_files_without_headers() {
        assert_eq!(classify(&h(&[]), "/files", Some("path=%2Fa&signature=v1_x")), Destination::SignedFiles);
        assert_eq!(classify(&h(&[]), "/files", Some("path=%2Fa")), Destination::ControlPlane);
        assert_eq!(classify(&h(&[]), "/sandboxes", None), Destination::ControlPlane);
    }
}
