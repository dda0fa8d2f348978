//! The webhook URLs ebb accepts: plain `http://host[:port]/path`.

/// Splits `http://host[:port]/path`.
pub fn parse_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("`{url}` is not an http:// URL (https webhooks are not supported yet)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    let address = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((address, authority.to_owned(), path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/hook").unwrap(),
            (
                "127.0.0.1:9000".into(),
                "127.0.0.1:9000".into(),
                "/hook".into()
            )
        );
        assert_eq!(parse_url("http://example.com").unwrap().0, "example.com:80");
        assert!(
            parse_url("https://example.com/")
                .unwrap_err()
                .contains("https webhooks are not supported")
        );
        assert!(parse_url("http:///x").unwrap_err().contains("no host"));
    }
}
