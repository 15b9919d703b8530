//! A message's id, read from its JSON without parsing all of it: what a backbone that
//! de-duplicates or labels messages (`Nats-Msg-Id`, AMQP `message_id`) carries beside the
//! payload.

use std::borrow::Cow;

use serde::Deserialize;

#[derive(Deserialize)]
struct Id<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct AlertId<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    state: Cow<'a, str>,
}

/// An alert's id: `{gateway}:alert:{journal}:{n}`, `journal` being the 8 lowercase hex digits of
/// the gateway's journal number and `n` the episode's number in that journal. A journal that is
/// replaced (lost, deleted) gets a new random number, so a gateway never hands out an id twice.
/// Journal number 0 stands for a journal of the first release, whose alerts kept the form
/// `{gateway}:alert:{n}`: an alert that fired before an upgrade resolves under the same id.
pub fn alert_id(gateway: &str, journal: u32, number: u64) -> String {
    if journal == 0 {
        format!("{gateway}:alert:{number}")
    } else {
        format!("{gateway}:alert:{journal:08x}:{number}")
    }
}

/// Whether `id` is an alert id of `gateway`, in one of the forms [`alert_id`] makes. Consumers
/// hold every alert to it: an id of that form names exactly one gateway (what follows the last
/// `:alert:` cannot contain another), so a gateway can neither claim nor touch another's alert.
pub fn is_alert_id_of(id: &str, gateway: &str) -> bool {
    let Some(rest) = id
        .strip_prefix(gateway)
        .and_then(|rest| rest.strip_prefix(":alert:"))
    else {
        return false;
    };
    let number = |text: &str| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    match rest.split_once(':') {
        None => number(rest),
        Some((journal, rest)) => {
            journal.len() == 8
                && journal
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
                && number(rest)
        }
    }
}

/// What makes an alert transition unique: `{id}#{state}` (an alert's `firing` and `resolved`
/// share its id, and are two messages). The key a backbone that de-duplicates (JetStream's
/// `Nats-Msg-Id`) must be given, or it would take the `resolved` for a repeat of the `firing`
/// and drop it; the same key [`crate::Message::key`] gives consumers.
pub fn alert_key(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<AlertId<'_>>(payload)
        .ok()
        .map(|alert| format!("{}#{}", alert.id, alert.state))
}

/// The `id` of an uplink message (event or alert). Events start with it (the gateway's encoder
/// writes it first, and ids need no escaping), so the common case is a prefix scan; anything
/// else is parsed. `None` if the payload has no string `id`.
pub fn message_id(payload: &[u8]) -> Option<Cow<'_, str>> {
    if let Some(rest) = payload.strip_prefix(b"{\"id\":\"")
        && let Some(end) = rest.iter().position(|&byte| byte == b'"' || byte == b'\\')
        && rest[end] == b'"'
        && let Ok(id) = std::str::from_utf8(&rest[..end])
    {
        return Some(Cow::Borrowed(id));
    }
    serde_json::from_slice::<Id<'_>>(payload)
        .ok()
        .map(|message| message.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_id_names_the_journal_except_for_the_first_release() {
        assert_eq!(alert_id("gw", 0x5d1c_9a0e, 17), "gw:alert:5d1c9a0e:17");
        assert_eq!(alert_id("gw", 7, 1), "gw:alert:00000007:1");
        assert_eq!(alert_id("gw", 0, 17), "gw:alert:17");
    }

    #[test]
    fn an_alert_id_belongs_to_exactly_one_gateway() {
        for (journal, number) in [(0x5d1c_9a0e, 17), (0, 3)] {
            assert!(is_alert_id_of(&alert_id("gw", journal, number), "gw"));
            assert!(!is_alert_id_of(&alert_id("gw", journal, number), "g"));
            assert!(!is_alert_id_of(&alert_id("gw-2", journal, number), "gw"));
        }
        // A gateway whose name looks like another's alert id still cannot claim that one's.
        let theirs = alert_id("a:alert:1", 0, 5);
        assert!(is_alert_id_of(&theirs, "a:alert:1"));
        assert!(!is_alert_id_of(&theirs, "a"));
        for bad in [
            "gw:alert:",
            "gw:alert:x",
            "gw:alert:5D1C9A0E:1",
            "gw:alert:5d1c9a0:1",
            "gw:alert:5d1c9a0e:",
            "gw:alert:1:2:3",
            "gw:1:2",
            "d1:1:5",
        ] {
            assert!(!is_alert_id_of(bad, "gw"), "{bad}");
        }
    }

    #[test]
    fn reads_the_id_first_or_anywhere() {
        assert_eq!(
            message_id(br#"{"id":"dev:7:42","gateway":"gw"}"#).as_deref(),
            Some("dev:7:42")
        );
        assert_eq!(
            message_id(br#"{"at":1,"id":"gw:alert:3","state":"firing"}"#).as_deref(),
            Some("gw:alert:3")
        );
        assert_eq!(
            message_id(br#"{"id":"a\"b","x":1}"#).as_deref(),
            Some("a\"b"),
            "an escaped id is parsed, not cut"
        );
        assert_eq!(message_id(b"online"), None);
        assert_eq!(
            alert_key(br#"{"id":"gw:alert:3","state":"resolved","at":1}"#).as_deref(),
            Some("gw:alert:3#resolved")
        );
        assert_eq!(alert_key(br#"{"id":"dev:1:2"}"#), None);
        assert_eq!(message_id(br#"{"id":7}"#), None);
    }
}
