//! Giving memory back after a burst, for the two slabs of generation-checked
//! slots the loop keeps: its registrations and its timers. Both grow to the size
//! of the busiest moment and would keep it; [`Shrink`] decides when to shrink
//! and does it, the same way for both.

/// Tables smaller than this are never worth shrinking. The unit tests shrink
/// small ones, to reach that code often.
pub(crate) const SHRINK_MIN_SLOTS: usize = if cfg!(test) { 4 } else { 64 };

/// The end of a slab's free list.
pub(crate) const NO_FREE: u32 = u32::MAX;

/// A slot of a generation-checked slab with a free list threaded through its
/// vacant slots.
pub(crate) trait SlabSlot {
    /// Vacant: on the free list, nothing in it.
    fn is_vacant(&self) -> bool;
    /// The generation the next occupant gets (bumped when the slot was freed).
    fn generation(&self) -> u32;
    /// Point a vacant slot's free-list link at `next`.
    fn link_free(&mut self, next: u32);
}

/// When and how a slab shrinks. A slab asks [`is_due`](Self::is_due) as its live
/// entries fall; once they are fewer than a quarter of its slots it
/// [`shrink`](Self::shrink)s, and the next shrink waits until they have halved
/// again, so a few long-lived entries at the end of the slab cost a handful of
/// scans, not one per removal.
#[derive(Debug, Default)]
pub(crate) struct Shrink {
    /// Where slots pushed from now on start their generation: above every slot a
    /// shrink cut off, so that no stale token or id for one ever matches again.
    generation_floor: u32,
    /// A shrink is due once live entries are fewer than this.
    below: usize,
}

impl Shrink {
    /// The generation of a slot pushed at the end of the slab.
    #[inline]
    pub(crate) fn new_generation(&self) -> u32 {
        self.generation_floor
    }

    /// The slab is about to grow past `len` slots.
    #[inline]
    pub(crate) fn growing(&mut self, len: usize) {
        if len >= SHRINK_MIN_SLOTS {
            self.below = self.below.max(len / 4);
        }
    }

    /// Whether a slab with `live` entries should shrink.
    #[inline]
    pub(crate) fn is_due(&self, live: usize) -> bool {
        live < self.below
    }

    /// Cut off the vacant slots at the end of `slots`, rebuild the free list
    /// lowest first (new entries fill the front, so the end can be cut off again
    /// next time) and give back the spare capacity. Returns the new free-list head
    /// ([`NO_FREE`] if none); `live` entries remain.
    pub(crate) fn shrink<S: SlabSlot>(&mut self, slots: &mut Vec<S>, live: usize) -> u32 {
        while let Some(last) = slots.last()
            && last.is_vacant()
        {
            self.generation_floor = self.generation_floor.max(last.generation());
            slots.pop();
        }
        let mut free_head = NO_FREE;
        for (index, slot) in slots.iter_mut().enumerate().rev() {
            if slot.is_vacant() {
                slot.link_free(free_head);
                free_head = index as u32;
            }
        }
        slots.shrink_to_fit();
        self.below = live.div_ceil(2);
        free_head
    }
}
