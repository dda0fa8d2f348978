//! The webhook URLs ebb accepts: `http://` or `https://`, parsed by the
//! `http` crate's RFC 3986 parser, with a host, and nothing a request line
//! or a log could be fooled by.

use http::Uri;

/// The longest URL accepted: browsers and proxies commonly stop at 2 KiB.
pub const MAX_URL_LEN: usize = 2048;

/// A webhook URL, split for dialling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub https: bool,
    /// The host as dialled and as the TLS server name: no brackets around
    /// an IPv6 address.
    pub host: String,
    pub port: u16,
    /// The `Host` header: the URL's authority as written.
    pub authority: String,
    /// The request target: the path (`/` when empty) and the query.
    pub path_and_query: String,
}

/// Parses a webhook URL; the error names the problem (the caller names
/// the field).
pub fn parse_url(url: &str) -> Result<WebhookUrl, String> {
    let shown = url.escape_debug();
    if url.is_empty() {
        return Err("is empty; give an http:// or https:// URL".into());
    }
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "is {} bytes long; at most {MAX_URL_LEN}",
            url.len()
        ));
    }
    if let Some((at, c)) = url
        .char_indices()
        .find(|(_, c)| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "`{shown}` has {} at byte {at}; a URL has no spaces or control characters (percent-encode them)",
            c.escape_debug()
        ));
    }
    if url.contains('#') {
        return Err(format!(
            "`{shown}` has a fragment (#…), which is never sent to a server"
        ));
    }
    if !url.contains("://") {
        return Err(format!(
            "`{shown}` is not an absolute URL; start it with http:// or https://"
        ));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => {
            return Err(format!(
                "`{shown}` has scheme `{other}`; webhooks are http:// or https://"
            ));
        }
        None => {
            return Err(format!(
                "`{shown}` is not an absolute URL; start it with http:// or https://"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{shown}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{shown}` carries credentials before the host; they would be logged with the URL (sign with the target's secret instead)"
        ));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(format!("`{shown}` has no host"));
    }
    // What follows the host's last colon (after any IPv6 brackets): the
    // `http` crate leaves an out-of-range port unparsed, not refused.
    let written_port = authority
        .as_str()
        .rsplit_once(':')
        .filter(|(_, p)| !p.contains(']'))
        .map(|(_, p)| p);
    let port = match written_port
        .filter(|p| !p.is_empty())
        .map(str::parse::<u16>)
    {
        Some(Ok(0)) => return Err(format!("`{shown}` has port 0")),
        Some(Ok(p)) => p,
        Some(Err(_)) => return Err(format!("`{shown}` has a port outside 1..=65535")),
        None if authority.as_str().ends_with(':') => {
            return Err(format!("`{shown}` has an empty port"));
        }
        None if https => 443,
        None => 80,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(WebhookUrl {
        https,
        host: host.to_owned(),
        port,
        authority: authority.as_str().to_owned(),
        path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_are_split_for_dialling() {
        let u = parse_url("http://127.0.0.1:9000/hook?x=1").unwrap();
        assert_eq!(
            u,
            WebhookUrl {
                https: false,
                host: "127.0.0.1".into(),
                port: 9000,
                authority: "127.0.0.1:9000".into(),
                path_and_query: "/hook?x=1".into(),
            }
        );
        let u = parse_url("https://hooks.example.com").unwrap();
        assert!(u.https);
        assert_eq!((u.port, u.path_and_query.as_str()), (443, "/"));
        assert_eq!(parse_url("http://example.com").unwrap().port, 80);
        let u = parse_url("https://[::1]:8443/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8443));
        assert_eq!(u.authority, "[::1]:8443");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let cases = [
            ("", "is empty"),
            ("http://a/b\r\nX-Injected: 1", "control characters"),
            ("http://a/b c", "no spaces"),
            ("http://a/\u{7f}", "control characters"),
            ("ftp://a/", "scheme `ftp`"),
            ("example.com/hook", "not an absolute URL"),
            ("/hook", "not an absolute URL"),
            ("http:///x", "not a URL"),
            ("http://user:pw@a/", "credentials"),
            ("http://a:0/", "port 0"),
            ("http://a:99999/", "outside 1..=65535"),
            ("http://a:/", "empty port"),
            ("http://a/#frag", "fragment"),
        ];
        for (url, want) in cases {
            let err = parse_url(url).expect_err(url);
            assert!(err.contains(want), "{url:?}: {err}");
            assert!(!err.contains('\r') && !err.contains('\n'), "{err}");
        }
        let long = format!("http://a/{}", "x".repeat(MAX_URL_LEN));
        assert!(parse_url(&long).unwrap_err().contains("at most 2048"));
    }
}
