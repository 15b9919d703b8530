//! The Edge Gateway device firmware on a Raspberry Pi Pico (RP2040): reads an SHT4x (SHT40/41/45)
//! on I2C0 and sends each measurement (`temp_c`, `rh`) to the gateway over UART0 with the
//! `edge-device` core, keeping every event until the gateway acknowledges it.
//!
//! Wiring (docs/firmware.md): UART0 TX on GP0 (pin 1), RX on GP1 (pin 2), to a 3.3 V USB-serial
//! adapter; the SHT4x on GP4 SDA (pin 6) and GP5 SCL (pin 7), 3V3 and GND.
#![no_std]
#![no_main]

use core::time::Duration;

use edge_device::sensor::Sht4xSensor;
use edge_device::{Clock, Device, Instant, LinkConfig, Sensor};
use panic_halt as _;
use rp2040_hal as hal;
use rp2040_hal::Clock as _;
use rp2040_hal::fugit::RateExtU32;
use rp2040_hal::pac;

/// The second-stage bootloader, for the Pico's W25Q080 flash.
#[unsafe(link_section = ".boot2")]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

/// The Pico's crystal.
const XTAL_FREQ_HZ: u32 = 12_000_000;
/// The device id the gateway sees (`EDGE_DEVICE_ID` at build time, or this).
const DEVICE_ID: &str = match option_env!("EDGE_DEVICE_ID") {
    Some(id) => id,
    None => "pico-sht4x",
};
const FIRMWARE_VERSION: &str = concat!("edge-board-rp-pico ", env!("CARGO_PKG_VERSION"));
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Events kept until acknowledged: over 20 minutes at the interval above.
const OUTBOX: usize = 256;

/// UART0 behind the embedded-io 0.7 traits the device core speaks.
struct Serial<D: hal::uart::UartDevice, P: hal::uart::ValidUartPinout<D>>(
    hal::uart::UartPeripheral<hal::uart::Enabled, D, P>,
);

impl<D: hal::uart::UartDevice, P: hal::uart::ValidUartPinout<D>> embedded_io::ErrorType
    for Serial<D, P>
{
    type Error = embedded_io::ErrorKind;
}

impl<D: hal::uart::UartDevice, P: hal::uart::ValidUartPinout<D>> embedded_io::ReadReady
    for Serial<D, P>
{
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.0.uart_is_readable())
    }
}

impl<D: hal::uart::UartDevice, P: hal::uart::ValidUartPinout<D>> embedded_io::Read
    for Serial<D, P>
{
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.0.read_raw(buf) {
                Ok(0) | Err(nb::Error::WouldBlock) => {}
                Ok(count) => return Ok(count),
                // The good bytes before a framing, parity, break or overrun error are kept;
                // the link's CRC and retransmission recover the rest.
                Err(nb::Error::Other(error)) if !error.discarded.is_empty() => {
                    return Ok(error.discarded.len());
                }
                Err(nb::Error::Other(_)) => return Err(embedded_io::ErrorKind::InvalidData),
            }
        }
    }
}

impl<D: hal::uart::UartDevice, P: hal::uart::ValidUartPinout<D>> embedded_io::Write
    for Serial<D, P>
{
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write_full_blocking(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Milliseconds from the RP2040's 1 MHz timer.
struct TimerClock(hal::Timer);

impl Clock for TimerClock {
    fn now(&mut self) -> Instant {
        Instant::from_millis(self.0.get_counter().ticks() / 1000)
    }
}

#[hal::entry]
fn main() -> ! {
    let Some(mut pac) = pac::Peripherals::take() else {
        panic!("peripherals taken twice");
    };
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(
        XTAL_FREQ_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    ) else {
        panic!("clocks did not start");
    };
    let sio = hal::Sio::new(pac.SIO);
    let pins = hal::gpio::Pins::new(
        pac.IO_BANK0,
        pac.PADS_BANK0,
        sio.gpio_bank0,
        &mut pac.RESETS,
    );
    let timer = hal::Timer::new(pac.TIMER, &mut pac.RESETS, &clocks);

    let uart_pins = (
        pins.gpio0.into_function::<hal::gpio::FunctionUart>(),
        pins.gpio1.into_function::<hal::gpio::FunctionUart>(),
    );
    let Ok(uart) = hal::uart::UartPeripheral::new(pac.UART0, uart_pins, &mut pac.RESETS).enable(
        hal::uart::UartConfig::new(
            115_200.Hz(),
            hal::uart::DataBits::Eight,
            None,
            hal::uart::StopBits::One,
        ),
        clocks.peripheral_clock.freq(),
    ) else {
        panic!("UART0 did not start");
    };
    let mut serial = Serial(uart);

    let sda = pins
        .gpio4
        .reconfigure::<hal::gpio::FunctionI2C, hal::gpio::PullUp>();
    let scl = pins
        .gpio5
        .reconfigure::<hal::gpio::FunctionI2C, hal::gpio::PullUp>();
    let i2c = hal::I2C::i2c0(
        pac.I2C0,
        sda,
        scl,
        100.kHz(),
        &mut pac.RESETS,
        &clocks.system_clock,
    );

    // A random boot id from the ring oscillator's jitter: the gateway tells this boot's
    // events from the last one's (1 chance in 4 billion of a repeat).
    let rosc = hal::rosc::RingOscillator::new(pac.ROSC).initialize();
    let mut boot_id = || (0..32).fold(0u32, |id, _| (id << 1) | u32::from(rosc.get_random_bit()));

    let Some(sensor) = cortex_m::singleton!(: Sht4xSensor<hal::I2C<pac::I2C0, (hal::gpio::Pin<hal::gpio::bank0::Gpio4, hal::gpio::FunctionI2C, hal::gpio::PullUp>, hal::gpio::Pin<hal::gpio::bank0::Gpio5, hal::gpio::FunctionI2C, hal::gpio::PullUp>)>, hal::Timer> = Sht4xSensor::new(i2c, timer))
    else {
        panic!("sensor taken twice");
    };
    let config = LinkConfig::new(DEVICE_ID, FIRMWARE_VERSION);
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
    let mut clock = TimerClock(timer);
    loop {
        device.poll(&mut clock, &mut serial);
    }
}
