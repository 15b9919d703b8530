//! UART0: 115 200 baud, 8N1, FIFOs on.

use crate::mmio;

const BASE: usize = 0x4000_C000;
/// Data: write to send, read to receive.
const DR: usize = BASE;
/// Flags.
const FR: usize = BASE + 0x018;
const IBRD: usize = BASE + 0x024;
const FBRD: usize = BASE + 0x028;
const LCRH: usize = BASE + 0x02C;
const CTL: usize = BASE + 0x030;

/// Receive FIFO empty.
const FR_RXFE: u32 = 1 << 4;
/// Transmit FIFO full.
const FR_TXFF: u32 = 1 << 5;
/// Transmitting (the shift register is busy).
const FR_BUSY: u32 = 1 << 3;
/// Receive error bits in `DR` that spoil their byte: break, parity, framing. (Overrun, bit 11,
/// says bytes were lost *before* this one, which is itself good.)
const DR_ERRORS: u32 = 0x700;

/// UART0, owned.
#[derive(Debug)]
pub struct Uart0 {
    /// Bytes received with an error flag (dropped; the link's CRC catches what remains).
    pub receive_errors: u32,
}

impl Uart0 {
    /// Sets UART0 up for 115 200 baud 8N1 with FIFOs, from a 12 MHz system clock (the chip's
    /// default crystal), and enables it.
    pub fn new() -> Self {
        mmio::write(CTL, 0);
        // 12 MHz / (16 × 115 200) = 6.5104: integer 6, fraction round(0.5104 × 64) = 33.
        mmio::write(IBRD, 6);
        mmio::write(FBRD, 33);
        // 8 data bits (WLEN = 0b11), FIFOs enabled.
        mmio::write(LCRH, (0b11 << 5) | (1 << 4));
        // UARTEN, TXE, RXE.
        mmio::write(CTL, (1 << 0) | (1 << 8) | (1 << 9));
        Self { receive_errors: 0 }
    }

    fn write_byte(&mut self, byte: u8) {
        while mmio::read(FR) & FR_TXFF != 0 {}
        mmio::write(DR, u32::from(byte));
    }
}

impl Default for Uart0 {
    fn default() -> Self {
        Self::new()
    }
}

impl embedded_io::ErrorType for Uart0 {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::ReadReady for Uart0 {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(mmio::read(FR) & FR_RXFE == 0)
    }
}

impl embedded_io::Read for Uart0 {
    /// Reads what the FIFO holds, waiting for the first byte if it is empty (as the trait asks;
    /// the device core reads only after `read_ready`). Bytes received with an error (a break
    /// from an unplugged cable, framing or parity) are dropped and counted; if nothing else was
    /// there, the read fails with `InvalidData` rather than wait, so the device's loop goes on.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        while mmio::read(FR) & FR_RXFE != 0 {}
        let mut count = 0;
        let mut spoiled = 0;
        while count < buf.len() && mmio::read(FR) & FR_RXFE == 0 {
            let data = mmio::read(DR);
            if data & DR_ERRORS != 0 {
                spoiled += 1;
                continue;
            }
            buf[count] = (data & 0xFF) as u8;
            count += 1;
        }
        self.receive_errors = self.receive_errors.wrapping_add(spoiled);
        if count == 0 {
            return Err(embedded_io::ErrorKind::InvalidData);
        }
        Ok(count)
    }
}

impl embedded_io::Write for Uart0 {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &byte in buf {
            self.write_byte(byte);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        while mmio::read(FR) & FR_BUSY != 0 {}
        Ok(())
    }
}
