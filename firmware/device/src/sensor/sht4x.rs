//! The Sensirion SHT4x temperature and humidity sensor as a [`Sensor`], through the `sht4x`
//! crate.
//!
//! # Bus traffic
//! One measurement is a write of the one-byte measure command (`0xFD` at high precision), the
//! conversion time (9 ms at high precision, waited on the `DelayNs`), then a read of six bytes:
//! the temperature word and the humidity word, each followed by its CRC-8. The write and the read
//! are separate transfers, so the driver also works on I2C controllers without repeated START.
//!
//! # Readings
//! `temp_c` in °C and `rh` in % relative humidity, both renameable. The chip's humidity formula
//! spans −6 % to 119 %; as Sensirion's datasheet advises, values outside 0–100 % are cropped.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

pub use ::sht4x::{Address as Sht4xAddress, Precision as Sht4xPrecision};

use super::{Measurement, Sensor, SensorError};

/// An SHT4x on an I2C bus, with the delay it waits the conversion time on.
#[derive(Debug)]
pub struct Sht4xSensor<I, D> {
    driver: ::sht4x::Sht4x<I, D>,
    delay: D,
    precision: Sht4xPrecision,
    temperature_name: &'static str,
    humidity_name: &'static str,
}

impl<I: I2c, D: DelayNs> Sht4xSensor<I, D> {
    /// A sensor at the usual address 0x44, measuring at high precision. Does no bus traffic.
    pub fn new(i2c: I, delay: D) -> Self {
        Self::with_address(i2c, delay, Sht4xAddress::Address0x44)
    }

    /// A sensor at another address (0x45 and 0x46 exist as other part numbers).
    pub fn with_address(i2c: I, delay: D, address: Sht4xAddress) -> Self {
        Self {
            driver: ::sht4x::Sht4x::new_with_address(i2c, address),
            delay,
            precision: Sht4xPrecision::High,
            temperature_name: "temp_c",
            humidity_name: "rh",
        }
    }

    /// Measures at `precision`: lower precision converts faster and draws less energy.
    pub fn with_precision(mut self, precision: Sht4xPrecision) -> Self {
        self.precision = precision;
        self
    }

    /// Names the readings `temperature` and `humidity` instead of `temp_c` and `rh`.
    pub fn with_reading_names(mut self, temperature: &'static str, humidity: &'static str) -> Self {
        self.temperature_name = temperature;
        self.humidity_name = humidity;
        self
    }

    /// Gives the bus and the delay back.
    pub fn release(self) -> (I, D) {
        (self.driver.destroy(), self.delay)
    }
}

impl<I: I2c, D: DelayNs> Sensor for Sht4xSensor<I, D> {
    fn measure(&mut self) -> Result<Measurement, SensorError> {
        let measured = self
            .driver
            .measure(self.precision, &mut self.delay)
            .map_err(|error| match error {
                ::sht4x::Error::I2c(error) => SensorError::bus(error),
                ::sht4x::Error::Crc => SensorError::Checksum,
                // The crate's error enum is non-exhaustive.
                _ => SensorError::Other,
            })?;
        let temperature = measured.temperature_celsius().to_num::<f64>();
        let humidity = measured
            .humidity_percent()
            .to_num::<f64>()
            .clamp(0.0, 100.0);
        let mut measurement = Measurement::new();
        // Two readings always fit: MAX_EVENT_READINGS is 4.
        let _ = measurement.push(self.temperature_name, temperature);
        let _ = measurement.push(self.humidity_name, humidity);
        Ok(measurement)
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::delay::{CheckedDelay, NoopDelay, Transaction as DelayTransaction};
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    use super::*;

    const ADDRESS: u8 = 0x44;
    const MEASURE_HIGH_PRECISION: u8 = 0xfd;
    const MEASURE_LOW_PRECISION: u8 = 0xe0;

    /// Sensirion's CRC-8: polynomial 0x31, initial value 0xFF.
    fn crc8(word: [u8; 2]) -> u8 {
        let mut crc = 0xffu8;
        for byte in word {
            crc ^= byte;
            for _ in 0..8 {
                crc = if crc & 0x80 != 0 {
                    (crc << 1) ^ 0x31
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    /// The six bytes the chip answers with: each word followed by its CRC.
    fn response(temperature: u16, humidity: u16) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [temperature.to_be_bytes(), humidity.to_be_bytes()] {
            bytes.extend(word);
            bytes.push(crc8(word));
        }
        bytes
    }

    fn assert_close(actual: Option<f64>, expected: f64) {
        let actual = actual.unwrap();
        assert!(
            (actual - expected).abs() < 0.01,
            "{actual} is not {expected}"
        );
    }

    #[test]
    fn crc_matches_the_datasheet_example() {
        assert_eq!(crc8([0xbe, 0xef]), 0x92);
    }

    #[test]
    fn a_measurement_is_command_wait_read_with_crcs() {
        let i2c = Mock::new(&[
            Transaction::write(ADDRESS, std::vec![MEASURE_HIGH_PRECISION]),
            Transaction::read(ADDRESS, response(0x6666, 0x8000)),
        ]);
        let delay = CheckedDelay::new(&[DelayTransaction::delay_ms(9)]);
        let mut sensor = Sht4xSensor::new(i2c, delay);
        let measurement = sensor.measure().unwrap();
        let names: Vec<_> = measurement.as_slice().iter().map(|r| r.name).collect();
        assert_eq!(names, ["temp_c", "rh"]);
        // T = −45 + 175·S/65535, RH = −6 + 125·S/65535
        assert_close(measurement.get("temp_c"), -45.0 + 175.0 * 26214.0 / 65535.0);
        assert_close(measurement.get("rh"), -6.0 + 125.0 * 32768.0 / 65535.0);
        let (mut i2c, mut delay) = sensor.release();
        i2c.done();
        delay.done();
    }

    #[test]
    fn humidity_is_cropped_to_0_to_100_percent() {
        let i2c = Mock::new(&[
            Transaction::write(ADDRESS, std::vec![MEASURE_LOW_PRECISION]),
            Transaction::read(ADDRESS, response(0x0000, 0xffff)),
            Transaction::write(ADDRESS, std::vec![MEASURE_LOW_PRECISION]),
            Transaction::read(ADDRESS, response(0xffff, 0x0000)),
        ]);
        let mut sensor = Sht4xSensor::new(i2c, NoopDelay::new())
            .with_precision(Sht4xPrecision::Low)
            .with_reading_names("air_temp_c", "air_rh");
        let wet = sensor.measure().unwrap();
        assert_close(wet.get("air_temp_c"), -45.0);
        assert_eq!(wet.get("air_rh"), Some(100.0));
        let dry = sensor.measure().unwrap();
        assert_close(dry.get("air_temp_c"), 130.0);
        assert_eq!(dry.get("air_rh"), Some(0.0));
        sensor.release().0.done();
    }

    #[test]
    fn a_corrupted_word_is_a_checksum_error() {
        let mut corrupted = response(0x6666, 0x8000);
        corrupted[4] ^= 0x01;
        let i2c = Mock::new(&[
            Transaction::write(ADDRESS, std::vec![MEASURE_HIGH_PRECISION]),
            Transaction::read(ADDRESS, corrupted),
        ]);
        let mut sensor = Sht4xSensor::new(i2c, NoopDelay::new());
        assert_eq!(sensor.measure(), Err(SensorError::Checksum));
        sensor.release().0.done();
    }

    #[test]
    fn bus_errors_are_reported_with_their_kind() {
        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        let i2c = Mock::new(&[
            Transaction::write(0x45, std::vec![MEASURE_HIGH_PRECISION]).with_error(nack),
            Transaction::write(0x45, std::vec![MEASURE_HIGH_PRECISION]),
            Transaction::read(0x45, response(0, 0)).with_error(ErrorKind::Bus),
        ]);
        let mut sensor =
            Sht4xSensor::with_address(i2c, NoopDelay::new(), Sht4xAddress::Address0x45);
        assert_eq!(sensor.measure(), Err(SensorError::Bus(nack)));
        assert_eq!(sensor.measure(), Err(SensorError::Bus(ErrorKind::Bus)));
        sensor.release().0.done();
    }
}
