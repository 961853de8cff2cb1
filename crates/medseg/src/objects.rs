//! A 3D session's objects by the caller's id, in the order they were first prompted (what
//! upstream's `obj_id_to_idx` keeps). No Burn.

use std::ops::{Index, IndexMut};

use crate::error::{Error, Result};

/// Values by object id, in first-prompted order; addressed by position once found.
#[derive(Debug, Clone)]
pub struct Objects<T> {
    items: Vec<(u32, T)>,
}

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

impl<T> Objects<T> {
    /// The ids, in first-prompted order.
    pub fn ids(&self) -> Vec<u32> {
        self.items.iter().map(|(id, _)| *id).collect()
    }

    /// The position of `id`, made by `make` at the end when new.
    pub fn position_or_insert(&mut self, id: u32, make: impl FnOnce() -> T) -> usize {
        if let Some(i) = self.items.iter().position(|(k, _)| *k == id) {
            return i;
        }
        self.items.push((id, make()));
        self.items.len() - 1
    }

    /// The position of `id`; an error naming the objects there are when it is unknown.
    pub fn position(&self, id: u32) -> Result<usize> {
        self.items
            .iter()
            .position(|(k, _)| *k == id)
            .ok_or_else(|| {
                Error::InvalidPrompt(format!("no object {id} (objects: {:?})", self.ids()))
            })
    }

    /// The value of `id`.
    pub fn get(&self, id: u32) -> Option<&T> {
        self.items.iter().find(|(k, _)| *k == id).map(|(_, v)| v)
    }

    /// The id at position `i`.
    pub fn id(&self, i: usize) -> u32 {
        self.items[i].0
    }

    /// Remove `id` (an error when unknown).
    pub fn remove(&mut self, id: u32) -> Result<()> {
        let i = self.position(id)?;
        self.items.remove(i);
        Ok(())
    }

    /// Remove every object.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `(id, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items.iter().map(|(id, v)| (*id, v))
    }

    /// The values, mutably, in order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut().map(|(_, v)| v)
    }
}

impl<T> Index<usize> for Objects<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.items[i].1
    }
}

impl<T> IndexMut<usize> for Objects<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.items[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_first_order_and_unknown_ones_are_named() {
        let mut o = Objects::default();
        assert_eq!(o.position_or_insert(7, || "a"), 0);
        assert_eq!(o.position_or_insert(2, || "b"), 1);
        assert_eq!(o.position_or_insert(7, || "c"), 0);
        assert_eq!((o.ids(), o[1], o.get(7)), (vec![7, 2], "b", Some(&"a")));
        o.remove(7).unwrap();
        assert_eq!((o.ids(), o.position(2).unwrap(), o.id(0)), (vec![2], 0, 2));
        let e = o.remove(9).unwrap_err().to_string();
        assert!(e.contains("no object 9 (objects: [2])"), "{e}");
    }
}
