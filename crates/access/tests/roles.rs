//! What each role may do, through the public API only: built-in roles and the default deny
//! list, rule order, deny and allow lists, key namespaces across multi-key commands, channel
//! patterns, logins, reload hand-over and configuration errors.
//!
//! Requests are written like redis-cli input (`"MGET orders:1 users:1"`) and resolved with the
//! command table, as the proxy does.

#![allow(clippy::unwrap_used)]

use std::io::Write;

use cinnabar_access::{
    Access, AccessConfig, AccessError, AuthError, Denied, DeniedKind, Origin, Principal, Problem,
    RuleError, Server, runs_before_login,
};

/// Compiles a TOML `[access]` section (without the header), panicking on errors.
fn compile(toml_text: &str) -> (Access, Vec<String>) {
    let config: AccessConfig = toml::from_str(toml_text).unwrap();
    Access::compile(&config).unwrap_or_else(|e| panic!("{e}"))
}

/// The compile error for a TOML `[access]` section.
fn compile_error(toml_text: &str) -> AccessError {
    let config: AccessConfig = toml::from_str(toml_text).unwrap();
    Access::compile(&config).expect_err("should be refused")
}

/// `SHA-256("pw")`.
const PW_SHA256: &str = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";

/// A principal with role `role` and the extra role definitions `roles` (TOML).
fn principal_with(role: &str, roles: &str) -> Principal {
    let (access, _) = compile(&format!(
        "[[users]]\nname = \"u\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"{role}\"\n{roles}"
    ));
    access.authenticate(Some(b"u"), b"pw").unwrap()
}

/// Checks `line`, split on spaces; `""` is an empty argument.
fn check(principal: &Principal, line: &str) -> Result<(), Denied> {
    let args: Vec<&[u8]> = line
        .split_whitespace()
        .map(|word| if word == "\"\"" { b"" } else { word.as_bytes() })
        .collect();
    let command = cinnabar_commands::resolve(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
    principal.check(command, &args)
}

fn allowed(principal: &Principal, line: &str) -> bool {
    check(principal, line).is_ok()
}

#[track_caller]
fn assert_allows(principal: &Principal, lines: &[&str]) {
    for line in lines {
        if let Err(denied) = check(principal, line) {
            panic!("{} should run {line:?}: {denied}", principal.role());
        }
    }
}

#[track_caller]
fn assert_denies(principal: &Principal, lines: &[&str]) {
    for line in lines {
        assert!(
            !allowed(principal, line),
            "{} should not run {line:?}",
            principal.role()
        );
    }
}

#[test]
fn readwrite_runs_data_commands_but_none_of_the_guarded_ones() {
    let readwrite = principal_with("readwrite", "");
    assert_allows(
        &readwrite,
        &[
            "GET k",
            "SET k v",
            "MSET a 1 b 2",
            "DEL a b",
            "CLUSTER SLOTS",
            "CLUSTER SHARDS",
            "CLUSTER KEYSLOT k",
            "EVAL return 0",
            "SCRIPT LOAD return",
            "PUBLISH c m",
            "SUBSCRIBE c",
            "CLIENT SETNAME x",
            "INFO",
            "SCAN 0",
            "ACL WHOAMI",
            "ACL CAT",
        ],
    );
    assert_denies(
        &readwrite,
        &[
            "FLUSHALL",
            "FLUSHDB",
            "CONFIG SET maxmemory 0",
            "CONFIG GET maxmemory",
            "KEYS *",
            "DEBUG SLEEP 0",
            "SHUTDOWN",
            "SAVE",
            "BGSAVE",
            "BGREWRITEAOF",
            "REPLICAOF no one",
            "SLAVEOF no one",
            "CLUSTER RESET",
            "CLUSTER FAILOVER",
            "CLUSTER ADDSLOTS 1",
            "CLUSTER FORGET abc",
            "SCRIPT FLUSH",
            "FUNCTION FLUSH",
            "FUNCTION DELETE lib",
            "FUNCTION RESTORE x",
            "MONITOR",
            "SWAPDB 0 1",
            "MIGRATE h 1 k 0 10",
            "ACL USERS",
            "MODULE LIST",
        ],
    );
}

#[test]
fn the_command_refusal_names_the_user_and_the_full_command() {
    let readwrite = principal_with("readwrite", "");
    let denied = check(&readwrite, "CONFIG SET maxmemory 0").unwrap_err();
    assert_eq!(denied.kind(), DeniedKind::Command);
    assert_eq!(denied.command(), "config|set");
    assert_eq!(denied.user(), "u");
    assert_eq!(
        denied.to_string(),
        "NOPERM User u has no permissions to run the 'config|set' command"
    );
    assert_eq!(
        denied.message(Server::Redis7),
        "NOPERM this user has no permissions to run the 'config|set' command"
    );
}

#[test]
fn keys_can_be_allowed_to_everyone_by_configuration() {
    let (access, _) = compile("deny_keys_command = false");
    assert!(allowed(&access.default_principal().unwrap(), "KEYS *"));
    let (access, _) = compile("");
    assert!(!allowed(&access.default_principal().unwrap(), "KEYS *"));
}

#[test]
fn readonly_reads_but_never_writes() {
    let readonly = principal_with("readonly", "");
    assert_allows(
        &readonly,
        &[
            "GET k",
            "MGET a b",
            "HGETALL h",
            "SCAN 0",
            "PING",
            "SELECT 0",
            "CLUSTER SLOTS",
            "CLUSTER NODES",
            "CLIENT SETNAME app",
        ],
    );
    assert_denies(
        &readonly,
        &[
            "SET k v",
            "DEL k",
            "MSET a 1",
            "EVAL return 0",
            "PUBLISH c m",
            "FLUSHALL",
            "KEYS *",
            "CLIENT KILL ID 1",
            "CONFIG GET maxmemory",
        ],
    );
}

#[test]
fn admin_runs_everything() {
    let admin = principal_with("admin", "");
    assert_allows(
        &admin,
        &[
            "FLUSHALL",
            "CONFIG SET maxmemory 0",
            "KEYS *",
            "CLUSTER RESET",
            "SHUTDOWN",
            "GET k",
            "SET k v",
            "MONITOR",
        ],
    );
}

#[test]
fn login_commands_are_always_permitted() {
    let nothing = principal_with("nothing", "[[roles]]\nname = \"nothing\"\n");
    assert_allows(&nothing, &["AUTH u pw", "HELLO 3", "QUIT", "RESET"]);
    assert_denies(&nothing, &["PING", "GET k"]);
}

#[test]
fn later_rules_override_earlier_ones_per_command_and_subcommand() {
    let roles = r#"
        [[roles]]
        name = "custom"
        commands = ["+@all", "-@dangerous", "+info", "-client", "+client|getname", "-get"]
        keys = ["*"]
    "#;
    let custom = principal_with("custom", roles);
    assert_allows(&custom, &["SET k v", "INFO", "CLIENT GETNAME"]);
    assert_denies(
        &custom,
        &[
            "GET k",
            "CLIENT SETNAME x",
            "CLIENT LIST",
            "DEBUG SLEEP 0",
            "SORT k",
        ],
    );
    let roles = r#"
        [[roles]]
        name = "custom"
        commands = ["-@all", "+client|setname", "+@read", "-@keyspace"]
        keys = ["*"]
    "#;
    let custom = principal_with("custom", roles);
    assert_allows(&custom, &["CLIENT SETNAME x", "GET k", "HGET h f"]);
    assert_denies(
        &custom,
        &["CLIENT LIST", "CLIENT KILL ID 1", "SET k v", "EXISTS k"],
    );
}

#[test]
fn deny_and_allow_lists_apply_after_the_rules_and_the_default_deny_list() {
    let roles = r#"
        [[roles]]
        name = "ops"
        base = "readwrite"
        deny = ["@scripting", "flushdb", "client|kill"]
        allow = ["keys", "config|get", "client|kill"]
    "#;
    let ops = principal_with("ops", roles);
    assert_allows(
        &ops,
        &[
            "KEYS *",
            "CONFIG GET maxmemory",
            "CLIENT KILL ID 1",
            "GET k",
        ],
    );
    assert_denies(
        &ops,
        &[
            "CONFIG SET maxmemory 0",
            "EVAL return 0",
            "FCALL f 0",
            "FLUSHDB",
            "FLUSHALL",
        ],
    );
}

#[test]
fn a_role_based_on_admin_skips_the_default_deny_list() {
    let roles = r#"
        [[roles]]
        name = "almost-admin"
        base = "admin"
        deny = ["shutdown"]
    "#;
    let role = principal_with("almost-admin", roles);
    assert_allows(&role, &["FLUSHALL", "CONFIG SET maxmemory 0", "KEYS *"]);
    assert_denies(&role, &["SHUTDOWN"]);
}

#[test]
fn a_grant_in_commands_cannot_undo_the_default_deny_list_and_says_so() {
    let roles = r#"
        [[roles]]
        name = "rw"
        base = "readwrite"
        commands = ["+flushdb", "+get"]
    "#;
    let (access, warnings) = compile(&format!(
        "[[users]]\nname = \"u\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"rw\"\n{roles}"
    ));
    let principal = access.authenticate(Some(b"u"), b"pw").unwrap();
    assert!(!allowed(&principal, "FLUSHDB"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("\"+flushdb\""), "{}", warnings[0]);
    assert!(warnings[0].contains("allow"), "{}", warnings[0]);
}

/// A user limited to `orders:*`, otherwise `readwrite`.
fn orders_user() -> Principal {
    principal_with(
        "orders",
        r#"
        [[roles]]
        name = "orders"
        base = "readwrite"
        keys = ["orders:*"]
        "#,
    )
}

#[test]
fn a_namespace_holds_for_every_key_position_of_multi_key_commands() {
    let orders = orders_user();
    assert_allows(
        &orders,
        &[
            "GET orders:1",
            "MSET orders:1 a orders:2 b",
            "MGET orders:1 orders:2",
            "DEL orders:1 orders:2",
            "EVAL return 2 orders:1 orders:2 users:1",
            "SORT orders:1 STORE orders:x",
            "SORT orders:1 BY nosort",
            "BLPOP orders:a orders:b 0",
            "XREAD STREAMS orders:s 0",
            "RENAME orders:a orders:b",
            "PING",
            "SCAN 0",
        ],
    );
    assert_denies(
        &orders,
        &[
            "GET users:1",
            "MGET orders:1 users:1",
            "MSET orders:1 a users:2 b",
            "EVAL return 2 orders:1 users:1",
            "EVALSHA abc 1 users:1",
            "SORT orders:1 STORE users:x",
            "SORT users:1",
            "BLPOP orders:a users:b 0",
            "XREAD STREAMS orders:s users:s 0 0",
            "RENAME orders:a users:b",
            "LMOVE orders:a users:b LEFT RIGHT",
            "BITOP AND users:d orders:a",
            "MIGRATE h 1 \"\" 0 10 KEYS orders:1 users:1",
        ],
    );
}

#[test]
fn a_key_refusal_reports_the_first_refused_key_and_its_position() {
    let orders = orders_user();
    let denied = check(&orders, "MGET orders:1 users:1 users:2").unwrap_err();
    assert_eq!(denied.kind(), DeniedKind::Key);
    assert_eq!(denied.refused(), Some(&b"users:1"[..]));
    assert_eq!(denied.position(), Some(2));
    assert_eq!(denied.command(), "mget");
    assert_eq!(denied.to_string(), "NOPERM No permissions to access a key");
    let denied = check(&orders, "SORT orders:1 STORE users:x").unwrap_err();
    assert_eq!(denied.refused(), Some(&b"users:x"[..]));
}

#[test]
fn sort_patterns_need_access_to_every_key() {
    let orders = orders_user();
    let denied = check(&orders, "SORT orders:1 BY orders:w_*").unwrap_err();
    assert_eq!(denied.kind(), DeniedKind::Key);
    assert_eq!(
        denied.to_string(),
        "ERR BY option of SORT denied due to insufficient ACL permissions."
    );
    let denied = check(&orders, "SORT_RO orders:1 LIMIT 0 10 ASC GET #").unwrap_err();
    assert_eq!(denied.refused(), Some(&b"#"[..]));
    assert_eq!(
        denied.to_string(),
        "ERR GET option of SORT denied due to insufficient ACL permissions."
    );
    // STORE's and LIMIT's values are not options, whatever they are called.
    assert!(allowed(&orders, "SORT orders:1 STORE orders:get"));
    assert!(allowed(&orders, "SORT orders:1 LIMIT 0 10 ALPHA DESC"));
    // With every key, patterns are fine.
    let readwrite = principal_with("readwrite", "");
    assert!(allowed(&readwrite, "SORT k BY w_* GET o_*"));
}

/// A user of Pub/Sub channels `news.*` and `chat:[0-9]` only.
fn news_user() -> Principal {
    principal_with(
        "news",
        r#"
        [[roles]]
        name = "news"
        commands = ["+@pubsub", "+@connection"]
        channels = ["news.*", "chat:[0-9]"]
        "#,
    )
}

#[test]
fn channels_are_matched_against_channel_patterns() {
    let news = news_user();
    assert_allows(
        &news,
        &[
            "PUBLISH news.sport m",
            "SPUBLISH news.x m",
            "SUBSCRIBE news.a chat:1",
            "SSUBSCRIBE news.b",
            "UNSUBSCRIBE anything",
            "PUNSUBSCRIBE any*",
        ],
    );
    assert_denies(
        &news,
        &[
            "PUBLISH sport m",
            "SPUBLISH chat:x m",
            "SUBSCRIBE news.a chat:12",
            "SSUBSCRIBE other",
            "GET news.a",
        ],
    );
    let denied = check(&news, "SUBSCRIBE news.a other").unwrap_err();
    assert_eq!(denied.kind(), DeniedKind::Channel);
    assert_eq!(denied.refused(), Some(&b"other"[..]));
    assert_eq!(denied.position(), Some(2));
    assert_eq!(
        denied.to_string(),
        "NOPERM No permissions to access a channel"
    );
}

#[test]
fn psubscribe_patterns_must_equal_a_permitted_pattern() {
    let news = news_user();
    assert!(allowed(&news, "PSUBSCRIBE news.*"));
    assert!(allowed(&news, "PSUBSCRIBE chat:[0-9] news.*"));
    // `news.a*` only matches news channels, but a pattern is never matched against patterns.
    assert!(!allowed(&news, "PSUBSCRIBE news.a*"));
    assert!(!allowed(&news, "PSUBSCRIBE *"));
    let everything = principal_with("readwrite", "");
    assert!(allowed(&everything, "PSUBSCRIBE *"));
}

#[test]
fn sharded_channels_are_channels_not_keys() {
    let role = r#"
        [[roles]]
        name = "r"
        commands = ["+@all"]
        keys = ["orders:*"]
        channels = ["*"]
    "#;
    let principal = principal_with("r", role);
    assert!(allowed(&principal, "SPUBLISH users.events m"));
    assert!(allowed(&principal, "SSUBSCRIBE users.events"));
}

#[test]
fn a_role_without_base_starts_from_nothing() {
    let principal = principal_with(
        "bare",
        "[[roles]]\nname = \"bare\"\ncommands = [\"+get\"]\n",
    );
    assert!(!allowed(&principal, "GET k"), "no key patterns: no keys");
    assert!(!allowed(&principal, "SET k v"));
    let principal = principal_with(
        "bare",
        "[[roles]]\nname = \"bare\"\ncommands = [\"+get\"]\nkeys = [\"k\"]\n",
    );
    assert!(allowed(&principal, "GET k"));
    assert!(!allowed(&principal, "GET k2"));
    assert!(!principal.may_run(cinnabar_commands::lookup(b"set").unwrap()));
    assert!(principal.may_run(cinnabar_commands::lookup(b"get").unwrap()));
}

#[test]
fn without_users_everyone_is_the_default_readwrite_user() {
    let (access, warnings) = compile("");
    assert!(warnings.is_empty());
    assert!(!access.auth_required());
    let principal = access.default_principal().unwrap();
    assert_eq!(
        (principal.user(), principal.role()),
        ("default", "readwrite")
    );
    assert!(allowed(&principal, "SET k v"));
    assert!(!allowed(&principal, "FLUSHALL"));
    // As Redis with a `nopass` default user.
    assert_eq!(
        access.authenticate(None, b"x").unwrap_err(),
        AuthError::NoPasswordConfigured
    );
    assert_eq!(
        access
            .authenticate(Some(b"default"), b"anything")
            .unwrap()
            .user(),
        "default"
    );
    assert_eq!(
        access.authenticate(Some(b"other"), b"x").unwrap_err(),
        AuthError::WrongPass
    );
    assert_eq!(access.principal("default").unwrap().role(), "readwrite");
    assert!(access.principal("other").is_none());
}

#[test]
fn unknown_user_wrong_password_and_disabled_user_get_the_same_error() {
    let (access, _) = compile(&format!(
        r#"
        [[users]]
        name = "app"
        password_sha256 = "{PW_SHA256}"
        role = "readwrite"

        [[users]]
        name = "old"
        password_sha256 = "{}"
        enabled = false
        role = "readwrite"

        [[users]]
        name = "default"
        password_sha256 = "{PW_SHA256}"
        role = "readonly"
        "#,
        PW_SHA256.to_ascii_uppercase()
    ));
    assert!(access.auth_required());
    assert!(access.default_principal().is_none());
    let unknown = access.authenticate(Some(b"nobody"), b"pw").unwrap_err();
    let wrong = access.authenticate(Some(b"app"), b"nope").unwrap_err();
    let disabled = access.authenticate(Some(b"old"), b"pw").unwrap_err();
    let not_utf8 = access.authenticate(Some(b"\xff"), b"pw").unwrap_err();
    for error in [unknown, wrong, disabled, not_utf8] {
        assert_eq!(error, AuthError::WrongPass);
        assert_eq!(
            error.to_string(),
            "WRONGPASS invalid username-password pair or user is disabled."
        );
    }
    assert_eq!(
        access.authenticate(Some(b"app"), b"pw").unwrap().user(),
        "app"
    );
    // `AUTH password` is the `default` user.
    let default = access.authenticate(None, b"pw").unwrap();
    assert_eq!((default.user(), default.role()), ("default", "readonly"));
    assert_eq!(
        access.authenticate(None, b"x").unwrap_err(),
        AuthError::WrongPass
    );
}

#[test]
fn without_a_configured_default_user_auth_with_a_password_only_fails() {
    let (access, _) = compile(&format!(
        "[[users]]\nname = \"app\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"readwrite\"\n"
    ));
    assert_eq!(
        access.authenticate(None, b"pw").unwrap_err(),
        AuthError::WrongPass
    );
}

#[test]
fn a_plain_text_password_works_with_a_warning_that_does_not_repeat_it() {
    let (access, warnings) =
        compile("[[users]]\nname = \"app\"\npassword = \"s3cret-value\"\nrole = \"readwrite\"\n");
    assert!(access.authenticate(Some(b"app"), b"s3cret-value").is_ok());
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("\"app\"") && warnings[0].contains("password_sha256"));
    assert!(!warnings[0].contains("s3cret-value"));
    assert!(!format!("{access:?}").contains("s3cret"));
}

#[test]
fn a_reload_hands_a_session_its_users_new_role() {
    let old_config = format!(
        "[[users]]\nname = \"app\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"readwrite\"\n"
    );
    let (old, _) = compile(&old_config);
    let session = old.authenticate(Some(b"app"), b"pw").unwrap();
    assert!(allowed(&session, "SET k v"));

    let (new, _) = compile(&old_config.replace("readwrite", "readonly"));
    let session = new.principal(session.user()).unwrap();
    assert_eq!(session.role(), "readonly");
    assert!(!allowed(&session, "SET k v"));

    let (disabled, _) = compile(&format!("{old_config}enabled = false\n"));
    assert!(disabled.principal("app").is_none());
    assert!(disabled.principal("gone").is_none());
}

#[test]
fn users_from_the_users_file_are_merged() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "[[users]]\nname = \"from-file\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"orders\"\n"
    )
    .unwrap();
    let config = format!(
        "users_file = {:?}\n[[users]]\nname = \"inline\"\npassword_sha256 = \"{PW_SHA256}\"\n\
         role = \"admin\"\n[[roles]]\nname = \"orders\"\nbase = \"readwrite\"\nkeys = [\"orders:*\"]\n",
        file.path()
    );
    let (access, _) = compile(&config);
    assert_eq!(
        access
            .authenticate(Some(b"from-file"), b"pw")
            .unwrap()
            .role(),
        "orders"
    );
    assert_eq!(
        access.authenticate(Some(b"inline"), b"pw").unwrap().role(),
        "admin"
    );

    // The same name in both places is an error naming both.
    let duplicate = config.replace("\"inline\"", "\"from-file\"");
    let error = compile_error(&duplicate);
    assert!(matches!(
        &error,
        AccessError::DuplicateUser { name, first: Origin::Config, second: Origin::UsersFile(_) }
            if name == "from-file"
    ));
    assert!(error.to_string().contains("users file"), "{error}");
}

#[test]
fn users_file_errors_name_the_file() {
    let missing = compile_error("users_file = \"/nonexistent/users.toml\"");
    assert!(matches!(missing, AccessError::ReadUsersFile { .. }));
    assert!(missing.to_string().contains("/nonexistent/users.toml"));

    let mut empty = tempfile::NamedTempFile::new().unwrap();
    writeln!(empty, "# nothing yet").unwrap();
    let error = compile_error(&format!("users_file = {:?}", empty.path()));
    assert!(
        matches!(error, AccessError::EmptyUsersFile { .. }),
        "{error}"
    );

    let mut bad = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        bad,
        "[[users]]\nname = \"a\"\nrole = \"admin\"\npasswd = \"x\""
    )
    .unwrap();
    let error = compile_error(&format!("users_file = {:?}", bad.path()));
    assert!(
        matches!(error, AccessError::ParseUsersFile { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("passwd"), "{error}");

    let mut unknown_role = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        unknown_role,
        "[[users]]\nname = \"a\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"nope\""
    )
    .unwrap();
    let error = compile_error(&format!("users_file = {:?}", unknown_role.path()));
    let text = error.to_string();
    assert!(text.starts_with("users file "), "{text}");
    assert!(
        text.contains("user \"a\": `role`: unknown role \"nope\""),
        "{text}"
    );
}

/// The (field, problem) of a user or role error.
fn field_and_problem(error: &AccessError) -> (&'static str, &Problem) {
    match error {
        AccessError::User { field, problem, .. } | AccessError::Role { field, problem, .. } => {
            (field, problem)
        }
        other => panic!("not a field error: {other}"),
    }
}

#[test]
fn configuration_errors_name_the_user_or_role_and_the_field() {
    let user = |fields: &str| compile_error(&format!("[[users]]\nname = \"app\"\n{fields}\n"));
    let role = |fields: &str| {
        compile_error(&format!(
            "[[roles]]\nname = \"r\"\n{fields}\n[[users]]\nname = \"app\"\n\
             password_sha256 = \"{PW_SHA256}\"\nrole = \"r\"\n"
        ))
    };

    let error = user(&format!(
        "password_sha256 = \"{PW_SHA256}\"\nrole = \"ordrs\""
    ));
    assert_eq!(
        error.to_string(),
        "[access.users]: user \"app\": `role`: unknown role \"ordrs\" (roles: admin, readwrite, \
         readonly)"
    );
    let error = user("password_sha256 = \"abc\"\nrole = \"admin\"");
    assert_eq!(field_and_problem(&error).0, "password_sha256");
    assert!(
        error.to_string().contains("64 hexadecimal digits"),
        "{error}"
    );
    assert!(
        !error.to_string().contains("abc"),
        "never quote a hash: {error}"
    );
    let error = user(&format!(
        "password_sha256 = \"{}\"\nrole = \"admin\"",
        "z".repeat(64)
    ));
    assert!(error.to_string().contains("non-hex"), "{error}");
    let error = user("role = \"admin\"");
    assert_eq!(
        field_and_problem(&error),
        ("password_sha256", &Problem::NoPassword)
    );
    let error = user(&format!(
        "password = \"x\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"admin\""
    ));
    assert_eq!(
        field_and_problem(&error),
        ("password", &Problem::TwoPasswords)
    );
    let error = compile_error(&format!(
        "[[users]]\nname = \"a b\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"admin\""
    ));
    assert_eq!(field_and_problem(&error), ("name", &Problem::BadName));

    let error = role("commands = [\"+@all\", \"+nosuchcommand\"]");
    assert_eq!(
        error.to_string(),
        "[access.roles]: role \"r\": `commands`: rule \"+nosuchcommand\": unknown command \
         `nosuchcommand`"
    );
    let error = role("commands = [\"+@nosuchcategory\"]");
    assert!(matches!(
        field_and_problem(&error),
        ("commands", Problem::Rule { reason: RuleError::UnknownCategory(c), .. }) if c == "nosuchcategory"
    ));
    let error = role("commands = [\"get\"]");
    assert!(
        error
            .to_string()
            .contains("starts with `+` (allow) or `-` (deny)"),
        "{error}"
    );
    let error = role("deny = [\"-get\"]");
    assert_eq!(field_and_problem(&error).0, "deny");
    let error = role("allow = [\"config|nope\"]");
    assert_eq!(field_and_problem(&error).0, "allow");
    assert!(
        error
            .to_string()
            .contains("unknown subcommand `nope` of `config`"),
        "{error}"
    );
    let error = role("keys = [\"orders:*\", \"\"]");
    assert_eq!(
        error.to_string(),
        "[access.roles]: role \"r\": `keys`: pattern \"\": empty pattern"
    );
    let error = role("channels = [\"news[\"]");
    assert_eq!(field_and_problem(&error).0, "channels");
    let error = role("base = \"r2\"");
    assert_eq!(
        error.to_string(),
        "[access.roles]: role \"r\": `base`: \"r2\" is not a built-in role (admin, readwrite, \
         readonly)"
    );

    let error = compile_error("[[roles]]\nname = \"readonly\"\n");
    assert_eq!(
        field_and_problem(&error),
        ("name", &Problem::BuiltinName("readonly".into()))
    );
    let error = compile_error("[[roles]]\nname = \"x\"\n[[roles]]\nname = \"x\"\n");
    assert_eq!(
        error.to_string(),
        "[access.roles]: role \"x\" is defined twice"
    );
    let error = compile_error(&format!(
        "[[users]]\nname = \"a\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"admin\"\n\
         [[users]]\nname = \"a\"\npassword = \"b\"\nrole = \"admin\"\n"
    ));
    assert_eq!(
        error.to_string(),
        "[access.users]: user \"a\" is already defined in [access.users]"
    );
}

#[test]
fn a_namespace_role_that_may_run_scripts_gets_a_warning() {
    let config = |extra: &str| {
        format!(
            "[[users]]\nname = \"u\"\npassword_sha256 = \"{PW_SHA256}\"\nrole = \"r\"\n\
             [[roles]]\nname = \"r\"\nbase = \"readwrite\"\nkeys = [\"orders:*\"]\n{extra}"
        )
    };
    let (_, warnings) = compile(&config(""));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("scripts") && warnings[0].contains("eval"),
        "{}",
        warnings[0]
    );
    let (_, warnings) = compile(&config("deny = [\"@scripting\"]\n"));
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn only_login_and_ping_run_before_login() {
    for (name, before) in [
        (&b"auth"[..], true),
        (b"hello", true),
        (b"ping", true),
        (b"quit", true),
        (b"get", false),
        (b"reset", false),
    ] {
        let command = cinnabar_commands::lookup(name).unwrap();
        assert_eq!(runs_before_login(command), before, "{}", command.name());
    }
}

#[test]
fn access_and_principals_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Access>();
    shared::<Principal>();
    shared::<Denied>();
    shared::<AccessError>();
}

#[test]
fn with_no_users_the_default_role_is_readwrite_unless_configured() {
    let (access, _) = compile("");
    let anyone = access.default_principal().unwrap();
    assert_eq!(anyone.role(), "readwrite");
    assert!(!allowed(&anyone, "FLUSHALL"));

    let (access, _) = compile("default_role = \"admin\"\n");
    let anyone = access.default_principal().unwrap();
    assert_eq!(anyone.role(), "admin");
    assert!(allowed(&anyone, "FLUSHALL"));

    let err = compile_error("default_role = \"superuser\"\n").to_string();
    assert!(
        err.starts_with("[access]: `default_role`: unknown role \"superuser\""),
        "{err}"
    );
}
