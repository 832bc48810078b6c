//! `allowedPattern` checking without a regex dependency: a parser for the RE2 subset session
//! documents use, compiled to a small instruction list and run as a Pike VM (every thread
//! advanced in lock step), so matching is linear in the input whatever the pattern.

use std::fmt;

use super::DocumentError;

/// Instruction budget of one compiled pattern; counted repetitions are expanded, so this is
/// what bounds `(a{1000}){1000}`.
const MAX_PROGRAM: usize = 10_000;
/// RE2's own limit on `{n,m}` counts: a larger count is refused there too.
const MAX_REPEAT: u32 = 1000;
/// Group nesting limit, so a hostile pattern cannot exhaust the parser's stack.
const MAX_DEPTH: usize = 64;
/// One past the largest Unicode scalar value.
const CHAR_END: u32 = 0x11_0000;

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
/// and patterns that expand to more than 10 000 instructions.
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
    program: Vec<Inst>,
    sets: Vec<CharSet>,
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
        let mut parser = Parser {
            source: pattern,
            chars: pattern.chars().collect(),
            pos: 0,
            depth: 0,
        };
        let node = parser.parse_alternation()?;
        if parser.pos < parser.chars.len() {
            // Only an unmatched `)` stops the top-level alternation early.
            return Err(parser.error("unmatched `)`; escape it as `\\)` for a literal"));
        }
        let size = node.size();
        if size > MAX_PROGRAM {
            return Err(parser.error(&format!(
                "the pattern expands to {size} instructions, more than the limit of \
                 {MAX_PROGRAM}; use smaller repetition counts"
            )));
        }
        let mut compiler = Compiler::default();
        compiler.emit(&node);
        compiler.program.push(Inst::Match);
        Ok(AllowedPattern {
            source: pattern.to_owned(),
            program: compiler.program,
            sets: compiler.sets,
        })
    }

    /// The pattern as written in the document.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches somewhere in `value` (Go `MatchString` semantics).
    pub fn is_match(&self, value: &str) -> bool {
        let chars: Vec<char> = value.chars().collect();
        let len = chars.len();
        // With a leading `^`, threads started after position 0 die at once: once the live
        // ones are gone, nothing can match.
        let anchored = matches!(self.program.first(), Some(Inst::Start));
        let mut current = ThreadSet::new(self.program.len());
        let mut next = ThreadSet::new(self.program.len());
        let mut stack = Vec::new();
        for pos in 0..=len {
            // Unanchored search: a new thread starts at every position.
            if self.add_thread(&mut current, &mut stack, 0, pos, len) {
                return true;
            }
            let Some(&c) = chars.get(pos) else { break };
            next.clear();
            for &pc in &current.dense {
                if let Some(Inst::Set(set)) = self.program.get(pc)
                    && self.sets.get(*set).is_some_and(|set| set.contains(c))
                    && self.add_thread(&mut next, &mut stack, pc + 1, pos + 1, len)
                {
                    return true;
                }
            }
            std::mem::swap(&mut current, &mut next);
            if anchored && current.dense.is_empty() {
                return false;
            }
        }
        false
    }

    /// Adds `pc` and everything reachable from it without consuming a character; true when
    /// that reaches `Match`. `stack` is scratch space, reused across calls.
    fn add_thread(
        &self,
        threads: &mut ThreadSet,
        stack: &mut Vec<usize>,
        pc: usize,
        pos: usize,
        len: usize,
    ) -> bool {
        stack.clear();
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if !threads.insert(pc) {
                continue;
            }
            match self.program.get(pc) {
                Some(Inst::Match) => return true,
                Some(Inst::Jump(to)) => stack.push(*to),
                Some(Inst::Split(first, second)) => {
                    stack.push(*second);
                    stack.push(*first);
                }
                Some(Inst::Start) if pos == 0 => stack.push(pc + 1),
                Some(Inst::End) if pos == len => stack.push(pc + 1),
                _ => {}
            }
        }
        false
    }
}

/// A set of program counters with insertion order, cleared in time proportional to its size.
struct ThreadSet {
    member: Vec<bool>,
    dense: Vec<usize>,
}

impl ThreadSet {
    fn new(size: usize) -> Self {
        ThreadSet {
            member: vec![false; size],
            dense: Vec::new(),
        }
    }

    fn insert(&mut self, pc: usize) -> bool {
        match self.member.get_mut(pc) {
            Some(seen) if !*seen => {
                *seen = true;
                self.dense.push(pc);
                true
            }
            _ => false,
        }
    }

    fn clear(&mut self) {
        for pc in self.dense.drain(..) {
            if let Some(seen) = self.member.get_mut(pc) {
                *seen = false;
            }
        }
    }
}

/// Sorted, non-overlapping inclusive ranges of Unicode scalar values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CharSet(Vec<(u32, u32)>);

impl CharSet {
    fn from_ranges(mut ranges: Vec<(u32, u32)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        CharSet(merged)
    }

    fn single(c: char) -> Self {
        CharSet(vec![(c as u32, c as u32)])
    }

    fn complement(&self) -> Self {
        let mut out = Vec::new();
        let mut next = 0u32;
        for &(lo, hi) in &self.0 {
            if lo > next {
                out.push((next, lo - 1));
            }
            next = hi.saturating_add(1);
        }
        if next < CHAR_END {
            out.push((next, CHAR_END - 1));
        }
        CharSet(out)
    }

    fn contains(&self, c: char) -> bool {
        let c = c as u32;
        self.0
            .binary_search_by(|&(lo, hi)| {
                if hi < c {
                    std::cmp::Ordering::Less
                } else if lo > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }

    fn digit() -> Self {
        CharSet(vec![(u32::from('0'), u32::from('9'))])
    }

    fn word() -> Self {
        CharSet::from_ranges(vec![
            (u32::from('0'), u32::from('9')),
            (u32::from('A'), u32::from('Z')),
            (u32::from('_'), u32::from('_')),
            (u32::from('a'), u32::from('z')),
        ])
    }

    /// RE2's `\s`: tab, newline, form feed, carriage return, space.
    fn space() -> Self {
        CharSet::from_ranges(vec![(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)])
    }
}

/// The parsed pattern.
#[derive(Debug)]
enum Node {
    Empty,
    Set(CharSet),
    Start,
    End,
    Concat(Vec<Node>),
    Alternation(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

impl Node {
    /// Instructions the node compiles to, saturating so huge nestings stay comparable.
    fn size(&self) -> usize {
        match self {
            Node::Empty => 0,
            Node::Set(_) | Node::Start | Node::End => 1,
            Node::Concat(nodes) => nodes.iter().fold(0, |sum, n| sum.saturating_add(n.size())),
            Node::Alternation(nodes) => nodes
                .iter()
                .fold(0, |sum, n| sum.saturating_add(n.size()).saturating_add(2)),
            Node::Repeat { node, min, max } => {
                let body = node.size();
                let required = body.saturating_mul(*min as usize);
                let optional = match max {
                    None => body.saturating_add(2),
                    Some(max) => body
                        .saturating_add(1)
                        .saturating_mul(max.saturating_sub(*min) as usize),
                };
                required.saturating_add(optional)
            }
        }
    }
}

/// What a backslash escape stands for.
enum Escape {
    Char(char),
    Set(CharSet),
    Start,
    End,
}

struct Parser<'a> {
    source: &'a str,
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, problem: &str) -> DocumentError {
        DocumentError::Pattern {
            pattern: self.source.to_owned(),
            offset: self.pos,
            problem: problem.to_owned(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn parse_alternation(&mut self) -> Result<Node, DocumentError> {
        let mut branches = vec![self.parse_concat()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            branches.push(self.parse_concat()?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alternation(branches)
        })
    }

    fn parse_concat(&mut self) -> Result<Node, DocumentError> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            nodes.push(self.parse_repeat()?);
        }
        Ok(match nodes.len() {
            0 => Node::Empty,
            1 => nodes.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(nodes),
        })
    }

    fn parse_repeat(&mut self) -> Result<Node, DocumentError> {
        let atom = self.parse_atom()?;
        let Some((min, max)) = self.parse_quantifier()? else {
            return Ok(atom);
        };
        if matches!(atom, Node::Start | Node::End) {
            return Err(self.error("a repetition operator needs something to repeat"));
        }
        if self.peek() == Some('?') {
            // Lazy: same set of matching values.
            self.pos += 1;
        }
        if matches!(self.peek(), Some('*' | '+' | '?' | '{')) {
            return Err(self.error(
                "nested repetition operators are not allowed; group the inner one with (?:…)",
            ));
        }
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    fn parse_quantifier(&mut self) -> Result<Option<(u32, Option<u32>)>, DocumentError> {
        let quantifier = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => return self.parse_counted().map(Some),
            _ => return Ok(None),
        };
        self.pos += 1;
        Ok(Some(quantifier))
    }

    /// `{n}`, `{n,}` or `{n,m}`; anything else after `{` is refused rather than read as text.
    fn parse_counted(&mut self) -> Result<(u32, Option<u32>), DocumentError> {
        let start = self.pos;
        self.pos += 1;
        let min = self.parse_count()?;
        let max = if self.peek() == Some(',') {
            self.pos += 1;
            match self.peek() {
                Some('}') => Some(None),
                _ => self.parse_count()?.map(Some),
            }
        } else {
            Some(min)
        };
        let (Some(min), Some(max), Some('}')) = (min, max, self.bump()) else {
            self.pos = start;
            return Err(self.error(
                "malformed repetition; use {n}, {n,} or {n,m}, or write \\{ for a literal brace",
            ));
        };
        if max.is_some_and(|max| max < min) {
            self.pos = start;
            return Err(self.error("repetition {n,m} with m smaller than n"));
        }
        Ok((min, max))
    }

    fn parse_count(&mut self) -> Result<Option<u32>, DocumentError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            return Ok(None);
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPEAT => Ok(Some(n)),
            _ => {
                self.pos = start;
                Err(self.error(&format!(
                    "repetition count larger than {MAX_REPEAT} (RE2's limit)"
                )))
            }
        }
    }

    fn parse_atom(&mut self) -> Result<Node, DocumentError> {
        let Some(c) = self.bump() else {
            return Ok(Node::Empty);
        };
        match c {
            '(' => self.parse_group(),
            '[' => self.parse_class().map(Node::Set),
            '.' => Ok(Node::Set(CharSet::single('\n').complement())),
            '^' => Ok(Node::Start),
            '$' => Ok(Node::End),
            '\\' => Ok(match self.parse_escape()? {
                Escape::Char(c) => Node::Set(CharSet::single(c)),
                Escape::Set(set) => Node::Set(set),
                Escape::Start => Node::Start,
                Escape::End => Node::End,
            }),
            '*' | '+' | '?' => {
                self.pos -= 1;
                Err(self.error("a repetition operator needs something to repeat"))
            }
            '{' => {
                self.pos -= 1;
                Err(self.error("write \\{ for a literal brace"))
            }
            c => Ok(Node::Set(CharSet::single(c))),
        }
    }

    fn parse_group(&mut self) -> Result<Node, DocumentError> {
        let open = self.pos - 1;
        if self.peek() == Some('?') {
            if self.peek_at(1) == Some(':') {
                self.pos += 2;
            } else {
                return Err(self
                    .error("group flags and named groups (?…) are not supported; only (?:…) is"));
            }
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!("groups nested deeper than {MAX_DEPTH}")));
        }
        let node = self.parse_alternation()?;
        self.depth -= 1;
        if self.bump() != Some(')') {
            self.pos = open;
            return Err(self.error("missing `)` for this group"));
        }
        Ok(node)
    }

    /// After `[`: the class up to its `]`.
    fn parse_class(&mut self) -> Result<CharSet, DocumentError> {
        let open = self.pos - 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.bump() else {
                self.pos = open;
                return Err(self.error("missing `]` for this character class"));
            };
            if c == ']' && !first {
                break;
            }
            first = false;
            if c == '[' && self.peek() == Some(':') {
                self.pos -= 1;
                return Err(self.error("POSIX classes like [:alpha:] are not supported"));
            }
            let lo = match self.class_char(c)? {
                Escape::Char(lo) => lo,
                Escape::Set(set) => {
                    ranges.extend(set.0);
                    continue;
                }
                Escape::Start | Escape::End => {
                    return Err(self.error("\\A and \\z cannot appear inside a class"));
                }
            };
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                let hi = match self.bump() {
                    Some(c) => self.class_char(c)?,
                    None => return Err(self.error("missing `]` for this character class")),
                };
                let Escape::Char(hi) = hi else {
                    return Err(self.error("a range must end in a single character"));
                };
                if hi < lo {
                    return Err(self.error(&format!("range {lo}-{hi} is backwards")));
                }
                ranges.push((lo as u32, hi as u32));
            } else {
                ranges.push((lo as u32, lo as u32));
            }
        }
        let set = CharSet::from_ranges(ranges);
        Ok(if negated { set.complement() } else { set })
    }

    fn class_char(&mut self, c: char) -> Result<Escape, DocumentError> {
        if c == '\\' {
            self.parse_escape()
        } else {
            Ok(Escape::Char(c))
        }
    }

    /// After `\`.
    fn parse_escape(&mut self) -> Result<Escape, DocumentError> {
        let Some(c) = self.bump() else {
            return Err(self.error("the pattern ends with a lone backslash"));
        };
        Ok(match c {
            'd' => Escape::Set(CharSet::digit()),
            'D' => Escape::Set(CharSet::digit().complement()),
            'w' => Escape::Set(CharSet::word()),
            'W' => Escape::Set(CharSet::word().complement()),
            's' => Escape::Set(CharSet::space()),
            'S' => Escape::Set(CharSet::space().complement()),
            'n' => Escape::Char('\n'),
            'r' => Escape::Char('\r'),
            't' => Escape::Char('\t'),
            'f' => Escape::Char('\x0C'),
            'v' => Escape::Char('\x0B'),
            'a' => Escape::Char('\x07'),
            'A' => Escape::Start,
            'z' => Escape::End,
            c if c.is_ascii_punctuation() => Escape::Char(c),
            _ => {
                self.pos -= 2;
                return Err(self.error(&format!(
                    "escape \\{c} is not supported (word boundaries, Unicode classes, hex, \
                     octal and back-references are outside the subset)"
                )));
            }
        })
    }
}

/// One step of the compiled program.
#[derive(Debug, Clone, Copy)]
enum Inst {
    /// Consume one character in `sets[i]`.
    Set(usize),
    Split(usize, usize),
    Jump(usize),
    Start,
    End,
    Match,
}

#[derive(Default)]
struct Compiler {
    program: Vec<Inst>,
    sets: Vec<CharSet>,
}

impl Compiler {
    fn push(&mut self, inst: Inst) -> usize {
        self.program.push(inst);
        self.program.len() - 1
    }

    fn patch_split(&mut self, at: usize, first: usize, second: usize) {
        if let Some(inst) = self.program.get_mut(at) {
            *inst = Inst::Split(first, second);
        }
    }

    fn emit(&mut self, node: &Node) {
        match node {
            Node::Empty => {}
            Node::Set(set) => {
                let index = match self.sets.iter().position(|known| known == set) {
                    Some(index) => index,
                    None => {
                        self.sets.push(set.clone());
                        self.sets.len() - 1
                    }
                };
                self.push(Inst::Set(index));
            }
            Node::Start => {
                self.push(Inst::Start);
            }
            Node::End => {
                self.push(Inst::End);
            }
            Node::Concat(nodes) => nodes.iter().for_each(|n| self.emit(n)),
            Node::Alternation(branches) => {
                let mut jumps = Vec::new();
                let last = branches.len().saturating_sub(1);
                for (i, branch) in branches.iter().enumerate() {
                    if i == last {
                        self.emit(branch);
                    } else {
                        let split = self.push(Inst::Split(0, 0));
                        self.emit(branch);
                        jumps.push(self.push(Inst::Jump(0)));
                        let next = self.program.len();
                        self.patch_split(split, split + 1, next);
                    }
                }
                let end = self.program.len();
                for jump in jumps {
                    if let Some(inst) = self.program.get_mut(jump) {
                        *inst = Inst::Jump(end);
                    }
                }
            }
            Node::Repeat { node, min, max } => {
                for _ in 0..*min {
                    self.emit(node);
                }
                match max {
                    None => {
                        let split = self.push(Inst::Split(0, 0));
                        self.emit(node);
                        self.push(Inst::Jump(split));
                        let end = self.program.len();
                        self.patch_split(split, split + 1, end);
                    }
                    Some(max) => {
                        let mut splits = Vec::new();
                        for _ in *min..*max {
                            splits.push(self.push(Inst::Split(0, 0)));
                            self.emit(node);
                        }
                        let end = self.program.len();
                        for split in splits {
                            self.patch_split(split, split + 1, end);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complement_of_complement_is_identity() {
        let set = CharSet::from_ranges(vec![(10, 20), (0, 3), (21, 30)]);
        assert_eq!(set.0, vec![(0, 3), (10, 30)]);
        assert_eq!(set.complement().complement(), set);
        assert!(CharSet(vec![]).complement().contains(char::MAX));
    }

    #[test]
    fn size_estimate_bounds_the_program() {
        for pattern in [r"^(a|bc){2,5}$", r"x*y+z?", r"(?:[a-c]{3}|d)*$"] {
            let compiled = AllowedPattern::new(pattern).expect("supported");
            let parser_size = Parser {
                source: pattern,
                chars: pattern.chars().collect(),
                pos: 0,
                depth: 0,
            }
            .parse_alternation()
            .expect("parses")
            .size();
            assert!(compiled.program.len() <= parser_size + 1, "{pattern}");
        }
    }
}
