//! Reading HTTP/1.1 request heads, for the small servers of the tests and benches.
#![allow(dead_code)] // each server that includes it uses a part of it

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

/// Reads one whole request: its path and its body (by `Content-Length`), or `None` when the
/// connection ended or failed first.
pub fn read_request(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return None;
    }
    let path = request_line.split(' ').nth(1).unwrap_or_default().to_owned();
    let length = read_head(reader)?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}
