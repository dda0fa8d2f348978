//! Just enough of PostgreSQL's frontend/backend protocol (v3) to run a
//! simple query over the local socket: a startup message, no password
//! (the role must be let in by `trust` or `peer`), simple queries, text
//! results. No TLS, no extended protocol.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version 3.0 of the startup message.
const PROTOCOL_3_0: i32 = 196_608;
/// No message the agent expects is anywhere near this; a larger length
/// means the peer is not PostgreSQL.
const MAX_MESSAGE: usize = 1 << 20;
/// Connecting, authenticating and a query on a local server.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One session; `S` is a unix socket in the agent, anything in tests.
pub struct Session<S> {
    stream: S,
}

/// A result row: each column's text, `None` for NULL.
pub type Row = Vec<Option<String>>;

impl Session<tokio::net::UnixStream> {
    /// Connects to the socket file (`<dir>/.s.PGSQL.<port>`) as `user`.
    pub async fn connect_unix(socket: &Path, user: &str) -> Result<Self, String> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL at {}: {e}", socket.display()))?;
        Session::start(stream, user, "postgres").await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Sends the startup message and waits for the server to be ready.
    pub async fn start(stream: S, user: &str, database: &str) -> Result<Self, String> {
        let mut s = Self { stream };
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", database)] {
            for part in [k, v] {
                body.extend_from_slice(part.as_bytes());
                body.push(0);
            }
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        msg.extend(body);
        s.stream.write_all(&msg).await.map_err(io)?;
        loop {
            let (kind, body) = s.read().await?;
            match kind {
                b'R' => {
                    let code = body.get(..4).map_or(-1, |b| {
                        i32::from_be_bytes(b.try_into().expect("four bytes"))
                    });
                    if code != 0 {
                        return Err(format!(
                            "PostgreSQL asks role `{user}` for {} on the local socket; the agent's reload connection supports only `trust` or `peer` authentication (add `local postgres {user} peer` above other lines of pg_hba.conf, or use reload = \"signal\")",
                            auth_name(code)
                        ));
                    }
                }
                b'E' => return Err(error_text(&body)),
                b'Z' => return Ok(s),
                // ParameterStatus, BackendKeyData, NoticeResponse.
                _ => {}
            }
        }
    }

    /// Runs one simple query and returns its rows, or the server's error.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Row>, String> {
        let mut msg = vec![b'Q'];
        msg.extend(((sql.len() + 5) as i32).to_be_bytes());
        msg.extend(sql.as_bytes());
        msg.push(0);
        self.stream.write_all(&msg).await.map_err(io)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (kind, body) = self.read().await?;
            match kind {
                b'D' => rows.push(data_row(&body)?),
                b'E' => error = Some(error_text(&body)),
                b'Z' => return error.map_or(Ok(rows), Err),
                // RowDescription, CommandComplete, EmptyQueryResponse, notices.
                _ => {}
            }
        }
    }

    /// Says goodbye (Terminate) so the server logs no lost connection.
    pub async fn close(mut self) {
        let _ = self.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = self.stream.shutdown().await;
    }

    async fn read(&mut self) -> Result<(u8, Vec<u8>), String> {
        let kind = self.stream.read_u8().await.map_err(io)?;
        let len = self.stream.read_i32().await.map_err(io)?;
        let len = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_sub(4))
            .filter(|l| *l <= MAX_MESSAGE)
            .ok_or_else(|| format!("PostgreSQL sent a message of length {len}"))?;
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await.map_err(io)?;
        Ok((kind, body))
    }
}

fn io(e: std::io::Error) -> String {
    format!("the connection to PostgreSQL failed: {e}")
}

fn auth_name(code: i32) -> &'static str {
    match code {
        2 => "Kerberos",
        3 => "a cleartext password",
        5 => "an MD5 password",
        7 | 8 => "GSSAPI",
        9 => "SSPI",
        10..=12 => "SCRAM (SASL)",
        _ => "an unknown authentication",
    }
}

/// An ErrorResponse as `SEVERITY: message (SQLSTATE code)`.
fn error_text(body: &[u8]) -> String {
    let mut severity = "ERROR".to_owned();
    let mut message = String::new();
    let mut code = String::new();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'S' => severity = value,
            b'M' => message = value,
            b'C' => code = value,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    format!("PostgreSQL: {severity}: {message} (SQLSTATE {code})")
}

fn data_row(body: &[u8]) -> Result<Row, String> {
    let short = || "PostgreSQL sent a short data row".to_owned();
    let count = u16::from_be_bytes(body.get(..2).ok_or_else(short)?.try_into().expect("2"));
    let mut at = 2;
    let mut row = Vec::with_capacity(count.into());
    for _ in 0..count {
        let len = i32::from_be_bytes(
            body.get(at..at + 4)
                .ok_or_else(short)?
                .try_into()
                .expect("4"),
        );
        at += 4;
        if len < 0 {
            row.push(None);
            continue;
        }
        let end = at + len as usize;
        let value = body.get(at..end).ok_or_else(short)?;
        row.push(Some(String::from_utf8_lossy(value).into_owned()));
        at = end;
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_name_severity_message_and_code() {
        let body = b"SERROR\0C42501\0Mpermission denied for function pg_reload_conf\0\0";
        assert_eq!(
            error_text(body),
            "PostgreSQL: ERROR: permission denied for function pg_reload_conf (SQLSTATE 42501)"
        );
    }

    #[test]
    fn data_rows_keep_nulls() {
        let body = [0, 2, 0, 0, 0, 1, b't', 255, 255, 255, 255];
        assert_eq!(data_row(&body).unwrap(), [Some("t".to_owned()), None]);
        assert!(data_row(&[0, 1, 0, 0, 0, 9, b'x']).is_err());
    }
}
