//! A small HTTP/1.1 client for endpoints on the agent's own host: plain
//! `http://`, one GET per connection (`Connection: close`), no dependency
//! beyond tokio.

use std::net::Ipv6Addr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::describe::describe_lowercase;

/// A plain-HTTP URL split into what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// A name, an IPv4 address or an IPv6 address (without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, always starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses an `http://host[:port][/path]` URL; https and other schemes are
    /// rejected. The error is the reason alone, for the caller to put in context.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| why.to_owned();
        if url.chars().any(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("expected http://host[:port][/path]"));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad("https is not supported; use a plain http:// endpoint"));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad(&format!(
                "unsupported scheme {scheme:?}, expected http://"
            )));
        }
        // The fragment never goes to the server.
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path.chars().next() {
            None => "/".to_owned(),
            Some('?') => format!("/{path}"),
            Some(_) => path.to_owned(),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }

        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| bad(&format!("{host:?} is not an IPv6 address")))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':port' after the IPv6 address"))?,
                ),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match port {
            None => 80,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(bad(&format!("bad port {port:?}, expected 1-65535"))),
            },
        };
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// `host:port` to connect to, with IPv6 hosts in brackets.
    pub fn address(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    /// The `Host` header's value: the port is left out when it is the default.
    pub(crate) fn host_header(&self) -> String {
        if self.port == 80 {
            self.bracketed_host()
        } else {
            self.address()
        }
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// Connects to `target` and sends a GET for its path. `accept` adds an
/// `Accept` header.
pub(crate) async fn send_get(target: &HttpUrl, accept: Option<&str>) -> Result<TcpStream, String> {
    let address = target.address();
    let mut stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect to {address}: {}", describe_lowercase(&e)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ebb-agent\r\n{accept}Connection: close\r\n\r\n",
        target.path,
        target.host_header()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send request to {address}: {}", describe_lowercase(&e)))?;
    Ok(stream)
}

/// The status code of an `HTTP/1.x NNN reason` line.
pub(crate) fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|code| (100..=999).contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls() {
        let url = |host: &str, port, path: &str| HttpUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        };
        let cases = [
            ("http://localhost", url("localhost", 80, "/")),
            ("http://localhost/", url("localhost", 80, "/")),
            (
                "HTTP://10.0.0.5:8080/healthz",
                url("10.0.0.5", 8080, "/healthz"),
            ),
            (
                "http://app.internal:81?ready",
                url("app.internal", 81, "/?ready"),
            ),
            ("http://h/a/b?c=d#frag", url("h", 80, "/a/b?c=d")),
            ("http://[::1]:9000/x", url("::1", 9000, "/x")),
            ("http://[fd00::2]", url("fd00::2", 80, "/")),
        ];
        for (text, expected) in cases {
            assert_eq!(HttpUrl::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn host_header_and_address() {
        let v6 = HttpUrl::parse("http://[::1]:9000/").unwrap();
        assert_eq!(v6.address(), "[::1]:9000");
        assert_eq!(v6.host_header(), "[::1]:9000");
        let default_port = HttpUrl::parse("http://example.com/").unwrap();
        assert_eq!(default_port.host_header(), "example.com");
        assert_eq!(default_port.address(), "example.com:80");
    }

    #[test]
    fn bad_urls() {
        let cases = [
            ("https://example.com/", "https is not supported"),
            ("ftp://example.com/", "unsupported scheme \"ftp\""),
            ("example.com:80/", "expected http://host[:port][/path]"),
            ("http://", "missing host"),
            ("http:///path", "missing host"),
            ("http://:8080/", "missing host"),
            ("http://host:http/", "bad port \"http\""),
            ("http://host:70000/", "bad port \"70000\""),
            ("http://host:0/", "bad port \"0\""),
            ("http://host:/", "bad port \"\""),
            ("http://[::1/", "missing ']'"),
            ("http://[nope]/", "is not an IPv6 address"),
            ("http://[::1]x/", "expected ':port'"),
            ("http://user:pw@host/", "credentials"),
            ("http://host/a b", "whitespace"),
        ];
        for (text, expected) in cases {
            let error = HttpUrl::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(parse_status_line("HTTP/1.0 500"), Some(500));
        assert_eq!(parse_status_line("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line("ICY 200 OK"), None);
        assert_eq!(parse_status_line(""), None);
    }
}
