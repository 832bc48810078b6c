//! `allowedPattern` checking on `regex-lite`, whose Pike VM keeps matching linear in the input
//! whatever the pattern. regex-lite's syntax is close to RE2's but not the same, so a short
//! scanner first holds the pattern to the subset both read alike and rewrites it into the
//! spelling regex-lite gives the RE2 meaning (RE2's `\s`, superfluous escapes such as `\<`,
//! `[` and `&&` inside classes); a size limit then bounds what counted repetitions expand to.

use std::fmt;
use std::fmt::Write as _;

use regex_lite::{Regex, RegexBuilder};

use super::DocumentError;

/// RE2's own limit on `{n,m}` counts: a larger count is refused there too.
const MAX_REPEAT: u32 = 1000;
/// Group nesting limit, so a hostile pattern cannot exhaust regex-lite's recursion.
const MAX_DEPTH: usize = 64;
/// regex-lite's nesting limit: a group level adds at most a repetition, an alternation and a
/// concatenation around its contents, so this leaves room to spare.
const NEST_LIMIT: u32 = 4 * MAX_DEPTH as u32;
/// Bytes the compiled program may occupy: about 10 000 single-character steps (an NFA state
/// is 32 bytes, a class adds 8 per range), which is what bounds `(a{1000}){1000}` and so the
/// time a match can take.
const SIZE_LIMIT: usize = 320 * 1024;
/// RE2's `\s` (tab, newline, form feed, carriage return, space) as class items: regex-lite's
/// also holds the vertical tab.
const SPACE: &str = "\\t\\n\\x0C\\r ";
/// The complement of [`SPACE`].
const NOT_SPACE: &str = "\\x00-\\x08\\x0B\\x0E-\\x1F!-\\x{10FFFF}";
/// Characters regex-lite gives a meaning somewhere (`#` with `x`, `& - ~` in classes); escaped,
/// each stands for itself everywhere.
const META: &str = "\\.+*?()|[]{}^$#&-~";

/// A parameter's `allowedPattern`, checked the way the agent's Go `regexp.MatchString` does:
/// the value is valid if the pattern matches **anywhere** in it, so patterns anchor with `^…$`.
///
/// Supported syntax (a subset of RE2, refused with [`DocumentError::Pattern`] otherwise):
/// literals; `.` (any character but newline); `^` and `\A` (start of text), `$` and `\z` (end
/// of text, no multi-line mode); classes `[…]` and `[^…]` with ranges and escapes, `-` literal
/// first, last or after a range, `]` literal first; `\d \D \w \W \s \S` (ASCII, as RE2);
/// `\n \r \t \f \v \a`; `\` before any ASCII punctuation; groups `(…)` and `(?:…)`; `|`;
/// `* + ?` and `{n}`, `{n,}`, `{n,m}` (counts up to 1000), each optionally lazy (`*?`, which
/// cannot change whether a value matches).
///
/// Refused: flags (`(?i)`), named groups, back-references, `\b`, `\p{…}`, hex and octal
/// escapes, POSIX classes (`[[:alpha:]]`), a bare `{` (RE2 reads some as literals; write `\{`),
/// groups nested deeper than 64, and patterns that compile to more than about 10 000 steps
/// (a character class costs one to two steps, more with many ranges).
///
/// # Examples
///
/// ```
/// use ssm_session::document::AllowedPattern;
///
/// let port = AllowedPattern::new(r"^([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$")?;
/// assert!(port.is_match("65535"));
/// assert!(!port.is_match("65536"));
/// assert!(AllowedPattern::new(r"^\bword$").is_err()); // \b is not supported
/// # Ok::<(), ssm_session::document::DocumentError>(())
/// ```
#[derive(Clone)]
pub struct AllowedPattern {
    source: String,
    regex: Regex,
}

impl fmt::Debug for AllowedPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AllowedPattern").field(&self.source).finish()
    }
}

impl PartialEq for AllowedPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl AllowedPattern {
    /// Compiles `pattern`, or says which part is outside the supported subset.
    pub fn new(pattern: &str) -> Result<Self, DocumentError> {
        let mut gate = Gate {
            source: pattern,
            chars: pattern.chars().collect(),
            pos: 0,
            out: String::with_capacity(pattern.len()),
        };
        gate.scan()?;
        let regex = RegexBuilder::new(&gate.out)
            .size_limit(SIZE_LIMIT)
            .nest_limit(NEST_LIMIT)
            .build()
            .map_err(|error| {
                gate.fail(
                    0,
                    format!(
                        "the pattern is too large once repetitions are expanded ({error}); \
                         use smaller repetition counts"
                    ),
                )
            })?;
        Ok(AllowedPattern {
            source: pattern.to_owned(),
            regex,
        })
    }

    /// The pattern as written in the document.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches somewhere in `value` (Go `MatchString` semantics).
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// What a backslash escape stands for.
enum Escape {
    Char(char),
    /// Class items in regex-lite syntax, without the brackets.
    Set(&'static str),
    /// `\A` or `\z`, spelt the same in regex-lite.
    Anchor(&'static str),
}

/// What the last piece written was, which decides whether a repetition operator may follow.
enum Last {
    /// Nothing yet in this alternative.
    Nothing,
    Anchor,
    Atom,
    Repeated,
}

/// Checks a pattern against the subset while writing its regex-lite spelling to `out`.
struct Gate<'a> {
    source: &'a str,
    chars: Vec<char>,
    /// Character (not byte) position of the next character.
    pos: usize,
    out: String,
}

impl Gate<'_> {
    fn fail(&self, offset: usize, problem: impl Into<String>) -> DocumentError {
        DocumentError::Pattern {
            pattern: self.source.to_owned(),
            offset,
            problem: problem.into(),
        }
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_at(0)?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek_at(0) == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    /// Writes `c` so that regex-lite reads it as itself in and out of classes.
    fn literal(&mut self, c: char) {
        if META.contains(c) {
            self.out.push('\\');
        }
        self.out.push(c);
    }

    fn scan(&mut self) -> Result<(), DocumentError> {
        let mut open_groups = Vec::new();
        let mut last = Last::Nothing;
        while let Some(c) = self.bump() {
            let at = self.pos - 1;
            last = match c {
                '(' => {
                    if self.eat('?') && !self.eat(':') {
                        return Err(self.fail(
                            at,
                            "group flags and named groups (?…) are not supported; only (?:…) is",
                        ));
                    }
                    open_groups.push(at);
                    if open_groups.len() > MAX_DEPTH {
                        return Err(self.fail(at, format!("groups nested deeper than {MAX_DEPTH}")));
                    }
                    // Nothing reads captures: a plain group is spelt `(?:` too.
                    self.out.push_str("(?:");
                    Last::Nothing
                }
                ')' => {
                    if open_groups.pop().is_none() {
                        return Err(
                            self.fail(at, "unmatched `)`; escape it as `\\)` for a literal")
                        );
                    }
                    self.out.push(')');
                    Last::Atom
                }
                '|' => {
                    self.out.push('|');
                    Last::Nothing
                }
                '^' | '$' => {
                    self.out.push(c);
                    Last::Anchor
                }
                '.' => {
                    self.out.push('.');
                    Last::Atom
                }
                '[' => {
                    self.class(at)?;
                    Last::Atom
                }
                '\\' => match self.escape(at)? {
                    Escape::Char(c) => {
                        self.literal(c);
                        Last::Atom
                    }
                    Escape::Set(items) => {
                        let _ = write!(self.out, "[{items}]");
                        Last::Atom
                    }
                    Escape::Anchor(anchor) => {
                        self.out.push_str(anchor);
                        Last::Anchor
                    }
                },
                '*' | '+' | '?' | '{' => {
                    match last {
                        Last::Atom => {}
                        Last::Repeated => {
                            return Err(self.fail(
                                at,
                                "nested repetition operators are not allowed; group the inner \
                                 one with (?:…)",
                            ));
                        }
                        Last::Nothing | Last::Anchor => {
                            return Err(self.fail(
                                at,
                                "a repetition operator needs something to repeat; write \\{ \\* \
                                 \\+ \\? for literal characters",
                            ));
                        }
                    }
                    if c == '{' {
                        self.counted(at)?;
                    } else {
                        self.out.push(c);
                    }
                    if self.eat('?') {
                        // Lazy: same set of matching values.
                        self.out.push('?');
                    }
                    Last::Repeated
                }
                c => {
                    self.literal(c);
                    Last::Atom
                }
            };
        }
        match open_groups.pop() {
            Some(open) => Err(self.fail(open, "missing `)` for this group")),
            None => Ok(()),
        }
    }

    /// After the `{` at `open`: `{n}`, `{n,}` or `{n,m}`; anything else is refused rather than
    /// read as text.
    fn counted(&mut self, open: usize) -> Result<(), DocumentError> {
        let min = self.count()?;
        let max = if self.eat(',') {
            if self.peek_at(0) == Some('}') {
                Some(None)
            } else {
                self.count()?.map(Some)
            }
        } else {
            Some(min)
        };
        let (Some(min), Some(max), true) = (min, max, self.eat('}')) else {
            return Err(self.fail(
                open,
                "malformed repetition; use {n}, {n,} or {n,m}, or write \\{ for a literal brace",
            ));
        };
        let _ = match max {
            Some(max) if max < min => {
                return Err(self.fail(open, "repetition {n,m} with m smaller than n"));
            }
            Some(max) if max == min => write!(self.out, "{{{min}}}"),
            Some(max) => write!(self.out, "{{{min},{max}}}"),
            None => write!(self.out, "{{{min},}}"),
        };
        Ok(())
    }

    fn count(&mut self) -> Result<Option<u32>, DocumentError> {
        let start = self.pos;
        while self.peek_at(0).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            return Ok(None);
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPEAT => Ok(Some(n)),
            _ => Err(self.fail(
                start,
                format!("repetition count larger than {MAX_REPEAT} (RE2's limit)"),
            )),
        }
    }

    /// After the `[` at `open`: the class up to its `]`.
    fn class(&mut self, open: usize) -> Result<(), DocumentError> {
        self.out.push('[');
        if self.eat('^') {
            self.out.push('^');
        }
        let mut first = true;
        loop {
            let Some(c) = self.bump() else {
                return Err(self.fail(
                    open,
                    "missing `]` for this character class; write \\[ for a literal bracket",
                ));
            };
            let at = self.pos - 1;
            if c == ']' && !first {
                self.out.push(']');
                return Ok(());
            }
            first = false;
            if c == '[' && self.peek_at(0) == Some(':') {
                return Err(self.fail(
                    at,
                    "POSIX classes like [:alpha:] are not supported; write the range, e.g. \
                     [a-zA-Z]",
                ));
            }
            let lo = match self.class_item(c, at)? {
                Escape::Char(lo) => lo,
                Escape::Set(items) => {
                    self.out.push_str(items);
                    continue;
                }
                Escape::Anchor(_) => {
                    return Err(self.fail(at, "\\A and \\z cannot appear inside a class"));
                }
            };
            self.literal(lo);
            if self.peek_at(0) == Some('-')
                && let Some(c) = self.peek_at(1).filter(|&c| c != ']')
            {
                let hi_at = self.pos + 1;
                self.pos += 2;
                match self.class_item(c, hi_at)? {
                    Escape::Char(hi) if hi >= lo => {
                        self.out.push('-');
                        self.literal(hi);
                    }
                    Escape::Char(hi) => {
                        return Err(
                            self.fail(at, format!("range {lo}-{hi} is backwards; write {hi}-{lo}"))
                        );
                    }
                    Escape::Set(_) | Escape::Anchor(_) => {
                        return Err(self.fail(at, "a range must end in a single character"));
                    }
                }
            }
        }
    }

    /// `c`, found at `at` inside a class, and its escape if it is a backslash.
    fn class_item(&mut self, c: char, at: usize) -> Result<Escape, DocumentError> {
        if c == '\\' {
            self.escape(at)
        } else {
            Ok(Escape::Char(c))
        }
    }

    /// After the `\` at `at`.
    fn escape(&mut self, at: usize) -> Result<Escape, DocumentError> {
        let Some(c) = self.bump() else {
            return Err(self.fail(
                at,
                "the pattern ends with a lone backslash; write \\\\ for a literal one",
            ));
        };
        Ok(match c {
            'd' => Escape::Set("\\d"),
            'D' => Escape::Set("\\D"),
            'w' => Escape::Set("\\w"),
            'W' => Escape::Set("\\W"),
            's' => Escape::Set(SPACE),
            'S' => Escape::Set(NOT_SPACE),
            'n' => Escape::Char('\n'),
            'r' => Escape::Char('\r'),
            't' => Escape::Char('\t'),
            'f' => Escape::Char('\x0C'),
            'v' => Escape::Char('\x0B'),
            'a' => Escape::Char('\x07'),
            'A' => Escape::Anchor("\\A"),
            'z' => Escape::Anchor("\\z"),
            c if c.is_ascii_punctuation() => Escape::Char(c),
            _ => {
                return Err(self.fail(
                    at,
                    format!(
                        "escape \\{c} is not supported (word boundaries, Unicode classes, hex, \
                         octal and back-references are outside the subset); write the \
                         characters or a class such as [0-9] instead"
                    ),
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_lite_spellings_keep_re2_meanings() {
        let table: &[(&str, &[&str], &[&str])] = &[
            // RE2's \s has no vertical tab; regex-lite's has.
            (r"^\s$", &[" ", "\t", "\x0C"], &["\x0B", "x"]),
            // ASCII, as RE2: no Unicode letters or digits.
            (r"^\w\d$", &["_1"], &["é1", "a\u{661}"]),
            (r"^\W\D$", &["é\u{661}"], &["a1"]),
            (r"^\S$", &["\x0B", "x", "é"], &[" ", "\n"]),
            (r"^[\S]$", &["\x0B", "x"], &[" "]),
            (r"^[a\s]$", &["a", "\r"], &["\x0B"]),
            // regex-lite reads these as word boundaries, nested classes or set operations.
            (r"^\<\>$", &["<>"], &[""]),
            ("^[[a]+$", &["[a"], &["b"]),
            ("^[a&&b~~c]+$", &["a&b~c"], &["d"]),
            ("^[--/]+$", &["-./"], &["a"]),
            ("^[a-c-e]+$", &["ab-e"], &["d"]),
            ("^[#]# $", &["## "], &["#"]),
        ];
        for (pattern, accepted, refused) in table {
            let compiled =
                AllowedPattern::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            for value in *accepted {
                assert!(
                    compiled.is_match(value),
                    "{pattern} should accept {value:?}"
                );
            }
            for value in *refused {
                assert!(
                    !compiled.is_match(value),
                    "{pattern} should refuse {value:?}"
                );
            }
        }
    }

    #[test]
    fn size_limit_is_about_ten_thousand_steps() {
        assert!(AllowedPattern::new("^(?:a{1000}){9}$").is_ok());
        assert!(AllowedPattern::new(r"^[^,$^&\(\)!;'<>]{1000}$").is_ok());
        assert!(AllowedPattern::new("^(?:a{1000}){11}$").is_err());
        assert!(AllowedPattern::new("(a{1000}){1000}").is_err());
        // Each level nests a repetition, an alternation and a concatenation.
        let deep = format!("{}a{}", "(x|y".repeat(MAX_DEPTH), ")*".repeat(MAX_DEPTH));
        assert!(AllowedPattern::new(&deep).is_ok());
        let deeper = format!("({deep})");
        assert!(AllowedPattern::new(&deeper).is_err());
    }
}
