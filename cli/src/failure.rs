//! How the `keyward` command fails: an exit status by kind (listed in `keyward --help`), and a
//! message that names the fix. A command returns an `anyhow::Error`; one that carries a [`Failure`]
//! anywhere in its chain exits with that failure's status, any other with [`Exit::Method`]'s 1.

use std::fmt;

/// The exit statuses of `keyward`, as `keyward --help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// A method or command failed (the server answered with an error, a file could not be read).
    Method = 1,
    /// The command line or its params are wrong (clap's own usage errors exit 2 as well).
    Usage = 2,
    /// No server could be reached (nothing listens, never started, wrong scheme, a timeout).
    Connect = 3,
    /// Refused by TLS or by role: a revoked or unknown client, a method the client's role may not call.
    Refused = 4,
}

impl Exit {
    /// The process exit status.
    pub fn status(self) -> u8 {
        self as u8
    }
}

/// The exit statuses as `keyward --help` shows them (after the command list).
pub const EXIT_HELP: &str = "Exit status: 0 ok, 1 a method or command failed, 2 usage (bad arguments or params), \
                             3 cannot connect to the server, 4 refused by TLS or role (revoked, unknown client, \
                             forbidden).";

/// A failure of a known kind. `code` is the server's JSON-RPC code when the server answered with
/// an error (what `keyward call --json` prints as `code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit status.
    pub exit: Exit,
    /// The server's JSON-RPC error code, if the server answered.
    pub code: Option<i64>,
    /// What happened and, where there is one, the fix.
    pub message: String,
}

impl Failure {
    /// A failure of `exit` with `message`.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, code: None, message: message.into() }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    /// No server reached.
    pub fn connect(message: impl Into<String>) -> Self {
        Self::new(Exit::Connect, message)
    }

    /// Refused by TLS or role.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(Exit::Refused, message)
    }

    /// The server answered `code`; `exit` says which kind of failure that is.
    pub fn answered(exit: Exit, code: i64, message: impl Into<String>) -> Self {
        Self { exit, code: Some(code), message: message.into() }
    }

    /// The failure an error carries anywhere in its chain, if any.
    pub fn of(error: &anyhow::Error) -> Option<&Self> {
        // A context is found by anyhow's own downcast (through every layer), a source by the chain.
        error.downcast_ref::<Self>().or_else(|| error.chain().find_map(|cause| cause.downcast_ref::<Self>()))
    }

    /// The exit status of `error`: its failure's, else 1.
    pub fn exit_of(error: &anyhow::Error) -> Exit {
        Self::of(error).map_or(Exit::Method, |failure| failure.exit)
    }

    /// `error` as `keyward call --json` prints it: `{"code":…,"message":…}`, the code the server's
    /// JSON-RPC code if it answered, else the exit status.
    pub fn json_of(error: &anyhow::Error) -> serde_json::Value {
        let failure = Self::of(error);
        let code = failure.and_then(|f| f.code).unwrap_or_else(|| i64::from(Self::exit_of(error).status()));
        serde_json::json!({ "code": code, "message": format!("{error:#}") })
    }
}

/// A failure already reported to the user (as JSON on standard output): `keyward` exits with its
/// status and prints nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported(pub Exit);

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reported (exit status {})", self.0.status())
    }
}

impl std::error::Error for Reported {}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_in_the_chain_decides_the_status() {
        let error = anyhow::Error::new(Failure::connect("nothing answers")).context("cannot reach the server");
        let inner = anyhow::anyhow!("io").context(Failure::refused("revoked")).context("while calling");
        assert_eq!(Failure::exit_of(&inner), Exit::Refused, "a failure given as context counts");
        assert_eq!(Failure::exit_of(&error), Exit::Connect);
        assert_eq!(Failure::exit_of(&anyhow::anyhow!("plain")), Exit::Method);
        let json = Failure::json_of(&error);
        assert_eq!(json["code"], 3);
        assert_eq!(json["message"], "cannot reach the server: nothing answers");
        let answered = anyhow::Error::new(Failure::answered(Exit::Refused, -32099, "forbidden"));
        assert_eq!(Failure::json_of(&answered)["code"], -32099);
        assert_eq!(Exit::Refused.status(), 4);
        assert_eq!(Exit::Usage.status(), 2);
    }
}
