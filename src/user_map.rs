//! User name mapping (`user.*`): the login name a caller gives becomes the name the remote
//! server is asked about. A pure function over strings, applied once at the top of
//! `Directory::auth_from`, so the server, the caches, the throttles and the trace all see the
//! mapped name; error messages quote the caller's name.
//!
//! The steps, in this order:
//! 1. `user.lowercase`: the whole name in lower case.
//! 2. `user.append-domain = "D"`: a name without `@` becomes `name@D`.
//! 3. `user.require-local-domain`: a name whose domain (after `@`) is not in
//!    `lookup.domains` is refused here, with nothing sent. A name without a domain passes.
//! 4. `user.strip-domain`: only the part before the last `@` is sent.

use crate::config::normalize_domain;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserMapping {
    pub lowercase: bool,
    pub strip_domain: bool,
    /// Lower case, without a trailing dot.
    pub append_domain: Option<String>,
    pub require_local_domain: bool,
}

impl UserMapping {
    /// True when no step is configured: the name is sent as given.
    pub fn is_identity(&self) -> bool {
        *self == UserMapping::default()
    }

    /// The name to send for `user`, or why it is refused without asking the server.
    /// `domains` is `lookup.domains` (lower case, no trailing dot).
    pub fn map(&self, user: &str, domains: &[String]) -> Result<String, String> {
        let mut name = if self.lowercase {
            user.to_lowercase()
        } else {
            user.to_string()
        };
        if let Some(domain) = &self.append_domain {
            if !name.contains('@') {
                name = format!("{name}@{domain}");
            }
        }
        if self.require_local_domain {
            if let Some((_, domain)) = name.rsplit_once('@') {
                if !domains.contains(&normalize_domain(domain)) {
                    return Err(format!(
                        "'{domain}' is not one of lookup.domains (user.require-local-domain): not asked"
                    ));
                }
            }
        }
        if self.strip_domain {
            if let Some((local, _)) = name.rsplit_once('@') {
                name = local.to_string();
            }
        }
        if name.is_empty() {
            return Err("the name is empty once mapped (user.*)".into());
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_in_their_order() {
        let domains = vec!["example.org".to_string(), "example.com".to_string()];
        let rules = |lowercase, strip_domain, append: Option<&str>, require| UserMapping {
            lowercase,
            strip_domain,
            append_domain: append.map(str::to_string),
            require_local_domain: require,
        };
        let none = rules(false, false, None, false);
        let lower = rules(true, false, None, false);
        let strip = rules(false, true, None, false);
        let append = rules(false, false, Some("example.org"), false);
        let require = rules(false, false, None, true);
        let lower_append_require = rules(true, false, Some("example.org"), true);
        let lower_strip_require = rules(true, true, None, true);
        let refused = |d: &str| {
            Err(format!(
                "'{d}' is not one of lookup.domains (user.require-local-domain): not asked"
            ))
        };
        let cases: Vec<(&UserMapping, &str, Result<String, String>)> = vec![
            (&none, "Alice@Example.ORG", Ok("Alice@Example.ORG".into())),
            (&lower, "ALICE@EXAMPLE.ORG", Ok("alice@example.org".into())),
            (&lower, "Jörg", Ok("jörg".into())),
            (&strip, "alice@example.org", Ok("alice".into())),
            (&strip, "alice", Ok("alice".into())),
            (&strip, "a@b@example.org", Ok("a@b".into())),
            (
                &strip,
                "@example.org",
                Err("the name is empty once mapped (user.*)".into()),
            ),
            (&append, "alice", Ok("alice@example.org".into())),
            (&append, "alice@other.test", Ok("alice@other.test".into())),
            (
                &require,
                "alice@example.com",
                Ok("alice@example.com".into()),
            ),
            (
                &require,
                "alice@EXAMPLE.org.",
                Ok("alice@EXAMPLE.org.".into()),
            ),
            (&require, "alice@other.test", refused("other.test")),
            (&require, "alice", Ok("alice".into())),
            (
                &lower_append_require,
                "ALICE",
                Ok("alice@example.org".into()),
            ),
            (
                &lower_append_require,
                "Bob@Other.Test",
                refused("other.test"),
            ),
            (
                &lower_strip_require,
                "Alice@Example.Org",
                Ok("alice".into()),
            ),
            (
                &lower_strip_require,
                "alice@evil.test",
                refused("evil.test"),
            ),
        ];
        for (rules, user, expected) in cases {
            assert_eq!(rules.map(user, &domains), expected, "{rules:?} {user:?}");
        }
        assert!(none.is_identity() && !lower.is_identity());
    }
}
