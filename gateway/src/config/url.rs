//! The uplink broker address, `mqtt://host[:port]` or `mqtts://host[:port]`, parsed by hand: the
//! grammar is small and a general URL crate would accept much that an MQTT client cannot use.

use std::net::Ipv6Addr;

use super::model::UplinkUrl;

/// Port used by `mqtt://` when the URL names none.
const MQTT_PORT: u16 = 1883;
/// Port used by `mqtts://` when the URL names none.
const MQTTS_PORT: u16 = 8883;

/// Parses an uplink URL; the error says what is wrong, to follow `invalid url \`...\` for ...: `.
pub(super) fn parse_uplink_url(text: &str) -> Result<UplinkUrl, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err("expected mqtt://host:port or mqtts://host:port".to_owned());
    };
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" => false,
        "mqtts" => true,
        _ => return Err("scheme must be mqtt or mqtts".to_owned()),
    };
    // A single trailing slash is how many tools print a bare URL; anything after it is a path.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if let Some(slash) = authority.find(['/', '?', '#']) {
        return Err(format!(
            "unexpected `{}` after the host and port",
            &authority[slash..]
        ));
    }
    if authority.contains('@') {
        return Err("credentials do not belong in the url: use username and password_file".into());
    }
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => {
            if tls {
                MQTTS_PORT
            } else {
                MQTT_PORT
            }
        }
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("invalid port `{port}`: expected 1 to 65535")),
        },
    };
    Ok(UplinkUrl { tls, host, port })
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
            tls,
            host: host.to_owned(),
            port,
        }
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
                "expected mqtt://host:port or mqtts://host:port",
            ),
            ("http://x", "scheme must be mqtt or mqtts"),
            ("ws://x:80", "scheme must be mqtt or mqtts"),
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
