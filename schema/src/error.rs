//! Why something a peer sent is not understood by this crate: an escaped id in a NATS subject
//! or AMQP routing key, or a status payload.

/// What is wrong with an escaped id or a status payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// An escaped id is empty: ids never are.
    #[error("failed to decode an id: it is empty")]
    EmptyId,
    /// A `%` is not followed by two uppercase hex digits naming a byte that must be escaped
    /// (anything else would give one id two spellings).
    #[error("failed to decode id `{token}`: malformed escape at byte {at}")]
    MalformedEscape {
        /// The escaped id.
        token: String,
        /// Where the `%` is.
        at: usize,
    },
    /// A byte that must be escaped appears as it is.
    #[error("failed to decode id `{token}`: byte {at} must be escaped")]
    Unescaped {
        /// The escaped id.
        token: String,
        /// Where the byte is.
        at: usize,
    },
    /// The unescaped bytes are not UTF-8.
    #[error("failed to decode id `{token}`: it is not UTF-8 once unescaped")]
    NotUtf8 {
        /// The escaped id.
        token: String,
    },
    /// A status payload is neither `online` nor `offline`.
    #[error("failed to read a gateway status: expected `online` or `offline`")]
    Status,
}
