//! Errors of command resolution, worded exactly as Redis words them so the proxy can send them
//! to the client unchanged (`-` + [`CommandError::to_bytes`] + CRLF).
//!
//! Must never allocate on success paths: building an error copies at most ~256 bytes of the
//! client's input, and only when the request is refused.

use std::fmt;

use crate::args::Args;

/// How many bytes of a client-supplied name or argument list Redis quotes in an error.
const QUOTE_LIMIT: usize = 128;

/// Why a request cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The request has no arguments at all.
    #[error("ERR empty command")]
    Empty,
    /// No such command. `args` is Redis's preview of the first arguments (`'a' 'b' `).
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// The command name as sent (at most 128 bytes, CR/LF replaced by spaces).
        name: Quoted,
        /// The quoted first arguments, each followed by a space.
        args: Quoted,
    },
    /// A container command (`CONFIG`, `CLUSTER` …) with an unknown subcommand.
    #[error("ERR unknown subcommand '{subcommand}'. Try {command} HELP.")]
    UnknownSubcommand {
        /// The container name as sent, uppercased.
        command: Quoted,
        /// The subcommand as sent (at most 128 bytes).
        subcommand: Quoted,
    },
    /// The argument count does not fit the command's arity.
    #[error("ERR wrong number of arguments for '{command}' command")]
    WrongArity {
        /// The full command name (`get`, `config|get`).
        command: &'static str,
    },
    /// The keys of a request map to more than one hash slot.
    #[error("CROSSSLOT Keys in request don't hash to the same slot")]
    CrossSlot,
}

impl CommandError {
    /// The unknown-command error for the request `args` (`args[0]` is the name).
    pub(crate) fn unknown_command<A: Args + ?Sized>(args: &A) -> CommandError {
        let name = args.get(0).unwrap_or_default();
        let mut preview = Vec::new();
        for arg in (1..args.len()).map_while(|i| args.get(i)) {
            if preview.len() >= QUOTE_LIMIT {
                break;
            }
            let room = QUOTE_LIMIT - preview.len();
            let arg = c_string(arg);
            preview.push(b'\'');
            preview.extend_from_slice(&arg[..arg.len().min(room)]);
            preview.extend_from_slice(b"' ");
        }
        let name = c_string(name);
        CommandError::UnknownCommand {
            name: Quoted::new(&name[..name.len().min(QUOTE_LIMIT)]),
            args: Quoted::new(&preview),
        }
    }

    /// The unknown-subcommand error for container `command` and subcommand `subcommand`.
    pub(crate) fn unknown_subcommand(command: &[u8], subcommand: &[u8]) -> CommandError {
        let command = Quoted::new(&c_string(command).to_ascii_uppercase());
        let subcommand = c_string(subcommand);
        let subcommand = Quoted::new(&subcommand[..subcommand.len().min(QUOTE_LIMIT)]);
        CommandError::UnknownSubcommand {
            command,
            subcommand,
        }
    }

    /// The exact error line Redis would send, without the leading `-` and trailing CRLF.
    /// Unlike [`Display`](fmt::Display) it keeps non-UTF-8 bytes of the client's input as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            CommandError::UnknownCommand { name, args } => {
                out.extend_from_slice(b"ERR unknown command '");
                out.extend_from_slice(&name.0);
                out.extend_from_slice(b"', with args beginning with: ");
                out.extend_from_slice(&args.0);
            }
            CommandError::UnknownSubcommand {
                command,
                subcommand,
            } => {
                out.extend_from_slice(b"ERR unknown subcommand '");
                out.extend_from_slice(&subcommand.0);
                out.extend_from_slice(b"'. Try ");
                out.extend_from_slice(&command.0);
                out.extend_from_slice(b" HELP.");
            }
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
        out
    }
}

/// `bytes` up to its first NUL: Redis formats these arguments with `%s`, which stops there.
fn c_string(bytes: &[u8]) -> &[u8] {
    bytes
        .iter()
        .position(|&b| b == 0)
        .map_or(bytes, |nul| &bytes[..nul])
}

/// Client-supplied bytes quoted in an error (already cut as Redis cuts them), with CR and LF
/// replaced by spaces: an error line must stay one line. Displays lossily as UTF-8.
#[derive(Clone, PartialEq, Eq)]
pub struct Quoted(Box<[u8]>);

impl Quoted {
    fn new(bytes: &[u8]) -> Quoted {
        Quoted(
            bytes
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                .collect(),
        )
    }

    /// The quoted bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}
