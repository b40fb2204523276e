//! Key extraction: which arguments of a request are keys, found generically from the key
//! specifications (begin_search + find_keys), with small command-specific procedures where the
//! specs cannot be exact (`SORT … STORE`, `MIGRATE … KEYS`, `GEORADIUS … STORE`).
//!
//! Must never allocate, never panic and never yield an index outside the request, whatever the
//! client sent: a malformed request yields a subset of plausible positions and the server
//! reports the error.

use std::fmt;

use crate::args::Args;
use crate::flags::KeySpecFlags;
use crate::table::{BeginSearch, Command, FindKeys, KeyProc, KeySpec};

/// Iterator over the argument indices of a request's keys; see [`Command::keys`].
///
/// Borrows the request's [`Args`] (`A`, by default a slice of byte slices) and nothing else:
/// the command's key specs are `'static`.
pub struct KeyIter<'a, A: ?Sized = [&'a [u8]]> {
    cursor: Cursor<'a, A>,
}

impl<'a, A: Args + ?Sized> KeyIter<'a, A> {
    pub(crate) fn new(command: &Command, args: &'a A) -> Self {
        Self {
            cursor: Cursor::new(command, args),
        }
    }
}

impl<A: Args + ?Sized> Iterator for KeyIter<'_, A> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        self.cursor.next_key().map(|(index, _)| index)
    }
}

impl<A: ?Sized> Clone for KeyIter<'_, A> {
    fn clone(&self) -> Self {
        Self {
            cursor: self.cursor.clone(),
        }
    }
}

impl<A: Args + ?Sized> fmt::Debug for KeyIter<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyIter")
            .field("cursor", &self.cursor)
            .finish()
    }
}

/// Iterator over `(argument index, key-spec flags)` of a request's keys; see
/// [`Command::keys_with_flags`].
pub struct FlaggedKeyIter<'a, A: ?Sized = [&'a [u8]]> {
    cursor: Cursor<'a, A>,
}

impl<'a, A: Args + ?Sized> FlaggedKeyIter<'a, A> {
    pub(crate) fn new(command: &Command, args: &'a A) -> Self {
        Self {
            cursor: Cursor::new(command, args),
        }
    }
}

impl<A: Args + ?Sized> Iterator for FlaggedKeyIter<'_, A> {
    type Item = (usize, KeySpecFlags);

    #[inline]
    fn next(&mut self) -> Option<(usize, KeySpecFlags)> {
        self.cursor.next_key()
    }
}

impl<A: ?Sized> Clone for FlaggedKeyIter<'_, A> {
    fn clone(&self) -> Self {
        Self {
            cursor: self.cursor.clone(),
        }
    }
}

impl<A: Args + ?Sized> fmt::Debug for FlaggedKeyIter<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlaggedKeyIter")
            .field("cursor", &self.cursor)
            .finish()
    }
}

/// A run of key positions `next, next + step, …, <= last`; empty when `next > last`.
#[derive(Debug, Clone, Copy)]
struct Run {
    next: usize,
    last: usize,
    step: usize,
    flags: KeySpecFlags,
}

impl Run {
    const EMPTY: Run = Run {
        next: 1,
        last: 0,
        step: 1,
        flags: KeySpecFlags::EMPTY,
    };

    /// The run `first..=last` by `step`, or empty unless `1 <= first <= last < argc`.
    fn checked(first: i64, last: i64, step: i64, argc: usize, flags: KeySpecFlags) -> Run {
        let in_bounds = first >= 1 && first <= last && last < argc as i64 && step >= 1;
        if !in_bounds {
            return Run::EMPTY;
        }
        // In bounds of a slice length, so these fit in usize.
        Run {
            next: first as usize,
            last: last as usize,
            step: step as usize,
            flags,
        }
    }

    fn single(index: usize, argc: usize, flags: KeySpecFlags) -> Run {
        Run::checked(index as i64, index as i64, 1, argc, flags)
    }
}

/// The state shared by both iterators: the current run, a queued extra key, and the key specs
/// still to evaluate.
struct Cursor<'a, A: ?Sized> {
    args: &'a A,
    specs: &'static [KeySpec],
    next_spec: usize,
    run: Run,
    extra: Run,
}

impl<'a, A: Args + ?Sized> Cursor<'a, A> {
    fn new(command: &Command, args: &'a A) -> Self {
        let mut cursor = Cursor {
            args,
            specs: command.key_specs,
            next_spec: 0,
            run: Run::EMPTY,
            extra: Run::EMPTY,
        };
        if command.key_proc != KeyProc::None {
            cursor.specs = &[];
            (cursor.run, cursor.extra) = proc_runs(command.key_proc, command.key_specs, args);
        }
        cursor
    }

    fn next_key(&mut self) -> Option<(usize, KeySpecFlags)> {
        loop {
            if let Some(key) = take(&mut self.run) {
                return Some(key);
            }
            if let Some(key) = take(&mut self.extra) {
                return Some(key);
            }
            let spec = self.specs.get(self.next_spec)?;
            self.next_spec += 1;
            self.run = spec_run(spec, self.args);
        }
    }
}

// By hand: a derive would require `A: Clone` (a slice is not) where only `&A` is copied.
impl<A: ?Sized> Clone for Cursor<'_, A> {
    fn clone(&self) -> Self {
        Self {
            args: self.args,
            specs: self.specs,
            next_spec: self.next_spec,
            run: self.run,
            extra: self.extra,
        }
    }
}

// By hand: shows the argument count rather than requiring `A: Debug`.
impl<A: Args + ?Sized> fmt::Debug for Cursor<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("argc", &self.args.len())
            .field("specs", &self.specs)
            .field("next_spec", &self.next_spec)
            .field("run", &self.run)
            .field("extra", &self.extra)
            .finish()
    }
}

/// The next position of `run`, advancing it.
fn take(run: &mut Run) -> Option<(usize, KeySpecFlags)> {
    if run.next > run.last {
        return None;
    }
    let index = run.next;
    run.next = run.next.saturating_add(run.step);
    if run.next == index {
        // Saturated at usize::MAX: end the run rather than repeat.
        run.last = 0;
        run.next = 1;
    }
    Some((index, run.flags))
}

/// The keys one key spec finds in `args`, as Redis's key-spec walk defines them. A spec whose
/// search fails (keyword absent, `numkeys` not a number, positions past the end) finds nothing.
fn spec_run<A: Args + ?Sized>(spec: &KeySpec, args: &A) -> Run {
    let argc = args.len();
    let Some(first) = begin_search(spec.begin_search, args) else {
        return Run::EMPTY;
    };
    let (first, last, step) = match spec.find_keys {
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => {
            let last_key = i64::from(last_key);
            let last = if last_key >= 0 {
                first + last_key
            } else if limit == 0 {
                argc as i64 + last_key
            } else {
                // Only 1/limit of the remaining arguments are keys (XREAD … STREAMS k1 k2 i1 i2).
                first + (argc as i64 - first) / i64::from(limit) + last_key
            };
            (first, last, i64::from(key_step))
        }
        FindKeys::KeyNum {
            key_num_idx,
            first_key,
            key_step,
        } => {
            let num_index = first + i64::from(key_num_idx);
            let Some(count) = usize::try_from(num_index)
                .ok()
                .and_then(|i| args.get(i))
                .and_then(parse_count)
            else {
                return Run::EMPTY;
            };
            if count > argc as i64 {
                // More keys than arguments: a syntax error the server will report.
                return Run::EMPTY;
            }
            let step = i64::from(key_step);
            let first = first + i64::from(first_key);
            // count <= argc and |step| < 2^31, so this cannot overflow.
            let last = first + (count - 1) * step;
            (first, last, step)
        }
        FindKeys::Unknown => return Run::EMPTY,
    };
    Run::checked(first, last, step, argc, spec.flags)
}

/// Where a key spec's search begins, or `None` when it finds no place.
fn begin_search<A: Args + ?Sized>(begin: BeginSearch, args: &A) -> Option<i64> {
    let argc = args.len() as i64;
    match begin {
        BeginSearch::Index { pos } => Some(i64::from(pos)),
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => {
            let keyword = keyword.as_bytes();
            let start_from = i64::from(start_from);
            let is_keyword = |i: &i64| {
                usize::try_from(*i)
                    .ok()
                    .and_then(|i| args.get(i))
                    .is_some_and(|arg| arg.eq_ignore_ascii_case(keyword))
            };
            // Forwards: from start_from up to (not including) the last argument, which could
            // not be followed by a key. Backwards: from argc + start_from down to 1.
            let found = if start_from > 0 {
                (start_from..argc - 1).find(is_keyword)
            } else {
                (1..=argc + start_from).rev().find(is_keyword)
            };
            found.map(|i| i + 1)
        }
        BeginSearch::Unknown => None,
    }
}

/// A non-negative `numkeys` in Redis's strict integer syntax (no sign, no spaces, no leading
/// zeros); `None` for anything else and for zero, which means "no keys".
fn parse_count(arg: &[u8]) -> Option<i64> {
    if arg.is_empty() || arg.len() > 18 || (arg.len() > 1 && arg[0] == b'0') {
        return None;
    }
    let mut value: i64 = 0;
    for &b in arg {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    (value > 0).then_some(value)
}

/// The runs of a command with its own key procedure: (main run, one extra key).
fn proc_runs<A: Args + ?Sized>(proc: KeyProc, specs: &'static [KeySpec], args: &A) -> (Run, Run) {
    let argc = args.len();
    let flags_of = |i: usize| specs.get(i).map_or(KeySpecFlags::EMPTY, |s| s.flags);
    match proc {
        KeyProc::None => (Run::EMPTY, Run::EMPTY),
        KeyProc::SortRo => (Run::single(1, argc, flags_of(0)), Run::EMPTY),
        KeyProc::Sort => {
            let store =
                sort_store_key(args).map_or(Run::EMPTY, |i| Run::single(i, argc, flags_of(2)));
            (Run::single(1, argc, flags_of(0)), store)
        }
        KeyProc::GeoRadius => {
            let store =
                georadius_store_key(args).map_or(Run::EMPTY, |i| Run::single(i, argc, flags_of(1)));
            (Run::single(1, argc, flags_of(0)), store)
        }
        KeyProc::Migrate => (migrate_keys(args, flags_of(0)), Run::EMPTY),
    }
}

/// `SORT key [BY pattern] [LIMIT offset count] [GET pattern …] [ASC|DESC] [ALPHA] [STORE dest]`:
/// the destination of the last `STORE`. `BY`, `GET` and `LIMIT` arguments are skipped so a
/// pattern spelled `store` is not taken for the keyword.
fn sort_store_key<A: Args + ?Sized>(args: &A) -> Option<usize> {
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let arg = args.get(i).unwrap_or_default();
        if arg.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"get") || arg.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if arg.eq_ignore_ascii_case(b"store") && i + 1 < args.len() {
            store = Some(i + 1);
        }
        i += 1;
    }
    store
}

/// `GEORADIUS key lon lat radius unit …` / `GEORADIUSBYMEMBER key member radius unit …`: the
/// destination of the last `STORE` or `STOREDIST` (the command keeps only the last one).
fn georadius_store_key<A: Args + ?Sized>(args: &A) -> Option<usize> {
    let mut store = None;
    let mut i = 5;
    while i < args.len() {
        let arg = args.get(i).unwrap_or_default();
        if (arg.eq_ignore_ascii_case(b"store") || arg.eq_ignore_ascii_case(b"storedist"))
            && i + 1 < args.len()
        {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    store
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw] [KEYS k …]`:
/// the single key at 3, or — when it is the empty string — every argument after `KEYS`.
fn migrate_keys<A: Args + ?Sized>(args: &A, flags: KeySpecFlags) -> Run {
    let argc = args.len();
    match args.get(3) {
        None => Run::EMPTY,
        Some(key) if !key.is_empty() => Run::single(3, argc, flags),
        Some(_) => {
            let mut i = 6;
            while i < argc {
                let arg = args.get(i).unwrap_or_default();
                if arg.eq_ignore_ascii_case(b"keys") {
                    return Run::checked(i as i64 + 1, argc as i64 - 1, 1, argc, flags);
                } else if arg.eq_ignore_ascii_case(b"auth") {
                    i += 1;
                } else if arg.eq_ignore_ascii_case(b"auth2") {
                    i += 2;
                }
                i += 1;
            }
            Run::EMPTY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::{commands, lookup, resolve};
    use proptest::prelude::*;

    /// Splits a request written like redis-cli input; `""` is an empty argument.
    fn request(line: &str) -> Vec<&[u8]> {
        line.split_whitespace()
            .map(|word| match word {
                "\"\"" => b"".as_slice(),
                word => word.as_bytes(),
            })
            .collect()
    }

    /// The key indices of the request `line`.
    fn keys_of(line: &str) -> Vec<usize> {
        let args = request(line);
        let command = resolve(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
        command.keys(&args).collect()
    }

    #[test]
    fn fixed_positions_follow_the_key_specs() {
        assert_eq!(keys_of("GET k"), [1]);
        assert_eq!(keys_of("SET k v EX 10 GET"), [1]);
        assert_eq!(keys_of("DEL a b c"), [1, 2, 3]);
        assert_eq!(keys_of("RENAME a b"), [1, 2]);
        assert_eq!(keys_of("SMOVE a b member"), [1, 2]);
        assert_eq!(keys_of("BITOP AND dest a b"), [2, 3, 4]);
        assert_eq!(keys_of("BITFIELD k GET u8 0 INCRBY u8 0 1"), [1]);
        assert_eq!(keys_of("LCS a b LEN"), [1, 2]);
        assert_eq!(keys_of("PING"), Vec::<usize>::new());
        assert_eq!(keys_of("WATCH a b"), [1, 2]);
    }

    #[test]
    fn mset_takes_every_other_argument() {
        assert_eq!(keys_of("MSET a 1 b 2 c 3"), [1, 3, 5]);
        assert_eq!(keys_of("MSETNX a 1 b 2"), [1, 3]);
    }

    #[test]
    fn blocking_pops_exclude_the_trailing_timeout() {
        assert_eq!(keys_of("BLPOP a b 0"), [1, 2]);
        assert_eq!(keys_of("BRPOP a 1.5"), [1]);
        assert_eq!(keys_of("BZPOPMIN z1 z2 z3 0"), [1, 2, 3]);
        assert_eq!(keys_of("BRPOPLPUSH src dst 0"), [1, 2]);
        assert_eq!(keys_of("BLMOVE src dst LEFT RIGHT 0"), [1, 2]);
    }

    #[test]
    fn scripts_and_functions_take_numkeys_keys() {
        assert_eq!(keys_of("EVAL script 2 k1 k2 a1 a2"), [3, 4]);
        assert_eq!(keys_of("EVAL script 0 a1"), Vec::<usize>::new());
        assert_eq!(keys_of("EVALSHA sha 1 k a"), [3]);
        assert_eq!(keys_of("EVAL_RO script 1 k"), [3]);
        assert_eq!(keys_of("EVALSHA_RO sha 2 k1 k2"), [3, 4]);
        assert_eq!(keys_of("FCALL f 2 k1 k2 a"), [3, 4]);
        assert_eq!(keys_of("FCALL_RO f 1 k"), [3]);
    }

    #[test]
    fn malformed_numkeys_yield_no_keys() {
        assert_eq!(keys_of("EVAL script 3 k1 k2"), Vec::<usize>::new());
        assert_eq!(keys_of("EVAL script -1 k1"), Vec::<usize>::new());
        assert_eq!(keys_of("EVAL script 01 k1"), Vec::<usize>::new());
        assert_eq!(keys_of("EVAL script x k1"), Vec::<usize>::new());
        assert_eq!(
            keys_of("EVAL script 99999999999999999999 k1"),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn stream_reads_take_the_first_half_after_streams() {
        assert_eq!(keys_of("XREAD STREAMS k 0"), [2]);
        assert_eq!(keys_of("XREAD COUNT 2 BLOCK 0 STREAMS k1 k2 0 0"), [6, 7]);
        assert_eq!(keys_of("xread streams a b c $ $ $"), [2, 3, 4]);
        assert_eq!(
            keys_of("XREADGROUP GROUP g c COUNT 1 STREAMS k1 k2 > >"),
            [7, 8]
        );
        // A consumer named STREAMS sits before the search start and is not the keyword.
        assert_eq!(keys_of("XREADGROUP GROUP g STREAMS STREAMS k >"), [5]);
    }

    #[test]
    fn sorted_set_stores_take_the_destination_then_numkeys_sources() {
        assert_eq!(keys_of("ZUNIONSTORE dest 2 a b WEIGHTS 1 2"), [1, 3, 4]);
        assert_eq!(keys_of("ZINTERSTORE dest 1 a AGGREGATE MAX"), [1, 3]);
        assert_eq!(keys_of("ZDIFFSTORE dest 3 a b c"), [1, 3, 4, 5]);
    }

    #[test]
    fn numkeys_commands_take_numkeys_keys() {
        assert_eq!(keys_of("ZUNION 2 a b WITHSCORES"), [2, 3]);
        assert_eq!(keys_of("ZINTER 1 a"), [2]);
        assert_eq!(keys_of("ZDIFF 2 a b"), [2, 3]);
        assert_eq!(keys_of("SINTERCARD 2 a b LIMIT 1"), [2, 3]);
        assert_eq!(keys_of("ZINTERCARD 3 a b c"), [2, 3, 4]);
        assert_eq!(keys_of("LMPOP 2 a b LEFT COUNT 1"), [2, 3]);
        assert_eq!(keys_of("ZMPOP 1 z MIN"), [2]);
        assert_eq!(keys_of("BLMPOP 0.5 2 a b LEFT"), [3, 4]);
        assert_eq!(keys_of("BZMPOP 0 1 z MAX COUNT 2"), [3]);
    }

    #[test]
    fn migrate_takes_the_key_or_everything_after_keys() {
        assert_eq!(keys_of("MIGRATE host 6379 key 0 1000"), [3]);
        assert_eq!(keys_of("MIGRATE host 6379 key 0 1000 COPY REPLACE"), [3]);
        assert_eq!(
            keys_of("MIGRATE host 6379 \"\" 0 1000 COPY REPLACE AUTH pw KEYS a b"),
            [11, 12]
        );
        // A password spelled "keys" is skipped, not taken for the keyword.
        assert_eq!(keys_of("MIGRATE h p \"\" 0 1000 AUTH keys KEYS a"), [9]);
        assert_eq!(
            keys_of("MIGRATE h p \"\" 0 1000 AUTH2 keys keys KEYS a"),
            [10]
        );
        assert_eq!(keys_of("MIGRATE h p \"\" 0 1000"), Vec::<usize>::new());
    }

    #[test]
    fn sort_takes_the_key_and_the_last_store_destination() {
        assert_eq!(keys_of("SORT k"), [1]);
        assert_eq!(keys_of("SORT k ALPHA DESC STORE dst"), [1, 5]);
        assert_eq!(
            keys_of("SORT k BY w_* GET store LIMIT 0 10 STORE dst"),
            [1, 10]
        );
        assert_eq!(keys_of("SORT k STORE a STORE b"), [1, 5]);
        assert_eq!(keys_of("SORT k STORE"), [1]);
        assert_eq!(keys_of("SORT_RO k BY w_* GET store"), [1]);
    }

    #[test]
    fn georadius_takes_the_key_and_the_last_store_destination() {
        assert_eq!(keys_of("GEORADIUS k 0 0 10 km"), [1]);
        assert_eq!(keys_of("GEORADIUS k 0 0 10 km STORE dst"), [1, 7]);
        assert_eq!(
            keys_of("GEORADIUS k 0 0 10 km WITHDIST COUNT 3 STOREDIST dst"),
            [1, 10]
        );
        assert_eq!(keys_of("GEORADIUS k 0 0 10 km STORE a STOREDIST b"), [1, 9]);
        assert_eq!(keys_of("GEORADIUSBYMEMBER k m 10 km STOREDIST d"), [1, 6]);
        assert_eq!(keys_of("GEORADIUS_RO k 0 0 10 km"), [1]);
        assert_eq!(
            keys_of("GEOSEARCHSTORE dst src FROMMEMBER m BYRADIUS 1 km"),
            [1, 2]
        );
    }

    #[test]
    fn subcommands_find_their_keys_after_the_subcommand() {
        assert_eq!(keys_of("OBJECT ENCODING k"), [2]);
        assert_eq!(keys_of("object freq k"), [2]);
        assert_eq!(keys_of("MEMORY USAGE k SAMPLES 5"), [2]);
        assert_eq!(keys_of("XINFO STREAM k FULL"), [2]);
        assert_eq!(keys_of("XINFO GROUPS k"), [2]);
        assert_eq!(keys_of("XINFO CONSUMERS k g"), [2]);
        assert_eq!(keys_of("XGROUP CREATE k g $"), [2]);
        assert_eq!(keys_of("CONFIG GET maxmemory"), Vec::<usize>::new());
    }

    #[test]
    fn sharded_channels_are_yielded_and_flagged_not_key() {
        assert_eq!(keys_of("SSUBSCRIBE a b"), [1, 2]);
        let args = request("SPUBLISH ch msg");
        let command = resolve(&args).expect("spublish");
        let keys: Vec<_> = command.keys_with_flags(&args).collect();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, 1);
        assert!(keys[0].1.contains(KeySpecFlags::NOT_KEY));
    }

    #[test]
    fn flags_come_from_the_spec_that_found_the_key() {
        let args = request("ZUNIONSTORE dest 1 src");
        let command = resolve(&args).expect("zunionstore");
        let keys: Vec<_> = command.keys_with_flags(&args).collect();
        assert!(keys[0].1.contains(KeySpecFlags::OW));
        assert!(keys[1].1.contains(KeySpecFlags::RO));
        let args = request("SORT k STORE d");
        let command = resolve(&args).expect("sort");
        let keys: Vec<_> = command.keys_with_flags(&args).collect();
        assert_eq!(keys[0], (1, KeySpecFlags::RO | KeySpecFlags::ACCESS));
        assert_eq!(keys[1], (3, KeySpecFlags::OW | KeySpecFlags::UPDATE));
    }

    #[test]
    fn every_spec_the_server_cannot_describe_has_a_key_procedure() {
        let all = commands()
            .iter()
            .flat_map(|c| std::iter::once(c).chain(c.subcommands()));
        for command in all {
            let inexact = command.key_specs().iter().any(|spec| {
                spec.begin_search == BeginSearch::Unknown
                    || spec.find_keys == FindKeys::Unknown
                    || spec.flags.contains(KeySpecFlags::INCOMPLETE)
            });
            if inexact {
                assert_ne!(command.key_proc(), KeyProc::None, "{}", command.name());
            }
        }
    }

    /// Arguments drawn from the words key extraction reacts to, numbers, and random bytes.
    fn argument() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                "STREAMS",
                "KEYS",
                "STORE",
                "STOREDIST",
                "LIMIT",
                "GET",
                "BY",
                "AUTH",
                "AUTH2",
                "0",
                "1",
                "2",
                "3",
                "-1",
                "",
                "k",
            ])
            .prop_map(|w| w.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..4),
        ]
    }

    proptest! {
        #[test]
        fn key_extraction_never_panics_nor_leaves_the_request(
            pick in any::<prop::sample::Index>(),
            sub_pick in any::<prop::sample::Index>(),
            tail in prop::collection::vec(argument(), 0..12),
        ) {
            let command = pick.get(commands());
            let (command, name_args): (&Command, Vec<&[u8]>) = if command.is_container() {
                let sub = sub_pick.get(command.subcommands());
                let sub_name = sub.subcommand_name().unwrap_or_default();
                (sub, vec![command.name().as_bytes(), sub_name.as_bytes()])
            } else {
                (command, vec![command.name().as_bytes()])
            };
            let mut args = name_args;
            args.extend(tail.iter().map(Vec::as_slice));
            for index in command.keys(&args) {
                prop_assert!(index >= 1 && index < args.len(), "{} {index}", command.name());
            }
            for full in [&args[..], &args[..args.len().min(1)], &[]] {
                prop_assert!(command.keys(full).all(|i| i < full.len()));
            }
        }
    }

    /// The shortcut `slot_by` takes for single-key commands must find what the key-spec walk
    /// finds, for every command it applies to and every argument count around its key.
    #[test]
    fn the_single_key_shortcut_agrees_with_the_key_spec_walk() {
        let all = commands()
            .iter()
            .chain(commands().iter().flat_map(Command::subcommands));
        let mut shortcuts = 0;
        for command in all {
            let Some(index) = command.single_key_index() else {
                continue;
            };
            shortcuts += 1;
            let args: Vec<Vec<u8>> = (0..index + 3)
                .map(|i| format!("a{i}").into_bytes())
                .collect();
            for argc in 0..=args.len() {
                let args: Vec<&[u8]> = args[..argc].iter().map(Vec::as_slice).collect();
                let mut walk = Cursor::new(command, &args[..]);
                let mut walked = Vec::new();
                while let Some((i, _)) = walk.next_key() {
                    walked.push(i);
                }
                let expected: Vec<usize> = (index < argc).then_some(index).into_iter().collect();
                assert_eq!(walked, expected, "{} with {argc} arguments", command.name());
                let slot = command.slot(&args[..]).unwrap_or_else(|e| panic!("{e}"));
                let walked_slot = walked.first().map(|&i| crate::slot::key_slot(args[i]));
                assert_eq!(
                    slot,
                    walked_slot,
                    "{} with {argc} arguments",
                    command.name()
                );
            }
        }
        assert!(
            shortcuts > 100,
            "only {shortcuts} commands take the shortcut"
        );
        for name in ["get", "set", "incr", "hget", "lpush", "expire"] {
            let command = lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(command.single_key_index(), Some(1), "{name}");
        }
        for name in [
            "del", "mset", "eval", "xread", "sort", "migrate", "rename", "ping",
        ] {
            let command = lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(command.single_key_index(), None, "{name}");
        }
    }
}
