//! Minimal HTTP/1.0 requests to the admin and cloud APIs.

use super::*;

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    http(address, "GET", path)
}

/// An empty-bodied `POST`.
pub fn http_post(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    http(address, "POST", path)
}

/// A GET with a bearer token.
pub fn http_get_with_token(address: SocketAddr, path: &str, token: &str) -> Option<(u16, String)> {
    request(
        address,
        "GET",
        path,
        &format!("Authorization: Bearer {token}\r\n"),
    )
}

fn http(address: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    request(address, method, path, "")
}

fn request(address: SocketAddr, method: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}
