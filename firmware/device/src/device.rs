//! The device core in one piece: sensors sampled on their schedule, their measurements pushed
//! into the link's outbox, and the link polled, all in one [`Device::poll`].
//!
//! A board's main loop is then: `device.poll(&mut clock, &mut serial)`, and sleep until
//! [`Device::wake_at`] or the next received byte.

use core::fmt;
use core::time::Duration;

use embedded_io::{Read, ReadReady, Write};

use crate::boot::BootId;
use crate::clock::{Clock, Instant};
use crate::link::{ConfigError, Link, LinkConfig};
use crate::schedule::Scheduler;
use crate::sensor::{Sensor, SensorError};

/// `SENSORS` sensors, each sampled at its own interval, feeding a link with an outbox of `OUTBOX`
/// events.
pub struct Device<'s, const SENSORS: usize, const OUTBOX: usize> {
    sensors: [&'s mut dyn Sensor; SENSORS],
    scheduler: Scheduler<SENSORS>,
    link: Link<OUTBOX>,
    sensor_errors: u32,
    last_sensor_error: Option<(usize, SensorError)>,
}

impl<'s, const SENSORS: usize, const OUTBOX: usize> Device<'s, SENSORS, OUTBOX> {
    /// A device for a new boot, drawn from `boot_id`, with each sensor and its sampling interval.
    pub fn new(
        config: &LinkConfig<'_>,
        boot_id: &mut impl BootId,
        sensors: [(&'s mut dyn Sensor, Duration); SENSORS],
    ) -> Result<Self, ConfigError> {
        let link = Link::new(config, boot_id.next_boot())?;
        let intervals = sensors.each_ref().map(|(_, interval)| *interval);
        Ok(Self {
            sensors: sensors.map(|(sensor, _)| sensor),
            scheduler: Scheduler::new(intervals),
            link,
            sensor_errors: 0,
            last_sensor_error: None,
        })
    }

    /// Measures every sensor that is due, pushes each measurement as one event (stamped with the
    /// clock's wall time if it has one), then polls the link over `serial`.
    ///
    /// A failed measurement produces no event; it is counted in
    /// [`sensor_errors`](Self::sensor_errors), and the sensor is tried again at its next interval.
    pub fn poll<C, S>(&mut self, clock: &mut C, serial: &mut S)
    where
        C: Clock,
        S: Read + ReadReady + Write,
    {
        let now = clock.now();
        while let Some(index) = self.scheduler.next_due(now) {
            let Some(sensor) = self.sensors.get_mut(index) else {
                break;
            };
            match sensor.measure() {
                // A refused event is counted by the link (`rejected`); there is nothing else to
                // do with it here.
                Ok(measurement) => {
                    let _ = self.link.push(clock.unix_time_ms(), None, measurement);
                }
                Err(error) => {
                    self.sensor_errors = self.sensor_errors.wrapping_add(1);
                    self.last_sensor_error = Some((index, error));
                }
            }
        }
        self.link.poll(now, serial);
    }

    /// When [`poll`](Self::poll) has work next at the latest: the next sample or retransmission.
    /// Bytes from the gateway can arrive before; a poll then acts on them.
    pub fn wake_at(&self) -> Instant {
        let sample_at = self
            .scheduler
            .due_at()
            .unwrap_or(Instant::from_millis(u64::MAX));
        self.link
            .retransmit_at()
            .map_or(sample_at, |retransmit_at| retransmit_at.min(sample_at))
    }

    /// The link, with its outbox and counters.
    pub fn link(&self) -> &Link<OUTBOX> {
        &self.link
    }

    /// The link, e.g. to push an event that no sensor measured.
    pub fn link_mut(&mut self) -> &mut Link<OUTBOX> {
        &mut self.link
    }

    /// Failed measurements so far (wraps at 2³²).
    pub fn sensor_errors(&self) -> u32 {
        self.sensor_errors
    }

    /// The index of the sensor that failed last, and how.
    pub fn last_sensor_error(&self) -> Option<(usize, SensorError)> {
        self.last_sensor_error
    }
}

impl<const SENSORS: usize, const OUTBOX: usize> fmt::Debug for Device<'_, SENSORS, OUTBOX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("scheduler", &self.scheduler)
            .field("link", &self.link)
            .field("sensor_errors", &self.sensor_errors)
            .field("last_sensor_error", &self.last_sensor_error)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::string::String;
    use std::vec::Vec;

    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};

    use super::*;
    use crate::sensor::Measurement;
    use crate::testing::{FakeSerial, Sent, take_sent};

    /// A sensor that returns scripted results, then fails.
    struct FakeSensor {
        name: &'static str,
        results: VecDeque<Result<f64, SensorError>>,
    }

    impl FakeSensor {
        fn new(
            name: &'static str,
            results: impl IntoIterator<Item = Result<f64, SensorError>>,
        ) -> Self {
            Self {
                name,
                results: results.into_iter().collect(),
            }
        }

        /// Always `value`.
        fn steady(name: &'static str, value: f64) -> Self {
            Self::new(name, core::iter::repeat_n(Ok(value), 100))
        }
    }

    impl Sensor for FakeSensor {
        fn measure(&mut self) -> Result<Measurement, SensorError> {
            let value = self
                .results
                .pop_front()
                .unwrap_or(Err(SensorError::Other))?;
            let mut measurement = Measurement::new();
            measurement.push(self.name, value).unwrap();
            Ok(measurement)
        }
    }

    /// Fake time: `now_ms` on the monotonic clock, and a wall clock if `unix_start_ms` is set.
    struct FakeClock {
        now_ms: u64,
        unix_start_ms: Option<u64>,
    }

    impl Clock for FakeClock {
        fn now(&mut self) -> Instant {
            Instant::from_millis(self.now_ms)
        }

        fn unix_time_ms(&mut self) -> Option<u64> {
            self.unix_start_ms.map(|start| start + self.now_ms)
        }
    }

    const UNIX_START_MS: u64 = 1_764_230_400_000;

    fn config() -> LinkConfig<'static> {
        LinkConfig::new("greenhouse-3", "1.4.0")
    }

    /// `(seq, ts, reading name, value)` of each sample written.
    fn samples(sent: &[Sent]) -> Vec<(u32, Option<u64>, String, f64)> {
        sent.iter()
            .filter_map(|frame| match frame {
                Sent::Sample {
                    seq, ts, readings, ..
                } => Some((*seq, *ts, readings[0].0.clone(), readings[0].1)),
                Sent::Hello { .. } => None,
            })
            .collect()
    }

    #[test]
    fn each_sensor_becomes_events_at_its_own_interval() {
        let mut air = FakeSensor::steady("temp_c", 21.5);
        let mut soil = FakeSensor::steady("soil_moisture", 0.25);
        let mut boots = 0;
        let mut boot_id = || {
            boots += 1;
            42
        };
        let mut device = Device::<2, 16>::new(
            &config(),
            &mut boot_id,
            [
                (&mut air, Duration::from_secs(1)),
                (&mut soil, Duration::from_secs(5)),
            ],
        )
        .unwrap();
        assert_eq!(device.link().boot(), 42);
        let mut clock = FakeClock {
            now_ms: 0,
            unix_start_ms: Some(UNIX_START_MS),
        };
        let mut serial = FakeSerial::new();
        let mut sent = Vec::new();
        for now_ms in (0..=5000).step_by(250) {
            clock.now_ms = now_ms;
            device.poll(&mut clock, &mut serial);
            let written = take_sent(&mut serial);
            // The gateway stores and acknowledges every sample at once.
            if let Some((seq, ..)) = samples(&written).last() {
                serial.gateway_acks(42, *seq);
            }
            sent.extend(written);
        }
        assert_eq!(boots, 1);
        assert_eq!(
            sent[0],
            Sent::Hello {
                device: "greenhouse-3".into(),
                boot: 42,
                firmware_version: "1.4.0".into(),
                oldest_seq: 0,
            }
        );
        let ts = |seconds: u64| Some(UNIX_START_MS + seconds * 1000);
        let temp = |seq, seconds| (seq, ts(seconds), String::from("temp_c"), 21.5);
        let soil = |seq, seconds| (seq, ts(seconds), String::from("soil_moisture"), 0.25);
        assert_eq!(
            samples(&sent),
            [
                temp(0, 0),
                soil(1, 0),
                temp(2, 1),
                temp(3, 2),
                temp(4, 3),
                temp(5, 4),
                temp(6, 5),
                soil(7, 5),
            ]
        );
        assert!(sent.iter().all(|frame| frame.boot() == 42));
        // The last acks are read at the next poll.
        clock.now_ms = 5100;
        device.poll(&mut clock, &mut serial);
        assert!(serial.tx.is_empty());
        assert!(device.link().outbox().is_empty());
        assert_eq!(device.link().counters().retransmitted, 0);
    }

    #[test]
    fn a_failed_measurement_is_counted_and_makes_no_event() {
        let nack = SensorError::Bus(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        let mut flaky = FakeSensor::new("temp_c", [Err(nack), Ok(20.0)]);
        let mut device =
            Device::<1, 4>::new(&config(), &mut || 1, [(&mut flaky, Duration::from_secs(1))])
                .unwrap();
        let mut clock = FakeClock {
            now_ms: 0,
            unix_start_ms: None,
        };
        let mut serial = FakeSerial::new();
        device.poll(&mut clock, &mut serial);
        assert_eq!(samples(&take_sent(&mut serial)), []);
        assert_eq!(device.sensor_errors(), 1);
        assert_eq!(device.last_sensor_error(), Some((0, nack)));

        // Tried again at the next interval, not before.
        clock.now_ms = 999;
        device.poll(&mut clock, &mut serial);
        assert!(serial.tx.is_empty());
        clock.now_ms = 1000;
        device.poll(&mut clock, &mut serial);
        assert_eq!(
            samples(&take_sent(&mut serial)),
            [(0, None, String::from("temp_c"), 20.0)]
        );
    }

    #[test]
    fn a_measurement_the_gateway_would_refuse_is_counted_by_the_link() {
        let mut broken = FakeSensor::new("temp_c", [Ok(f64::NAN), Ok(19.0)]);
        let mut device = Device::<1, 4>::new(
            &config(),
            &mut || 1,
            [(&mut broken, Duration::from_secs(1))],
        )
        .unwrap();
        let mut clock = FakeClock {
            now_ms: 0,
            unix_start_ms: None,
        };
        let mut serial = FakeSerial::new();
        device.poll(&mut clock, &mut serial);
        clock.now_ms = 1000;
        device.poll(&mut clock, &mut serial);
        assert_eq!(device.link().counters().rejected, 1);
        assert_eq!(
            samples(&take_sent(&mut serial)),
            [(0, None, String::from("temp_c"), 19.0)]
        );
    }

    #[test]
    fn wake_at_is_the_next_sample_or_the_next_retransmission() {
        let mut slow = FakeSensor::steady("temp_c", 1.0);
        let mut device =
            Device::<1, 4>::new(&config(), &mut || 9, [(&mut slow, Duration::from_secs(60))])
                .unwrap();
        let mut clock = FakeClock {
            now_ms: 0,
            unix_start_ms: None,
        };
        let mut serial = FakeSerial::new();
        assert_eq!(device.wake_at(), Instant::from_millis(0));
        device.poll(&mut clock, &mut serial);
        // The sample waits for its ack: the retransmit timeout comes first.
        assert_eq!(device.wake_at(), Instant::from_millis(2000));
        serial.gateway_acks(9, 0);
        clock.now_ms = 100;
        device.poll(&mut clock, &mut serial);
        assert!(device.link().outbox().is_empty());
        assert_eq!(device.wake_at(), Instant::from_millis(60_000));
    }

    #[test]
    fn a_bad_device_id_is_refused() {
        let mut sensor = FakeSensor::steady("temp_c", 1.0);
        let config = LinkConfig::new("not a valid id", "1.4.0");
        let refused =
            Device::<1, 4>::new(&config, &mut || 1, [(&mut sensor, Duration::from_secs(1))]);
        assert_eq!(refused.unwrap_err(), ConfigError::InvalidDevice);
    }
}
