//! Whole-file tests: the example, defaults, and each kind of problem at its exact place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const EXAMPLE: &str = include_str!("../../../config/gateway.toml");

/// The least a configuration needs: an id and an uplink. (Without device logins, devices are
/// served on loopback only: [`valid`] and [`problems`] add that.)
const MINIMAL: &str = r#"
[gateway]
id = "gw-1"

[uplink]
url = "mqtt://127.0.0.1"
"#;

/// `source`, with devices served on loopback unless it has a devices table of its own: without
/// device logins, listening beyond loopback is refused, and most tests are about other things.
/// The table goes last, so that every place in `source` stays where it is.
fn on_loopback(source: &str) -> String {
    if source.contains("[devices") || source.contains("[local_broker") {
        source.to_owned()
    } else {
        format!("{source}\n[devices]\nlisten = \"127.0.0.1:1883\"\n")
    }
}

/// `LINE:COL: message` for each problem in `source` (served on loopback, see [`on_loopback`]);
/// panics if it is valid.
fn problems(source: &str) -> Vec<String> {
    problems_as_written(&on_loopback(source))
}

/// `LINE:COL: message` for each problem in `source` exactly as written.
fn problems_as_written(source: &str) -> Vec<String> {
    match parse(source, "test.toml") {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(error) => {
            assert_eq!(error.file, "test.toml");
            error
                .problems
                .iter()
                .map(|problem| format!("{}:{}: {}", problem.line, problem.column, problem.message))
                .collect()
        }
    }
}

fn valid(source: &str) -> Config {
    match parse(&on_loopback(source), "test.toml") {
        Ok(config) => config,
        Err(error) => panic!("expected a valid config, got:\n{error}"),
    }
}

fn address(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

#[test]
fn the_example_parses_and_matches_the_defaults_it_documents() {
    let config = valid(EXAMPLE);
    let defaults = Config::new("greenhouse-pi", config.uplinks[0].url.clone());

    assert_eq!(config.gateway.id, "greenhouse-pi");
    assert_eq!(config.gateway.data_dir, defaults.gateway.data_dir);
    assert_eq!(
        config.gateway.worker_threads,
        defaults.gateway.worker_threads
    );
    assert_eq!(config.devices.listen, defaults.devices.listen);
    assert_eq!(config.devices.max_connections, 1000);
    assert_eq!(config.devices.users.len(), 2);
    assert_eq!(config.devices.users[0].name, "sensor-1");
    assert_eq!(config.devices.users[0].devices[0].as_str(), "sensor-1");
    assert_eq!(config.devices.users[1].devices[0].as_str(), "gh-*");
    assert!(config.warnings.is_empty());
    assert_eq!(
        config.devices.users[0].password_file,
        Path::new("/etc/edge-gateway/sensor-1.pass")
    );
    assert!(
        config.serial.is_empty(),
        "the example leaves serial ports commented out"
    );
    assert_eq!(
        config.uplinks[0].url.to_string(),
        "mqtts://broker.example.com:8883"
    );
    assert_eq!(
        config.uplinks[0].topic_prefix,
        defaults.uplinks[0].topic_prefix
    );
    assert_eq!(config.uplinks[0].client_id, defaults.uplinks[0].client_id);
    assert_eq!(config.uplinks[0].ca_file, None);
    assert_eq!(config.uplinks[0].username, None);
    assert_eq!(config.uplinks[0].keep_alive, defaults.uplinks[0].keep_alive);
    assert_eq!(
        config.uplinks[0].max_inflight,
        defaults.uplinks[0].max_inflight
    );
    assert_eq!(
        config.uplinks[0].reconnect_min,
        defaults.uplinks[0].reconnect_min
    );
    assert_eq!(
        config.uplinks[0].reconnect_max,
        defaults.uplinks[0].reconnect_max
    );
    assert_eq!(config.journal.max_size, defaults.journal.max_size);
    assert_eq!(config.journal.max_age, defaults.journal.max_age);
    assert_eq!(config.journal.when_full, WhenFull::DropOldest);
    assert_eq!(config.journal.synchronous, Synchronous::Full);
    assert_eq!(config.journal.commit_interval, Duration::ZERO);
    assert_eq!(config.admin.listen, defaults.admin.listen);
    assert_eq!(config.uplinks[0].batch, None, "batches are off by default");
    // The commented batch line states the defaults.
    let batched = valid(&EXAMPLE.replace("# batch = {", "batch = {"));
    assert_eq!(
        batched.uplinks[0].batch,
        Some(crate::config::Batch::default())
    );
}

#[test]
fn the_example_loads_from_disk() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml");
    let config = load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.gateway.id, "greenhouse-pi");
}

#[test]
fn only_gateway_id_and_uplink_url_are_required() {
    let config = valid(MINIMAL);
    assert_eq!(config.gateway.id, "gw-1");
    assert_eq!(config.gateway.data_dir, Path::new("/var/lib/edge-gateway"));
    assert_eq!(config.gateway.worker_threads, 1);
    assert_eq!(config.devices.listen, address("127.0.0.1:1883"));
    assert!(config.devices.users.is_empty());
    assert!(!config.devices.allow_anonymous);
    assert!(config.warnings.is_empty());
    assert_eq!(config.devices.max_connections, 1000);
    assert!(config.serial.is_empty());
    assert_eq!(
        config.uplinks[0].url,
        UplinkUrl {
            kind: crate::config::UplinkType::Mqtt,
            tls: false,
            host: "127.0.0.1".to_owned(),
            port: 1883,
            vhost: None,
        }
    );
    assert_eq!(config.uplinks[0].topic_prefix, "edge");
    assert_eq!(config.uplinks[0].client_id, "edge-gateway-gw-1");
    assert_eq!(config.uplinks[0].ca_file, None);
    assert_eq!(config.uplinks[0].client_cert_file, None);
    assert_eq!(config.uplinks[0].client_key_file, None);
    assert_eq!(config.uplinks[0].username, None);
    assert_eq!(config.uplinks[0].password_file, None);
    assert_eq!(config.uplinks[0].keep_alive, Duration::from_secs(30));
    assert_eq!(config.uplinks[0].max_inflight, 256);
    assert_eq!(config.uplinks[0].reconnect_min, Duration::from_millis(100));
    assert_eq!(config.uplinks[0].reconnect_max, Duration::from_secs(30));
    assert_eq!(config.journal.max_size, 512 * 1024 * 1024);
    assert_eq!(
        config.journal.max_age,
        Duration::from_secs(7 * 24 * 60 * 60)
    );
    assert_eq!(config.journal.when_full, WhenFull::DropOldest);
    assert_eq!(config.journal.synchronous, Synchronous::Full);
    assert_eq!(config.admin.listen, address("127.0.0.1:9100"));
    assert_eq!(
        config.journal_path(),
        Path::new("/var/lib/edge-gateway/journal.db")
    );
}

#[test]
fn every_value_can_be_set() {
    let config = valid(
        r#"
        [gateway]
        id = "a.b_c-1"
        data_dir = "/tmp/gw"
        worker_threads = 4
        [devices]
        listen = "[::]:2883"
        max_connections = 5
        [[devices.users]]
        name = "s1"
        password_file = "/s1"
        [[devices.users]]
        name = "s2"
        password_file = "/s2"
        [[serial]]
        port = "/dev/ttyACM0"
        baud = 9600
        [[serial]]
        port = "/dev/ttyACM1"
        [uplink]
        url = "mqtts://[::1]"
        topic_prefix = "site/a"
        client_id = "me"
        ca_file = "/ca.pem"
        client_cert_file = "/c.pem"
        client_key_file = "/c.key"
        username = "u"
        password_file = "/p"
        keep_alive = "1m"
        max_inflight = 65535
        reconnect_min = "1s"
        reconnect_max = "1s"
        [journal]
        max_size = "64KiB"
        max_age = "1h30m"
        when_full = "block"
        synchronous = "normal"
        commit_interval = "1s"
        [admin]
        listen = "0.0.0.0:8080"
        "#,
    );
    assert_eq!(config.journal_path(), Path::new("/tmp/gw/journal.db"));
    assert_eq!(config.gateway.worker_threads, 4);
    assert_eq!(config.devices.listen, address("[::]:2883"));
    assert_eq!(config.devices.max_connections, 5);
    let names: Vec<&str> = config
        .devices
        .users
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(names, ["s1", "s2"]);
    assert_eq!(config.serial[0].baud, 9600);
    assert_eq!(config.serial[1].baud, 115_200);
    assert_eq!(config.uplinks[0].url.to_string(), "mqtts://[::1]:8883");
    assert_eq!(config.uplinks[0].topic_prefix, "site/a");
    assert_eq!(config.uplinks[0].client_id, "me");
    assert_eq!(config.uplinks[0].ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(
        config.uplinks[0].client_cert_file,
        Some(PathBuf::from("/c.pem"))
    );
    assert_eq!(
        config.uplinks[0].client_key_file,
        Some(PathBuf::from("/c.key"))
    );
    assert_eq!(config.uplinks[0].username.as_deref(), Some("u"));
    assert_eq!(config.uplinks[0].password_file, Some(PathBuf::from("/p")));
    assert_eq!(config.uplinks[0].keep_alive, Duration::from_secs(60));
    assert_eq!(config.uplinks[0].max_inflight, u16::MAX);
    assert_eq!(config.uplinks[0].reconnect_min, Duration::from_secs(1));
    assert_eq!(config.uplinks[0].reconnect_max, Duration::from_secs(1));
    assert_eq!(config.journal.max_size, 65_536);
    assert_eq!(config.journal.max_age, Duration::from_secs(5_400));
    assert_eq!(config.journal.when_full, WhenFull::Block);
    assert_eq!(config.journal.synchronous, Synchronous::Normal);
    assert_eq!(config.journal.commit_interval, Duration::from_secs(1));
    assert_eq!(config.admin.listen, address("0.0.0.0:8080"));
}

#[test]
fn unknown_keys_are_all_reported_at_the_key() {
    let source = r#"[gateway]
id = "gw"
colour = "red"

[uplink]
url = "mqtt://x"

[journal]
max_sise = "1GiB"

[[serial]]
port = "/dev/a"
[[serial]]
port = "/dev/b"
  speed = 9600

[devices]
users = [{ name = "a", password_file = "/a", pasword = "x" }]

[[rule]]
name = "too hot"
reading = "temp_c"
above = 35
colour = "red"
"#;
    assert_eq!(
        problems(source),
        [
            "3:1: unknown key `gateway.colour`",
            "9:1: unknown key `journal.max_sise`",
            "15:3: unknown key `serial[1].speed`",
            "18:46: unknown key `devices.users[0].pasword`",
            "24:1: unknown key `rule[0].colour`",
        ]
    );
}

#[test]
fn missing_keys_point_at_their_section_or_the_start_of_the_file() {
    assert_eq!(
        problems("# nothing here\n"),
        [
            "1:1: missing key `gateway.id`",
            "1:1: missing key `uplink.url`"
        ]
    );
    let source = r#"[gateway]
data_dir = "/x"

[uplink]
topic_prefix = "t"

[[serial]]
baud = 9600

[devices]
users = [{ name = "a" }]
"#;
    assert_eq!(
        problems(source),
        [
            "1:1: missing key `gateway.id`",
            "4:1: missing key `uplink.url`",
            "7:1: missing key `serial[0].port`",
            "11:10: missing key `devices.users[0].password_file`",
        ]
    );
}

#[test]
fn a_syntax_error_is_reported_where_it_is() {
    assert_eq!(
        problems("[gateway]\nid = \"gw\"\nname \"x\"\n"),
        ["3:6: invalid toml: key with no value, expected `=`"]
    );
    assert_eq!(
        problems("[gateway]\nid = \"gw\"\nid = \"other\"\n"),
        ["3:1: invalid toml: duplicate key"]
    );
}

#[test]
fn a_wrong_type_names_the_key() {
    let source = r#"[gateway]
id = "gw"
[uplink]
url = "mqtt://x"
[[serial]]
port = "/dev/a"
baud = "fast"
"#;
    assert_eq!(
        problems(source),
        ["7:8: wrong type for `serial[0].baud`: expected an integer, found string \"fast\""]
    );
    assert_eq!(
        problems("gateway = \"gw\"\n"),
        ["1:11: wrong type for `gateway`: expected a table, found string \"gw\""]
    );
    assert_eq!(
        problems("[gateway]\nid = \"gw\"\n[uplink]\nurl = \"mqtt://x\"\nkeep_alive = 30\n"),
        ["5:14: wrong type for `uplink.keep_alive`: expected a string, found integer `30`"]
    );
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let source = r#"[gateway]
id = "green house"
data_dir = ""
worker_threads = 0

[devices]
listen = "localhost:1883"
max_connections = 0
users = [
    { name = "a", password_file = "/a" },
    { name = "a", password_file = "/b" },
]

[[serial]]
port = "/dev/ttyUSB0"
baud = -1
[[serial]]
port = "/dev/ttyUSB0"

[uplink]
url = "http://x"
topic_prefix = "edge/#/"
client_id = ""
keep_alive = "1s"
max_inflight = 70000
reconnect_min = "0s"
reconnect_max = "5 minutes"

[journal]
max_size = "1KiB"
max_age = "1w"
when_full = "drop"
synchronous = "off"
commit_interval = "10s"

[admin]
listen = "127.0.0.1"
"#;
    assert_eq!(
        problems(source),
        [
            "2:6: invalid value `green house` for `gateway.id`: expected 1 to 64 of A-Z a-z 0-9 . _ -",
            "3:12: invalid value `` for `gateway.data_dir`: must not be empty",
            "4:18: invalid value `0` for `gateway.worker_threads`: must be from 1 to 64",
            "7:10: invalid address `localhost:1883` for `devices.listen`: expected ip:port, e.g. 0.0.0.0:1883",
            "8:19: invalid value `0` for `devices.max_connections`: must be from 1 to 4294967295",
            "11:14: duplicate user `a` in `devices.users[1].name`: already in `devices.users[0]`",
            "16:8: invalid value `-1` for `serial[0].baud`: must be from 1 to 4294967295",
            "18:8: duplicate port `/dev/ttyUSB0` in `serial[1].port`: already in `serial[0]`",
            "21:7: invalid url `http://x` for `uplink.url`: scheme must be mqtt, mqtts, nats, tls, amqp or amqps",
            "22:16: invalid value `edge/#/` for `uplink.topic_prefix`: must not contain the wildcards + or #",
            "23:13: invalid value `` for `uplink.client_id`: must not be empty",
            "24:14: invalid value `1s` for `uplink.keep_alive`: must be from 5s to 65535s",
            "25:16: invalid value `70000` for `uplink.max_inflight`: must be from 1 to 65535",
            "26:17: invalid value `0s` for `uplink.reconnect_min`: must be above zero",
            "27:17: invalid duration `5 minutes` for `uplink.reconnect_max`: expected a number followed by ms, s, m, h or d",
            "30:12: invalid value `1KiB` for `journal.max_size`: must be at least 64KiB",
            "31:11: invalid duration `1w` for `journal.max_age`: expected a number followed by ms, s, m, h or d",
            "32:13: invalid value `drop` for `journal.when_full`: expected drop_oldest, drop_newest or block",
            "33:15: invalid value `off` for `journal.synchronous`: expected full or normal",
            "34:19: invalid value `10s` for `journal.commit_interval`: must be at most 5s: devices wait that long for their acknowledgements",
            "37:10: invalid address `127.0.0.1` for `admin.listen`: expected ip:port, e.g. 127.0.0.1:9100",
        ]
    );
}

#[test]
fn unknown_keys_and_bad_values_are_reported_together() {
    let source = "[gateway]\nid = \"gw\"\n[uplink]\nurl = \"mqtt://x\"\n[journal]\nmax_sise = \"1GiB\"\nmax_age = \"soon\"\n";
    assert_eq!(
        problems(source),
        [
            "6:1: unknown key `journal.max_sise`",
            "7:11: invalid duration `soon` for `journal.max_age`: expected a number followed by ms, s, m, h or d",
        ]
    );
}

#[test]
fn values_that_contradict_each_other_are_reported() {
    let source = r#"[gateway]
id = "gw"
[uplink]
url = "mqtt://x"
ca_file = "/ca.pem"
client_cert_file = "/c.pem"
password_file = "/p"
reconnect_min = "1m"
"#;
    assert_eq!(
        problems(source),
        [
            "5:11: `uplink.ca_file` needs an mqtts:// url",
            "6:20: `uplink.client_cert_file` needs an mqtts:// url",
            "6:20: `uplink.client_cert_file` needs `uplink.client_key_file`",
            "7:17: `uplink.password_file` needs `uplink.username`",
            "8:17: `uplink.reconnect_max` (30s) must be at least `uplink.reconnect_min` (60s)",
        ]
    );
    let source = "[gateway]\nid = \"gw\"\n[uplink]\nurl = \"mqtts://x\"\nclient_key_file = \"/k\"\nkeep_alive = \"5500ms\"\n";
    assert_eq!(
        problems(source),
        [
            "5:19: `uplink.client_key_file` needs `uplink.client_cert_file`",
            "6:14: invalid value `5500ms` for `uplink.keep_alive`: must be whole seconds",
        ]
    );
}

#[test]
fn gateway_id_length_is_bounded() {
    let id = "a".repeat(64);
    let source = format!("[gateway]\nid = \"{id}\"\n[uplink]\nurl = \"mqtt://x\"\n");
    assert_eq!(valid(&source).gateway.id, id);
    let source = format!("[gateway]\nid = \"{id}a\"\n[uplink]\nurl = \"mqtt://x\"\n");
    assert_eq!(problems(&source).len(), 1);
    assert_eq!(
        problems("[gateway]\nid = \"\"\n[uplink]\nurl = \"mqtt://x\"\n").len(),
        1
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let source = "[gateway]\nid = \"gw\" # été\n[uplink]\nurl = \"mqtt://x\"\n\"clé\" = 1\n";
    assert_eq!(problems(source), ["5:1: unknown key `uplink.\"clé\"`"]);
    let source = "[gateway]\nid = \"gw\"\n[uplink]\nurl = \"mqtt://x\"\n[journal]\nmax_age = \"été\" \nmax_size = \"é\"\n";
    let found = problems(source);
    assert!(
        found[0].starts_with("6:11: invalid duration `été`"),
        "{found:?}"
    );
    assert!(found[1].starts_with("7:12: invalid size `é`"), "{found:?}");
}

#[test]
fn display_prints_one_line_per_problem() {
    let error = parse(
        &on_loopback("[gateway]\nid = \"gw\"\nextra = 1\n"),
        "gw.toml",
    )
    .expect_err("invalid config");
    assert_eq!(
        error.to_string(),
        "gw.toml:1:1: missing key `uplink.url`\ngw.toml:3:1: unknown key `gateway.extra`"
    );
}

#[test]
fn an_unreadable_file_is_one_problem_about_the_file() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("absent.toml");
    let error = load(&path).expect_err("file does not exist");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: failed to read config file: No such file or directory (os error 2)",
            path.display()
        )
    );
    assert_eq!(error.problems.len(), 1);
    assert_eq!((error.problems[0].line, error.problems[0].column), (0, 0));
}

#[test]
fn a_config_built_in_code_has_the_same_defaults_as_an_empty_file() {
    let parsed = valid(MINIMAL);
    let mut built = Config::new("gw-1", parsed.uplinks[0].url.clone());
    // The one value MINIMAL sets beyond the required ones.
    built.devices.listen = address("127.0.0.1:1883");
    assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
}

#[test]
fn rules_of_every_kind_parse() {
    let config = valid(&format!(
        r#"{MINIMAL}
[[rule]]
name = "greenhouse too hot"
devices = "greenhouse-*"
reading = "temp_c"
above = 35
clear_below = 33.5
for = "30s"
severity = "critical"
cooldown = "5m"
labels = {{ zone = "north", team = "growers" }}

[[rule]]
name = "humidity out of band"
reading = "rh"
above = 80.0
below = 30.0
clear_above = 32.0
window = "5m"
aggregate = "avg"

[[rule]]
name = "sensor silent"
devices = "greenhouse-1"
silent_for = "10m"
"#
    ));
    let [hot, band, silent] = config.rules.as_slice() else {
        panic!("three rules: {:?}", config.rules);
    };
    assert_eq!(hot.name, "greenhouse too hot");
    assert!(hot.devices.matches("greenhouse-7") && !hot.devices.matches("barn-1"));
    assert_eq!(hot.hold, Duration::from_secs(30));
    assert_eq!(hot.cooldown, Duration::from_secs(300));
    assert_eq!(hot.severity, crate::rules::Severity::Critical);
    assert_eq!(hot.labels.get("zone").map(String::as_str), Some("north"));
    let crate::rules::Condition::Threshold {
        reading,
        window,
        bounds,
    } = &hot.condition
    else {
        panic!("{:?}", hot.condition);
    };
    assert_eq!((reading.as_str(), *window), ("temp_c", None));
    assert_eq!((bounds.above, bounds.clear_below), (Some(35.0), 33.5));
    let crate::rules::Condition::Threshold { window, bounds, .. } = &band.condition else {
        panic!("{:?}", band.condition);
    };
    assert_eq!(
        *window,
        Some(crate::rules::Window {
            over: Duration::from_secs(300),
            aggregate: crate::rules::Aggregate::Avg
        })
    );
    assert_eq!(
        (bounds.below, bounds.clear_above, bounds.clear_below),
        (Some(30.0), 32.0, 80.0)
    );
    assert_eq!(
        band.severity,
        crate::rules::Severity::Warning,
        "the default"
    );
    assert!(band.devices.matches("anything"), "every device by default");
    assert_eq!(
        silent.condition,
        crate::rules::Condition::Silent {
            reading: None,
            after: Duration::from_secs(600)
        }
    );
}

#[test]
fn bad_rules_are_config_errors_at_their_place() {
    let source = format!(
        r#"{MINIMAL}
[[rule]]
name = "a"
devices = "green/house"
reading = "temp_c"
above = 35
aggregate = "median"
window = "-5s"

[[rule]]
name = "a"
reading = "t"
above = 10
clear_below = 12

[[rule]]
name = "c"
silent_for = "0s"

[[rule]]
name = "d"
reading = "t"

[[rule]]
name = "e"
above = 1
below = 5
"#
    );
    assert_eq!(
        problems(&source),
        [
            "10:11: invalid value `green/house` for `rule[0].devices`: expected a device id or a glob of A-Z a-z 0-9 . _ - with * and ?",
            "13:13: invalid value `median` for `rule[0].aggregate`: expected avg, min, max, count or rate",
            "14:10: invalid duration `-5s` for `rule[0].window`: expected a number followed by ms, s, m, h or d",
            "17:8: invalid value `a` for `rule[1].name`: already the name of `rule[0]`; rule names must be unique",
            "20:15: invalid value `12` for `rule[1].clear_below`: must not be above `above` (10)",
            "24:14: invalid value `0s` for `rule[2].silent_for`: must be longer than zero",
            "26:1: `rule[3]` has no condition: give it `above`, `below` or `silent_for`",
            "30:1: missing key `rule[4].reading`",
            "33:9: invalid value `5` for `rule[4].below`: must be under `above` (1); together they fire outside [below, above]",
        ]
    );
}

#[test]
fn contradictory_outside_rules_and_misplaced_options_are_refused() {
    let source = format!(
        r#"{MINIMAL}
[[rule]]
name = "never clears"
reading = "t"
above = 30
clear_below = 9
below = 10

[[rule]]
name = "silent with for"
silent_for = "1m"
for = "10s"
"#
    );
    assert_eq!(
        problems(&source),
        [
            "12:15: `rule[0].clear_above` (10) must be under `rule[0].clear_below` (9): otherwise the alert never clears",
            "18:7: invalid value `10s` for `rule[1].for`: only for above/below rules",
        ]
    );
}

#[test]
fn several_uplinks_with_their_routing_and_protocol_settings() {
    let config = valid(
        r#"[gateway]
id = "gw"

[[uplink]]
name = "cloud"
url = "mqtts://broker.example.com"
ca_file = "/ca.pem"

[[uplink]]
url = "nats://bus:4222"
stream = "TELEMETRY"
subject_prefix = "site.a"
credentials_file = "/gw.creds"
lanes = ["alerts", "status"]
ack_timeout = "5s"

[[uplink]]
type = "amqp"
name = "rabbit"
url = "amqps://rabbit/site-a"
exchange = "greenhouses"
username = "gw"
password_file = "/rabbit.pass"
devices = "greenhouse-*"
"#,
    );
    let names: Vec<&str> = config
        .uplinks
        .iter()
        .map(|uplink| uplink.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["cloud", "nats", "rabbit"],
        "a name defaults to the type"
    );
    let [cloud, nats, rabbit] = &config.uplinks[..] else {
        panic!("three uplinks");
    };
    assert_eq!(cloud.kind, UplinkType::Mqtt);
    assert_eq!(cloud.ack_timeout, Duration::from_secs(30));
    assert_eq!(cloud.lanes, Lanes::default());
    assert_eq!(nats.kind, UplinkType::Nats);
    assert_eq!(
        (nats.stream.as_str(), nats.subject_prefix.as_str()),
        ("TELEMETRY", "site.a")
    );
    assert_eq!(nats.credentials_file, Some(PathBuf::from("/gw.creds")));
    assert_eq!(
        nats.lanes,
        Lanes {
            events: false,
            alerts: true,
            status: true
        }
    );
    assert_eq!(nats.ack_timeout, Duration::from_secs(5));
    assert_eq!(rabbit.kind, UplinkType::Amqp);
    assert!(rabbit.url.tls);
    assert_eq!(rabbit.url.vhost.as_deref(), Some("site-a"));
    assert_eq!(rabbit.exchange, "greenhouses");
    let route = rabbit.route();
    assert!(route.takes(crate::journal::Lane::Events, "greenhouse-3"));
    assert!(!route.takes(crate::journal::Lane::Events, "barn-1"));
    assert_eq!(config.destination_routes().len(), 3);
}

#[test]
fn uplink_tables_are_checked_each_at_its_place() {
    let source = r#"[gateway]
id = "gw"

[[uplink]]
url = "nats://bus"
topic_prefix = "edge"
lanes = ["events", "logs"]

[[uplink]]
name = "nats"
type = "amqp"
url = "nats://other"
ack_timeout = "0s"
devices = "bad/glob"

[[uplink]]
url = "amqp://rabbit"
username = "gw"
token_file = "/t"
stream = "X"
subject_prefix = "a..b"
"#;
    assert_eq!(
        problems(source),
        [
            "6:16: `uplink[0].topic_prefix` is a setting of mqtt uplinks, and this one is nats",
            "7:20: invalid value `logs` for `uplink[0].lanes`: expected events, alerts or status",
            "10:8: duplicate uplink name `nats` in `uplink[1]`: already in `uplink[0]`; give each uplink its own `name`",
            "11:8: `uplink[1].type` is `amqp` but its url's scheme `nats` is for nats",
            "13:15: invalid value `0s` for `uplink[1].ack_timeout`: must be above zero",
            "14:11: invalid value `bad/glob` for `uplink[1].devices`: expected a device id or a glob of A-Z a-z 0-9 . _ - * ?, 1 to 64 long",
            "19:14: `uplink[2].token_file` is a setting of nats uplinks, and this one is amqp",
            "19:14: `uplink[2]`: use one of username, token_file and credentials_file",
            "20:10: `uplink[2].stream` is a setting of nats uplinks, and this one is amqp",
            "21:18: `uplink[2].subject_prefix` is a setting of nats uplinks, and this one is amqp",
            "21:18: invalid value `a..b` for `uplink[2].subject_prefix`: expected tokens of A-Z a-z 0-9 _ - separated by dots",
        ]
    );
}

#[test]
fn an_empty_list_of_uplinks_is_missing_the_uplink() {
    assert_eq!(
        problems("uplink = []\n[gateway]\nid = \"gw\"\n"),
        ["1:10: missing key `uplink.url`"]
    );
}

#[test]
fn two_bad_urls_are_reported_for_their_urls_only() {
    let problems = problems(
        "[gateway]\nid = \"gw\"\n[[uplink]]\nurl = \"http://a\"\n[[uplink]]\nurl = \"http://b\"\n",
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .all(|problem| problem.contains("invalid url"))
    );
}

#[test]
fn devices_without_logins_beyond_loopback_must_be_allowed_explicitly() {
    let open = |devices: &str| {
        format!("[gateway]\nid = \"gw\"\n[uplink]\nurl = \"mqtt://127.0.0.1\"\n{devices}")
    };
    // Left out, the table listens on every interface: that is refused, pointing at the file.
    assert_eq!(
        problems_as_written(&open("")),
        [
            "1:1: `devices.listen` is 0.0.0.0:1883, beyond this machine, and no device logs in: add `devices.users` or `devices.tls.client_ca_file`, listen on 127.0.0.1, or set `devices.allow_anonymous = true` to let anyone on the network publish as any device"
        ]
    );
    let problem = problems(&open("[devices]\nlisten = \"192.168.1.5:1883\"\n"));
    assert_eq!(problem.len(), 1);
    assert!(
        problem[0].starts_with("6:10: `devices.listen` is 192.168.1.5:1883"),
        "{problem:?}"
    );
    let problem = problems(&open("[devices]\nmax_connections = 5\n"));
    assert!(
        problem[0].starts_with("5:1: `devices.listen` is 0.0.0.0:1883"),
        "{problem:?}"
    );
    // Said out loud, on loopback, or with logins: fine.
    let config = valid(&open("[devices]\nallow_anonymous = true\n"));
    assert!(config.devices.allow_anonymous && config.devices.anonymous());
    valid(&open("[devices]\nlisten = \"[::1]:1883\"\n"));
    let config = valid(&open(
        "[devices]\nusers = [{ name = \"sensor-1\", password_file = \"/p\" }]\n",
    ));
    assert!(!config.devices.anonymous());
    // Client certificates are logins too; TLS alone is not.
    let config = valid(&open(
        "[devices]\ntls = { cert_file = \"/c\", key_file = \"/k\", client_ca_file = \"/ca\" }\n",
    ));
    assert!(!config.devices.anonymous());
    assert_eq!(
        config.devices.tls,
        Some(crate::config::DeviceTls {
            cert_file: "/c".into(),
            key_file: "/k".into(),
            client_ca_file: Some("/ca".into()),
        })
    );
    let problem = problems(&open(
        "[devices]\ntls = { cert_file = \"/c\", key_file = \"/k\" }\n",
    ));
    assert!(
        problem[0].contains("`devices.listen` is 0.0.0.0:1883"),
        "{problem:?}"
    );
}

#[test]
fn device_tls_needs_its_certificate_and_key() {
    let problems = problems(
        "[gateway]\nid = \"gw\"\n[uplink]\nurl = \"mqtt://127.0.0.1\"\n[devices]\n\
         listen = \"127.0.0.1:8883\"\ntls = { client_ca_file = \"/ca\", cert = \"/c\" }\n",
    );
    assert_eq!(
        problems,
        [
            "7:7: missing key `devices.tls.cert_file`",
            "7:7: missing key `devices.tls.key_file`",
            "7:33: unknown key `devices.tls.cert`",
        ]
    );
}

#[test]
fn a_login_speaks_for_its_own_device_unless_it_names_others() {
    let config = valid(
        r#"
        [gateway]
        id = "gw"
        [uplink]
        url = "mqtt://127.0.0.1"
        [devices]
        users = [
            { name = "sensor-1", password_file = "/a" },
            { name = "bridge", password_file = "/b", devices = ["gh-*", "pump"] },
        ]
        "#,
    );
    let names = |index: usize| -> Vec<String> {
        config.devices.users[index]
            .devices
            .iter()
            .map(|pattern| pattern.as_str().to_owned())
            .collect()
    };
    assert_eq!(names(0), ["sensor-1"]);
    assert_eq!(names(1), ["gh-*", "pump"]);

    let source = r#"[gateway]
id = "gw"
[uplink]
url = "mqtt://127.0.0.1"
[devices]
users = [
    { name = "ops@site", password_file = "/a" },
    { name = "b", password_file = "/b", devices = [] },
    { name = "c", password_file = "/c", devices = ["ok", "no/slash"] },
]
"#;
    assert_eq!(
        problems(source),
        [
            "7:14: user `ops@site` in `devices.users[0].name` is not a device id, so it speaks for no device: list the devices it may speak for in `devices.users[0].devices`",
            "8:51: `devices.users[1].devices` must name at least one device id or glob",
            "9:58: invalid value `no/slash` for `devices.users[2].devices[1]`: expected a device id or a glob of A-Z a-z 0-9 . _ - * ?, 1 to 64 long",
        ]
    );
}

#[test]
fn the_first_release_name_of_the_devices_table_still_works_with_a_warning() {
    let source = "[gateway]\nid = \"gw\"\n[uplink]\nurl = \"mqtt://127.0.0.1\"\n[local_broker]\nlisten = \"127.0.0.1:2883\"\n";
    let config = valid(source);
    assert_eq!(config.devices.listen, address("127.0.0.1:2883"));
    assert_eq!(
        config.warnings,
        [
            "test.toml:5:1: warning: `[local_broker]` is deprecated: rename the table `[devices]` (same keys)"
        ]
    );
    let problem = problems(&format!("{source}[devices]\nlisten = \"127.0.0.1:2883\"\n"));
    assert_eq!(
        problem,
        ["5:1: `[local_broker]` and `[devices]` are the same table: keep `[devices]` only"]
    );
}

#[test]
fn a_kafka_uplink_lists_its_brokers_topics_and_login() {
    let config = valid(
        r#"[gateway]
id = "gw"

[[uplink]]
type = "kafka"
brokers = ["kafka-1:9093", "kafka-2", "[::1]:9094"]
tls = true
ca_file = "/ca.pem"
topic = "site-a.events"
alerts_topic = "site-a.alerts"
username = "site-a"
password_file = "/kafka.pass"
sasl_mechanism = "SCRAM-SHA-512"
max_message_bytes = 2000000

[[uplink]]
name = "plain"
type = "kafka"
brokers = ["127.0.0.1:9092"]
"#,
    );
    let [kafka, plain] = &config.uplinks[..] else {
        panic!("two uplinks");
    };
    assert_eq!(
        (kafka.name.as_str(), kafka.kind),
        ("kafka", UplinkType::Kafka)
    );
    let brokers: Vec<String> = kafka.brokers.iter().map(UplinkUrl::authority).collect();
    assert_eq!(brokers, ["kafka-1:9093", "kafka-2:9092", "[::1]:9094"]);
    assert!(kafka.url.tls && kafka.brokers.iter().all(|broker| broker.tls));
    assert_eq!(
        kafka.endpoint(),
        "kafka+tls://kafka-1:9093,kafka-2:9092,[::1]:9094"
    );
    assert_eq!(
        (
            kafka.topic.as_str(),
            kafka.alerts_topic.as_str(),
            kafka.status_topic.as_str()
        ),
        ("site-a.events", "site-a.alerts", "edge.status")
    );
    assert_eq!(
        kafka.sasl_mechanism,
        Some(crate::config::SaslMechanism::ScramSha512)
    );
    assert_eq!(kafka.max_message_bytes, 2_000_000);
    assert!(!plain.url.tls);
    assert_eq!(plain.endpoint(), "kafka://127.0.0.1:9092");
    assert_eq!(plain.max_message_bytes, 1_000_000);
    assert_eq!(plain.sasl_mechanism, None);
}

#[test]
fn kafka_settings_are_checked_each_at_its_place() {
    let source = r#"[gateway]
id = "gw"

[[uplink]]
type = "kafka"
url = "mqtt://broker"
brokers = ["kafka-1:x", "kafka://kafka-2"]
topic = "bad topic"
username = "site-a"
ca_file = "/ca.pem"
max_message_bytes = 10

[[uplink]]
type = "kafka"
sasl_mechanism = "GSSAPI"

[[uplink]]
url = "mqtt://broker"
brokers = ["kafka-1"]
tls = true
topic = "events"
"#;
    assert_eq!(
        problems(source),
        [
            "6:7: `uplink[0].url` is not a setting of kafka uplinks: list the bootstrap brokers in `uplink[0].brokers`, e.g. brokers = [\"kafka-1:9092\"]",
            "7:12: invalid broker `kafka-1:x` in `uplink[0].brokers`: invalid port `x`: expected 1 to 65535",
            "7:25: invalid broker `kafka://kafka-2` in `uplink[0].brokers`: expected host:port, without a scheme (set `tls = true` for TLS)",
            "8:9: invalid value `bad topic` for `uplink[0].topic`: expected a Kafka topic name: 1 to 249 of A-Z a-z 0-9 . _ -",
            "9:12: `uplink[0].username` needs `uplink[0].sasl_mechanism`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            "10:11: `uplink[0].ca_file` needs `uplink[0].tls = true`",
            "11:21: invalid value `10` for `uplink[0].max_message_bytes`: must be from 1000 to 100000000",
            "13:1: missing key `uplink[1].brokers`",
            "14:8: duplicate uplink name `kafka` in `uplink[1]`: already in `uplink[0]`; give each uplink its own `name`",
            "15:18: invalid value `GSSAPI` for `uplink[1].sasl_mechanism`: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            "15:18: `uplink[1].sasl_mechanism` needs `uplink[1].username` and `uplink[1].password_file`",
            "19:11: `uplink[2].brokers` is a setting of kafka uplinks, and this one is mqtt",
            "20:7: `uplink[2].tls` is a setting of kafka uplinks, and this one is mqtt: the url's scheme says whether TLS is used",
            "21:9: `uplink[2].topic` is a setting of kafka uplinks, and this one is mqtt",
        ]
    );
}

#[test]
fn an_eventbridge_uplink_names_its_bus_region_and_endpoint() {
    let config = valid(
        r#"[gateway]
id = "gw"

[[uplink]]
type = "eventbridge"
event_bus = "arn:aws:events:eu-west-1:123456789012:event-bus/edge"
region = "eu-west-1"
lanes = ["alerts"]

[[uplink]]
name = "local"
type = "eventbridge"
endpoint = "http://127.0.0.1:4566/"
"#,
    );
    let [aws, local] = &config.uplinks[..] else {
        panic!("two uplinks");
    };
    assert_eq!(aws.kind, UplinkType::EventBridge);
    assert_eq!(aws.name, "eventbridge");
    assert_eq!(
        aws.event_bus,
        "arn:aws:events:eu-west-1:123456789012:event-bus/edge"
    );
    assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(aws.endpoint, None);
    assert_eq!(local.event_bus, "default");
    assert_eq!(
        local.region, None,
        "the region comes from the standard chain"
    );
    assert_eq!(local.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
    assert_eq!(
        local.endpoint(),
        "eventbridge://http://127.0.0.1:4566/default"
    );
}

#[test]
fn eventbridge_settings_are_checked_each_at_its_place() {
    let source = r#"[gateway]
id = "gw"

[[uplink]]
type = "eventbridge"
url = "https://events.eu-west-1.amazonaws.com"
event_bus = "bad bus"
region = "EU_WEST"
endpoint = "ftp://x"
username = "me"

[[uplink]]
url = "mqtt://broker"
event_bus = "edge"
"#;
    assert_eq!(
        problems(source),
        [
            "6:7: `uplink[0].url` is not a setting of eventbridge uplinks: name the bus in `uplink[0].event_bus`, the region in `uplink[0].region`, and a private endpoint, if any, in `uplink[0].endpoint`",
            "7:13: invalid value `bad bus` for `uplink[0].event_bus`: expected a bus name (1 to 256 of A-Z a-z 0-9 . _ - /) or its ARN",
            "8:10: invalid value `EU_WEST` for `uplink[0].region`: expected an AWS region, e.g. eu-west-1",
            "9:12: invalid value `ftp://x` for `uplink[0].endpoint`: expected http://host[:port] or https://host[:port]",
            "10:12: `uplink[0].username` is not a setting of eventbridge uplinks: credentials come from the AWS standard chain (environment, profile, instance role)",
            "14:13: `uplink[1].event_bus` is a setting of eventbridge uplinks, and this one is mqtt",
        ]
    );
}

#[test]
fn batch_turns_on_with_any_of_its_keys_and_counts_in_the_window() {
    let config = valid(
        r#"[gateway]
id = "gw"

[[uplink]]
name = "plain"
url = "mqtt://broker"

[[uplink]]
name = "batched"
url = "mqtt://broker"
client_id = "second"
max_inflight = 8
batch = { max_events = 500 }

[[uplink]]
name = "tuned"
url = "mqtt://broker"
client_id = "third"
batch = { max_bytes = "128KiB", max_delay = "50ms" }
"#,
    );
    let [plain, batched, tuned] = &config.uplinks[..] else {
        panic!("three uplinks");
    };
    assert_eq!(plain.batch, None, "off by default");
    assert_eq!(plain.window(), 256);
    assert_eq!(
        batched.batch,
        Some(crate::config::Batch {
            max_events: 500,
            ..crate::config::Batch::default()
        })
    );
    assert_eq!(
        batched.window(),
        8 * 500,
        "publishes of up to 500 rows each"
    );
    let mut wide = batched.clone();
    wide.max_inflight = 256;
    assert_eq!(wide.window(), 4096, "the rows in flight are capped");
    wide.max_inflight = 5000;
    assert_eq!(wide.window(), 5000, "but never below max_inflight");
    assert_eq!(
        tuned.batch,
        Some(crate::config::Batch {
            max_events: 100,
            max_bytes: 128 * 1024,
            max_delay: Duration::from_millis(50),
        })
    );
}

#[test]
fn batch_is_refused_where_it_cannot_be_honoured_and_checked_key_by_key() {
    let source = r#"[gateway]
id = "gw"

[[uplink]]
url = "nats://bus"
batch = { max_events = 10 }

[[uplink]]
url = "mqtt://broker"
batch = { max_events = 0, max_bytes = "1MiB", max_delay = "2s", size = 3 }
"#;
    assert_eq!(
        problems(source),
        [
            "6:9: `uplink[0].batch` is not a setting of nats uplinks: only mqtt and kafka uplinks batch; each event is its own message here",
            "10:24: invalid value `0` for `uplink[1].batch.max_events`: must be from 1 to 10000",
            "10:39: invalid value `1MiB` for `uplink[1].batch.max_bytes`: must be from 1KiB to 240KiB",
            "10:59: invalid value `2s` for `uplink[1].batch.max_delay`: must be at most 1s",
            "10:65: unknown key `uplink[1].batch.size`",
        ]
    );
}
