//! The documents a gateway knows: the AWS built-ins plus custom `<Name>.json` files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::{DEFAULT_DOCUMENT, Document, DocumentError, SessionType};

/// The built-in documents' names; their content mirrors the public AWS documents.
pub const BUILTIN_DOCUMENTS: [&str; 6] = [
    "SSM-SessionManagerRunShell",
    "AWS-StartPortForwardingSession",
    "AWS-StartPortForwardingSessionToRemoteHost",
    "AWS-StartSSHSession",
    "AWS-StartInteractiveCommand",
    "AWS-StartNonInteractiveCommand",
];

/// The built-ins' JSON, in [`BUILTIN_DOCUMENTS`] order.
const BUILTIN_JSON: [&str; 6] = [
    include_str!("builtin/SSM-SessionManagerRunShell.json"),
    include_str!("builtin/AWS-StartPortForwardingSession.json"),
    include_str!("builtin/AWS-StartPortForwardingSessionToRemoteHost.json"),
    include_str!("builtin/AWS-StartSSHSession.json"),
    include_str!("builtin/AWS-StartInteractiveCommand.json"),
    include_str!("builtin/AWS-StartNonInteractiveCommand.json"),
];

/// Name prefixes AWS keeps for its own documents (compared ignoring case).
const RESERVED_PREFIXES: [&str; 3] = ["aws", "amazon", "amzn"];

/// AWS's document name rule: `^[a-zA-Z0-9_\-.:/]{3,128}$`.
pub(super) fn valid_document_name(name: &str) -> bool {
    (3..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
}

/// Documents by name.
///
/// Custom documents may not take a built-in AWS name or an `AWS`/`Amazon`/`AMZN` prefix. The
/// one exception is [`DEFAULT_DOCUMENT`], which in AWS is the account's own preferences
/// document: a custom `SSM-SessionManagerRunShell` (of type `Standard_Stream`) replaces the
/// built-in one, which is how idle timeout, run-as and KMS are configured for default shells.
///
/// # Examples
///
/// ```
/// use ssm_session::document::{DocumentStore, SessionType};
///
/// let mut store = DocumentStore::builtin();
/// # let dir = std::env::temp_dir().join(format!("ssm-doc-example-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # std::fs::write(dir.join("Top.json"), r#"{"schemaVersion": "1.0",
/// #     "sessionType": "InteractiveCommands",
/// #     "properties": {"linux": {"commands": "top"}}}"#)?;
/// // `dir` holds `Top.json`.
/// assert_eq!(store.load_dir(&dir)?, 1);
/// assert_eq!(store.get("Top").map(|d| d.session_type()), Some(SessionType::InteractiveCommands));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DocumentStore {
    documents: BTreeMap<String, Document>,
    /// Names added by [`insert`](Self::insert), to tell a replaced default document apart.
    custom: BTreeSet<String>,
}

impl Default for DocumentStore {
    /// The built-ins.
    fn default() -> Self {
        Self::builtin()
    }
}

impl DocumentStore {
    /// A store holding the six built-in documents.
    pub fn builtin() -> Self {
        let documents = BUILTIN_DOCUMENTS
            .into_iter()
            .zip(BUILTIN_JSON)
            // The built-ins are checked by the tests; parsing them cannot fail at run time.
            .filter_map(|(name, text)| Document::from_json(name, text).ok())
            .map(|document| (document.name().to_owned(), document))
            .collect();
        DocumentStore {
            documents,
            custom: BTreeSet::new(),
        }
    }

    /// The document called `name`.
    pub fn get(&self, name: &str) -> Option<&Document> {
        self.documents.get(name)
    }

    /// Every document's name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.documents.keys().map(String::as_str)
    }

    /// Adds a custom document; refuses reserved names (see the type's docs) and names already
    /// taken by another custom document.
    pub fn insert(&mut self, document: Document) -> Result<(), DocumentError> {
        let name = document.name();
        if name == DEFAULT_DOCUMENT {
            if document.session_type() != SessionType::StandardStream {
                return Err(DocumentError::Shape {
                    document: name.to_owned(),
                    problem: "the default document must have sessionType Standard_Stream".into(),
                });
            }
            if self.custom.contains(name) {
                return Err(DocumentError::Duplicate {
                    name: name.to_owned(),
                });
            }
        } else if BUILTIN_DOCUMENTS.contains(&name)
            || RESERVED_PREFIXES.iter().any(|prefix| {
                name.get(..prefix.len())
                    .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
            })
        {
            return Err(DocumentError::ReservedName {
                name: name.to_owned(),
            });
        } else if self.custom.contains(name) {
            return Err(DocumentError::Duplicate {
                name: name.to_owned(),
            });
        }
        self.custom.insert(name.to_owned());
        self.documents.insert(name.to_owned(), document);
        Ok(())
    }

    /// Loads every `*.json` file in `dir` as the document named by the file's stem (other
    /// files and subdirectories are skipped). All or nothing: on any error nothing is added,
    /// and the error names the file. Returns how many documents were added.
    pub fn load_dir(&mut self, dir: impl AsRef<Path>) -> Result<usize, DocumentError> {
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DocumentError::Io { path, source }
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().is_some_and(|e| e == "json")
                && fs::metadata(&path).map_err(io(&path))?.is_file()
            {
                paths.push(path);
            }
        }
        paths.sort();
        let mut staged = self.clone();
        for path in &paths {
            let in_file = |source: DocumentError| DocumentError::File {
                path: path.clone(),
                source: Box::new(source),
            };
            let stem = path.file_stem().unwrap_or_default();
            let name = stem.to_str().ok_or_else(|| {
                in_file(DocumentError::InvalidName {
                    name: stem.to_string_lossy().into_owned(),
                })
            })?;
            let text = fs::read_to_string(path).map_err(io(path))?;
            let document = Document::from_json(name, &text).map_err(in_file)?;
            staged.insert(document).map_err(in_file)?;
        }
        *self = staged;
        Ok(paths.len())
    }
}
