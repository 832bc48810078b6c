//! Why a document, a parameter map or an agent request was refused.

use std::fmt;
use std::path::PathBuf;

/// Why a session document could not be loaded, resolved or read back.
///
/// Every message names what was wrong and what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// The text is not JSON.
    #[error("document {document}: not valid JSON ({error}); fix the file's syntax")]
    Json {
        /// The document's name.
        document: String,
        /// What the JSON parser said.
        error: String,
    },
    /// A top-level field is missing or has the wrong type or value.
    #[error("document {document}: {problem}")]
    Shape {
        /// The document's name.
        document: String,
        /// What to fix.
        problem: String,
    },
    /// `sessionType` is not one of the four Session Manager types.
    #[error(
        "document {document}: sessionType {found:?} is not one of Standard_Stream, \
         InteractiveCommands, NonInteractiveCommands, Port"
    )]
    UnknownSessionType {
        /// The document's name.
        document: String,
        /// The value found.
        found: String,
    },
    /// A parameter definition under `parameters` is malformed.
    #[error("document {document}: parameter {parameter}: {problem}")]
    ParameterDefinition {
        /// The document's name.
        document: String,
        /// The parameter's name.
        parameter: String,
        /// What to fix.
        problem: String,
    },
    /// An `allowedPattern` uses syntax outside the supported subset (see
    /// [`AllowedPattern`](super::AllowedPattern)) or is malformed.
    #[error("allowedPattern {pattern:?}, at character {offset}: {problem}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Character (not byte) offset of the problem.
        offset: usize,
        /// What is not supported, and what to write instead.
        problem: String,
    },
    /// Not a valid document name.
    #[error(
        "{name:?} is not a valid document name: use 3 to 128 characters from a-z, A-Z, 0-9 \
         and _ - . : /"
    )]
    InvalidName {
        /// The refused name.
        name: String,
    },
    /// The name belongs to a built-in document or starts with a prefix AWS reserves.
    #[error(
        "document name {name:?} is reserved (a built-in AWS document, or a name starting with \
         AWS, Amazon or AMZN); choose another name"
    )]
    ReservedName {
        /// The refused name.
        name: String,
    },
    /// A custom document of that name is already loaded.
    #[error("a document named {name:?} is already loaded; remove one of the two")]
    Duplicate {
        /// The name loaded twice.
        name: String,
    },
    /// The request names a parameter the document does not define.
    #[error(
        "unknown parameter {parameter:?}; this document accepts: {}",
        list(accepted)
    )]
    UnknownParameter {
        /// The unknown name.
        parameter: String,
        /// The names the document defines.
        accepted: Vec<String>,
    },
    /// A parameter without a default was not given.
    #[error("parameter {parameter:?} is required (it has no default); pass a value for it")]
    MissingParameter {
        /// The missing parameter.
        parameter: String,
    },
    /// A value breaks one of its parameter's rules.
    #[error("parameter {parameter:?}: value {value:?} {rule}")]
    ParameterValue {
        /// The parameter.
        parameter: String,
        /// The offending value (or, for count rules, the number of values).
        value: String,
        /// The rule it breaks.
        rule: ParameterRule,
    },
    /// A session preference under `inputs` has a value the agent cannot use.
    #[error("input {input}: {value:?} is not valid; expected {expected}")]
    Input {
        /// The input's key, e.g. `idleSessionTimeout`.
        input: String,
        /// The value found, as JSON.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A session property under `properties` (after substitution) is missing or unusable.
    #[error("property {property}: {value:?} is not valid; expected {expected}")]
    Property {
        /// The property's path, e.g. `portNumber` or `linux.commands`.
        property: String,
        /// The value found, as JSON (`null` when absent).
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// The agent's session request (PROTOCOL.md §11.2 `Content`) is malformed.
    #[error("session request: {problem}")]
    AgentRequest {
        /// What is missing or wrong.
        problem: String,
    },
    /// Reading a document directory or file failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A document file was refused; `source` says why.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        source: Box<DocumentError>,
    },
}

/// The parameter rule a value breaks, as written in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParameterRule {
    /// `String`, `Boolean` and `Integer` parameters take exactly one value.
    SingleValue,
    /// A `Boolean` parameter takes `true` or `false`.
    Boolean,
    /// An `Integer` parameter takes a whole number.
    Integer,
    /// `allowedValues`.
    AllowedValues(Vec<String>),
    /// `allowedPattern`.
    AllowedPattern(String),
    /// `minChars`.
    MinChars(usize),
    /// `maxChars`.
    MaxChars(usize),
    /// `minItems` (a `StringList` parameter's number of values).
    MinItems(usize),
    /// `maxItems`.
    MaxItems(usize),
}

impl fmt::Display for ParameterRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParameterRule::SingleValue => {
                f.write_str("must be exactly one value: the parameter is not a StringList")
            }
            ParameterRule::Boolean => f.write_str("must be true or false (type Boolean)"),
            ParameterRule::Integer => f.write_str("must be a whole number (type Integer)"),
            ParameterRule::AllowedValues(values) => {
                write!(f, "must be one of allowedValues: {}", list(values))
            }
            ParameterRule::AllowedPattern(pattern) => {
                write!(f, "does not match allowedPattern {pattern}")
            }
            ParameterRule::MinChars(n) => write!(f, "must have at least {n} characters (minChars)"),
            ParameterRule::MaxChars(n) => write!(f, "must have at most {n} characters (maxChars)"),
            ParameterRule::MinItems(n) => write!(f, "must be at least {n} values (minItems)"),
            ParameterRule::MaxItems(n) => write!(f, "must be at most {n} values (maxItems)"),
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(nothing)".to_owned()
    } else {
        names.join(", ")
    }
}
