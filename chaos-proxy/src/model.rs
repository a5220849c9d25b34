//! Wire types shared by the server and the client, in Toxiproxy 2.x JSON shape.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Direction of the bytes a toxic acts on, in Toxiproxy's terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client → server bytes (requests).
    Upstream,
    /// Server → client bytes (responses). Toxiproxy's default.
    #[default]
    Downstream,
}

impl Stream {
    /// The JSON spelling: `"upstream"` or `"downstream"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }

    fn parse(s: &str) -> Option<Stream> {
        match s {
            "upstream" => Some(Stream::Upstream),
            "downstream" => Some(Stream::Downstream),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a toxic does, with its attributes. Serialized as Toxiproxy's
/// `"type"` + `"attributes"` pair; every attribute defaults to 0 when absent,
/// as in Toxiproxy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "attributes", rename_all = "snake_case")]
pub enum ToxicKind {
    /// Delay every chunk by `latency` ms ± a uniform `jitter` ms, preserving order.
    Latency {
        /// Base delay, milliseconds.
        #[serde(default)]
        latency: u64,
        /// Half-width of the uniform jitter, milliseconds.
        #[serde(default)]
        jitter: u64,
    },
    /// Limit throughput to `rate` KB/s (1 KB = 1000 bytes, as Toxiproxy). A rate
    /// of 0 is refused (see [`ToxicError::InvalidAttribute`]).
    Bandwidth {
        /// KB per second, at least 1.
        #[serde(default)]
        rate: u64,
    },
    /// Delay the close (FIN) of the stream by `delay` ms after the source closed.
    SlowClose {
        /// Milliseconds.
        #[serde(default)]
        delay: u64,
    },
    /// Drop all data; close the connection after `timeout` ms (0 = never: blackhole).
    Timeout {
        /// Milliseconds.
        #[serde(default)]
        timeout: u64,
    },
    /// Reset the connection (RST on both sockets via `SO_LINGER` 0) after `timeout` ms.
    ResetPeer {
        /// Milliseconds (0 = immediately).
        #[serde(default)]
        timeout: u64,
    },
    /// Close the connection once `bytes` bytes have passed in this stream.
    LimitData {
        /// Byte budget.
        #[serde(default)]
        bytes: u64,
    },
    /// Slice every chunk into pieces of `average_size` ± `size_variation` bytes,
    /// `delay` microseconds apart.
    Slicer {
        /// Average piece size in bytes.
        #[serde(default)]
        average_size: u64,
        /// Half-width of the size variation in bytes.
        #[serde(default)]
        size_variation: u64,
        /// Pause between pieces, microseconds.
        #[serde(default)]
        delay: u64,
    },
    /// Pass everything through unchanged (Toxiproxy's `noop`; attributes `{}`).
    Noop {},
    /// HTTP/1.1 requests on the upstream stream (not a Toxiproxy type): `percent` of the
    /// requests whose method is `method` (any when empty) and whose path starts with
    /// `path_prefix` are answered by the proxy with `status` (`action` `abort`), held
    /// `delay` ms before they go on (`delay`), or have both sockets reset (`reset`). The share
    /// is exact, not drawn: of the first n matching requests, ⌊n · percent / 100⌋ are hit.
    /// Acts on connections opened while it is present.
    Http {
        /// `abort`, `delay` or `reset`.
        #[serde(default)]
        action: String,
        /// Share of the matching requests, above 0 and at most 100.
        #[serde(default)]
        percent: f64,
        /// The answer's status for `abort` (100-599).
        #[serde(default)]
        status: u16,
        /// Milliseconds for `delay`.
        #[serde(default)]
        delay: u64,
        /// Only requests with this method (empty: any).
        #[serde(default)]
        method: String,
        /// Only requests whose path starts with this (empty: any).
        #[serde(default)]
        path_prefix: String,
    },
}

impl ToxicKind {
    /// The Toxiproxy type name, e.g. `"latency"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::LimitData { .. } => "limit_data",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::Noop {} => "noop",
            ToxicKind::Http { .. } => "http",
        }
    }

    /// Builds a kind from a type name and an attributes object (missing keys are 0).
    pub fn from_parts(type_name: &str, attributes: &Value) -> Result<ToxicKind, ToxicError> {
        const TYPES: [&str; 9] = [
            "latency",
            "bandwidth",
            "slow_close",
            "timeout",
            "reset_peer",
            "limit_data",
            "slicer",
            "noop",
            "http",
        ];
        if !TYPES.contains(&type_name) {
            return Err(ToxicError::InvalidType(type_name.to_owned()));
        }
        let attributes = match attributes {
            Value::Null => Value::Object(Map::new()),
            other => other.clone(),
        };
        let mut tagged = Map::new();
        tagged.insert("type".into(), Value::String(type_name.into()));
        tagged.insert("attributes".into(), attributes);
        let kind: ToxicKind = serde_json::from_value(Value::Object(tagged))
            .map_err(|e| ToxicError::BadAttributes(e.to_string()))?;
        kind.validate()?;
        Ok(kind)
    }

    /// Refuses attribute values whose meaning would be a trap.
    fn validate(&self) -> Result<(), ToxicError> {
        if let ToxicKind::Bandwidth { rate: 0 } = self {
            // Toxiproxy 2.x never forwards a byte at rate 0 (it loops on empty
            // slices); "unlimited" would be the opposite. Neither is what a test
            // means, so it has to say which: remove the toxic, or use `timeout`.
            return Err(ToxicError::InvalidAttribute(
                "bandwidth rate must be at least 1 (KB/s); to stop all data use a timeout toxic, \
                 for no limit remove the toxic"
                    .into(),
            ));
        }
        if let ToxicKind::Http {
            action,
            percent,
            status,
            ..
        } = self
        {
            if !matches!(action.as_str(), "abort" | "delay" | "reset") {
                return Err(ToxicError::InvalidAttribute(format!(
                    "http action {action:?} is none of abort, delay, reset"
                )));
            }
            if !(*percent > 0.0 && *percent <= 100.0) {
                return Err(ToxicError::InvalidAttribute(format!(
                    "http percent {percent} is not above 0 and at most 100"
                )));
            }
            if action == "abort" && !(100..=599).contains(status) {
                return Err(ToxicError::InvalidAttribute(format!(
                    "http abort status {status} is not an HTTP status (100-599)"
                )));
            }
        }
        Ok(())
    }

    /// The attributes object, as in the JSON.
    pub fn attributes(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => m.remove("attributes").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }
}

/// A toxic as Toxiproxy's API shows it.
///
/// ```
/// use chaos_proxy::{Stream, Toxic, ToxicKind};
/// let t: Toxic = serde_json::from_str(
///     r#"{"name":"lat","type":"latency","stream":"downstream","toxicity":1.0,"attributes":{"latency":100,"jitter":0}}"#,
/// ).unwrap();
/// assert_eq!(t, Toxic::new("lat", Stream::Downstream, ToxicKind::Latency { latency: 100, jitter: 0 }));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "WireToxic", try_from = "WireToxic")]
pub struct Toxic {
    /// Unique per proxy. Defaults to `{type}_{stream}` when created without one.
    pub name: String,
    /// Which bytes it acts on.
    pub stream: Stream,
    /// Probability (0..=1) that the toxic applies to a given connection.
    pub toxicity: f32,
    /// Type and attributes.
    pub kind: ToxicKind,
}

impl Toxic {
    /// A toxic with toxicity 1.0.
    pub fn new(name: impl Into<String>, stream: Stream, kind: ToxicKind) -> Toxic {
        Toxic {
            name: name.into(),
            stream,
            toxicity: 1.0,
            kind,
        }
    }

    /// Sets the per-connection probability.
    pub fn with_toxicity(mut self, toxicity: f32) -> Toxic {
        self.toxicity = toxicity;
        self
    }

    /// `latency` toxic.
    pub fn latency(
        name: impl Into<String>,
        stream: Stream,
        latency_ms: u64,
        jitter_ms: u64,
    ) -> Toxic {
        Toxic::new(
            name,
            stream,
            ToxicKind::Latency {
                latency: latency_ms,
                jitter: jitter_ms,
            },
        )
    }

    /// `bandwidth` toxic, `rate` in KB/s (1000 bytes).
    pub fn bandwidth(name: impl Into<String>, stream: Stream, rate_kb_s: u64) -> Toxic {
        Toxic::new(name, stream, ToxicKind::Bandwidth { rate: rate_kb_s })
    }

    /// `timeout` toxic; 0 = blackhole forever.
    pub fn timeout(name: impl Into<String>, stream: Stream, timeout_ms: u64) -> Toxic {
        Toxic::new(
            name,
            stream,
            ToxicKind::Timeout {
                timeout: timeout_ms,
            },
        )
    }

    /// `reset_peer` toxic.
    pub fn reset_peer(name: impl Into<String>, stream: Stream, timeout_ms: u64) -> Toxic {
        Toxic::new(
            name,
            stream,
            ToxicKind::ResetPeer {
                timeout: timeout_ms,
            },
        )
    }

    /// `slow_close` toxic.
    pub fn slow_close(name: impl Into<String>, stream: Stream, delay_ms: u64) -> Toxic {
        Toxic::new(name, stream, ToxicKind::SlowClose { delay: delay_ms })
    }

    /// `limit_data` toxic.
    pub fn limit_data(name: impl Into<String>, stream: Stream, bytes: u64) -> Toxic {
        Toxic::new(name, stream, ToxicKind::LimitData { bytes })
    }
}

/// Why a toxic's JSON was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToxicError {
    /// Unknown `type`.
    InvalidType(String),
    /// `stream` is neither `upstream` nor `downstream`.
    InvalidStream(String),
    /// `toxicity` outside 0..=1.
    InvalidToxicity(String),
    /// Attributes do not fit the type.
    BadAttributes(String),
    /// An attribute value is refused (e.g. a bandwidth `rate` of 0); the message says why.
    InvalidAttribute(String),
}

impl fmt::Display for ToxicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToxicError::InvalidType(t) => write!(f, "invalid toxic type: {t}"),
            ToxicError::InvalidStream(s) => write!(
                f,
                "stream was invalid, can be either upstream or downstream: {s}"
            ),
            ToxicError::InvalidToxicity(t) => write!(f, "toxicity must be within 0..1: {t}"),
            ToxicError::BadAttributes(e) => write!(f, "bad request body: attributes: {e}"),
            ToxicError::InvalidAttribute(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ToxicError {}

/// The literal JSON form of a toxic; [`Toxic`] converts to and from it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WireToxic {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub type_name: String,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub toxicity: Option<f32>,
    #[serde(default)]
    pub attributes: Value,
}

impl From<Toxic> for WireToxic {
    fn from(t: Toxic) -> WireToxic {
        WireToxic {
            name: t.name,
            type_name: t.kind.type_name().to_owned(),
            stream: Some(t.stream.as_str().to_owned()),
            toxicity: Some(t.toxicity),
            attributes: t.kind.attributes(),
        }
    }
}

impl TryFrom<WireToxic> for Toxic {
    type Error = ToxicError;

    fn try_from(w: WireToxic) -> Result<Toxic, ToxicError> {
        let stream = match w.stream.as_deref() {
            None | Some("") => Stream::Downstream,
            Some(s) => Stream::parse(s).ok_or_else(|| ToxicError::InvalidStream(s.to_owned()))?,
        };
        let toxicity = w.toxicity.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&toxicity) {
            return Err(ToxicError::InvalidToxicity(toxicity.to_string()));
        }
        let kind = ToxicKind::from_parts(&w.type_name, &w.attributes)?;
        let name = if w.name.is_empty() {
            format!("{}_{}", kind.type_name(), stream)
        } else {
            w.name
        };
        Ok(Toxic {
            name,
            stream,
            toxicity,
            kind,
        })
    }
}

/// Per-proxy counters, shown as the extra `stats` field of a proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// Client connections accepted since the proxy was created.
    pub connections_total: u64,
    /// Client connections open now.
    pub connections_active: u64,
    /// Bytes delivered client → server.
    pub bytes_upstream: u64,
    /// Bytes delivered server → client.
    pub bytes_downstream: u64,
    /// Times a toxic acted: a chunk delayed, throttled, sliced or dropped, or a
    /// connection closed or reset by a toxic.
    pub toxics_applied: u64,
}

/// A proxy as Toxiproxy's API shows it, plus `stats` (absent from real Toxiproxy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proxy {
    /// Unique name.
    pub name: String,
    /// Listen address; once bound, the actual address (port 0 is resolved).
    pub listen: String,
    /// `host:port`, resolved at each connect (Docker DNS names work).
    pub upstream: String,
    /// Listening and forwarding.
    pub enabled: bool,
    /// Toxics in the order they were added.
    #[serde(default)]
    pub toxics: Vec<Toxic>,
    /// Counters (chaos-proxy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<ProxyStats>,
}

/// Body of `POST /proxies` (and an element of `POST /populate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProxy {
    /// Unique name.
    #[serde(default)]
    pub name: String,
    /// Listen address; empty means `0.0.0.0:0`.
    #[serde(default)]
    pub listen: String,
    /// `host:port` of the real service.
    #[serde(default)]
    pub upstream: String,
    /// Start listening right away (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl NewProxy {
    /// An enabled proxy.
    pub fn new(
        name: impl Into<String>,
        listen: impl Into<String>,
        upstream: impl Into<String>,
    ) -> NewProxy {
        NewProxy {
            name: name.into(),
            listen: listen.into(),
            upstream: upstream.into(),
            enabled: true,
        }
    }
}

/// Body of `POST /proxies/{name}`: only the fields present change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyUpdate {
    /// New listen address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// New upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Enable or disable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Toxiproxy's error body: `{"error": "...", "status": N}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Message.
    pub error: String,
    /// HTTP status.
    pub status: u16,
}
