//! Minimal HTTP/1.0: one request per connection, as Patroni's `http.server` speaks it. HEAD
//! and OPTIONS answers are a bare status line with no headers (HAProxy's checks rely on it),
//! which is why this is not built on a general HTTP library.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest request head and body accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Decoded `k=v` pairs of the query string, in order.
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first path segment, which selects the handler (`/cluster/x` -> `cluster`).
    pub fn first_segment(&self) -> &str {
        self.path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read; answered with this status.
#[derive(Debug)]
pub struct BadRequest(pub u16, pub &'static str);

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// One line of the request head, read through what is left of the head's budget: a client
/// that sends an endless line (or endless headers) is cut off at `MAX_HEAD` bytes instead of
/// growing a buffer until the read timeout.
async fn head_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    left: &mut u64,
) -> Result<String, BadRequest> {
    let mut buf = Vec::new();
    let n = (&mut *reader)
        .take(*left)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|_| BadRequest(400, "Bad request"))?;
    *left = left.saturating_sub(n as u64);
    if *left == 0 && !buf.ends_with(b"\n") {
        return Err(BadRequest(431, "Request header fields too large"));
    }
    String::from_utf8(buf).map_err(|_| BadRequest(400, "Bad request: not UTF-8"))
}

/// Reads one request.
pub async fn read_request<R: tokio::io::AsyncRead + Unpin>(
    stream: R,
) -> Result<Request, BadRequest> {
    let mut reader = BufReader::new(stream);
    let mut left = MAX_HEAD as u64;
    let line = head_line(&mut reader, &mut left).await?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(BadRequest(400, "Bad request syntax"));
    };
    let method = method.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (target.to_string(), Vec::new()),
    };
    let mut headers = Vec::new();
    loop {
        let h = head_line(&mut reader, &mut left).await?;
        let end = h.is_empty();
        let h = h.trim_end_matches(['\r', '\n']);
        if end || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        path,
        query,
        headers,
        body: None,
    };
    if let Some(len) = req.header("Content-Length") {
        let len: usize = len
            .parse()
            .map_err(|_| BadRequest(400, "Bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(BadRequest(413, "Request body too large"));
        }
        let mut body = vec![0; len];
        reader
            .read_exact(&mut body)
            .await
            .map_err(|_| BadRequest(400, "Incomplete body"))?;
        req.body = Some(body);
    }
    Ok(req)
}

pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub code: u16,
    pub content_type: &'static str,
    pub body: String,
    pub extra_headers: Vec<(String, String)>,
    /// HEAD/OPTIONS: only the status line.
    pub bare: bool,
}

impl Response {
    pub fn json(code: u16, body: String) -> Response {
        Response {
            code,
            content_type: "application/json",
            body,
            extra_headers: Vec::new(),
            bare: false,
        }
    }

    pub fn text(code: u16, body: impl Into<String>) -> Response {
        Response {
            code,
            content_type: "text/html",
            body: body.into(),
            extra_headers: Vec::new(),
            bare: false,
        }
    }

    pub fn status_only(code: u16) -> Response {
        Response {
            code,
            content_type: "text/html",
            body: String::new(),
            extra_headers: Vec::new(),
            bare: false,
        }
    }

    /// Python's stock error page (`send_error`).
    pub fn error(code: u16, message: &str) -> Response {
        let body = format!(
            "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: {code}</p>\n        <p>Message: {message}.</p>\n        <p>Error code explanation: {code} - {}.</p>\n    </body>\n</html>\n",
            reason(code)
        );
        Response::text(code, body)
    }
}

fn http_date() -> String {
    jiff::Timestamp::now()
        .strftime("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

pub async fn write_response<W: AsyncWrite + Unpin>(w: &mut W, r: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.0 {} {}\r\n", r.code, reason(r.code));
    if !r.bare {
        head.push_str("Server: BaseHTTP/0.6 Python/3.11.2\r\n");
        head.push_str(&format!("Date: {}\r\n", http_date()));
        head.push_str(&format!("Content-Type: {}\r\n", r.content_type));
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
        for (k, v) in &r.extra_headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    if !r.bare {
        w.write_all(r.body.as_bytes()).await?;
    }
    w.flush().await
}

/// JSON as Python's `json.dumps` writes it by default: `", "` and `": "` separators.
pub fn python_json(v: &serde_json::Value) -> String {
    struct PyFormatter;
    impl serde_json::ser::Formatter for PyFormatter {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    if serde::Serialize::serialize(v, &mut ser).is_err() {
        return "{}".into();
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_request() {
        let raw = b"GET /replica?lag=1MB&tag_x=a%20b HTTP/1.1\r\nHost: x\r\n\r\n";
        let r = read_request(&raw[..]).await.unwrap();
        assert_eq!(r.path, "/replica");
        assert_eq!(r.param("lag"), Some("1MB"));
        assert_eq!(r.param("tag_x"), Some("a b"));
        let post = b"POST /x HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(read_request(&post[..]).await.unwrap().body.unwrap(), b"{}");
        assert_eq!(read_request(&b"\r\n"[..]).await.unwrap_err().0, 400);
    }

    /// Oversized heads are cut off at the limit, whether one endless line or many headers; a
    /// body larger than the limit is refused before it is read.
    #[tokio::test]
    async fn oversized_requests_are_refused_without_reading_them_whole() {
        let endless_line = vec![b'a'; 10 * MAX_HEAD];
        assert_eq!(read_request(&endless_line[..]).await.unwrap_err().0, 431);
        let mut many = b"GET / HTTP/1.0\r\n".to_vec();
        while many.len() < 2 * MAX_HEAD {
            many.extend(b"X-Filler: 0123456789abcdef\r\n");
        }
        many.extend(b"\r\n");
        assert_eq!(read_request(&many[..]).await.unwrap_err().0, 431);
        let big = format!(
            "POST /config HTTP/1.0\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(read_request(big.as_bytes()).await.unwrap_err().0, 413);
        let bad_len = b"POST /config HTTP/1.0\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(read_request(&bad_len[..]).await.unwrap_err().0, 400);
        let short = b"POST /config HTTP/1.0\r\nContent-Length: 10\r\n\r\n{}";
        assert_eq!(read_request(&short[..]).await.unwrap_err().0, 400);
        // Exactly at the limit still parses.
        let mut fits = b"GET / HTTP/1.0\r\n".to_vec();
        let pad = MAX_HEAD - fits.len() - b"X: \r\n\r\n".len();
        fits.extend(b"X: ");
        fits.extend(std::iter::repeat_n(b'y', pad));
        fits.extend(b"\r\n\r\n");
        assert_eq!(fits.len(), MAX_HEAD);
        assert!(read_request(&fits[..]).await.is_ok());
    }

    /// A deterministic fuzz of the request parser: random and mutated requests never panic
    /// and either parse or give a 4xx.
    #[tokio::test]
    async fn random_requests_never_panic() {
        let seeds: [&[u8]; 4] = [
            b"GET /replica?lag=1MB&tag_x=a%20b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /switchover HTTP/1.0\r\nContent-Length: 27\r\n\r\n{\"leader\": \"a\", \"x\": [1]}",
            b"OPTIONS / HTTP/1.0\r\n\r\n",
            b"PATCH /config HTTP/1.0\r\nContent-Length: 5\r\nAuthorization: Basic eA==\r\n\r\n{\"a\"}",
        ];
        let mut rng = pgpilot_values::fuzz::XorShift::new(0x9e37_79b9_7f4a_7c15u64);
        let mut next = move || rng.next_u64();
        for i in 0..pgpilot_values::fuzz::runs(20_000) {
            let mut input = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 8) {
                let pos = (next() as usize) % (input.len() + 1);
                match next() % 4 {
                    0 if pos < input.len() => input[pos] = next() as u8,
                    1 => input.insert(pos, b"\r\n:%?=& \xff"[(next() % 9) as usize]),
                    2 if pos < input.len() => {
                        input.remove(pos);
                    }
                    _ => input.truncate(pos),
                }
            }
            match read_request(&input[..]).await {
                Ok(r) => {
                    let _ = (r.first_segment(), r.param("lag"));
                }
                Err(BadRequest(code, _)) => assert!((400..500).contains(&code), "{code}"),
            }
        }
    }

    #[test]
    fn python_separators() {
        let v = serde_json::json!({"a": [1, 2], "b": {"c": null}});
        assert_eq!(python_json(&v), r#"{"a": [1, 2], "b": {"c": null}}"#);
    }
}
