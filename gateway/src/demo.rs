//! `edge-gateway demo`: the whole path on one machine with embedded defaults.
//!
//! It starts an embedded "cloud" broker, a gateway forwarding to it with a few alert rules, a
//! fleet of simulated greenhouse devices publishing to the gateway over MQTT and on serial lines
//! (some run warm, every fifth one has heat spikes), and `edge-alerts` consuming from the cloud
//! broker with its live dashboard; then it prints where to look and, every few seconds, what the
//! cloud has received. Ports are chosen away from the standard 1883 so the demo runs beside a
//! local Mosquitto.
//!
//! `edge-alerts` is a program of its own (it runs in the cloud, not on the gateway): the demo
//! starts the one beside its own executable, or the one `--alerts-bin` names.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use rumqttd::Notification;
use tokio::sync::watch;

use crate::cloud_broker::start_cloud_broker;
use crate::config::{Config, UplinkType, UplinkUrl};

/// Options of `edge-gateway demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of simulated devices publishing over MQTT.
    #[arg(long, default_value_t = 5)]
    pub devices: usize,
    /// Number of simulated devices on serial lines (ptys, running the device core).
    #[arg(long, default_value_t = 2)]
    pub serial_devices: usize,
    /// Milliseconds between a device's events.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Port devices publish to (the gateway's MQTT endpoint).
    #[arg(long, default_value_t = 11883)]
    pub device_port: u16,
    /// Port of the embedded "cloud" broker.
    #[arg(long, default_value_t = 11884)]
    pub cloud_port: u16,
    /// Port of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, default_value_t = 19100)]
    pub admin_port: u16,
    /// Where the journal lives (default: a fresh folder under the system temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Port of the alert dashboard (`edge-alerts`).
    #[arg(long, default_value_t = 19300)]
    pub dashboard_port: u16,
    /// The `edge-alerts` program (default: the one beside this executable).
    #[arg(long)]
    pub alerts_bin: Option<PathBuf>,
    /// Also run this LM3S6965 firmware image in QEMU (`qemu-system-arm`), its UART read like
    /// the other serial devices (see docs/firmware.md).
    #[arg(long)]
    pub qemu_firmware: Option<PathBuf>,
}

/// The demo's alert rules: warm devices cross the first within seconds, the spiking ones the
/// second after a few minutes, and a device that goes quiet the third.
const DEMO_RULES: &str = r#"
[[rule]]
name = "greenhouse warm"
devices = "greenhouse-*"
reading = "temp_c"
above = 29.0
clear_below = 28.0
for = "3s"
severity = "warning"
labels = { team = "growers" }

[[rule]]
name = "greenhouse too hot"
devices = "greenhouse-*"
reading = "temp_c"
above = 35.0
clear_below = 33.0
for = "5s"
severity = "critical"
labels = { team = "growers" }

[[rule]]
name = "device silent"
silent_for = "30s"
severity = "critical"
"#;

const GATEWAY_ID: &str = "demo-gateway";
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the demo until `shutdown` resolves (or the duration passes). Fails if the cloud received
/// nothing, so a broken demo does not look like a working one.
pub async fn run(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let localhost = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("edge-gateway-demo-{}", std::process::id()))
    });
    let mut config = Config::new(
        GATEWAY_ID,
        UplinkUrl {
            kind: UplinkType::Mqtt,
            tls: false,
            host: "127.0.0.1".into(),
            port: args.cloud_port,
            vhost: None,
        },
    );
    config.gateway.data_dir = data_dir;
    config.devices.listen = localhost(args.device_port);
    config.admin.listen = localhost(args.admin_port);
    for uplink in &mut config.uplinks {
        uplink.reconnect_max = Duration::from_secs(5);
    }
    config.journal.max_size = 64 * 1024 * 1024;
    config.rules = demo_rules()?;

    // Serial devices: each on a pty of its own, reachable under the data dir, read by the gateway
    // like any `[[serial]]` port.
    let boot = u32::try_from(crate::sources::now_ms() / 1000 % i64::from(u32::MAX)).unwrap_or(1);
    let serial_dir = config.gateway.data_dir.join("serial");
    std::fs::create_dir_all(&serial_dir)
        .with_context(|| format!("failed to create {}", serial_dir.display()))?;
    let mut serial_devices = Vec::new();
    for index in 0..args.serial_devices {
        let name = format!("greenhouse-serial-{index}");
        let device = edge_sim::serial_device::SerialDevice::spawn(
            edge_sim::serial_device::SerialDeviceConfig::new(
                &name,
                args.devices + index,
                boot,
                Duration::from_millis(args.interval_ms),
            ),
            &serial_dir.join(&name),
        )
        .context("failed to start a simulated serial device")?;
        config.serial.push(crate::config::SerialConfig {
            port: device.link().to_path_buf(),
            baud: 115_200,
        });
        serial_devices.push(device);
    }
    let qemu = match &args.qemu_firmware {
        Some(image) => {
            let qemu = QemuDevice::start(image)?;
            config.serial.push(crate::config::SerialConfig {
                port: qemu.pty.clone(),
                baud: 115_200,
            });
            Some(qemu)
        }
        None => None,
    };

    // The "cloud": an embedded broker, and a subscriber that tallies what arrives.
    let cloud = start_cloud_broker(localhost(args.cloud_port))
        .context("failed to start the demo cloud broker")?;
    let (tally_tx, tally) = watch::channel(Tally::default());
    tokio::spawn(watch_cloud(cloud, tally_tx));
    let dashboard = start_dashboard(&args, &config.gateway.data_dir)?;

    let (stop, stopped) = watch::channel(false);
    let gateway = {
        let mut stopped = stopped.clone();
        let config = config.clone();
        tokio::spawn(async move {
            crate::app::run(config, None, async move {
                let _ = stopped.changed().await;
            })
            .await
        })
    };
    wait_for_port(localhost(args.device_port)).await?;

    let devices: Vec<_> = (0..args.devices)
        .map(|index| {
            let device = edge_sim::mqtt::DeviceConfig {
                name: format!("greenhouse-{index}"),
                index,
                host: "127.0.0.1".into(),
                port: args.device_port,
                interval: Duration::from_millis(args.interval_ms),
                count: None,
                format: if index % 2 == 0 {
                    edge_sim::mqtt::Format::Json
                } else {
                    edge_sim::mqtt::Format::Cbor
                },
                boot,
            };
            tokio::spawn(edge_sim::mqtt::run_device(device, stopped.clone()))
        })
        .collect();

    println!(
        "Edge Gateway demo: {} simulated greenhouse devices over MQTT, {} on serial lines",
        args.devices, args.serial_devices
    );
    println!(
        "  devices publish to  mqtt://127.0.0.1:{}  topic devices/<device>/events",
        args.device_port
    );
    for device in &serial_devices {
        println!("  serial device on    {}", device.link().display());
    }
    if let Some(qemu) = &qemu {
        println!(
            "  firmware in QEMU on {}  (device qemu-lm3s6965, a TMP105 at 0 °C until set over QMP)",
            qemu.pty.display()
        );
    }
    println!(
        "  cloud broker        mqtt://127.0.0.1:{}  topic edge/{GATEWAY_ID}/#",
        args.cloud_port
    );
    println!(
        "  metrics             http://127.0.0.1:{}/metrics",
        args.admin_port
    );
    println!(
        "  readiness           http://127.0.0.1:{}/readyz",
        args.admin_port
    );
    println!("  journal             {}", config.journal_path().display());
    match &dashboard {
        Some(dashboard) => {
            println!("  alert dashboard     {}", dashboard.url);
            println!("    log in with token {}", dashboard.token);
        }
        None => println!(
            "  alert dashboard     not started: edge-alerts not found \
             (cargo build --release -p edge-alerts, or --alerts-bin)"
        ),
    }
    println!(
        "  watch the cloud:    mosquitto_sub -p {} -t 'edge/#' -v",
        args.cloud_port
    );
    println!("Ctrl-C stops it.");

    let deadline = async {
        match args.duration_secs {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => std::future::pending().await,
        }
    };
    let mut report = tokio::time::interval(REPORT_INTERVAL);
    report.tick().await;
    tokio::pin!(shutdown, deadline);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut deadline => break,
            _ = report.tick() => println!("{}", tally.borrow().summary()),
        }
    }
    let _ = stop.send(true);
    let mut acked = 0;
    for device in devices {
        acked += device.await.unwrap_or(0);
    }
    for device in serial_devices {
        acked += u64::from(device.stop().link.acked);
    }
    gateway.await.context("gateway task failed")??;
    drop(dashboard);
    drop(qemu);
    let tally = tally.borrow().clone();
    println!("devices sent {acked} events; {}", tally.summary());
    anyhow::ensure!(tally.events > 0, "the cloud received no events");
    Ok(())
}

fn demo_rules() -> anyhow::Result<Vec<crate::rules::Rule>> {
    let source = format!(
        "[gateway]\nid = \"{GATEWAY_ID}\"\n[uplink]\nurl = \"mqtt://127.0.0.1:1\"\n\
         [devices]\nlisten = \"127.0.0.1:1\"\n{DEMO_RULES}"
    );
    let config = crate::config::parse(&source, "demo rules")
        .map_err(|error| anyhow::anyhow!("the demo's rules are invalid:\n{error}"))?;
    Ok(config.rules)
}

/// The LM3S6965 firmware running in QEMU, its UART on a pty; stopped when dropped.
struct QemuDevice {
    pty: PathBuf,
    process: std::process::Child,
}

impl QemuDevice {
    fn start(image: &std::path::Path) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        // Killed with the demo however the demo ends (`setpriv --pdeathsig`, from util-linux,
        // where it is there): QEMU has no standard input to notice the demo gone by.
        let mut command = if std::path::Path::new("/usr/bin/setpriv").is_file() {
            let mut command = std::process::Command::new("/usr/bin/setpriv");
            command.args(["--pdeathsig", "KILL", "--", "qemu-system-arm"]);
            command
        } else {
            std::process::Command::new("qemu-system-arm")
        };
        let mut process = command
            .args(["-M", "lm3s6965evb", "-cpu", "cortex-m3", "-display", "none"])
            .args(["-monitor", "none", "-serial", "pty"])
            .args(["-semihosting-config", "enable=on,target=native"])
            .args(["-device", "tmp105,bus=i2c,address=0x48,id=tmp0", "-kernel"])
            .arg(image)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("failed to start qemu-system-arm (apt-get install qemu-system-arm)")?;
        let stdout = process.stdout.take().context("QEMU's output")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        // "char device redirected to /dev/pts/N (label serial0)"
        let pty = lines.find_map(|line| {
            let line = line.ok()?;
            let rest = line.split("redirected to ").nth(1)?;
            Some(PathBuf::from(rest.split_whitespace().next()?))
        });
        std::thread::spawn(move || lines.for_each(drop));
        match pty {
            Some(pty) => Ok(Self { pty, process }),
            None => {
                let _ = process.kill();
                let _ = process.wait();
                anyhow::bail!("QEMU did not open a pty for {}", image.display())
            }
        }
    }
}

impl Drop for QemuDevice {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `edge-alerts`, running beside the demo; stopped when dropped, and by itself when the demo
/// dies (it stops when its standard input, held here, closes).
struct Dashboard {
    url: String,
    token: String,
    process: std::process::Child,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Starts `edge-alerts` on the demo's cloud broker, storing under `data_dir`; `None` when the
/// program is not there.
fn start_dashboard(
    args: &DemoArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<Option<Dashboard>> {
    let program = match &args.alerts_bin {
        Some(program) => program.clone(),
        None => {
            let beside = std::env::current_exe()
                .ok()
                .and_then(|exe| Some(exe.parent()?.join("edge-alerts")));
            match beside {
                Some(program) if program.is_file() => program,
                _ => return Ok(None),
            }
        }
    };
    let token = format!("{:032x}", rand::random::<u128>());
    let token_file = data_dir.join("dashboard-token");
    std::fs::write(&token_file, format!("{token}\n"))
        .with_context(|| format!("failed to write {}", token_file.display()))?;
    let log = data_dir.join("edge-alerts.log");
    let process = std::process::Command::new(&program)
        .arg("--port")
        .arg(args.cloud_port.to_string())
        .arg("--sqlite")
        .arg(data_dir.join("alerts.db"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", args.dashboard_port))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--client-id")
        .arg(format!("edge-alerts-demo-{}", std::process::id()))
        .arg("--exit-with-stdin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(&log)
                .with_context(|| format!("failed to create {}", log.display()))?,
        )
        .spawn()
        .with_context(|| format!("failed to start {}", program.display()))?;
    Ok(Some(Dashboard {
        url: format!("http://127.0.0.1:{}/", args.dashboard_port),
        token,
        process,
    }))
}

/// What the demo cloud has received.
#[derive(Debug, Clone, Default)]
struct Tally {
    events: u64,
    alerts: u64,
    per_device: BTreeMap<String, u64>,
    hottest: Option<(String, f64)>,
    status: String,
}

impl Tally {
    fn summary(&self) -> String {
        let hottest = match &self.hottest {
            Some((device, temp)) => format!(", hottest {device} at {temp:.1} °C"),
            None => String::new(),
        };
        format!(
            "cloud: {} events from {} devices{hottest}, {} alert transitions; gateway status {}",
            self.events,
            self.per_device.len(),
            self.alerts,
            if self.status.is_empty() {
                "unknown"
            } else {
                &self.status
            }
        )
    }
}

async fn watch_cloud(
    (mut link_tx, mut link_rx): (rumqttd::local::LinkTx, rumqttd::local::LinkRx),
    tally: watch::Sender<Tally>,
) {
    if link_tx.try_subscribe("edge/#").is_err() {
        return;
    }
    loop {
        match link_rx.next().await {
            Ok(Some(Notification::Forward(forward))) => {
                let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
                tally.send_modify(|tally| {
                    if topic.ends_with("/status") {
                        tally.status =
                            String::from_utf8_lossy(&forward.publish.payload).into_owned();
                        return;
                    }
                    if topic.ends_with("/alerts") {
                        tally.alerts += 1;
                        return;
                    }
                    let Ok(message) =
                        serde_json::from_slice::<serde_json::Value>(&forward.publish.payload)
                    else {
                        return;
                    };
                    tally.events += 1;
                    let device = message["device"].as_str().unwrap_or_default().to_owned();
                    let temp = message["readings"]["temp_c"].as_f64().unwrap_or(f64::MIN);
                    if tally
                        .hottest
                        .as_ref()
                        .is_none_or(|(_, hottest)| temp > *hottest)
                    {
                        tally.hottest = Some((device.clone(), temp));
                    }
                    *tally.per_device.entry(device).or_default() += 1;
                });
            }
            Ok(Some(Notification::Unschedule)) => {
                if link_rx.wake().await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

async fn wait_for_port(address: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the gateway's device endpoint did not start on {address}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_rules_parse() {
        let rules = super::demo_rules().unwrap_or_else(|error| panic!("{error}"));
        assert!(!rules.is_empty());
    }
}
