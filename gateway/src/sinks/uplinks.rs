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
use super::eventbridge::EventBridgeDestination;
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
            window: uplink.window(),
            ack_timeout: uplink.ack_timeout,
            reconnect_min: uplink.reconnect_min,
            reconnect_max: uplink.reconnect_max,
        };
        let start = positions.get(index).copied().unwrap_or_default();
        let Some(stats) = metrics.uplinks().get(index).cloned() else {
            continue;
        };
        let launch = Launch {
            settings,
            journal,
            stats,
            start,
            stopped,
        };
        let gateway = config.gateway.id.as_str();
        match uplink.kind {
            UplinkType::Mqtt => launch.run(&mut tasks, MqttDestination::new(uplink, gateway)?)?,
            UplinkType::Nats => launch.run(&mut tasks, NatsDestination::new(uplink, gateway)?)?,
            UplinkType::Amqp => launch.run(&mut tasks, AmqpDestination::new(uplink, gateway)?)?,
            UplinkType::Kafka => launch.run(&mut tasks, KafkaDestination::new(uplink, gateway)?)?,
            UplinkType::EventBridge => {
                launch.run(&mut tasks, EventBridgeDestination::new(uplink, gateway)?)?;
            }
        }
    }
    Ok(tasks)
}

/// What a driver starts with, whatever its destination.
struct Launch<'a> {
    settings: DeliverySettings,
    journal: &'a JournalHandle,
    stats: Arc<crate::admin::UplinkStats>,
    start: [i64; 2],
    stopped: &'a watch::Receiver<bool>,
}

impl Launch<'_> {
    fn run<D: Destination>(self, tasks: &mut JoinSet<()>, destination: D) -> Result<(), SinkError> {
        let driver = Driver::new(
            destination,
            self.settings,
            self.journal.clone(),
            self.stats,
            self.start,
        )?;
        tasks.spawn(driver.run(self.stopped.clone()));
        Ok(())
    }
}
