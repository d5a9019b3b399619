//! The text of a rebuild's cell: short text held in place, longer text
//! boxed.
//!
//! A rebuild holds hundreds of thousands of rows and most of their text is
//! short (statuses, delivery states and details, role lists, channels,
//! names). Boxed, each of those was an allocation to make and free, and a
//! pointer to follow into memory written long before when the row is
//! finally written: in a profile of the end of a million-event replay on
//! SQLite, a quarter of the samples were the copy of such text into
//! SQLite, waiting on memory. Held in the cell itself it comes with the row.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Bytes of text a cell holds in place: a cell stays 24 bytes (see the
/// size test below).
const SHORT: usize = 22;

/// Text of a cell. Equal, ordered and hashed as its `str`, whichever way
/// it is held.
#[derive(Clone)]
pub(super) enum Text {
    /// Up to [`SHORT`] bytes of UTF-8, in place.
    Short { len: u8, bytes: [u8; SHORT] },
    /// Longer text.
    Long(Box<str>),
}

impl Text {
    /// The text.
    pub(super) fn as_str(&self) -> &str {
        match self {
            // SAFETY: `bytes[..len]` is a copy of a `str` (see `From<&str>`).
            Text::Short { len, bytes } => unsafe { std::str::from_utf8_unchecked(&bytes[..*len as usize]) },
            Text::Long(s) => s,
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        if s.len() <= SHORT {
            let mut bytes = [0; SHORT];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text::Short { len: s.len() as u8, bytes }
        } else {
            Text::Long(s.into())
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        if s.len() <= SHORT {
            Text::from(s.as_str())
        } else {
            Text::Long(s.into_boxed_str())
        }
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_cell_stays_three_words() {
        assert_eq!(std::mem::size_of::<super::super::Cell>(), 24);
    }

    proptest! {
        /// Short or long, text reads back as given, and compares, orders
        /// and hashes as its `str`.
        #[test]
        fn text_is_its_str(a in ".{0,40}", b in ".{0,40}") {
            let (ta, tb) = (Text::from(a.as_str()), Text::from(b.clone()));
            prop_assert_eq!(ta.as_str(), a.as_str());
            prop_assert_eq!(tb.as_str(), b.as_str());
            prop_assert_eq!(ta == tb, a == b);
            prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
            use std::hash::BuildHasher;
            let state = std::collections::hash_map::RandomState::new();
            prop_assert_eq!(state.hash_one(&ta), state.hash_one(a.as_str()));
        }
    }
}
