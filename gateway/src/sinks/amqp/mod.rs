//! The RabbitMQ (AMQP 0-9-1) destination: publishes each row, persistent and mandatory, to a
//! durable topic exchange with `message_id` = its id; a row is confirmed by its publisher
//! confirm. A message that no queue takes comes back (mandatory): that is not a confirmation but
//! a retryable rejection, so nothing is acknowledged into nothing.

mod destination;

pub use destination::{AmqpConnection, AmqpDestination};
