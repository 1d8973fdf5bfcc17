//! Reusable scratch buffers per thread. The im2col matrices run to tens of MiB; allocating
//! them fresh for every layer costs a memset or page faults each time, more than the copy
//! that fills them.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers kept per thread; a conv layer holds at most three at once.
const KEEP: usize = 4;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of at least the asked length, with arbitrary contents, returned to the thread's
/// pool on drop.
#[derive(Debug)]
pub(crate) struct Scratch(Vec<f32>);

impl Scratch {
    pub fn take(len: usize) -> Self {
        let mut v = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
        if v.len() < len {
            v.resize(len, 0.0);
        }
        Scratch(v)
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEEP {
                p.push(v);
            }
        });
    }
}
