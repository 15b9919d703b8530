//! The I2C0 master, 100 kHz, blocking.
//!
//! Each read or write is its own START … STOP. embedded-hal's `transaction` would join them with
//! repeated STARTs, which the Stellaris controller in QEMU ignores; here they run one after the
//! other, each closed with STOP — the devices this board reads (TMP105) keep their register
//! pointer across a STOP, so a write-then-read still reads the register just written.

use embedded_hal::i2c::{self, ErrorKind, NoAcknowledgeSource, Operation, SevenBitAddress};

use crate::mmio;

const BASE: usize = 0x4002_0000;
/// Slave address and direction.
const MSA: usize = BASE;
/// Control (write) and status (read).
const MCS: usize = BASE + 0x004;
/// Data.
const MDR: usize = BASE + 0x008;
/// Timer period (bus speed).
const MTPR: usize = BASE + 0x00C;
/// Master configuration.
const MCR: usize = BASE + 0x020;

const RUN: u32 = 1 << 0;
const START: u32 = 1 << 1;
const STOP: u32 = 1 << 2;
const ACK: u32 = 1 << 3;

const BUSY: u32 = 1 << 0;
const ERROR: u32 = 1 << 1;
const ADRACK: u32 = 1 << 2;
const DATACK: u32 = 1 << 3;
const ARBLST: u32 = 1 << 4;

/// Polls of `BUSY` before a byte counts as timed out (a stuck bus must not hang the device).
const BUSY_POLLS: u32 = 100_000;

/// What went wrong on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Nobody acknowledged the address (QEMU reports an absent device as a lost arbitration).
    AddressNack,
    /// The device did not acknowledge a data byte.
    DataNack,
    /// Another master won the bus.
    ArbitrationLoss,
    /// The controller stayed busy.
    Timeout,
}

impl i2c::Error for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::AddressNack => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
            Self::DataNack => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data),
            Self::ArbitrationLoss => ErrorKind::ArbitrationLoss,
            Self::Timeout => ErrorKind::Other,
        }
    }
}

/// I2C0, owned.
#[derive(Debug)]
pub struct I2c0 {
    _private: (),
}

impl I2c0 {
    /// Enables the master at 100 kHz from a 12 MHz system clock.
    pub fn new() -> Self {
        mmio::write(MCR, 0x10);
        // SCL period = 2 × (1 + TPR) × 10 clocks: TPR = 12 MHz / (20 × 100 kHz) − 1 = 5.
        mmio::write(MTPR, 5);
        Self { _private: () }
    }

    /// Issues `command`, waits for the controller, and says how it went.
    fn step(&mut self, command: u32) -> Result<(), Error> {
        mmio::write(MCS, command);
        let mut polls = 0;
        loop {
            let status = mmio::read(MCS);
            if status & BUSY == 0 {
                if status & ERROR == 0 {
                    return Ok(());
                }
                // A failed byte leaves the bus held unless we stop it.
                if command & STOP == 0 {
                    mmio::write(MCS, STOP);
                }
                return Err(if status & ARBLST != 0 && status & ADRACK == 0 {
                    // An empty address reads as ERROR|ARBLST in QEMU.
                    Error::AddressNack
                } else if status & ARBLST != 0 {
                    Error::ArbitrationLoss
                } else if status & ADRACK != 0 {
                    Error::AddressNack
                } else if status & DATACK != 0 {
                    Error::DataNack
                } else {
                    Error::AddressNack
                });
            }
            polls += 1;
            if polls >= BUSY_POLLS {
                return Err(Error::Timeout);
            }
        }
    }

    fn write_bytes(&mut self, address: u8, bytes: &[u8]) -> Result<(), Error> {
        mmio::write(MSA, u32::from(address) << 1);
        if bytes.is_empty() {
            // An address-only probe.
            return self.step(START | RUN | STOP);
        }
        for (index, &byte) in bytes.iter().enumerate() {
            mmio::write(MDR, u32::from(byte));
            let first = if index == 0 { START } else { 0 };
            let stop = if index + 1 == bytes.len() { STOP } else { 0 };
            self.step(first | RUN | stop)?;
        }
        Ok(())
    }

    fn read_bytes(&mut self, address: u8, buffer: &mut [u8]) -> Result<(), Error> {
        mmio::write(MSA, (u32::from(address) << 1) | 1);
        let count = buffer.len();
        if count == 0 {
            return self.step(START | RUN | STOP);
        }
        for (index, byte) in buffer.iter_mut().enumerate() {
            let first = if index == 0 { START } else { 0 };
            // Acknowledge every byte but the last, which ends with STOP.
            let end = if index + 1 == count { STOP } else { ACK };
            self.step(first | RUN | end)?;
            *byte = (mmio::read(MDR) & 0xFF) as u8;
        }
        Ok(())
    }
}

impl Default for I2c0 {
    fn default() -> Self {
        Self::new()
    }
}

impl i2c::ErrorType for I2c0 {
    type Error = Error;
}

impl i2c::I2c<SevenBitAddress> for I2c0 {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        for operation in operations {
            match operation {
                Operation::Write(bytes) => self.write_bytes(address, bytes)?,
                Operation::Read(buffer) => self.read_bytes(address, buffer)?,
            }
        }
        Ok(())
    }
}
