"""Ids (``wa_common.ids``): unique and, within a process, in creation order."""

from __future__ import annotations

from wa_common.ids import id_timestamp_ms, is_id, new_id


def test_ids_made_one_after_the_other_sort_in_that_order() -> None:
    ids = [new_id() for _ in range(20_000)]  # many per millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(is_id(i) and len(i) == 26 for i in ids[:10])
    assert id_timestamp_ms(ids[0]) <= id_timestamp_ms(ids[-1])
