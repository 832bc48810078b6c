//! The agent's configuration file (`/etc/ssm-agent/config.json` under systemd): JSON, every
//! field optional, unknown fields refused so a typo is not silently ignored. The program's
//! flags and `SSM_AGENT_*` variables override it field by field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file's fields (see `dist/agent.example.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentFile {
    /// Gateway endpoint, `http(s)://host:port`.
    pub endpoint: Option<String>,
    /// This host's id.
    pub agent_id: Option<String>,
    /// A file holding this host's secret (kept out of the configuration so the
    /// configuration can be world-readable).
    pub agent_secret_file: Option<PathBuf>,
    /// PEM file of the CA that signed the gateway's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Region to sign for.
    pub region: Option<String>,
    /// Shell for `Standard_Stream` sessions.
    pub shell: Option<String>,
    /// Allow port sessions to link-local and metadata addresses.
    pub allow_link_local: Option<bool>,
    /// A KMS endpoint other than the gateway's.
    pub kms_endpoint: Option<String>,
    /// The non-root user that shells and commands of a root agent run as when their document
    /// enables no run-as (default `ssm-user`, created when missing).
    pub default_run_as: Option<String>,
    /// `true`: without run-as, sessions run as the agent's own user (root) instead.
    pub run_as_agent_user: Option<bool>,
    /// Where recordings of KMS-encrypted sessions are kept on this host (default
    /// `/var/lib/ssm-agent/recordings` for root).
    pub recordings_dir: Option<PathBuf>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The secret file can be read by others than its owner.
    #[error(
        "{path} is readable by its group or others (mode {mode:04o}): the agent's secret must \
         be its owner's alone; run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a valid configuration.
    #[error("{path} is not a valid agent configuration: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: serde_json::Error,
    },
}

impl AgentFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<AgentFile, AgentFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        AgentFile::parse(&text).map_err(|source| AgentFileError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses the JSON text of a configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// use ssm_session::agent::config::AgentFile;
    ///
    /// let file = AgentFile::parse(r#"{"endpoint": "https://gw:8443", "agent_id": "mi-1"}"#)?;
    /// assert_eq!(file.agent_id.as_deref(), Some("mi-1"));
    /// assert!(AgentFile::parse(r#"{"endpiont": "x"}"#).is_err()); // typos are refused
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<AgentFile, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The secret from [`AgentFile::agent_secret_file`], trailing newline removed. The file
    /// must be mode 0600 or stricter: one its group or others may read is refused.
    pub fn read_secret(path: &Path) -> Result<String, AgentFileError> {
        let file = std::fs::File::open(path).map_err(|source| AgentFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file
                .metadata()
                .map_err(|source| AgentFileError::Read {
                    path: path.to_owned(),
                    source,
                })?
                .permissions()
                .mode()
                & 0o7777;
            if mode & 0o077 != 0 {
                return Err(AgentFileError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let secret = std::io::read_to_string(file).map_err(|source| AgentFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(secret.trim_end_matches(['\n', '\r']).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let file = AgentFile::parse(include_str!("../../dist/agent.example.json")).unwrap();
        assert_eq!(file.agent_id.as_deref(), Some("mi-0123456789abcdef0"));
        assert_eq!(
            file.agent_secret_file.as_deref(),
            Some(Path::new("/etc/ssm-agent/secret"))
        );
    }

    #[test]
    fn run_as_and_recordings_are_configurable() {
        let file = AgentFile::parse(
            r#"{"default_run_as": "daemon", "run_as_agent_user": true, "recordings_dir": "/srv/rec"}"#,
        )
        .unwrap();
        assert_eq!(file.default_run_as.as_deref(), Some("daemon"));
        assert_eq!(file.run_as_agent_user, Some(true));
        assert_eq!(file.recordings_dir.as_deref(), Some(Path::new("/srv/rec")));
    }

    #[test]
    fn unknown_fields_and_unreadable_files_are_refused_with_the_path() {
        let typo = AgentFile::parse(r#"{"agent_secret": "inline"}"#).unwrap_err();
        assert!(
            typo.to_string().contains("unknown field `agent_secret`"),
            "{typo}"
        );
        let missing = AgentFile::load(Path::new("/nonexistent/agent.json")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/agent.json"),
            "{missing}"
        );
    }

    #[test]
    fn secrets_lose_only_their_line_end() {
        let dir = std::env::temp_dir().join(format!("ssm-agent-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, " s3cret \n").unwrap();
        set_mode(&path, 0o600);
        assert_eq!(AgentFile::read_secret(&path).unwrap(), " s3cret ");
        set_mode(&path, 0o400);
        assert_eq!(AgentFile::read_secret(&path).unwrap(), " s3cret ");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_secret_others_may_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("ssm-agent-exposed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            set_mode(&path, mode);
            let refused = AgentFile::read_secret(&path).unwrap_err().to_string();
            assert!(
                refused.contains(&format!("mode {mode:04o}")) && refused.contains("chmod 600"),
                "{refused}"
            );
            assert!(!refused.contains("s3cret"), "{refused}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
