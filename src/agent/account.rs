//! Which local account a shell or command runs as: the document's run-as user when
//! `runAsEnabled`, else the `RunAsUser` the gateway sends (from the account's preferences
//! document, for every session type), else — when the agent runs as root — the non-root default user
//! ([`AgentSettings::default_run_as`](super::AgentSettings::default_run_as), `ssm-user` as
//! with AWS, created when missing), else the agent's own account.

use crate::document::AgentSessionRequest;

/// Serialises `useradd`, so two sessions starting at once do not race to create the user.
static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A local account to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: String,
}

/// `PATH` of a session run as another account (the agent's own may name its private tools).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// What a session keeps of the agent's environment: the locale and time zone, nothing else.
const PASSED_THROUGH: [&str; 4] = ["LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/// The whole environment a session's process starts with — what a login would set — so that
/// nothing of the agent's own (its settings, credentials, proxies, `SSM_AGENT_*`) reaches what
/// users run. As `account`, or as the agent's own account when `None`; `agent` is the agent's
/// environment (`std::env::var`).
pub(crate) fn session_environment(
    account: Option<&Account>,
    shell: &str,
    agent: impl Fn(&str) -> Option<String>,
) -> Vec<(&'static str, String)> {
    let mut environment = match account {
        Some(account) => vec![
            ("HOME", account.home.clone()),
            ("USER", account.name.clone()),
            ("LOGNAME", account.name.clone()),
            ("PATH", DEFAULT_PATH.to_owned()),
        ],
        None => ["HOME", "USER", "LOGNAME"]
            .into_iter()
            .filter_map(|name| Some((name, agent(name)?)))
            .chain([(
                "PATH",
                agent("PATH").unwrap_or_else(|| DEFAULT_PATH.to_owned()),
            )])
            .collect(),
    };
    environment.push(("SHELL", shell.to_owned()));
    environment.extend(
        PASSED_THROUGH
            .into_iter()
            .filter_map(|name| Some((name, agent(name)?))),
    );
    environment
}

impl Account {
    /// Its home when that exists (system accounts such as `nobody` have none), else `/`.
    pub(crate) fn working_directory(&self) -> &str {
        match std::path::Path::new(&self.home).is_dir() {
            true => &self.home,
            false => "/",
        }
    }
}

/// Looks `name` up in `/etc/passwd`-format `text`.
pub(crate) fn find_account(text: &str, name: &str) -> Option<Account> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || fields[0] != name {
            return None;
        }
        Some(Account {
            name: name.to_owned(),
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5].to_owned(),
        })
    })
}

/// Who a session runs as, before the account is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunAs {
    /// The agent's own account.
    Agent,
    /// The document's run-as user: must exist.
    Document(String),
    /// The agent's default user: created when missing.
    Default(String),
}

/// The decision, from the request, the agent's default user and its effective uid: Err says
/// why the session cannot run.
pub(crate) fn decide(
    request: &AgentSessionRequest,
    default_user: Option<&str>,
    euid: u32,
) -> Result<RunAs, String> {
    if request.session.preferences.run_as_enabled {
        return request
            .run_as_user
            .clone()
            .or_else(|| request.session.preferences.run_as_default_user.clone())
            .filter(|name| !name.is_empty())
            .map(RunAs::Document)
            .ok_or_else(|| "run-as is enabled but no user is named (runAsDefaultUser)".into());
    }
    // The gateway names it when the account's preferences enable run-as, whatever the
    // document (command documents have no run-as inputs of their own).
    if let Some(name) = request.run_as_user.clone().filter(|name| !name.is_empty()) {
        return Ok(RunAs::Document(name));
    }
    Ok(match default_user {
        // Only root can switch users; an unprivileged agent runs sessions as itself.
        Some(name) if euid == 0 => RunAs::Default(name.to_owned()),
        _ => RunAs::Agent,
    })
}

/// The account `request` runs as (`None`: the agent's own), creating the default user when
/// it is missing.
pub(crate) async fn resolve(
    request: &AgentSessionRequest,
    default_user: Option<&str>,
) -> Result<Option<Account>, String> {
    let euid = rustix::process::geteuid().as_raw();
    let (name, create) = match decide(request, default_user, euid)? {
        RunAs::Agent => return Ok(None),
        RunAs::Document(name) => (name, false),
        RunAs::Default(name) => (name, true),
    };
    let account = match lookup(&name)? {
        Some(account) => account,
        None if create => {
            let _creating = CREATING.lock().await;
            match lookup(&name)? {
                Some(account) => account,
                None => create_user(&name).await?,
            }
        }
        None => return Err(format!("run-as user {name:?} does not exist on this host")),
    };
    if euid != 0 && euid != account.uid {
        return Err(format!(
            "run-as user {name:?} needs the agent to run as root (it runs as uid {euid})"
        ));
    }
    Ok(Some(account))
}

fn lookup(name: &str) -> Result<Option<Account>, String> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|error| format!("reading /etc/passwd: {error}"))?;
    Ok(find_account(&passwd, name))
}

/// `useradd --create-home`, as AWS creates `ssm-user` (without its sudo rights).
async fn create_user(name: &str) -> Result<Account, String> {
    let advice = format!(
        "create the user (useradd --create-home {name}) or set run_as_agent_user in the agent's configuration"
    );
    let status = tokio::process::Command::new("useradd")
        .args(["--create-home", "--shell", "/bin/sh", "--", name])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|error| {
            format!("the default user {name:?} is missing and useradd failed ({error}): {advice}")
        })?;
    tracing::info!(
        user = name,
        success = status.success(),
        "created the default run-as user"
    );
    lookup(name)?.ok_or_else(|| {
        format!("the default user {name:?} is missing and useradd failed ({status}): {advice}")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_session_gets_a_login_environment_not_the_agents() {
        let agent = |name: &str| match name {
            "HOME" => Some("/var/lib/agent".to_owned()),
            "USER" | "LOGNAME" => Some("agent".to_owned()),
            "PATH" => Some("/opt/agent/bin:/usr/bin".to_owned()),
            "LANG" => Some("C.UTF-8".to_owned()),
            "LC_ALL" | "LC_CTYPE" | "TZ" => None,
            // Whatever else the agent has stays with it.
            _ => Some("secret".to_owned()),
        };
        let account = super::Account {
            name: "ssm-user".into(),
            uid: 1001,
            gid: 1001,
            home: "/home/ssm-user".into(),
        };
        let as_user = super::session_environment(Some(&account), "/bin/bash", agent);
        assert_eq!(
            as_user,
            [
                ("HOME", "/home/ssm-user".to_owned()),
                ("USER", "ssm-user".to_owned()),
                ("LOGNAME", "ssm-user".to_owned()),
                ("PATH", super::DEFAULT_PATH.to_owned()),
                ("SHELL", "/bin/bash".to_owned()),
                ("LANG", "C.UTF-8".to_owned()),
            ]
        );
        let as_agent = super::session_environment(None, "/bin/sh", agent);
        assert_eq!(
            as_agent,
            [
                ("HOME", "/var/lib/agent".to_owned()),
                ("USER", "agent".to_owned()),
                ("LOGNAME", "agent".to_owned()),
                ("PATH", "/opt/agent/bin:/usr/bin".to_owned()),
                ("SHELL", "/bin/sh".to_owned()),
                ("LANG", "C.UTF-8".to_owned()),
            ]
        );
    }

    use super::*;
    use crate::document::Document;

    fn request(inputs: serde_json::Value, run_as_user: Option<&str>) -> AgentSessionRequest {
        let content = serde_json::json!({
            "schemaVersion": "1.0",
            "sessionType": "NonInteractiveCommands",
            "inputs": inputs,
            "properties": {"linux": {"commands": "id -u"}},
        });
        let document = Document::from_value("Print-Uid", content).unwrap();
        let resolved = document.resolve(&Default::default()).unwrap();
        let content = document.agent_message_content(&resolved, "s-1", run_as_user, "arn:x");
        AgentSessionRequest::from_value(&content).unwrap()
    }

    #[test]
    fn accounts_are_found_by_exact_name() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nbad:line\n";
        assert_eq!(
            find_account(passwd, "alice"),
            Some(Account {
                name: "alice".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/alice".into()
            })
        );
        assert_eq!(find_account(passwd, "ali"), None);
        assert_eq!(find_account(passwd, "bad"), None);
    }

    #[test]
    fn a_root_agent_runs_sessions_as_the_default_user_unless_told_otherwise() {
        let plain = request(serde_json::json!({}), None);
        assert_eq!(
            decide(&plain, Some("ssm-user"), 0),
            Ok(RunAs::Default("ssm-user".into()))
        );
        // The explicit opt-out, and an unprivileged agent, run sessions as the agent.
        assert_eq!(decide(&plain, None, 0), Ok(RunAs::Agent));
        assert_eq!(decide(&plain, Some("ssm-user"), 1000), Ok(RunAs::Agent));
    }

    #[test]
    fn run_as_documents_name_their_user_for_every_session_type() {
        let inputs = serde_json::json!({"runAsEnabled": true, "runAsDefaultUser": "daemon"});
        let document = request(inputs.clone(), None);
        for euid in [0, 1000] {
            assert_eq!(
                decide(&document, Some("ssm-user"), euid),
                Ok(RunAs::Document("daemon".into()))
            );
        }
        // The principal's run-as user comes first.
        assert_eq!(
            decide(&request(inputs, Some("alice")), None, 0),
            Ok(RunAs::Document("alice".into()))
        );
        // Named by the gateway (the account's preferences), without inputs of the document's own.
        assert_eq!(
            decide(
                &request(serde_json::json!({}), Some("daemon")),
                Some("ssm-user"),
                0
            ),
            Ok(RunAs::Document("daemon".into()))
        );
        let unnamed = request(serde_json::json!({"runAsEnabled": true}), None);
        assert!(
            decide(&unnamed, None, 0)
                .unwrap_err()
                .contains("runAsDefaultUser")
        );
    }

    #[test]
    fn accounts_without_a_home_work_in_the_root_directory() {
        let nobody = Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: "/nonexistent".into(),
        };
        assert_eq!(nobody.working_directory(), "/");
        let root = Account {
            home: "/".into(),
            ..nobody
        };
        assert_eq!(root.working_directory(), "/");
    }
}
