//! Driver for the Texas Instruments TMP105 I2C temperature sensor, the sensor QEMU emulates, and
//! its register-compatible relatives (TMP75, TMP175, TMP100/101; the TMP102 reads the same in its
//! normal 12-bit mode).
//!
//! # Bus traffic
//! The chip has a pointer register that selects which register the next transfer reads or
//! writes. Every access here is two separate transfers, each with its own START and STOP:
//!
//! | access | transfers |
//! |---|---|
//! | temperature | `write [0x00]`, then `read 2 bytes` |
//! | configuration | `write [0x01]`, then `read 1 byte` |
//! | configure | `write [0x01, config]` |
//!
//! The driver never uses `write_read` (a repeated START): QEMU's Stellaris I2C controller ignores
//! a repeated START, and nothing is lost without one, because the chip keeps its pointer across
//! transfers.
//!
//! # Temperature format
//! The temperature register is a big-endian two's-complement 16-bit value whose top 12 bits are
//! the temperature in 1/16 °C. At lower resolutions the lowest of those bits read as 0, so at
//! every resolution the temperature is the register value divided by 256, in °C.

use embedded_hal::i2c::I2c;

use super::{Measurement, Reading, Sensor, SensorError};

/// The address of a TMP105 with its address pins tied low, and of QEMU's `tmp105` in the examples.
pub const TMP105_DEFAULT_ADDRESS: u8 = 0x48;

const TEMPERATURE_REGISTER: u8 = 0x00;
const CONFIGURATION_REGISTER: u8 = 0x01;
/// Bits 5 and 6 of the configuration register: the converter resolution.
const RESOLUTION_SHIFT: u8 = 5;

/// Converter resolution: finer steps take longer per conversion (datasheet typical times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tmp105Resolution {
    /// 0.5 °C steps, about 28 ms per conversion. The chip's power-on default.
    Bits9,
    /// 0.25 °C steps, about 55 ms per conversion.
    Bits10,
    /// 0.125 °C steps, about 110 ms per conversion.
    Bits11,
    /// 0.0625 °C steps, about 220 ms per conversion.
    Bits12,
}

impl Tmp105Resolution {
    const fn bits(self) -> u8 {
        match self {
            Self::Bits9 => 0b00,
            Self::Bits10 => 0b01,
            Self::Bits11 => 0b10,
            Self::Bits12 => 0b11,
        }
    }
}

/// A TMP105 on an I2C bus. Its [`Sensor`] measurement is one reading, `temp_c` by default.
#[derive(Debug)]
pub struct Tmp105<I> {
    i2c: I,
    address: u8,
    reading_name: &'static str,
}

impl<I: I2c> Tmp105<I> {
    /// A driver for the chip at `address` (7-bit). Does no bus traffic: call
    /// [`configure`](Self::configure) to leave the 9-bit power-on resolution.
    pub fn new(i2c: I, address: u8) -> Self {
        Self {
            i2c,
            address,
            reading_name: "temp_c",
        }
    }

    /// Names the reading `name` instead of `temp_c`, e.g. when a device has two temperature
    /// sensors.
    pub fn with_reading_name(mut self, name: &'static str) -> Self {
        self.reading_name = name;
        self
    }

    /// Writes the whole configuration register: continuous conversion at `resolution`, comparator
    /// mode, active-low alert, a fault queue of one. The first conversion at a new resolution
    /// takes that resolution's conversion time.
    pub fn configure(&mut self, resolution: Tmp105Resolution) -> Result<(), SensorError> {
        let config = resolution.bits() << RESOLUTION_SHIFT;
        self.i2c
            .write(self.address, &[CONFIGURATION_REGISTER, config])
            .map_err(SensorError::bus)
    }

    /// Reads the configuration register.
    pub fn configuration(&mut self) -> Result<u8, SensorError> {
        let mut config = [0u8; 1];
        self.read_register(CONFIGURATION_REGISTER, &mut config)?;
        Ok(config[0])
    }

    /// Reads the last converted temperature, in °C.
    pub fn read_celsius(&mut self) -> Result<f64, SensorError> {
        let mut raw = [0u8; 2];
        self.read_register(TEMPERATURE_REGISTER, &mut raw)?;
        Ok(celsius_from_register(raw))
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }

    /// Points the chip at `register`, then reads it, in two transfers (see the module docs).
    fn read_register(&mut self, register: u8, buf: &mut [u8]) -> Result<(), SensorError> {
        self.i2c
            .write(self.address, &[register])
            .map_err(SensorError::bus)?;
        self.i2c.read(self.address, buf).map_err(SensorError::bus)
    }
}

impl<I: I2c> Sensor for Tmp105<I> {
    fn measure(&mut self) -> Result<Measurement, SensorError> {
        let value = self.read_celsius()?;
        Ok(Measurement::from(Reading {
            name: self.reading_name,
            value,
        }))
    }
}

/// °C from the temperature register's two bytes.
fn celsius_from_register(raw: [u8; 2]) -> f64 {
    f64::from(i16::from_be_bytes(raw)) / 256.0
}

#[cfg(test)]
mod tests {
    use std::vec;

    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    use super::*;

    const ADDRESS: u8 = TMP105_DEFAULT_ADDRESS;

    fn read_temperature(msb: u8, lsb: u8) -> [Transaction; 2] {
        [
            Transaction::write(ADDRESS, vec![TEMPERATURE_REGISTER]),
            Transaction::read(ADDRESS, vec![msb, lsb]),
        ]
    }

    #[test]
    fn configure_writes_pointer_and_value_in_one_transfer() {
        let mut tmp = Tmp105::new(
            Mock::new(&[
                Transaction::write(ADDRESS, vec![0x01, 0x60]),
                Transaction::write(ADDRESS, vec![0x01, 0x00]),
                Transaction::write(ADDRESS, vec![0x01]),
                Transaction::read(ADDRESS, vec![0x60]),
            ]),
            ADDRESS,
        );
        tmp.configure(Tmp105Resolution::Bits12).unwrap();
        tmp.configure(Tmp105Resolution::Bits9).unwrap();
        assert_eq!(tmp.configuration(), Ok(0x60));
        tmp.release().done();
    }

    #[test]
    fn temperature_is_a_pointer_write_then_a_separate_two_byte_read() {
        // The mock fails on a write_read where a write and a read are scripted, so this also
        // proves that no repeated START is used.
        let script: vec::Vec<Transaction> = [
            read_temperature(0x19, 0x80), // 25.5 °C
            read_temperature(0x00, 0x10), // 1/16 °C, the 12-bit step
            read_temperature(0xff, 0xf0), // −1/16 °C
            read_temperature(0xe7, 0x00), // −25 °C
            read_temperature(0x7f, 0xf0), // 127.9375 °C, the top of the range
            read_temperature(0x80, 0x00), // −128 °C, the bottom
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut tmp = Tmp105::new(Mock::new(&script), ADDRESS);
        for expected in [25.5, 0.0625, -0.0625, -25.0, 127.9375, -128.0] {
            assert_eq!(tmp.read_celsius(), Ok(expected));
        }
        tmp.release().done();
    }

    #[test]
    fn a_measurement_is_one_named_reading() {
        let mut tmp = Tmp105::new(Mock::new(&read_temperature(0x15, 0x70)), ADDRESS);
        let measurement = tmp.measure().unwrap();
        assert_eq!(
            measurement.as_slice(),
            [Reading {
                name: "temp_c",
                value: 21.4375
            }]
        );
        tmp.release().done();

        let mut renamed = Tmp105::new(Mock::new(&read_temperature(0x0a, 0x00)), ADDRESS)
            .with_reading_name("water_temp_c");
        assert_eq!(renamed.measure().unwrap().get("water_temp_c"), Some(10.0));
        renamed.release().done();
    }

    #[test]
    fn bus_errors_are_reported_with_their_kind() {
        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        let mut tmp = Tmp105::new(
            Mock::new(&[
                // No chip at the address: the pointer write is not acknowledged.
                Transaction::write(ADDRESS, vec![TEMPERATURE_REGISTER]).with_error(nack),
                // The pointer write works, the read loses arbitration.
                Transaction::write(ADDRESS, vec![TEMPERATURE_REGISTER]),
                Transaction::read(ADDRESS, vec![0, 0]).with_error(ErrorKind::ArbitrationLoss),
                // The bus recovers.
                Transaction::write(ADDRESS, vec![TEMPERATURE_REGISTER]),
                Transaction::read(ADDRESS, vec![0x0c, 0x80]),
            ]),
            ADDRESS,
        );
        assert_eq!(tmp.measure(), Err(SensorError::Bus(nack)));
        assert_eq!(
            tmp.measure(),
            Err(SensorError::Bus(ErrorKind::ArbitrationLoss))
        );
        assert_eq!(tmp.measure().unwrap().get("temp_c"), Some(12.5));
        tmp.release().done();
    }
}
