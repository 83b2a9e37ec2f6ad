"""nuScenes tables whose rows lack a field the reader indexes are refused naming the file, the row and the field
(they raised a bare KeyError); a calibrated sensor without its sensor falls back on the file name."""

from __future__ import annotations

import pytest
from test_nuscenes_source import make_dataroot, write_tables

from vavam.data.sources import SourceError
from vavam.data.sources.nuscenes import load_nuscenes


@pytest.mark.parametrize("table, field, which", [
    ("scene", "name", "the record with token"),
    ("sensor", "token", "record 0"),
    ("category", "token", "record 1"),
])
def test_a_row_without_an_indexed_field_is_named(tmp_path, table, field, which):
    tables = make_dataroot(tmp_path)
    del tables[table][1 if table == "category" else 0][field]
    write_tables(tmp_path, "v1.0-trainval", tables)
    with pytest.raises(SourceError, match=rf"{table}\.json: {which}.* has no '{field}'"):
        load_nuscenes(tmp_path, split="all")


def test_a_calibrated_sensor_without_its_sensor_token_reads_the_channel_from_the_file_name(tmp_path):
    make_dataroot(tmp_path / "a")
    expected = [(r.name, len(r)) for r in load_nuscenes(tmp_path / "a", split="all").records]
    tables = make_dataroot(tmp_path / "b")
    for row in tables["calibrated_sensor"]:
        del row["sensor_token"]
    write_tables(tmp_path / "b", "v1.0-trainval", tables)
    assert [(r.name, len(r)) for r in load_nuscenes(tmp_path / "b", split="all").records] == expected
