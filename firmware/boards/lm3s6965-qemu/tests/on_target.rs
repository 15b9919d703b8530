//! On-target tests of the HAL and the TMP105 driver, run inside QEMU (`cargo test` with the
//! runner of `.cargo/config.toml`): each check prints its name; the semihosting exit code is
//! the result (a failed check panics, and `panic-semihosting` exits with 1).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use edge_board_lm3s6965::clock::SysTickClock;
use edge_board_lm3s6965::i2c::{Error, I2c0};
use edge_board_lm3s6965::uart::Uart0;
use edge_board_lm3s6965::{boot, enable_peripheral_clocks};
use edge_device::Sensor;
use edge_device::sensor::tmp105::{Tmp105, Tmp105Resolution};
use embedded_hal::i2c::{I2c, Operation};
use embedded_io::{ReadReady, Write};
use panic_semihosting as _;

fn check(name: &str, ok: bool) {
    if !ok {
        panic!("FAILED: {name}");
    }
    hprintln!("ok: {name}");
}

#[entry]
fn main() -> ! {
    let Some(core) = cortex_m::Peripherals::take() else {
        panic!("core peripherals taken twice");
    };
    enable_peripheral_clocks();
    let mut clock = SysTickClock::start(core.SYST);

    // I2C: the TMP105 answers at 0x48, nobody at 0x49.
    let mut i2c = I2c0::new();
    let mut config = [0xFFu8; 1];
    check(
        "i2c reads the TMP105's power-on configuration (0)",
        i2c.write_read(0x48, &[0x01], &mut config).is_ok() && config[0] == 0,
    );
    check(
        "i2c writes a register and reads it back",
        i2c.write(0x48, &[0x01, 0x60]).is_ok()
            && i2c.write_read(0x48, &[0x01], &mut config).is_ok()
            && config[0] == 0x60,
    );
    check(
        "i2c reports an absent device as an address NACK",
        i2c.write(0x49, &[0x01]) == Err(Error::AddressNack),
    );
    let mut two = [0u8; 2];
    check(
        "i2c still works after an error",
        i2c.write_read(0x48, &[0x00], &mut two).is_ok(),
    );
    // Adjacent operations of one direction are one transfer: the pointer byte and the two bytes
    // of T_LOW in separate writes, its two bytes read back in separate reads.
    let (mut high, mut low) = ([0u8; 1], [0u8; 1]);
    check(
        "i2c joins adjacent writes and adjacent reads into one transfer",
        i2c.transaction(
            0x48,
            &mut [Operation::Write(&[0x02]), Operation::Write(&[0x12, 0x30])],
        )
        .is_ok()
            && i2c
                .transaction(
                    0x48,
                    &mut [
                        Operation::Write(&[0x02]),
                        Operation::Read(&mut high),
                        Operation::Read(&mut low),
                    ],
                )
                .is_ok()
            && (high[0], low[0]) == (0x12, 0x30),
    );
    // An empty write probes the address and leaves the device as it was: the TMP105's pointer
    // still names T_LOW (a stale data byte sent would have moved it).
    let mut limit = [0u8; 2];
    check(
        "i2c probes an address with an empty write, changing nothing",
        i2c.write(0x48, &[0x02, 0x12, 0x30]).is_ok()
            && i2c.write(0x48, &[]).is_ok()
            && i2c.write(0x49, &[]) == Err(Error::AddressNack)
            && i2c.read(0x48, &mut limit).is_ok()
            && limit == [0x12, 0x30],
    );

    // The driver over the HAL: configured for 1/16 °C, it reads QEMU's default 0 °C.
    let mut sensor = Tmp105::new(i2c, 0x48);
    check(
        "tmp105 configures 12-bit resolution",
        sensor.configure(Tmp105Resolution::Bits12).is_ok()
            && sensor.configuration().ok() == Some(0x60),
    );
    let measured = sensor.measure();
    check(
        "tmp105 measures temp_c",
        matches!(&measured, Ok(measurement) if measurement.get("temp_c") == Some(0.0)),
    );
    let mut absent = Tmp105::new(sensor.release(), 0x4A);
    check(
        "tmp105 at an empty address fails",
        absent.measure().is_err(),
    );

    // UART: writes go out without blocking forever; nothing arrives on `-serial null`.
    let mut uart = Uart0::new();
    check(
        "uart writes and flushes",
        uart.write_all(b"edge\n").is_ok() && uart.flush().is_ok(),
    );
    check("uart has nothing to read", uart.read_ready() == Ok(false));

    // The clock moves, in milliseconds.
    let start = clock.millis();
    let mut spins = 0u32;
    while clock.millis() < start + 5 && spins < 50_000_000 {
        spins += 1;
    }
    check("systick counts milliseconds", clock.millis() >= start + 5);

    // The boot id is random bits from the host: two drawn within the same second differ (drawn
    // from the host's clock instead, they would not).
    let (first, second) = (boot::from_host(), boot::from_host());
    check("boot ids drawn from the host differ", first != second);

    hprintln!("all on-target checks passed");
    debug::exit(debug::EXIT_SUCCESS);
    loop {}
}
