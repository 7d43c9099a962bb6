//! The HTTP request the load generator repeats: method, target, `Host`, the user's `-H`
//! header fields and an optional body, checked once before the run so that every request on
//! the wire is exactly what was asked for.

use anyhow::bail;

/// Largest `--body` / `--body-file` accepted (the request is kept in memory, repeated).
pub const MAX_BODY: usize = 16 << 20;

/// What goes into each HTTP request besides the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestSpec {
    /// `GET` unless `-m` says otherwise.
    pub method: String,
    /// `-H "Name: value"` fields, in order.
    pub headers: Vec<(String, String)>,
    /// `--body` / `--body-file`; sent with a `Content-Length`.
    pub body: Vec<u8>,
}

impl RequestSpec {
    #[must_use]
    pub fn get() -> Self {
        Self { method: "GET".into(), headers: Vec::new(), body: Vec::new() }
    }

    /// Nothing beyond a plain `GET` was asked for.
    #[must_use]
    pub fn is_plain_get(&self) -> bool {
        self.method == "GET" && self.headers.is_empty() && self.body.is_empty()
    }

    /// Check the method, header fields and body (errors are phrased for the command line).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.method.is_empty() || !self.method.bytes().all(is_tchar) {
            bail!("-m/--method '{}' is not an HTTP method (examples: GET, POST, PUT)", self.method);
        }
        if matches!(self.method.as_str(), "HEAD" | "CONNECT") {
            bail!(
                "-m {}: responses to {} carry no body the load generator could frame; use GET",
                self.method,
                self.method
            );
        }
        for (name, value) in &self.headers {
            if name.is_empty() || !name.bytes().all(is_tchar) {
                bail!("-H '{name}: {value}': '{name}' is not a header field name");
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                bail!("-H '{name}': the value contains a line break");
            }
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("-H '{name}': the body's length is set from --body/--body-file");
            }
        }
        if self.body.len() > MAX_BODY {
            bail!("--body is {} bytes; at most {} MiB", self.body.len(), MAX_BODY >> 20);
        }
        Ok(())
    }

    /// One request on the wire. `Host` comes from the target unless `-H Host:` was given.
    #[must_use]
    pub fn render(&self, path: &str, host: &str) -> Vec<u8> {
        let mut out = format!("{} {path} HTTP/1.1\r\n", self.method).into_bytes();
        if !self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Parse `-H "Name: value"` (curl's and wrk's form).
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once(':').ok_or_else(|| format!("-H '{s}': expected 'Name: value'"))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("-H '{s}': '{name}' is not a header field name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// RFC 9110 `tchar`: the characters of a method or a header field name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_get_is_what_wrk_sends() {
        let r = RequestSpec::get();
        assert!(r.is_plain_get() && r.validate().is_ok());
        assert_eq!(r.render("/x", "h:1"), b"GET /x HTTP/1.1\r\nHost: h:1\r\n\r\n");
    }

    #[test]
    fn headers_method_and_body_go_on_the_wire() {
        let r = RequestSpec {
            method: "POST".into(),
            headers: vec![parse_header("X-A: 1").unwrap(), parse_header("host:other").unwrap()],
            body: b"hello".to_vec(),
        };
        r.validate().unwrap();
        assert_eq!(
            String::from_utf8(r.render("/p", "h:1")).unwrap(),
            "POST /p HTTP/1.1\r\nX-A: 1\r\nhost: other\r\nContent-Length: 5\r\n\r\nhello"
        );
        let empty_post = RequestSpec { method: "POST".into(), ..RequestSpec::get() };
        assert!(String::from_utf8(empty_post.render("/", "h")).unwrap().contains("Content-Length: 0\r\n"));
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("bad name: 1").is_err());
        let bad = |f: fn(&mut RequestSpec)| {
            let mut r = RequestSpec::get();
            f(&mut r);
            r.validate().is_err()
        };
        assert!(bad(|r| r.method = "G T".into()));
        assert!(bad(|r| r.method = "HEAD".into()));
        assert!(bad(|r| r.headers.push(("X".into(), "a\r\nb".into()))));
        assert!(bad(|r| r.headers.push(("Content-Length".into(), "3".into()))));
        assert!(bad(|r| r.body = vec![0; MAX_BODY + 1]));
    }
}
