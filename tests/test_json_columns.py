"""JSON columns are decoded by orjson for speed, and read back exactly what was stored: numbers orjson
would change (integers beyond 64 bits) take the standard library's path, on SQLite and PostgreSQL."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from ipad_mdm.db import Base, Database, json_loads, utcnow
from ipad_mdm.packages import import_all_models

VALUES = [
    {"AvailableDeviceCapacity": 51.2, "Serial": "DMPXXXXXXXXX", "Big": 2**70, "Negative": -(2**63) - 5},
    [2**64 - 1, -(2**63), 1234567890123456789012, 0.1234567890123456789],
    {"Certificates": [{"$data": "MIIB" + "0123456789" * 5}], "Text": "xin chào 12345678901234567890"},
]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_json_columns_read_back_exactly(database_url):
    from mdm.models import Device

    import_all_models()
    db = Database(database_url)
    Base.metadata.create_all(db.engine)
    try:
        with db.session() as s:
            for i, value in enumerate(VALUES):
                s.add(Device(udid=f"JSON-{i}", enrollment_state="enrolled", enrolled_at=utcnow(),
                             device_information=value if isinstance(value, dict) else {"v": value}))
        with db.session() as s:
            for i, value in enumerate(VALUES):
                stored = s.query(Device).filter_by(udid=f"JSON-{i}").one().device_information
                assert stored == (value if isinstance(value, dict) else {"v": value})
                assert json.dumps(stored) == json.dumps(value if isinstance(value, dict) else {"v": value})
    finally:
        db.dispose()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(JSON)
def test_json_loads_is_the_standard_librarys_answer(value):
    text = json.dumps(value)
    for data in (text, text.encode(), memoryview(text.encode())):
        assert json.dumps(json_loads(data)) == text
