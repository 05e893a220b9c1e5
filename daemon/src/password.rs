//! What the three password protocols (Dovecot auth, saslauthd, nginx auth_http) share: which
//! directory answers a login, and the three ways the library's answer can go. Each protocol
//! module only says this verdict in its own words; what a server reply means, the caches and
//! the throttles are the library's (`Directory::auth_from`).

use crate::config::{Directories, Section};
use crate::log::log;
use remote_directory::ffi::{directory_result::*, result_of};
use remote_directory::{Directory, Result};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The library's answer to one login, as a password protocol can say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Wrong password, unknown user, or credentials that cannot be right (a NUL in them).
    Refused,
    /// Undecided now (network, timeout, throttled, no such directory...): never "wrong
    /// password", since the password may be right.
    Temporary,
}

/// The verdict of a library result, from the library's own mapping of kinds to results
/// (`ffi::result_of`), so a new kind cannot be classified differently here.
pub fn verdict_of(result: &Result<()>) -> Verdict {
    let Err(e) = result else {
        return Verdict::Accepted;
    };
    match result_of(e.kind()) {
        // The library sent nothing for unusable input: such a login can never succeed.
        DIRECTORY_RESULT_REJECTED | DIRECTORY_RESULT_INVALID_INPUT => Verdict::Refused,
        // (An error is never OK.) CONFIG and UNSUPPORTED: the setup is wrong, not the password.
        DIRECTORY_RESULT_OK
        | DIRECTORY_RESULT_TEMPORARY
        | DIRECTORY_RESULT_UNSUPPORTED
        | DIRECTORY_RESULT_CONFIG
        | DIRECTORY_RESULT_INTERNAL => Verdict::Temporary,
    }
}

/// Which directory answers: `directory` (default: the only one of the file) and `services`,
/// a table from the service a client names (`smtp`, `imap`...) to a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryChoice {
    default: Option<String>,
    by_service: BTreeMap<String, String>,
}

impl DirectoryChoice {
    /// Reads a protocol's `directory` and `services` keys (`saslauthd.directory`, ...).
    pub fn read(
        section: &mut Section,
        directory: &'static str,
        services: &'static str,
    ) -> Result<Self> {
        let default = section.string(directory)?;
        let mut by_service = BTreeMap::new();
        for (service, value) in section.table(services) {
            let Some(name) = value.as_str() else {
                return Err(section.error(
                    &format!("{services}.{service}"),
                    "expected the name of a directory (a string)",
                ));
            };
            by_service.insert(service, name.to_string());
        }
        Ok(DirectoryChoice {
            default,
            by_service,
        })
    }

    /// The directory for `service` and its name, or why there is none (a configuration
    /// mistake, logged and answered as temporary: the password may be right).
    pub fn pick<'d>(
        &self,
        service: &str,
        directories: &'d Directories,
    ) -> std::result::Result<(String, &'d Arc<Directory>), String> {
        let name = match self.by_service.get(service).or(self.default.as_ref()) {
            Some(name) => name.clone(),
            None => match (directories.count(), directories.names().next()) {
                (1, Some(only)) => only.to_string(),
                (n, _) => {
                    return Err(format!(
                        "service '{service}': no directory named for it and the file has {n} \
                         directories (set `directory` or `services`)"
                    ))
                }
            },
        };
        match directories.get(&name) {
            Some(directory) => Ok((name, directory)),
            None => Err(format!(
                "service '{service}': directory '{name}' is not a [directory.{name}] of the file"
            )),
        }
    }
}

/// One login as a protocol received it. `secret` is the caller's: it is wiped by its owner.
pub struct Login<'a> {
    /// For log lines: `dovecot-auth`, `saslauthd`, `auth-http`.
    pub protocol: &'static str,
    pub service: &'a str,
    pub user: &'a str,
    pub secret: &'a str,
    pub client_ip: Option<IpAddr>,
}

/// Asks the directory chosen for `login.service`. Refusals and temporary failures are
/// logged (with the library's message, which never holds a secret); `temporary` says what the
/// protocol answers instead, since several of them have no word for "try again later".
pub fn check(
    choice: &DirectoryChoice,
    directories: &Directories,
    login: &Login,
    temporary: &str,
) -> Verdict {
    let (name, directory) = match choice.pick(login.service, directories) {
        Ok(found) => found,
        Err(why) => {
            log!("error", "{}: {why}; {temporary}", login.protocol);
            return Verdict::Temporary;
        }
    };
    let result = directory.auth_from(login.user, login.secret, login.client_ip);
    let verdict = verdict_of(&result);
    if let Err(e) = &result {
        let client = login
            .client_ip
            .map_or(String::new(), |ip| format!(" from {ip}"));
        match verdict {
            Verdict::Refused => log!(
                "info",
                "{}: {name}: login of {}{client} refused: {e}",
                login.protocol,
                login.user
            ),
            _ => log!(
                "warning",
                "{}: {name}: login of {}{client} TEMPORARY, {temporary}: {e}",
                login.protocol,
                login.user
            ),
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use remote_directory::{Error, Kind};

    #[test]
    fn kinds_become_verdicts() {
        let cases = [
            (Kind::Rejected, Verdict::Refused),
            (Kind::InvalidInput, Verdict::Refused),
            (Kind::Network, Verdict::Temporary),
            (Kind::Timeout, Verdict::Temporary),
            (Kind::Tls, Verdict::Temporary),
            (Kind::Protocol, Verdict::Temporary),
            (Kind::Deferred, Verdict::Temporary),
            (Kind::Cleartext, Verdict::Temporary),
            (Kind::PoolTimeout, Verdict::Temporary),
            (Kind::Throttled, Verdict::Temporary),
            (Kind::Config, Verdict::Temporary),
            (Kind::Unsupported, Verdict::Temporary),
            (Kind::Internal, Verdict::Temporary),
        ];
        for (kind, expected) in cases {
            assert_eq!(
                verdict_of(&Err(Error::new(kind, "x"))),
                expected,
                "{kind:?}"
            );
        }
        assert_eq!(verdict_of(&Ok(())), Verdict::Accepted);
    }
}
