//! Kernel symbols from `/proc/kallsyms`: the names of kernel frames (`--kernel`).

/// Kernel symbols from `/proc/kallsyms`, sorted by address.
pub struct KernelSymbols {
    symbols: Vec<(u64, String)>,
}

impl KernelSymbols {
    /// Reads `/proc/kallsyms`; `None` when it shows no addresses (`kptr_restrict`).
    pub fn load() -> Option<KernelSymbols> {
        let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Option<KernelSymbols> {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?;
                let name = it.next()?;
                matches!(kind, "t" | "T" | "w" | "W").then(|| (addr, name.to_string()))
            })
            .filter(|(a, _)| *a != 0)
            .collect();
        if symbols.is_empty() {
            return None;
        }
        symbols.sort_by_key(|(a, _)| *a);
        Some(KernelSymbols { symbols })
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|(a, _)| *a <= addr);
        self.symbols.get(i.checked_sub(1)?).map(|(_, n)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_lookup_and_restricted_file() {
        let text = "ffffffff81000000 T _stext\nffffffff81001000 t do_one\nffffffff81002000 D data\nffffffff81003000 T next [mod]\n";
        let k = KernelSymbols::parse(text).unwrap();
        assert_eq!(k.lookup(0xffffffff81001010), Some("do_one"));
        assert_eq!(
            k.lookup(0xffffffff81002010),
            Some("do_one"),
            "data symbols are skipped"
        );
        assert_eq!(k.lookup(0x10), None);
        assert!(KernelSymbols::parse("0000000000000000 T _stext\n").is_none());
    }

    #[test]
    fn kallsyms_module_symbols_resolve_by_name() {
        // Loadable modules' symbols follow the core kernel's in /proc/kallsyms, with the
        // module name in brackets as a fourth column; the name alone is the frame.
        let text = "ffffffff81000000 T _stext\n\
                    ffffffffc0a01000 t nft_do_chain\t[nf_tables]\n\
                    ffffffffc0a01400 T nft_register_chain_type\t[nf_tables]\n\
                    ffffffffc0a02000 d nft_chain_types\t[nf_tables]\n\
                    ffffffffc0b00000 t e1000_clean\t[e1000e]\n";
        let k = KernelSymbols::parse(text).unwrap();
        assert_eq!(k.lookup(0xffffffffc0a01010), Some("nft_do_chain"));
        assert_eq!(
            k.lookup(0xffffffffc0a01400),
            Some("nft_register_chain_type")
        );
        assert_eq!(
            k.lookup(0xffffffffc0a02010),
            Some("nft_register_chain_type")
        );
        assert_eq!(k.lookup(0xffffffffc0b00004), Some("e1000_clean"));
    }
}
