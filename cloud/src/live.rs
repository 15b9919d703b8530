//! What changed, for whoever watches live: the dashboard's server-sent events.
//!
//! The consumer announces each message it stored for the first time, the API each
//! acknowledgement, on one `broadcast` channel; every dashboard connection holds a receiver.
//! A connection too slow to keep up loses its place (`Lagged`) and is told to `resync`: it
//! fetches the whole state again rather than show a partial one.

use serde_json::json;

use crate::message::Message;

/// One change, as the dashboard hears of it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A message stored for the first time, at `at` (ms since the epoch).
    Stored {
        /// The message.
        message: Message,
        /// When it was stored.
        at: i64,
    },
    /// Someone acknowledged an alert.
    Acknowledged {
        /// The alert.
        id: String,
        /// Who.
        by: String,
        /// When (ms since the epoch).
        at: i64,
    },
}

impl Change {
    /// The server-sent event: its name and its JSON data.
    pub fn event(&self) -> (&'static str, String) {
        match self {
            Self::Stored {
                message: Message::Alert(alert),
                ..
            } => ("alert", json!(alert).to_string()),
            Self::Stored {
                message: Message::Event(event),
                ..
            } => ("event", json!(event).to_string()),
            Self::Stored {
                message: Message::Status { gateway, online },
                at,
            } => (
                "status",
                json!({ "gateway": gateway, "online": online, "since": at }).to_string(),
            ),
            Self::Acknowledged { id, by, at } => {
                ("ack", json!({ "id": id, "by": by, "at": at }).to_string())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::message::interpret;

    #[test]
    fn each_change_has_its_event() {
        let alert = interpret(
            "edge",
            "edge/gw/alerts",
            br#"{"id":"gw:alert:1","gateway":"gw","rule":"hot","device":"d","state":"firing","severity":"critical","at":7,"value":36.5,"event":"d:1:1","labels":{}}"#,
        )
        .unwrap();
        let (name, data) = Change::Stored {
            message: alert,
            at: 9,
        }
        .event();
        assert_eq!(name, "alert");
        let data: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["state"], "firing");
        assert_eq!(data["value"], 36.5);

        let status = Change::Stored {
            message: interpret("edge", "edge/gw/status", b"offline").unwrap(),
            at: 9,
        };
        assert_eq!(
            status.event(),
            (
                "status",
                r#"{"gateway":"gw","online":false,"since":9}"#.to_owned()
            )
        );
        let (name, data) = Change::Acknowledged {
            id: "gw:alert:1".into(),
            by: "ana".into(),
            at: 10,
        }
        .event();
        assert_eq!((name, data.contains(r#""by":"ana""#)), ("ack", true));
    }
}
