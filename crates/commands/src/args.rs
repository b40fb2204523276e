//! [`Args`]: a request's arguments however the caller stores them, so resolution, key
//! extraction and slot hashing never need a `Vec<&[u8]>` built per request.
//!
//! Must never allocate or copy argument bytes: implementations hand out borrowed slices, and
//! everything in this crate reads arguments only through [`Args::len`] and [`Args::get`].

/// A command's arguments, however they are stored. Index 0 is the command name.
///
/// Implemented for slices, arrays and vectors of anything that is `AsRef<[u8]>` (`&[u8]`,
/// `Vec<u8>`, `&str`, `String` …) and for references to any `Args`. A parser that keeps
/// argument *ranges* into a shared read buffer implements it in a few lines and passes its
/// requests to [`resolve`](crate::resolve), [`Command::keys`](crate::Command::keys) and
/// [`Command::slot`](crate::Command::slot) without building a `Vec<&[u8]>`:
///
/// ```
/// use std::ops::Range;
///
/// use cinnabar_commands::{Args, key_slot, resolve};
///
/// /// Arguments as ranges into a read buffer, the way a RESP parser finds them.
/// struct Ranges<'a> {
///     buf: &'a [u8],
///     ranges: &'a [Range<usize>],
/// }
///
/// impl Args for Ranges<'_> {
///     fn len(&self) -> usize {
///         self.ranges.len()
///     }
///
///     fn get(&self, index: usize) -> Option<&[u8]> {
///         self.buf.get(self.ranges.get(index)?.clone())
///     }
/// }
///
/// let buf = b"*3\r\n$3\r\nSET\r\n$6\r\n{u1}.a\r\n$1\r\n1\r\n";
/// let args = Ranges { buf, ranges: &[8..11, 17..23, 29..30] };
/// let command = resolve(&args)?;
/// assert_eq!(command.name(), "set");
/// assert!(command.keys(&args).eq([1]));
/// assert_eq!(command.slot(&args)?, Some(key_slot(b"u1")));
/// # Ok::<(), cinnabar_commands::CommandError>(())
/// ```
///
/// Implementations must be consistent: [`get`](Self::get) returns `Some` for every index below
/// [`len`](Self::len) and `None` from there on. They should be cheap (an index and a bounds
/// check): resolution and key extraction call `get` once per argument they look at. An
/// inconsistent implementation cannot make this crate panic or yield an index past `len()`;
/// an argument `get` refuses counts as absent or empty (and is never hashed by `slot`).
pub trait Args {
    /// The number of arguments, the command name included.
    fn len(&self) -> usize;

    /// The argument at `index` (0 is the command name); `None` when `index >= len()`.
    fn get(&self, index: usize) -> Option<&[u8]>;

    /// Whether there are no arguments at all (not even a command name).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: AsRef<[u8]>> Args for [T] {
    #[inline]
    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    #[inline]
    fn get(&self, index: usize) -> Option<&[u8]> {
        <[T]>::get(self, index).map(AsRef::as_ref)
    }
}

impl<T: AsRef<[u8]>, const N: usize> Args for [T; N] {
    #[inline]
    fn len(&self) -> usize {
        N
    }

    #[inline]
    fn get(&self, index: usize) -> Option<&[u8]> {
        self.as_slice().get(index).map(AsRef::as_ref)
    }
}

impl<T: AsRef<[u8]>> Args for Vec<T> {
    #[inline]
    fn len(&self) -> usize {
        Vec::len(self)
    }

    #[inline]
    fn get(&self, index: usize) -> Option<&[u8]> {
        self.as_slice().get(index).map(AsRef::as_ref)
    }
}

impl<A: Args + ?Sized> Args for &A {
    #[inline]
    fn len(&self) -> usize {
        A::len(self)
    }

    #[inline]
    fn get(&self, index: usize) -> Option<&[u8]> {
        A::get(self, index)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;
    use crate::error::CommandError;
    use crate::flags::KeySpecFlags;
    use crate::lookup::{commands, resolve, resolve_for};
    use crate::server::Server;
    use crate::slot::key_slot;
    use proptest::prelude::*;

    fn collect<A: Args + ?Sized>(args: &A) -> Vec<Vec<u8>> {
        (0..args.len())
            .map(|i| args.get(i).expect("in bounds").to_vec())
            .collect()
    }

    #[test]
    fn every_provided_impl_reads_the_same_arguments() {
        let expected = vec![b"GET".to_vec(), b"k".to_vec()];
        let slices: [&[u8]; 2] = [b"GET", b"k"];
        assert_eq!(collect(&slices), expected);
        assert_eq!(collect(&slices[..]), expected);
        assert_eq!(collect(&&slices[..]), expected);
        assert_eq!(collect(&slices.to_vec()), expected);
        assert_eq!(collect(&expected), expected);
        assert_eq!(collect(&expected[..]), expected);
        assert_eq!(collect(&["GET", "k"]), expected);
        assert_eq!(collect(&[String::from("GET"), String::from("k")]), expected);
        assert_eq!(Args::get(&slices, 2), None);
        assert_eq!(Args::get(&expected, 2), None);
        assert!(!Args::is_empty(&slices));
        assert!(Args::is_empty(&[] as &[&[u8]]));
        assert!(Args::is_empty(&Vec::<Vec<u8>>::new()));
    }

    /// The proxy's shape: one read buffer holding the whole RESP request, and the range of
    /// each argument in it.
    struct Ranged {
        buf: Vec<u8>,
        ranges: Vec<Range<usize>>,
    }

    impl Ranged {
        /// `args` encoded as a RESP multibulk, remembering where each argument's bytes are.
        fn encode<A: AsRef<[u8]>>(args: &[A]) -> Ranged {
            let mut buf = format!("*{}\r\n", args.len()).into_bytes();
            let mut ranges = Vec::new();
            for arg in args {
                let arg = arg.as_ref();
                buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                ranges.push(buf.len()..buf.len() + arg.len());
                buf.extend_from_slice(arg);
                buf.extend_from_slice(b"\r\n");
            }
            Ranged { buf, ranges }
        }
    }

    impl Args for Ranged {
        fn len(&self) -> usize {
            self.ranges.len()
        }

        fn get(&self, index: usize) -> Option<&[u8]> {
            self.buf.get(self.ranges.get(index)?.clone())
        }
    }

    #[test]
    fn a_range_based_request_resolves_and_routes_without_a_slice_vector() {
        let mset = Ranged::encode(&["mset", "{u1}.a", "1", "{u1}.b", "2"]);
        let command = resolve(&mset).expect("mset");
        assert_eq!(command.name(), "mset");
        assert!(command.keys(&mset).eq([1, 3]));
        assert_eq!(command.slot(&mset), Ok(Some(key_slot(b"u1"))));
        let flagged: Vec<_> = command.keys_with_flags(&mset).collect();
        assert_eq!(flagged.len(), 2);
        assert!(
            flagged
                .iter()
                .all(|(_, flags)| flags.contains(KeySpecFlags::OW))
        );

        let cross = Ranged::encode(&["MSET", "a", "1", "b", "2"]);
        assert_eq!(command.slot(&cross), Err(CommandError::CrossSlot));

        let config = Ranged::encode(&["CONFIG", "get", "maxmemory"]);
        let command = resolve_for(Server::Valkey8, &config).expect("config get");
        assert_eq!(command.name(), "config|get");
        assert_eq!(command.slot(&config), Ok(None));

        let xread = Ranged::encode(&["XREAD", "COUNT", "2", "STREAMS", "{s}1", "{s}2", "0", "0"]);
        let command = resolve(&xread).expect("xread");
        assert!(command.keys(&xread).eq([4, 5]));
        assert_eq!(command.slot(&xread), Ok(Some(key_slot(b"s"))));

        let sort = Ranged::encode(&["SORT", "{t}k", "BY", "store", "STORE", "{t}d"]);
        let command = resolve(&sort).expect("sort");
        assert!(command.keys(&sort).eq([1, 5]));

        // Through a reference too, as a caller holding `&Ranged` passes it on.
        let by_ref = &mset;
        assert!(resolve(&by_ref).expect("mset").keys(&by_ref).eq([1, 3]));
    }

    #[test]
    fn a_range_based_request_gets_the_same_errors() {
        let unknown = Ranged::encode(&["FOO", "a", "b"]);
        assert_eq!(
            resolve(&unknown).expect_err("unknown").to_string(),
            "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
        );
        let sub = Ranged::encode(&["config", "X"]);
        assert_eq!(
            resolve(&sub).expect_err("unknown").to_string(),
            "ERR unknown subcommand 'X'. Try CONFIG HELP."
        );
        let arity = Ranged::encode(&["GET"]);
        assert_eq!(
            resolve(&arity).expect_err("arity").to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
        let empty = Ranged::encode::<&str>(&[]);
        assert_eq!(resolve(&empty), Err(CommandError::Empty));
    }

    /// Arguments key extraction reacts to, and random bytes (CR/LF included).
    fn argument() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                "STREAMS", "KEYS", "STORE", "LIMIT", "GET", "AUTH", "0", "1", "2", "", "{k}",
            ])
            .prop_map(|w| w.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..6),
        ]
    }

    proptest! {
        #[test]
        fn ranges_and_slices_give_the_same_answers(
            pick in any::<prop::sample::Index>(),
            sub_pick in any::<prop::sample::Index>(),
            tail in prop::collection::vec(argument(), 0..10),
        ) {
            let mut command = pick.get(commands());
            let mut args: Vec<Vec<u8>> = vec![command.name().as_bytes().to_vec()];
            if command.is_container() {
                command = sub_pick.get(command.subcommands());
                args.push(command.subcommand_name().unwrap_or_default().as_bytes().to_vec());
            }
            args.extend(tail);
            let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let ranged = Ranged::encode(&args);
            prop_assert_eq!(collect(&ranged), args.clone());
            let resolved = resolve(&slices);
            prop_assert_eq!(resolve(&ranged), resolved.clone());
            prop_assert_eq!(resolve(&args), resolved);
            // Key extraction of the picked entry whether or not the arity fits.
            let expected: Vec<_> = command.keys_with_flags(&slices).collect();
            prop_assert_eq!(command.keys_with_flags(&ranged).collect::<Vec<_>>(), expected);
            prop_assert_eq!(command.slot(&ranged), command.slot(&slices));
        }
    }
}
