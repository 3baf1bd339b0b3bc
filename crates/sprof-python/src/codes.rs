//! Interning of code-object identities across processes.
//!
//! Owns the mapping (qualname, filename, first line) → [`CodeId`], so stacks can be keyed by a
//! small integer and the strings are stored once no matter how many processes run the code.

use std::collections::HashMap;

use crate::CodeId;

/// What a [`CodeId`] stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    /// `co_qualname`, e.g. `Worker.run.<locals>.step`.
    pub qualname: String,
    /// `co_name`, e.g. `step` (what tracebacks and faulthandler print).
    pub name: String,
    /// `co_filename`.
    pub filename: String,
    /// `co_firstlineno` (0 if unknown).
    pub first_line: u32,
}

/// Returned by [`CodeTable::get`] for an id that did not come from this table.
static UNKNOWN: CodeInfo = CodeInfo {
    qualname: String::new(),
    name: String::new(),
    filename: String::new(),
    first_line: 0,
};

/// Interns (qualname, filename, first line) across all processes; see the module docs.
#[derive(Default, Debug)]
pub struct CodeTable {
    infos: Vec<CodeInfo>,
    ids: HashMap<(String, String, u32), CodeId>,
}

impl CodeTable {
    /// The code behind `id`; an id from another table yields an empty placeholder, not a panic.
    pub fn get(&self, id: CodeId) -> &CodeInfo {
        self.infos.get(id.0 as usize).unwrap_or(&UNKNOWN)
    }

    pub fn len(&self) -> usize {
        self.infos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// The id for this code, adding it on first sight. `name` is not part of the key: it is
    /// the last component of `qualname`.
    pub fn intern(
        &mut self,
        qualname: &str,
        name: &str,
        filename: &str,
        first_line: u32,
    ) -> CodeId {
        let key = (qualname.to_owned(), filename.to_owned(), first_line);
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = CodeId(u32::try_from(self.infos.len()).unwrap_or(u32::MAX));
        self.infos.push(CodeInfo {
            qualname: key.0.clone(),
            name: name.to_owned(),
            filename: key.1.clone(),
            first_line,
        });
        self.ids.insert(key, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns() {
        let mut t = CodeTable::default();
        let a = t.intern("A.f", "f", "/x.py", 3);
        let b = t.intern("A.f", "f", "/x.py", 4);
        assert_ne!(a, b);
        assert_eq!(t.intern("A.f", "f", "/x.py", 3), a);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(b).first_line, 4);
        assert_eq!(t.get(CodeId(99)).qualname, "");
    }
}
