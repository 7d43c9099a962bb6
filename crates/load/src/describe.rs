//! Errors described the way people read them: "connection refused", not
//! "Connection refused (os error 111)". A leaf module: the connection state, the load threads
//! and the driver all use it, and it uses none of them.

use std::io;

/// "connection refused", not "Connection refused (os error 111)".
#[must_use]
pub fn describe_connect_error(e: &io::Error) -> String {
    let s = match e.kind() {
        io::ErrorKind::ConnectionRefused => return "connection refused".into(),
        io::ErrorKind::TimedOut => return "connection timed out".into(),
        io::ErrorKind::ConnectionReset => return "connection reset by peer".into(),
        _ => e.to_string(),
    };
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_read_well() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(describe_connect_error(&e), "connection refused");
        let e = io::Error::from_raw_os_error(99);
        assert_eq!(describe_connect_error(&e), "cannot assign requested address");
    }
}
