//! The uplink broker address, `scheme://host[:port][/vhost]`, parsed by hand: the grammar is
//! small and a general URL crate would accept much that a broker client cannot use.
//!
//! | scheme | protocol | TLS | default port |
//! |---|---|---|---|
//! | `mqtt` | MQTT | no | 1883 |
//! | `mqtts` | MQTT | yes | 8883 |
//! | `nats` | NATS | no | 4222 |
//! | `tls` | NATS | yes | 4222 |
//! | `amqp` | AMQP 0-9-1 | no | 5672 |
//! | `amqps` | AMQP 0-9-1 | yes | 5671 |
//!
//! Only AMQP URLs may have a path: the virtual host, percent-encoded (`/%2f` is `/`).

use std::net::Ipv6Addr;

use super::model::{UplinkType, UplinkUrl};

const SCHEMES: &str = "mqtt, mqtts, nats, tls, amqp or amqps";

/// Parses an uplink URL; the error says what is wrong, to follow `invalid url \`...\` for ...: `.
pub(super) fn parse_uplink_url(text: &str) -> Result<UplinkUrl, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err("expected scheme://host:port, e.g. mqtt://host:port".to_owned());
    };
    let (kind, tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" => (UplinkType::Mqtt, false, 1883),
        "mqtts" => (UplinkType::Mqtt, true, 8883),
        "nats" => (UplinkType::Nats, false, 4222),
        "tls" => (UplinkType::Nats, true, 4222),
        "amqp" => (UplinkType::Amqp, false, 5672),
        "amqps" => (UplinkType::Amqp, true, 5671),
        _ => return Err(format!("scheme must be {SCHEMES}")),
    };
    // A single trailing slash is how many tools print a bare URL.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
        None => (rest, None),
    };
    if let Some(bad) = authority.find(['?', '#']) {
        return Err(format!(
            "unexpected `{}` after the host and port",
            &authority[bad..]
        ));
    }
    if authority.contains('@') {
        return Err("credentials do not belong in the url: use username and password_file".into());
    }
    let vhost = match (path, kind) {
        (None, _) => None,
        (Some(path), UplinkType::Amqp) => Some(decode_vhost(path)?),
        (Some(path), _) => {
            return Err(format!("unexpected `/{path}` after the host and port"));
        }
    };
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => default_port,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("invalid port `{port}`: expected 1 to 65535")),
        },
    };
    Ok(UplinkUrl {
        kind,
        tls,
        host,
        port,
        vhost,
    })
}

/// Parses one Kafka bootstrap broker, `host[:port]` (9092 when no port), into an address of
/// the given kind; the error says what is wrong.
pub(super) fn parse_broker(text: &str, tls: bool) -> Result<UplinkUrl, String> {
    if text.contains("://") {
        return Err("expected host:port, without a scheme (set `tls = true` for TLS)".to_owned());
    }
    let (host, port) = split_host_port(text)?;
    let port = match port {
        None => 9092,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("invalid port `{port}`: expected 1 to 65535")),
        },
    };
    Ok(UplinkUrl {
        kind: UplinkType::Kafka,
        tls,
        host,
        port,
        vhost: None,
    })
}

/// Decodes an AMQP virtual host from its percent-encoded path.
fn decode_vhost(path: &str) -> Result<String, String> {
    if path.contains(['?', '#', '/']) {
        return Err(format!("invalid virtual host `{path}`: encode `/` as %2f"));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = path
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in virtual host `{path}`"))?;
            out.push(hex);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("virtual host `{path}` is not UTF-8"))
}

/// Percent-encodes a virtual host for a URL path (the inverse of [`decode_vhost`]).
pub(crate) fn encode_vhost(vhost: &str) -> String {
    let mut out = String::with_capacity(vhost.len());
    for byte in vhost.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02x}"));
        }
    }
    out
}

/// Splits `host[:port]` or `[ipv6][:port]`; the host comes back without brackets.
fn split_host_port(authority: &str) -> Result<(String, Option<&str>), String> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return Err("missing `]` after the ipv6 address".to_owned());
        };
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(format!("invalid ipv6 address `{address}`"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{after}` after the ipv6 address"))?,
            ),
        };
        return Ok((address.to_owned(), port));
    }
    if authority.matches(':').count() > 1 {
        return Err("an ipv6 address must be written in brackets, e.g. [::1]:1883".to_owned());
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!("invalid character `{bad}` in host `{host}`"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(tls: bool, host: &str, port: u16) -> UplinkUrl {
        UplinkUrl {
            kind: UplinkType::Mqtt,
            tls,
            host: host.to_owned(),
            port,
            vhost: None,
        }
    }

    #[test]
    fn accepts_nats_and_amqp_with_their_default_ports_and_a_vhost() {
        let nats = parse_uplink_url("nats://bus").expect("nats");
        assert_eq!(
            (nats.kind, nats.tls, nats.port),
            (UplinkType::Nats, false, 4222)
        );
        let tls = parse_uplink_url("tls://bus:4443").expect("tls");
        assert_eq!(
            (tls.kind, tls.tls, tls.port),
            (UplinkType::Nats, true, 4443)
        );
        let amqp = parse_uplink_url("amqp://rabbit/%2f").expect("amqp");
        assert_eq!((amqp.kind, amqp.port), (UplinkType::Amqp, 5672));
        assert_eq!(amqp.vhost.as_deref(), Some("/"));
        assert_eq!(amqp.to_string(), "amqp://rabbit:5672/%2f");
        let amqps = parse_uplink_url("amqps://rabbit:5999/site-a").expect("amqps");
        assert_eq!((amqps.tls, amqps.port), (true, 5999));
        assert_eq!(amqps.vhost.as_deref(), Some("site-a"));
        assert_eq!(
            parse_uplink_url("nats://bus/x"),
            Err("unexpected `/x` after the host and port".to_owned())
        );
        assert_eq!(
            parse_uplink_url("amqp://rabbit/%zz"),
            Err("invalid percent-encoding in virtual host `%zz`".to_owned())
        );
    }

    #[test]
    fn accepts_mqtt_and_mqtts_with_default_ports() {
        let good = [
            ("mqtt://broker", url(false, "broker", 1883)),
            (
                "mqtts://broker.example.com",
                url(true, "broker.example.com", 8883),
            ),
            (
                "mqtts://broker.example.com:8884",
                url(true, "broker.example.com", 8884),
            ),
            ("mqtt://127.0.0.1:1884/", url(false, "127.0.0.1", 1884)),
            ("MQTT://Broker:1", url(false, "Broker", 1)),
            ("mqtt://[::1]:1883", url(false, "::1", 1883)),
            ("mqtts://[fe80::1]", url(true, "fe80::1", 8883)),
        ];
        for (text, expected) in good {
            assert_eq!(parse_uplink_url(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_what_a_client_cannot_connect_to() {
        let bad = [
            (
                "broker:1883",
                "expected scheme://host:port, e.g. mqtt://host:port",
            ),
            (
                "http://x",
                "scheme must be mqtt, mqtts, nats, tls, amqp or amqps",
            ),
            (
                "ws://x:80",
                "scheme must be mqtt, mqtts, nats, tls, amqp or amqps",
            ),
            ("mqtt://", "missing host"),
            ("mqtt://:1883", "missing host"),
            ("mqtt://x:", "invalid port ``: expected 1 to 65535"),
            ("mqtt://x:0", "invalid port `0`: expected 1 to 65535"),
            (
                "mqtt://x:65536",
                "invalid port `65536`: expected 1 to 65535",
            ),
            ("mqtt://x:port", "invalid port `port`: expected 1 to 65535"),
            (
                "mqtt://x/topic",
                "unexpected `/topic` after the host and port",
            ),
            (
                "mqtt://x:1883?a=b",
                "unexpected `?a=b` after the host and port",
            ),
            (
                "mqtt://user:pw@x",
                "credentials do not belong in the url: use username and password_file",
            ),
            ("mqtt://bro ker", "invalid character ` ` in host `bro ker`"),
            (
                "mqtt://::1:1883",
                "an ipv6 address must be written in brackets, e.g. [::1]:1883",
            ),
            ("mqtt://[::1", "missing `]` after the ipv6 address"),
            ("mqtt://[nope]:1883", "invalid ipv6 address `nope`"),
            (
                "mqtt://[::1]1883",
                "unexpected `1883` after the ipv6 address",
            ),
        ];
        for (text, expected) in bad {
            assert_eq!(parse_uplink_url(text), Err(expected.to_owned()), "{text}");
        }
    }

    #[test]
    fn displays_the_url_back() {
        assert_eq!(url(true, "broker", 8883).to_string(), "mqtts://broker:8883");
        assert_eq!(url(false, "::1", 1883).to_string(), "mqtt://[::1]:1883");
        for text in ["mqtt://a.b:1", "mqtts://[::1]:8883"] {
            let parsed = parse_uplink_url(text).map(|url| url.to_string());
            assert_eq!(parsed.as_deref(), Ok(text));
        }
    }
}
