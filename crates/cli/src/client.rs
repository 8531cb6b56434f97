//! A minimal HTTP/1.1 client over a TCP stream, for `http://` URLs only: `flowline replay` talks
//! to a running `flowline serve` through it, and alerts post to webhooks with it. One request per
//! connection (`Connection: close`), a body of JSON, a timeout on connect, read and write.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// A reply: its status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the reply is not JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `(host:port, path)` of an `http://` URL.
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        anyhow!("'{url}': only http:// URLs are supported (put a TLS proxy in front for https)")
    })?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        bail!("'{url}' has no host");
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// Sends one request and reads the whole reply.
pub fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Reply> {
    let (host, path) = split_url(url)?;
    // Every address the name resolves to, in order (`localhost` is often `::1` first while the
    // listener is on 127.0.0.1).
    let mut last = None;
    let mut connected = None;
    for addr in host
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
    {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                connected = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut s = match (connected, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(e).with_context(|| format!("cannot connect to {host}")),
        (None, None) => return Err(anyhow!("{host} resolves to no address")),
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .with_context(|| format!("cannot send to {host}"))?;
    let mut raw = vec![];
    s.read_to_end(&mut raw)
        .with_context(|| format!("no reply from {host}"))?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{host} sent no HTTP reply"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("{host} sent a bad status line: {head}"))?;
    let mut body = raw[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok(Reply { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![];
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("a truncated chunked reply"))?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("a bad chunk size '{size_text}'"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            bail!("a truncated chunk");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:9000/hook?x=1").unwrap(),
            ("127.0.0.1:9000".into(), "/hook?x=1".into())
        );
        assert_eq!(
            split_url("http://example.org").unwrap(),
            ("example.org:80".into(), "/".into())
        );
        let e = split_url("https://example.org/x").unwrap_err().to_string();
        assert!(e.contains("only http://"), "{e}");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_err());
    }
}
