//! Keeps design.md's two defaults tables true to the code.
//!
//! design.md says it "explains every default and is kept true as the code changes". These tests
//! read its "Runtime defaults (`RuntimeConfig::lan` / `wan`)" table (end of section 9) and its
//! "10. Defaults" table, parse every LAN and WAN cell of the rows whose first cell names fields
//! ("`gossip_interval`", "`udp_recv_buffer` / `udp_send_buffer`") and compare each value with
//! what the presets hold: `Config::lan()` (also `Config::default()`), `Config::wan()`,
//! `RuntimeConfig::lan` and `RuntimeConfig::wan`. They fail when
//!
//! - a cell's value differs from the code's, or cannot be parsed;
//! - a row names a field the config does not have;
//! - a public config field has no row and is not in the commented list of fields left out;
//! - a row of prose (a constant, not a field) is not in the commented list of skipped rows;
//! - a rule the "why" column states about other fields (`left_grace` at least `leave_timeout`
//!   plus four intervals, ...) is not what `Config::validate` enforces.
//!
//! The parser is plain std: a table is the run of `|` lines after its heading, a cell is
//! "<number> [unit]" ("200 ms", "2 min", "1,400 B", "8 MiB", "1,024 events", "1 interval"), a
//! pair of them ("4 MiB / 1 MiB"), an address, "none", "same" (the LAN cell) or a list of
//! labelled numbers ("256 vnodes, 2^18 partitions, bounded load 1.08"), a boolean ("true",
//! "false"), a quoted string ("\"tidings\"") or an enum variant ("Normal"). A trailing
//! parenthesis is a remark ("1 (none)").

use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;

use tidings::{Config, ConfigError, Keyring, Limits};

const DESIGN: &str = include_str!("../design.md");

/// Fields of `Config` deliberately without a row in "10. Defaults", and why. None: every
/// field has a default the table states.
const CONFIG_NOT_IN_TABLE: &[&str] = &[];

/// Fields of `RuntimeConfig` deliberately without a row in the runtime table, and why.
#[cfg(feature = "tokio")]
const RUNTIME_NOT_IN_TABLE: &[&str] = &[
    // Required: no default (each node's own name).
    "name",
    // Deployment-specific, with no value a row could state: the address peers reach this node
    // at (unset: the bound one, when that is a specific address), the seed peers and the DNS
    // name that lists them (unset: none, a cluster of one until someone joins).
    "advertise",
    "seeds",
    "dns",
    // The protocol `Config`: the "10. Defaults" table.
    "protocol",
];

/// Rows whose first cell is prose about a constant rather than a config field, by the first
/// name in backticks in that cell. None of these constants is public, so no test outside the
/// crate can read them; the unit tests next to them pin them instead.
const SKIPPED_ROWS: &[&str] = &[
    // `runtime::udp::SEND_WAIT` is `pub(crate)`.
    "udp::SEND_WAIT",
    // `MAX_OWN_ADDRS` and `OWN_ADDR_FORGET` are private to `node`.
    "MAX_OWN_ADDRS",
    // `AMPLIFICATION_FACTOR` is private to `node`.
    "AMPLIFICATION_FACTOR",
];

/// The "10. Defaults" rows match `Config::lan()`, `Config::default()` and `Config::wan()`.
#[test]
fn protocol_defaults_table_matches_the_presets() {
    let rows = table("## 10. Defaults", "| field | default (LAN) | WAN | why |");
    let lan = Config::lan();
    assert_eq!(
        Config::default(),
        lan,
        "the table's LAN column is also the default"
    );
    let wan = Config::wan();
    let presets = [
        Preset::new("LAN", lan.gossip_interval, |f| protocol_value(&lan, f)),
        Preset::new("WAN", wan.gossip_interval, |f| protocol_value(&wan, f)),
    ];
    check_table(&rows, &debug_fields(&lan), CONFIG_NOT_IN_TABLE, &presets);
}

/// The runtime table's rows match `RuntimeConfig::lan` and `RuntimeConfig::wan`.
#[cfg(feature = "tokio")]
#[test]
fn runtime_defaults_table_matches_the_presets() {
    use tidings::runtime::RuntimeConfig;

    let rows = table(
        "Runtime defaults (`RuntimeConfig::lan` / `wan`):",
        "| field | LAN | WAN | why |",
    );
    let lan = RuntimeConfig::lan("n");
    let wan = RuntimeConfig::wan("n");
    assert_eq!(lan.protocol, Config::lan());
    assert_eq!(wan.protocol, Config::wan());
    let presets = [
        Preset::new("LAN", lan.protocol.gossip_interval, |f| {
            runtime_value(&lan, f)
        }),
        Preset::new("WAN", wan.protocol.gossip_interval, |f| {
            runtime_value(&wan, f)
        }),
    ];
    check_table(&rows, &debug_fields(&lan), RUNTIME_NOT_IN_TABLE, &presets);
}

/// What the "why" column of "10. Defaults" says about other fields and about validation is
/// what `Config::validate` enforces, at both presets. Each check first finds its phrase in the
/// row, so rewording the row fails here until the check is revisited.
#[test]
fn why_column_rules_are_what_validation_enforces() {
    let rows = table("## 10. Defaults", "| field | default (LAN) | WAN | why |");
    let why = |field: &str, phrase: &str| {
        let row = rows
            .iter()
            .find(|r| r.field == format!("`{field}`"))
            .unwrap_or_else(|| panic!("no row for `{field}`"));
        assert!(
            row.why.contains(phrase),
            "the `{field}` row no longer says {phrase:?}: update this check"
        );
    };
    let ns = Duration::from_nanos(1);
    for preset in [Config::lan(), Config::wan()] {
        let with = |f: &dyn Fn(&mut Config)| {
            let mut c = preset.clone();
            f(&mut c);
            c.validate()
        };
        preset.validate().unwrap();

        why(
            "left_grace",
            "at least `leave_timeout` + 4 intervals, or a left peer expires",
        );
        let min = preset.leave_timeout + preset.gossip_interval * 4;
        with(&|c| c.left_grace = min).unwrap();
        assert!(matches!(
            with(&|c| c.left_grace = min - ns),
            Err(ConfigError::LeftGraceTooShort { .. })
        ));

        why("phi_threshold", "1 to 50 accepted");
        for phi in [1.0, 50.0] {
            with(&|c| c.phi_threshold = phi).unwrap();
        }
        for phi in [1.0 - 1e-9, 50.0 + 1e-9] {
            assert!(matches!(
                with(&|c| c.phi_threshold = phi),
                Err(ConfigError::PhiThreshold(_))
            ));
        }

        why(
            "detector_min_std",
            "set, from a quarter interval to `dead_grace`",
        );
        let (low, high) = (preset.gossip_interval / 4, preset.dead_grace);
        for std in [low, high] {
            with(&|c| c.detector_min_std = Some(std)).unwrap();
        }
        for std in [low - ns, high + ns] {
            assert!(matches!(
                with(&|c| c.detector_min_std = Some(std)),
                Err(ConfigError::DetectorMinStd { .. })
            ));
        }

        why("detector_prior_weight", "positive:");
        assert_eq!(
            with(&|c| c.detector_prior_weight = 0),
            Err(ConfigError::Zero("detector_prior_weight"))
        );
        why("forget_after", "positive:");
        assert_eq!(
            with(&|c| c.forget_after = Duration::ZERO),
            Err(ConfigError::Zero("forget_after"))
        );
        why("tombstone_grace", "positive:");
        assert_eq!(
            with(&|c| c.tombstone_grace = Duration::ZERO),
            Err(ConfigError::Zero("tombstone_grace"))
        );
        why("leave_timeout", "positive:");
        assert_eq!(
            with(&|c| c.leave_timeout = Duration::ZERO),
            Err(ConfigError::Zero("leave_timeout"))
        );
        why("leave_confirmations", "positive, likewise");
        assert_eq!(
            with(&|c| c.leave_confirmations = 0),
            Err(ConfigError::Zero("leave_confirmations"))
        );

        why("ring_settle", "zero means no settle");
        with(&|c| c.ring_settle = Duration::ZERO).unwrap();

        why(
            "keyring",
            "with one, `send_plaintext` needs `accept_plaintext`",
        );
        let keyed = |c: &mut Config| {
            c.keyring = Some(Keyring::new([7; 32]));
            c.send_plaintext = true;
        };
        assert_eq!(with(&keyed), Err(ConfigError::PlaintextSentNotAccepted));
        with(&|c| {
            keyed(c);
            c.accept_plaintext = true;
        })
        .unwrap();

        why(
            "max_frame_size",
            "at least one node's whole state at the limits (`Limits::frame_for_whole_state`, \
             validated",
        );
        let whole = preset.limits.frame_for_whole_state();
        with(&|c| c.max_frame_size = whole).unwrap();
        assert!(matches!(
            with(&|c| c.max_frame_size = whole - 1),
            Err(ConfigError::StateLargerThanFrame { .. })
        ));

        why(
            "limits",
            "validation refuses a `max_frame_size` below one node's whole state at the limits \
             (`Limits::frame_for_whole_state`, 5,996,148 bytes at the defaults",
        );
        assert_eq!(Limits::default().frame_for_whole_state(), 5_996_148);
        why(
            "limits",
            "validation refuses a largest key and value that, with 1 KiB of framing, would not \
             fit `max_frame_size`",
        );
        let entry = preset.limits.max_key_len + preset.limits.max_value_len + 1024;
        assert!(matches!(
            with(&|c| c.max_frame_size = entry - 1),
            Err(ConfigError::EntryLargerThanFrame { .. })
        ));
        // One byte more fits the entry (the whole state still does not: another error).
        assert!(!matches!(
            with(&|c| c.max_frame_size = entry),
            Err(ConfigError::EntryLargerThanFrame { .. })
        ));
    }
}

/// One row of a defaults table, cells trimmed.
struct Row<'a> {
    field: &'a str,
    lan: &'a str,
    wan: &'a str,
    why: &'a str,
}

/// The rows of the table that follows the line `heading`, whose header must be `header`.
fn table(heading: &str, header: &str) -> Vec<Row<'static>> {
    let mut lines = DESIGN.lines().skip_while(|l| l.trim() != heading);
    assert!(lines.next().is_some(), "design.md has no line {heading:?}");
    let mut lines = lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'));
    assert_eq!(lines.next(), Some(header), "the table after {heading:?}");
    assert_eq!(lines.next(), Some("|---|---|---|---|"));
    let rows: Vec<_> = lines
        .map(|line| {
            let inner = line.trim_end().trim_start_matches('|');
            let inner = inner.strip_suffix('|').unwrap_or(inner);
            let mut cells = inner.splitn(4, '|').map(str::trim);
            let mut next = || cells.next().unwrap_or_else(|| panic!("short row: {line}"));
            Row {
                field: next(),
                lan: next(),
                wan: next(),
                why: next(),
            }
        })
        .collect();
    assert!(!rows.is_empty(), "the table after {heading:?} has no rows");
    rows
}

/// Compares every field row with the presets, and the rows with the struct's fields (`fields`,
/// less `not_in_table`). Collects every problem before failing.
fn check_table(rows: &[Row<'_>], fields: &[String], not_in_table: &[&str], presets: &[Preset<'_>]) {
    let mut problems = Vec::new();
    let mut named = Vec::new();
    for row in rows {
        let Some(names) = field_names(row.field) else {
            if !first_code_span(row.field).is_some_and(|k| SKIPPED_ROWS.contains(&k)) {
                problems.push(format!(
                    "row {:?} names no field and is not in SKIPPED_ROWS",
                    row.field
                ));
            }
            continue;
        };
        for name in &names {
            if named.contains(name) {
                problems.push(format!("row `{name}`: a second row for it"));
            }
        }
        named.extend(names.iter().copied());
        if let Some(name) = names.iter().find(|n| !fields.iter().any(|f| f == *n)) {
            problems.push(format!("row `{name}`: the config has no such field"));
            continue;
        }
        for preset in presets {
            let cell = match (preset.column, row.wan) {
                ("WAN", "same") => row.lan,
                ("WAN", _) => row.wan,
                _ => row.lan,
            };
            let values = match parse_cell(cell, preset.interval) {
                Ok(v) if v.len() == 1 || v.len() == names.len() => v,
                Ok(v) => {
                    problems.push(format!(
                        "row {:?}, {}: {} values for {} fields",
                        row.field,
                        preset.column,
                        v.len(),
                        names.len()
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("row {:?}, {}: {e}", row.field, preset.column));
                    continue;
                }
            };
            for (i, name) in names.iter().enumerate() {
                let doc = &values[if values.len() == 1 { 0 } else { i }];
                match (preset.value)(name) {
                    None => problems.push(format!(
                        "row `{name}`: this test does not know the field; add it to \
                         protocol_value or runtime_value"
                    )),
                    Some(code) if code != *doc => problems.push(format!(
                        "row `{name}`, {}: design.md says {cell:?} ({doc:?}), the code has \
                         {code:?}",
                        preset.column
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    for field in fields {
        let listed = not_in_table.contains(&field.as_str());
        let has_row = named.contains(&field.as_str());
        if listed && has_row {
            problems.push(format!(
                "`{field}` has a row: take it off the not-in-table list"
            ));
        } else if !listed && !has_row {
            problems.push(format!(
                "`{field}` has no row: add one to design.md, or to the not-in-table list with why"
            ));
        }
    }
    for name in not_in_table {
        if !fields.iter().any(|f| f == name) {
            problems.push(format!("not-in-table lists `{name}`, which is no field"));
        }
    }
    assert!(problems.is_empty(), "design.md:\n{}", problems.join("\n"));
}

/// Every skipped row is still in design.md (the list goes stale otherwise).
#[test]
fn every_skipped_row_is_still_in_a_table() {
    let rows = table("## 10. Defaults", "| field | default (LAN) | WAN | why |")
        .into_iter()
        .chain(table(
            "Runtime defaults (`RuntimeConfig::lan` / `wan`):",
            "| field | LAN | WAN | why |",
        ));
    let keys: Vec<_> = rows.filter_map(|r| first_code_span(r.field)).collect();
    for key in SKIPPED_ROWS {
        assert!(
            keys.contains(key),
            "SKIPPED_ROWS names {key:?}, no row does"
        );
    }
}

/// A column of a table and how to read a field of its preset.
struct Preset<'a> {
    column: &'static str,
    /// The preset's gossip interval, the unit of "1 interval".
    interval: Duration,
    value: Box<Lookup<'a>>,
}

/// A preset's field, by name, as a table states it; `None` for a field the test does not know.
type Lookup<'a> = dyn Fn(&str) -> Option<Value> + 'a;

impl<'a> Preset<'a> {
    fn new(
        column: &'static str,
        interval: Duration,
        value: impl Fn(&str) -> Option<Value> + 'a,
    ) -> Self {
        Self {
            column,
            interval,
            value: Box::new(value),
        }
    }
}

/// A value as the tables state it.
#[derive(Debug, PartialEq)]
enum Value {
    Time(Duration),
    Bytes(u64),
    /// A count or a ratio.
    Number(f64),
    Addr(SocketAddr),
    /// "none": an `Option` that is `None`.
    Absent,
    /// An `Option` that is set (the tables have no way to state what to).
    Present,
    /// Labelled numbers: "256 vnodes, 2^18 partitions, bounded load 1.08".
    List(Vec<(String, Self)>),
    /// "true", "false".
    Bool(bool),
    /// A quoted string: "\"tidings\"".
    Text(String),
    /// An enum variant, by its `Debug` name: "Normal".
    Variant(String),
}

/// `Config`'s fields as the "10. Defaults" table states them.
fn protocol_value(c: &Config, field: &str) -> Option<Value> {
    use Value::{Bool, Number, Time};
    Some(match field {
        "cluster_id" => Value::Text(c.cluster_id.clone()),
        "gossip_interval" => Time(c.gossip_interval),
        "fanout" => count(c.fanout),
        "max_datagram_size" => bytes(c.max_datagram_size),
        "max_frame_size" => bytes(c.max_frame_size),
        "anti_entropy_interval" => Time(c.anti_entropy_interval),
        "phi_threshold" => Number(c.phi_threshold),
        "detector_window" => count(c.detector_window),
        // `None` means one gossip interval, which the table writes "1 interval".
        "detector_min_std" => Time(c.detector_min_std.unwrap_or(c.gossip_interval)),
        "detector_prior_weight" => Number(c.detector_prior_weight.into()),
        "detector_distribution" => Value::Variant(format!("{:?}", c.detector_distribution)),
        "dead_grace" => Time(c.dead_grace),
        "left_grace" => Time(c.left_grace),
        "forget_after" => Time(c.forget_after),
        "tombstone_grace" => Time(c.tombstone_grace),
        "leave_timeout" => Time(c.leave_timeout),
        "leave_confirmations" => count(c.leave_confirmations),
        "initially_ready" => Bool(c.initially_ready),
        "ring_ready_only" => Bool(c.ring_ready_only),
        "ring" => match &c.ring {
            None => Value::Absent,
            Some(r) => {
                let mut items = vec![
                    ("vnodes".to_string(), Number(r.vnodes.get().into())),
                    (
                        "partitions".to_string(),
                        Number(2f64.powi(r.partition_bits.into())),
                    ),
                ];
                if let Some(load) = r.bounded_load {
                    items.push(("bounded load".to_string(), Number(load)));
                }
                Value::List(items)
            }
        },
        "ring_min_members" => count(c.ring_min_members),
        "ring_settle" => Time(c.ring_settle),
        "keyring" => optional(&c.keyring),
        "accept_plaintext" => Bool(c.accept_plaintext),
        "send_plaintext" => Bool(c.send_plaintext),
        "limits" => {
            let l = &c.limits;
            Value::List(vec![
                ("key".to_string(), bytes(l.max_key_len)),
                ("value".to_string(), bytes(l.max_value_len)),
                ("keys".to_string(), count(l.max_keys_per_node)),
                ("per node".to_string(), bytes(l.max_state_bytes_per_node)),
                ("nodes".to_string(), count(l.max_nodes)),
            ])
        }
        _ => return None,
    })
}

/// `RuntimeConfig`'s fields as the runtime table states them.
#[cfg(feature = "tokio")]
fn runtime_value(c: &tidings::runtime::RuntimeConfig, field: &str) -> Option<Value> {
    use Value::Time;
    Some(match field {
        "bind" => Value::Addr(c.bind),
        "generation" => optional(&c.generation),
        "dns_refresh" => Time(c.dns_refresh),
        "dns_servers" => optional(&c.dns_servers),
        "udp_recv_buffer" => bytes(c.udp_recv_buffer),
        "udp_send_buffer" => bytes(c.udp_send_buffer),
        "tcp_connect_timeout" => Time(c.tcp_connect_timeout),
        "tcp_read_timeout" => Time(c.tcp_read_timeout),
        "tcp_write_timeout" => Time(c.tcp_write_timeout),
        "tcp_idle_timeout" => Time(c.tcp_idle_timeout),
        "max_connections" => count(c.max_connections),
        "max_connections_per_ip" => count(c.max_connections_per_ip),
        "subscriber_buffer" => count(c.subscriber_buffer),
        "rng_seed" => optional(&c.rng_seed),
        _ => return None,
    })
}

fn count(n: usize) -> Value {
    Value::Number(n as f64)
}

fn bytes(n: usize) -> Value {
    Value::Bytes(n as u64)
}

fn optional<T>(o: &Option<T>) -> Value {
    if o.is_some() {
        Value::Present
    } else {
        Value::Absent
    }
}

/// The top-level field names of a struct, from its derived pretty `Debug` (the one way an
/// integration test can list the fields of a `#[non_exhaustive]` struct): the lines indented
/// by exactly four spaces, up to the colon.
fn debug_fields(value: &impl Debug) -> Vec<String> {
    format!("{value:#?}")
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// "`a`" or "`a` / `b`": the field names; `None` for prose.
fn field_names(cell: &str) -> Option<Vec<&str>> {
    cell.split(" / ")
        .map(|part| {
            let name = part.strip_prefix('`')?.strip_suffix('`')?;
            let plain = name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            (plain && !name.is_empty()).then_some(name)
        })
        .collect()
}

/// The text between the first two backticks of `cell`.
fn first_code_span(cell: &str) -> Option<&str> {
    let (_, rest) = cell.split_once('`')?;
    Some(rest.split_once('`')?.0)
}

/// A LAN or WAN cell: one value, or one per field of a pair ("4 MiB / 1 MiB").
fn parse_cell(cell: &str, interval: Duration) -> Result<Vec<Value>, String> {
    // A trailing parenthesis is a remark: "1 (none)".
    let cell = cell.split(" (").next().unwrap_or(cell).trim();
    cell.split(" / ")
        .map(|v| parse_value(v, interval))
        .collect()
}

fn parse_value(text: &str, interval: Duration) -> Result<Value, String> {
    match text {
        "none" => return Ok(Value::Absent),
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if let Some(quoted) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return Ok(Value::Text(quoted.to_string()));
    }
    // An enum variant: one word in CamelCase, letters and digits only.
    if text.starts_with(|c: char| c.is_ascii_uppercase())
        && text.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Ok(Value::Variant(text.to_string()));
    }
    if let Ok(addr) = text.parse() {
        return Ok(Value::Addr(addr));
    }
    if text.contains(", ") {
        let items = text.split(", ").map(|item| labelled(item, interval));
        return items.collect::<Result<_, _>>().map(Value::List);
    }
    match labelled(text, interval)? {
        // A count may name what it counts.
        (label, value) if ["", "events", "samples"].contains(&label.as_str()) => Ok(value),
        (label, _) => Err(format!("{text:?}: unexpected words {label:?}")),
    }
}

/// "<number> [unit]" with words around it ("key 512 B", "4 MiB per node", "bounded load
/// 1.08", "1,024 events"): the words (the label) and the value. Units: ms, s, min; B, KiB,
/// MiB, GiB; interval(s), in gossip intervals.
fn labelled(text: &str, interval: Duration) -> Result<(String, Value), String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (at, n) = words
        .iter()
        .enumerate()
        .find_map(|(i, w)| number(w).map(|n| (i, n)))
        .ok_or_else(|| format!("{text:?}: no number"))?;
    let whole = || {
        (n >= 0.0 && n.fract() == 0.0)
            .then_some(n as u64)
            .ok_or_else(|| format!("{text:?}: not a whole number"))
    };
    let unit = words.get(at + 1).copied().unwrap_or("");
    let value = match unit {
        "ms" => Value::Time(Duration::from_millis(whole()?)),
        "s" => Value::Time(Duration::from_secs(whole()?)),
        "min" => Value::Time(Duration::from_secs(whole()? * 60)),
        "B" => Value::Bytes(whole()?),
        "KiB" => Value::Bytes(whole()? << 10),
        "MiB" => Value::Bytes(whole()? << 20),
        "GiB" => Value::Bytes(whole()? << 30),
        "interval" | "intervals" => {
            Value::Time(interval * u32::try_from(whole()?).map_err(|e| e.to_string())?)
        }
        _ => Value::Number(n),
    };
    let used = if matches!(value, Value::Number(_)) {
        1
    } else {
        2
    };
    let mut label = words[..at].to_vec();
    label.extend(&words[at + used..]);
    Ok((label.join(" "), value))
}

/// "1,400", "1.08", "2^18".
fn number(word: &str) -> Option<f64> {
    let word = word.replace(',', "");
    if let Some((base, exp)) = word.split_once('^') {
        return Some(base.parse::<f64>().ok()?.powi(exp.parse().ok()?));
    }
    word.parse().ok()
}
