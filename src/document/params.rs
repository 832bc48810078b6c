//! Parameter definitions (`parameters` in a document), value checking, and `{{ name }}`
//! substitution.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{AllowedPattern, DocumentError, ParameterRule, Parameters};

/// A parameter's declared `type`. Session documents use `String` almost exclusively; the others
/// are the SSM document types whose values are still plain strings on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParameterType {
    /// One string.
    String,
    /// Any number of strings.
    StringList,
    /// `true` or `false`.
    Boolean,
    /// A whole number.
    Integer,
}

impl ParameterType {
    /// The name as written in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::String => "String",
            ParameterType::StringList => "StringList",
            ParameterType::Boolean => "Boolean",
            ParameterType::Integer => "Integer",
        }
    }

    /// Case-insensitive, because AWS's own YAML examples write `type: string`.
    fn parse(text: &str) -> Option<Self> {
        [
            ParameterType::String,
            ParameterType::StringList,
            ParameterType::Boolean,
            ParameterType::Integer,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(text))
    }
}

/// One entry of a document's `parameters`: the rules a StartSession value must satisfy.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParameterDefinition {
    /// `type`.
    pub param_type: ParameterType,
    /// `description`.
    pub description: Option<String>,
    /// `default`, as the list of strings StartSession would have passed; `None` makes the
    /// parameter required.
    pub default: Option<Vec<String>>,
    /// `allowedValues`.
    pub allowed_values: Option<Vec<String>>,
    /// `allowedPattern`, applied to every value.
    pub allowed_pattern: Option<AllowedPattern>,
    /// `minChars`, per value.
    pub min_chars: Option<usize>,
    /// `maxChars`, per value.
    pub max_chars: Option<usize>,
    /// `minItems`, number of values.
    pub min_items: Option<usize>,
    /// `maxItems`, number of values.
    pub max_items: Option<usize>,
}

/// The agent's rule for parameter names (`^[a-zA-Z0-9]+$`): other names are never substituted.
fn valid_parameter_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric())
}

impl ParameterDefinition {
    /// Reads one definition; `document`/`name` only label errors.
    pub(super) fn from_value(
        document: &str,
        name: &str,
        value: &Value,
    ) -> Result<Self, DocumentError> {
        let problem = |problem: String| DocumentError::ParameterDefinition {
            document: document.to_owned(),
            parameter: name.to_owned(),
            problem,
        };
        if !valid_parameter_name(name) {
            return Err(problem(
                "parameter names may only use the letters a-z, A-Z and digits".into(),
            ));
        }
        let Value::Object(fields) = value else {
            return Err(problem(
                "the definition must be an object such as {\"type\": \"String\"}".into(),
            ));
        };
        let param_type = match fields.get("type") {
            Some(Value::String(text)) => ParameterType::parse(text).ok_or_else(|| {
                problem(format!(
                    "type {text:?} is not supported; use String, StringList, Boolean or Integer"
                ))
            })?,
            None => return Err(problem("type is missing; add \"type\": \"String\"".into())),
            Some(_) => return Err(problem("type must be a string such as \"String\"".into())),
        };
        let description = optional_string(fields, "description").map_err(problem)?;
        let allowed_values = match fields.get("allowedValues") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if !items.is_empty() => Some(
                items
                    .iter()
                    .map(scalar_text)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| problem("allowedValues must list strings".into()))?,
            ),
            Some(_) => {
                return Err(problem(
                    "allowedValues must be a non-empty list of strings".into(),
                ));
            }
        };
        let allowed_pattern = match optional_string(fields, "allowedPattern").map_err(problem)? {
            None => None,
            Some(pattern) => {
                Some(AllowedPattern::new(&pattern).map_err(|e| problem(e.to_string()))?)
            }
        };
        let limit = |key: &str| -> Result<Option<usize>, DocumentError> {
            match fields.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => scalar_text(value)
                    .and_then(|text| text.parse::<usize>().ok())
                    .map(Some)
                    .ok_or_else(|| problem(format!("{key} must be a non-negative whole number"))),
            }
        };
        let definition = ParameterDefinition {
            param_type,
            description,
            default: None,
            allowed_values,
            allowed_pattern,
            min_chars: limit("minChars")?,
            max_chars: limit("maxChars")?,
            min_items: limit("minItems")?,
            max_items: limit("maxItems")?,
        };
        let default = match fields.get("default") {
            None | Some(Value::Null) => None,
            Some(value) => Some(definition.default_values(value).ok_or_else(|| {
                problem(format!(
                    "default must be {} for type {}",
                    if param_type == ParameterType::StringList {
                        "a list of strings"
                    } else {
                        "a string"
                    },
                    param_type.as_str()
                ))
            })?),
        };
        if let Some(values) = &default {
            // AWS refuses such documents at creation; so do we, rather than at first use.
            definition
                .check(name, values)
                .map_err(|e| problem(format!("the default is invalid: {e}")))?;
        }
        Ok(ParameterDefinition {
            default,
            ..definition
        })
    }

    fn default_values(&self, value: &Value) -> Option<Vec<String>> {
        match (self.param_type, value) {
            (ParameterType::StringList, Value::Array(items)) => {
                items.iter().map(scalar_text).collect()
            }
            (ParameterType::StringList, _) | (_, Value::Array(_) | Value::Object(_)) => None,
            (_, scalar) => scalar_text(scalar).map(|text| vec![text]),
        }
    }

    /// Checks `values` against every rule; the error names the first broken one.
    pub(super) fn check(&self, name: &str, values: &[String]) -> Result<(), DocumentError> {
        let broken = |value: &str, rule: ParameterRule| DocumentError::ParameterValue {
            parameter: name.to_owned(),
            value: value.to_owned(),
            rule,
        };
        let count = format!("{} values", values.len());
        if self.param_type == ParameterType::StringList {
            if let Some(min) = self.min_items.filter(|&min| values.len() < min) {
                return Err(broken(&count, ParameterRule::MinItems(min)));
            }
            if let Some(max) = self.max_items.filter(|&max| values.len() > max) {
                return Err(broken(&count, ParameterRule::MaxItems(max)));
            }
        } else if values.len() != 1 {
            return Err(broken(&count, ParameterRule::SingleValue));
        }
        for value in values {
            match self.param_type {
                ParameterType::Boolean if value != "true" && value != "false" => {
                    return Err(broken(value, ParameterRule::Boolean));
                }
                ParameterType::Integer if value.parse::<i64>().is_err() => {
                    return Err(broken(value, ParameterRule::Integer));
                }
                _ => {}
            }
            let chars = value.chars().count();
            if let Some(min) = self.min_chars.filter(|&min| chars < min) {
                return Err(broken(value, ParameterRule::MinChars(min)));
            }
            if let Some(max) = self.max_chars.filter(|&max| chars > max) {
                return Err(broken(value, ParameterRule::MaxChars(max)));
            }
            if let Some(allowed) = &self.allowed_values
                && !allowed.contains(value)
            {
                return Err(broken(value, ParameterRule::AllowedValues(allowed.clone())));
            }
            if let Some(pattern) = &self.allowed_pattern
                && !pattern.is_match(value)
            {
                return Err(broken(
                    value,
                    ParameterRule::AllowedPattern(pattern.as_str().to_owned()),
                ));
            }
        }
        Ok(())
    }

    /// The value as the agent message's `Parameters` carries it: a string, or a list for
    /// `StringList` (what a `{{ name }}` placeholder turns into on the Go agent).
    pub(super) fn to_json(&self, values: &[String]) -> Value {
        match (self.param_type, values) {
            (ParameterType::StringList, _) => Value::from(values.to_vec()),
            (_, [value]) => Value::from(value.as_str()),
            // Unreachable after `check`; keep the values rather than invent one.
            (_, _) => Value::from(values.to_vec()),
        }
    }
}

/// `Some(text)` for strings, numbers and booleans, which the agent accepts interchangeably.
pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn optional_string(fields: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// Go's `\s`, which the agent allows around a placeholder's name.
fn is_go_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0C' | '\r' | ' ')
}

/// Replaces `{{ name }}` / `{{name}}` in every string inside `value` by the parameter's value,
/// in one pass: text that a value brings in is never substituted again, so a value cannot
/// pull in another parameter. A string that is exactly one `StringList` placeholder becomes a
/// JSON list (as on the Go agent); inside a longer string the list is written as JSON text.
/// Placeholders naming no parameter (such as `{{ssm:…}}`) are left as they are.
pub(super) fn substitute(value: &Value, values: &BTreeMap<String, Value>) -> Value {
    match value {
        Value::String(text) => substitute_str(text, values),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, values)).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), substitute(v, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_str(text: &str, values: &BTreeMap<String, Value>) -> Value {
    if let Some(inner) = text.strip_prefix("{{").and_then(|t| t.strip_suffix("}}"))
        && let Some(value) = values.get(inner.trim_matches(is_go_space))
    {
        return value.clone();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let replacement = after.find("}}").and_then(|close| {
            let value = values.get(after[..close].trim_matches(is_go_space))?;
            Some((value, close))
        });
        match replacement {
            Some((value, close)) => {
                out.push_str(&rest[..open]);
                match value {
                    Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                }
                rest = &after[close + 2..];
            }
            None => {
                // Step one brace, so `{{{ name }}}` still finds the placeholder inside.
                out.push_str(&rest[..open + 1]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    Value::String(out)
}

/// Resolves `given` against `definitions`: unknown names refused, defaults filled in, every
/// value checked.
pub(super) fn resolve_values(
    definitions: &BTreeMap<String, ParameterDefinition>,
    given: &Parameters,
) -> Result<Parameters, DocumentError> {
    if let Some(unknown) = given.keys().find(|name| !definitions.contains_key(*name)) {
        return Err(DocumentError::UnknownParameter {
            parameter: unknown.clone(),
            accepted: definitions.keys().cloned().collect(),
        });
    }
    definitions
        .iter()
        .map(|(name, definition)| {
            let values = given
                .get(name)
                .or(definition.default.as_ref())
                .ok_or_else(|| DocumentError::MissingParameter {
                    parameter: name.clone(),
                })?;
            definition.check(name, values)?;
            Ok((name.clone(), values.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn substitution_is_single_pass_and_spacing_insensitive() {
        let map = values(&[("a", json!("{{ b }}")), ("b", json!("B"))]);
        assert_eq!(
            substitute_str("x {{a}} {{ b }}", &map),
            json!("x {{ b }} B")
        );
        assert_eq!(substitute_str("{{\ta\n}}", &map), json!("{{ b }}"));
        assert_eq!(substitute_str("{{{ b }}}", &map), json!("{B}"));
        assert_eq!(
            substitute_str("{{ ssm:x }} {{ b", &map),
            json!("{{ ssm:x }} {{ b")
        );
    }

    #[test]
    fn string_list_placeholders_become_lists() {
        let map = values(&[("l", json!(["1", "2"]))]);
        assert_eq!(substitute_str("{{ l }}", &map), json!(["1", "2"]));
        assert_eq!(substitute_str("n={{ l }}", &map), json!("n=[\"1\",\"2\"]"));
    }
}
