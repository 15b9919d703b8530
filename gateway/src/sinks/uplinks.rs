//! Fan-out: one delivery driver per configured uplink, each with its own adapter, position and
//! figures. A destination that is down does not slow the others: each reads the journal on its
//! own connection and confirms its own position; the journal keeps a row until every
//! destination routed to it has confirmed it.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::amqp::AmqpDestination;
use super::destination::Destination;
use super::driver::{DeliverySettings, Driver};
use super::error::SinkError;
use super::kafka::KafkaDestination;
use super::mqtt::MqttDestination;
use super::nats::NatsDestination;
use crate::admin::Metrics;
use crate::config::{Config, UplinkType};
use crate::journal::JournalHandle;

/// Starts a driver for each uplink of `config`. `positions` are where the journal says each
/// starts (`OpenReport::positions`). Setup errors (an unreadable certificate or secret file)
/// stop the start.
pub fn spawn(
    config: &Config,
    journal: &JournalHandle,
    metrics: &Arc<Metrics>,
    positions: &[[i64; 2]],
    stopped: &watch::Receiver<bool>,
) -> Result<JoinSet<()>, SinkError> {
    let mut tasks = JoinSet::new();
    for (index, uplink) in config.uplinks.iter().enumerate() {
        let settings = DeliverySettings {
            index,
            route: uplink.route(),
            window: usize::from(uplink.max_inflight.max(1)),
            ack_timeout: uplink.ack_timeout,
            reconnect_min: uplink.reconnect_min,
            reconnect_max: uplink.reconnect_max,
        };
        let start = positions.get(index).copied().unwrap_or_default();
        let Some(stats) = metrics.uplinks().get(index).cloned() else {
            continue;
        };
        match uplink.kind {
            UplinkType::Mqtt => {
                let destination = MqttDestination::new(uplink, &config.gateway.id)?;
                start_driver(
                    &mut tasks,
                    destination,
                    settings,
                    journal,
                    stats,
                    start,
                    stopped,
                )?;
            }
            UplinkType::Nats => {
                let destination = NatsDestination::new(uplink, &config.gateway.id)?;
                start_driver(
                    &mut tasks,
                    destination,
                    settings,
                    journal,
                    stats,
                    start,
                    stopped,
                )?;
            }
            UplinkType::Amqp => {
                let destination = AmqpDestination::new(uplink, &config.gateway.id)?;
                start_driver(
                    &mut tasks,
                    destination,
                    settings,
                    journal,
                    stats,
                    start,
                    stopped,
                )?;
            }
            UplinkType::Kafka => {
                let destination = KafkaDestination::new(uplink, &config.gateway.id)?;
                start_driver(
                    &mut tasks,
                    destination,
                    settings,
                    journal,
                    stats,
                    start,
                    stopped,
                )?;
            }
        }
    }
    Ok(tasks)
}

fn start_driver<D: Destination>(
    tasks: &mut JoinSet<()>,
    destination: D,
    settings: DeliverySettings,
    journal: &JournalHandle,
    stats: Arc<crate::admin::UplinkStats>,
    start: [i64; 2],
    stopped: &watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let driver = Driver::new(destination, settings, journal.clone(), stats, start)?;
    tasks.spawn(driver.run(stopped.clone()));
    Ok(())
}
