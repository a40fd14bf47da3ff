//! Reading HTTP/1.1 request heads, for the small servers of the tests and benches.

use std::io::BufRead;

/// Reads a request line and its headers; returns the `Content-Length` (0 without one), or `None`
/// when the connection ended or failed first.
pub fn read_head(reader: &mut impl BufRead) -> Option<usize> {
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == "\r\n" {
            return Some(length);
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
}
