//! Symbol name demangling: Rust (legacy and v0) and C++ (Itanium ABI).
//!
//! This module owns the policy of which demangler a name is given to and how its output is
//! shortened (no Rust `::h<hash>` suffix, no C++ return types), so every name the crate
//! returns, whether it came from DWARF or a symbol table, reads the same.

/// Bounds the C++ demangler's recursion: hostile or corrupt names must not exhaust the stack.
const CPP_RECURSION_LIMIT: u32 = 256;

/// Demangles a symbol name; returns the input unchanged when it is not a mangled name this
/// crate understands (plain C names, for example).
///
/// Rust legacy names lose their `::h<hash>` suffix and Rust v0 names their crate
/// disambiguators, since both differ between builds and would split one function into many
/// rows of a profile.
pub fn demangle(name: &str) -> String {
    if let Some(rust) = demangle_rust(name) {
        return rust;
    }
    if name.starts_with("_Z") {
        if let Some(cpp) = demangle_cpp(name) {
            return cpp;
        }
        // why: a `_ZN…E` Rust legacy name without the usual hash is still worth a try.
        if let Ok(d) = rustc_demangle::try_demangle(name) {
            return format!("{d:#}");
        }
    }
    name.to_string()
}

fn demangle_rust(name: &str) -> Option<String> {
    // why: `_ZN` names are shared with C++; only names carrying a Rust hash go to the Rust
    // demangler first, the rest go to the C++ demangler, which also knows parameter types.
    let rusty = name.starts_with("_R") || (name.starts_with("_ZN") && has_rust_legacy_hash(name));
    if !rusty {
        return None;
    }
    // `{:#}` is the alternate form: legacy without the hash, v0 without disambiguators.
    rustc_demangle::try_demangle(name)
        .ok()
        .map(|d| format!("{d:#}"))
}

/// True when `name` contains `17h` followed by 16 hex digits and `E`: the legacy Rust hash.
fn has_rust_legacy_hash(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.windows(20).any(|w| {
        w.starts_with(b"17h") && w[3..19].iter().all(u8::is_ascii_hexdigit) && w[19] == b'E'
    })
}

fn demangle_cpp(name: &str) -> Option<String> {
    let parse = cpp_demangle::ParseOptions::default().recursion_limit(CPP_RECURSION_LIMIT);
    let symbol = cpp_demangle::Symbol::new_with_options(name.as_bytes(), &parse).ok()?;
    let print = cpp_demangle::DemangleOptions::new()
        .no_return_type()
        .recursion_limit(CPP_RECURSION_LIMIT);
    symbol.demangle_with_options(&print).ok()
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn rust_legacy_drops_hash() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
    }

    #[test]
    fn rust_legacy_with_llvm_suffix() {
        assert_eq!(
            demangle("_ZN3std2rt10lang_start17h0123456789abcdefE.llvm.1234567"),
            "std::rt::lang_start"
        );
    }

    #[test]
    fn rust_v0() {
        // From the v0 mangling RFC test suite: `std::io::stdio::_print` style path.
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
        assert_eq!(
            demangle("_RNvNtCsbmNqQUJIY6D_4core3foo3bar"),
            "core::foo::bar"
        );
    }

    #[test]
    fn cpp() {
        assert_eq!(demangle("_ZN2ns5Klass6methodEi"), "ns::Klass::method(int)");
        assert_eq!(
            demangle("_ZNSt6vectorIiSaIiEE9push_backERKi"),
            "std::vector<int, std::allocator<int> >::push_back(int const&)"
        );
        assert_eq!(demangle("_Z3fooPKc"), "foo(char const*)");
    }

    #[test]
    fn plain_and_garbage_names_pass_through() {
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("outer_work.cold"), "outer_work.cold");
        assert_eq!(demangle(""), "");
        assert_eq!(demangle("_Z"), "_Z");
        assert_eq!(demangle("_ZN9"), "_ZN9");
        assert_eq!(demangle("_R"), "_R");
        // Deep nesting must neither overflow the stack nor panic.
        let deep = format!("_Z1f{}i{}", "PFv".repeat(5000), "E".repeat(5000));
        let _ = demangle(&deep);
    }
}
