//! The stream our subjects are stored in: created with subjects `{subject_prefix}.>` if it does
//! not exist, refused with a clear error if it exists and does not cover our subjects (publishes
//! would then get no PubAck, or land in a stream no consumer reads).

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};

use crate::sinks::destination::DestinationError;

/// Makes sure `name` exists and stores `subjects` (which may hold `*` for a device).
pub(super) async fn ensure(
    context: &jetstream::Context,
    name: &str,
    filter: &str,
    subjects: &[String],
) -> Result<(), DestinationError> {
    match context.get_stream(name).await {
        Ok(stream) => {
            let configured = &stream.cached_info().config.subjects;
            match subjects
                .iter()
                .find(|subject| !configured.iter().any(|pattern| covers(pattern, subject)))
            {
                None => Ok(()),
                Some(missing) => Err(DestinationError::misconfigured(format!(
                    "stream `{name}` exists with subjects {configured:?}, which do not cover \
                     `{missing}`: add `{filter}` to the stream, or set the uplink's `stream` or \
                     `subject_prefix`"
                ))),
            }
        }
        Err(error)
            if matches!(
                error.kind(),
                GetStreamErrorKind::JetStream(ref jet)
                    if jet.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            let config = stream::Config {
                name: name.to_owned(),
                subjects: vec![filter.to_owned()],
                storage: stream::StorageType::File,
                ..stream::Config::default()
            };
            context
                .create_stream(config)
                .await
                .map(|_| ())
                .map_err(|error| {
                    DestinationError::misconfigured(format!(
                        "failed to create stream `{name}` for `{filter}`: {error}"
                    ))
                })?;
            tracing::info!(
                stream = name,
                subjects = filter,
                "created the JetStream stream"
            );
            Ok(())
        }
        Err(error) => Err(DestinationError::transient(format!(
            "failed to look up stream `{name}`: {error}"
        ))),
    }
}

/// Whether the subject filter `pattern` matches every subject `subject` stands for (`subject`
/// may hold `*` tokens, which only `*` or `>` in `pattern` cover).
pub(super) fn covers(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(token), Some(other)) if token == other && other != "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn a_stream_subject_covers_ours_token_by_token() {
        let events = "edge.gw.devices.*.events";
        assert!(covers("edge.>", events));
        assert!(covers(">", events));
        assert!(covers("edge.gw.devices.*.events", events));
        assert!(covers("edge.*.devices.*.*", events));
        assert!(
            !covers("edge.gw.devices.sensor-1.events", events),
            "one device is not all"
        );
        assert!(!covers("edge.other.>", events));
        assert!(!covers("edge.gw.alerts", events));
        assert!(!covers("edge", "edge.gw.alerts"));
        assert!(covers("edge.gw.alerts", "edge.gw.alerts"));
        assert!(
            !covers("edge.gw.alerts.>", "edge.gw.alerts"),
            "> needs a token"
        );
    }
}
