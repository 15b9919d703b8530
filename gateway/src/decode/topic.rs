//! The device MQTT topic, `devices/{device}/events`.

use super::rejection::{RejectReason, Rejection, excerpt};

/// The device id named by an event topic `devices/{device}/events`, or an `invalid_topic`
/// rejection when the topic has another shape or the id is not a valid device id.
pub fn device_from_topic(topic: &str) -> Result<&str, Rejection> {
    let device = topic
        .strip_prefix("devices/")
        .and_then(|rest| rest.strip_suffix("/events"))
        .ok_or_else(|| {
            Rejection::new(
                RejectReason::InvalidTopic,
                format!(
                    "topic `{}` is not of the form devices/{{device}}/events",
                    excerpt(topic)
                ),
            )
        })?;
    if !edge_wire::is_valid_device_id(device) {
        return Err(Rejection::new(
            RejectReason::InvalidTopic,
            format!(
                "topic `{}` names device `{}`, which is not 1 to 64 characters of [A-Za-z0-9._-]",
                excerpt(topic),
                excerpt(device)
            ),
        ));
    }
    Ok(device)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_device() {
        assert_eq!(
            device_from_topic("devices/greenhouse-3/events"),
            Ok("greenhouse-3")
        );
    }

    #[test]
    fn rejects_other_shapes_and_bad_ids() {
        for topic in [
            "devices/greenhouse-3",
            "devices//events",
            "devices/a/b/events",
            "devices/a+/events",
            "device/a/events",
            "/devices/a/events",
            "devices/a/events/",
            "",
        ] {
            let rejection = device_from_topic(topic).unwrap_err();
            assert_eq!(rejection.reason, RejectReason::InvalidTopic, "{topic}");
        }
        assert_eq!(
            device_from_topic("x").unwrap_err().detail,
            "topic `x` is not of the form devices/{device}/events"
        );
    }
}
