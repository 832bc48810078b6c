//! JSON the way Go's `encoding/json` writes and reads it, so our payloads are byte-identical to
//! the reference peers' and we accept everything they accept (PROTOCOL.md §5).
//!
//! Writing: struct fields in declaration order, `null` for absent values, `<`, `>`, `&`, U+2028
//! and U+2029 escaped as `\u003c` etc., `[]byte` as padded standard base64.
//!
//! Reading: object keys match field names exactly or, failing that, ASCII case-insensitively;
//! unknown keys are ignored; missing keys and `null` leave the field at its zero value; when a
//! key appears twice the later one wins.

use std::io;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// Serializes `value` exactly as Go's `json.Marshal` would.
pub(crate) fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value
        .serialize(&mut serializer)
        .expect("payload types have string keys and no floats, so serializing cannot fail");
    out
}

/// A serde_json formatter that adds Go's HTML-safe escapes.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut plain_from = 0;
        let mut at = 0;
        while at < bytes.len() {
            let (escape, len) = match bytes[at] {
                b'<' => ("\\u003c", 1),
                b'>' => ("\\u003e", 1),
                b'&' => ("\\u0026", 1),
                // U+2028 and U+2029 are E2 80 A8 and E2 80 A9 in UTF-8.
                0xe2 if bytes.get(at + 1) == Some(&0x80) && bytes.get(at + 2) == Some(&0xa8) => {
                    ("\\u2028", 3)
                }
                0xe2 if bytes.get(at + 1) == Some(&0x80) && bytes.get(at + 2) == Some(&0xa9) => {
                    ("\\u2029", 3)
                }
                _ => {
                    at += 1;
                    continue;
                }
            };
            writer.write_all(&bytes[plain_from..at])?;
            writer.write_all(escape.as_bytes())?;
            at += len;
            plain_from = at;
        }
        writer.write_all(&fragment.as_bytes()[plain_from..])
    }
}

/// The key/value pairs of a JSON object, in document order, values left unparsed.
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// Parses a JSON object the Go way. The common case, every key spelled exactly once and no
/// stray `null`, goes straight to serde (`strict` refuses anything else); otherwise the object is
/// rewritten first: each key becomes the field it sets (the exact name if there is one, else the
/// first name equal to it ignoring ASCII case), keys that set no field and `null` values are
/// dropped, and the last of repeated keys wins. `T` must refuse unknown fields.
pub(crate) fn parse_object<'de, D, T>(
    deserializer: D,
    fields: &[&'static str],
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let strict = serde_json::from_str::<T>;
    use serde::de::Error as _;
    let raw = <Box<RawValue>>::deserialize(deserializer)?;
    // serde would also fill a struct from an array; Go accepts only objects.
    if raw.get().starts_with('{')
        && let Ok(value) = strict(raw.get())
    {
        return Ok(value);
    }
    let Entries(entries) = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
    let mut kept: Vec<(&'static str, Box<RawValue>)> = Vec::with_capacity(fields.len());
    for (key, raw) in entries {
        let Some(field) = resolve_key(fields, &key) else {
            continue;
        };
        if raw.get() == "null" {
            continue;
        }
        kept.retain(|(seen, _)| *seen != field);
        kept.push((field, raw));
    }
    let mut text = String::from("{");
    for (i, (field, raw)) in kept.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push('"');
        text.push_str(field);
        text.push_str("\":");
        text.push_str(raw.get());
    }
    text.push('}');
    strict(&text).map_err(D::Error::custom)
}

fn resolve_key(fields: &[&'static str], key: &str) -> Option<&'static str> {
    fields
        .iter()
        .find(|field| **field == key)
        .or_else(|| fields.iter().find(|field| field.eq_ignore_ascii_case(key)))
        .copied()
}

/// Declares a payload struct whose JSON form follows Go: the `"Key" => field` pairs give the
/// wire spelling and order, field attributes (`#[serde(with = ..)]`) apply both ways, and
/// decoding is lenient as the module docs say. The struct must not derive serde traits itself.
macro_rules! go_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $key:literal => pub $field:ident : $ty:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(serde::Serialize)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(rename = $key)]
                pub $field: $ty,
            )*
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Canonical {
                    $(
                        $(#[$field_meta])*
                        #[serde(rename = $key, default)]
                        $field: $ty,
                    )*
                }
                let canonical: Canonical = $crate::payload::gojson::parse_object(
                    deserializer,
                    &[$($key),*],
                )?;
                Ok(Self { $($field: canonical.$field),* })
            }
        }

        impl $crate::payload::sealed::Sealed for $name {}
        impl $crate::payload::JsonPayload for $name {
            fn from_json(bytes: &[u8]) -> Result<Self, $crate::payload::PayloadError> {
                // Fast path for what the Go peers send: exact keys, no extras (see parse_object).
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Exact {
                    $(
                        $(#[$field_meta])*
                        #[serde(rename = $key, default)]
                        $field: $ty,
                    )*
                }
                if bytes.first() == Some(&b'{')
                    && let Ok(exact) = serde_json::from_slice::<Exact>(bytes)
                {
                    return Ok(Self { $($field: exact.$field),* });
                }
                serde_json::from_slice(bytes).map_err($crate::payload::PayloadError::Json)
            }
        }
    };
}
pub(crate) use go_struct;

/// Parses one value; `null` gives the zero value, as in Go.
pub(crate) fn field_value<T: DeserializeOwned + Default>(
    raw: &RawValue,
) -> Result<T, serde_json::Error> {
    if raw.get() == "null" {
        Ok(T::default())
    } else {
        serde_json::from_str(raw.get())
    }
}

/// Writes an untyped value with object keys sorted, as Go encodes its maps, whatever order
/// serde_json's `Map` keeps.
pub(crate) fn sorted_json<S: Serializer>(
    value: &Option<Value>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => Sorted(value).serialize(serializer),
        None => serializer.serialize_none(),
    }
}

struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(object) => {
                let mut entries: Vec<_> = object.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, &Sorted(value))?;
                }
                map.end()
            }
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Sorted(item))?;
                }
                seq.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// `[]byte` fields: padded standard base64 strings.
pub(crate) mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// A `[]byte` field that Go leaves `nil`: `null` when absent, base64 otherwise.
pub(crate) mod base64_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::base64_bytes::serialize(bytes, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::base64_bytes")] Vec<u8>);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(bytes)| bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let text = "a<b>&c\u{2028}\u{2029}\"\\\n\u{1}é";
        assert_eq!(
            String::from_utf8(to_vec(text)).unwrap(),
            r#""a\u003cb\u003e\u0026c\u2028\u2029\"\\\n\u0001é""#
        );
    }

    #[test]
    fn sorted_json_sorts_nested_keys() {
        let value: Value =
            serde_json::from_str(r#"{"b":{"z":1,"a":[{"y":2,"x":3}]},"a":null}"#).unwrap();
        let mut out = Vec::new();
        sorted_json(&Some(value), &mut serde_json::Serializer::new(&mut out)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":null,"b":{"a":[{"x":3,"y":2}],"z":1}}"#
        );
    }

    #[test]
    fn exact_key_wins_over_folded_key() {
        let fields = ["Cols", "cols"];
        assert_eq!(resolve_key(&fields, "cols"), Some("cols"));
        assert_eq!(resolve_key(&fields, "COLS"), Some("Cols"));
        assert_eq!(resolve_key(&fields, "rows"), None);
    }
}
