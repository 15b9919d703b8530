//! The I2C0 master, 100 kHz, blocking.
//!
//! In a `transaction`, adjacent operations of the same direction are one transfer, as
//! embedded-hal asks: their bytes go out (or come in) back to back after a single START. Where
//! the direction changes, embedded-hal asks for a repeated START, which the Stellaris controller
//! in QEMU ignores; here each transfer is closed with STOP and the next one starts afresh — the
//! devices this board reads (TMP105) keep their register pointer across a STOP, so a
//! write-then-read still reads the register just written.

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

    /// Writes the bytes of `operations` (all writes) as one transfer: START, address, every
    /// byte, STOP.
    fn write_transfer(&mut self, address: u8, operations: &[Operation<'_>]) -> Result<(), Error> {
        let total: usize = operations.iter().map(operation_len).sum();
        if total == 0 {
            // An address-only probe. The controller has no transfer without a data byte, and a
            // write would send whatever its data register last held; a one-byte read changes
            // nothing on the device (as `i2cdetect -r` probes).
            mmio::write(MSA, (u32::from(address) << 1) | 1);
            return self.step(START | RUN | STOP);
        }
        mmio::write(MSA, u32::from(address) << 1);
        let bytes = operations.iter().flat_map(|operation| match operation {
            Operation::Write(bytes) => bytes.iter(),
            Operation::Read(_) => [].iter(),
        });
        for (index, &byte) in bytes.enumerate() {
            mmio::write(MDR, u32::from(byte));
            let first = if index == 0 { START } else { 0 };
            let stop = if index + 1 == total { STOP } else { 0 };
            self.step(first | RUN | stop)?;
        }
        Ok(())
    }

    /// Fills the buffers of `operations` (all reads) from one transfer: START, address, every
    /// byte acknowledged but the last, STOP.
    fn read_transfer(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Error> {
        mmio::write(MSA, (u32::from(address) << 1) | 1);
        let total: usize = operations.iter().map(operation_len).sum();
        if total == 0 {
            // An address-only probe: one byte read and dropped.
            return self.step(START | RUN | STOP);
        }
        let bytes = operations.iter_mut().flat_map(|operation| match operation {
            Operation::Read(buffer) => buffer.iter_mut(),
            Operation::Write(_) => [].iter_mut(),
        });
        for (index, byte) in bytes.enumerate() {
            let first = if index == 0 { START } else { 0 };
            let end = if index + 1 == total { STOP } else { ACK };
            self.step(first | RUN | end)?;
            *byte = (mmio::read(MDR) & 0xFF) as u8;
        }
        Ok(())
    }
}

fn operation_len(operation: &Operation<'_>) -> usize {
    match operation {
        Operation::Write(bytes) => bytes.len(),
        Operation::Read(buffer) => buffer.len(),
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
        let mut rest = operations;
        while let Some(first) = rest.first() {
            let reading = matches!(first, Operation::Read(_));
            let run = rest
                .iter()
                .take_while(|operation| matches!(operation, Operation::Read(_)) == reading)
                .count();
            let (transfer, tail) = core::mem::take(&mut rest).split_at_mut(run);
            if reading {
                self.read_transfer(address, transfer)?;
            } else {
                self.write_transfer(address, transfer)?;
            }
            rest = tail;
        }
        Ok(())
    }
}
