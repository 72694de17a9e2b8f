//! proto3 canonical-JSON helpers shared by the RPC message types: lenient base64 for `bytes`,
//! integers that may arrive as strings, enums by name or number, and `null` meaning "default".
//!
//! Field-name leniency (camelCase and snake_case) is expressed on each message with
//! `#[serde(alias = ...)]`; this module holds the value-level rules.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

/// Encodes `bytes` the proto3 way: standard alphabet, padded.
pub fn encode_bytes(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes base64 in any of the standard/url-safe, padded/unpadded forms.
pub fn decode_bytes(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let trimmed = text.trim();
    let url_safe = trimmed.contains(['-', '_']);
    let padded = trimmed.ends_with('=');
    match (url_safe, padded) {
        (false, true) => STANDARD.decode(trimmed),
        (false, false) => STANDARD_NO_PAD.decode(trimmed),
        (true, true) => URL_SAFE.decode(trimmed),
        (true, false) => URL_SAFE_NO_PAD.decode(trimmed),
    }
}

/// `deserialize_with` for an optional `bytes` field (presence matters, e.g. a oneof member).
pub fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => decode_bytes(&s).map(Some).map_err(|e| D::Error::custom(format!("invalid base64: {e}"))),
    }
}

/// `deserialize_with` for any field where `null` means the default value.
pub fn nullable<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntRepr {
    Num(i64),
    Float(f64),
    Text(String),
}

fn int_from_repr<E: serde::de::Error>(repr: IntRepr) -> Result<i64, E> {
    match repr {
        IntRepr::Num(n) => Ok(n),
        IntRepr::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        IntRepr::Float(f) => Err(E::custom(format!("{f} is not an integer"))),
        IntRepr::Text(s) => {
            s.trim().parse::<i64>().map_err(|_| E::custom(format!("'{s}' is not an integer")))
        }
    }
}

/// `deserialize_with` for an optional uint32 given as a number or a numeric string.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<IntRepr>::deserialize(d)? {
        None => Ok(None),
        Some(repr) => {
            let n = int_from_repr::<D::Error>(repr)?;
            u32::try_from(n).map(Some).map_err(|_| D::Error::custom(format!("{n} out of range for uint32")))
        }
    }
}

/// `deserialize_with` for a uint32 (absent / null → 0).
pub fn u32_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(opt_u32(d)?.unwrap_or(0))
}

/// An enum value as sent on the wire: its name or its number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum EnumValue {
    Number(i64),
    Name(String),
}

impl Default for EnumValue {
    fn default() -> Self {
        EnumValue::Number(0)
    }
}

/// `skip_serializing_if` helper for proto3 default omission.
pub fn is_false(b: &bool) -> bool {
    !*b
}

/// `skip_serializing_if` helper for proto3 default omission.
pub fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// `skip_serializing_if` helper for proto3 default omission.
pub fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// `serialize_with` for int64: proto3 JSON emits them as strings.
pub fn int64_as_string<S: serde::Serializer>(n: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&n.to_string())
}

/// `skip_serializing_if` helper for proto3 default omission.
pub fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "opt_bytes")]
        data: Option<Vec<u8>>,
        #[serde(default, deserialize_with = "opt_u32")]
        pid: Option<u32>,
        #[serde(default, deserialize_with = "nullable")]
        args: Vec<String>,
        #[serde(default)]
        signal: EnumValue,
    }

    #[test]
    fn base64_variants_decode() {
        for form in ["aGk/Pz8+", "aGk_Pz8-", "aGk/Pz8+", "aGk"] {
            assert!(decode_bytes(form).is_ok(), "{form}");
        }
        assert_eq!(decode_bytes("aGk=").unwrap(), b"hi");
        assert_eq!(decode_bytes("aGk").unwrap(), b"hi");
        assert_eq!(decode_bytes("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(encode_bytes(b"hi"), "aGk=");
    }

    #[test]
    fn lenient_numbers_null_and_enums() {
        let p: Probe =
            serde_json::from_str(r#"{"data":"aGk","pid":"42","args":null,"signal":"SIGNAL_SIGKILL"}"#)
                .unwrap();
        assert_eq!(p.data.as_deref(), Some(&b"hi"[..]));
        assert_eq!(p.pid, Some(42));
        assert!(p.args.is_empty());
        assert_eq!(p.signal, EnumValue::Name("SIGNAL_SIGKILL".into()));
        let p: Probe = serde_json::from_str(r#"{"pid":7,"signal":9}"#).unwrap();
        assert_eq!(p.pid, Some(7));
        assert_eq!(p.signal, EnumValue::Number(9));
        assert!(serde_json::from_str::<Probe>(r#"{"pid":-1}"#).is_err());
    }
}
