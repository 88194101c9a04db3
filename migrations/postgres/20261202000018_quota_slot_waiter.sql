-- A quota slot counts from its take until one window after its request's
-- answer (crate::sirene::quota): the waiter names the slot to re-stamp.
-- Slots taken before this migration have none and leave with their window.
ALTER TABLE quota_slots ADD COLUMN waiter TEXT;
