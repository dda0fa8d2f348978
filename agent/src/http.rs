//! A small HTTP/1.1 client for endpoints on the agent's own host: plain
//! `http://`, one GET per connection (`Connection: close`), no dependency
//! beyond tokio. Health checks read the status line only; Prometheus
//! sources read the whole body.

use std::net::Ipv6Addr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// GETs `url` and returns its body when the status is 2xx. The whole
/// response must fit in `max_bytes`. Bodies sent with `Content-Length`,
/// chunked, or up to the close are all read.
pub(crate) async fn get_body(url: &str, accept: &str, max_bytes: usize) -> Result<String, String> {
    let target = HttpUrl::parse(url).map_err(|why| format!("bad URL {url:?}: {why}"))?;
    let stream = send_get(&target, Some(accept)).await?;
    let mut response = Vec::with_capacity(64 * 1024);
    // One byte over the limit tells "exactly at the limit" from "too big".
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    stream
        .take(limit)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read response from {url}: {}", describe_lowercase(&e)))?;
    if response.len() > max_bytes {
        return Err(format!(
            "the response from {url} is larger than {max_bytes} bytes"
        ));
    }
    let body = parse_response(&response).map_err(|why| format!("{why} from {url}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Splits a whole response into status, headers and body; the body when the
/// status is 2xx, else why not (to be followed by "from URL").
fn parse_response(response: &[u8]) -> Result<Vec<u8>, String> {
    let Some(head_end) = find(response, b"\r\n\r\n") else {
        return Err("an incomplete response".to_owned());
    };
    let head = String::from_utf8_lossy(&response[..head_end]);
    let body = &response[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status =
        parse_status_line(status_line).ok_or_else(|| format!("bad status line {status_line:?}"))?;
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}"));
    }
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .to_ascii_lowercase()
                .split(',')
                .any(|c| c.trim() == "chunked");
        }
    }
    if chunked {
        decode_chunked(body)
    } else if let Some(length) = content_length {
        body.get(..length).map(<[u8]>::to_vec).ok_or_else(|| {
            format!(
                "a body shorter than its Content-Length ({} of {length} bytes)",
                body.len()
            )
        })
    } else {
        Ok(body.to_vec())
    }
}

/// Decodes a `Transfer-Encoding: chunked` body (chunk extensions and
/// trailers ignored).
fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(data.len());
    loop {
        let line_end = find(data, b"\r\n").ok_or("a truncated chunked body")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("a bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = data
            .get(..size)
            .filter(|_| data.get(size..size + 2) == Some(b"\r\n"))
            .ok_or("a truncated chunked body")?;
        body.extend_from_slice(chunk);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    use tokio::net::TcpListener;

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

    #[test]
    fn responses() {
        let ok =
            |text: &str| parse_response(text.as_bytes()).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\n\r\nup to the close"),
            Ok("up to the close".into())
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more"),
            Ok("hello".into())
        );
        assert_eq!(
            ok(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
            ),
            Ok("hello, world".into())
        );
        assert_eq!(
            ok("HTTP/1.1 404 Not Found\r\n\r\nnope"),
            Err("HTTP 404".into())
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"),
            Err("a body shorter than its Content-Length (5 of 50 bytes)".into())
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
            Err("a truncated chunked body".into())
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err("a bad chunk size \"zz\"".into())
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-"),
            Err("an incomplete response".into())
        );
        assert_eq!(
            ok("SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            Err("bad status line \"SSH-2.0-OpenSSH_9.6\"".into())
        );
    }

    /// Serves one connection with `response`; the URL to fetch.
    async fn serve_once(response: String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
        });
        url
    }

    #[tokio::test]
    async fn get_body_reads_a_whole_response_within_its_limit() {
        let url = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nup 1".into()).await;
        assert_eq!(get_body(&url, "text/plain", 1024).await, Ok("up 1".into()));

        let url = serve_once(format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(2000))).await;
        assert_eq!(
            get_body(&url, "text/plain", 1024).await,
            Err(format!("the response from {url} is larger than 1024 bytes"))
        );

        let url = serve_once("HTTP/1.1 500 Internal Server Error\r\n\r\n".into()).await;
        assert_eq!(
            get_body(&url, "text/plain", 1024).await,
            Err(format!("HTTP 500 from {url}"))
        );

        assert_eq!(
            get_body("https://127.0.0.1/", "text/plain", 1024).await,
            Err("bad URL \"https://127.0.0.1/\": https is not supported; use a plain http:// endpoint".into())
        );
    }
}
