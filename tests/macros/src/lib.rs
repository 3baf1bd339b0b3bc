//! `#[live_test]`, the attribute of the end-to-end tests that need perf sampling (re-exported
//! by `sprofd-tests`). It makes the function a `#[test]` whose body runs only when
//! `sprofd_tests::live` (or, with `#[live_test(kernel)]`, `live_kernel`) says sampling works
//! here, passing the function's own name, so no test can name another in its gate. When
//! sampling does not work the test says `SKIP <name>: <reason>` where the test run shows it
//! and passes, or fails under `SPROFD_REQUIRE_LIVE=1`.
//!
//! Written on `proc_macro` alone (no syn): the item is a function, its name the identifier
//! after `fn`, its body the last token, a brace group.

use proc_macro::{Delimiter, Group, TokenStream, TokenTree};

#[proc_macro_attribute]
pub fn live_test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let gate = match attr.to_string().as_str() {
        "" => "live",
        "kernel" => "live_kernel",
        other => {
            return error(&format!(
                "#[live_test] takes nothing or `kernel`, not `{other}`"
            ))
        }
    };
    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let name = tokens.windows(2).find_map(|w| match (&w[0], &w[1]) {
        (TokenTree::Ident(f), TokenTree::Ident(name)) if f.to_string() == "fn" => {
            Some(name.to_string())
        }
        _ => None,
    });
    let body = match tokens.pop() {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => g,
        _ => return error("#[live_test] goes on a function with a body"),
    };
    let Some(name) = name else {
        return error("#[live_test] goes on a function");
    };
    let mut gated: TokenStream = format!("if !::sprofd_tests::{gate}({name:?}) {{ return; }}")
        .parse()
        .expect("the gate parses");
    gated.extend(body.stream());
    let body = Group::new(Delimiter::Brace, gated);
    let mut out: TokenStream = "#[test]".parse().expect("#[test] parses");
    out.extend(tokens);
    out.extend([TokenTree::Group(body)]);
    out
}

fn error(message: &str) -> TokenStream {
    format!("compile_error!({message:?});")
        .parse()
        .expect("compile_error! parses")
}
