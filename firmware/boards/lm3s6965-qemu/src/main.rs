//! The Edge Gateway device firmware on QEMU's `lm3s6965evb`: reads the TMP105 on I2C0
//! periodically and sends each reading to the gateway over UART0 with the `edge-device` core —
//! `Hello`, then `Event` frames, retransmitted until the gateway's `Ack` (which it sends only
//! once the event is in its journal).
#![no_std]
#![no_main]

use core::time::Duration;

use cortex_m_rt::entry;
use edge_board_lm3s6965::clock::SysTickClock;
use edge_board_lm3s6965::i2c::I2c0;
use edge_board_lm3s6965::uart::Uart0;
use edge_board_lm3s6965::{boot, enable_peripheral_clocks};
use edge_device::sensor::tmp105::{Tmp105, Tmp105Resolution};
use edge_device::{Device, LinkConfig, Sensor};
use panic_semihosting as _;

/// The device id the gateway sees (`EDGE_DEVICE_ID` at build time, or this).
const DEVICE_ID: &str = match option_env!("EDGE_DEVICE_ID") {
    Some(id) => id,
    None => "qemu-lm3s6965",
};
const FIRMWARE_VERSION: &str = concat!("edge-board-lm3s6965 ", env!("CARGO_PKG_VERSION"));
/// The TMP105's address with A0 low (QEMU's `-device tmp105,address=0x48`).
const TMP105_ADDRESS: u8 = 0x48;
/// How often the temperature is read.
const SAMPLE_INTERVAL: Duration = if cfg!(feature = "fast") {
    Duration::from_millis(1)
} else {
    Duration::from_millis(500)
};
/// Events kept until acknowledged: 30 s at the default interval.
const OUTBOX: usize = 64;

#[entry]
fn main() -> ! {
    let Some(core) = cortex_m::Peripherals::take() else {
        panic!("core peripherals taken twice");
    };
    enable_peripheral_clocks();
    let mut clock = SysTickClock::start(core.SYST);
    let mut uart = Uart0::new();
    // The device's whole state lives in statics, so that `size` shows the RAM it takes.
    let Some(sensor) =
        cortex_m::singleton!(: Tmp105<I2c0> = Tmp105::new(I2c0::new(), TMP105_ADDRESS))
    else {
        panic!("sensor taken twice");
    };
    // 1/16 °C; if the sensor is not there yet, readings fail (counted) until it answers.
    let _ = sensor.configure(Tmp105Resolution::Bits12);
    let config = LinkConfig::new(DEVICE_ID, FIRMWARE_VERSION);
    let mut boot_id = boot::from_host;
    let device = match Device::new(
        &config,
        &mut boot_id,
        [(sensor as &mut dyn Sensor, SAMPLE_INTERVAL)],
    ) {
        Ok(device) => device,
        Err(error) => panic!("bad device configuration: {error}"),
    };
    let Some(device) = cortex_m::singleton!(: Device<'static, 1, OUTBOX> = device) else {
        panic!("device taken twice");
    };
    loop {
        device.poll(&mut clock, &mut uart);
        // Sleep until the next millisecond tick (or a UART interrupt, were one enabled).
        cortex_m::asm::wfi();
    }
}
