//! What a 3D session keeps per slice (image features, embeddings): up to a number of slices,
//! the least recently used dropped first. No Burn, no I/O.

use std::collections::HashMap;

/// Values per slice index, at most `capacity` of them.
#[derive(Debug, Clone)]
pub struct SliceCache<T> {
    slices: HashMap<usize, (u64, T)>,
    capacity: usize,
    clock: u64,
}

impl<T: Clone> SliceCache<T> {
    /// An empty cache of `capacity` slices (0: keep nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            slices: HashMap::new(),
            capacity,
            clock: 0,
        }
    }

    /// Slice `z`'s value, made by `make` when not held (and then kept, evicting the least
    /// recently used when full).
    pub fn get_or<E>(&mut self, z: usize, make: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.clock += 1;
        if let Some((stamp, v)) = self.slices.get_mut(&z) {
            *stamp = self.clock;
            return Ok(v.clone());
        }
        let v = make()?;
        if self.capacity > 0 {
            if self.slices.len() >= self.capacity {
                let oldest = self
                    .slices
                    .iter()
                    .min_by_key(|(_, (s, _))| *s)
                    .map(|(&k, _)| k);
                oldest.map(|k| self.slices.remove(&k));
            }
            self.slices.insert(z, (self.clock, v.clone()));
        }
        Ok(v)
    }

    /// Slices held now.
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_slice_goes_first() {
        let mut c = SliceCache::new(2);
        let mut made = Vec::new();
        let mut get = |c: &mut SliceCache<usize>, z: usize| {
            c.get_or(z, || {
                made.push(z);
                Ok::<_, ()>(z * 10)
            })
            .unwrap()
        };
        assert_eq!(get(&mut c, 1), 10);
        get(&mut c, 2);
        get(&mut c, 1); // 1 used again: 2 is now the oldest
        get(&mut c, 3); // evicts 2
        get(&mut c, 1);
        get(&mut c, 2);
        assert_eq!(made, vec![1, 2, 3, 2]);
        assert_eq!(c.len(), 2);
        let mut none = SliceCache::new(0);
        none.get_or(5, || Ok::<_, ()>(1)).unwrap();
        assert!(none.is_empty());
    }
}
