//! Latency histograms: how they are made, and how they travel in JSON.
//!
//! A histogram is serialized in HdrHistogram's standard V2 format with deflate compression and
//! encoded in base64 (the text form HdrHistogram's Java and C tools print, starting
//! `HISTFAAA`), so that `ringpoll load --json` outputs and `ringpoll compare` results can be
//! merged as histograms: percentiles of a merged run come from the merged counts, never from
//! averaging percentiles.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// Highest latency tracked (µs); slower ones are recorded as this.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// A latency histogram in µs, 1 µs .. 60 s, 3 significant figures.
#[must_use]
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Cheaper histogram for the per-second timeline (2 significant figures).
#[must_use]
pub fn timeline_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("constant histogram bounds are valid")
}

/// V2 + deflate, base64 (standard alphabet, padded).
#[must_use]
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serializing into a Vec cannot fail for a histogram this crate built.
    match V2DeflateSerializer::new().serialize(h, &mut bytes) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Err(_) => String::new(),
    }
}

/// The inverse of [`encode`]; the result can be added to a [`latency_histogram`].
pub fn decode(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("latency histogram is not valid base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("latency histogram cannot be decoded: {e:?}"))
}

/// Add `from` to `into`; values beyond `into`'s range are clamped to its highest trackable
/// value rather than lost.
pub fn merge_into(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_merges() {
        let mut a = latency_histogram();
        for v in [10, 20, 30, 1_000, 59_000_000] {
            a.record(v).unwrap();
        }
        let text = encode(&a);
        assert!(text.starts_with("HISTFAAA"), "{text}");
        let back = decode(&text).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.value_at_quantile(0.5), a.value_at_quantile(0.5));
        assert_eq!(back.max(), a.max());
        let mut m = latency_histogram();
        merge_into(&mut m, &back);
        merge_into(&mut m, &back);
        assert_eq!(m.len(), 10);
        assert!(decode("not base64!").is_err());
        assert!(decode("aGVsbG8=").is_err());
    }
}
