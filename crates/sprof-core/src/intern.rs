//! [`FrameInterner`]: the one table that gives equal display frames one index, used wherever
//! a [`SymbolizedProfile`](crate::SymbolizedProfile)'s frame table is built (symbolization,
//! merging windows, reading pprof back).

use std::collections::HashMap;

use crate::Frame;

/// Frames in first-seen order, each once, with the index of each.
#[derive(Debug, Default, Clone)]
pub struct FrameInterner {
    frames: Vec<Frame>,
    ids: HashMap<Frame, u32>,
}

impl FrameInterner {
    pub fn new() -> FrameInterner {
        FrameInterner::default()
    }

    /// The index of `frame`, added if it is new.
    pub fn intern(&mut self, frame: &Frame) -> u32 {
        match self.ids.get(frame) {
            Some(&i) => i,
            None => self.insert(frame.clone()),
        }
    }

    /// [`FrameInterner::intern`] for a frame the caller has no more use for.
    pub fn intern_owned(&mut self, frame: Frame) -> u32 {
        match self.ids.get(&frame) {
            Some(&i) => i,
            None => self.insert(frame),
        }
    }

    fn insert(&mut self, frame: Frame) -> u32 {
        let i = self.frames.len() as u32;
        self.frames.push(frame.clone());
        self.ids.insert(frame, i);
        i
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The table: frame `i` is at index `i`.
    pub fn into_frames(self) -> Vec<Frame> {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameKind;

    #[test]
    fn equal_frames_share_an_index_in_first_seen_order() {
        let mut t = FrameInterner::new();
        let a = Frame::bare("a", FrameKind::Native);
        let b = Frame::bare("b", FrameKind::Native);
        assert_eq!(t.intern(&a), 0);
        assert_eq!(t.intern_owned(b.clone()), 1);
        assert_eq!(t.intern_owned(a.clone()), 0);
        assert_eq!(t.intern(&b), 1);
        assert_eq!(t.len(), 2);
        assert_eq!(t.into_frames(), vec![a, b]);
    }
}
