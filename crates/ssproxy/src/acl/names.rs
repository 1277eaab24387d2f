//! Name rules of one list: exact names and `||` suffixes in hash sets (a lookup costs one
//! hash per label of the name), every other regex in one compiled `RegexSet`.

use std::collections::HashSet;

use regex::bytes::{RegexSet, RegexSetBuilder};

/// Ceiling on the compiled size of one list's regexes together. Large enough for a
/// gfwlist-sized file of unconvertible regexes, small enough that a hostile file cannot
/// exhaust memory at load.
const REGEX_SIZE_LIMIT: usize = 512 << 20;

/// Compiles regexes the way every list does: searched anywhere in the name (like
/// libev's PCRE), ASCII case-insensitive, byte-oriented (`.` is any byte, `\w` ASCII).
pub(crate) fn compile_regexes<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// The name rules of one list.
#[derive(Debug, Clone)]
pub(crate) struct NameSet {
    exact: HashSet<Box<str>>,
    suffixes: HashSet<Box<str>>,
    regexes: RegexSet,
}

impl NameSet {
    /// Builds the set; `regexes` has been compiled by [`compile_regexes`].
    pub(crate) fn new(exact: HashSet<Box<str>>, suffixes: HashSet<Box<str>>, regexes: RegexSet) -> Self {
        NameSet {
            exact,
            suffixes,
            regexes,
        }
    }

    /// Whether `name` (already normalized by [`normalize_name`]) matches a rule.
    pub(crate) fn matches(&self, name: &str) -> bool {
        if self.exact.contains(name) {
            return true;
        }
        if !self.suffixes.is_empty() {
            let mut rest = name;
            loop {
                if self.suffixes.contains(rest) {
                    return true;
                }
                match rest.find('.') {
                    Some(dot) => rest = &rest[dot + 1..],
                    None => break,
                }
            }
        }
        self.regexes.is_match(name.as_bytes())
    }

    /// How many rules the set holds.
    pub(crate) fn len(&self) -> usize {
        self.exact.len() + self.suffixes.len() + self.regexes.len()
    }
}

/// A name in the form rules compare it in: ASCII lowercase, without the trailing dots of
/// a fully qualified name.
pub(crate) fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}
