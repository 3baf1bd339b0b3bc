//! Where a function's listing starts and ends.
//!
//! Profiles know a function's first line (`DW_AT_decl_line`, `co_firstlineno`, pprof's
//! `start_line`) and the lines that were sampled, not its last line. The listing runs from
//! the first line to the end of the block the last sampled line belongs to, found in the
//! source text: for Python, up to the last line indented deeper than the `def` (or its
//! first decorator); for brace languages, up to the closing `}` at the indentation of the
//! declaration. Without text, or when no end is found within [`MAX_SCAN`] lines, the listing
//! ends at the last sampled line. Lambdas, comprehensions and module code (`<...>` names)
//! end at their last sampled line: their indentation says nothing of where they end.

use sprof_core::FrameKind;

use super::FunctionLines;

/// Most lines scanned past the last sampled line for the end of a function.
const MAX_SCAN: usize = 2000;

/// The first and last line (1-based, inclusive) of `f`'s listing, given its file's text.
pub fn function_extent(f: &FunctionLines, text: Option<&[String]>) -> (u32, u32) {
    let first_sampled = f.lines.keys().next().copied().unwrap_or(1);
    let last_sampled = f.lines.keys().next_back().copied().unwrap_or(first_sampled);
    let line = |n: u32| text?.get((n as usize).checked_sub(1)?).map(String::as_str);
    let first = match f.decl_line {
        Some(d) if d <= first_sampled => d,
        Some(_) => first_sampled,
        // Folded stacks and some pprof writers do not say where a function starts.
        None => find_start(f, &line, first_sampled).unwrap_or(first_sampled),
    };
    if text.is_none() {
        return (first, last_sampled);
    }
    let Some(head) = line(first) else {
        return (first, last_sampled);
    };
    let base = indentation(head);
    let leaf_name = f.function.rsplit(['.', ':']).next().unwrap_or(&f.function);
    let last = if leaf_name.starts_with('<') {
        last_sampled
    } else if f.kind == FrameKind::Python {
        python_end(line, base, last_sampled)
    } else {
        brace_end(line, base, last_sampled)
    };
    (first, last.max(last_sampled))
}

/// The declaration above `first_sampled`: the nearest line naming the function (its last
/// name component) less indented than the sampled line, with a Python function's decorators.
fn find_start<'a>(
    f: &FunctionLines,
    line: &impl Fn(u32) -> Option<&'a str>,
    first_sampled: u32,
) -> Option<u32> {
    let name = f
        .function
        .rsplit(['.', ':'])
        .next()
        .unwrap_or(&f.function)
        .split(['(', '<', ' '])
        .next()
        .filter(|n| !n.is_empty())?;
    let inner = indentation(line(first_sampled)?);
    let lowest = first_sampled.saturating_sub(MAX_SCAN as u32).max(1);
    let mut n = first_sampled;
    while n >= lowest {
        let text = line(n)?;
        let is_decl = if f.kind == FrameKind::Python {
            let t = text.trim_start();
            (t.starts_with("def ") || t.starts_with("async def "))
                && t.contains(&format!("{name}("))
        } else {
            text.contains(name) && !text.trim_end().ends_with(';')
        };
        if is_decl && (indentation(text) < inner || n == first_sampled) {
            let mut start = n;
            while start > 1
                && line(start - 1).is_some_and(|t| {
                    t.trim_start().starts_with('@') && indentation(t) == indentation(text)
                })
            {
                start -= 1;
            }
            return Some(start);
        }
        n -= 1;
    }
    None
}

fn indentation(s: &str) -> usize {
    let mut n = 0;
    for c in s.chars() {
        match c {
            ' ' => n += 1,
            '\t' => n = (n / 8 + 1) * 8,
            _ => break,
        }
    }
    n
}

/// The last line of the Python block opened at indentation `base`: lines after
/// `last_sampled` that are blank, comments or indented deeper belong to it; trailing blank
/// lines do not.
fn python_end<'a>(line: impl Fn(u32) -> Option<&'a str>, base: usize, last_sampled: u32) -> u32 {
    let mut end = last_sampled;
    for n in last_sampled + 1..last_sampled.saturating_add(MAX_SCAN as u32) {
        let Some(text) = line(n) else { break };
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indentation(text) <= base {
            break;
        }
        end = n;
    }
    end
}

/// The line of the `}` that closes a brace block declared at indentation `base`; the last
/// sampled line when there is none in reach.
fn brace_end<'a>(line: impl Fn(u32) -> Option<&'a str>, base: usize, last_sampled: u32) -> u32 {
    for n in last_sampled..last_sampled.saturating_add(MAX_SCAN as u32) {
        let Some(text) = line(n) else { break };
        if n > last_sampled && text.trim_start().starts_with('}') && indentation(text) <= base {
            return n;
        }
        // A line at the declaration's indentation that is not a brace starts something else
        // (the next function, when the closing brace was not where expected).
        if n > last_sampled && indentation(text) < base && !text.trim().is_empty() {
            break;
        }
    }
    last_sampled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::LineCounts;
    use std::collections::BTreeMap;

    fn function(name: &str, kind: FrameKind, decl: Option<u32>, lines: &[u32]) -> FunctionLines {
        FunctionLines {
            function: name.into(),
            file: "f".into(),
            module: None,
            kind,
            decl_line: decl,
            counts: Default::default(),
            lines: lines.iter().map(|&l| (l, LineCounts::default())).collect(),
            callers: BTreeMap::new(),
        }
    }

    fn text(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn python_blocks_end_at_the_dedent() {
        let src = text(
            "import x\n\n@deco\ndef f(n):\n    a = 1\n    for i in range(n):\n        a += i\n\n    # done\n    return a\n\n\ndef g():\n    pass\n",
        );
        let f = function("f", FrameKind::Python, Some(3), &[7]);
        assert_eq!(function_extent(&f, Some(&src)), (3, 10));
        // A lambda ends where it was sampled; without text, the last sampled line.
        let l = function("f.<locals>.<lambda>", FrameKind::Python, Some(6), &[6]);
        assert_eq!(function_extent(&l, Some(&src)), (6, 6));
        assert_eq!(function_extent(&f, None), (3, 7));
    }

    #[test]
    fn brace_blocks_end_at_the_closing_brace() {
        let src = text(
            "static int\nhot(int n)\n{\n    int a = 0;\n    for (;;) {\n        a++;\n    }\n    return a;\n}\n\nint main(void) {\n    return hot(1);\n}\n",
        );
        let f = function("hot", FrameKind::Native, Some(2), &[6]);
        assert_eq!(function_extent(&f, Some(&src)), (2, 9));
        let m = function("main", FrameKind::Native, Some(11), &[12]);
        assert_eq!(function_extent(&m, Some(&src)), (11, 13));
        // A sampled line before the declared one (a bad decl_line) starts the listing.
        let odd = function("hot", FrameKind::Native, Some(8), &[6]);
        assert_eq!(function_extent(&odd, Some(&src)).0, 6);
    }

    #[test]
    fn without_a_declared_line_the_declaration_is_found_above() {
        let src = text("import x\n\n@deco\ndef f(n):\n    a = 1\n    return a\n");
        let f = function("f", FrameKind::Python, None, &[5]);
        assert_eq!(function_extent(&f, Some(&src)), (3, 6));
        let c = text("int\nhot(int n)\n{\n    n++;\n    return n;\n}\n");
        let h = function("hot", FrameKind::Native, None, &[4]);
        assert_eq!(function_extent(&h, Some(&c)), (2, 6));
    }

    #[test]
    fn methods_close_at_their_own_indentation() {
        let src = text("impl X {\n    fn f(&self) {\n        spin();\n    }\n}\n");
        let f = function("X::f", FrameKind::Native, Some(2), &[3]);
        assert_eq!(function_extent(&f, Some(&src)), (2, 4));
    }
}
