//! Values of the configuration file as TOML spells them (`config::file`): durations, sizes,
//! counts, addresses, upstreams and on/off switches, each checked as it is read so that a bad
//! value is an error at its line.

use std::net::SocketAddr;
use std::time::Duration;

use ringpoll_proto::units;
use ringpoll_proto::upstream::Upstream;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::{parse_upstream, resolve};

/// A duration as a string (`"10s"`, `"250ms"`) or a number of seconds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u64),
            F(f64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => units::parse_duration(&s).map(Dur).map_err(de::Error::custom),
            Raw::N(n) => Ok(Dur(Duration::from_secs(n))),
            Raw::F(f) => units::parse_duration(&f.to_string()).map(Dur).map_err(de::Error::custom),
        }
    }
}

/// A byte size as a string (`"16KiB"`) or a number of bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => units::parse_size(&s).map(Size).map_err(de::Error::custom),
            Raw::N(n) => Ok(Size(n)),
        }
    }
}

/// A count that must be at least 1.
#[derive(Clone, Copy, Debug)]
pub(super) struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(de::Error::custom("must be at least 1")),
            n => Ok(Count(n)),
        }
    }
}

/// `HOST:PORT`, resolved.
#[derive(Clone, Copy, Debug)]
pub(super) struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        resolve(&String::deserialize(d)?).map(Addr).map_err(de::Error::custom)
    }
}

/// `HOST:PORT[@WEIGHT]`, or `{ addr = "HOST:PORT", weight = N }`.
#[derive(Clone, Copy, Debug)]
pub(super) struct UpstreamSpec(pub Upstream);

impl<'de> Deserialize<'de> for UpstreamSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            addr: Addr,
            #[serde(default = "one")]
            weight: u32,
        }
        fn one() -> u32 {
            1
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            T(Table),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => parse_upstream(&s).map(UpstreamSpec).map_err(de::Error::custom),
            Raw::T(t) => Ok(UpstreamSpec(Upstream { addr: t.addr.0, weight: t.weight })),
        }
    }
}

/// A technique switch: `true`/`false` or `"on"`/`"off"`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Switch(pub bool);

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::B(b) => Ok(Switch(b)),
            Raw::S(s) if s == "on" => Ok(Switch(true)),
            Raw::S(s) if s == "off" => Ok(Switch(false)),
            Raw::S(s) => Err(de::Error::custom(format!("'{s}': expected on, off, true or false"))),
        }
    }
}
