//! How to log in to a node: an optional ACL user and a password. Shared by the control plane
//! (`NodeClient`) and the proxy's data-plane connections, so both authenticate the same way.
//!
//! The password must never reach a log, an error message or a status document: `Debug` and
//! `Display` print `***` in its place.

use std::fmt;

/// An ACL user (or the `default` user when `user` is `None`) and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// ACL user name; `None` authenticates the `default` user (`AUTH <password>`).
    pub user: Option<String>,
    /// The password, kept out of every printed form.
    pub password: String,
}

impl Credentials {
    /// The `AUTH` arguments: `[user,] password`.
    pub fn auth_args(&self) -> Vec<&[u8]> {
        let mut args = Vec::with_capacity(2);
        if let Some(user) = &self.user {
            args.push(user.as_bytes());
        }
        args.push(self.password.as_bytes());
        args
    }

    /// The user name `AUTH` and `HELLO` log in as.
    pub fn user_or_default(&self) -> &str {
        self.user.as_deref().unwrap_or("default")
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:***", self.user_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_forms_never_show_the_password() {
        let c = Credentials {
            user: Some("svc".into()),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c}").contains("hunter2"));
        assert_eq!(c.to_string(), "svc:***");
    }

    #[test]
    fn auth_args_name_the_user_only_when_given() {
        let default = Credentials {
            user: None,
            password: "p".into(),
        };
        assert_eq!(default.auth_args(), vec![b"p".as_slice()]);
        let named = Credentials {
            user: Some("u".into()),
            password: "p".into(),
        };
        assert_eq!(named.auth_args(), vec![b"u".as_slice(), b"p".as_slice()]);
    }
}
